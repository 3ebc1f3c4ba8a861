"""Find attention heads by role (previous-token, induction, duplicate-token, copy) from their attention
patterns on a task's rows.

``find_heads(model, task, kind)`` runs the model's clean forward (``Decomposed.run``, so every
backend scrub supports: TransformerLens native models, HF Llama-family and GPT-2 decoders, bridges
over either) and scores every attention head by the mean attention its queries pay to one target key:

- ``previous_token``: query q attends to key q-1 (every query q >= 1);
- ``induction``: query q, holding token t, attends to the key right after the latest earlier
  occurrence of t (key j+1 for the largest j with j+1 < q and tokens[j] == t): the token that
  followed t last time, which an induction head copies forward;
- ``duplicate_token``: query q, holding token t, attends to the latest earlier occurrence of t (key j
  for the largest j < q with tokens[j] == t; Wang et al.'s duplicate-token heads at S2 -> S1);
- ``copy``: query q attends to the latest earlier occurrence of the token it must predict (key j for
  the largest j <= q with tokens[j] == targets[q]; the IOI name movers at END -> IO; on a repeat task
  this is the induction target);
- any other name, with ``keys [n, pos]`` given: the key each query is scored on, computed by the caller
  (e.g. the IOI S-inhibition heads, END -> S2).

A query without a target (no earlier occurrence; a target key masked out by ``task.key_mask``) is
not scored; with ``queries="loss"`` (the default) only the task's ``loss_mask`` positions are
(where a repeat task counts the induction it predicts), with a bool ``[n, pos]`` mask only those.
Uniform attention over the keys a query may see scores ``HeadScores.chance``.
The heads come back as ``Site``s, best first.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from probity.models.sites import Site
from probity.report import Claim
from probity.report.registry import result_type
from probity.scrub.model import Decomposed, layer_and_head
from probity.scrub.task import IOI_POSITIONS, Task

HEAD_KINDS = ("induction", "previous_token", "duplicate_token", "copy")
QUERY_SETS = ("loss", "all")


def target_keys(
    tokens: torch.Tensor, kind: str, key_mask: torch.Tensor | None = None, targets: torch.Tensor | None = None
) -> torch.Tensor:
    """The key each query is scored on ``[n, pos]`` for ``tokens [n, pos]`` (-1: the query has none).

    ``previous_token``: q-1. ``induction``: j+1 for the latest j with j+1 < q and tokens[j] == tokens[q].
    ``duplicate_token``: the latest j < q with tokens[j] == tokens[q]. ``copy``: the latest j <= q with
    tokens[j] == targets[q] (``targets [n, pos]`` needed). With ``key_mask [n, pos]`` (True = may be
    attended to), a query or target key masked out has none."""
    if kind not in HEAD_KINDS:
        raise ValueError(f"kind must be one of {', '.join(HEAD_KINDS)}, got {kind!r}")
    if kind == "copy" and (targets is None or targets.shape != tokens.shape):
        raise ValueError("kind='copy' needs targets [n, pos] like tokens (the token each query must predict)")
    n, p = tokens.shape
    if kind == "previous_token":
        keys = torch.arange(p).expand(n, p) - 1  # [n, pos]
    else:
        query = targets if kind == "copy" else tokens  # [n, pos]: the token each query looks for
        same = query[:, :, None] == tokens[:, None, :]  # [n, pos, pos] (query, earlier position j)
        offset = {"induction": -2, "duplicate_token": -1, "copy": 0}[kind]
        before = torch.ones(p, p, dtype=torch.bool).tril(offset)  # which j each query may look back to
        latest = torch.where(same & before, torch.arange(p), -2).max(-1).values  # [n, pos]
        shift = 1 if kind == "induction" else 0  # an induction head reads the token after the match
        keys = torch.where(latest >= 0, latest + shift, -1)
    return _unmasked(keys, key_mask)


def _unmasked(keys: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
    """``keys [n, pos]`` with -1 wherever the query or its target key is masked out by ``key_mask [n, pos]``
    (True = may be attended to); a copy."""
    keys = keys.clone()
    if key_mask is not None:
        keys[~(key_mask.gather(1, keys.clamp(min=0)) & key_mask)] = -1
    return keys


@result_type("scrub.HeadScores")
@dataclass
class HeadScores:
    """Every head's score for one ``kind`` (see module doc) and the heads chosen from them."""

    kind: str
    task: str
    rows: int  # dataset rows scored
    queries: int  # (row, query) pairs scored
    scores: list[list[float]]  # [layer][head]: mean attention from a scored query to its target key
    chance: float  # the score of uniform attention over the keys each query may see
    threshold: float
    top_k: int | None
    heads: list[Site]  # score >= threshold, best first, at most top_k
    head_scores: list[float]  # the chosen heads' scores, in the same order

    def score(self, head: Site | str) -> float:
        """The score of ``head`` (a ``Site`` or a string ``Site.parse`` reads, e.g. ``"1.0"``)."""
        layer, h = layer_and_head(head)
        return self.scores[layer][h]

    def ranked(self) -> list[tuple[Site, float]]:
        """Every head with its score, best first."""
        flat = [(_site(layer, h), s) for layer, row in enumerate(self.scores) for h, s in enumerate(row)]
        return sorted(flat, key=lambda x: -x[1])

    def headline(self) -> list[Claim]:
        """The chosen heads with their scores, against uniform attention."""
        names = ", ".join(f"{layer_and_head(s)[0]}.{s.head} ({v:.2f})" for s, v in zip(self.heads, self.head_scores))
        return [
            Claim(
                f"{self.task}: {self.kind.replace('_', '-')} heads (score >= {self.threshold:g})",
                names or "none",
                reference=round(self.chance, 4),
                source="uniform attention",
            )
        ]


