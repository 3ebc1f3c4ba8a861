"""The fast scrubbing evaluator: ``reference.py``'s recursion, compiled and batched.

``reference.py`` states the algorithm plainly (treeify, sample, evaluate, one example at a
time); this module computes the same logits from the same sampled rows, and
``tests/scrub/test_scrub_reference.py`` checks that the two agree on every built-in hypothesis.

``compile_plan`` walks the treeified model once, symbolically: every receiver input is
a ``Sum`` of sender terms, each tagged with the rows (which sampled input) it runs on --
``reference.treeify``'s terms, where "self" and "child" become the sender's expression in
that node and "rest" a ``Gather`` on the node's rest rows. Identical (component, node) pairs
become one expression (hash-consing, memoised, so compiling is linear in depth), identity children
alias their parent's rows, and any subtree that runs entirely on one input becomes a ``Gather``
from one clean forward pass over the dataset (``CleanCache``; the reference's ``CleanRows``,
batched, and stopped above the highest gathered target); the clean terms of one input that run on the
same rows share one residual-stream gather, read off the running stream. ``execute`` then
evaluates the graph on chunks of reference examples: only components with patched ancestry
are recomputed, batched over the chunk, and only up to what the output needs; the heads of one layer
that read one input run as one call, an input extends the largest smaller input it contains, and the
logits can be asked for at the loss positions only.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch

from probity.scrub.hypothesis import Resolved
from probity.scrub.model import Component, Decomposed

Rows = tuple[int, int]  # (node index, 0 = node's input | 1 = its rest input)


@dataclass(frozen=True)
class Gather:
    """A clean activation on sampled rows: a component's output, or ``resid`` = the sum of all
    senders into ``target`` minus those in ``exclude`` (clean, without biases)."""

    target: Component
    rows: Rows
    resid: bool = False
    exclude: tuple[Component, ...] = ()


@dataclass(frozen=True)
class Phi:
    """A component's output split into its linear fit on a per-row ``feature`` (a vector per
    position times the feature), computed on ``rows``, plus the fit's residual on ``rest``."""

    target: Component
    rows: Rows
    rest: Rows
    feature: str


@dataclass(frozen=True)
class Sum:
    """A receiver's input: biases plus terms, each on all positions or only on ``positions``. The biases
    depend only on where ``receiver`` reads the residual stream, so receivers at one point with the same
    terms (the heads of one layer, say) share one ``Sum`` and ``receiver`` is any of them."""

    receiver: Component
    parts: tuple[tuple[object, tuple[int, ...] | None], ...]


@dataclass(frozen=True)
class Head:
    """A head on its treeified Q/K/V inputs; its key mask (padding) comes from ``rows``, the input of
    the node the head is evaluated in."""

    component: Component
    q: Sum
    k: Sum
    v: Sum
    rows: Rows


@dataclass(frozen=True)
class Mlp:
    """An MLP on its treeified input."""

    component: Component
    x: Sum


@dataclass(frozen=True)
class Unembed:
    """The logits from the treeified final residual stream."""

    x: Sum


