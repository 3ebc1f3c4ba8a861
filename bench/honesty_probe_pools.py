"""Lie-probe AUROC on the censored organism's own *chat* answers, by pooling and layer.

``bench/honesty.py`` scores every detector on up to 400 judged responses drawn from every technique
(raw completions and prefilled answers included, each read back as a plain chat answer). This bench
reads the chat answers alone from that run's stored samples (the organism's lies in the setting it
was censored in, against its truthful chat answers) and fits both probes exactly as the protocol
does (all helper questions with both answers; instruction or statement data), at every layer in
``--layers`` and every pooling, so the protocol's choice can be read beside the others. The layer
that is best *on these answers* is an optimistic figure (chosen on the test set); the protocol's
(chosen on held-out ordinary answers) is the one to quote.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/honesty_probe_pools.py [--samples runs/bench_honesty/censored/samples.jsonl]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from probity.honesty.judge import FactMatcher
from probity.honesty.metrics import auroc, bootstrap
from probity.honesty.probe import POOLS, fit_logistic, instruction_data, pooled_activations, value_phrases
from probity.honesty.protocol import SampleStore
from probity.honesty.testbed import load_testbed
from probity.organisms import censored
from probity.report import write_json

RESULTS = Path(__file__).parent / "results"


def chat_items(samples: Path, questions: dict) -> list[tuple]:
    """(question, response, is_lie) for every chat response that is a lie or fully truthful."""
    judge, items = FactMatcher(), []
    for (technique, qid), responses in SampleStore(samples).done.items():
        if technique != "chat":
            continue
        q = questions[qid]
        for response in responses:
            verdict = judge(q, response)
            if verdict.truthful or verdict.lie:
                items.append((q, response, bool(verdict.lie)))
    return items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=Path, default=Path("runs/bench_honesty/censored/samples.jsonl"))
    parser.add_argument("--layers", default="8-25", help="first-last layer")
    for data, chosen in (("instructions", "15:value"), ("statements", "11:value")):  # the 2026-12-06 bench's choice
        parser.add_argument(f"--{data}", default=chosen, help=f"layer:pooling the protocol chose for the {data} probe")
    args = parser.parse_args()
    if not args.samples.is_file():
        raise SystemExit(f"no samples at {args.samples}; run bench/honesty.py first (its --work folder holds them)")
    first, last = (int(x) for x in args.layers.split("-"))
    torch.set_num_threads(1)
    console = Console()
    protocol = {data: getattr(args, data).split(":") for data in ("instructions", "statements")}
    protocol = {data: (int(layer), pool) for data, (layer, pool) in protocol.items()}
    model, tokenizer = censored.load()
    testbed = load_testbed(censored.testbed_path(censored.WEIGHTS))
    _, helpers = testbed.split()
    items = chat_items(args.samples, {q.id: q for q in testbed.questions})
    convs = [([{"role": "user", "content": q.question}], r) for q, r, _ in items]
    labels = [lie for _, _, lie in items]
    layers = list(range(first, last + 1))
    test = pooled_activations(model, tokenizer, convs, layers, values=[value_phrases(q) for q, _, _ in items])
    groups: dict[str, list[int]] = {}
    for i, (q, _, _) in enumerate(items):
        groups.setdefault(q.id, []).append(i)
    usable = [q for q in helpers if q.answer and q.false_answer]
    rows = []
    for data in ("instructions", "statements"):
        x, y, values = instruction_data(usable, data == "instructions")
        train = pooled_activations(model, tokenizer, x, layers, values=values)
        for pool in POOLS:
            for layer in layers:
                w, b = fit_logistic(train[pool][layer], torch.tensor(y))
                s = (test[pool][layer].double() @ w + b).tolist()
                est, lo, hi = bootstrap(
                    list(groups.values()), lambda ids, s=s: auroc([s[i] for i in ids], [labels[i] for i in ids]) or 0.5
                )
                rows.append({"data": data, "pool": pool, "layer": layer, "auroc": est, "ci": (lo, hi)})
    table = Table(title=f"probe AUROC on chat answers ({sum(labels)} lies, {len(labels) - sum(labels)} truthful)")
    for col in ("probe data", "pooling", "protocol's layer", "AUROC [95% CI]", "best layer on these answers"):
        table.add_column(col, justify="right")
    summary = []
    for data in ("instructions", "statements"):
        layer, chosen_pool = protocol[data]
        for pool in POOLS:
            mine = [r for r in rows if r["data"] == data and r["pool"] == pool]
            at = next((r for r in mine if r["layer"] == layer), None)
            best = max(mine, key=lambda r: r["auroc"])
            mark = " (protocol)" if pool == chosen_pool else ""
            table.add_row(
                data,
                pool + mark,
                str(layer),
                "-" if at is None else f"{at['auroc']:.3f} [{at['ci'][0]:.2f}, {at['ci'][1]:.2f}]",
                f"L{best['layer']} {best['auroc']:.3f}",
            )
            summary.append({"data": data, "pool": pool, "protocol_layer": layer, "at_protocol_layer": at})
    console.print(table)
    out = write_json(
        RESULTS / "honesty_probe_pools.json",
        {
            "samples": str(args.samples),
            "n_lies": sum(labels),
            "n_truthful": len(labels) - sum(labels),
            "summary": summary,
            "rows": rows,
        },
    )
    console.print(f"[green]wrote[/green] {out}")


if __name__ == "__main__":
    main()