IOI_ROLES = ("name_mover", "s_inhibition", "duplicate_token", "induction")


def find_ioi_heads(model, task: Task, threshold: float = 0.5, rows: int = 64, batch_size: int = 16) -> dict:
    """The heads of Wang et al.'s IOI circuit by their attention on an ``ioi_task``: ``{role: HeadScores}``
    for ``IOI_ROLES``: ``name_mover`` (END attends to the indirect object: ``copy``), ``s_inhibition``
    (END attends to S2), ``duplicate_token`` (S2 attends to S1) and ``induction`` (S2 attends to the token
    after S1). Attention alone does not tell a negative name mover from a name mover, or an S-inhibition
    head from another head reading S2: scrubbing the roles (``library.ioi_lm``) tests them."""

    n, p = task.tokens.shape
    if task.name != "ioi" or p != IOI_POSITIONS["END"] + 1:
        raise ValueError(f"find_ioi_heads needs a task from ioi_task, got {task.name!r} with {p} positions")
    d = model if isinstance(model, Decomposed) else Decomposed(model)
    at_s2 = torch.zeros(n, p, dtype=torch.bool)  # [n, pos]
    at_s2[:, IOI_POSITIONS["S2"]] = True
    end_to_s2 = torch.full((n, p), -1)  # [n, pos]
    end_to_s2[:, IOI_POSITIONS["END"]] = IOI_POSITIONS["S2"]
    common = {"threshold": threshold, "rows": rows, "batch_size": batch_size}
    return {
        "name_mover": find_heads(d, task, "copy", **common),
        "s_inhibition": find_heads(d, task, "s_inhibition", keys=end_to_s2, **common),
        "duplicate_token": find_heads(d, task, "duplicate_token", queries=at_s2, **common),
        "induction": find_heads(d, task, "induction", queries=at_s2, **common),
    }


def _site(layer: int, head: int) -> Site:
    return Site(f"blocks.{layer}.attn.hook_result", head=head)


