"""FLOP accounting, x-MC, the blend estimator, the bench runner and the CLI."""

import json
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from typer.testing import CliRunner

from probity.estimate import (
    RandomMLP,
    blend,
    count_flops,
    ground_truth,
    kprop,
    mc_flops_per_sample,
    monte_carlo,
    mse_over_var,
    x_mc,
)
from probity.estimate.bench import ARC_REFERENCE, BenchConfig, BenchResult, Summary, memory_needed
from probity.estimate.cli import app


def test_flops_scale_with_width():
    """K=1 costs O(n^2) per layer, K=2 and K=3 O(n^3); a sample costs about 2 L n^2."""
    flops = {K: [count_flops(kprop, RandomMLP(n, 3, seed=0), K)[1] for n in (64, 128)] for K in (1, 2, 3)}
    assert 3 < flops[1][1] / flops[1][0] < 4.5  # O(n^2) plus O(n) coefficient work
    assert 7 < flops[2][1] / flops[2][0] < 8.5 and 7 < flops[3][1] / flops[3][0] < 8.5
    assert flops[1][1] < flops[2][1] < flops[3][1]
    fps = mc_flops_per_sample(RandomMLP(64, 3, seed=0))
    assert 2 * 4 * 64**2 <= fps < 1.05 * 2 * 4 * 64**2
    assert x_mc(0.01, 1000, 500) == 50 and x_mc(-1e-9, 1000, 500) is None


def test_k2_matrix_products_are_exactly_counted():
    """K=2 (ReLU) matrix products: W_1 W_1^T, W C W^T per middle layer and only the diagonal of the
    last one (2 n^3). A symmetric product in 4 row blocks costs 5/8 of 2 n^3 (1.25 n^3), so W C W^T
    is 2 + 1.25 n^3: 13 (H - 1) / 4 n^3 for H >= 2 hidden layers (n a multiple of 4)."""
    for H, n in [(2, 16), (4, 24)]:
        with FlopCounterMode(display=False) as counter:  # torch's own counts: matrix products only
            kprop(RandomMLP(n, H, seed=0), 2)
        assert counter.get_total_flops() == 13 * (H - 1) * n**3 // 4


def test_blend_beats_both_parts(tmp_path):
    """blend is never worse than kprop alone or plain sampling at the same sample count (mean MSE/Var
    over 3 draws: a single Monte Carlo draw can be lucky, e.g. 3x below its expected 1/N)."""
    mlp = RandomMLP(32, 4, "relu", seed=1)
    gt = ground_truth(mlp, 10**6, cache_dir=tmp_path, out_only=True, progress=False)
    k2 = mse_over_var(kprop(mlp, 2, "augment").out, gt.out_mean, gt.out_var, gt.n_samples)
    for n in (30, 3_000, 100_000):
        mse_b, mse_mc = 0.0, 0.0
        for draw in range(3):
            gen = torch.Generator().manual_seed(n + draw)
            b = blend(mlp, n, order=2, variant="augment", generator=gen)
            mc = monte_carlo(mlp, n, generator=torch.Generator().manual_seed(n + draw), out_only=True)
            mse_b += mse_over_var(b.out, gt.out_mean, gt.out_var, gt.n_samples) / 3
            mse_mc += mse_over_var(mc.out_mean, gt.out_mean, gt.out_var, gt.n_samples) / 3
        assert mse_b <= 1.05 * min(k2, mse_mc), (n, mse_b, k2, mse_mc)
    assert b.weight.mean() > 0.5  # with 10^5 samples the sampled side dominates


def test_cli_run_and_bench(tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["run", "--width", "8", "--hidden-layers", "2", "--order", "3", "--check", "2000"])
    assert res.exit_code == 0, res.output
    assert "act2" in res.output and "out" in res.output
    res = runner.invoke(app, ["run", "--width", "8", "--hidden-layers", "2", "--order", "4", "--check", "2000"])
    assert res.exit_code == 0 and "kprop K=4 simple" in res.output, res.output
    res = runner.invoke(app, ["run", "--width", "8", "--hidden-layers", "2", "--order", "4", "--variant", "repeated"])
    assert res.exit_code == 0 and "kprop K=4 repeated" in res.output, res.output
    bad = runner.invoke(app, ["run", "--order", "5"])
    assert bad.exit_code == 2 and "order must be one of" in bad.output
    bad = runner.invoke(app, ["run", "--check", "1"])
    assert bad.exit_code == 2 and "--check must be 0" in bad.output  # a usage error, not a traceback
    out_json = tmp_path / "bench.json"
    args = ["bench", "--widths", "8", "--seeds", "0,1", "--orders", "1,3", "--gt-samples", "20000"]
    args += ["--mc-budgets", "100", "--blend-budgets", "100", "--cache-dir", str(tmp_path / "cache")]
    args += ["--json", str(out_json), "--out", str(tmp_path / "report")]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    rows = json.loads(out_json.read_text())["rows"]
    assert {r["method"] for r in rows} == {"kprop", "mc", "blend"} and len(rows) == 2 * (4 + 1 + 1)
    keys = {
        "method",
        "variant",
        "order",
        "width",
        "hidden_layers",
        "activation",
        "seed",
        "mse_over_var",
        "flops",
        "wall_s",
        "x_mc",
    }
    assert all(keys <= set(r) for r in rows)
    assert all(r["x_mc"] is None or r["x_mc"] > 0 for r in rows) and all(r["flops"] > 0 for r in rows)
    page = (tmp_path / "report" / "index.html").read_text()
    assert "data:image/png;base64" in page or "<svg" in page  # the figure, inline as PNG or SVG
    for bad_args, message in [
        (["--widths", "0"], "widths must be integers"),
        (["--widths", "a,b"], "comma-separated integers"),
        (["--gt-samples", "10"], "gt_samples must be"),
    ]:
        bad = runner.invoke(app, ["bench", *bad_args])
        assert bad.exit_code == 2 and message in bad.output, bad.output  # usage errors before any sampling


