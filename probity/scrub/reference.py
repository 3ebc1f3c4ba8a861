"""Causal scrubbing as the paper states it: treeify, sample, evaluate, one example at a time.

Chan et al. (Redwood Research, 2022) define the scrubbed output of a hypothesis (G, I, c) on a
reference input x by a recursion from the output. In our words:

    scrub(n, x):                      # the output of c(n), with interpretation node n on input x
        for every input of c(n), for every upstream node u of G that feeds it:
            if u = c(m) for a child m of n:   u's value is scrub(m, x'), x' ~ D agreeing with x on m
            else:                             u's value is u run on an unrelated input x'' ~ D
        return c(n) applied to those values
    scrubbed output = scrub(root, x_ref)

Here G is the model split into residual-stream components (``model.Decomposed``): embeddings,
heads, MLPs and the output; a head's inputs are its q, k and v, an MLP's and the output's is ``in``,
and each input is the bias plus the sum of the outputs of every earlier component. probity's
hypotheses (``hypothesis.Node``) widen the recursion: a node claims several components; a child
claims its components only through some inputs (``via``) and at some ``positions``; what no child
claims runs on the node's ``rest`` input (an unrelated draw, the node's own input, or one agreeing
with it on a feature); a per-position feature draws one input per position; ``phi`` splits a
leaf's output into a linear fit on a feature (on the node's input) plus the fit's residual (on its
rest input). A leaf's whole subtree runs on the leaf's input.

The three steps are three functions, and ``reference_logits`` runs them in order:

1. ``treeify(model, root, n_ctx)``: for every input of every component a node claims, the sender
   terms that sum to it, each saying where it runs (``Term``);
2. ``sample(root, task, seed, examples)``: the dataset row each node and each node's rest run on,
   for every reference example (the engine's own draws, ``sampling.sample_tree``, so both
   evaluate the same trees);
3. ``evaluate(model, tree, root, rows, clean, i)``: the scrubbed logits of reference example ``i``,
   walking the tree recursively.

Nothing is batched across examples and no subtree is shared between examples. Two memos keep the
recursion polynomial in depth (every path from the output reaches the lower components again): a
component's value in a node, per example (``evaluate``), and a component's clean output on one dataset
row (``CleanRows``: a subtree whose every path runs on one row is that row's plain forward pass).
``engine.py`` computes the same, compiled and batched; ``tests/scrub/test_scrub_reference.py`` and
``tests/scrub/test_scrub_deep.py`` check that the two agree on every built-in hypothesis and on a deep model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from probity.scrub.hypothesis import Hypothesis, Resolved, validate
from probity.scrub.model import Component, Decomposed
from probity.scrub.sampling import feature_classes, row_keys, sample_tree
from probity.scrub.task import Task


@dataclass(frozen=True)
class Term:
    """One sender's output in a receiver's input, at ``positions`` (``None``: every position), run as
    ``how`` says: ``"self"`` (the sender is a site of ``node`` too: its value in ``node``), ``"child"``
    (``node`` is the child that claims this path: the sender's value in that child) or ``"rest"``
    (the sender's clean output on ``node``'s rest input)."""

    sender: Component
    positions: tuple[int, ...] | None
    how: str
    node: Resolved


Tree = dict[tuple[int, Component, str], list[Term]]  # (node index, receiver, input kind) -> the terms of that input


def treeify(model: Decomposed, root: Resolved, n_ctx: int) -> Tree:
    """Where every path below a non-leaf node runs: for each such node, each component it claims and
    each input of that component, the ``Term``s that (with the component's biases) sum to the input."""
    tree: Tree = {}
    for node in root.walk():
        if node.leaf:  # a leaf's whole subtree runs on the leaf's input: nothing to split
            continue
        for receiver in node.components:
            for kind in receiver.inputs:
                terms = []
                for sender in model.senders(receiver):
                    if sender in node.components:  # an edge between two sites of the node stays in the node
                        terms.append(Term(sender, None, "self", node))
                        continue
                    unclaimed = set(range(n_ctx))
                    for child in node.children:
                        if sender in child.components and kind in child.via:
                            terms.append(Term(sender, child.positions, "child", child))
                            unclaimed -= set(range(n_ctx) if child.positions is None else child.positions)
                    if unclaimed:  # what no child claims runs on the node's rest input
                        at = None if len(unclaimed) == n_ctx else tuple(sorted(unclaimed))
                        terms.append(Term(sender, at, "rest", node))
                tree[(node.index, receiver, kind)] = terms
    return tree


def sample(root: Resolved, task: Task, seed: int, examples: torch.Tensor) -> dict[tuple[int, int], torch.Tensor]:
    """The dataset rows each node runs on for the reference examples ``examples [n]`` (dataset rows):
    ``{(node index, 0): its input rows, (node index, 1): its rest rows}``, each ``[n]`` (or ``[n, pos]``
    for a per-position node). Draws are keyed by the examples' tokens, so any subset of examples gets
    the rows the engine draws for them."""
    keys = row_keys(task.tokens)
    return sample_tree(root, feature_classes(task.features, keys), examples, keys[examples], seed, task.n_ctx)


class CleanRows:
    """Components' clean outputs on single dataset rows, memoised, and the ``phi`` fits over the dataset."""

    def __init__(self, model: Decomposed, task: Task):
        self.model, self.task = model, task
        self.memo: dict[tuple[Component, int], torch.Tensor] = {}
        self.fits: dict[tuple[Component, str], torch.Tensor] = {}

    def __call__(self, c: Component, row: int) -> torch.Tensor:
        """``c``'s output ``[pos, d_model]`` (the logits ``[pos, vocab]`` for the output) with every path on ``row``."""
        if (c, row) not in self.memo:
            tokens = self.task.tokens[row][None]  # [1, pos]
            if c.kind == "embed":
                value = self.model.embed(tokens)[0]
            elif c.kind == "pos":
                value = self.model.pos_embed(tokens)[0]
            else:
                resid = self.model.bias(c) + sum(self(s, row) for s in self.model.senders(c))  # [pos, d_model]
                value = apply(self.model, c, dict.fromkeys(c.inputs, resid), self.key_mask(row))
            self.memo[(c, row)] = value
        return self.memo[(c, row)]

    def key_mask(self, row: int) -> torch.Tensor | None:
        """Which keys of ``row`` may be attended to ``[1, pos]`` (None when the task has no mask)."""
        return None if self.task.key_mask is None else self.task.key_mask[row][None]

    def fit(self, c: Component, feature: str) -> torch.Tensor:
        """Least-squares direction ``[pos, d_model]`` of ``c``'s clean output on the per-row ``feature``
        over the whole dataset, without intercept: output ~ v_pos * feature."""
        if (c, feature) not in self.fits:
            outputs = torch.stack([self(c, row) for row in range(len(self.task.tokens))]).double()  # [n, pos, d_model]
            f = self.task.features[feature].to(outputs.device, torch.double)  # [n]
            self.fits[(c, feature)] = (torch.einsum("n,npd->pd", f, outputs) / (f @ f).clamp(min=1e-12)).float()
        return self.fits[(c, feature)]


def apply(model: Decomposed, c: Component, inputs: dict[str, torch.Tensor], key_mask: torch.Tensor | None):
    """Component ``c`` on one example's residual inputs ``{kind: [pos, d_model]}``: its output
    ``[pos, d_model]`` (without its output bias) or, for the output, the logits ``[pos, vocab]``;
    a head masks keys with ``key_mask [1, pos]``."""
    if c.kind == "head":
        q, k, v = (inputs[kind][None, None] for kind in ("q", "k", "v"))  # [1, 1, pos, d_model]
        return model.heads(c.layer, [c.head], q, k, v, key_mask)[0, 0]
    if c.kind == "mlp":
        return model.mlp(c.layer, inputs["in"][None])[0]
    return model.unembed(inputs["in"][None])[0]


def evaluate(model: Decomposed, tree: Tree, root: Resolved, rows: dict, clean: CleanRows, i: int) -> torch.Tensor:
    """The scrubbed logits ``[pos, vocab]`` of reference example ``i`` (an index into ``rows``)."""
    n_ctx = clean.task.n_ctx
    values: dict[tuple[Component, int], torch.Tensor] = {}  # this example's (component, node index) -> output

    def value(c: Component, node: Resolved) -> torch.Tensor:  # c's output, c a site of node
        if (c, node.index) not in values:  # every path reaches it again: compute it once per example
            values[(c, node.index)] = compute(c, node)
        return values[(c, node.index)]

    def compute(c: Component, node: Resolved) -> torch.Tensor:
        row = int(rows[(node.index, 0)][i])
        if c.kind in ("embed", "pos"):  # no inputs: a function of the node's row
            return clean(c, row)
        if node.node.phi is not None:  # the fit on the node's row, the residual on its rest row
            rest = int(rows[(node.index, 1)][i])
            f = clean.task.features[node.node.phi].float()
            return clean(c, rest) + (f[row] - f[rest]) * clean.fit(c, node.node.phi)
        if node.leaf:
            return clean(c, row)
        inputs = {}
        for kind in c.inputs:
            x = model.bias(c).expand(n_ctx, -1).clone()  # [pos, d_model]
            for term in tree[(node.index, c, kind)]:
                at = slice(None) if term.positions is None else list(term.positions)
                x[at] += term_value(term)[at]
            inputs[kind] = x
        return apply(model, c, inputs, clean.key_mask(row))

    def term_value(term: Term) -> torch.Tensor:
        if term.how == "self":
            return value(term.sender, term.node)
        if term.how == "rest":
            return clean(term.sender, int(rows[(term.node.index, 1)][i]))
        # "child": the path runs in the child that claims it
        if term.node.per_position:  # the child drew one row per position
            return torch.stack([clean(term.sender, int(r))[p] for p, r in enumerate(rows[(term.node.index, 0)][i])])
        return value(term.sender, term.node)

    return value(model.output, root)


@torch.no_grad()
def reference_logits(
    model, hypothesis: Hypothesis, task: Task, seed: int = 0, examples: torch.Tensor | None = None
) -> torch.Tensor:
    """Scrubbed logits ``[n, pos, vocab]`` of ``hypothesis`` for the reference examples ``examples [n]``
    (dataset rows; default every row), by the plain recursion. With the same ``seed`` these are the
    logits ``Scrubber(model, task, seed).logits(hypothesis)`` gives for those rows."""
    model = model if isinstance(model, Decomposed) else Decomposed(model)
    examples = torch.arange(len(task.tokens)) if examples is None else torch.as_tensor(examples)
    root = validate(hypothesis, model, task.features, task.n_ctx)
    tree = treeify(model, root, task.n_ctx)  # 1. where every path runs
    rows = sample(root, task, seed, examples)  # 2. which input each node runs on
    clean = CleanRows(model, task)
    return torch.stack([evaluate(model, tree, root, rows, clean, i) for i in range(len(examples))])  # 3.
