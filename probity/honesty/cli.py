"""`probity honesty run`: elicitation techniques and lie detectors on an organism or a real model."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from probity.report.console import fail, provenance, usage_errors, writable

app = typer.Typer(help="Honesty elicitation and lie detection.", no_args_is_help=True)
console = Console()


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.3f}"


@app.command("run")
def run_command(
    model: str = typer.Option(
        "censored",
        help="censored (SmolLM2-135M-Instruct + a censorship LoRA) | censored_tiny | smollm2-135m | an HF chat "
        "model's name or folder | an organism folder.",
    ),
    testbed: Path = typer.Option(
        None,
        help="Testbed .json/.yaml (format: probity/honesty/testbed.py). Default: the organism's own world, "
        "else probity/honesty/testbeds/capitals.yaml.",
        show_default=False,
    ),
    techniques: str = typer.Option(
        "all",
        help="all, or a comma list of: chat, honesty_prompt, assistant_prefill, "
        "user_prefill, raw, few_shot, lora, steering, fuzzing.",
    ),
    detectors: str = typer.Option(
        "all", help="all, or a comma list of: self_classification, confession, probe, probe_statements, reference."
    ),
    samples: int = typer.Option(4, help="Sampled responses per question and technique (>= 1)."),
    temperature: float = typer.Option(0.7, help="Sampling temperature (>= 0; 0 = greedy)."),
    judge: str = typer.Option("match", help="match | hf:MODEL | openai:BASE_URL#MODEL (key from $OPENAI_API_KEY)."),
    reference: str = typer.Option(
        None,
        help="Uncensored reference model for the upper-bound detector. Default: the organism's own "
        "(censored: smollm2-135m; censored_tiny: its uncensored twin), else none (the reference detector is skipped).",
        show_default=False,
    ),
    limit: int = typer.Option(
        None,
        help="Use at most this many target questions (>= 1) and 4x as many helpers. Default: all.",
        show_default=False,
    ),
    lora_steps: int = typer.Option(150, help="LoRA honesty fine-tuning steps (>= 1)."),
    seed: int = typer.Option(0, help="Seed of the sampling, the LoRA fine-tune and the detectors' subsample."),
    json_path: Path = typer.Option(
        None,
        "--json",
        help="Write the elicitation/detection tables, with provenance, here.",
        show_default=False,
    ),
    out: Path = typer.Option(Path("runs/honesty"), help="Folder for result.json, index.html and resumable work."),
    endpoint: str = typer.Option(
        None,
        help="OpenAI-compatible server of the same model (vLLM, llama.cpp), e.g. http://localhost:8000/v1: the "
        "black-box techniques (chat, honesty_prompt, few_shot; raw and the prefills via /completions) sample it; "
        "lora, steering, fuzzing and the detectors use the local model. Key from $OPENAI_API_KEY if it needs one.",
        show_default=False,
    ),
    endpoint_model: str = typer.Option(
        None, help="The model name the --endpoint serves. Default: --model.", show_default=False
    ),
    device: str = typer.Option(
        "cpu",
        help="cpu | cuda | cuda:N | auto (auto: device_map='auto' for HF models, across the GPUs; other models "
        "go to cuda if there is a GPU). Not a setting of the saved samples: a run moved to a GPU resumes.",
    ),
) -> None:
    """Run every technique and detector; resumes from OUT/work after a kill. Every option is checked
    before a model loads; a real model (not an organism) prints how long it will take first."""
    from probity import report
    from probity.honesty.protocol import RunConfig, check, run
    from probity.models.client import EndpointError

    writable(out, "--out", folder=True)
    writable(out / "work", "--out", folder=True)  # the resumable work goes there
    writable(json_path, "--json")
    with usage_errors():
        cfg = RunConfig(
            model=model,
            testbed=str(testbed) if testbed else None,
            techniques=techniques,
            detectors=detectors,
            samples=samples,
            temperature=temperature,
            judge=judge,
            reference=reference,
            limit=limit,
            lora_steps=lora_steps,
            seed=seed,
            work_dir=str(out / "work"),
            endpoint=endpoint,
            endpoint_model=endpoint_model,
            device=device,
        )
        plan = check(cfg)
    try:
        result = run(cfg, console, plan=plan)
    except EndpointError as err:
        fail(str(err), "--endpoint" if cfg.endpoint and err.url == cfg.endpoint else "--judge")
    except FileNotFoundError as err:  # a hub name that passed the check (online) but cannot be fetched
        fail(str(err))
    table = Table(title=f"elicitation ({result.testbed})")
    for col in ("technique", "facts mentioned", "pooled", "facts lied", "refusal", "truthful"):
        table.add_column(col, justify="right")
    for t in result.elicitation:
        table.add_row(
            t.technique,
            _fmt(t.facts_mentioned),
            _fmt(t.facts_mentioned_pooled),
            _fmt(t.facts_lied),
            _fmt(t.refusal_rate),
            _fmt(t.truthful_rate),
        )
    console.print(table)
    if not result.detection_note:  # else the run said why in one note (the detectors could not be scored)
        table = Table(title="lie detection")
        for col in ("detector", "AUROC", "balanced accuracy", "lies", "truthful"):
            table.add_column(col, justify="right")
        for d in result.detection:
            table.add_row(d.detector, _fmt(d.auroc), _fmt(d.balanced_accuracy), str(d.n_lies), str(d.n_truthful))
        console.print(table)
    if json_path is not None:
        inputs = {k: v for k, v in asdict(cfg).items() if k != "work_dir"}
        inputs["testbed_name"] = result.testbed
        inputs["target_questions"] = result.elicitation[0].n_questions if result.elicitation else 0
        if "sampled" in result.config:  # with --endpoint: which techniques' responses came from it
            inputs["sampled"] = result.config["sampled"]
        report.write_json(json_path, {"provenance": provenance("honesty run", **inputs), **result.summary()})
        console.print(f"[green]json:[/green] {json_path}")
    console.print(f"[green]report:[/green] {report.save(result, out, title=f'honesty: {model}')}")
