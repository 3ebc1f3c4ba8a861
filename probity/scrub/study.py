"""Case studies: every built-in hypothesis of an organism scrubbed with one seed, beside the paper."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

from probity.report import Claim, result_type, verdict
from probity.scrub.hypothesis import Hypothesis, validate
from probity.scrub.hypothesis import load as load_hypothesis
from probity.scrub.library import builtin
from probity.scrub.run import Scrubber, ScrubResult, constant_claim, recovered_claim, scrub
from probity.scrub.task import Task, induction_task, paren_task, probe_features

DEFAULT_SAMPLES = {"paren": 2000, "induction": 300}  # reference examples of each organism when none are asked for
# Fewest reference examples scrubbed. The loss recovered is (L_all - L_hyp) / (L_all - L_model), and its
# stderr a bootstrap over 1000 resamples of the rows: a resample of only rows whose fully scrubbed loss
# equals the model's gives 0/0 and makes the stderr nan. On the paren organism about half the rows have
# both losses exactly 0 in float32, so that happened for 4 of 40 seeds with 10 rows, 1 of 40 with 20 and
# none with 30 or 50 (induction: none with 10); fewer than 2 rows never give a finite value.
MIN_SAMPLES = 50


@dataclass
class Organism:
    """A scrubbable organism, read from its config without its weights: ``spec`` as given (a name or a
    folder), its ``kind`` (``paren`` or ``induction``), ``folder`` and ``config`` (``{"tl_config", "meta"}``)."""

    spec: str | Path
    kind: str
    folder: Path
    config: dict


def organism_config(organism: str | Path | Organism) -> Organism:
    """The :class:`Organism` of a scrubbable organism -- ``paren``, ``induction`` or a folder one was
    trained into (its kind read from its config) -- without loading its weights; a one-line
    ``ValueError`` for anything else (an :class:`Organism` passes through)."""
    from probity import organisms
    from probity.organisms import _native

    if isinstance(organism, Organism):
        return organism
    kind, folder = organisms.resolve(organism)
    if kind not in organisms.NATIVE:
        raise ValueError(
            f"scrub's organisms are {' and '.join(organisms.NATIVE)} (TransformerLens native models); "
            f"{str(organism)!r} is the {kind} organism: scrub an HF model from Python with "
            "scrub(model, Task(...), hypothesis)"
        )
    return Organism(organism, kind, folder, _native.read_config(folder))


def builtins(organism: str | Path | Organism, roles: dict | None = None) -> dict[str, Hypothesis]:
    """The built-in hypotheses of ``organism`` (a name, a trained folder or its :class:`Organism`) from its
    config alone (head roles), with ``roles`` overriding the recorded ones; no weights load."""
    org = organism_config(organism)
    meta = org.config["meta"]
    meta = {**meta, "roles": {**meta.get("roles", {}), **(roles or {})}}
    return builtin(org.kind, meta, org.config["tl_config"]["n_heads"])


def choose_hypothesis(spec: str, hyps: dict[str, Hypothesis]) -> Hypothesis:
    """``hyps[spec]`` for a built-in name, else the hypothesis in the YAML/JSON file ``spec``; a one-line
    ``ValueError`` (``HypothesisError``) or ``FileNotFoundError`` otherwise."""
    if spec in hyps:
        return hyps[spec]
    path = Path(spec)
    if path.is_file() or path.suffix in (".yaml", ".yml", ".json"):
        return load_hypothesis(path)
    raise ValueError(
        f"unknown hypothesis {spec!r}; built-ins: {', '.join(hyps)} (probity scrub list), or a .yaml/.json file"
    )


def check_hypothesis(hyp: Hypothesis, organism: str | Path | Organism, seed: int = 0) -> None:
    """Validate ``hyp`` against ``organism``'s structure (a freshly initialised model of its config) and its
    task's features (a few rows from its data generator) -- everything ``validate`` checks, before any
    weights load. Raises a one-line ``HypothesisError``; leaves torch's random state as it was."""
    import torch

    from probity.organisms import _native
    from probity.scrub.model import Decomposed

    org = organism_config(organism)
    tl_config = org.config["tl_config"]
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small feature classes on the probe rows say nothing of the real task
        structure = Decomposed(_native.native_model(tl_config))
        validate(hyp, structure, probe_features(org.kind, seed), tl_config["n_ctx"])


