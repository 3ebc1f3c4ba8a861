"""The fast evaluator against the plain recursion (reference.py) on hand-made hypotheses that use every
feature of the format, and the scrubbing invariants."""

import pytest
import torch

from probity.scrub import engine
from probity.scrub.hypothesis import Hypothesis, Node
from probity.scrub.reference import reference_logits
from probity.scrub.run import EMPTY, IDENTITY, Scrubber, scrub
from probity.scrub.task import Task

BANK = {
    "leaf_heads": Node("out", ["output"], children=[Node("a", ["1.0", "1.1"], feature="first")]),
    "nested_qkv": Node(
        "out",
        ["output", "mlp1"],
        rest="self",
        children=[
            Node(
                "h10",
                ["1.0"],
                feature="parity",
                rest="first",
                children=[
                    Node("q", ["0.1", "embed"], via="q", feature="first"),
                    Node("kv", ["mlp0"], via=["k", "v"], feature="none"),
                ],
            ),
            Node("h11", ["1.1"], feature="identity", children=[Node("e", ["pos", "embed"], via="v")]),
        ],
    ),
    "positions": Node(
        "out",
        ["output"],
        children=[
            Node("early", ["*"], positions=[0, 1], feature="parity"),
            Node(
                "late",
                ["1.0", "1.1", "mlp1"],
                positions=[3, 5],
                feature="first",
                children=[Node("deep", ["0.0"], feature="none", positions=[2])],
            ),
        ],
    ),
    "phi": Node(
        "out",
        ["output"],
        children=[
            Node(
                "h11",
                ["1.1"],
                feature="first",
                children=[
                    Node("fit", ["0.0", "mlp0"], feature="parity", positions=[1, 2], phi="first"),
                    Node("e", ["embed"], via="v", feature="none"),
                ],
            ),
            Node("fit10", ["1.0"], feature="parity", rest="first", phi="big_rows"),
        ],
    ),
    "per_position": Node(
        "out",
        ["output", "1.1"],
        children=[
            Node("tokv", ["0.0", "0.1", "embed", "mlp0"], via="v", feature="tok"),
            Node("direct", ["mlp1", "1.0"], feature="big"),
        ],
    ),
}


def padded(task: Task) -> Task:
    """``task`` with rows of random lengths 2-6: the positions past each row's length masked out of attention."""
    lengths = torch.randint(2, 7, (len(task.tokens), 1), generator=torch.Generator().manual_seed(1))
    return Task(
        task.name,
        task.tokens,
        task.targets,
        task.loss_mask,
        task.features,
        task.subsets,
        task.loss_kind,
        torch.arange(task.n_ctx)[None] < lengths,
    )


@pytest.mark.parametrize("pad", [False, True], ids=["unpadded", "padded"])
@pytest.mark.parametrize("name", sorted(BANK))
def test_fast_path_equals_reference(tiny_model, tiny_task, name, pad):
    task = padded(tiny_task) if pad else tiny_task
    s = Scrubber(tiny_model, task, seed=5, batch_size=7)
    hyp = Hypothesis(name, BANK[name])
    fast = torch.cat([lg for _, lg in s.logits(hyp)])
    examples = torch.tensor([0, 17, 42, 63])
    plain = reference_logits(tiny_model, hyp, task, seed=5, examples=examples)
    torch.testing.assert_close(fast[examples], plain, atol=1e-5, rtol=1e-5)
    if pad:  # the mask is used: without it the same trees give other logits
        unmasked = Scrubber(tiny_model, tiny_task, seed=5, batch_size=7)
        assert not torch.allclose(torch.cat([lg for _, lg in unmasked.logits(hyp)]), fast, atol=1e-3)


def test_identity_is_the_model_and_empty_is_fully_scrubbed(tiny_model, tiny_task):
    s = Scrubber(tiny_model, tiny_task, seed=1)
    logits, _ = tiny_model.run(tiny_task.tokens)
    l_model = tiny_task.per_example_loss(logits, torch.arange(64))
    assert torch.equal(s.losses(IDENTITY)[0], l_model)
    # L_all: the root resampled unconditionally, all paths on one uniformly drawn row
    root, rows = s.sample(EMPTY)
    other = rows[(0, 0)]
    assert not torch.equal(other, torch.arange(64))
    assert torch.equal(s.losses(EMPTY)[0], tiny_task.per_example_loss(logits[other], torch.arange(64)))
    r = scrub(tiny_model, tiny_task, EMPTY, seed=1, per_node=False)
    assert r.loss_recovered == 0.0 and r.loss_hypothesis == r.loss_scrubbed_all
    assert scrub(tiny_model, tiny_task, IDENTITY, seed=1, per_node=False).loss_recovered == 1.0


@pytest.mark.parametrize("pad", [False, True], ids=["unpadded", "padded"])
def test_invariant_to_row_order_batch_size_and_caching(tiny_model, tiny_task, pad):
    t = padded(tiny_task) if pad else tiny_task
    hyp = Hypothesis("n", BANK["nested_qkv"])
    base = Scrubber(tiny_model, t, seed=2, batch_size=64).losses(hyp)[0]
    for kwargs in (dict(batch_size=5), dict(batch_size=32, cache=False)):
        torch.testing.assert_close(Scrubber(tiny_model, t, seed=2, **kwargs).losses(hyp)[0], base, atol=1e-5, rtol=1e-5)
    perm = torch.randperm(64, generator=torch.Generator().manual_seed(9))
    shuffled = t.select(perm)
    torch.testing.assert_close(Scrubber(tiny_model, shuffled, seed=2).losses(hyp)[0], base[perm], atol=1e-5, rtol=1e-5)
    other_seed = Scrubber(tiny_model, t, seed=3).losses(hyp)[0]
    assert not torch.allclose(other_seed, base)


def test_plan_shares_subtrees_and_gathers_clean_leaves(tiny_model, tiny_task):
    s = Scrubber(tiny_model, tiny_task)
    plan = engine.compile_plan(tiny_model, s.resolve(IDENTITY), 6)
    assert isinstance(plan, engine.Gather)  # identity: the clean logits, no forward pass
    hyp = Hypothesis("n", BANK["nested_qkv"])
    plan = engine.compile_plan(tiny_model, s.resolve(hyp), 6)
    # 1.1's q/k/v inputs coincide for q and k (only v is claimed): one shared expression
    head11 = next(p for p, _ in plan.x.parts if isinstance(p, engine.Head) and p.component.head == 1)
    assert head11.q is head11.k and head11.v is not head11.q
