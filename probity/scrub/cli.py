"""``probity scrub run|list|refine``: causal scrubbing on the paren and induction organisms, or on a language
model (``--model``) on the induction or IOI study.

Every option is checked before any weights load. An organism (a name or a folder it was trained into):
the built-in hypotheses from its config, a hypothesis file against the organism's structure (a freshly
initialised model of its config) and its task's features (the data generator). A language model
(``probity.models.load``; ``scrub.lm``): the task, the device, the model's config (a decoder scrub
decomposes), the hypothesis (one of the study's names, or a file that parses) and the task's rows (from
the tokenizer); once the weights load, the heads are found and the hypothesis is built on them (or the
file checked against the model) before any scrub.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
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
ORGANISM = typer.Option(None, help=ORGANISM_HELP + ". \\[default: paren]", show_default=False)
MODEL = typer.Option(
    None,
    help="A language model instead of an organism (not with --organism): smollm2-135m, an HF checkpoint folder "
    "or hub name (a Llama-family or GPT-2 decoder), scrubbed on --task with the hypotheses built on the heads "
    "found in it.",
    show_default=False,
)
TASK = typer.Option(
    None,
    help="With --model: induction (random tokens, repeated) or ioi (indirect-object identification). "
    "\\[default: induction]",
    show_default=False,
)
DEVICE = typer.Option(
    None,
    help="With --model: cpu, cuda, cuda:N or auto (an HF checkpoint spread over the GPUs by accelerate, "
    "device_map='auto'). \\[default: cpu]",
    show_default=False,
)
THRESHOLD = typer.Option(
    None,
    help="With --model: the head score (attention to the role's target key) the study's hypotheses are built "
    "on, in [0, 1]. \\[default: 0.5]",
    show_default=False,
)
BATCH_SIZE = typer.Option(
    None,
    help="Reference examples per forward chunk (bounds memory). \\[default: 512; --model: 16 induction, 32 ioi]",
    show_default=False,
)
MAX_MEMORY = typer.Option(
    None,
    help="Memory budget in GB: forward chunks are cut to the rows that fit beside the weights and the clean "
    "cache (an estimate); refused in one line before any forward pass if the cache alone does not fit.",
    show_default=False,
)
SAMPLES_HELP = (
    "Reference examples drawn for the dataset, at least 50 (--model: at least 10); 0 or left out: the "
    "default \\[default: 2000 paren, 300 induction; induction drops rows with no repeat to predict; "
    "--model: 64 induction, 128 ioi]"
)


@dataclass
class _Subject:
    """What a command scrubs, its options checked and no weights loaded: an organism (``organism``, a
    ``study.Organism``) or a language model (``model``, on ``task``, loaded onto ``device``)."""

    organism: object | None = None
    model: str | None = None
    task: str = "induction"
    device: str = "cpu"
    threshold: float | None = None  # a model's head-score threshold

    def default_samples(self) -> int:
        """The dataset's rows when ``--samples`` is left out (or 0)."""
        from probity.scrub import lm, study

        return study.DEFAULT_SAMPLES[self.organism.kind] if self.model is None else lm.TASKS[self.task].samples

    def default_batch_size(self) -> int:
        """Reference examples per forward chunk when ``--batch-size`` is left out."""
        from probity.scrub import lm

        return 512 if self.model is None else lm.TASKS[self.task].batch_size

    def inputs(self) -> dict:
        """What the provenance of a ``--json`` file records of the subject."""
        if self.model is None:
            return dict(organism=str(self.organism.spec))
        return dict(model=self.model, task=self.task, device=self.device, threshold=self.threshold)

    def title(self) -> str:
        """The subject in a report's title."""
        if self.model is None:
            spec = self.organism.spec
            return Path(spec).name if Path(spec).is_dir() else str(spec)
        return f"{Path(self.model).name} {self.task}"


