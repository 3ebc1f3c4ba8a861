"""Running a scrub: losses, loss recovered with bootstrap standard errors, per-subset and
per-node tables, and the cancellation check of Scheurer et al. ("Practical Pitfalls of
Causal Scrubbing").

Two standard errors. ``stderr`` resamples the reference examples with their sampled
input trees held fixed: cheap, but it treats the per-example losses as independent,
while the dataset is also the pool every scrubbed input is drawn from -- a pool row
drawn into many references' trees moves all their losses together, and a new seed
draws a new dataset *and* new trees. ``stderr_experiment`` (``replicates`` > 0)
bootstraps that whole experiment: each replicate draws the dataset rows with
replacement (as references and as the pool), redraws every tree with its own seed
and rescrubs; it is the one to compare with a spread over seeds.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import torch

from probity.report import Claim, result_type, verdict
from probity.scrub import engine
from probity.scrub.hypothesis import Hypothesis, Node, Resolved, validate
from probity.scrub.model import Decomposed
from probity.scrub.sampling import feature_classes, row_keys, sample_tree
from probity.scrub.task import Task

EMPTY = Hypothesis(
    "empty", Node("output", ["output"], feature="none"), "every path resampled: the fully scrubbed baseline"
)
IDENTITY = Hypothesis("identity", Node("output", ["output"]), "the model unchanged: every path on the reference input")


class Scrubber:
    """Scrubs hypotheses on one model and task with one clean cache and one seed.

    ``batch_size`` bounds memory (reference examples per chunk); ``max_memory`` (GB) bounds it too: each
    chunk is cut to the rows whose estimated peak (``engine.row_bytes``) fits beside the model's weights and
    the clean cache (``engine.cache_bytes``), and a hypothesis whose cache alone does not fit is refused
    with a one-line ``MemoryError`` before any forward pass. The logits do not depend on the chunking.
    ``cache=False`` reruns the model for every gather instead of reading one clean forward pass (for checking)."""

    def __init__(
        self,
        model,
        task: Task,
        seed: int = 0,
        batch_size: int = 512,
        cache: bool = True,
        max_memory: float | None = None,
    ):
        self.model = model if isinstance(model, Decomposed) else Decomposed(model)
        self.task, self.seed, self.batch_size, self.use_cache = task, seed, batch_size, cache
        self.max_memory = max_memory
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1 (reference examples per chunk), got {batch_size}")
        if max_memory is not None and not max_memory > 0:
            raise ValueError(f"max_memory must be a positive number of GB, got {max_memory}")
        if task.tokens.max() >= self.model.d_vocab:
            raise ValueError(
                f"task tokens go up to {int(task.tokens.max())} but the model's vocabulary has {self.model.d_vocab}"
            )
        if task.n_ctx > self.model.n_ctx:
            raise ValueError(f"task rows have {task.n_ctx} positions, more than the model's n_ctx={self.model.n_ctx}")
        self.keys = row_keys(task.tokens)
        self.classes = feature_classes(task.features, self.keys)
        self.refs = torch.arange(len(task.tokens))
        self._cache: engine.CleanCache | None = None

    def resolve(self, hyp: Hypothesis) -> Resolved:
        """Validate ``hyp`` against this model and task (no forward pass)."""
        return validate(hyp, self.model, self.task.features, self.task.n_ctx)

    def sample(self, hyp: Hypothesis) -> tuple[Resolved, dict]:
        """The validated hypothesis and its whole sampled input tree."""
        root = self.resolve(hyp)
        return root, sample_tree(root, self.classes, self.refs, self.keys, self.seed, self.task.n_ctx)

    def _clean(self, targets, chunk: int) -> engine.CleanCache:
        have = set() if self._cache is None else self._cache.targets
        if self._cache is None or not targets <= have:
            self._cache = engine.CleanCache(
                self.model,
                self.task.tokens,
                targets | have,
                chunk=min(chunk, 256),
                enabled=self.use_cache,
                features=self.task.features,
                key_mask=self.task.key_mask,
            )
        return self._cache

    @property
    def chunks(self) -> int:
        """Chunks of ``batch_size`` reference examples in one scrub of the dataset (its progress units)."""
        return -(-len(self.refs) // self.batch_size)

    def logits(self, hyp: Hypothesis, progress=None, note: str = "", positions: torch.Tensor | None = None):
        """Scrubbed logits per chunk: yields ``(rows [batch], logits [batch, pos, vocab])``, or
        ``[batch, m, vocab]`` at ``positions [m]`` only, the logits on the model's device; ``progress`` (a
        ``probity.report.console`` tracker), if given, advances by one per chunk with ``note``."""
        root, rows = self.sample(hyp)
        plan = engine.compile_plan(self.model, root, self.task.n_ctx)
        targets = engine.gather_targets(plan)
        step = self._rows_in_memory(plan, targets, positions)
        cache = self._clean(targets, step)
        for start in range(0, len(self.refs), self.batch_size):
            for lo in range(start, min(start + self.batch_size, len(self.refs)), step):
                chunk = slice(lo, min(lo + step, start + self.batch_size))
                chunk_rows = {k: v[chunk] for k, v in rows.items()}
                yield self.refs[chunk], engine.execute(self.model, plan, chunk_rows, cache, positions)
            if progress is not None:
                progress.advance(1, note)

    def _rows_in_memory(self, plan, targets: set, positions: torch.Tensor | None) -> int:
        """Rows per forward chunk: ``batch_size``, cut to what ``max_memory`` leaves beside the weights and
        the clean cache of ``targets`` (and of what is cached already); a one-line ``MemoryError`` when not
        one row fits."""
        if self.max_memory is None:
            return self.batch_size
        n, n_ctx = len(self.refs), self.task.n_ctx
        have = set() if self._cache is None else self._cache.targets
        m = n_ctx if positions is None else len(positions)
        cached = engine.FLOAT_BYTES * n * m * self.model.d_vocab  # the clean logits a scrub keeps for its KL
        if self.use_cache:  # a rebuild holds the old cache until the new one is complete
            cached += engine.cache_bytes(self.model, targets | have, n, n_ctx)
            cached += 0 if targets <= have else engine.cache_bytes(self.model, have, n, n_ctx)
        fixed = self.model.weight_bytes + cached
        per_row = engine.row_bytes(self.model, plan, n_ctx, m)
        budget = int(self.max_memory * 2**30)
        if budget < fixed + per_row:
            raise MemoryError(
                f"max_memory {self.max_memory:g} GB is too small: the weights and the clean cache of "
                f"{len(targets | have)} "
                f"activations over {n} rows take {fixed / 2**30:.2f} GB and each row {per_row / 2**20:.1f} MB more; "
                "raise it or scrub fewer rows"
            )
        return max(1, min(self.batch_size, (budget - fixed) // per_row))

    def losses(
        self, hyp: Hypothesis, model_logits: list | None = None, keep: bool = False, progress=None, note: str = ""
    ):
        """``(loss [n], kl [n], logits)``: per-example loss of ``hyp``, KL to ``model_logits`` (a list of
        per-chunk clean logits; zeros when None) and, with ``keep``, the list of per-chunk logits; all logits
        at the task's ``loss_positions`` only (``[batch, m, vocab]``, on the model's device), the loss and KL
        on the CPU; ``progress`` and ``note`` as for :meth:`logits`."""
        loss, kl, kept = [], [], []
        at = self.task.loss_positions
        clean = torch.cat(model_logits) if model_logits else None  # [n, m, vocab]: chunks may differ per plan
        for refs, logits in self.logits(hyp, progress, note, at):
            loss.append(self.task.per_example_loss(logits, refs, at))
            kl.append(
                self.task.per_example_kl(clean[refs.to(clean.device)], logits, refs, at)
                if clean is not None
                else torch.zeros(len(refs), device=logits.device)
            )
            if keep:
                kept.append(logits)
        return torch.cat(loss).cpu(), torch.cat(kl).cpu(), kept


@dataclass
class NodeResult:
    """Loss when only this node's subtree is scrubbed (ancestors exact), and the loss recovered then."""

    node: str
    sites: str
    feature: str
    loss: float
    loss_recovered: float


