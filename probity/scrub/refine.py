"""Hypothesis refinement: a greedy search over causal-scrubbing hypotheses (issue 15).

Starting from a hypothesis, each step proposes a small set of edits, scrubs every candidate on the
same dataset and sampling seed (one clean cache, the batched engine), keeps the one that recovers the
most loss and stops when no edit gains more than ``tolerance`` or the loss recovered reaches
``target``. Like ACDC, but the units are interpretation nodes with resampling ablations, not edges
with zero or mean ablations.

One step, in order::

    full = scrub(H, per_node=True)                       # per-node attribution, cancellation check
    paths = [(N, s) for N an open node of H               # the root, or a node with children
                    for s a sender of N's sites claimed by neither N nor its children]
    gain(N, s) = recovered(H + child s on the identity under N) - recovered(H)    # path scrubbing
    for the `width` paths of largest gain:                # 1 + |features| candidates each
        add s to N's sites; add a child s under N on each task feature
    for the `width` nodes of lowest per-node loss recovered (the weakest claims):
        switch its feature to every other task feature or identity; split its sites (a leaf of 2+ sites)
    pick  argmax  recovered(candidate) - identity_cost * (candidate claims a new identity)
    accept if it gains more than `tolerance` over H

So a step costs ``|paths| + width * (1 + |features|) + width * |features|`` scrubs at most (plus one
full scrub of the accepted hypothesis), all on a fixed dataset and seed: the same inputs give the same
trajectory. ``identity`` never enters as a new child (it would claim a whole subtree on the reference,
which explains nothing); a node may switch to it, at a cost of ``identity_cost`` in the selection.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field

import torch

from probity.report import Claim, result_type, verdict
from probity.scrub.hypothesis import Hypothesis, HypothesisError, Node, named_components
from probity.scrub.run import EMPTY, IDENTITY, Scrubber, constant_claim, recovered, scrub
from probity.scrub.task import Task


@dataclass
class RefineConfig:
    """Settings of :func:`refine` (see module doc)."""

    target: float = 0.9  # stop once the loss recovered reaches this
    max_steps: int = 8  # edits accepted at most
    tolerance: float = 0.005  # stop when the best edit gains no more loss recovered than this
    width: int = 2  # paths and nodes the attribution passes on to the full candidate set each step
    identity_cost: float = 0.02  # loss recovered a switch to the identity feature must win by
    features: list[str] | None = None  # features an edit may assign (None: every feature of the task)
    senders: list | None = None  # Sites or strings ``Site.parse`` reads: the components a new path may come from
    # (e.g. the heads find_heads names and the MLPs; None: every sender)
    seed: int = 0  # scrub seed: the sampled input trees (the dataset is the task's)
    batch_size: int = 512  # reference examples per forward chunk
    max_memory: float | None = None  # GB: chunks cut to fit (Scrubber), one-line MemoryError when nothing fits

    def __post_init__(self):
        if not 0 < self.target <= 1:
            raise ValueError(f"target must be in (0, 1] (a share of the loss recovered), got {self.target}")
        if self.max_steps < 1:
            raise ValueError(f"max_steps must be at least 1, got {self.max_steps}")
        if self.tolerance < 0 or self.identity_cost < 0:
            raise ValueError(f"tolerance and identity_cost must be >= 0, got {self.tolerance} and {self.identity_cost}")
        if self.width < 1:
            raise ValueError(f"width must be at least 1 (paths and nodes explored per step), got {self.width}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if self.senders is not None and not self.senders:
            raise ValueError("senders must name at least one component (or be None for every sender)")


@dataclass
class RefineStep:
    """One accepted hypothesis on the trajectory (step 0: the starting one)."""

    step: int
    edit: str
    loss_recovered: float
    stderr: float
    loss_hypothesis: float
    constant_loss: float
    worse_than_constant: bool
    cancellation_suspected: bool
    candidates: int  # hypotheses scrubbed to choose this edit (0 for the start)
    hypothesis: dict


@result_type("scrub.RefineResult")
@dataclass
class RefineResult:
    """A refinement trajectory (see :func:`refine`); ``hypothesis`` is the final one."""

    task: str
    start: str
    n: int
    seed: int
    loss_model: float
    loss_scrubbed_all: float
    target: float
    stopped: str
    steps: list[RefineStep] = field(default_factory=list)

    @property
    def hypothesis(self) -> Hypothesis:
        """The last accepted hypothesis."""
        return Hypothesis.from_dict(self.steps[-1].hypothesis)

    def headline(self) -> list[Claim]:
        """The final loss recovered against the target, and the constant-predictor check."""
        first, last = self.steps[0], self.steps[-1]
        return [
            Claim(
                f"{self.task}: loss recovered after {len(self.steps) - 1} refinement steps from {self.start}",
                last.loss_recovered,
                (last.loss_recovered - 1.96 * last.stderr, last.loss_recovered + 1.96 * last.stderr),
                first.loss_recovered,
                f"the starting hypothesis {self.start}",
                f">= {self.target:.2f}",
                verdict(last.loss_recovered >= self.target),
            ),
            constant_claim(
                "final hypothesis vs a constant predictor",
                last.loss_hypothesis,
                last.constant_loss,
                last.worse_than_constant,
            ),
        ]


@dataclass
class _Edit:
    text: str
    hypothesis: Hypothesis
    new_identity: bool = False


def determines_targets(task: Task, feature: str) -> bool:
    """Whether the per-row ``feature`` fixes every row's targets at its loss positions (the label itself,
    such as paren's ``balanced``): rows of one class never differ there."""
    values = task.features[feature]
    if values.dim() != 1:
        return False
    targets = torch.where(task.loss_mask, task.targets, -1).double()  # [n, pos]
    keyed = torch.cat([values.double()[:, None], targets], 1)  # [n, 1 + pos]
    return len(torch.unique(keyed, dim=0)) == len(torch.unique(values))