def compile_plan(model: Decomposed, root: Resolved, n_ctx: int):
    """The output expression for hypothesis ``root`` (see module doc).

    Linear in the model's depth: every (component, node) output and every (component, input kind, node)
    input is built once (memoised), and expressions are interned on a shallow key (their children by
    identity: those are interned already). Within one receiver input, the plain clean terms that run on
    the same rows (the rest, and leaf children claiming every position) form one sender set ``S``, gathered
    by ``_clean_sum``: as one residual-stream gather minus the few senders below it that are not in ``S``
    when that is shorter, so receivers with the same ``S`` on the same rows share one gather."""
    interned: dict = {}
    alias: dict[int, Rows] = {}
    outs: dict[tuple[Component, int], object] = {}
    inps: dict[tuple[Component, str, int], Sum] = {}
    senders: dict[Component, list[Component]] = {}
    every_position = frozenset(range(n_ctx))

    def senders_of(c: Component) -> list[Component]:
        if c not in senders:
            senders[c] = model.senders(c)
        return senders[c]

    def rows_of(node: Resolved, parent_rows: Rows | None) -> Rows:
        own = (node.index, 0)
        alias[node.index] = parent_rows if node.node.feature == "identity" and parent_rows is not None else own
        return alias[node.index]

    def intern(x):
        return interned.setdefault(_shallow_key(x), x)

    def rest_rows(node: Resolved) -> Rows:
        return alias[node.index] if node.node.rest == "self" else (node.index, 1)

    def out(c: Component, node: Resolved):
        key = (c, node.index)
        if key not in outs:
            outs[key] = build_out(c, node)
        return outs[key]

    def build_out(c: Component, node: Resolved):
        rows = alias[node.index]
        if node.node.phi is not None and c.kind not in ("embed", "pos"):
            return intern(Phi(c, rows, rest_rows(node), node.node.phi))
        if node.leaf or c.kind in ("embed", "pos"):
            return intern(Gather(c, rows))
        if c.kind == "head":
            return intern(Head(c, *(inp(c, k, node) for k in ("q", "k", "v")), rows))
        if c.kind == "mlp":
            return intern(Mlp(c, inp(c, "in", node)))
        return intern(Unembed(inp(c, "in", node)))

    def inp(c: Component, kind: str, node: Resolved) -> Sum:
        key = (c, kind, node.index)
        if key not in inps:
            inps[key] = build_inp(c, kind, node)
        return inps[key]

    def build_inp(c: Component, kind: str, node: Resolved) -> Sum:
        parts, clean_sets = [], {}  # clean_sets: rows -> the senders whose clean outputs on those rows are summed
        own = set(node.components)
        for s in senders_of(c):
            if s in own:
                parts.append((out(s, node), None))
                continue
            covered: set[int] = set()
            for j in node.children:
                if s not in j.components or kind not in j.via:
                    continue
                if j.per_position:
                    parts.append((intern(Gather(s, alias[j.index])), j.positions))
                else:
                    term = out(s, j)
                    if isinstance(term, Gather) and not term.resid and j.positions is None:
                        clean_sets.setdefault(term.rows, []).append(s)
                    else:
                        parts.append((term, j.positions))
                covered |= every_position if j.positions is None else set(j.positions)
            if not covered:
                clean_sets.setdefault(rest_rows(node), []).append(s)
            elif len(covered) < n_ctx:
                parts.append((intern(Gather(s, rest_rows(node))), tuple(p for p in range(n_ctx) if p not in covered)))
        for rows, group in clean_sets.items():
            parts += [(term, None) for term in clean_sum(group, rows)]
        return intern(Sum(c, tuple(parts)))

    order = [*model.components, model.output]

    def clean_sum(group: list[Component], rows: Rows) -> list[Gather]:
        """Gathers summing to the clean outputs of ``group`` on ``rows``: one per sender, or the residual
        stream into ``c0`` (the first component above every sender of the group: heads of one layer do
        not feed each other) minus the senders of ``c0`` outside the group, when that is fewer gathers."""
        if len(group) > 1:
            top = max((s.layer, s.order) for s in group)
            c0 = next(x for x in order if (x.layer, x.order) > top)
            members = set(group)
            exclude = tuple(x for x in senders_of(c0) if x not in members)
            if len(exclude) < len(group) - 1:
                return [intern(Gather(c0, rows, resid=True, exclude=exclude))]
        return [intern(Gather(s, rows)) for s in group]

    def assign(node: Resolved, parent_rows: Rows | None) -> None:
        mine = rows_of(node, parent_rows)
        for child in node.children:
            assign(child, mine)

    assign(root, None)
    top = root.components
    return out(model.output, root) if model.output in top else None