@dataclass
class SubsetRow:
    subset: str
    n: int
    loss_model: float
    loss_scrubbed_all: float
    loss_hypothesis: float
    loss_recovered: float


@dataclass
class Cancellation:
    """Does the recovered loss hide examples made worse, or lose to a constant predictor?"""

    share_worse: float  # examples whose loss rose by more than 1% of (L_all - L_model)
    share_better: float  # examples whose loss fell below the model's by that much
    cancelled: float  # improvement mass / degradation mass: 0 = no cancellation
    # flagged when that ratio is above 0.25 while the degradation is more than 5% of (L_all - L_model)
    mean_abs_change: float
    kl_to_model: float
    constant_loss: float
    worse_than_constant: bool
    cancellation_suspected: bool
    histogram_edges: list[float] = field(default_factory=list)
    histogram_counts: list[int] = field(default_factory=list)


@result_type("scrub.ScrubResult")
@dataclass
class ScrubResult:
    """One hypothesis scrubbed on one task (see ``scrub``)."""

    task: str
    hypothesis: str
    description: str
    n: int
    seed: int
    loss_model: float
    loss_scrubbed_all: float
    loss_hypothesis: float
    loss_recovered: float
    stderr: float
    stderr_experiment: float | None
    paper: float | None
    seconds: float
    examples_per_second: float
    per_node: list[NodeResult]
    subsets: list[SubsetRow]
    cancellation: Cancellation
    hypothesis_tree: dict

    def headline(self) -> list[Claim]:
        """Loss recovered beside the paper, and Scheurer et al.'s two checks."""
        c = self.cancellation
        se = self.stderr if self.stderr_experiment is None else self.stderr_experiment
        return [
            recovered_claim(f"{self.task} {self.hypothesis}: loss recovered", self.loss_recovered, se, self.paper),
            constant_claim(
                "loss under the hypothesis vs a constant predictor",
                self.loss_hypothesis,
                c.constant_loss,
                c.worse_than_constant,
            ),
            Claim(
                "cancellation: improvement / degradation mass",
                c.cancelled,
                target="not suspected",
                verdict=verdict(not c.cancellation_suspected),
            ),
        ]

    def figures(self) -> dict:
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3))
        c = self.cancellation
        edges = c.histogram_edges
        ax.stairs(c.histogram_counts, edges, fill=True, alpha=0.7)
        ax.axvline(0, color="k", lw=0.8)
        ax.set_xlabel("per-example loss change, hypothesis - model")
        ax.set_ylabel("examples")
        ax.set_title(f"{self.task} / {self.hypothesis}: {c.share_worse:.0%} worse, {c.share_better:.0%} better")
        fig.tight_layout()
        return {"loss change histogram": fig}