def setup(organism: str | Path | Organism, samples: int | None = None, seed: int = 0, roles: dict | None = None):
    """``(model, task, built-in hypotheses)`` for the shipped ``paren`` or ``induction`` organism, or a
    folder one was trained into (``probity organisms train NAME --out DIR``), or its :class:`Organism`;
    ``samples`` reference examples (None or 0: the organism's :data:`DEFAULT_SAMPLES`); ``roles``
    overrides head roles recorded in its config (e.g. ``{"top": ["output"]}``)."""
    from probity import organisms
    from probity.organisms import _native

    org = organism_config(organism)
    model, _ = _native.load_folder(org.folder, organisms.NATIVE[org.kind].tokenizer(), org.config)
    n = samples or DEFAULT_SAMPLES[org.kind]
    task: Task = paren_task(n, seed, model) if org.kind == "paren" else induction_task(n, seed)
    meta = {**model.probity_meta, "roles": {**model.probity_meta.get("roles", {}), **(roles or {})}}
    return model, task, builtin(org.kind, meta, model.cfg.n_heads)


@dataclass
class StudyRow:
    hypothesis: str
    loss_recovered: float
    stderr: float
    stderr_experiment: float | None
    paper: float | None
    loss_hypothesis: float
    share_worse: float
    kl_to_model: float
    worse_than_constant: bool
    cancellation_suspected: bool
    description: str


FAITHFUL_TARGET = 0.90  # issue 15: a faithful paren hypothesis recovers at least this much


@result_type("scrub.CaseStudy")
@dataclass
class CaseStudy:
    """Loss recovered by each hypothesis on one organism, ours beside the paper's."""

    organism: str
    n: int
    seed: int
    loss_model: float
    loss_scrubbed_all: float
    constant_loss: float
    rows: list[StudyRow]
    in_paper_order: bool
    order_violations: list[str]
    details: list[ScrubResult]
    roles_override: dict | None = None  # head roles given to ``case_study`` over the organism's recorded ones
    report_titles = {"rows": "Loss recovered by hypothesis", "details": "Every scrub in full"}

    def headline(self) -> list[Claim]:
        """Against the paper: the order of the hypotheses, the largest gap in loss recovered, and
        how many pass Scheurer et al.'s checks (beat a constant predictor, no cancellation)."""
        ranked = [r for r in self.rows if r.paper is not None]
        if not ranked:
            return []
        roles = ", ".join(
            "+".join(map(str, v)) if isinstance(v, list) else str(v) for v in (self.roles_override or {}).values()
        )
        label = self.organism + (f" [{roles}]" if roles else "")
        worst = max(ranked, key=lambda r: abs(r.loss_recovered - r.paper))
        se = worst.stderr if worst.stderr_experiment is None else worst.stderr_experiment
        levels = sorted({r.paper for r in ranked}, reverse=True)
        paper_order = " > ".join("=".join(r.hypothesis for r in ranked if r.paper == p) for p in levels)
        passing = sum(not (r.worse_than_constant or r.cancellation_suspected) for r in ranked)
        return [
            Claim(
                f"{label}: in the paper's order",
                "in order" if self.in_paper_order else "reversed: " + ", ".join(self.order_violations),
                reference=paper_order,
                source="Chan et al. 2022",
                target="paper order",
                verdict=verdict(self.in_paper_order),
            ),
            recovered_claim(
                f"{label}: loss recovered, largest gap ({worst.hypothesis})",
                worst.loss_recovered,
                se,
                worst.paper,
            ),
            Claim(
                f"{label}: beats constant, no cancellation",
                f"{passing} of {len(ranked)}",
                target=f"{len(ranked)} of {len(ranked)}",
                verdict=verdict(passing == len(ranked)),
            ),
            *self._faithful_claims(label),
        ]

    def _faithful_claims(self, label: str) -> list[Claim]:
        """The organism's own faithful hypothesis (``scrub refine`` from 1b), when the study ran it with the
        recorded head roles: its loss recovered against :data:`FAITHFUL_TARGET`, and the constant check."""
        row = next((r for r in self.rows if r.hypothesis == "faithful"), None)
        if row is None or self.roles_override:
            return []
        se = row.stderr if row.stderr_experiment is None else row.stderr_experiment
        return [
            Claim(
                f"{label}: faithful (refine from 1b), loss recovered",
                row.loss_recovered,
                (row.loss_recovered - 1.96 * se, row.loss_recovered + 1.96 * se),
                target=f">= {FAITHFUL_TARGET:.2f}",
                verdict=verdict(row.loss_recovered >= FAITHFUL_TARGET),
            ),
            constant_claim(
                f"{label}: faithful vs a constant predictor",
                row.loss_hypothesis,
                self.constant_loss,
                row.worse_than_constant,
            ),
        ]

    def figures(self) -> dict:
        import matplotlib.pyplot as plt
        import numpy as np

        rows = [r for r in self.rows if r.hypothesis not in ("identity", "empty")]
        x = np.arange(len(rows))
        fig, ax = plt.subplots(figsize=(1.0 + 0.9 * len(rows), 3.2))
        ax.bar(x - 0.2, [r.loss_recovered for r in rows], 0.4, yerr=[r.stderr for r in rows], label="probity (ours)")
        ax.bar(
            x + 0.2, [r.paper if r.paper is not None else 0 for r in rows], 0.4, label="paper (Redwood, their model)"
        )
        ax.set_xticks(x, [r.hypothesis for r in rows], rotation=30)
        ax.set_ylabel("loss recovered")
        ax.set_ylim(min(0, *[r.loss_recovered for r in rows]) - 0.05, 1.1)
        ax.axhline(1, color="k", lw=0.6)
        ax.legend(fontsize=8)
        name = self.organism + (f" {json.dumps(self.roles_override)}" if self.roles_override else "")
        ax.set_title(f"causal scrubbing: {name}", fontsize=9)
        fig.tight_layout()
        return {f"{name}: loss recovered, ours vs paper": fig}


