"""Scrubbing models whose answer is known in closed form or by construction."""

import pytest
import torch

from probity.organisms import _native
from probity.scrub import Hypothesis, Node, Scrubber, Task, scrub
from probity.scrub.reference import reference_logits


def _agrees_with_reference(model, task, hyp, seed: int, n: int = 8) -> None:
    """The engine's scrubbed logits of the first ``n`` references equal the plain recursion's."""
    fast = torch.cat([lg for _, lg in Scrubber(model, task, seed=seed).logits(hyp)])[:n]
    torch.testing.assert_close(reference_logits(model, hyp, task, seed, torch.arange(n)), fast, atol=1e-5, rtol=1e-5)


def _blank(**cfg):
    base = dict(
        n_layers=1,
        attn_only=True,
        normalization_type=None,
        attention_dir="bidirectional",
        positional_embedding_type="standard",
    )
    model = _native.native_model({**base, **cfg})
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    return model


def test_sampler_agrees_with_parent_and_is_uniform_within_class():
    from scipy.stats import chisquare

    n = 600
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 5, (n, 6), generator=g)
    cls = tokens[:, 0] % 3
    task = Task(
        "t", tokens, torch.zeros_like(tokens), torch.ones_like(tokens, dtype=torch.bool), {"c": cls, "tok": tokens}
    )
    s = Scrubber(_blank(d_model=4, d_head=4, n_heads=1, n_ctx=6, d_vocab=5), task)
    hyp = Hypothesis(
        "h", Node("out", ["output"], children=[Node("a", ["0.0"], feature="c"), Node("p", ["embed"], feature="tok")])
    )
    root, rows = s.sample(hyp)
    a, p = rows[(1, 0)], rows[(2, 0)]
    assert torch.equal(cls[a], cls)  # every child agrees with its parent on its feature
    assert torch.equal(tokens[p, torch.arange(6)], tokens)  # per position: agrees at that position
    # uniform within the class: counts of each row drawn for the references of class 0
    for value in range(3):
        members = (cls == value).nonzero()[:, 0]
        draws = torch.cat([Scrubber(s.model, task, seed=k).sample(hyp)[1][(1, 0)][members] for k in range(6)])
        counts = torch.bincount(draws, minlength=n)[members].double()
        assert chisquare(counts.numpy()).pvalue > 1e-3
    # the rest input is an unconditional draw: uniform over all rows
    rest = torch.cat([Scrubber(s.model, task, seed=k).sample(hyp)[1][(0, 1)] for k in range(5)])
    assert chisquare(torch.bincount(rest, minlength=n).double().numpy()).pvalue > 1e-3


P, K, W = 4, 6, torch.tensor([3.0, -1.0, 2.0, 0.5])


def _linear(n: int, seed: int = 1):
    """y = (1/P) sum_i w_i x_i read at position 0 (uniform attention) and ``n`` rows of inputs."""
    model = _blank(d_model=2, d_head=1, n_heads=1, n_ctx=P, d_vocab=P * K, d_vocab_out=1)
    with torch.no_grad():
        values = torch.arange(K).float()
        model.tok_embed.weight[:, 0] = (W[:, None] * values[None, :]).reshape(-1)  # token p*K+v at position p
        model.layers[0].attn.v.weight[0, 0] = 1.0
        model.layers[0].attn.o.weight[1, 0] = 1.0
        model.head.weight[0, 1] = 1.0
    g = torch.Generator().manual_seed(seed)
    v = torch.randint(0, K, (n, P), generator=g) ** torch.tensor([1, 1, 2, 1])  # unequal variances
    v = v.clamp(max=K - 1)
    tokens = v + torch.arange(P) * K
    targets = torch.zeros(n, P)
    targets[:, 0] = (W * v.float()).sum(1) / P
    mask = torch.zeros(n, P, dtype=torch.bool)
    mask[:, 0] = True
    return model, Task("linear", tokens, targets, mask, {}, loss_kind="mse"), v.float().var(0, unbiased=False)


def _drop(i: int) -> Hypothesis:
    keep = [p for p in range(P) if p != i]
    return Hypothesis(
        f"drop{i}",
        Node(
            "out",
            ["output"],
            children=[
                Node(
                    "head",
                    ["0.0"],
                    children=[
                        Node("others", ["embed", "pos"], via=["v"], positions=keep),
                        Node("qk", ["*"], via=["q", "k"]),
                    ],
                )
            ],
        ),
    )