PAPER_TOLERANCE = 0.10  # a headline claim "matches the paper" within this much loss recovered


def recovered_claim(name: str, value: float, stderr: float, paper: float | None) -> Claim:
    """Loss recovered with its 95% normal interval, judged against the paper's figure when there is one."""
    return Claim(
        name,
        value,
        (value - 1.96 * stderr, value + 1.96 * stderr),
        paper,
        "" if paper is None else "Chan et al. 2022",
        "" if paper is None else f"paper ± {PAPER_TOLERANCE:.2f}",
        "" if paper is None else verdict(abs(value - paper) <= PAPER_TOLERANCE),
    )


def constant_claim(name: str, loss: float, constant_loss: float, worse: bool) -> Claim:
    """A hypothesis's loss against the constant predictor's on the same data (Scheurer et al.'s check):
    met when it is below."""
    return Claim(
        name,
        loss,
        reference=constant_loss,
        source="constant predictor, same data",
        target="below the constant predictor's",
        verdict=verdict(not worse),
    )


def recovered(l_model: torch.Tensor, l_all: torch.Tensor, l_hyp: torch.Tensor) -> float:
    """(L_all - L_hyp) / (L_all - L_model) from per-example losses."""
    return float((l_all.mean() - l_hyp.mean()) / (l_all.mean() - l_model.mean()))


