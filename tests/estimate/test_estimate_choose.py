"""``plan``/``estimate(mlp, budget)`` and ``probity estimate run --budget``: the frontier table matches the
committed benchmark, FLOP predictions are exact, the choice is sensible at small and large budgets, and a
budget below every method is one line."""

import json
from pathlib import Path

import pytest
import torch

from probity.cli import main
from probity.estimate import RandomMLP, blend, count_flops, kprop, mc_flops_per_sample
from probity.estimate.bench import memory_needed
from probity.estimate.choose import (
    BLEND_MSE,
    FRONTIER_WIDTHS,
    KPROP_MSE,
    estimate,
    expected_blend,
    expected_kprop,
    method_flops,
    plan,
)

BENCH = Path(__file__).resolve().parents[2] / "bench" / "results" / "estimate.json"


def test_frontier_table_is_the_committed_benchmark():
    summary = json.loads(BENCH.read_text())["summary"]
    for (order, variant), values in KPROP_MSE.items():
        for width, value in zip(FRONTIER_WIDTHS, values, strict=True):
            (row,) = [
                s
                for s in summary
                if (s["method"], s["order"], s["variant"], s["width"]) == ("kprop", order, variant, width)
            ]
            assert row["mse_over_var"] == pytest.approx(value, rel=5e-3)
    for n, values in BLEND_MSE.items():
        for width, value in zip(FRONTIER_WIDTHS, values, strict=True):
            (row,) = [s for s in summary if (s["method"], s["n_samples"], s["width"]) == ("blend", n, width)]
            assert row["mse_over_var"] == pytest.approx(value, rel=5e-3)


def test_interpolation_hits_the_measured_points_and_is_monotone_in_samples():
    assert expected_kprop(64, 3, "augment") == pytest.approx(9.9e-6)
    assert expected_kprop(90, 2, "simple") < expected_kprop(64, 2, "simple")
    assert expected_blend(64, 100000) == pytest.approx(4.44e-6)
    assert expected_blend(64, 10**6) == pytest.approx(4.44e-7)  # 1/N beyond the measured budgets
    assert expected_blend(64, 100) == pytest.approx(expected_kprop(64, 2, "augment"))


@pytest.mark.usefixtures("one_thread")
def test_flop_predictions_are_exact():
    mlp = RandomMLP(12, 3, seed=0)
    with torch.no_grad():
        for order, variant in [(1, "simple"), (2, "augment"), (3, "simple"), (3, "augment"), (4, "repeated")]:
            assert method_flops(12, 3, ("kprop", order, variant)) == count_flops(kprop, mlp, order, variant)[1]
        # blend: to one FLOP (its gate multiplies tau^2 by zero, one FLOP, only when it rejects the samples)
        assert abs(method_flops(12, 3, ("blend", 100)) - count_flops(blend, mlp, 100, 2, "augment")[1]) <= 1
    assert method_flops(12, 3, ("mc", 1000)) == round(1000 * mc_flops_per_sample(mlp))
    gelu = RandomMLP(9, 2, "gelu", seed=0)
    with torch.no_grad():
        assert method_flops(9, 2, ("kprop", 2, "simple"), "gelu") == count_flops(kprop, gelu, 2, "simple")[1]
        biased = RandomMLP(10, 2, "gelu", bias=True, seed=0)
        k4 = count_flops(kprop, biased, 4, "repeated")[1]
        assert method_flops(10, 2, ("kprop", 4, "repeated"), "gelu", bias=True) == k4  # a quartic in the width


@pytest.mark.usefixtures("one_thread")
def test_choice_is_sensible_at_small_and_large_budgets():
    k3 = method_flops(64, 4, ("kprop", 3, "augment"))
    small = plan(64, 4, 2e5)  # only K=1 simple (1.2e5 FLOPs) and a couple of samples fit
    assert small.best.label == "kprop K=1 simple"
    assert all(o.flops <= 2e5 for o in small.options)
    mid = plan(64, 4, k3)  # exactly K=3 augment's cost: the most accurate kprop, far better than sampling
    assert mid.best.label == "kprop K=3 augment" and mid.best.flops == k3 and mid.extrapolated == ""
    mc = next(o for o in mid.options if o.method == "mc")
    assert mc.expected_mse_over_var == pytest.approx(1 / mc.n_samples)
    big = plan(64, 4, 1e13)  # 10^8 samples: sampling (with kprop as control variate) wins
    assert big.best.method in ("blend", "mc") and big.best.expected_mse_over_var < 1e-7
    assert big.best.flops <= 1e13
    assert [o.expected_mse_over_var for o in big.options] == sorted(o.expected_mse_over_var for o in big.options)


