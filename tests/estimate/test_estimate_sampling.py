"""Monte Carlo streaming, ground-truth cache and resume, bad input."""

import math

import pytest
import torch

import probity.estimate.sampling as sampling
from probity.estimate import RandomMLP, ground_truth, kprop, monte_carlo


def test_streaming_matches_one_batch():
    mlp = RandomMLP(6, 2, "tanh", seed=0)
    one = monte_carlo(mlp, 3000, batch=3000, generator=torch.Generator().manual_seed(1))
    many = monte_carlo(mlp, 3000, batch=128, generator=torch.Generator().manual_seed(1))
    for a, b in zip(one.act_mean + one.act_var + [one.out_mean], many.act_mean + many.act_var + [many.out_mean]):
        assert torch.allclose(a, b, atol=1e-6)
    x = torch.randn(3000, 6, generator=torch.Generator().manual_seed(1))
    _, act, out = mlp.forward(x.double())
    assert torch.allclose(one.out_mean, out.mean(0), atol=1e-5)
    assert torch.allclose(one.act_var[1], act[1].var(0), atol=1e-5)


def test_ground_truth_resumes_after_kill(tmp_path, monkeypatch):
    """A run killed after two chunks resumes from its checkpoint and equals an uninterrupted run."""
    monkeypatch.setattr(sampling, "CHUNK", 1000)
    mlp = RandomMLP(5, 2, "relu", seed=0)
    clean = ground_truth(mlp, 5500, cache_dir=tmp_path / "clean", progress=False)

    real, calls = sampling._sample_into, {"n": 0}

    def dying(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(sampling, "_sample_into", dying)
    with pytest.raises(KeyboardInterrupt):
        ground_truth(mlp, 5500, cache_dir=tmp_path / "killed", progress=False)
    assert len(list((tmp_path / "killed").glob("*.partial.pt"))) == 1
    monkeypatch.setattr(sampling, "_sample_into", real)
    resumed = ground_truth(mlp, 5500, cache_dir=tmp_path / "killed", progress=False)
    assert resumed.n_samples == 5500
    assert torch.allclose(resumed.out_mean, clean.out_mean, atol=1e-12)
    assert torch.allclose(resumed.out_var, clean.out_var, atol=1e-12)
    assert not list((tmp_path / "killed").glob("*.partial.pt"))
    # Cached: a second call reads the file instead of sampling.
    monkeypatch.setattr(sampling, "_sample_into", dying)
    calls["n"] = 2
    assert torch.equal(
        ground_truth(mlp, 5500, cache_dir=tmp_path / "killed", progress=False).out_mean, resumed.out_mean
    )


def test_random_mlp_conventions():
    """He init keeps pre-activation second moments near 1; seeds reproduce; user weights load."""
    a = RandomMLP(256, 3, "relu", seed=7)
    assert all(torch.equal(x, y) for x, y in zip(a.weights, RandomMLP(256, 3, "relu", seed=7).weights))
    assert not torch.equal(a.weights[0], RandomMLP(256, 3, "relu", seed=8).weights[0])
    assert len(a.weights) == 4 and a.hidden_layers == 3
    assert abs(a.weights[0].var().item() * 256 - 1) < 0.02 and abs(a.weights[1].var().item() * 256 - 2) < 0.04
    est = kprop(a, order=2)
    for mean, var in zip(est.pre, est.pre_var):
        assert 0.85 < (var + mean**2).mean() < 1.15
    b = RandomMLP.from_weights([w.tolist() for w in a.weights], "relu")
    assert torch.equal(kprop(b, 1).out, kprop(a, 1).out)
    crit = RandomMLP(64, 2, "tanh", init="critical", seed=0)
    assert crit.biases[0] is not None  # tanh at q*=1 needs bias variance to sit at the edge of chaos


def _with_inf_weight(mlp):
    mlp.weights[1] = torch.full_like(mlp.weights[1], math.inf)
    return mlp


def test_constructor_draws_reproducible_networks_in_the_issue_spelling():
    a, b = RandomMLP(64, 4, "relu", init="he", bias=False, seed=3), RandomMLP(64, 4, "relu", seed=3)
    assert (a.width, a.hidden_layers, len(a.weights)) == (64, 4, 5)
    assert all(torch.equal(x, y) for x, y in zip(a.weights, b.weights))
    assert not torch.equal(a.weights[0], RandomMLP(64, 4, "relu", seed=4).weights[0])


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: RandomMLP(0, 2), "width"),
        (lambda: RandomMLP(8, 2, "swish"), "unknown activation"),
        (lambda: RandomMLP(8, 2, init="xavier"), "unknown init"),
        (lambda: kprop(RandomMLP(8, 2), order=5), "order must be one of"),
        (lambda: kprop(RandomMLP(8, 2), order=2, variant="fancy"), "variant must be one of"),
        (lambda: RandomMLP.from_weights([torch.full((3, 3), math.nan)]), "NaN or inf"),
        (lambda: kprop(_with_inf_weight(RandomMLP(3, 1)), 1), "NaN or inf"),
        (lambda: RandomMLP([torch.eye(3)], 1), "RandomMLP.from_weights"),
        (lambda: RandomMLP.from_weights([torch.ones(3)]), "pass \\(n, n\\) matrices"),
        (lambda: RandomMLP.from_weights([torch.eye(3), torch.ones(3, 4)]), "square"),
        (lambda: monte_carlo(RandomMLP(8, 1), 1), "n_samples"),
        (lambda: kprop(RandomMLP(8, 1), 2, series_order=0), "series_order"),
    ],
)
def test_bad_input_one_line_errors(call, message):
    with pytest.raises(ValueError, match=message) as info:
        call()
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: kprop([torch.eye(3)], 1), "RandomMLP.from_weights"),
        (lambda: monte_carlo(torch.eye(3), 10), "RandomMLP.from_weights"),
        (lambda: ground_truth(None, 10), "RandomMLP.from_weights"),
    ],
)
def test_non_mlp_input_gets_a_one_line_type_error(call, message):
    with pytest.raises(TypeError, match=message) as info:
        call()
    assert "\n" not in str(info.value)