@dataclass
class _Prepared:
    """A subject loaded: ``model`` (what ``scrub`` takes), ``task`` (the dataset), ``hypothesis`` (the one
    asked for, checked against the model), ``builtins`` and, with ``--model``, ``roles`` (role ->
    ``HeadScores``, every head scored) when the heads were found, ``missing`` (why the study's hypotheses
    could not be built) and ``heads`` (the heads the study's hypotheses are built on, with scores)."""

    model: object
    task: object
    hypothesis: object | None
    builtins: dict
    roles: dict | None = None
    missing: str | None = None
    heads: dict = field(default_factory=dict)


def _organism(organism: str):
    """The organism's :class:`probity.scrub.study.Organism` (its config, no weights), or one usage error."""
    from probity.report.console import usage_errors
    from probity.scrub import study

    with usage_errors("--organism"):
        return study.organism_config(organism)


def _subject(
    organism: str | None,
    model: str | None,
    task: str | None,
    device: str | None,
    threshold: float | None,
    model_only: dict | None = None,
) -> _Subject:
    """The subject of a command from its options, or one usage error: ``--organism`` or ``--model`` (not
    both; neither: paren), the model-only options (and ``model_only``, option -> value) left out without
    ``--model``, the task, the device (present here) and the threshold."""
    from probity.report.console import fail, usage_errors
    from probity.scrub import lm

    if organism is not None and model is not None:
        fail("give --organism or --model, not both", "--model")
    if model is None:
        given = {"--task": task, "--device": device, "--threshold": threshold, **(model_only or {})}
        for option, value in given.items():
            if value is not None:
                fail("applies to --model only (an organism brings its own task and runs on the CPU)", option)
        return _Subject(organism=_organism(organism or "paren"))
    subject = _Subject(
        model=model,
        task=task or "induction",
        device=device or "cpu",
        threshold=lm.THRESHOLD if threshold is None else threshold,
    )
    if subject.task not in lm.TASKS:
        fail(f"unknown task {subject.task!r}; choose {' or '.join(lm.TASKS)}", "--task")
    with usage_errors("--device"):
        lm.check_device(subject.device)
    if not 0 <= subject.threshold <= 1:
        fail(f"must be in [0, 1] (a head's mean attention to its target), got {subject.threshold}", "--threshold")
    return subject


def _check_numbers(
    subject: _Subject, samples: int | None, seed: int, batch_size: int | None = None, max_memory: float | None = None
) -> None:
    """One usage error unless ``--samples`` is left out, 0 or at least the subject's minimum
    (``study.MIN_SAMPLES`` for an organism, ``lm.MIN_SAMPLES`` for a model), ``--seed`` >= 0,
    ``--batch-size`` at least 1 and ``--max-memory`` positive."""
    from probity.report.console import fail
    from probity.scrub import lm, study

    least = study.MIN_SAMPLES if subject.model is None else lm.MIN_SAMPLES
    if samples is not None and samples != 0 and samples < least:
        fail(
            f"must be at least {least}, got {samples} (with fewer rows the loss recovered's bootstrap stderr can "
            "be 0/0, nan); leave it out (or 0) for the default",
            "--samples",
        )
    if seed < 0:
        fail(f"must be >= 0, got {seed}", "--seed")
    if batch_size is not None and batch_size < 1:
        fail(f"must be at least 1 (reference examples per forward chunk), got {batch_size}", "--batch-size")
    if max_memory is not None and not max_memory > 0:
        fail(f"must be a positive number of GB, got {max_memory}", "--max-memory")


def _prepare(
    subject: _Subject,
    spec: str | None,
    samples: int | None,
    seed: int,
    batch_size: int,
    json_path: Path | None = None,
    out: Path | None = None,
    heads: bool = False,
) -> _Prepared:
    """Load ``subject`` with the hypothesis ``spec`` (a built-in name or a file; None: none), checking
    first everything that needs no weights: the output paths, the hypothesis and, for a model, the task's
    ``samples`` rows from its tokenizer. For a model the heads are then found when ``heads`` is set or
    ``spec`` is one of the study's hypotheses, and the hypothesis is built on them or checked against the
    model (one usage error) before any scrub."""
    from probity.report.console import usage_errors, writable
    from probity.scrub import study

    writable(json_path, "--json")
    writable(out, "--out", folder=True)
    if subject.model is None:
        hyp = None
        if spec is not None:
            with usage_errors("--hypothesis"):
                hyp = study.choose_hypothesis(spec, study.builtins(subject.organism))
                study.check_hypothesis(hyp, subject.organism, seed)
        model, task, hyps = study.setup(subject.organism, samples, seed)
        return _Prepared(model, task, hyp, hyps)
    return _prepare_model(subject, spec, samples or subject.default_samples(), seed, batch_size, heads)