def order_violations(rows: list, slack: float = 0.0) -> list[str]:
    """The pairs the paper separates by > 0.02 that we rank the other way, as "a < b" strings
    (rows: anything with ``hypothesis``, ``paper`` and ``loss_recovered``)."""
    ranked = [r for r in rows if r.paper is not None]
    return [
        f"{a.hypothesis} < {b.hypothesis}"
        for a in ranked
        for b in ranked
        if a.paper > b.paper + 0.02 and a.loss_recovered + slack < b.loss_recovered
    ]


def case_study(
    organism: str,
    names: list[str] | None = None,
    samples: int | None = None,
    seed: int = 0,
    per_node: bool = False,
    progress=None,
    replicates: int = 0,
    roles: dict | None = None,
) -> CaseStudy:
    """Scrub the built-in hypotheses ``names`` (default: all) of ``organism`` with one seed and one clean
    cache; ``replicates`` > 0 adds the whole-experiment bootstrap stderr (``run.experiment_stderr``);
    ``roles`` overrides the organism's recorded head roles."""
    model, task, hyps = setup(organism, samples, seed, roles)
    chosen: list[Hypothesis] = [hyps[n] for n in (names or list(hyps))]
    scrubber = Scrubber(model, task, seed=seed)
    details = []
    for hyp in chosen:
        details.append(
            scrub(
                model,
                task,
                hyp,
                seed=seed,
                per_node=per_node,
                scrubber=scrubber,
                replicates=replicates if hyp.paper is not None else 0,
            )
        )
        if progress is not None:
            progress(hyp.name)
    rows = [
        StudyRow(
            d.hypothesis,
            d.loss_recovered,
            d.stderr,
            d.stderr_experiment,
            d.paper,
            d.loss_hypothesis,
            d.cancellation.share_worse,
            d.cancellation.kl_to_model,
            d.cancellation.worse_than_constant,
            d.cancellation.cancellation_suspected,
            d.description,
        )
        for d in details
    ]
    first, violations = details[0], order_violations(rows)
    return CaseStudy(
        organism,
        first.n,
        seed,
        first.loss_model,
        first.loss_scrubbed_all,
        task.constant_loss(),
        rows,
        not violations,
        violations,
        details,
        roles,
    )
