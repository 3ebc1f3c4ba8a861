"""``probity scrub run|list|refine``: causal scrubbing on the paren and induction organisms.

Every option is checked before the organism's weights load: the organism (a name or a folder it was
trained into) and the built-in hypotheses from its config, a hypothesis file against the organism's
structure (a freshly initialised model of its config) and its task's features (the data generator).
"""

from __future__ import annotations

import math
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

app = typer.Typer(
    help="Causal scrubbing: test interpretability hypotheses by resampling activations.", no_args_is_help=True
)
console = Console()

ORGANISM_HELP = "paren, induction, or a folder one was trained into (probity organisms train NAME --out DIR)"


def _organism(organism: str):
    """The organism's :class:`probity.scrub.study.Organism` (its config, no weights), or one usage error."""
    from probity.report.console import usage_errors
    from probity.scrub import study

    with usage_errors("--organism"):
        return study.organism_config(organism)


@app.command("list")
def list_(organism: str = typer.Option("paren", help=ORGANISM_HELP + ".")) -> None:
    """List the built-in hypotheses of an organism (with identity and empty); reads its config only."""
    from probity.scrub import study

    org = _organism(organism)
    table = Table("name", "paper", "description")
    for name, h in study.builtins(org).items():
        table.add_row(escape(name), "" if h.paper is None else f"{h.paper:.2f}", escape(h.description))
    console.print(table)


@app.command()
def run(
    organism: str = typer.Option("paren", help=ORGANISM_HELP + "."),
    hypothesis: str = typer.Option(
        "1a",
        help="A built-in name (probity scrub list) or a YAML/JSON file: a mapping with `root` (a node: name, "
        "sites, feature, via, positions, rest, phi, children) and optional name, description, paper (README).",
    ),
    samples: int | None = typer.Option(
        None,
        help="Reference examples drawn for the dataset, at least 50; 0 (the old default) or left out: the "
        "organism's \\[default: 2000 paren, 300 induction; induction drops rows with no repeat to predict]",
        show_default=False,
    ),
    seed: int = typer.Option(
        0, help="Scrub seed (>= 0): draws the dataset and every sampled input tree; the same seed, the same numbers."
    ),
    json_path: Path = typer.Option(
        None, "--json", help="Write the headline numbers here, with provenance (inputs and probity's version)."
    ),
    out: Path = typer.Option(Path("runs/scrub"), help="Folder for result.json and index.html."),
    batch_size: int = typer.Option(512, help="Reference examples per forward chunk (bounds memory)."),
    replicates: int = typer.Option(
        0,
        help="Whole-experiment bootstrap replicates (dataset and trees redrawn) for stderr_experiment: 0 (off) or "
        "at least 2.",
    ),
    max_memory: float = typer.Option(
        None,
        help="Memory budget in GB: forward chunks are cut to the rows that fit beside the weights and the clean "
        "cache (an estimate); refused in one line before any forward pass if the cache alone does not fit.",
        show_default=False,
    ),
) -> None:
    """Scrub one hypothesis and report loss recovered, per-node and per-subset tables, cancellation check."""
    from probity import report
    from probity.report.console import fail, note, progress, provenance
    from probity.scrub import scrub, study
    from probity.scrub.run import progress_units

    # Every input is checked here, before the organism's weights load.
    _check_samples_and_seed(samples, seed)
    if replicates < 0 or replicates == 1:
        fail(f"must be 0 (off) or at least 2 (a spread needs two), got {replicates}", "--replicates")
    if batch_size < 1:
        fail(f"must be at least 1 (reference examples per forward chunk), got {batch_size}", "--batch-size")
    if max_memory is not None and not max_memory > 0:
        fail(f"must be a positive number of GB, got {max_memory}", "--max-memory")
    org, hyp = _checked_inputs(organism, hypothesis, seed, json_path, out)

    model, task, _ = study.setup(org, samples, seed)
    units = progress_units(hyp, len(task.tokens), batch_size, replicates=replicates)
    with progress(units, f"scrubbing {hyp.name} ({len(task.tokens)} rows)") as bar:
        try:
            result = scrub(
                model,
                task,
                hyp,
                seed=seed,
                batch_size=batch_size,
                replicates=replicates,
                progress=bar,
                max_memory=max_memory,
            )
        except MemoryError as err:
            fail(str(err), "--max-memory")
    console.print(
        f"[bold]{escape(str(organism))} / {escape(hyp.name)}[/bold]: L_model {result.loss_model:.4f}  "
        f"L_all {result.loss_scrubbed_all:.4f}  L_hyp {result.loss_hypothesis:.4f}  "
        f"recovered {result.loss_recovered:.3f} ± {result.stderr:.3f}"
        + ("" if result.stderr_experiment is None else f" (whole experiment ± {result.stderr_experiment:.3f})")
    )
    c = result.cancellation
    console.print(
        f"cancellation check: {c.share_worse:.1%} worse, {c.share_better:.1%} better, KL {c.kl_to_model:.4f}, "
        f"constant predictor {c.constant_loss:.4f}"
        + (" [red]WORSE THAN CONSTANT[/red]" if c.worse_than_constant else "")
        + (" [red]CANCELLATION SUSPECTED[/red]" if c.cancellation_suspected else "")
    )
    if not (math.isfinite(result.loss_recovered) and math.isfinite(result.stderr)):
        note(
            "loss recovered or its stderr is undefined on these rows (the fully scrubbed loss equals the "
            "model's); draw more --samples"
        )
    if json_path is not None:
        headline = {
            "provenance": provenance(
                "scrub run",
                organism=str(organism),
                hypothesis=hypothesis,
                hypothesis_tree=hyp.to_dict(),
                samples=samples or study.DEFAULT_SAMPLES[org.kind],
                rows=result.n,
                seed=seed,
                batch_size=batch_size,
                replicates=replicates,
                max_memory=max_memory,
            )
        }
        headline |= {
            k: getattr(result, k)
            for k in (
                "loss_model",
                "loss_scrubbed_all",
                "loss_hypothesis",
                "loss_recovered",
                "stderr",
                "stderr_experiment",
            )
        }
        headline["per_node"] = {n.node: n for n in result.per_node}
        headline["cancellation"] = c
        report.write_json(json_path, headline)
    title = f"scrub {Path(organism).name if Path(organism).is_dir() else organism} {hyp.name}"
    console.print(f"[green]report:[/green] {report.save(result, out, title=title)}")