@pytest.mark.parametrize(
    "fields,message",
    [
        ({"activation": "swish"}, "unknown activation"),
        ({"widths": []}, "widths must be integers"),
        ({"hidden_layers": 0}, "hidden_layers must be"),
        ({"orders": [5]}, "order must be one of"),
        ({"blend_variant": "fancy"}, "variant must be one of"),
        ({"gt_samples": 10}, "gt_samples must be"),
        ({"seeds": []}, "seeds must be"),
        ({"mc_budgets": [1]}, "sample budgets must be"),
    ],
)
def test_bench_config_validates_on_construction(fields, message):
    with pytest.raises(ValueError, match=message) as info:
        BenchConfig(**fields)
    assert "\n" not in str(info.value)


def test_bench_runs_k4_repeated_beyond_the_dense_width_and_sizes_it_as_cubic():
    """K=4 simple stays at widths <= dense_max_width (8 n^4 bytes); repeated (a dozen [n]^3) runs at 256 too."""
    cfg = BenchConfig(widths=[128, 256], orders=[3, 4], variants=["augment"])
    assert cfg.kprop_methods(128) == [(3, "augment"), (4, "simple"), (4, "repeated")]
    assert cfg.kprop_methods(256) == [(3, "augment"), (4, "repeated")]
    dense, repeated = memory_needed(256, 4, [4]), memory_needed(256, 4, [(4, "repeated")])
    assert dense > 32 * 2**30 and repeated < 2 * 2**30  # 8 n^4 = 32 GB against 96 n^3 = 1.5 GB
    assert memory_needed(256, 4, [(4, "simple")]) == dense
    assert cfg.memory_needed() == memory_needed(128, 4, [4], 10**7)  # the dense K=4 at 128 is the largest


def test_k4_repeated_claims_against_arcs_k4_simple():
    """K=4 repeated is claimed beside ARC's K=4 simple: MSE/Var below our K=3 augment, x-MC above 10."""

    def kp(order, variant, mse, x):
        return Summary("kprop", variant, order, 128, 0, 3, mse, 1e10, 1.0, x)

    rows = [kp(3, "augment", 1.65e-6, 155.0), kp(4, "repeated", 6.47e-7, 23.9), kp(4, "simple", 2.5e-7, 0.98)]
    claims = {c.name: c for c in BenchResult(BenchConfig(), rows, []).headline()}
    mse, xmc = claims["kprop K=4 repeated, n=128: MSE/Var"], claims["kprop K=4 repeated, n=128: x-MC"]
    assert (mse.reference, xmc.reference) == ARC_REFERENCE[(128, 4, "simple")]
    assert "K=4 simple" in mse.source and mse.target.startswith("< 1.65e-06") and mse.verdict == "met"
    assert xmc.target.startswith("> 10") and xmc.verdict == "met"
    slow = BenchResult(BenchConfig(), [kp(4, "repeated", 6.47e-7, 9.0)], []).headline()
    assert [(c.name, c.verdict) for c in slow] == [("kprop K=4 repeated, n=128: x-MC", "missed")]  # no K=3 row
    assert (
        BenchResult(BenchConfig(), [Summary("kprop", "repeated", 4, 32, 0, 2, 1e-4, 1e7, 1.0, 2.0)], []).headline()
        == []
    )


def test_bench_config_stores_a_path_as_its_string(tmp_path):
    cfg = BenchConfig(widths=[8], seeds=[0], gt_samples=1000, cache_dir=tmp_path, mc_budgets=[10], blend_budgets=[10])
    assert cfg.cache_dir == str(tmp_path)


def test_committed_bench_result_records_no_machine_path():
    result = json.loads((Path(__file__).parents[2] / "bench" / "results" / "estimate.json").read_text())
    assert result["config"]["cache_dir"] == BenchConfig().cache_dir == "bench/results/cache"


def test_gauss_and_mlp_import_no_cycle():
    """gauss and mlp both read the activation table from activations; neither imports the other lazily."""
    root = Path(__file__).parents[2] / "probity" / "estimate"
    gauss = (root / "gauss.py").read_text()
    mlp = (root / "mlp.py").read_text()
    assert "probity.estimate.mlp" not in gauss
    assert "from probity.estimate.activations import" in gauss and "from probity.estimate.activations import" in mlp
    assert "    from probity" not in mlp  # no function-level import left