def resampled_means(*losses: torch.Tensor, samples: int = 1000, seed: int = 0) -> list[torch.Tensor]:
    """The mean ``[samples]`` of each per-example loss ``[n]`` over the same ``samples`` draws of the reference
    examples with replacement (the bootstrap every stderr here uses)."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(len(losses[0]), (samples, len(losses[0])), generator=g)  # [samples, n]
    return [x[idx].mean(1) for x in losses]


def bootstrap_stderr(l_model, l_all, l_hyp, samples: int = 1000, seed: int = 0) -> float:
    """Standard error of the loss recovered, resampling reference examples with replacement."""
    m, a, h = resampled_means(l_model, l_all, l_hyp, samples=samples, seed=seed)
    return float(((a - h) / (a - m)).std())


def experiment_stderr(
    model,
    task: Task,
    hyp: Hypothesis,
    seed: int = 0,
    replicates: int = 10,
    batch_size: int = 512,
    progress=None,
    max_memory: float | None = None,
) -> float:
    """Standard deviation of the loss recovered over ``replicates`` rescrubs, each on the dataset
    rows drawn with replacement and with its own input trees (see module doc); ``progress`` (a
    ``probity.report.console`` tracker), if given, advances by one per chunk of each of the replicates'
    scrubs (three per replicate); ``max_memory`` as for :class:`Scrubber`."""
    g = torch.Generator().manual_seed(10_007 * seed + 1)
    values = []
    for b in range(replicates):
        rows = torch.randint(len(task.tokens), (len(task.tokens),), generator=g)
        s = Scrubber(model, task.select(rows), 1_000_003 * (seed + 1) + b, batch_size, max_memory=max_memory)
        l_model, l_all, l_hyp = (
            s.losses(h, progress=progress, note=f"replicate {b + 1}")[0] for h in (IDENTITY, EMPTY, hyp)
        )
        values.append(recovered(l_model, l_all, l_hyp))
    return float(torch.tensor(values).std())


def only_subtree(hyp: Hypothesis, name: str) -> Hypothesis:
    """``hyp`` with everything exact except the subtree of node ``name`` (its ancestors become
    identity nodes that keep only the child on the way to it, their rest on the reference)."""

    def cut(node: Node) -> Node | None:
        if node.name == name:
            return copy.deepcopy(node)
        for child in node.children:
            if (kept := cut(child)) is not None:
                return Node(node.name, node.sites, "identity", node.via, node.positions, "self", [kept])
        return None

    root = cut(hyp.root)
    if root is None:
        raise KeyError(f"no node {name!r} in hypothesis {hyp.name!r}")
    return Hypothesis(f"{hyp.name}:{name}", root)


def scrub(
    model,
    task: Task,
    hyp: Hypothesis,
    seed: int = 0,
    batch_size: int = 512,
    cache: bool = True,
    per_node: bool = True,
    scrubber: Scrubber | None = None,
    replicates: int = 0,
    progress=None,
    max_memory: float | None = None,
) -> ScrubResult:
    """Scrub ``hyp`` on ``task``: L_model, L_scrubbed_all (the empty hypothesis, same seed), L_hypothesis,
    loss recovered with bootstrap stderrs (the whole-experiment one with ``replicates`` > 0, see module
    doc), per-subset and per-node tables and the cancellation check. ``progress`` (a
    ``probity.report.console`` tracker), if given, advances by one per chunk of each scrub of the dataset
    (:func:`progress_units` of them). ``max_memory`` (GB): see :class:`Scrubber`."""
    s = scrubber or Scrubber(model, task, seed=seed, batch_size=batch_size, cache=cache, max_memory=max_memory)
    s.resolve(hyp)
    t0 = time.perf_counter()
    l_model, _, model_logits = s.losses(IDENTITY, keep=True, progress=progress, note="identity")
    l_all, _, _ = s.losses(EMPTY, progress=progress, note="empty")
    t1 = time.perf_counter()
    l_hyp, kl, _ = s.losses(hyp, model_logits, progress=progress, note=hyp.name)
    seconds = time.perf_counter() - t1
    nodes = []
    if per_node:
        for node in hyp.nodes()[1:]:
            l_node, _, _ = s.losses(only_subtree(hyp, node.name), progress=progress, note=f"node {node.name}")
            nodes.append(
                NodeResult(
                    node.name,
                    ", ".join(str(site) for site in node.sites),
                    node.feature,
                    float(l_node.mean()),
                    recovered(l_model, l_all, l_node),
                )
            )
    subsets = [
        SubsetRow(
            "all",
            len(l_model),
            float(l_model.mean()),
            float(l_all.mean()),
            float(l_hyp.mean()),
            recovered(l_model, l_all, l_hyp),
        )
    ]
    for name, mask in task.subsets.items():
        if mask.any():
            subsets.append(
                SubsetRow(
                    name,
                    int(mask.sum()),
                    float(l_model[mask].mean()),
                    float(l_all[mask].mean()),
                    float(l_hyp[mask].mean()),
                    recovered(l_model[mask], l_all[mask], l_hyp[mask]),
                )
            )
    return ScrubResult(
        task=task.name,
        hypothesis=hyp.name,
        description=hyp.description,
        n=len(l_model),
        seed=seed,
        loss_model=float(l_model.mean()),
        loss_scrubbed_all=float(l_all.mean()),
        loss_hypothesis=float(l_hyp.mean()),
        loss_recovered=recovered(l_model, l_all, l_hyp),
        stderr=bootstrap_stderr(l_model, l_all, l_hyp, seed=seed),
        stderr_experiment=(
            experiment_stderr(s.model, task, hyp, seed, replicates, batch_size, progress, s.max_memory)
            if replicates
            else None
        ),
        paper=hyp.paper,
        seconds=round(seconds + (t1 - t0) / 2, 3),
        examples_per_second=len(l_model) / max(seconds, 1e-9),
        per_node=nodes,
        subsets=subsets,
        cancellation=cancellation(l_model, l_all, l_hyp, kl, task.constant_loss()),
        hypothesis_tree=hyp.to_dict(),
    )


def progress_units(
    hyp: Hypothesis, rows: int, batch_size: int = 512, per_node: bool = True, replicates: int = 0
) -> int:
    """How far ``scrub(model, task, hyp, batch_size=, per_node=, replicates=, progress=)`` advances its
    tracker on a task of ``rows`` rows: one per chunk of each scrub of the dataset -- the model, the empty
    hypothesis and ``hyp``, one per non-root node, three per replicate."""
    scrubs = 3 + (len(hyp.nodes()) - 1 if per_node else 0) + 3 * replicates
    return scrubs * -(-rows // batch_size)


def cancellation(l_model, l_all, l_hyp, kl, constant: float, bins: int = 40) -> Cancellation:
    """The cancellation check from per-example losses ``[n]`` and KL ``[n]``."""
    change = l_hyp - l_model
    scale = float(l_all.mean() - l_model.mean())
    tol = 0.01 * abs(scale)
    worse, better = change.clamp(min=0).sum(), (-change).clamp(min=0).sum()
    cancelled = float(better / worse) if worse > 0 else 0.0
    lo, hi = float(change.min()), float(change.max())
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    counts = torch.histc(change.float(), bins=bins, min=lo, max=hi)
    return Cancellation(
        share_worse=float((change > tol).float().mean()),
        share_better=float((change < -tol).float().mean()),
        cancelled=cancelled,
        mean_abs_change=float(change.abs().mean()),
        kl_to_model=float(kl.mean()),
        constant_loss=constant,
        worse_than_constant=bool(l_hyp.mean() > constant),
        cancellation_suspected=cancelled > 0.25 and float(worse) / len(change) > 0.05 * abs(scale),
        histogram_edges=torch.linspace(lo, hi, bins + 1).tolist(),
        histogram_counts=[int(c) for c in counts],
    )