@pytest.mark.usefixtures("one_thread")
def test_k4_repeated_is_chosen_where_it_is_the_most_accurate():
    """Width 128 (4 hidden layers): K=4 repeated costs 8.2e9 FLOPs for MSE/Var 6.26e-7, 2.6x below K=3
    augment's 1.63e-6; it wins from its cost until blend's samples catch up (about 2.5e11), and below its
    cost K=3 augment wins. At width 256 its figure is measured too (no extrapolation)."""
    k4 = method_flops(128, 4, ("kprop", 4, "repeated"))
    assert k4 == 8_242_694_400  # count_flops on the bench networks (1.065e10 before its symmetric products)
    for budget in (k4, 1.2e10, 3e10, 1e11):
        chosen = plan(128, 4, budget)
        assert chosen.best.label == "kprop K=4 repeated" and chosen.extrapolated == "", budget
        assert chosen.best.expected_mse_over_var == pytest.approx(6.26e-7)
    for budget in (1e9, k4 - 1):
        assert plan(128, 4, budget).best.label == "kprop K=3 augment"
    assert plan(128, 4, 1e12).best.method == "blend"
    assert plan(64, 4, 1e9).best.label == "kprop K=4 repeated"  # 5.8e8 FLOPs at width 64
    at_256 = plan(256, 4, 2e11)
    assert at_256.best.label == "kprop K=4 repeated" and at_256.extrapolated == ""
    assert at_256.best.expected_mse_over_var == pytest.approx(4.25e-8)
    assert plan(256, 4, 1e11).best.label == "kprop K=3 augment"  # K=4 (1.2e11 FLOPs) does not fit


@pytest.mark.usefixtures("one_thread")
def test_plan_leaves_out_what_does_not_fit_in_memory():
    """At width 512 K=4 repeated (about 12 GB) is the most accurate for 3e12 FLOPs; with 8 GB it is left out,
    and a limit below every method is one line."""
    assert plan(512, 4, 3e12).best.label == "kprop K=4 repeated"
    assert memory_needed(512, 4, [(4, "repeated")]) > 8 * 2**30
    small = plan(512, 4, 3e12, max_bytes=8 * 2**30)
    assert small.best.label != "kprop K=4 repeated" and all(o.order != 4 for o in small.options)
    with pytest.raises(ValueError, match="no method within 3e\\+12 FLOPs fits in 0.0156 GB at width 512") as err:
        plan(512, 4, 3e12, max_bytes=2**24)
    assert "\n" not in str(err.value)


def test_plan_says_when_it_extrapolates():
    deep = plan(64, 8, 1e9)
    assert "8 hidden layers" in deep.extrapolated and "1/N is exact" in deep.extrapolated
    assert "gelu" in plan(64, 4, 1e9, "gelu").extrapolated
    assert "width 512" in plan(512, 4, 1e12).extrapolated


def test_budget_below_every_method_is_one_line():
    with pytest.raises(ValueError, match="below the cheapest method") as err:
        plan(64, 4, 1000)
    assert "\n" not in str(err.value) and "raise the budget to at least" in str(err.value)
    for bad in (0, -1.0, float("nan"), "1e9", True):
        with pytest.raises(ValueError, match="budget must be a positive number"):
            plan(64, 4, bad)


@pytest.mark.usefixtures("one_thread")
def test_estimate_runs_the_chosen_method():
    mlp = RandomMLP(16, 2, seed=1)
    cheap = estimate(mlp, 5e4)
    assert cheap.plan.best.method == "kprop" and cheap.layers is not None
    assert torch.equal(cheap.out, kprop(mlp, cheap.plan.best.order, cheap.plan.best.variant).out)
    sampled = estimate(mlp, 1e9)
    assert sampled.plan.best.method in ("blend", "mc") and sampled.out.shape == (16,) and sampled.layers is None
    with pytest.raises(TypeError, match="expected a RandomMLP"):
        estimate(torch.zeros(3), 1e9)


@pytest.mark.parametrize(
    "args, says",
    [
        (["--budget", "1000"], "below the cheapest method at width 64"),
        (["--budget", "0"], "budget must be a positive number"),
        (["--budget", "1e9", "--order", "2"], "--budget chooses the method; drop --order and --variant"),
        (["--budget", "1e9", "--variant", "augment"], "--budget chooses the method"),
    ],
)
def test_bad_budget_is_one_line(usage_error, args, says):
    assert says in usage_error("estimate", "run", *args)


def test_run_with_budget_writes_the_plan(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert (
        main(["estimate", "run", "--width", "16", "--hidden-layers", "2", "--budget", "1e8", "--json", "r.json"]) == 0
    )
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["provenance"]["inputs"]["budget"] == 1e8
    best = data["plan"]["best"]
    assert best["flops"] <= 1e8 and best["expected_mse_over_var"] > 0 and data["method"] == best["method"]
    assert len(data["out"]) == 16
    out = capsys.readouterr()
    assert "chosen:" in out.out and "2 hidden layers, not the measured 4" in " ".join(out.err.split())
