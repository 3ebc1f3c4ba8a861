"""report.metrics (scikit-learn underneath) against the metrics' plain definitions."""

import random

import pytest
import torch

from probity.report.metrics import auroc, balanced_accuracy, tpr_at_fpr, youden_threshold


def _data(seed: int, n: int = 60, levels: int = 6):
    rng = random.Random(seed)
    scores = [rng.randrange(levels) / 2 for _ in range(n)]  # many ties
    labels = [rng.random() < 0.4 for _ in range(n)]
    return scores, labels


@pytest.mark.parametrize("seed", range(5))
def test_auroc_is_the_mann_whitney_statistic(seed):
    s, y = _data(seed)
    pos = [a for a, label in zip(s, y) if label]
    neg = [b for b, label in zip(s, y) if not label]
    pairs = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in pos for b in neg)
    assert auroc(s, y) == pytest.approx(pairs / (len(pos) * len(neg)), abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_balanced_accuracy_is_the_mean_of_both_rates(seed):
    s, y = _data(seed)
    p = [x > 1 for x in s]
    tpr = sum(a and b for a, b in zip(p, y)) / sum(y)
    tnr = sum(not a and not b for a, b in zip(p, y)) / (len(y) - sum(y))
    assert balanced_accuracy(p, y) == pytest.approx((tpr + tnr) / 2, abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("fpr", [0.0, 0.01, 0.2, 0.5, 1.0])
def test_tpr_at_fpr_is_the_best_threshold_within_the_false_positive_budget(seed, fpr):
    s, y = _data(seed)
    n_pos, n_neg = sum(y), len(y) - sum(y)
    best = 0.0
    for t in sorted(set(s)) + [float("inf")]:  # flag score >= t
        tp = sum(x >= t and label for x, label in zip(s, y))
        fp = sum(x >= t and not label for x, label in zip(s, y))
        if fp / n_neg <= fpr:
            best = max(best, tp / n_pos)
    assert tpr_at_fpr(s, y, fpr) == pytest.approx(best, abs=1e-12)


@pytest.mark.parametrize("seed", range(8))
def test_youden_threshold_flags_at_the_highest_balanced_accuracy(seed):
    s, y = _data(seed)
    s = [x + 0.3 * label for x, label in zip(s, y)]  # some separation, many ties
    cut = youden_threshold(s, y)
    best = max(balanced_accuracy([x >= t for x in s], y) for t in set(s))  # every cut a plain search can make
    assert balanced_accuracy([x > cut for x in s], y) == pytest.approx(best, abs=1e-12)
    assert [x > cut for x in s] == [x >= cut for x in s]  # halfway between scores: no row sits on the cut
    assert youden_threshold([0.9, 0.1], [False, True]) is None  # no cut beats chance
    assert youden_threshold([0.5, 0.5], [False, True]) is None and youden_threshold([1.0], [True]) is None


def test_empty_class_gives_none_and_small_cases():
    assert auroc([1, 2], [True, True]) is None and auroc([1, 2], [0, 0]) is None
    assert balanced_accuracy([True], [True]) is None and tpr_at_fpr([0.3], [False]) is None
    assert auroc([0.1, 0.9], [False, True]) == 1.0 and auroc([3, 4, 1, 2], [1, 1, 0, 0]) == 1.0
    assert auroc([1, 1], [1, 0]) == 0.5
    assert balanced_accuracy([True, True, True, False], [True, True, False, False]) == 0.75
    assert tpr_at_fpr([0.9, 0.8, 0.7, 0.1], [True, False, True, False], 0.0) == 0.5
    assert tpr_at_fpr([0.9, 0.8, 0.7, 0.1], [True, False, True, False], 0.5) == 1.0
    with pytest.raises(ValueError, match="fpr must be a rate"):
        tpr_at_fpr([0.1, 0.2], [True, False], 1.5)


def test_tensors_are_accepted_even_when_they_carry_gradients():
    s = torch.tensor([0.2, 0.9, 0.4, 0.1], requires_grad=True)
    y = torch.tensor([False, True, True, False])
    assert auroc(s, y) == 1.0 and balanced_accuracy(s > 0.3, y) == 1.0 and tpr_at_fpr(s, y) == 1.0