def test_linear_model_matches_the_closed_form():
    """Scrubbing input i adds 2 (w_i/P)^2 Var(x_i) to the MSE, and resampling everything adds the sum over i."""
    model, task, var = _linear(4000)
    w = W
    expected_all = float((2 * (w / P) ** 2 * var).sum())
    for i in range(P):
        r = scrub(model, task, _drop(i), seed=i, per_node=False)
        expected = float(2 * (w[i] / P) ** 2 * var[i])
        assert r.loss_model < 1e-8
        assert r.loss_hypothesis == pytest.approx(expected, rel=0.08)
        assert r.loss_scrubbed_all == pytest.approx(expected_all, rel=0.08)
        assert r.loss_recovered == pytest.approx(1 - expected / expected_all, abs=3 * r.stderr + 0.01)
        _agrees_with_reference(model, task, _drop(i), seed=i)


def test_whole_experiment_stderr_matches_the_spread_over_seeds():
    """A seed draws a new dataset (references and pool) and new trees; the whole-experiment bootstrap
    on one seed should predict the spread of the loss recovered over many seeds."""
    from probity.scrub.run import experiment_stderr

    values = []
    for seed in range(40):
        model, task, _ = _linear(150, seed=100 + seed)
        values.append(scrub(model, task, _drop(2), seed=seed, per_node=False).loss_recovered)
    spread = float(torch.tensor(values).std())
    model, task, _ = _linear(150, seed=100)
    predicted = experiment_stderr(model, task, _drop(2), seed=0, replicates=40)
    assert 0.6 < predicted / spread < 1.6, (predicted, spread)


@pytest.fixture(scope="module")
def copier():
    """Head 0.0 copies the token at position 1 to position 0 (attention set by positions only);
    head 0.1 attends to position 2 but writes nothing. Label: the token at position 1."""
    V, P, big = 4, 3, 30.0
    model = _blank(d_model=V + P + V, d_head=V, n_heads=2, n_ctx=P, d_vocab=V, d_vocab_out=V)
    attn = model.layers[0].attn
    with torch.no_grad():
        model.tok_embed.weight[:, :V] = torch.eye(V)
        model.pos.weight[:, V : V + P] = torch.eye(P)
        for h, target in ((0, 1), (1, 2)):
            attn.q.weight[h * V, V + 0] = big  # query from position 0
            attn.k.weight[h * V, V + target] = 1.0  # key at the target position
        attn.v.weight[:V, :V] = torch.eye(V)  # head 0 values: the token
        attn.o.weight[V + P :, :V] = 10 * torch.eye(V)  # head 0 writes the token into the output dims
        model.head.weight[:, V + P :] = torch.eye(V)
    g = torch.Generator().manual_seed(2)
    tokens = torch.randint(0, V, (1500, P), generator=g)
    targets = torch.zeros_like(tokens)
    targets[:, 0] = tokens[:, 1]
    mask = torch.zeros_like(tokens, dtype=torch.bool)
    mask[:, 0] = True
    task = Task("copy", tokens, targets, mask, {"tok1": tokens[:, 1], "tok2": tokens[:, 2]})
    return model, task


@pytest.mark.parametrize(
    "name, children, low, high",
    [
        ("right feature", [Node("h", ["0.0"], feature="tok1")], 0.999, 1.001),
        ("wrong feature", [Node("h", ["0.0"], feature="tok2")], -0.06, 0.06),
        ("values from embeddings", [Node("h", ["0.0"], children=[Node("e", ["embed"], via=["v"])])], 0.999, 1.001),
        (
            "only queries and keys",
            [Node("h", ["0.0"], children=[Node("e", ["embed", "pos"], via=["q", "k"])])],
            -0.06,
            0.06,
        ),
        ("the idle head", [Node("h", ["0.1"])], -0.06, 0.06),
    ],
)
def test_hand_built_copier_gives_the_known_answer(copier, name, children, low, high):
    model, task = copier
    hyp = Hypothesis(name, Node("out", ["output"], children=children))
    r = scrub(model, task, hyp, seed=0, per_node=False)
    assert r.loss_model < 0.01 < r.loss_scrubbed_all
    assert low <= r.loss_recovered <= high, (name, r.loss_recovered)
    _agrees_with_reference(model, task, hyp, seed=0)
