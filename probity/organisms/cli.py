"""`probity organisms ...`: train, evaluate and list the model organisms."""

from __future__ import annotations

import re
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

app = typer.Typer(help="Model organisms trained from synthetic data.", no_args_is_help=True)
console = Console()

RUNS = Path("runs/organisms")  # where `organisms train NAME` writes without --out: runs/organisms/NAME


def _print_metrics(title: str, metrics: dict) -> None:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        table.add_row(str(key), f"{value:.4g}" if isinstance(value, float) else str(value))
    console.print(table)


def _plain(text: str) -> str:
    """A docstring line without its reStructuredText markup (``code`` and `role`)."""
    return re.sub(r"`{1,2}([^`]+)`{1,2}", r"\1", text)


@app.command("list")
def list_command() -> None:
    """List the organisms this install ships."""
    from probity import organisms

    for name in organisms.available():
        doc = (organisms.module(name).__doc__ or "").strip().splitlines()
        console.print(f"[bold]{name}[/bold]  {escape(_plain(doc[0])) if doc else ''}")


@app.command("train")
def train_command(
    name: str = typer.Argument(..., help="Organism name (see `probity organisms list`)."),
    out: Path = typer.Option(
        None,
        help="Folder for the weights \\[default: runs/organisms/NAME]. The shipped weights are only replaced when you "
        "name their folder here (probity/organisms/weights/NAME inside the package).",
        show_default=False,
    ),
    seed: int | None = typer.Option(None, help="Training seed, >= 0 \\[default: the recipe's seed]"),
    quick: bool = typer.Option(False, help="Short schedule (for tests and smoke runs)."),
) -> None:
    """Train organism NAME from its synthetic data with the fixed recipe; the folder it writes loads by
    path wherever an organism name is accepted (probity models sites DIR, probity scrub run --organism DIR)."""
    from probity import organisms
    from probity.report.console import fail, usage_errors, writable

    with usage_errors("NAME"):
        module = organisms.module(name)
    if seed is not None and seed < 0:
        fail(f"must be >= 0, got {seed}", "--seed")
    folder = out if out is not None else RUNS / name
    writable(folder, "--out", folder=True)
    if module is organisms.censored_tiny:
        writable(organisms.censored_tiny.uncensored_folder(folder), "--out", folder=True)  # stage 1 goes beside it
    shipped = organisms.resolve(name)[1]
    metrics = module.train(out_dir=folder, quick=quick, **({} if seed is None else {"seed": seed}))
    _print_metrics(f"{name}: trained", metrics)
    console.print(f"[green]weights:[/green] {folder}  (use them by path: probity models sites {folder})")
    if folder.resolve() != shipped.resolve():
        console.print(f"to ship them, rerun with --out {shipped} (replaces the shipped weights) or copy the folder")


@app.command("eval")
def eval_command(
    name: str = typer.Argument(
        ..., help="Organism name (see `probity organisms list`) or a folder written by `probity organisms train`."
    ),
) -> None:
    """Evaluate organism NAME (shipped, or trained into a folder) on held-out synthetic data."""
    from probity import organisms
    from probity.report.console import usage_errors

    with usage_errors("NAME"):  # the folder and, for censored_tiny, its uncensored sibling: configs only
        kind, folder = organisms.resolve(name)
        sibling = organisms.censored_tiny.reference(folder) if kind == "censored_tiny" else None
    module = organisms.module(kind)
    if name in organisms.ORGANISMS:
        metrics = module.evaluate()
    elif kind == "censored":  # the adapter folder names its testbed and roles; the reference is the base model
        metrics = module.evaluate(folder=folder)
    else:
        model, tokenizer = organisms.load_folder(folder)
        extra = {"uncensored": organisms.load_folder(sibling)} if sibling else {}
        metrics = module.evaluate(model, tokenizer, **extra)
    _print_metrics(f"{name}: held-out", metrics)