def _shallow_key(x) -> object:
    """What identifies expression ``x`` once its sub-expressions are interned: its own fields, with
    sub-expressions by identity (hashing a deep expression by value would walk every path below it)."""
    if isinstance(x, Sum):
        return (Sum, (x.receiver.layer, x.receiver.order), tuple((id(p), positions) for p, positions in x.parts))
    if isinstance(x, Head):
        return (Head, x.component, id(x.q), id(x.k), id(x.v), x.rows)
    if isinstance(x, Mlp):
        return (Mlp, x.component, id(x.x))
    if isinstance(x, Unembed):
        return (Unembed, id(x.x))
    return x  # Gather, Phi: flat


def expressions(expr) -> list:
    """Every distinct sub-expression of the plan ``expr`` (by identity), ``expr`` first."""
    seen, found, stack = set(), [], [expr]
    while stack:
        e = stack.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        found.append(e)
        if isinstance(e, Sum):
            stack += [p for p, _ in e.parts]
        elif isinstance(e, Head):
            stack += [e.q, e.k, e.v]
        elif isinstance(e, (Mlp, Unembed)):
            stack.append(e.x)
    return found


FLOAT_BYTES = 4  # float32 activations


def cache_bytes(model: Decomposed, targets: set, rows: int, n_ctx: int) -> int:
    """Bytes the clean cache of ``targets`` (``gather_targets``) holds for ``rows`` dataset rows of ``n_ctx``
    positions: ``[rows, pos, d_model]`` per target, ``[rows, pos, vocab]`` for the logits."""
    width = sum(model.d_vocab if c == model.output else model.d_model for c, _ in targets)
    return FLOAT_BYTES * rows * n_ctx * width


def row_bytes(model: Decomposed, expr, n_ctx: int, m: int) -> int:
    """An upper estimate of the bytes one reference row adds to the peak of ``execute(expr)``: every
    memoised input and output ``[pos, d_model]``, the logits ``[m, vocab]`` at the loss positions, and the
    largest transient (a head group's scores and pattern ``[head, pos, pos]`` with its Q, K, V, or an MLP's
    hidden layer, taken as 4 d_model wide, three times for a gated MLP)."""
    memo = len(expressions(expr)) * n_ctx * model.d_model
    transient = max(2 * model.n_heads * n_ctx * n_ctx + 3 * n_ctx * model.d_model, 3 * 4 * n_ctx * model.d_model)
    return FLOAT_BYTES * (memo + m * model.d_vocab + transient)


def gather_targets(expr) -> set[tuple[Component, bool]]:
    """Every (component, resid?) the plan gathers: what the clean cache must hold."""
    found = set()
    for e in expressions(expr):
        if isinstance(e, Gather):
            found.add((e.target, e.resid))
            found |= {(x, False) for x in e.exclude}
        elif isinstance(e, Phi):
            found.add((e.target, False))
    return found


def _sum_bases(sums: list[Sum]) -> dict[int, tuple[Sum, tuple]]:
    """For each ``Sum`` whose terms include every term of a smaller one (of more than two terms), the largest
    such one and the terms left over: evaluated from it, an input high in the stream costs the terms added
    since, not every term below it."""
    terms = {id(s): Counter((id(p), at) for p, at in s.parts) for s in sums}
    out = {}
    for s in sums:
        mine = terms[id(s)]
        inside = [o for o in sums if 2 < len(o.parts) < len(s.parts) and not terms[id(o)] - mine]
        if inside:
            base = max(inside, key=lambda o: len(o.parts))
            left = mine - terms[id(base)]
            extra = []
            for p, at in s.parts:  # the leftover terms, in order, each as often as it is left over
                if left[(id(p), at)] > 0:
                    left[(id(p), at)] -= 1
                    extra.append((p, at))
            out[id(s)] = (base, tuple(extra))
    return out


def _head_group(h: Head) -> tuple:
    """Heads of one layer on the same Q/K/V inputs and rows: computed together by one ``Decomposed.heads``."""
    return h.component.layer, id(h.q), id(h.k), id(h.v), h.rows