def _prepare_model(subject: _Subject, spec: str | None, n: int, seed: int, batch_size: int, heads: bool):
    """``_prepare`` for a language model: the hypothesis file parsed and the task's ``n`` rows built from the
    tokenizer, then the weights loaded (float32, on ``subject.device``), the heads found and the hypothesis
    built or checked (see ``_prepare``)."""
    import torch

    from probity import models
    from probity.report.console import fail, usage_errors
    from probity.scrub import lm, study
    from probity.scrub.hypothesis import validate
    from probity.scrub.model import Decomposed
    from probity.scrub.run import EMPTY, IDENTITY

    with usage_errors("--model"):
        lm.check_model(subject.model)
    with usage_errors("--hypothesis"):  # None for a built-in name: built once the heads are found
        given = None if spec is None else study.choose_hypothesis(spec, dict.fromkeys(lm.names(subject.task)))
    with usage_errors("--model"):
        tokenizer = models.load_tokenizer(subject.model)
    with usage_errors("--task"):
        task = lm.lm_task(subject.task, tokenizer, n, seed)
    with usage_errors("--model"):
        model = Decomposed(models.load(subject.model, dtype=torch.float32, device=subject.device)[0])
    prepared = _Prepared(model, task, given, {"identity": IDENTITY, "empty": EMPTY})
    if heads or (given is None and spec not in (None, *prepared.builtins)):
        prepared.roles = lm.score_heads(model, subject.task, task, batch_size)
        prepared.heads = lm.heads_table(prepared.roles, subject.threshold)
        try:
            prepared.builtins = lm.builtins(subject.task, prepared.roles, subject.threshold)
        except ValueError as err:
            prepared.missing = str(err)
    if spec is not None and given is None:
        if spec not in prepared.builtins:
            fail(prepared.missing, "--threshold")
        prepared.hypothesis = prepared.builtins[spec]
    if prepared.hypothesis is not None:
        with usage_errors("--hypothesis"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # small feature classes: the scrub itself warns
            validate(prepared.hypothesis, model, task.features, task.n_ctx)
    return prepared


def _show_heads(prepared: _Prepared, threshold: float) -> None:
    """One line per role: the heads the study's hypotheses are built on, with their scores."""
    for role, found in prepared.heads.items():
        listed = ", ".join(f"{h} ({s:.2f})" for h, s in found) or "none"
        console.print(f"{role.replace('_', '-')} heads (score >= {threshold:g}): {listed}")


@app.command("list")
def list_(
    organism: str = ORGANISM,
    model: str = MODEL,
    task: str = TASK,
    samples: int | None = typer.Option(
        None, help="With --model: the task's rows the heads are scored on. " + SAMPLES_HELP, show_default=False
    ),
    seed: int = typer.Option(0, help="With --model: draws the task's rows (>= 0)."),
    threshold: float = THRESHOLD,
    device: str = DEVICE,
    batch_size: int = BATCH_SIZE,
) -> None:
    """List the built-in hypotheses (with identity and empty): an organism's from its config; a model's
    built on the heads found in it (the weights load)."""
    from probity.report.console import note
    from probity.scrub import study

    subject = _subject(organism, model, task, device, threshold, {"--samples": samples, "--batch-size": batch_size})
    _check_numbers(subject, samples, seed, batch_size)
    if subject.model is None:
        hyps = study.builtins(subject.organism)
    else:
        prepared = _prepare(subject, None, samples, seed, batch_size or subject.default_batch_size(), heads=True)
        _show_heads(prepared, subject.threshold)
        if prepared.missing:
            note(prepared.missing)
        hyps = prepared.builtins
    table = Table("name", "paper", "description")
    for name, h in hyps.items():
        table.add_row(escape(name), "" if h.paper is None else f"{h.paper:.2f}", escape(h.description))
    console.print(table)


@app.command()
def run(
    organism: str = ORGANISM,
    model: str = MODEL,
    task: str = TASK,
    hypothesis: str = typer.Option(
        None,
        help="A built-in name (probity scrub list) or a YAML/JSON file: a mapping with `root` (a node: name, "
        "sites, feature, via, positions, rest, phi, children) and optional name, description, paper (README). "
        "\\[default: 1a; --model: all-three induction, 'keep-only name movers' ioi]",
        show_default=False,
    ),
    samples: int | None = typer.Option(None, help=SAMPLES_HELP, show_default=False),
    seed: int = typer.Option(
        0, help="Scrub seed (>= 0): draws the dataset and every sampled input tree; the same seed, the same numbers."
    ),
    json_path: Path = typer.Option(
        None, "--json", help="Write the headline numbers here, with provenance (inputs and probity's version)."
    ),
    out: Path = typer.Option(Path("runs/scrub"), help="Folder for result.json and index.html."),
    batch_size: int = BATCH_SIZE,
    replicates: int = typer.Option(
        0,
        help="Whole-experiment bootstrap replicates (dataset and trees redrawn) for stderr_experiment: 0 (off) or "
        "at least 2.",
    ),
    max_memory: float = MAX_MEMORY,
    threshold: float = THRESHOLD,
    device: str = DEVICE,
) -> None:
    """Scrub one hypothesis and report loss recovered, per-node and per-subset tables, cancellation check."""
    from probity import report
    from probity.report.console import fail, note, progress, provenance
    from probity.scrub import lm, scrub
    from probity.scrub.run import progress_units

    # Every input is checked here, before any weights load.
    subject = _subject(organism, model, task, device, threshold)
    _check_numbers(subject, samples, seed, batch_size, max_memory)
    if replicates < 0 or replicates == 1:
        fail(f"must be 0 (off) or at least 2 (a spread needs two), got {replicates}", "--replicates")
    spec = hypothesis or ("1a" if subject.model is None else lm.TASKS[subject.task].start)
    batch_size = batch_size or subject.default_batch_size()
    prepared = _prepare(subject, spec, samples, seed, batch_size, json_path, out)
    hyp, task_rows = prepared.hypothesis, prepared.task
    _show_heads(prepared, subject.threshold)

    units = progress_units(hyp, len(task_rows.tokens), batch_size, replicates=replicates)
    with progress(units, f"scrubbing {hyp.name} ({len(task_rows.tokens)} rows)") as bar:
        try:
            result = scrub(
                prepared.model,
                task_rows,
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
        f"[bold]{escape(subject.title())} / {escape(hyp.name)}[/bold]: L_model {result.loss_model:.4f}  "
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
                **subject.inputs(),
                hypothesis=spec,
                hypothesis_tree=hyp.to_dict(),
                samples=samples or subject.default_samples(),
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
        if prepared.heads:
            headline["heads"] = prepared.heads
        report.write_json(json_path, headline)
    title = f"scrub {subject.title()} {hyp.name}"
    console.print(f"[green]report:[/green] {report.save(result, out, title=title)}")


@app.command()
def refine(
    organism: str = ORGANISM,
    model: str = MODEL,
    task: str = TASK,
    hypothesis: str = typer.Option(
        None,
        help="The starting hypothesis: a built-in name or a YAML/JSON file. \\[default: 1b; --model: all-three "
        "induction, 'keep-only name movers' ioi]",
        show_default=False,
    ),
    target: float = typer.Option(0.9, help="Stop once the loss recovered reaches this (in (0, 1])."),
    max_steps: int = typer.Option(
        None, help="Edits accepted at most (>= 1). \\[default: 8; --model: 3 induction, 4 ioi]", show_default=False
    ),
    samples: int | None = typer.Option(None, help=SAMPLES_HELP, show_default=False),
    seed: int = typer.Option(0, help="Scrub seed (>= 0): the dataset and every sampled tree; same seed, same steps."),
    json_path: Path = typer.Option(
        None, "--json", help="Write the trajectory here, with provenance (inputs and probity's version)."
    ),
    out: Path = typer.Option(Path("runs/scrub-refine"), help="Folder for result.json, index.html and final.yaml."),
    batch_size: int = BATCH_SIZE,
    max_memory: float = MAX_MEMORY,
    threshold: float = THRESHOLD,
    device: str = DEVICE,
) -> None:
    """Refine a hypothesis greedily (path scrubbing and per-node attribution propose edits; the batched
    engine scores them), printing the loss recovered after each accepted edit. With --model, new paths
    come only from the heads found (induction >= 0.3, previous-token at --threshold; ioi: >= 0.3 in any
    role) and the MLPs below them, and edits assign the study's features, as bench/scrub.py refines."""
    from probity import report
    from probity.report.console import fail, progress, provenance, usage_errors
    from probity.scrub import lm
    from probity.scrub.refine import RefineConfig
    from probity.scrub.refine import refine as run_refine

    subject = _subject(organism, model, task, device, threshold)
    _check_numbers(subject, samples, seed, batch_size, max_memory)
    with usage_errors("--target"):
        RefineConfig(target=target)
    if max_steps is not None:
        with usage_errors("--max-steps"):
            RefineConfig(max_steps=max_steps)
    spec = hypothesis or ("1b" if subject.model is None else lm.TASKS[subject.task].start)
    batch_size = batch_size or subject.default_batch_size()
    prepared = _prepare(subject, spec, samples, seed, batch_size, json_path, out, heads=subject.model is not None)
    hyp, task_rows = prepared.hypothesis, prepared.task
    _show_heads(prepared, subject.threshold)
    settings = dict(target=target, seed=seed, batch_size=batch_size, max_memory=max_memory)
    settings |= {} if max_steps is None else {"max_steps": max_steps}
    if subject.model is None:
        config = RefineConfig(**settings)
    else:
        config = lm.refine_config(subject.task, prepared.roles, subject.threshold, prepared.model, **settings)

    def show(step) -> None:
        console.print(
            f"step {step.step}: {escape(step.edit)} -> recovered {step.loss_recovered:.3f} ± {step.stderr:.3f}, "
            f"L_hyp {step.loss_hypothesis:.4f} vs constant {step.constant_loss:.4f}"
            + (" [red]WORSE THAN CONSTANT[/red]" if step.worse_than_constant else "")
            + (" [red]CANCELLATION SUSPECTED[/red]" if step.cancellation_suspected else "")
        )

    with progress(None, f"refining {hyp.name} ({len(task_rows.tokens)} rows)") as bar:
        try:
            result = run_refine(prepared.model, task_rows, hyp, config, progress=bar, on_step=show)
        except MemoryError as err:
            fail(str(err), "--max-memory")
    console.print(f"stopped: {escape(result.stopped)}")
    if json_path is not None:
        inputs = dict(**subject.inputs(), hypothesis=spec, samples=samples or subject.default_samples())
        inputs |= dict(rows=result.n, seed=seed, target=target, max_steps=config.max_steps)
        inputs |= dict(batch_size=batch_size, max_memory=max_memory)
        inputs |= {"senders": config.senders} if config.senders is not None else {}
        report.write_json(json_path, {"provenance": provenance("scrub refine", **inputs), "refine": result})
    out.mkdir(parents=True, exist_ok=True)
    result.hypothesis.save(out / "final.yaml")
    console.print(f"[green]final hypothesis:[/green] {out / 'final.yaml'}")
    title = f"scrub refine {subject.title()} {hyp.name}"
    console.print(f"[green]report:[/green] {report.save(result, out, title=title)}")
