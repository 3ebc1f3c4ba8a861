"""The probity command line: ``probity <instrument> <verb>`` and ``probity tour``.

The CLI only parses arguments, calls the library and prints. Each subpackage
keeps its typer sub-app in ``probity/<name>/cli.py`` and its tour section
(``section(console) -> result dataclass``) in ``probity/<name>/tour.py``.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
from pathlib import Path

import typer
from rich.console import Console

import probity

app = typer.Typer(
    help="probity: audit what neural networks compute, not only what they output.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()

# Subpackages in tour order. Each that has a `cli.py` (a typer `app`) becomes
# `probity <name> ...`; each that has a `tour.py` (`section(console)`) adds a tour section.
SUBPACKAGES = ("models", "organisms", "estimate", "scrub", "honesty", "nla")


def _has_module(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


for _name in SUBPACKAGES:
    if _has_module(f"probity.{_name}") and _has_module(f"probity.{_name}.cli"):
        app.add_typer(importlib.import_module(f"probity.{_name}.cli").app, name=_name)


def _version(value: bool) -> None:
    if value:
        console.print(f"probity {probity.__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """probity: audit what neural networks compute, not only what they output."""


@app.command()
def tour(
    out: Path = typer.Option(Path("runs/tour"), help="Folder for result.json and index.html."),
    only: str = typer.Option("", help="Comma-separated section names to run (default: all)."),
) -> None:
    """Run every instrument once on built-in defaults and write an HTML report."""
    from probity import report

    wanted = {s.strip() for s in only.split(",") if s.strip()}
    sections = {}
    for name in SUBPACKAGES:
        if (wanted and name not in wanted) or not (
            _has_module(f"probity.{name}") and _has_module(f"probity.{name}.tour")
        ):
            continue
        console.rule(f"[bold]{name}")
        sections[name] = importlib.import_module(f"probity.{name}.tour").section(console)
    # One field per section that ran, so each renders as a top-level section of the page.
    tour_result = dataclasses.make_dataclass("Tour", [(name, type(result)) for name, result in sections.items()])
    path = report.save(tour_result(**sections), out, title="probity tour")
    console.print(f"[green]report:[/green] {path}")
