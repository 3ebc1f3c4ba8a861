"""`probity honesty run`: elicitation techniques and lie detectors on an organism or a real model."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Honesty elicitation and lie detection.", no_args_is_help=True)
console = Console()


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.3f}"


@app.command("run")
def run_command(
    model: str = typer.Option("censored", help="censored | smollm2-135m | an HF name or local path."),
    testbed: Path = typer.Option(None, help="Testbed .json/.yaml (default: the organism's world, or capitals)."),
    techniques: str = typer.Option(
        "all",
        help="all, or a comma list of: chat, honesty_prompt, assistant_prefill, "
        "user_prefill, raw, few_shot, lora, steering, fuzzing.",
    ),
    detectors: str = typer.Option(
        "all", help="all, or a comma list of: self_classification, confession, probe, reference."
    ),
    samples: int = typer.Option(4, help="Sampled responses per question and technique."),
    temperature: float = typer.Option(0.7, help="Sampling temperature (0 = greedy)."),
    judge: str = typer.Option("match", help="match | hf:MODEL | openai:BASE_URL#MODEL (key from $OPENAI_API_KEY)."),
    reference: str = typer.Option(None, help="Uncensored reference model for the upper-bound detector."),
    limit: int = typer.Option(None, help="Use at most this many target questions."),
    lora_steps: int = typer.Option(150, help="LoRA honesty fine-tuning steps."),
    seed: int = typer.Option(0, help="Sampling seed."),
    json_path: Path = typer.Option(None, "--json", help="Write the elicitation/detection tables here."),
    out: Path = typer.Option(Path("runs/honesty"), help="Folder for result.json, index.html and resumable work."),
) -> None:
    """Run every technique and detector; resumes from OUT/work after a kill."""
    from probity import report
    from probity.honesty.protocol import RunConfig, run
    from probity.models.client import EndpointError

    try:
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
        )
        result = run(cfg, console)
    except (ValueError, FileNotFoundError, EndpointError) as err:
        console.print(f"[red]error:[/red] {err}", soft_wrap=True)
        raise typer.Exit(2) from None
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
    table = Table(title="lie detection")
    for col in ("detector", "AUROC", "balanced accuracy", "lies", "truthful"):
        table.add_column(col, justify="right")
    for d in result.detection:
        table.add_row(d.detector, _fmt(d.auroc), _fmt(d.balanced_accuracy), str(d.n_lies), str(d.n_truthful))
    console.print(table)
    if json_path is not None:
        report.write_json(json_path, result.summary())
        console.print(f"[green]json:[/green] {json_path}")
    console.print(f"[green]report:[/green] {report.save(result, out, title=f'honesty: {model}')}")