class CleanCache:
    """Clean activations of the whole dataset for the gathered targets, from one chunked forward pass.

    With ``enabled=False`` nothing is stored and every gather reruns the model on the
    gathered rows instead (slow; the invariance tests compare the two). ``key_mask [n, pos]``
    (bool, True = may be attended to) is the dataset's attention mask, e.g. padding. The tokens,
    the mask and the ``features`` are kept on the model's device (``Decomposed.device``), and so is
    every activation; ``gather`` takes row indices there."""

    def __init__(
        self,
        model: Decomposed,
        tokens: torch.Tensor,
        targets: set[tuple[Component, bool]],
        chunk: int = 256,
        enabled: bool = True,
        features: dict | None = None,
        key_mask: torch.Tensor | None = None,
    ):
        device = model.device
        self.model, self.targets, self.enabled = model, targets, enabled
        self.tokens, self.key_mask = tokens.to(device), None if key_mask is None else key_mask.to(device)
        self.features = {name: values.to(device) for name, values in (features or {}).items()}
        self.store: dict[tuple[Component, bool], torch.Tensor] = {}
        self.fits: dict[tuple[Component, str], torch.Tensor] = {}
        order = [*model.components, model.output]

        def reach(c: Component, resid: bool) -> Component:  # the first component whose input sees the target
            return c if resid or c == model.output else next(x for x in order if model.below(x, c))

        self.upto = max((reach(*t) for t in targets), key=lambda c: (c.layer, c.order), default=model.output)
        if enabled:
            pieces = [
                self._forward(torch.arange(i, min(i + chunk, len(tokens)), device=device))
                for i in range(0, len(tokens), chunk)
            ]
            self.store = {t: torch.cat([p[t] for p in pieces]) for t in targets}

    def mask(self, rows: torch.Tensor) -> torch.Tensor | None:
        """The key mask ``[batch, pos]`` of dataset rows ``rows [batch]`` (None when the task has none)."""
        return None if self.key_mask is None else self.key_mask[rows]

    def _run(
        self, tokens: torch.Tensor, key_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, dict[tuple[Component, bool], torch.Tensor]]:
        """Clean logits (None when no target needs them) and every target on ``tokens``: a component's output,
        or the residual stream into it (resid targets), read off one forward that stops at ``upto``."""
        streams = {c: None for c, resid in self.targets if resid}
        keep = {c for c, resid in self.targets if not resid}
        logits, outs = self.model.run(tokens, keep=keep, key_mask=key_mask, upto=self.upto, streams=streams)
        return logits, {**{(c, False): v for c, v in outs.items()}, **{(c, True): v for c, v in streams.items()}}

    def _forward(self, rows: torch.Tensor) -> dict[tuple[Component, bool], torch.Tensor]:
        logits, found = self._run(self.tokens[rows], self.mask(rows))
        return {t: logits if t == (self.model.output, False) else found[t] for t in self.targets}

    def fit(self, target: Component, feature: str) -> torch.Tensor:
        """Least-squares direction ``[pos, d_model]`` of ``target``'s clean output on the per-row ``feature``
        over the whole dataset (no intercept: output ~ v_p * f)."""
        if (target, feature) not in self.fits:
            f = self.features[feature].double()
            out = self.gather((target, False), torch.arange(len(self.tokens), device=f.device)).double()
            self.fits[(target, feature)] = (torch.einsum("b,bpd->pd", f, out) / (f @ f).clamp(min=1e-12)).float()
        return self.fits[(target, feature)]

    def gather(self, target: tuple[Component, bool], rows: torch.Tensor) -> torch.Tensor:
        """Clean ``target`` on ``rows``: ``[batch, pos, d_model]`` (``rows [batch]``), or position by position
        (``rows [batch, pos]``: position p from row ``rows[:, p]``)."""
        if self.enabled:
            full = self.store[target]
            return full[rows] if rows.dim() == 1 else full[rows, torch.arange(rows.shape[1], device=rows.device)]
        flat = rows.reshape(-1)
        value = self._forward(flat)[target]
        if rows.dim() == 1:
            return value
        b, p = rows.shape
        at = torch.arange(p, device=rows.device)
        return value.view(b, p, p, -1)[:, at, at]


