"""Hypotheses as data: a tree of interpretation nodes mapped to paths in the model.

Each ``Node`` names a feature of the input (a key of the task's features: a value per
row ``[n]`` or per row and position ``[n, pos]``; ``identity`` = the row itself, ``none``
= one class) and the model sites it claims: components (each a ``Site`` or a string
``Site.parse`` reads, such as ``1.0`` or ``mlp2``; ``*`` for every sender of the parent)
whose outputs reach one of the parent's sites through the residual stream, into the
inputs of the parent's sites this node names in ``via`` (``q``, ``k``, ``v`` of a head,
``in`` of an MLP or the output; ``direct`` = all), optionally only at some ``positions``.
The root's sites include ``output``; the root may also name ``above``: every component above the
lowest site its children name (heads of that layer included, in ``(layer, order)`` order), minus the
children's own sites. On a deep model that is the rest of the model above a circuit, so a root
``["output", "above"]`` recomputes it from the scrubbed circuit instead of reading it clean.

Scrubbing semantics (Chan et al. 2022; rust_circuit's ``other_inputs_sampler``): a node
runs on an input that agrees with its parent's input on its feature. A leaf's whole
subtree runs on that input. For a node with children, each child's claimed paths run
on the child's input, edges between the node's own sites stay on the node's input,
and every other path below the node runs on the node's ``rest`` input: ``random``
(an independent uniform draw), ``self`` (the node's own input) or a feature name (a
fresh input agreeing with the node's on that feature). A per-position feature samples
a separate input for every position of the claimed outputs (leaves only).

A leaf may also claim less than its sites' whole outputs: with ``phi`` (a per-row
feature f) each site's output is split into its least-squares fit ``v_p f(x)`` (one
vector per position, fitted over the dataset's clean outputs) computed on the node's
input, plus the fit's residual computed on the node's ``rest`` input -- Redwood's
"phi" rewrite of head 0.0 in the paren case study.

Hypotheses load from Python (``Hypothesis.from_dict``), YAML or JSON (``load``), and
serialise back (``to_dict``, ``save``). ``validate`` checks them against a model and
a task before any forward pass and raises a one-line ``HypothesisError``.
"""

from __future__ import annotations

import operator
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from probity.models.sites import Site
from probity.report.io import read_structured, write_structured
from probity.scrub.model import KINDS, Component, Decomposed

SPECIAL_FEATURES = ("identity", "none")
ABOVE = "above"  # the root's site keyword: the model above its children's sites (see module doc)
ALL_VIA = (*KINDS, "in")
MIN_CLASS_ROWS = 5


class HypothesisError(ValueError):
    """A malformed hypothesis; the message names the node and what to fix."""


