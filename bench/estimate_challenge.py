"""Benchmark for ``probity estimate challenge``: ARC's white-box estimation challenge protocol (width 256,
depth 8, He ReLU; score = final-layer MSE x max(0.1, FLOPs / 6.8e10)) on probity's kprop K=2/3 and Monte
Carlo, 5 networks (seeds 0-4), 2 x 10^6-sample ground truth each (noise floor about 1e-7 subtracted;
ground truths cached under bench/results/cache/). Writes bench/results/estimate_challenge.json.
``--quick``: 2 networks, 10^5-sample ground truth, written to runs/ instead.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/estimate_challenge.py
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
from rich.console import Console

from probity import report
from probity.estimate.challenge import ChallengeConfig, run_challenge
from probity.report.console import provenance

ROOT = Path(__file__).resolve().parent
CACHE = os.path.relpath(ROOT / "results" / "cache")


def main() -> None:
    torch.set_num_threads(1)
    console = Console(width=140)
    quick = "--quick" in sys.argv
    sizes = {"networks": 2, "gt_samples": 10**5} if quick else {"networks": 5, "gt_samples": 2 * 10**6}
    cfg = ChallengeConfig(cache_dir=CACHE, **sizes)
    result = run_challenge(cfg)
    for s in result.summary:
        lo, hi = s.interval
        console.print(
            f"{s.method:>24}: score {s.score:.3g} (95% {lo:.3g} to {hi:.3g}), final-layer MSE "
            f"{s.final_layer_mse:.3g}, {s.flops:.3g} FLOPs, multiplier {s.multiplier:.3f}"
        )
    for claim in result.headline():
        console.print(f"{claim.name}: {claim.value:.3g} vs {claim.reference:g} ({claim.source})")
    inputs = {k: v for k, v in report.to_jsonable(cfg).items() if k != "cache_dir"}
    payload = {"provenance": provenance("bench/estimate_challenge.py", **inputs), **report.to_jsonable(result)}
    out = Path("runs/estimate_challenge_quick.json") if quick else ROOT / "results" / "estimate_challenge.json"
    report.write_json(out, payload, indent=1)
    console.print(f"[green]wrote[/green] {out}")


if __name__ == "__main__":
    main()
