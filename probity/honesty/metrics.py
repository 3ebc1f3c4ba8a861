"""Detection metrics (AUROC, balanced accuracy) and cluster-bootstrap intervals."""

from __future__ import annotations

from typing import Callable, Sequence

import torch


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """Area under the ROC curve of ``scores`` (higher = positive) for boolean ``labels``,
    ties counted half (the Mann-Whitney statistic); ``None`` when a class is empty."""
    s = torch.as_tensor(scores, dtype=torch.float64)
    y = torch.as_tensor(labels, dtype=torch.bool)
    pos, neg = s[y], s[~y]
    if len(pos) == 0 or len(neg) == 0:
        return None
    greater = (pos[:, None] > neg[None, :]).double().sum()
    ties = (pos[:, None] == neg[None, :]).double().sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


def balanced_accuracy(predicted: Sequence[bool], labels: Sequence[bool]) -> float | None:
    """Mean of the true-positive and true-negative rates; ``None`` when a class is empty."""
    p = torch.as_tensor(predicted, dtype=torch.bool)
    y = torch.as_tensor(labels, dtype=torch.bool)
    if y.all() or not y.any():
        return None
    return float(((p & y).sum() / y.sum() + (~p & ~y).sum() / (~y).sum()) / 2)


def bootstrap(groups: Sequence[Sequence], statistic: Callable[[list], float], n: int = 1000, seed: int = 0,
              level: float = 0.95) -> tuple[float, float, float]:
    """(estimate, low, high) of ``statistic`` over the pooled items of ``groups``, with a
    percentile interval from resampling whole groups (questions) with replacement, so
    several samples of one question are not counted as independent evidence."""
    pooled = [x for g in groups for x in g]
    estimate = statistic(pooled)
    if len(groups) < 2:
        return estimate, estimate, estimate
    gen = torch.Generator().manual_seed(seed)
    draws = torch.randint(len(groups), (n, len(groups)), generator=gen).tolist()
    values = sorted(statistic([x for i in d for x in groups[i]]) for d in draws)
    tail = (1 - level) / 2
    return estimate, values[int(tail * (n - 1))], values[int((1 - tail) * (n - 1))]
