"""Detection metrics (AUROC, balanced accuracy and TPR at a fixed FPR live in probity.report.metrics)
and cluster-bootstrap intervals."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from probity.report.metrics import auroc, balanced_accuracy, tpr_at_fpr  # noqa: F401  (part of the honesty API)


def bootstrap(
    groups: Sequence[Sequence], statistic: Callable[[list], float], n: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
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