@dataclass
class Node:
    """One interpretation node: ``feature`` computed by ``sites`` (see module doc)."""

    name: str
    sites: list[Site | str]
    feature: str = "identity"
    via: list[str] = field(default_factory=lambda: ["direct"])
    positions: list[int] | None = None
    rest: str = "random"
    children: list[Node] = field(default_factory=list)
    phi: str | None = None

    def __post_init__(self):
        """Normalise a bare site or ``via`` string to a list; reject fields of the wrong type and empty
        lists (what needs the model or the task is checked by ``validate``)."""
        if not isinstance(self.name, str):
            raise HypothesisError(f"node names are strings, got {self.name!r}")
        if isinstance(self.sites, (str, Site)):
            self.sites = [self.sites]
        if not isinstance(self.sites, (list, tuple)) or not self.sites:
            raise HypothesisError(f"node {self.name!r}: sites must be a non-empty list of Site objects or strings")
        self.sites = list(self.sites)
        if not all(isinstance(s, (str, Site)) for s in self.sites):
            raise HypothesisError(f"node {self.name!r}: sites must be a non-empty list of Site objects or strings")
        if isinstance(self.via, str):
            self.via = [self.via]
        if not isinstance(self.via, (list, tuple)) or not self.via or not all(isinstance(v, str) for v in self.via):
            raise HypothesisError(
                f"node {self.name!r}: via must be one of direct, q, k, v, in or a non-empty list of them, "
                f"got {self.via!r}"
            )
        self.via = list(self.via)
        for key in ("feature", "rest"):
            if not isinstance(getattr(self, key), str):
                raise HypothesisError(f"node {self.name!r}: {key} must be a feature name, got {getattr(self, key)!r}")
        if self.phi is not None and not isinstance(self.phi, str):
            raise HypothesisError(f"node {self.name!r}: phi must be a feature name, got {self.phi!r}")
        if self.positions is not None:
            if not isinstance(self.positions, (list, tuple)) or not self.positions:
                raise HypothesisError(
                    f"node {self.name!r}: positions must be a non-empty list of integers, got {self.positions!r}"
                )
            try:
                if any(isinstance(p, bool) for p in self.positions):
                    raise TypeError
                self.positions = [operator.index(p) for p in self.positions]
            except TypeError:  # a float, a string, a bool
                raise HypothesisError(
                    f"node {self.name!r}: positions must be integers, got {self.positions!r}"
                ) from None
        if not isinstance(self.children, (list, tuple)) or not all(isinstance(c, Node) for c in self.children):
            raise HypothesisError(f"node {self.name!r}: children must be a list of nodes")
        self.children = list(self.children)

    def walk(self):
        """This node and its descendants, depth first (pre-order)."""
        yield self
        for child in self.children:
            yield from child.walk()

    def to_dict(self) -> dict:
        """A plain dict (YAML/JSON ready); defaults are left out."""
        out: dict = {"name": self.name, "sites": [str(s) for s in self.sites]}
        if self.feature != "identity":
            out["feature"] = self.feature
        if self.via != ["direct"]:
            out["via"] = list(self.via)
        if self.positions is not None:
            out["positions"] = list(self.positions)
        if self.rest != "random":
            out["rest"] = self.rest
        if self.phi is not None:
            out["phi"] = self.phi
        if self.children:
            out["children"] = [c.to_dict() for c in self.children]
        return out

    KEYS = ("name", "site", "sites", "feature", "via", "positions", "rest", "children", "phi")

    @classmethod
    def from_dict(cls, d: dict, where: str = "hypothesis") -> Node:
        """Parse a node dict (``site`` or ``sites``: a site or a list of them, each a ``Site`` or a string
        ``Site.parse`` reads; ``via`` a string or list; nested ``children``). A key given without a value
        (``null``) takes its default; anything else of the wrong type is a one-line ``HypothesisError``."""
        if not isinstance(d, dict):
            raise HypothesisError(f"{where}: a node must be a mapping, got {type(d).__name__}")
        if unknown := set(d) - set(cls.KEYS):
            raise HypothesisError(
                f"{where}: unknown key(s) {sorted(map(str, unknown))}; allowed: {', '.join(cls.KEYS)}"
            )
        name = _label(d.get("name"), where, f"{where}: name")
        if d.get("site") is not None and d.get("sites") is not None:
            raise HypothesisError(f"node {name!r}: give `site` or `sites`, not both")
        sites = d.get("sites", d.get("site"))
        if sites is None:
            raise HypothesisError(f"node {name!r}: give `site` or `sites`")
        listed = sites if isinstance(sites, list) else [sites]
        if any(isinstance(s, float) for s in listed):  # YAML reads 1.10 as the number 1.1: head 1, not head 10
            raise HypothesisError(f"node {name!r}: quote head shorthands in YAML ('1.10', not 1.10); got {sites!r}")
        children = d.get("children")
        if children is not None and not isinstance(children, list):
            raise HypothesisError(f"node {name!r}: children must be a list of nodes, got {type(children).__name__}")

        def given(key: str, default):
            return default if d.get(key) is None else d[key]

        return cls(
            name=name,
            sites=sites,
            feature=given("feature", "identity"),
            via=given("via", "direct"),
            positions=d.get("positions"),
            rest=given("rest", "random"),
            children=[cls.from_dict(c, f"{name}.children[{i}]") for i, c in enumerate(children or [])],
            phi=d.get("phi"),
        )


def _label(value, default: str, what: str) -> str:
    """A name from a YAML/JSON scalar (a number such as 1.0 reads as its text); ``default`` for null. It
    must be printable text on one line: it appears in every error about its node."""
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise HypothesisError(f"{what} must be a string, got {value!r}")
    if not str(value).isprintable():
        raise HypothesisError(f"{what} must be printable text on one line, got {value!r}")
    return str(value)


