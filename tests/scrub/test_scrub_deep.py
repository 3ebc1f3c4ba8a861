"""The compiled engine on a deep model (8 layers of a tiny Llama): it must equal the plain recursion
(reference.py) on hypotheses whose root claims most of the model above the heads -- what a deep model
needs, and where the clean terms of one input are gathered as one residual-stream sum minus the senders
outside it -- and its plan must grow linearly, not exponentially, with depth."""

import pytest
import torch

from probity.models import tiny
from probity.scrub import engine
from probity.scrub.hypothesis import Hypothesis, Node, validate
from probity.scrub.model import Decomposed
from probity.scrub.reference import reference_logits
from probity.scrub.run import Scrubber
from probity.scrub.task import Task

LAYERS, N_CTX = 8, 6


@pytest.fixture(scope="module")
def deep():
    """A random 8-layer Llama (4 heads in 2 K/V groups, gated MLPs) as residual components, and 24 rows of
    random tokens with next-token targets."""
    model, _ = tiny("llama", seed=2, num_hidden_layers=LAYERS)
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(4, 120, (24, N_CTX), generator=g)
    mask = torch.zeros_like(tokens, dtype=torch.bool)
    mask[:, :-1] = True
    feats = {"first": tokens[:, 0] % 3, "parity": tokens.sum(1) % 2}
    return Decomposed(model), Task("next", tokens, torch.roll(tokens, -1, 1), mask, feats)


def above(d: Decomposed, named: list[str], lowest: str) -> list[str]:
    """Every component above ``lowest`` (later in the residual stream), except the ``named`` ones."""
    low, skip = d.component(lowest), {d.component(s) for s in named}
    return [c.name for c in d.components if c > low and c not in skip]


def hypotheses(d: Decomposed) -> dict[str, Node]:
    ind, prev = ["3.1", "5.2", "5.0"], ["1.3", "4.2"]
    split = [
        Node("v", ["embed", "mlp0"], via="v", feature="first"),
        Node("qk", ["*"], via=["q", "k"], feature="parity"),
    ]
    return {
        # the induction-study shape: the root recomputes everything above the lowest named head
        "root above, split q/k/v": Node(
            "out", ["output", *above(d, ind, "3.1")], rest="self", children=[Node("ind", ind, children=split)]
        ),
        # keep only the named heads: every other path on a random input (rest sets topped by head 4.1,
        # below the root's 4.3: the gather's residual stream must be mlp4's, not head 4.2's)
        "keep only": Node("out", ["output", *above(d, ind + prev, "4.1")], children=[Node("heads", ind + prev)]),
        "prev->K under a resampled root": Node(
            "out",
            ["output", *above(d, ind + ["4.2"], "3.1")],
            rest="first",
            children=[
                Node(
                    "ind",
                    ind,
                    feature="parity",
                    rest="first",
                    children=[Node("prev", prev, via="k"), Node("q", ["embed"], via="q", feature="none")],
                ),
                Node("p42", ["4.2"], feature="first", children=[Node("e", ["embed", "2.0", "2.1"], via="v")]),
            ],
        ),
        # leaf children at some positions only, beside whole-input groups
        "positions": Node(
            "out",
            ["output", "mlp7", "mlp6", "7.0", "7.3"],
            rest="parity",
            children=[
                Node("early", ["5.1", "mlp5", "4.0"], positions=[0, 1, 2], feature="first"),
                Node("late", ["6.2", "3.3"], feature="none"),
            ],
        ),
    }


