"""Tour section: kprop K=1..4 against sampling on one width-64, 4-hidden-layer ReLU MLP."""

from __future__ import annotations

from pathlib import Path

from probity.estimate.bench import BenchConfig, BenchResult, run_bench

# The tour's benchmark: one network, a 10^6-sample ground truth (100x the largest budget, see
# ``BenchConfig.check_grading``).
CONFIG = dict(widths=[64], seeds=[0], gt_samples=10**6, mc_budgets=[100, 1000, 10000], blend_budgets=[100, 1000, 10000])


def section(console, cache_dir: str | Path | None = None) -> BenchResult:
    """Run the benchmark protocol of :data:`CONFIG` (~10 s), its ground truth cached under ``cache_dir``
    (``probity tour`` passes a folder inside its ``--out``; default ``runs/estimate-cache``)."""
    from probity.estimate.cli import print_summary

    cfg = BenchConfig(**CONFIG, cache_dir=str(cache_dir or "runs/estimate-cache"))
    result = run_bench(cfg)
    print_summary(result, console)
    return result