def refine(
    model, task: Task, hypothesis: Hypothesis, config: RefineConfig | None = None, progress=None, on_step=None
) -> RefineResult:
    """Refine ``hypothesis`` greedily on ``task`` (module doc): returns the trajectory, each accepted edit
    with its loss recovered ± bootstrap stderr and the constant-predictor check. ``progress`` (a
    ``probity.report.console`` tracker) advances by one per chunk scrubbed; ``on_step(step)`` is called
    with each :class:`RefineStep` as it is accepted."""
    cfg = config or RefineConfig()
    s = Scrubber(model, task, seed=cfg.seed, batch_size=cfg.batch_size, max_memory=cfg.max_memory)
    s.resolve(hypothesis)
    # the components a new path may come from, as short names (a KeyError naming the valid sites, before any
    # forward pass); None: every sender
    allowed = None if cfg.senders is None else {s.model.component(x).short for x in cfg.senders}
    if cfg.features is not None and (unknown := sorted(set(cfg.features) - set(task.features))):
        raise ValueError(f"features {unknown} are not the task's; available: {', '.join(task.features)}")
    features = cfg.features or list(task.features)
    labels = {f for f in features if determines_targets(task, f)}
    l_model = s.losses(IDENTITY, progress=progress, note="identity")[0]
    l_all = s.losses(EMPTY, progress=progress, note="empty")[0]

    def score(hyp: Hypothesis) -> float | None:
        """Loss recovered by ``hyp``, or None when it is not a valid hypothesis for this model and task."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # small feature classes: a candidate, not the user's hypothesis
            try:
                s.resolve(hyp)
            except HypothesisError:
                return None
            return recovered(l_model, l_all, s.losses(hyp, progress=progress, note=hyp.name)[0])

    def record(step: int, edit: str, hyp: Hypothesis, candidates: int):
        full = scrub(s.model, task, hyp, seed=cfg.seed, scrubber=s, progress=progress)
        c = full.cancellation
        row = RefineStep(
            step,
            edit,
            full.loss_recovered,
            full.stderr,
            full.loss_hypothesis,
            c.constant_loss,
            c.worse_than_constant,
            c.cancellation_suspected,
            candidates,
            hyp.to_dict(),
        )
        if on_step is not None:
            on_step(row)
        return row, full

    row, full = record(0, f"start: {hypothesis.name}", hypothesis, 0)
    result = RefineResult(
        task.name, hypothesis.name, full.n, cfg.seed, full.loss_model, full.loss_scrubbed_all, cfg.target, ""
    )
    result.steps.append(row)
    current = hypothesis
    while True:
        if row.loss_recovered >= cfg.target:
            result.stopped = f"reached the target {cfg.target:.2f}"
            break
        if len(result.steps) > cfg.max_steps:
            result.stopped = f"max_steps ({cfg.max_steps}) edits"
            break
        edits, scanned = _propose(
            s, current, row.loss_recovered, full.per_node, features, labels, cfg.width, allowed, score
        )
        scored = [(v, e) for e in edits if (v := score(e.hypothesis)) is not None]
        if not scored:
            result.stopped = "no edit to propose"
            break
        value, best = max(scored, key=lambda ve: ve[0] - cfg.identity_cost * ve[1].new_identity)
        if value - row.loss_recovered <= cfg.tolerance:
            result.stopped = f"no edit gains more than {cfg.tolerance} (best: {best.text}, {value:.3f})"
            break
        current = best.hypothesis
        row, full = record(len(result.steps), best.text, current, scanned + len(scored))
        result.steps.append(row)
    return result


def _propose(
    s: Scrubber, hyp: Hypothesis, base: float, per_node, features, labels, width: int, allowed: set | None, score
) -> tuple[list[_Edit], int]:
    """The candidate edits of one step (module doc) and how many paths were scrubbed to choose them: the
    ``width`` unclaimed paths (from the components named in ``allowed`` when given) of largest gain when
    claimed on the identity, then the ``width`` weakest nodes by per-node attribution."""
    model = s.model
    names = {n.name for n in hyp.nodes()}
    paths = []
    for node in hyp.nodes():
        if node is not hyp.root and not node.children:
            continue
        own = set(named_components(model, node))
        reach = {c for r in own for c in model.senders(r)}
        claimed = {x for c in node.children for x in named_components(model, c)}
        if any(x == "*" for c in node.children for x in c.sites):
            claimed = reach
        senders = sorted(reach - own - claimed)
        for c in senders:
            if allowed is not None and c.short not in allowed:
                continue
            name = c.short if c.short not in names else f"{c.short}->{node.name}"
            probe = _edited(hyp, node.name, lambda n, name=name, c=c: n.children.append(Node(name, [c.short])))
            gain = score(probe)
            if gain is not None:
                paths.append((gain - base, node.name, name, c.short))
    edits = []
    for _, parent, name, site in sorted(paths, key=lambda p: -p[0])[:width]:
        edits.append(
            _Edit(f"add {site} to the sites of {parent}", _edited(hyp, parent, lambda n, x=site: n.sites.append(x)))
        )
        for f in features if model.component(site).kind == "head" else set(features) - labels:
            edits.append(
                _Edit(
                    f"add child {site} on {f} under {parent}",
                    _edited(hyp, parent, lambda n, x=site, f=f, name=name: n.children.append(Node(name, [x], f))),
                )
            )
    for node in hyp.nodes():
        for child in node.children:
            if not child.children and "*" not in child.sites:
                edits.append(_Edit(f"merge {child.name} into the sites of {node.name}", _merge(hyp, child.name)))
    weakest = sorted(per_node, key=lambda r: r.loss_recovered)[:width]
    for r in weakest:
        node = next(n for n in hyp.nodes() if n.name == r.node)
        heads = all(c.kind == "head" for c in named_components(model, node))
        for f in [*features, "identity"]:
            if f != node.feature and (heads or f not in labels) and (f != "identity" or node.children):
                edits.append(
                    _Edit(
                        f"switch {node.name} from {node.feature} to {f}",
                        _edited(hyp, node.name, lambda n, f=f: setattr(n, "feature", f)),
                        f == "identity",
                    )
                )
        if len(node.sites) > 1 and not node.children:
            edits.append(_Edit(f"split {node.name} into one node per site", _split(hyp, node.name)))
    return edits, len(paths)


def _edited(hyp: Hypothesis, name: str, change) -> Hypothesis:
    """A copy of ``hyp`` with ``change(node)`` applied to its node ``name``."""
    out = copy.deepcopy(hyp)
    change(next(n for n in out.nodes() if n.name == name))
    out.name = "refined"
    return out


def _merge(hyp: Hypothesis, name: str) -> Hypothesis:
    """A copy of ``hyp`` with the leaf ``name`` removed and its sites added to its parent's: they then run on
    the parent's input, reading what the parent's other children claim."""
    out = copy.deepcopy(hyp)
    parent = next(n for n in out.nodes() if any(c.name == name for c in n.children))
    leaf = next(c for c in parent.children if c.name == name)
    parent.children.remove(leaf)
    parent.sites.extend(leaf.sites)
    out.name = "refined"
    return out


def _split(hyp: Hypothesis, name: str) -> Hypothesis:
    """A copy of ``hyp`` with the leaf ``name`` replaced by one sibling per site (same feature, via, positions)."""
    out = copy.deepcopy(hyp)
    parent = next(n for n in out.nodes() if any(c.name == name for c in n.children))
    i = next(i for i, c in enumerate(parent.children) if c.name == name)
    leaf = parent.children[i]
    parent.children[i : i + 1] = [
        Node(f"{leaf.name}/{site}", [site], leaf.feature, leaf.via, leaf.positions, leaf.rest, phi=leaf.phi)
        for site in leaf.sites
    ]
    out.name = "refined"
    return out
