"""Classification metrics shared by the instruments (lie detection, audits), from scikit-learn.

Each takes sequences or tensors (``[n]`` scores or predictions and ``[n]`` boolean labels,
positive = True) and returns ``None`` when a class is empty, where the metric is undefined.
:func:`bootstrap` gives any of them a percentile interval that resamples whole groups.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

# scikit-learn is imported inside each metric: it takes over a second to import, and every
# probity command (even --help) imports this module.


def _array(values, dtype) -> np.ndarray:
    """A sequence or tensor (detached, on the CPU) as a numpy array [n] of ``dtype``."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().double().numpy()
    return np.asarray(values, dtype=dtype).reshape(-1)


def _labels(labels: Sequence[bool]) -> np.ndarray | None:
    """``labels`` as a boolean array [n], or None when one class is empty."""
    y = _array(labels, bool)
    return y if y.any() and not y.all() else None


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """Area under the ROC curve of ``scores`` [n] (higher = positive) for boolean ``labels`` [n],
    ties counted half (the Mann-Whitney statistic); ``None`` when a class is empty."""
    from sklearn.metrics import roc_auc_score

    y = _labels(labels)
    if y is None:
        return None
    return float(roc_auc_score(y, _array(scores, np.float64)))


def balanced_accuracy(predicted: Sequence[bool], labels: Sequence[bool]) -> float | None:
    """Mean of the true-positive and true-negative rates of ``predicted`` [n] against
    ``labels`` [n]; ``None`` when a class is empty."""
    from sklearn.metrics import balanced_accuracy_score

    y = _labels(labels)
    if y is None:
        return None
    return float(balanced_accuracy_score(y, _array(predicted, bool)))


def tpr_at_fpr(scores: Sequence[float], labels: Sequence[bool], fpr: float = 0.01) -> float | None:
    """The ROC curve read at a fixed false-positive rate: the highest true-positive rate of
    any threshold on ``scores`` [n] (flag score >= threshold) whose false-positive rate is at
    most ``fpr`` (e.g. 0.01), for boolean ``labels`` [n]; ``None`` when a class is empty."""
    if not 0 <= fpr <= 1:
        raise ValueError(f"fpr must be a rate in [0, 1] (e.g. 0.01 for 1%), got {fpr!r}")
    from sklearn.metrics import roc_curve

    y = _labels(labels)
    if y is None:
        return None
    fprs, tprs, _ = roc_curve(y, _array(scores, np.float64), drop_intermediate=False)
    return float(tprs[fprs <= fpr].max())


def youden_threshold(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """The cut on ``scores`` [n] that best separates boolean ``labels`` [n]: flag ``score > cut`` at the
    threshold of highest balanced accuracy (TPR - FPR, Youden's J), placed halfway to the next lower score
    so that ``>`` and ``>=`` flag the same rows; ``None`` when a class is empty or no cut does better than
    chance (every TPR - FPR <= 0).

    >>> youden_threshold([0.1, 0.2, 0.6, 0.9], [False, False, True, True])
    0.4
    """
    from sklearn.metrics import roc_curve

    y = _labels(labels)
    if y is None:
        return None
    x = _array(scores, np.float64)
    fprs, tprs, cuts = roc_curve(y, x)
    j = tprs - fprs
    if j.max() <= 0:
        return None
    best = float(cuts[int(np.argmax(j))])  # flags x >= best
    below = x[x < best]
    return round((best + below.max()) / 2, 12) if below.size else float(np.nextafter(best, -np.inf))


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
