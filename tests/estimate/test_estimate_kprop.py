"""kprop correctness: exactness where the math is exact, convergence in K, gradients."""

import math

import pytest
import torch
from scipy import integrate

from probity.estimate import (
    RandomMLP,
    derivative_expectations,
    gaussian_cumulants,
    ground_truth,
    monte_carlo,
    mse_over_var,
)
from probity.estimate.activations import ACTIVATIONS
from probity.estimate.estimators import count_flops
from probity.estimate.propagate import (
    _input_state,
    _linear,
    _nonlinear,
    _State,
    _Truncation,
    kprop,
    symmetric_product,
    third_pair_slice,
)
from probity.estimate.reference import _Dense, _layer, kprop_dense, third_tensor

SMOOTH = ["gelu", "tanh", "sigmoid"]


def _quad_mean(activation, mean, sd, power=lambda a: a):
    """E[power(phi(mean + sd Z))] by adaptive quadrature (split at phi's kink for ReLU)."""

    def f(z):
        phi = float(ACTIVATIONS[activation](torch.tensor(mean + sd * z, dtype=torch.float64)))
        return power(phi) * math.exp(-z * z / 2) / math.sqrt(2 * math.pi)

    return integrate.quad(f, -40, 40, epsabs=1e-13, epsrel=1e-13, limit=400, points=[-mean / sd])[0]


@pytest.mark.parametrize("activation", ["relu"] + SMOOTH)
def test_k1_exact_at_first_hidden_layer(activation):
    """Pre-activations of layer 1 are exactly Gaussian, so K=1 is exact there (1e-9)."""
    mlp = RandomMLP(12, 2, activation, seed=3, bias=True)
    est = kprop(mlp, order=1)
    w, b = mlp.weights[0], mlp.biases[0]
    sd = w.pow(2).sum(1).sqrt()
    exact = torch.tensor([_quad_mean(activation, float(b[i]), float(sd[i])) for i in range(12)], dtype=torch.float64)
    assert torch.allclose(est.pre[0], b, atol=1e-15)
    assert (est.act[0] - exact).abs().max() < 1e-9


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_derivative_expectations_match_quadrature(activation):
    """E[phi^(k)(z)] (closed form for ReLU, Hermite quadrature otherwise) vs finite differences of E[phi(z + h)]."""
    mean, var = torch.tensor([0.4, -1.1], dtype=torch.float64), torch.tensor([0.7, 1.9], dtype=torch.float64)
    D = derivative_expectations(activation, 1, mean, var, 3)
    for i in range(2):
        sd = math.sqrt(var[i])
        h = 1e-3
        m = [_quad_mean(activation, float(mean[i]) + j * h, sd) for j in (-2, -1, 0, 1, 2)]
        fd1 = (m[3] - m[1]) / (2 * h)
        fd2 = (m[3] - 2 * m[2] + m[1]) / h**2
        fd3 = (m[4] - 2 * m[3] + 2 * m[1] - m[0]) / (2 * h**3)
        assert abs(D[0, i] - m[2]) < 1e-10
        assert abs(D[1, i] - fd1) < 1e-6 and abs(D[2, i] - fd2) < 1e-5 and abs(D[3, i] - fd3) < 1e-3