def _check_samples_and_seed(samples: int | None, seed: int) -> None:
    """One usage error unless ``--samples`` is left out, 0 or at least ``study.MIN_SAMPLES``, and ``--seed`` >= 0."""
    from probity.report.console import fail
    from probity.scrub import study

    if samples is not None and samples != 0 and samples < study.MIN_SAMPLES:
        fail(
            f"must be at least {study.MIN_SAMPLES}, got {samples} (with fewer rows the loss recovered's bootstrap "
            "stderr can be 0/0, nan); leave it out (or 0) for the organism's default",
            "--samples",
        )
    if seed < 0:
        fail(f"must be >= 0, got {seed}", "--seed")


def _checked_inputs(organism: str, hypothesis: str, seed: int, json_path: Path | None, out: Path):
    """``(organism, hypothesis)`` resolved and checked (with the output paths) before any weights load."""
    from probity.report.console import usage_errors, writable
    from probity.scrub import study

    writable(json_path, "--json")
    writable(out, "--out", folder=True)
    org = _organism(organism)
    with usage_errors("--hypothesis"):
        hyp = study.choose_hypothesis(hypothesis, study.builtins(org))
        study.check_hypothesis(hyp, org, seed)
    return org, hyp


@app.command()
def refine(
    organism: str = typer.Option("paren", help=ORGANISM_HELP + "."),
    hypothesis: str = typer.Option("1b", help="The starting hypothesis: a built-in name or a YAML/JSON file."),
    target: float = typer.Option(0.9, help="Stop once the loss recovered reaches this (in (0, 1])."),
    max_steps: int = typer.Option(8, help="Edits accepted at most (>= 1)."),
    samples: int | None = typer.Option(
        None,
        help="Reference examples drawn for the dataset, at least 50; left out: the organism's "
        "\\[default: 2000 paren, 300 induction]",
        show_default=False,
    ),
    seed: int = typer.Option(0, help="Scrub seed (>= 0): the dataset and every sampled tree; same seed, same steps."),
    json_path: Path = typer.Option(
        None, "--json", help="Write the trajectory here, with provenance (inputs and probity's version)."
    ),
    out: Path = typer.Option(Path("runs/scrub-refine"), help="Folder for result.json, index.html and final.yaml."),
) -> None:
    """Refine a hypothesis greedily (path scrubbing and per-node attribution propose edits; the batched
    engine scores them), printing the loss recovered after each accepted edit."""
    from probity import report
    from probity.report.console import progress, provenance, usage_errors
    from probity.scrub import study
    from probity.scrub.refine import RefineConfig
    from probity.scrub.refine import refine as run_refine

    _check_samples_and_seed(samples, seed)
    with usage_errors("--target"):
        RefineConfig(target=target)
    with usage_errors("--max-steps"):
        RefineConfig(max_steps=max_steps)
    org, hyp = _checked_inputs(organism, hypothesis, seed, json_path, out)

    model, task, _ = study.setup(org, samples, seed)

    def show(step) -> None:
        console.print(
            f"step {step.step}: {escape(step.edit)} -> recovered {step.loss_recovered:.3f} ± {step.stderr:.3f}, "
            f"L_hyp {step.loss_hypothesis:.4f} vs constant {step.constant_loss:.4f}"
            + (" [red]WORSE THAN CONSTANT[/red]" if step.worse_than_constant else "")
            + (" [red]CANCELLATION SUSPECTED[/red]" if step.cancellation_suspected else "")
        )

    config = RefineConfig(target=target, max_steps=max_steps, seed=seed)
    with progress(None, f"refining {hyp.name} ({len(task.tokens)} rows)") as bar:
        result = run_refine(model, task, hyp, config, progress=bar, on_step=show)
    console.print(f"stopped: {escape(result.stopped)}")
    if json_path is not None:
        inputs = dict(organism=str(organism), hypothesis=hypothesis, samples=samples or study.DEFAULT_SAMPLES[org.kind])
        inputs |= dict(rows=result.n, seed=seed, target=target, max_steps=max_steps)
        report.write_json(json_path, {"provenance": provenance("scrub refine", **inputs), "refine": result})
    out.mkdir(parents=True, exist_ok=True)
    result.hypothesis.save(out / "final.yaml")
    console.print(f"[green]final hypothesis:[/green] {out / 'final.yaml'}")
    console.print(f"[green]report:[/green] {report.save(result, out, title=f'scrub refine {hyp.name}')}")
