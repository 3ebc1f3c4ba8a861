"""The probity command line: ``probity <instrument> <verb>``, ``probity tour`` and ``probity report``.

The CLI only parses arguments, calls the library and prints. Each subpackage keeps its typer
sub-app in ``probity/<name>/cli.py`` and its tour section (``section(console, cache_dir) -> result
dataclass``) in ``probity/<name>/tour.py``; both are imported here by name. Every section takes the
folder ``OUT/<name>-cache`` for any files it keeps (most keep none), so that ``probity tour --out OUT``
writes nothing outside OUT.

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
from probity.report.console import fail, usage_errors, writable
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

# Tour sections in order: (anchor name, heading, section(console, cache_dir) -> result dataclass).
SECTIONS = (
    ("models", "Models: the shared model layer on SmolLM2-135M", models_tour.section),
    ("estimate", "Estimate: mechanistic estimation of random MLPs (ARC 2026)", estimate_tour.section),
    ("scrub", "Scrub: causal scrubbing (Chan et al. 2022)", scrub_tour.section),
    ("honesty", "Honesty: elicitation and lie detection (Casademunt et al. 2026)", honesty_tour.section),
    ("nla", "NLA: natural-language autoencoders (Anthropic 2026)", nla_tour.section),
    ("nla-censored", "NLA on the censored SmolLM2: what it knows but does not say", nla_tour.censored_section),
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
    out: Path = typer.Option(
        Path("runs/tour"), help="Folder for result.json, index.html and the sections' caches (nothing goes elsewhere)."
    ),
    only: str = typer.Option(
        "", help="Comma-separated section names to run: models, estimate, scrub, honesty, nla. Default: all."
    ),
) -> None:
    """Run every instrument once on built-in defaults and write an HTML report (about 55-75 s on 2 CPU cores)."""
    from probity import report

    names = [name for name, _, _ in SECTIONS]
    wanted = {s.strip() for s in only.split(",") if s.strip()}
    unknown = wanted - set(names)
    if unknown:
        fail(f"unknown section(s) {', '.join(sorted(unknown))}; choose from {', '.join(names)}", "--only")
    if only.strip() and not wanted:
        fail(f"no section named in {only!r}; choose from {', '.join(names)}", "--only")
    writable(out, "--out", folder=True)
    sections = []
    for name, title, section in SECTIONS:
        if wanted and name not in wanted:
            continue
        console.rule(f"[bold]{name}")
        sections.append(report.Section(name, title, section(console, cache_dir=out / f"{name}-cache")))
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
    from probity.scrub import ioi, run, study  # noqa: F401

    if not folder.is_dir():
        fail(f"{folder} is not a folder; pass a run folder holding result.json (e.g. runs/tour)", "FOLDER")
    with usage_errors("FOLDER"):  # a file that is not a probity result: ValueError / LookupError, one line
        path = report.rerender(folder)
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
        message = " ".join(err.format_message().split())
        if isinstance(err, typer.BadParameter) and err.param is None and err.param_hint is None:
            message = _as_typed(err.message, _leaf(command, argv if argv is not None else sys.argv[1:]))
        print(f"error: {message}", file=sys.stderr)
        return err.exit_code
    return 0


def _leaf(command, argv: list[str]):
    """The (sub)command that ``argv`` runs."""
    for token in argv:
        sub = getattr(command, "commands", {}).get(token)
        if sub is not None:
            command = sub
    return command


def _as_typed(message: str, command) -> str:
    """``message``, whose first word may be a parameter's Python name (config checks word their
    errors ``batch_size must be ...``), with that word spelled as the option is typed (``--batch-size``)."""
    message = " ".join(message.split())
    first = message.split(" ", 1)[0]
    for param in command.params:
        flags = [o for o in param.opts if o.startswith("--")]
        if param.name == first and flags:
            return flags[0] + message[len(first) :]
    return message
