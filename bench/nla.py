"""NLA benchmark: train end to end on the censored_tiny organism and (short) on SmolLM2-135M.

Prints one table per model: ours after GRPO against the baselines measured in the
same run (AR-SFT alone on teacher descriptions, the SFT round trip, an AR trained
on shuffled pairs), plus attribute recovery and audit AUROC on the organism.
Writes bench/results/nla.json (parts run separately are merged). ``--ship``
also writes the organism NLA to probity/nla/checkpoints/censored_tiny (float16).

    python bench/nla.py                      # both parts
    python bench/nla.py --part organism --ship
    python bench/nla.py --part smollm2
    python bench/nla.py --part ablation      # the organism with token-free teacher labels

The ablation shows what GRPO does when the teacher labels miss what the activation
mostly carries (the token): it adds the missing information (a large FVE gain) by
turning content words into a code, and attribute recovery collapses.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from probity.models import load
from probity.nla.core import save_nla
from probity.nla.pipeline import run_model, run_organism
from probity.nla.training import TrainConfig
from probity.report import save, to_jsonable, write_json

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "bench" / "results" / "nla.json"
SHIPPED = ROOT / "probity" / "nla" / "checkpoints" / "censored_tiny"
TARGETS = {
    "fve_rl": ">= 0.7",
    "fve_rl - fve_sft": ">= 0.1",
    "fve_shuffled": "<= 0.05",
    "attribute_recovery": ">= 0.9",
    "audit_auroc": ">= 0.9",
    "minutes": "< 30",
}

ORGANISM = TrainConfig(
    ar_sft_steps=400,
    av_sft_steps=1000,
    rl_steps=1500,
    batch_size=32,
    group=8,
    lr_ar=1e-3,
    lr_av=1e-3,
    lr_rl=5e-5,
    lr_ar_rl=3e-4,
    kl_coef=0.05,
    replay_coef=1.0,
    eval_every=100,
    eval_size=256,
    checkpoint_every=100,
)
SMOLLM2 = TrainConfig(
    ar_sft_steps=40,
    av_sft_steps=40,
    rl_steps=40,
    batch_size=4,
    group=4,
    lr_ar=1e-4,
    lr_av=5e-5,
    lr_rl=1e-5,
    lr_ar_rl=5e-5,
    kl_coef=0.02,
    eval_every=10,
    eval_size=24,
    checkpoint_every=1000,
)

console = Console()


def organism_part(out: Path, ship: bool, weights: str | None, label_token: bool = True) -> dict:
    t0 = time.perf_counter()
    model, tokenizer = load(weights, dtype=torch.float32) if weights else (None, None)
    report, av, ar = run_organism(
        layer=None, cfg=ORGANISM, out=out, model=model, tokenizer=tokenizer, label_token=label_token
    )
    minutes = (time.perf_counter() - t0) / 60
    save(
        report, out, title="NLA on the censored_tiny organism" + ("" if label_token else " (token-free teacher labels)")
    )
    if ship:
        shutil.rmtree(SHIPPED, ignore_errors=True)
        save_nla(SHIPPED, av, ar, dtype=torch.float16)
    row = {
        **report.metrics(),
        "recovery_by_position": report.recovery_by_position,
        "audit_auroc_answer_span": report.audit.auroc_answer_span,
        "sft_baseline": report.training.sft_probe,
        "minutes": minutes,
        "organism_weights": weights or "shipped",
        "training_seconds": report.training.seconds,
        "teacher_labels": "token : fact behaviour" if label_token else "fact behaviour",
        "layer": report.layer,
        "audit": to_jsonable(report.audit),
        "curve": to_jsonable(report.training.curve),
        "config": to_jsonable(ORGANISM),
        "examples": to_jsonable(report.examples[:8]),
    }
    table = Table("metric", "NLA (GRPO)", "baseline, same run", "target")
    table.add_row(
        "held-out FVE",
        f"{row['fve_rl']:.3f}",
        f"AR-SFT {row['fve_ar_sft']:.3f} / SFT round trip {row['fve_sft']:.3f}",
        TARGETS["fve_rl"],
    )
    table.add_row("FVE gain over SFT", f"{row['fve_rl'] - row['fve_sft']:+.3f}", "", TARGETS["fve_rl - fve_sft"])
    table.add_row("shuffled control FVE", f"{row['fve_shuffled']:.3f}", "", TARGETS["fve_shuffled"])
    sft = report.training.sft_probe or {}

    def positions(d):
        return ", ".join(f"{k} {v:.2f}" for k, v in (d or {}).items())

    table.add_row(
        "attribute recovery",
        f"{row['attribute_recovery']:.3f} ({positions(row['recovery_by_position'])})",
        f"SFT {sft.get('attribute_recovery', float('nan')):.3f} ({positions(sft.get('recovery_by_position'))})",
        TARGETS["attribute_recovery"],
    )
    table.add_row(
        f"audit AUROC, value token ({report.audit.n_lie} lies / {report.audit.n_control} controls)",
        f"{row['audit_auroc']:.3f}",
        f"SFT {sft.get('audit_auroc', float('nan')):.3f}",
        TARGETS["audit_auroc"],
    )
    table.add_row(
        "audit AUROC, answer span",
        f"{row['audit_auroc_answer_span']:.3f}",
        f"SFT {sft.get('audit_auroc_answer_span', float('nan')):.3f}",
        "",
    )
    table.add_row(
        "wall minutes (shared 2 cores)",
        f"{minutes:.1f}",
        f"torch threads {torch.get_num_threads()}",
        TARGETS["minutes"],
    )
    console.print(table)
    return row


def smollm2_part(out: Path) -> dict:
    t0 = time.perf_counter()
    report, _, _ = run_model("smollm2-135m", layer=None, cfg=SMOLLM2, out=out)
    minutes = (time.perf_counter() - t0) / 60
    save(report, out, title="NLA on SmolLM2-135M-Instruct (short run)")
    row = {
        **{k: report.metrics()[k] for k in ("fve_ar_sft", "fve_sft", "fve_rl", "fve_shuffled")},
        "minutes": minutes,
        "layer": report.layer,
        "curve": to_jsonable(report.training.curve),
        "config": to_jsonable(SMOLLM2),
        "examples": to_jsonable(report.examples[:8]),
    }
    table = Table("step", "phase", "round-trip FVE", "AR on teacher FVE", "mean reward")
    for p in report.training.curve:
        table.add_row(
            str(p.step),
            p.phase,
            f"{p.fve_round_trip:.3f}",
            f"{p.fve_ar_teacher:.3f}",
            "-" if p.mean_reward is None else f"{p.mean_reward:.3f}",
        )
    console.print(table)
    console.print(
        f"SmolLM2: AR-SFT {row['fve_ar_sft']:.3f}, SFT round trip {row['fve_sft']:.3f}, "
        f"after GRPO {row['fve_rl']:.3f}, shuffled {row['fve_shuffled']:.3f}"
    )
    return row


def merge(parts: dict) -> None:
    """Update the results file with ``parts``, keeping the parts other runs wrote."""
    results = json.loads(RESULT.read_text()) if RESULT.is_file() else {}
    write_json(RESULT, {**results, **parts})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=["organism", "smollm2", "both", "ablation"], default="both")
    ap.add_argument("--ship", action="store_true", help="write the organism NLA to the shipped checkpoint folder")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_nla")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--organism-weights",
        default=None,
        help="a folder of censored_tiny organism weights to use instead of the shipped ones",
    )
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    if args.part in ("organism", "both"):
        merge({"organism": organism_part(args.out / "organism", args.ship, args.organism_weights), "targets": TARGETS})
    if args.part == "ablation":
        merge(
            {
                "organism_token_free_labels": organism_part(
                    args.out / "ablation", False, args.organism_weights, label_token=False
                )
            }
        )
    if args.part in ("smollm2", "both"):
        merge({"smollm2": smollm2_part(args.out / "smollm2")})
    console.print(f"[green]wrote[/green] {RESULT}")


if __name__ == "__main__":
    main()
