"""Diagnosing posterior collapse: does the verbalizer's description depend on the activation?

Symptom: the AV writes (nearly) the same description for every activation. Every step
below is forward passes only; nothing trains. Inputs: a :class:`Verbalizer` ``av``,
activations ``A`` ``[n, d]`` (n >= 2), a target token sequence ``s_i`` per row (e.g.
``av.encode(teacher_descriptions)``), the token-embedding table ``E`` ``[V, d]``.

    D0 geometry(A, E)        Is there anything to tell apart? median ||a||, ||mean a|| / median ||a||,
                             mean pairwise cosine raw and centred, the top |mean a| coordinates
                             and their share of ||mean a||^2, median ||e||, sqrt(d) / median ||e||.
    D1 nll_gap(av, A, s)     NLL per token of s_i given a_i (own), given a_pi(i) for a seeded
                             derangement pi (shuffled), given mean(A) (mean). gap = other - own,
                             over all tokens and over the first few of each sequence.
    D2 first_token_kl        KL(p(t1 | a_i) || p(t1 | a_j)) over random pairs i != j, beside the
                             same KL for two random token embeddings at the activations' norm; t1 is
                             the first token after the prefix all targets share (``diagnose``).
    D3 retrieval(av, A, s)   Rank a_i among itself and random other rows by NLL(s_i | a);
                             top-1 accuracy and mean reciprocal rank against chance.
    D4 distinct_share(texts) Share of distinct descriptions.

Reading: gaps ~ 0, KL far below the reference and retrieval at chance mean the AV ignores
the slot (the collapse is in the AV). A large gap and retrieval above chance with a low
distinct share mean the AV can read the activation but greedy decoding hides it. A raw cosine
near 1 with a centred cosine near 0, or one coordinate holding most of ||mean a||^2, mean
the rows differ only in a small part of their norm once rescaled: centre them before injecting.
sqrt(d) / median ||e|| far from 1 says the injection scale sits off the embeddings' scale.

>>> from probity.models import tiny
>>> from probity.nla import Verbalizer
>>> model, tok = tiny("llama")
>>> av = Verbalizer.create(model, tok, 1, placeholder="w99", av_prompt="w10 {placeholder} w11", max_new_tokens=4)
>>> acts = torch.randn(8, 32)
>>> found = diagnose(av, acts, av.encode(["w1 w2"] * 8), pairs=8, candidates=4)
>>> sorted(found.summary())
['distinct_share', 'first_token_kl', 'geometry', 'nll_gap', 'retrieval']
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Sequence

import torch

from probity.nla.core import Verbalizer

TIE_NATS = 1e-4  # retrieval: total NLLs this close count as a tie, broken at random


def geometry(acts: torch.Tensor, embeddings: torch.Tensor, rows: int = 512, seed: int = 0, top: int = 5) -> dict:
    """D0: the geometry of the activations ``acts`` ``[n, d]`` and of the token-embedding table
    ``embeddings`` ``[V, d]``.

    Pairwise cosines use at most ``rows`` rows (a seeded subsample); the mean is over all n.
    Returns median_norm, mean_norm_ratio (||mean|| / median ||a||), mean_cosine,
    mean_cosine_centred (after subtracting the mean), top_mean_dims (``top`` dicts of
    index, value and share of ||mean||^2, largest |value| first), embedding_median_norm and
    sqrt_d_over_embedding_norm."""
    _check_acts(acts)
    if embeddings.ndim != 2 or embeddings.shape[1] != acts.shape[1]:
        raise ValueError(f"embeddings must be [V, {acts.shape[1]}], got {tuple(embeddings.shape)}")
    acts = acts.detach().float()
    mean = acts.mean(0)  # [d]
    median_norm = acts.norm(dim=-1).median()
    sample = acts[_subsample(len(acts), rows, seed)]
    values, index = mean.abs().topk(min(top, len(mean)))
    mean_sq = mean.pow(2).sum().clamp_min(1e-30)
    embedding_norm = embeddings.detach().float().norm(dim=-1).median()
    return {
        "median_norm": float(median_norm),
        "mean_norm_ratio": float(mean.norm() / median_norm.clamp_min(1e-30)),
        "mean_cosine": _mean_pairwise_cosine(sample),
        "mean_cosine_centred": _mean_pairwise_cosine(sample - mean),
        "top_mean_dims": [
            {"index": int(i), "value": float(mean[i]), "share": float(v**2 / mean_sq)} for v, i in zip(values, index)
        ],
        "embedding_median_norm": float(embedding_norm),
        "sqrt_d_over_embedding_norm": math.sqrt(acts.shape[1]) / float(embedding_norm.clamp_min(1e-30)),
    }


def nll_gap(
    av: Verbalizer,
    acts: torch.Tensor,
    seqs: Sequence[Sequence[int]],
    first: int = 4,
    seed: int = 0,
    batch_size: int = 32,
) -> dict:
    """D1: mean NLL per token (nats, token-weighted) of ``seqs[i]`` given ``acts[i]`` (own), given
    ``acts[pi(i)]`` for a seeded derangement pi (shuffled) and given ``acts.mean(0)`` (mean).

    ``acts`` ``[n, d]``, ``seqs`` n token lists. Returns own, shuffled, mean, gap_shuffled
    (shuffled - own), gap_mean (mean - own), the same five over the first ``first`` tokens of
    each sequence (keys prefixed ``first_``), and tokens (the token count). For an AV centred
    on this same mean (``av.fit_center``) the mean condition injects zeros."""
    _check(av, acts, seqs)
    if first < 1:
        raise ValueError(f"first must be >= 1, got {first}")
    acts = acts.to(_device(av))
    conditions = {
        "own": acts,
        "shuffled": acts[_derangement(len(acts), seed)],
        "mean": acts.mean(0, keepdim=True).expand_as(acts),
    }
    totals = {name: [0.0, 0.0] for name in conditions}  # nats over [all tokens, the first tokens]
    counts = [sum(len(s) for s in seqs), sum(min(len(s), first) for s in seqs)]
    with _eval_mode(av), torch.no_grad():
        for lo in range(0, len(acts), batch_size):
            for name, given in conditions.items():
                logp, _ = av.token_logprobs(given[lo : lo + batch_size], seqs[lo : lo + batch_size])  # [batch, pos]
                totals[name][0] -= float(logp.sum())  # padding positions are 0
                totals[name][1] -= float(logp[:, :first].sum())
    out = {}
    for prefix, column in (("", 0), ("first_", 1)):
        nll = {name: total[column] / counts[column] for name, total in totals.items()}
        out |= {f"{prefix}{name}": value for name, value in nll.items()}
        out[f"{prefix}gap_shuffled"] = nll["shuffled"] - nll["own"]
        out[f"{prefix}gap_mean"] = nll["mean"] - nll["own"]
    return out | {"tokens": counts[0]}


def first_token_kl(
    av: Verbalizer, acts: torch.Tensor, pairs: int = 128, seed: int = 0, batch_size: int = 32, prefix=()
) -> dict:
    """D2: mean KL(p(t1 | a_i) || p(t1 | a_j)) in nats of the first description token after ``prefix``
    (token ids every description starts with, so t1 is the first that can differ) over ``pairs``
    seeded random pairs i != j of ``acts`` ``[n, d]``.

    The reference puts the input embeddings of two random ordinary vocabulary tokens (no
    special tokens, not the placeholder) in place of the activations, scaled to the median
    activation norm and injected the same way: the spread a change of token at the slot
    makes. Returns kl, reference_kl, ratio (kl / reference_kl; NaN when the reference is 0)
    and pairs."""
    _check(av, acts)
    if pairs < 1:
        raise ValueError(f"pairs must be >= 1, got {pairs}")
    generator = torch.Generator().manual_seed(seed)
    device = _device(av)
    acts = acts.to(device)
    i = torch.randint(len(acts), (pairs,), generator=generator)
    j = (i + torch.randint(1, len(acts), (pairs,), generator=generator)) % len(acts)  # never i
    table = av.model.get_input_embeddings().weight.detach()
    banned = {*av.tokenizer.all_special_ids, av.config.placeholder_id}
    ordinary = torch.tensor([t for t in range(min(len(av.tokenizer), len(table))) if t not in banned])
    tokens = ordinary[torch.randint(len(ordinary), (2, pairs), generator=generator)].to(table.device)
    scale = float(acts.detach().float().norm(dim=-1).median())
    reference = table[tokens].float() * (scale / table[tokens].float().norm(dim=-1, keepdim=True).clamp_min(1e-12))
    if av.config.centered:  # injection subtracts the centre: the reference tokens must arrive as themselves
        reference = reference + av.center.to(reference.device)
    with _eval_mode(av), torch.no_grad():
        kl = _mean_kl(av, acts[i.to(device)], acts[j.to(device)], batch_size, prefix)
        reference_kl = _mean_kl(av, reference[0].to(device), reference[1].to(device), batch_size, prefix)
    ratio = kl / reference_kl if reference_kl else math.nan
    return {"kl": kl, "reference_kl": reference_kl, "ratio": ratio, "pairs": pairs}


def retrieval(
    av: Verbalizer,
    acts: torch.Tensor,
    seqs: Sequence[Sequence[int]],
    candidates: int = 16,
    rows: int = 64,
    seed: int = 0,
) -> dict:
    """D3: for each of at most ``rows`` seeded random rows i, rank ``acts[i]`` among itself and
    ``candidates - 1`` random other rows of ``acts`` ``[n, d]`` by the total NLL of ``seqs[i]``
    (lowest first; ties within ``TIE_NATS`` broken at random, in expectation).

    ``candidates`` is capped at n. Returns top1, mrr (mean reciprocal rank), chance_top1,
    chance_mrr, candidates and rows (the counts used)."""
    _check(av, acts, seqs)
    if candidates < 2 or rows < 1:
        raise ValueError(f"need candidates >= 2 and rows >= 1, got {candidates} and {rows}")
    k = min(candidates, len(acts))
    generator = torch.Generator().manual_seed(seed)
    device = _device(av)
    acts = acts.to(device)
    chosen = _subsample(len(acts), rows, seed)
    hits, reciprocal = 0.0, 0.0
    with _eval_mode(av), torch.no_grad():
        for i in chosen.tolist():
            others = torch.randperm(len(acts) - 1, generator=generator)[: k - 1]
            others = others + (others >= i)  # skip row i
            given = acts[torch.cat([torch.tensor([i]), others]).to(device)]  # [k, d], row 0 is the own one
            logp, _ = av.token_logprobs(given, [seqs[i]] * k)
            nll = -logp.sum(1).cpu()  # [k]
            better = int((nll[1:] < nll[0] - TIE_NATS).sum())
            tied = int(((nll[1:] - nll[0]).abs() <= TIE_NATS).sum())
            hits += (better == 0) / (tied + 1)
            reciprocal += sum(1 / (better + 1 + t) for t in range(tied + 1)) / (tied + 1)
    return {
        "top1": hits / len(chosen),
        "mrr": reciprocal / len(chosen),
        "chance_top1": 1 / k,
        "chance_mrr": sum(1 / r for r in range(1, k + 1)) / k,
        "candidates": k,
        "rows": len(chosen),
    }


def common_prefix(seqs: Sequence[Sequence[int]]) -> list[int]:
    """The token ids every sequence of ``seqs`` starts with (a label format's fixed opening), short of
    the last token of the shortest one."""
    out = []
    for column in zip(*[s[:-1] for s in seqs]):
        if len(set(column)) > 1:
            break
        out.append(column[0])
    return out


def distinct_share(descriptions: Sequence[str]) -> float:
    """D4: the share of distinct strings among ``descriptions`` (1/n when all are the same)."""
    if not descriptions:
        raise ValueError("distinct_share needs at least one description")
    return len(set(descriptions)) / len(descriptions)


@dataclasses.dataclass
class Diagnosis:
    """The results of :func:`diagnose`: D0 to D4 (see the module docstring) and the greedy
    descriptions D4 was computed on."""

    geometry: dict
    nll_gap: dict
    first_token_kl: dict
    retrieval: dict
    distinct_share: float
    descriptions: list[str]

    def summary(self) -> dict:
        """D0 to D4 as a JSON-safe dict (non-finite floats become None; no descriptions)."""
        return _json_safe(
            {
                "geometry": self.geometry,
                "nll_gap": self.nll_gap,
                "first_token_kl": self.first_token_kl,
                "retrieval": self.retrieval,
                "distinct_share": self.distinct_share,
            }
        )


def diagnose(
    av: Verbalizer,
    acts: torch.Tensor,
    seqs: Sequence[Sequence[int]],
    descriptions: Sequence[str] | None = None,
    embeddings: torch.Tensor | None = None,
    first: int = 4,
    pairs: int = 128,
    candidates: int = 16,
    rows: int = 64,
    seed: int = 0,
    batch_size: int = 32,
) -> Diagnosis:
    """Run D0 to D4 on ``acts`` ``[n, d]`` and their target token lists ``seqs``.

    ``descriptions``: the AV's outputs for D4 (default: greedy ``av.describe`` of the first
    ``rows`` activations). ``embeddings`` ``[V, d]``: the table for D0 (default: the AV's
    input embeddings). The other arguments go to the step that takes them."""
    _check(av, acts, seqs)
    if descriptions is None:
        with _eval_mode(av):
            descriptions = av.describe(acts[:rows].to(_device(av)), batch_size=batch_size)
    if embeddings is None:
        embeddings = av.model.get_input_embeddings().weight
    return Diagnosis(
        geometry=geometry(acts, embeddings, seed=seed),
        nll_gap=nll_gap(av, acts, seqs, first=first, seed=seed, batch_size=batch_size),
        first_token_kl=first_token_kl(av, acts, pairs, seed, batch_size, prefix=common_prefix(seqs)),
        retrieval=retrieval(av, acts, seqs, candidates=candidates, rows=rows, seed=seed),
        distinct_share=distinct_share(descriptions),
        descriptions=list(descriptions),
    )


def _check_acts(acts: torch.Tensor, d: int | None = None):
    """Raise a one-line ValueError unless ``acts`` is a finite ``[n >= 2, d]`` tensor."""
    if acts.ndim != 2 or (d is not None and acts.shape[1] != d):
        raise ValueError(f"activations must be [n, {d or 'd'}], got {tuple(acts.shape)}")
    if len(acts) < 2:
        raise ValueError(f"need at least 2 activations to compare, got {len(acts)}")
    if not torch.isfinite(acts).all():
        raise ValueError("activations contain NaN or inf")


def _check(av: Verbalizer, acts: torch.Tensor, seqs: Sequence[Sequence[int]] | None = None):
    """Raise a one-line ValueError unless ``acts`` fits ``av`` and ``seqs`` has one non-empty list per row."""
    _check_acts(acts, av.config.d_model)
    if seqs is None:
        return
    if len(seqs) != len(acts):
        raise ValueError(f"{len(seqs)} sequences for {len(acts)} activations; give one per activation")
    empty = next((i for i, s in enumerate(seqs) if len(s) == 0), None)
    if empty is not None:
        raise ValueError(f"sequence {empty} is empty; every activation needs at least one target token")


def _device(av: Verbalizer) -> torch.device:
    return av.model.get_input_embeddings().weight.device


@contextlib.contextmanager
def _eval_mode(av: Verbalizer):
    """``av`` in eval mode (no dropout) within the block, its previous mode restored after."""
    was_training = av.training
    av.eval()
    try:
        yield
    finally:
        av.train(was_training)


def _subsample(n: int, rows: int, seed: int) -> torch.Tensor:
    """At most ``rows`` distinct indices of range(n), a seeded random choice (all n, in order, when n <= rows)."""
    if n <= rows:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:rows].sort().values


def _derangement(n: int, seed: int) -> torch.Tensor:
    """A seeded permutation of range(n), n >= 2, with no fixed point: one random n-cycle."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    perm = torch.empty(n, dtype=torch.long)
    perm[order] = order.roll(-1)
    return perm


def _mean_pairwise_cosine(x: torch.Tensor) -> float:
    """Mean cosine over the ordered pairs of distinct rows of ``x`` ``[m, d]``, m >= 2 (zero rows count as 0)."""
    unit = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    cos = unit @ unit.T  # [m, m]
    m = len(x)
    return float((cos.sum() - cos.diagonal().sum()) / (m * (m - 1)))


def _mean_kl(av: Verbalizer, a: torch.Tensor, b: torch.Tensor, batch_size: int, prefix=()) -> float:
    """Mean over rows of KL(p(t1 | a) || p(t1 | b)) in nats for ``a``, ``b`` ``[pairs, d]``."""
    total = 0.0
    for lo in range(0, len(a), batch_size):
        log_p = av.first_logprobs(a[lo : lo + batch_size], prefix)  # [batch, vocab]
        log_q = av.first_logprobs(b[lo : lo + batch_size], prefix)
        total += float((log_p.exp() * (log_p - log_q)).sum())
    return total / len(a)


def _json_safe(value):
    """``value`` with non-finite floats replaced by None, recursing into dicts and lists."""
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_safe(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
