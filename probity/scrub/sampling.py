"""Sampling the input tree: which dataset row every interpretation node runs on.

Draws are counter-based: the uniform number for (seed, node, stream, reference,
position) is a hash of those integers, and rows inside a feature class are kept in a
canonical order (by a hash of their tokens). So a scrub does not depend on the order
of the dataset rows, on the batch size, or on which nodes are evaluated first.
"""

from __future__ import annotations

import torch

from probity.scrub.hypothesis import Resolved

_M1, _M2, _GOLD = -4658895280553007687, -7723592293110705685, -7046029254386353131  # splitmix64 constants as int64
_MASK53 = (1 << 53) - 1


def _mix(z: torch.Tensor) -> torch.Tensor:
    """splitmix64's finaliser on int64 tensors (wrapping arithmetic, logical shifts)."""
    z = (z ^ ((z >> 30) & ((1 << 34) - 1))) * _M1
    z = (z ^ ((z >> 27) & ((1 << 37) - 1))) * _M2
    return z ^ ((z >> 31) & ((1 << 33) - 1))


def hash_ints(*parts: torch.Tensor | int) -> torch.Tensor:
    """A 64-bit hash of broadcast integer tensors, combined in order."""
    h = torch.zeros((), dtype=torch.int64)
    for p in parts:
        h = _mix(h * 31 + torch.as_tensor(p, dtype=torch.int64) + _GOLD)
    return h


def row_keys(tokens: torch.Tensor) -> torch.Tensor:
    """A key per row ``[n]`` (int64) of ``tokens [n, pos]``: a hash of its tokens and of its rank among
    identical rows."""
    h = torch.zeros(tokens.shape[0], dtype=torch.int64)
    for p in range(tokens.shape[1]):
        h = _mix(h * 31 + tokens[:, p].long() + _GOLD)
    order = torch.argsort(h, stable=True)
    sorted_h = h[order]
    first = torch.ones_like(sorted_h, dtype=torch.bool)
    first[1:] = sorted_h[1:] != sorted_h[:-1]
    start = torch.cummax(torch.where(first, torch.arange(len(h)), 0), 0).values
    occurrence = torch.empty_like(h)
    occurrence[order] = torch.arange(len(h)) - start
    return hash_ints(h, occurrence)


def uniform(seed: int, node: int, stream: int, keys: torch.Tensor, per_position: int = 0) -> torch.Tensor:
    """Uniform [0, 1) numbers ``[batch]`` (or ``[batch, pos]`` with ``pos`` = ``per_position``) keyed by the
    reference keys ``[batch]``."""
    k = keys if not per_position else keys[:, None]
    pos = 0 if not per_position else torch.arange(per_position)[None, :]
    h = hash_ints(seed, node, stream, k, pos)
    return ((h >> 11) & _MASK53).double() / float(1 << 53)


class Classes:
    """The rows of a dataset bucketed by one feature's value, in canonical order within each class."""

    def __init__(self, values: torch.Tensor, keys: torch.Tensor):
        self.per_position = values.dim() == 2
        n = values.shape[0]
        if self.per_position:
            p = values.shape[1]
            flat = (values.long() * p + torch.arange(p)).reshape(-1)
            rows = torch.arange(n).repeat_interleave(p)
            row_key = keys.repeat_interleave(p)
        else:
            flat, rows, row_key = values.long(), torch.arange(n), keys
        uniq, dense = torch.unique(flat, return_inverse=True)
        order = torch.argsort(row_key, stable=True)
        order = order[torch.argsort(dense[order], stable=True)]
        self.members = rows[order]
        counts = torch.bincount(dense, minlength=len(uniq))
        self.start = torch.cumsum(counts, 0) - counts
        self.count = counts
        self.class_of = dense.view(values.shape)

    def draw(self, parents: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Rows agreeing with ``parents`` (rows ``[batch]`` or ``[batch, pos]``) on this feature, uniform in
        their class by ``u`` (same shape as the result: ``[batch]``, or ``[batch, pos]`` per position)."""
        if self.per_position:
            if parents.dim() == 1:
                parents = parents[:, None].expand(u.shape)
            cls = self.class_of[parents, torch.arange(u.shape[1])]
        else:
            cls = self.class_of[parents]
        idx = self.start[cls] + (u * self.count[cls]).long()
        return self.members[idx]


def feature_classes(features: dict[str, torch.Tensor], keys: torch.Tensor) -> dict[str, Classes]:
    """Every feature's ``Classes`` over the dataset (``features``: values ``[n]`` or ``[n, pos]``;
    ``keys``: the row keys ``[n]``), and ``none``: one class holding every row (an unconditional draw)."""
    classes = {name: Classes(values, keys) for name, values in features.items()}
    classes["none"] = Classes(torch.zeros(len(keys), dtype=torch.long), keys)
    return classes


def sample_tree(
    root: Resolved, classes: dict[str, Classes], refs: torch.Tensor, keys: torch.Tensor, seed: int, n_ctx: int
) -> dict[tuple[int, int], torch.Tensor]:
    """Rows for every node: ``{(node index, 0): its input rows, (node index, 1): its rest rows}``,
    shapes ``[batch]`` or ``[batch, pos]`` for per-position nodes. ``refs`` are the reference rows ``[batch]``,
    ``keys`` their row keys. Children agree with their parent on their feature."""
    out: dict[tuple[int, int], torch.Tensor] = {}

    def draw(feature: str, parents: torch.Tensor, node: int, stream: int) -> torch.Tensor:
        if feature == "identity":
            return parents
        table = classes[feature]
        return table.draw(parents, uniform(seed, node, stream, keys, n_ctx if table.per_position else 0))

    def visit(node: Resolved, parents: torch.Tensor) -> None:
        rows = draw(node.node.feature, parents, node.index, 0)
        out[(node.index, 0)] = rows
        if node.children or node.node.phi is not None:
            rest = node.node.rest
            out[(node.index, 1)] = (
                rows if rest == "self" else draw("none" if rest == "random" else rest, rows, node.index, 1)
            )
            for child in node.children:
                visit(child, rows)

    visit(root, refs)
    return out