@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_k2_covariance_exact_for_gaussian_input(activation):
    """Mehler covariance of phi(z) for Gaussian z (width 8) agrees with 10^6 samples within noise."""
    g = torch.Generator().manual_seed(0)
    L = torch.randn(8, 8, generator=g, dtype=torch.float64) / math.sqrt(8)
    S = L @ L.T + 0.3 * torch.eye(8, dtype=torch.float64)
    mu = 0.5 * torch.randn(8, generator=g, dtype=torch.float64)
    a = _nonlinear(_State(mu, S), activation, _Truncation(2, augment=False), terms=12)
    z = mu + torch.randn(1_000_000, 8, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(S).T
    y = ACTIVATIONS[activation](z)
    yc = y - y.mean(0)
    C = yc.T @ yc / (len(y) - 1)
    # standard error of a sample covariance entry: sqrt(Var((y_i - m_i)(y_j - m_j)) / N)
    prods = torch.einsum("ni,nj->ij", yc**2, yc**2) / len(y) - C**2
    se = (prods / len(y)).sqrt()
    zscores = (a.cov - C) / se
    assert zscores.abs().max() < 5, zscores.abs().max()
    assert (a.mean - y.mean(0)).abs().max() < 5 * (y.var(0) / len(y)).sqrt().max()


def test_k2_two_layer_network_within_noise():
    """Width 8, 2 hidden layers: K=2's variance of the second pre-activation (exact, since
    layer-1 pre-activations are Gaussian) agrees with 10^6 samples; K=1's diagonal one does not."""
    mlp = RandomMLP(8, 2, "relu", seed=1)
    stats = monte_carlo(mlp, 1_000_000, generator=torch.Generator().manual_seed(5))
    N = stats.n_samples
    k2, k1 = kprop(mlp, order=2), kprop(mlp, order=1)
    # Var of a sample variance ~ 2 var^2 / N for near-Gaussian z; allow for kurtosis with 5 sigma of 2x that.
    se_var = (4 * stats.pre_var[1] ** 2 / N).sqrt()
    assert ((k2.pre_var[1] - stats.pre_var[1]).abs() / se_var).max() < 5
    assert ((k1.pre_var[1] - stats.pre_var[1]).abs() / se_var).max() > 10
    se_mean = (stats.pre_var[1] / N).sqrt()
    assert ((k2.pre[1] - stats.pre_mean[1]).abs() / se_mean).max() < 5


def test_error_falls_with_order(tmp_path):
    """At width 32, 4 hidden layers: MSE/Var(K=3) < MSE/Var(K=2) / 2 and MSE/Var(K=2) < MSE/Var(K=1) / 2,
    for either variant; the augment variant (more cumulant terms) beats simple at K=2."""
    mlp = RandomMLP(32, 4, "relu", seed=0)
    gt = ground_truth(mlp, 10**6, cache_dir=tmp_path, out_only=True, progress=False)
    mse = {
        (K, v): mse_over_var(kprop(mlp, K, v).out, gt.out_mean, gt.out_var, gt.n_samples)
        for K in (1, 2, 3)
        for v in ("simple", "augment")
    }
    for v in ("simple", "augment"):
        assert mse[3, v] < mse[2, v] / 2 and mse[2, v] < mse[1, v] / 2, mse
    assert mse[2, "augment"] < mse[2, "simple"], mse


@pytest.mark.parametrize(
    "order,variant,activation",
    [
        (1, "augment", "relu"),
        (2, "simple", "gelu"),
        (2, "augment", "relu"),
        (3, "augment", "relu"),
        (3, "augment", "gelu"),
        (3, "simple", "tanh"),
    ],
)
def test_gradients_match_finite_differences(order, variant, activation):
    """The estimate is differentiable in the weights: autograd == central differences."""
    base = RandomMLP(5, 2, activation, seed=2)
    r = torch.randn(5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    def f(*ws):
        return (kprop(RandomMLP.from_weights(list(ws), activation, base.biases), order, variant).out * r).sum()

    ws = tuple(w.clone().requires_grad_(True) for w in base.weights)
    assert torch.autograd.gradcheck(f, ws, eps=1e-6, atol=1e-6, rtol=1e-4)


def test_edgeworth_stays_perturbative_on_narrow_networks(tmp_path):
    """At n=16 some neurons get standardised k4 ~ 75; clipping keeps K=3 better than K=1 there."""
    mlp = RandomMLP(16, 4, "relu", seed=4)
    gt = ground_truth(mlp, 10**6, cache_dir=tmp_path, out_only=True, progress=False)
    mse = {K: mse_over_var(kprop(mlp, K, "augment").out, gt.out_mean, gt.out_var, gt.n_samples) for K in (1, 3)}
    assert mse[3] < mse[1] / 3, mse


@pytest.mark.parametrize("activation", ["relu", "gelu", "tanh", "sigmoid", "silu", "softplus"])
def test_gaussian_cumulants_match_quadrature(activation):
    """Mean, variance, k3 and k4 of phi(z) (closed form for ReLU, Hermite otherwise) vs adaptive quadrature."""
    mean, var = torch.tensor([0.4, -1.1], dtype=torch.float64), torch.tensor([0.7, 1.9], dtype=torch.float64)
    got = gaussian_cumulants(activation, mean, var, 4)
    for i in range(2):
        m, sd = float(mean[i]), math.sqrt(var[i])
        mu = _quad_mean(activation, m, sd)
        central = [_quad_mean(activation, m, sd, power=lambda a, p=p, mu=mu: (a - mu) ** p) for p in (2, 3, 4)]
        want = [mu, central[0], central[1], central[2] - 3 * central[0] ** 2]
        for k, (g, w) in enumerate(zip(got, want)):
            assert abs(float(g[i]) - w) < 1e-8, (k + 1, float(g[i]), w)


@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_k3_factors_match_sampled_third_cumulant(activation):
    """K=3's factored third cumulant of phi(z), z Gaussian with correlations ~0.4 (star terms,
    (j,j,l) slab and diagonal, rebuilt as a full n^3 tensor), agrees with 10^6 samples;
    dropping the star terms is detectably wrong."""
    g = torch.Generator().manual_seed(0)
    n = 6
    L = torch.randn(n, n, generator=g, dtype=torch.float64)
    S = 0.4 * L @ L.T / n + 0.6 * torch.eye(n, dtype=torch.float64)
    mu = 0.3 * torch.randn(n, generator=g, dtype=torch.float64)
    state = _State(mu, S, k4=torch.zeros_like(mu), blocks=[], P=torch.zeros_like(S))
    a = _nonlinear(state, activation, _Truncation(3, augment=False), terms=8)
    N, sums = 1_000_000, torch.zeros(2, n, n, n, dtype=torch.float64)
    z = mu + torch.randn(N, n, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(S).T
    y = ACTIVATIONS[activation](z)
    y = y - y.mean(0)
    for part in y.split(100_000):
        sums[0] += torch.einsum("ni,nj,nk->ijk", part, part, part)
        sums[1] += torch.einsum("ni,nj,nk->ijk", part**2, part**2, part**2)
    sampled = sums[0] / N
    se = (sums[1] / N - sampled**2).sqrt() / math.sqrt(N)

    def tensor(c2):
        a.fresh["c2"] = c2
        f = _linear(a, torch.eye(n, dtype=torch.float64), None, _Truncation(3, augment=False))  # W = I: as stored
        return third_tensor(f.blocks, n)

    c2 = a.fresh["c2"]
    assert ((tensor(c2) - sampled) / se).abs().max() < 5
    assert ((tensor(0 * c2) - sampled) / se).abs().max() > 8


def _gaussian_layer(n: int = 6):
    """Mean [n] and covariance [n, n] of a Gaussian layer with correlations ~0.4."""
    g = torch.Generator().manual_seed(0)
    L = torch.randn(n, n, generator=g, dtype=torch.float64)
    S = 0.4 * L @ L.T / n + 0.6 * torch.eye(n, dtype=torch.float64)
    return 0.3 * torch.randn(n, generator=g, dtype=torch.float64), S


@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_k4_slices_match_samples_for_gaussian_input(activation):
    """K=3 augment's fourth-cumulant slices of phi(z), z Gaussian (width 6): the pairs k4(a)_jjkk and
    the (3,1) slice k4(a)_jjjk agree with 10^6 samples (z-scores < 5); dropping the (3,1) slice is
    detectably wrong."""
    n = 6
    mu, S = _gaussian_layer(n)
    state = _State(mu, S, k4=torch.zeros_like(mu), blocks=[], P=torch.zeros_like(S))
    q = _nonlinear(state, activation, _Truncation(3, augment=True), terms=8).quartic
    g = torch.Generator().manual_seed(1)
    N = 1_000_000
    z = mu + torch.randn(N, n, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(S).T
    y = ACTIVATIONS[activation](z)
    y = y - y.mean(0)
    C, y2 = y.T @ y / N, y * y
    v = torch.diagonal(C)
    m31, m22 = (y2 * y).T @ y / N, y2.T @ y2 / N
    k31 = m31 - 3 * v[:, None] * C  # k4_jjjk
    k22 = m22 - torch.outer(v, v) - 2 * C**2  # k4_jjkk
    se31 = ((y2 * y2 * y2).T @ y2 / N - m31**2).sqrt() / math.sqrt(N)
    se22 = ((y2 * y2).T @ (y2 * y2) / N - m22**2).sqrt() / math.sqrt(N)
    off = 1 - torch.eye(n, dtype=torch.float64)
    assert ((q["r31"] - k31) / se31 * off).abs().max() < 5
    assert ((q["pairs"] - k22) / se22 * off).abs().max() < 5
    assert (k31 / se31 * off).abs().max() > 8


@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("variant", ["simple", "augment"])
def test_factored_k3_matches_dense_reference(activation, variant):
    """K=3's factored cumulants (k3 blocks, k4 diagonal with carried sources, pair slice P, one-pair
    slice T) equal the dense-tensor reference ``estimate/reference.py`` layer by layer (width 7,
    4 hidden layers), and so do the estimates; the two variants differ by far more."""
    n = 7
    mlp = RandomMLP(n, 4, activation, seed=3)
    trunc = _Truncation(3, augment=variant == "augment")
    state = _input_state(mlp, trunc)
    w = mlp.weights[0]
    dense = _Dense(
        w.new_zeros(n), w @ w.T, w.new_zeros(n, n, n), w.new_zeros(n), w.new_zeros(n, n), w.new_zeros(n, n, n, n)
    )
    for layer in range(3):
        a = _nonlinear(state, activation, trunc, terms=8)
        state = _linear(a, mlp.weights[layer + 1], None, trunc)
        dense = _layer(dense, activation, mlp.weights[layer + 1], None, trunc.augment, 8)
        assert torch.allclose(third_tensor(state.blocks, n), dense.k3, atol=1e-12)
        assert torch.allclose(state.k4, dense.k4 + torch.einsum("iiii->i", dense.sources), atol=1e-12)
        assert torch.allclose(state.P, dense.P, atol=1e-12)
        assert torch.allclose(state.cov, dense.cov, atol=1e-12)
        if trunc.augment:
            U, V = state.T
            assert torch.allclose(torch.einsum("ix,jx,kx->ijk", U, U, V), dense.T, atol=1e-12)
    ours, ref = kprop(mlp, 3, variant), kprop_dense(mlp, variant)
    for x, y in zip(ours.pre + ours.pre_var + [ours.out], ref.pre + ref.pre_var + [ref.out]):
        assert torch.allclose(x, y, atol=1e-12)
    other = kprop(mlp, 3, "simple" if variant == "augment" else "augment")
    assert (other.out - ours.out).abs().max() > 1e-3


@pytest.mark.parametrize("n", [7, 8, 13, 32])
def test_symmetric_product_equals_the_plain_product(n):
    """symmetric_product(W C, W) is W C W^T in values and gradients for every number of row blocks,
    and in 4 blocks of a width divisible by 4 it makes 5/8 of the plain product's FLOPs."""
    g = torch.Generator().manual_seed(n)
    W = torch.randn(n, n, generator=g, dtype=torch.float64, requires_grad=True)
    L = torch.randn(n, n, generator=g, dtype=torch.float64)
    C = L @ L.T
    weight = torch.randn(n, n, generator=g, dtype=torch.float64)  # a loss that sees every entry
    plain = W @ C @ W.T
    (grad_plain,) = torch.autograd.grad((plain * weight).sum(), W)
    for parts in (1, 2, 3, 4, 8):
        fast = symmetric_product(W @ C, W, parts)
        (grad_fast,) = torch.autograd.grad((fast * weight).sum(), W)
        assert torch.allclose(fast, plain, rtol=1e-12, atol=1e-10)
        assert torch.allclose(grad_fast, grad_plain, rtol=1e-12, atol=1e-10)
    if n % 4 == 0:
        WC = (W @ C).detach()
        assert count_flops(symmetric_product, WC, W.detach(), 4)[1] == 5 * 2 * n**3 // 8


@pytest.mark.parametrize("variant", ["simple", "augment"])
def test_tied_block_factors_are_the_moved_source_maps(variant):
    """Every k3 block factor tied to a source (a layer's star and slab share its map X_s) equals
    that moved map times its scale, at every layer; the pair slice M summed per source equals the
    plain one made block by block, with fewer FLOPs."""
    n = 7
    mlp = RandomMLP(n, 4, "relu", seed=3)
    trunc = _Truncation(3, augment=variant == "augment")
    state, tied = _input_state(mlp, trunc), 0
    for layer in range(3):
        state = _linear(_nonlinear(state, "relu", trunc, terms=8), mlp.weights[layer + 1], None, trunc)
        for block, tie in zip(state.blocks, state.ties, strict=True):
            if tie is not None:
                slot, src, scale = tie
                X = state.sources[src][0]
                assert torch.allclose(block[slot], X if scale is None else X * scale, atol=1e-14)
                tied += 1
        plain, plain_flops = count_flops(third_pair_slice, state.blocks, n, state.cov)
        grouped, flops = count_flops(third_pair_slice, state.blocks, n, state.cov, state.ties, state.sources)
        assert torch.allclose(grouped, plain, atol=1e-13)
        assert flops < plain_flops
    assert tied == 2 * (1 + 2 + 3)  # star and slab of each layer so far
