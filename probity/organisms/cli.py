"""`probity organisms ...`: train, evaluate and list the model organisms."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Model organisms trained from synthetic data.", no_args_is_help=True)
console = Console()


def _print_metrics(title: str, metrics: dict) -> None:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        table.add_row(str(key), f"{value:.4g}" if isinstance(value, float) else str(value))
    console.print(table)


@app.command("list")
def list_command() -> None:
    """List the organisms this install ships."""
    from probity import organisms

    for name in organisms.available():
        doc = (organisms.module(name).__doc__ or "").strip().splitlines()
        console.print(f"[bold]{name}[/bold]  {doc[0] if doc else ''}")


@app.command("train")
def train_command(
    name: str = typer.Argument(..., help="Organism name (see `probity organisms list`)."),
    out: Path = typer.Option(None, help="Where to write weights (default: the shipped location)."),
    seed: int | None = typer.Option(None, help="Training seed (default: the recipe's seed)."),
    quick: bool = typer.Option(False, help="Short schedule (for tests and smoke runs)."),
) -> None:
    """Train organism NAME from its synthetic data with the fixed recipe."""
    from probity import organisms

    _print_metrics(
        f"{name}: trained",
        organisms.module(name).train(out_dir=out, quick=quick, **({} if seed is None else {"seed": seed})),
    )


@app.command("eval")
def eval_command(name: str = typer.Argument(..., help="Organism name.")) -> None:
    """Evaluate the shipped organism NAME on held-out synthetic data."""
    from probity import organisms

    _print_metrics(f"{name}: held-out", organisms.module(name).evaluate())