@torch.no_grad()
def execute(
    model: Decomposed,
    expr,
    rows: dict[Rows, torch.Tensor],
    cache: CleanCache,
    positions: torch.Tensor | None = None,
) -> torch.Tensor:
    """Evaluate the plan ``expr`` for one chunk of reference examples: ``rows`` maps each row key to that
    chunk's rows (``[batch]``, or ``[batch, pos]`` per position; on any device, like ``positions``). Returns the
    logits ``[batch, pos, vocab]``, or ``[batch, m, vocab]`` at ``positions [m]`` only (the unembedding runs only
    there), on the model's device. The heads of one layer on the same inputs (``_head_group``) are computed in
    one call, and an input whose terms include a smaller input's starts from that one's value (``_sum_bases``)."""
    rows = {key: r.to(model.device) for key, r in rows.items()}
    positions = None if positions is None else positions.to(model.device)
    memo: dict[int, torch.Tensor] = {}
    groups: dict[tuple, list[Head]] = {}
    every = expressions(expr)
    for h in every:
        if isinstance(h, Head):
            groups.setdefault(_head_group(h), []).append(h)
    bases = _sum_bases([e for e in every if isinstance(e, Sum)])

    def ev(e) -> torch.Tensor:
        key = id(e)
        if key in memo:
            return memo[key]
        if isinstance(e, Gather):
            r = rows[e.rows]
            val = cache.gather((e.target, e.resid), r)
            for x in e.exclude:
                val = val - cache.gather((x, False), r)
        elif isinstance(e, Phi):
            r, rest = rows[e.rows], rows[e.rest]
            f = cache.features[e.feature].float()
            val = cache.gather((e.target, False), rest) + (f[r] - f[rest])[:, None, None] * cache.fit(
                e.target, e.feature
            )
        elif isinstance(e, Sum):
            base, parts = bases.get(id(e), (None, e.parts))
            if base is None:
                val = model.bias(e.receiver).expand(cache.tokens.shape[1], -1).clone()
            else:  # a smaller input's value, with this receiver's biases and the terms it lacks
                val = ev(base) + (model.bias(e.receiver) - model.bias(base.receiver))
            for part, only in parts:
                t = ev(part)
                if only is None:
                    val = val + t
                else:
                    idx = torch.tensor(only, device=val.device)
                    val = val.expand_as(t).clone() if val.dim() < t.dim() else val
                    val[:, idx] = val[:, idx] + t[:, idx]
        elif isinstance(e, Head):
            group = groups[_head_group(e)]
            q, k, v = (ev(x)[:, None] for x in (e.q, e.k, e.v))  # [batch, 1, pos, d_model]: shared by the group
            outs = model.heads(
                e.component.layer, [h.component.head for h in group], q, k, v, cache.mask(rows[e.rows])
            )  # [batch, head, pos, d_model]
            memo.update({id(h): outs[:, i] for i, h in enumerate(group)})
            val = memo[key]
        elif isinstance(e, Mlp):
            val = model.mlp(e.component.layer, ev(e.x))
        else:
            x = ev(e.x)
            val = model.unembed(x if positions is None else x[:, positions])
        memo[key] = val
        return val

    try:
        out = ev(expr)
    finally:  # ev calls itself (a reference cycle through ``cache`` and ``memo``): break it, or the clean cache
        # and the values wait for Python's cyclic collector, a rebuilt cache's old one included
        memo.clear()
        ev = None  # clears the closure's cell
    return out if positions is None or isinstance(expr, Unembed) else out[:, positions]