@torch.no_grad()
def find_heads(
    model,
    task: Task,
    kind: str = "induction",
    threshold: float = 0.4,
    top_k: int | None = None,
    rows: int = 64,
    batch_size: int = 16,
    queries: str | torch.Tensor = "loss",
    keys: torch.Tensor | None = None,
) -> HeadScores:
    """Score every attention head of ``model`` as a ``kind`` head (one of ``HEAD_KINDS``; see module doc)
    on the first ``rows`` rows of ``task``, and choose those scoring at least ``threshold`` (best first, at
    most ``top_k``).

    ``model`` is anything ``Decomposed`` takes (or a ``Decomposed``). ``queries="loss"`` scores only
    the queries in ``task.loss_mask``, ``"all"`` every query with a target, a bool tensor ``[n, pos]`` (the
    task's rows) those it marks. ``keys [n, pos]`` (the task's rows; -1 for none) gives each query's target
    key in place of ``kind``'s rule, which then only names the result. Returns ``HeadScores``: ``heads``
    are ``Site("blocks.L.attn.hook_result", head=H)``, the sites scrub hypotheses name.

    >>> ioi = ioi_task(tokenizer)
    >>> find_heads(model, ioi, "copy").heads[:3]  # name movers: END attends to the indirect object"""
    n, p = task.tokens.shape
    if keys is None and kind not in HEAD_KINDS:
        raise ValueError(f"kind must be one of {', '.join(HEAD_KINDS)} (or pass keys=), got {kind!r}")
    if keys is not None and (not isinstance(keys, torch.Tensor) or keys.shape != (n, p)):
        raise ValueError(f"keys must be a tensor [n, pos] = {[n, p]} of key positions (-1 for none)")
    if keys is not None and bool(((keys < -1) | (keys >= p)).any()):
        raise ValueError(f"keys must be positions 0..{p - 1} of the row, or -1 for none")
    if isinstance(queries, torch.Tensor):
        if queries.shape != (n, p) or queries.dtype != torch.bool:
            raise ValueError(f"a queries mask must be a bool tensor [n, pos] = {[n, p]}")
    elif queries not in QUERY_SETS:
        raise ValueError(f"queries must be one of {', '.join(QUERY_SETS)} or a bool mask, got {queries!r}")
    if rows < 1 or batch_size < 1:
        raise ValueError(f"rows and batch_size must be at least 1, got {rows} and {batch_size}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be at least 1 (or None for no cap), got {top_k}")
    d = model if isinstance(model, Decomposed) else Decomposed(model)
    tokens = task.tokens[:rows]  # [n, pos]
    key_mask = None if task.key_mask is None else task.key_mask[:rows]
    if keys is None:
        keys = target_keys(tokens, kind, key_mask, task.targets[:rows])  # [n, pos]
    else:
        keys = _unmasked(keys[:rows], key_mask)
    at_loss = isinstance(queries, str) and queries == "loss"
    chosen = task.loss_mask if at_loss else queries if isinstance(queries, torch.Tensor) else None  # [n, pos]
    if chosen is not None:
        keys = torch.where(chosen[:rows], keys, -1)
    scored = keys >= 0  # [n, pos]
    count = int(scored.sum())
    if count == 0:
        raise ValueError(
            f"no query in the first {len(tokens)} rows of task {task.name!r} has a {kind} target"
            + (" at its loss positions; pass queries='all'" if at_loss else "")
        )
    total = torch.zeros(d.n_layers, d.n_heads, dtype=torch.float64, device=d.device)  # [layer, head]
    target, weight = keys.clamp(min=0).to(d.device), scored.to(d.device)  # [n, pos], beside the patterns
    for start in range(0, len(tokens), batch_size):
        chunk = slice(start, start + batch_size)
        patterns: dict[int, torch.Tensor] = {}
        d.run(tokens[chunk], keep=set(), key_mask=None if key_mask is None else key_mask[chunk], patterns=patterns)
        k = target[chunk][:, None, :, None].expand(-1, d.n_heads, -1, 1)  # [batch, head, pos, 1]
        for layer, pattern in patterns.items():  # [batch, head, pos, pos]
            at = pattern.gather(-1, k)[..., 0]  # [batch, head, pos]
            total[layer] += (at * weight[chunk][:, None, :]).sum((0, 2)).double()
    scores = (total / count).float().cpu()  # [layer, head]
    seen = torch.ones_like(keys, dtype=torch.bool) if key_mask is None else key_mask  # [n, pos]
    visible = seen.long().cumsum(1) if d.causal else seen.long().sum(1, keepdim=True).expand_as(keys)  # [n, pos]
    chance = float((1 / visible.clamp(min=1).float())[scored].mean())
    ranked = sorted(
        ((float(scores[layer, h]), layer, h) for layer in range(d.n_layers) for h in range(d.n_heads)),
        key=lambda x: (-x[0], x[1], x[2]),
    )
    chosen = [x for x in ranked if x[0] >= threshold][:top_k]
    return HeadScores(
        kind=kind,
        task=task.name,
        rows=len(tokens),
        queries=count,
        scores=scores.tolist(),
        chance=chance,
        threshold=threshold,
        top_k=top_k,
        heads=[_site(layer, h) for _, layer, h in chosen],
        head_scores=[s for s, _, _ in chosen],
    )
