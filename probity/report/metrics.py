"""Classification metrics shared by the instruments (lie detection, audits)."""

from __future__ import annotations

from collections.abc import Sequence

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