@dataclass
class Hypothesis:
    """A named interpretation tree; ``root`` claims the output."""

    name: str
    root: Node
    description: str = ""
    paper: float | None = None  # the paper's loss recovered for the matching hypothesis, if any

    def __post_init__(self):
        if not isinstance(self.root, Node):
            raise HypothesisError(f"hypothesis {self.name!r}: root must be a Node, got {type(self.root).__name__}")

    def nodes(self) -> list[Node]:
        """All nodes, root first (depth-first pre-order: the sampling order)."""
        return list(self.root.walk())

    def to_dict(self) -> dict:
        out = {"name": self.name, "description": self.description, "root": self.root.to_dict()}
        if self.paper is not None:
            out["paper"] = self.paper
        return out

    KEYS = ("name", "description", "paper", "root")

    @classmethod
    def from_dict(cls, d: dict) -> Hypothesis:
        """Parse a hypothesis dict: ``root`` (a node, see ``Node.from_dict``) and optional ``name``,
        ``description`` and ``paper`` (the paper's loss recovered); one-line ``HypothesisError`` otherwise."""
        if not isinstance(d, dict) or "root" not in d:
            got = "no `root`" if isinstance(d, dict) else f"a value of type {type(d).__name__}"
            got = "an empty file" if d is None else got
            raise HypothesisError(
                f"a hypothesis is a mapping with a `root` node (and optional name, description, paper); got {got}"
            )
        if unknown := set(d) - set(cls.KEYS):
            raise HypothesisError(
                f"hypothesis: unknown key(s) {sorted(map(str, unknown))}; allowed: {', '.join(cls.KEYS)}"
            )
        paper = d.get("paper")
        if paper is not None and (
            isinstance(paper, bool) or not isinstance(paper, (int, float)) or not -1e6 < paper < 1e6
        ):
            raise HypothesisError(f"hypothesis: paper must be a number (the paper's loss recovered), got {paper!r}")
        description = d.get("description")
        if description is not None and not isinstance(description, str):
            raise HypothesisError(f"hypothesis: description must be a string, got {description!r}")
        return cls(
            name=_label(d.get("name"), "custom", "hypothesis: name"),
            root=Node.from_dict(d["root"], "root"),
            description=description or "",
            paper=None if paper is None else float(paper),
        )

    def save(self, path: str | Path) -> None:
        """Write YAML (``.yaml``/``.yml``) or JSON."""
        write_structured(path, self.to_dict())


def load(path: str | Path) -> Hypothesis:
    """Read a hypothesis from a YAML or JSON file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no hypothesis file {path}; give a built-in name (probity scrub list) or a YAML/JSON path"
        )
    return Hypothesis.from_dict(read_structured(path, HypothesisError))


@dataclass
class Resolved:
    """A validated node: its components, the input kinds it claims, positions, children."""

    node: Node
    index: int
    components: tuple[Component, ...]
    via: frozenset[str]
    positions: tuple[int, ...] | None
    per_position: bool
    children: list[Resolved]

    @property
    def leaf(self) -> bool:
        return not self.children

    def walk(self):
        """This node and its descendants, depth first (pre-order: index order)."""
        yield self
        for child in self.children:
            yield from child.walk()


def validate(hyp: Hypothesis, model: Decomposed, features: dict[str, torch.Tensor], n_ctx: int) -> Resolved:
    """Check ``hyp`` against the model and the task's precomputed ``features`` and resolve its sites.

    Raises ``HypothesisError`` (one line, naming the node) for unknown sites or features, a
    child not below its parent, overlapping claims, bad positions or ``rest``; warns when a
    feature class holds fewer than ``MIN_CLASS_ROWS`` rows."""
    counter = iter(range(10**9))
    names: set[str] = set()

    def resolve(node: Node, parent: Resolved | None) -> Resolved:
        if node.name in names:
            raise HypothesisError(f"two nodes are named {node.name!r}; node names must be unique")
        names.add(node.name)
        for feat in (node.feature, node.rest):
            if feat not in features and feat not in SPECIAL_FEATURES and feat not in ("random", "self"):
                raise HypothesisError(
                    f"node {node.name!r}: unknown feature {feat!r}; "
                    f"available: {', '.join([*SPECIAL_FEATURES, *features])}"
                )
        if node.feature in ("random", "self"):
            raise HypothesisError(f"node {node.name!r}: {node.feature!r} is a `rest` option, not a feature")
        via = set()
        for v in node.via:
            if v not in (*ALL_VIA, "direct"):
                raise HypothesisError(f"node {node.name!r}: via {v!r} is not one of direct, q, k, v, in")
            via |= set(ALL_VIA) if v == "direct" else {v}
        if parent is None:
            comps = []
            for s in node.sites:
                comps += _above(model, node) if s == ABOVE else [_parse(model, s, node)]
            if model.output not in comps:
                raise HypothesisError(f"root node {node.name!r} must claim the `output` site")
        else:
            comps = []
            for s in node.sites:
                if s == ABOVE:
                    raise HypothesisError(f"node {node.name!r}: only the root may claim {ABOVE!r}")
                if s == "*":
                    comps += [
                        c
                        for c in model.components
                        if c not in parent.components and any(model.below(p, c) for p in parent.components)
                    ]
                else:
                    comps.append(_parse(model, s, node))
            for c in comps:
                if c == model.output:
                    raise HypothesisError(f"node {node.name!r}: only the root may claim `output`")
                if c in parent.components:
                    raise HypothesisError(
                        f"node {node.name!r}: site {c} is already a site of its parent {parent.node.name!r}"
                    )
                if not any(model.below(p, c) and via & set(p.inputs) for p in parent.components):
                    raise HypothesisError(
                        f"node {node.name!r}: site {c} does not feed any site of its parent "
                        f"{parent.node.name!r} via {sorted(via)}; a child must sit below its parent"
                    )
        if len(set(comps)) != len(comps):
            raise HypothesisError(f"node {node.name!r} lists a site twice")
        positions = None
        if node.positions is not None:
            if parent is None:
                raise HypothesisError(f"root node {node.name!r} cannot restrict positions")
            if bad := [p for p in node.positions if not 0 <= p < n_ctx]:
                raise HypothesisError(f"node {node.name!r}: positions {bad} outside 0..{n_ctx - 1}")
            positions = tuple(sorted(set(node.positions)))
        feat = features.get(node.feature)
        per_position = feat is not None and feat.dim() == 2
        if node.rest in features and features[node.rest].dim() == 2:
            raise HypothesisError(
                f"node {node.name!r}: rest feature {node.rest!r} is per-position; use a per-row feature"
            )
        if per_position and parent is None:
            raise HypothesisError(f"root node {node.name!r} cannot use the per-position feature {node.feature!r}")
        out = Resolved(node, next(counter), tuple(sorted(set(comps))), frozenset(via), positions, per_position, [])
        out.children = [resolve(c, out) for c in node.children]
        if per_position and out.children:
            raise HypothesisError(
                f"node {node.name!r}: a per-position feature ({node.feature!r}) is only supported on leaf nodes"
            )
        if node.phi is not None:
            if node.phi not in features or features[node.phi].dim() != 1:
                raise HypothesisError(
                    f"node {node.name!r}: phi must name a per-row feature, got {node.phi!r}; "
                    f"available: {', '.join(k for k, v in features.items() if v.dim() == 1)}"
                )
            if out.children or per_position or parent is None:
                raise HypothesisError(
                    f"node {node.name!r}: phi is only supported on non-root leaf nodes with a per-row feature"
                )
        _check_overlaps(out)
        return out

    root = resolve(hyp.root, None)
    _warn_small_classes(hyp, features)
    return root


def _above(model: Decomposed, root: Node) -> list[Component]:
    """The root's ``above`` sites: every component above the lowest site its children name explicitly
    (``(layer, order)`` order, the output excluded), minus those children's own sites."""
    named = {_parse(model, s, c) for c in root.children for s in c.sites if s not in ("*", ABOVE)}
    if not named:
        raise HypothesisError(
            f"root node {root.name!r}: {ABOVE!r} needs a child that names its sites (not only '*'); "
            "add the circuit's heads as a child"
        )
    lowest = min(named)
    return [c for c in model.components if c > lowest and c not in named and c != model.output]