@pytest.mark.parametrize(
    "name", ["root above, split q/k/v", "keep only", "prev->K under a resampled root", "positions"]
)
def test_engine_equals_reference_on_a_deep_model(deep, name, one_thread):
    d, task = deep
    hyp = Hypothesis(name, hypotheses(d)[name])
    fast = torch.cat([lg for _, lg in Scrubber(d, task, seed=5, batch_size=7).logits(hyp)])
    examples = torch.tensor([0, 11, 23])
    plain = reference_logits(d, hyp, task, seed=5, examples=examples)
    torch.testing.assert_close(fast[examples], plain, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(fast, d.run(task.tokens)[0], atol=1e-3)  # the hypothesis did scrub something


def test_plan_is_linear_in_depth():
    """A root claiming every component of a 24-layer model: every (component, node) output and every
    (component, input kind, node) input is one expression, and the clean gathers are few."""
    model, _ = tiny("llama", num_hidden_layers=24)
    d = Decomposed(model)
    everything = [c.name for c in d.components if c.kind != "embed"]
    hyp = Hypothesis("all", Node("out", ["output", *everything], children=[Node("e", ["embed"], feature="none")]))
    root = validate(hyp, d, {}, N_CTX)
    plan = engine.compile_plan(d, root, N_CTX)
    seen, stack = set(), [plan]
    while stack:
        e = stack.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, engine.Sum):
            stack += [p for p, _ in e.parts]
        elif isinstance(e, engine.Head):
            stack += [e.q, e.k, e.v]
        elif isinstance(e, (engine.Mlp, engine.Unembed)):
            stack.append(e.x)
    components, nodes = len(d.components) + 1, 2
    assert len(seen) <= 4 * components * nodes
    assert len(engine.gather_targets(plan)) <= 2


def test_clean_forward_stops_at_what_the_targets_need(deep):
    """``run(upto=)`` computes only the components below ``upto`` and no logits; ``streams`` holds each
    receiver's input read off the running stream: the sum of its senders' outputs."""
    d, task = deep
    tokens = task.tokens[:5]
    _, full = d.run(tokens)
    into = [d.component(s) for s in ("3.1", "mlp2", "embed")] + [d.output]
    streams = dict.fromkeys(into[:2])
    logits, outs = d.run(tokens, upto=d.component("3.0"), streams=streams)
    assert logits is None and set(outs) == {c for c in d.components if d.below(d.component("3.0"), c)}
    for c, out in outs.items():
        torch.testing.assert_close(out, full[c], atol=1e-6, rtol=1e-6)
    for c, stream in streams.items():
        torch.testing.assert_close(stream, sum(full[s] for s in d.senders(c)), atol=1e-5, rtol=1e-5)
    cache = engine.CleanCache(d, tokens, {(into[0], True), (into[1], False)})
    assert (cache.upto.layer, cache.upto.order) == (3, 0)  # head 3.1's input: everything below layer 3
    assert engine.CleanCache(d, tokens, {(into[2], False), (into[3], True)}, enabled=False).upto == d.output


def test_heads_of_a_layer_share_their_input_and_inputs_build_on_smaller_ones(deep):
    """In the root above the heads, every head of a layer reads one shared input (one ``Sum``, so one
    grouped head call), and each input high in the stream extends a smaller one by the terms in between."""
    d, task = deep
    root = validate(Hypothesis("a", hypotheses(d)["root above, split q/k/v"]), d, task.features, N_CTX)
    every = engine.expressions(engine.compile_plan(d, root, N_CTX))
    layer6 = [e for e in every if isinstance(e, engine.Head) and e.component.layer == 6]
    assert len(layer6) == 4 and len({id(h.q) for h in layer6}) == 1 and layer6[0].q is layer6[0].k
    sums = [e for e in every if isinstance(e, engine.Sum)]
    bases = engine._sum_bases(sums)
    top = next(e for e in sums if e.receiver == d.output)
    base, extra = bases[id(top)]
    assert base.receiver == d.component("mlp7") and len(extra) < len(top.parts) - 2


def test_logits_at_the_loss_positions_only(deep):
    """``positions`` unembeds only where the loss reads: the same logits there, the same losses."""
    d, task = deep
    hyp = Hypothesis("a", hypotheses(d)["root above, split q/k/v"])
    s = Scrubber(d, task, seed=5, batch_size=7)
    at = task.loss_positions
    assert at.tolist() == list(range(N_CTX - 1))
    full = torch.cat([lg for _, lg in s.logits(hyp)])
    only = torch.cat([lg for _, lg in s.logits(hyp, positions=at)])
    torch.testing.assert_close(only, full[:, at], atol=1e-5, rtol=1e-5)
    rows = torch.arange(len(task.tokens))
    torch.testing.assert_close(s.losses(hyp)[0], task.per_example_loss(full, rows), atol=1e-5, rtol=1e-5)
