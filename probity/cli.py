"""The probity command line: ``probity <instrument> <verb>``, ``probity tour`` and ``probity report``.

The CLI only parses arguments, calls the library and prints. Each subpackage keeps its typer
sub-app in ``probity/<name>/cli.py`` and its tour section (``section(console) -> result
dataclass``) in ``probity/<name>/tour.py``; both are imported here by name.

Every command checks its input before it loads a model; a bad value is one line on stderr,
``error: ...``, and exit status 2 (:func:`main`, the ``probity`` entry point).
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console

import probity
from probity.estimate import tour as estimate_tour
from probity.estimate.cli import app as estimate_app
from probity.honesty import tour as honesty_tour
from probity.honesty.cli import app as honesty_app
from probity.models import tour as models_tour
from probity.models.cli import app as models_app
from probity.nla import tour as nla_tour
from probity.nla.cli import app as nla_app
from probity.organisms.cli import app as organisms_app
from probity.scrub import tour as scrub_tour
from probity.scrub.cli import app as scrub_app

app = typer.Typer(
    help="probity: audit what neural networks compute, not only what they output.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()

for _name, _app in (
    ("models", models_app),
    ("organisms", organisms_app),
    ("estimate", estimate_app),
    ("scrub", scrub_app),
    ("honesty", honesty_app),
    ("nla", nla_app),
):
    app.add_typer(_app, name=_name)

# Tour sections in order: (anchor name, heading, section(console) -> result dataclass).
SECTIONS = (
    ("models", "Models: the shared model layer on SmolLM2-135M", models_tour.section),
    ("estimate", "Estimate: mechanistic estimation of random MLPs (ARC 2026)", estimate_tour.section),
    ("scrub", "Scrub: causal scrubbing (Chan et al. 2022)", scrub_tour.section),
    ("honesty", "Honesty: elicitation and lie detection (Casademunt et al. 2026)", honesty_tour.section),
    ("nla", "NLA: natural-language autoencoders (Anthropic 2026)", nla_tour.section),
)


def _version(value: bool) -> None:
    if value:
        console.print(f"probity {probity.__version__}")
        raise typer.Exit()


@app.callback()
def callback(
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
    unknown = wanted - {name for name, _, _ in SECTIONS}
    if unknown:
        raise typer.BadParameter(
            f"unknown section(s) {', '.join(sorted(unknown))}; choose from {', '.join(n for n, _, _ in SECTIONS)}",
            param_hint="--only",
        )
    sections = []
    for name, title, section in SECTIONS:
        if wanted and name not in wanted:
            continue
        console.rule(f"[bold]{name}")
        sections.append(report.Section(name, title, section(console)))
    path = report.save(report.Tour(sections), out, title="probity tour")
    console.print(f"[green]report:[/green] {path}")


@app.command("report")
def rerender(
    folder: Path = typer.Argument(..., help="A run folder holding result.json (e.g. runs/tour)."),
) -> None:
    """Re-render FOLDER/index.html from FOLDER/result.json."""
    from probity import report

    # The result types register with probity.report when their modules are imported.
    from probity.estimate import bench  # noqa: F401
    from probity.honesty import protocol  # noqa: F401
    from probity.nla import evaluate, pipeline, training  # noqa: F401
    from probity.scrub import run, study  # noqa: F401

    try:
        path = report.rerender(folder)
    except (FileNotFoundError, LookupError) as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from None
    console.print(f"[green]report:[/green] {path}")


def main(argv: list[str] | None = None) -> int:
    """The ``probity`` entry point: run the command line on ``argv`` (default: ``sys.argv[1:]``);
    a usage error, ours or click's, is printed as one line and gives exit status 2."""
    command = typer.main.get_command(app)
    try:
        command.main(args=argv, prog_name="probity", standalone_mode=False)
    except typer.Exit as done:
        return done.exit_code
    except typer.Abort:
        print("aborted", file=sys.stderr)
        return 1
    except typer.TyperException as err:  # a usage error: typer's own (a bad type) or ours (a bad value)
        print(f"error: {' '.join(err.format_message().split())}", file=sys.stderr)
        return err.exit_code
    return 0
