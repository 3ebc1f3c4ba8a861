"""Tour section: kprop K=1..3 against sampling on one width-64, 4-hidden-layer ReLU MLP."""

from __future__ import annotations

from probity.estimate.bench import BenchConfig, BenchResult, run_bench


def section(console) -> BenchResult:
    """Run the benchmark protocol on one network with a 10^6-sample ground truth (~10 s)."""
    from probity.estimate.cli import print_summary

    cfg = BenchConfig(
        widths=[64],
        seeds=[0],
        gt_samples=10**6,
        cache_dir="runs/estimate-cache",
        mc_budgets=[100, 1000, 10000],
        blend_budgets=[100, 1000, 10000],
    )
    result = run_bench(cfg)
    print_summary(result, console)
    return result