def named_components(model: Decomposed, node: Node) -> list[Component]:
    """The components ``node`` names, ``above`` expanded and ``*`` (relative to the parent) left out."""
    out = []
    for s in node.sites:
        if s == ABOVE:
            out += _above(model, node)
        elif s != "*":
            out.append(_parse(model, s, node))
    return out


def _parse(model: Decomposed, site: Site | str, node: Node) -> Component:
    try:
        return model.component(site)
    except KeyError as e:
        raise HypothesisError(f"node {node.name!r}: {e.args[0]}") from None


def _check_overlaps(node: Resolved) -> None:
    """Siblings may not claim the same (sender, input kind, position) below a common parent site."""
    for i, a in enumerate(node.children):
        for b in node.children[i + 1 :]:
            shared = set(a.components) & set(b.components)
            kinds = a.via & b.via
            pos_overlap = a.positions is None or b.positions is None or set(a.positions) & set(b.positions)
            if shared and kinds and pos_overlap:
                c = min(shared)
                raise HypothesisError(
                    f"nodes {a.node.name!r} and {b.node.name!r} both claim {c} via {sorted(kinds)} "
                    f"into {node.node.name!r}; give them disjoint sites, via or positions"
                )


def _warn_small_classes(hyp: Hypothesis, features: dict[str, torch.Tensor]) -> None:
    for node in hyp.nodes():
        for name in {node.feature, node.rest} & set(features):
            values = features[name]
            if values.dim() == 2:  # per position: classes are (position, value) pairs
                values = values * values.shape[1] + torch.arange(values.shape[1])
            _, counts = torch.unique(values.reshape(-1), return_counts=True)
            if small := int((counts < MIN_CLASS_ROWS).sum()):
                warnings.warn(
                    f"feature {name!r} (node {node.name!r}) has {small} class(es) with fewer than "
                    f"{MIN_CLASS_ROWS} rows; their samples are nearly fixed, use more samples",
                    stacklevel=3,
                )
