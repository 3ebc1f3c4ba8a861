"""kprop K=4 (dense): the diagram rule, agreement with K <= 3 where they must agree, and sampling."""

import math
import subprocess
import sys
import textwrap

import pytest
import torch

from probity.estimate import RandomMLP, ground_truth, kprop, mse_over_var
from probity.estimate.activations import ACTIVATIONS
from probity.estimate.bench import memory_needed
from probity.estimate.gauss import derivative_expectations
from probity.estimate.kprop4 import (
    _Cumulants,
    _fill_fourth,
    _fill_repeated,
    _fill_third,
    _nonlinear,
    _propagate,
    _repeated_diagonal,
    _repeated_transport,
    _symmetric_transport_,
    _transport_,
    diagrams,
)
from probity.estimate.kprop4 import _linear as _linear4
from probity.estimate.propagate import _linear, _State, _Truncation
from probity.estimate.propagate import _nonlinear as _nonlinear3
from probity.estimate.reference import third_tensor


def _gaussian_layer(n: int = 6):
    """Mean [n] and covariance [n, n] of a Gaussian layer with correlations ~0.4."""
    g = torch.Generator().manual_seed(0)
    L = torch.randn(n, n, generator=g, dtype=torch.float64)
    S = 0.4 * L @ L.T / n + 0.6 * torch.eye(n, dtype=torch.float64)
    return 0.3 * torch.randn(n, generator=g, dtype=torch.float64), S


def test_diagram_rule():
    """On Gaussian input (S edges only) the two-group diagrams are Mehler's terms S^k / k!, and the
    distinct four-group slice at cost 3 is the 16 labelled trees on four groups."""
    pairs = diagrams(2, 5, (2,))
    assert [(d.edges, d.weight) for d in pairs] == [(((0, 1),) * k, 1 / math.factorial(k)) for k in range(1, 6)]
    trees = diagrams(4, 3, (2,))
    assert len(trees) == 16 and all(len(d.edges) == 3 and d.weight == 1 for d in trees)
    # with k3 and k4: + 12 k3_abc S_cd and the transported k4_ijkl
    assert len(diagrams(4, 3)) == 16 + 12 + 1


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_k4_exact_where_lower_orders_are(activation):
    """One hidden layer: every order gives the exact output mean. Two hidden layers: the second
    pre-activation's mean and variance are exact given the Mehler terms kept, so K=4 equals K=2
    there (1e-12)."""
    one = RandomMLP(8, 1, activation, seed=1, bias=True)
    assert torch.allclose(kprop(one, 4).out, kprop(one, 1).out, atol=1e-13)
    two = RandomMLP(8, 2, activation, seed=1, bias=True)
    k4, k2 = kprop(two, 4, series_order=12), kprop(two, 2, series_order=12)
    assert torch.allclose(k4.pre[1], k2.pre[1], atol=1e-12)
    assert torch.allclose(k4.pre_var[1], k2.pre_var[1], atol=1e-12)


@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_k4_slices_agree_with_factored_k3(activation):
    """Gaussian z (width 6): at cost <= 2 the dense K=4 step gives K=3 augment's fourth-cumulant slices
    (pairs k4(a)_jjkk, the (3,1) slice, the (2,1,1) slice's star t_j G_kj G_lj and paths
    e1_j S_jk c2_k G_lk, nothing distinct); at cost <= 3 its third cumulant is K=3 augment's (the
    factored blocks, rebuilt dense) plus the two diagrams K=3 leaves out for want of a factored
    form: the S triangle c2 c2 c2 S_ij S_jk S_ki and the chain e3_j c3_l S_jl^3 / 6 (1e-12)."""
    n = 6
    mu, S = _gaussian_layer(n)
    off = 1 - torch.eye(n, dtype=torch.float64)
    state3 = _State(mu, S, k4=torch.zeros_like(mu), blocks=[], P=torch.zeros_like(S))
    a3 = _nonlinear3(state3, activation, _Truncation(3, augment=True), terms=8)
    q = a3.quartic
    a4, c1 = _nonlinear(_Cumulants(mu, S), activation, 2, 8, mean_only=False)
    k4 = a4.k4
    j, k = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    assert torch.allclose(k4[j, j, k, k] * off, q["pairs"], atol=1e-12)
    assert torch.allclose(k4[j, j, j, k] * off, q["r31"], atol=1e-12)
    G = c1[:, None] * S * off
    distinct3 = off[:, :, None] * off[:, None, :] * off[None, :, :]
    star = q["t"][:, None, None] * G.T[:, :, None] * G.T[:, None, :]  # [j, k, l] = t_j G_kj G_lj
    path = torch.einsum("jk,k,kl->jkl", q["e1S"], q["c2"], G.T)  # e1_j S_jk c2_k c1_l S_kl
    k211 = star + path + path.transpose(1, 2)
    assert torch.allclose(torch.einsum("jjkl->jkl", k4) * distinct3, k211 * distinct3, atol=1e-12)
    distinct4 = torch.einsum("ij,ik,il,jk,jl,kl->ijkl", off, off, off, off, off, off)
    assert (k4 * distinct4).abs().max() == 0

    a4, _ = _nonlinear(_Cumulants(mu, S), activation, 3, 8, mean_only=False)
    f = _linear(a3, torch.eye(n, dtype=torch.float64), None, _Truncation(3, augment=True))  # W = I: as stored
    k3_factored = third_tensor(f.blocks, n)
    c = derivative_expectations(activation, 1, mu, torch.diagonal(S), 3)
    d2 = derivative_expectations(activation, 2, mu, torch.diagonal(S), 3)
    e3 = d2[3] - 2 * a4.mean * c[3]
    Soff = S * off
    triangle = torch.einsum("i,j,k,ij,jk,ki->ijk", c[2], c[2], c[2], Soff, Soff, Soff)
    chain = e3[:, None] * c[3][None, :] * Soff**3 / 6  # [j, l] on the (j, j, l) entries
    missing = _fill_third(triangle, chain, torch.zeros(n, dtype=torch.float64))
    assert torch.allclose(a4.k3 - missing, k3_factored, atol=1e-12)


def _sampled_cumulants(activation, mu, S, N, seed):
    """Sampled k3 [n]^3 and k4 [n]^4 of phi(z), z ~ N(mu, S), and their standard errors (from the
    spread of the centred products), N samples in chunks."""
    n = mu.shape[0]
    g = torch.Generator().manual_seed(seed)
    chol = torch.linalg.cholesky(S)
    y = ACTIVATIONS[activation](mu + torch.randn(N, n, generator=g, dtype=torch.float64) @ chol.T)
    y = y - y.mean(0)
    m3, m4, m6, m8 = (torch.zeros((n,) * r, dtype=torch.float64) for r in (3, 4, 3, 4))
    for part in y.split(200_000):
        p3 = torch.einsum("ni,nj,nk->nijk", part, part, part)
        m3 += p3.sum(0)
        m6 += (p3 * p3).sum(0)
        p4 = torch.einsum("nijk,nl->nijkl", p3, part)
        m4 += p4.sum(0)
        m8 += (p4 * p4).sum(0)
    m3, m4, m6, m8 = m3 / N, m4 / N, m6 / N, m8 / N
    C = y.T @ y / N
    k4 = m4 - torch.einsum("ij,kl->ijkl", C, C) - torch.einsum("ik,jl->ijkl", C, C) - torch.einsum("il,jk->ijkl", C, C)
    return m3, k4, ((m6 - m3**2) / N).sqrt(), ((m8 - m4**2) / N).sqrt()


@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_k4_tensors_match_samples_for_gaussian_input(activation):
    """Gaussian z (width 5): every entry of the dense K=4 step's k3(a) and k4(a) agrees with 10^6
    samples at cost <= 4 (|z-score| < 5, the standard error from the spread of the centred
    products); leaving out the distinct four-index slice is detectably wrong."""
    n = 5
    mu, S = _gaussian_layer(n)
    a, _ = _nonlinear(_Cumulants(mu, S), activation, 4, 10, mean_only=False)
    k3, k4, se3, se4 = _sampled_cumulants(activation, mu, S, 1_000_000, seed=1)
    assert ((a.k3 - k3) / se3).abs().max() < 5
    assert ((a.k4 - k4) / se4).abs().max() < 5
    off = 1 - torch.eye(n, dtype=torch.float64)
    distinct4 = torch.einsum("ij,ik,il,jk,jl,kl->ijkl", off, off, off, off, off, off)
    assert ((a.k4 * (1 - distinct4) - k4) / se4).abs().max() > 8


def test_k4_second_layer_cumulants_match_samples():
    """Width 8, 2 hidden layers: the first pre-activation is exactly Gaussian, so the second one's
    k3_iii and k4_iiii are off only by the diagrams beyond the budget. From a budget of 6 they agree
    with 10^7 samples (|z| < 5 on all 16, standard errors from the sampled 6th and 8th central moments
    about the exact mean, so a pure-noise failure has probability ~1e-5); at K=4 simple's budget 3 the
    truncation shows in k4 (|z| > 10: at width 8 a cost-4 diagram is not small)."""
    mlp = RandomMLP(8, 2, "relu", seed=0)
    w1, w2 = mlp.weights[:2]
    mean = kprop(mlp, 2).pre[1]  # exact
    N, g = 10**7, torch.Generator().manual_seed(7)
    m = torch.zeros(9, 8, dtype=torch.float64)  # sums of (z - mean)^p, p = 0..8
    for _ in range(N // 10**6):
        z = torch.relu(torch.randn(10**6, 8, generator=g, dtype=torch.float64) @ w1.T) @ w2.T - mean
        m += torch.stack([(z**p).sum(0) for p in range(9)])
    m = m / N
    k3, k4 = m[3], m[4] - 3 * m[2] ** 2
    se3, se4 = ((m[6] - m[3] ** 2) / N).sqrt(), ((m[8] - m[4] ** 2) / N).sqrt()

    def second_layer(budget):
        a, _ = _nonlinear(_Cumulants(w1.new_zeros(8), w1 @ w1.T), "relu", budget, 12, mean_only=False)
        return _linear4(a, w2, None, diag_only=True)

    z6, z3 = second_layer(6), second_layer(3)
    assert torch.allclose(z6.mean, mean, atol=1e-12)
    assert ((z6.k3 - k3) / se3).abs().max() < 5 and ((z6.k4 - k4) / se4).abs().max() < 5
    assert ((z3.k4 - k4) / se4).abs().max() > 10


def test_error_falls_from_k3_to_k4(tmp_path):
    """Width 32, 4 hidden layers: K=4 simple is at least twice as accurate at the output as K=3 augment,
    the most accurate K=3 (measured 4.4e-5 vs 1.25e-4; the 10^6-sample truth's noise, 1e-6, is subtracted),
    and K=4 repeated lies between them (measured 5.8e-5)."""
    mlp = RandomMLP(32, 4, "relu", seed=0)
    gt = ground_truth(mlp, 10**6, cache_dir=tmp_path, out_only=True, progress=False)
    k3, k4, rep = (
        mse_over_var(kprop(mlp, K, v).out, gt.out_mean, gt.out_var, gt.n_samples)
        for K, v in ((3, "augment"), (4, "simple"), (4, "repeated"))
    )
    assert k4 < k3 / 2, (k4, k3)
    assert k4 < rep < k3, (k4, rep, k3)


def _repeated_pieces(n: int, seed: int) -> list[torch.Tensor]:
    """Random slices (x211 [n, n, n] symmetric in its last two indices, x22 [n, n] symmetric, x31 [n, n],
    diagonal [n]) of a symmetric fourth cumulant with no distinct slice."""
    g = torch.Generator().manual_seed(seed)
    x211, x22, x31, diag = (torch.randn((n,) * r, generator=g, dtype=torch.float64) for r in (3, 2, 2, 1))
    return [x211 + x211.transpose(1, 2), x22 + x22.T, x31, diag]


@pytest.mark.parametrize("n", [5, 8, 13])
def test_repeated_transport_is_the_dense_one(n):
    """W on every index of a k4 with no distinct slice, read on its repeated slices: the O(n^4) sums over
    coinciding position pairs (``_repeated_transport``, ``_repeated_diagonal``) equal the dense
    transport's k4(z)_iikl and k4(z)_iiii (1e-12 relative)."""
    x211, x22, x31, diag = _repeated_pieces(n, seed=n)
    dense = _fill_fourth(torch.zeros((n,) * 4, dtype=torch.float64), x211, x22, x31, diag)  # [n]^4
    t = _fill_repeated(x211.clone(), x22, x31, diag)  # [n]^3
    assert torch.equal(t, torch.einsum("jjkl->jkl", dense))
    w = torch.randn(n, n, generator=torch.Generator().manual_seed(1), dtype=torch.float64) / n**0.5
    z = _transport_(dense, w)  # [n]^4
    scale = z.abs().max()
    assert ((_repeated_transport(t, w) - torch.einsum("iikl->ikl", z)).abs().max() / scale) < 1e-12
    assert ((_repeated_diagonal(t, w) - torch.einsum("iiii->i", z)).abs().max() / scale) < 1e-12


@pytest.mark.parametrize("n", [5, 8, 13])
def test_symmetric_k3_transport_is_the_plain_one(n):
    """W on every index of a symmetric k3 through symmetric products and the pairs j <= k
    (``_symmetric_transport_``) equals the plain transport, one mode at a time, and writes into its input."""
    g = torch.Generator().manual_seed(n)
    x = torch.randn(n, n, n, generator=g, dtype=torch.float64)
    k3 = sum(x.permute(p) for p in [(0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)]) / 6
    w = torch.randn(n, n, generator=g, dtype=torch.float64) / n**0.5
    want = _transport_(k3.clone(), w)
    got = _symmetric_transport_(k3, w)
    assert got.data_ptr() == k3.data_ptr()
    assert (got - want).abs().max() / want.abs().max() < 1e-12


@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_repeated_step_reads_no_distinct_slice(activation):
    """Width 6: from a dense layer-2 state whose k4(z) has a distinct slice, the ``repeated`` nonlinear
    step (fed only k4(z)_iikl) gives the mean, covariance, k3(a) and the repeated slices k4(a)_jjkl of
    the dense step with the distinct slice of k4(a) zeroed, whose distinct slice is exactly 0 (1e-12)."""
    n = 6
    mlp = RandomMLP(n, 3, activation, seed=2, bias=True)
    w1, w2 = mlp.weights[:2]
    a, _ = _nonlinear(_Cumulants(mlp.biases[0], w1 @ w1.T), activation, 3, 10, mean_only=False)
    z = _linear4(a, w2, mlp.biases[1], diag_only=False)  # dense, with a distinct slice
    zr = _Cumulants(z.mean, z.cov, z.k3.clone(), k4r=torch.einsum("iikl->ikl", z.k4).clone())
    rep, c_rep = _nonlinear(zr, activation, 3, 10, mean_only=False, fourth="repeated")
    ref, c_ref = _nonlinear(z, activation, 3, 10, mean_only=False, fourth="zero-distinct")
    for x, y in ((rep.mean, ref.mean), (rep.cov, ref.cov), (rep.k3, ref.k3), (c_rep, c_ref)):
        assert torch.allclose(x, y, rtol=1e-12, atol=1e-12 * y.abs().max())
    assert torch.allclose(rep.k4r, torch.einsum("jjkl->jkl", ref.k4), rtol=1e-12, atol=1e-12 * ref.k4.abs().max())
    off = 1 - torch.eye(n, dtype=torch.float64)
    distinct4 = torch.einsum("ij,ik,il,jk,jl,kl->ijkl", off, off, off, off, off, off)
    assert (ref.k4 * distinct4).abs().max() == 0


@pytest.mark.parametrize("hidden_layers", [2, 3])
@pytest.mark.parametrize("budget", [3, 4])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_repeated_matches_dense_without_distinct_slice(activation, budget, hidden_layers):
    """Widths 6 and 8 with biases: ``kprop(mlp, 4, "repeated")`` (and its budget raised to 4) gives every
    layer's mean, variance, slope and the output of the dense K=4 with the distinct slice of k4(a)
    zeroed after each nonlinear step (1e-10 relative); with 3 hidden layers that differs from the full
    dense K=4 (the distinct slice matters)."""
    for n in (6, 8):
        mlp = RandomMLP(n, hidden_layers, activation, seed=n, bias=True)
        fast = kprop(mlp, 4, "repeated") if budget == 3 else _propagate(mlp, budget, 10, "repeated")
        ref = _propagate(mlp, budget, 10, "zero-distinct")
        for name in ("pre", "act", "pre_var", "slope"):
            for x, y in zip(getattr(fast, name), getattr(ref, name)):
                assert torch.allclose(x, y, rtol=1e-10, atol=1e-10 * y.abs().max()), name
        assert torch.allclose(fast.out, ref.out, rtol=1e-10, atol=1e-10 * ref.out.abs().max())
        if hidden_layers == 3:
            full = _propagate(mlp, budget, 10, "full")
            assert (full.out - fast.out).abs().max() > 1e-6 * ref.out.abs().max()


def test_repeated_is_k4_only():
    """The ``repeated`` variant exists at K=4 only."""
    mlp = RandomMLP(6, 2, seed=0)
    with pytest.raises(ValueError, match="variant must be one of"):
        kprop(mlp, 3, "repeated")


def test_k4_memory_estimate_is_an_upper_bound():
    """Peak memory of K=4 at width 64, measured in a fresh process, stays under ``memory_needed``."""
    code = textwrap.dedent(
        """
        import resource, torch
        torch.set_num_threads(1)
        from probity.estimate import RandomMLP, kprop
        mlp = RandomMLP(64, 3, seed=0)
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        with torch.no_grad():
            kprop(mlp, 4)
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(done.stdout) <= memory_needed(64, 3, [4]), (int(done.stdout), memory_needed(64, 3, [4]))


def test_k4_repeated_memory_estimate_is_an_upper_bound():
    """Peak memory of K=4 repeated at width 128 (4 hidden layers), in a fresh process, stays under
    ``memory_needed``, which is far below the dense variant's."""
    code = textwrap.dedent(
        """
        import resource, torch
        torch.set_num_threads(1)
        from probity.estimate import RandomMLP, kprop
        mlp = RandomMLP(128, 4, seed=0)
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        with torch.no_grad():
            kprop(mlp, 4, "repeated")
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    estimate = memory_needed(128, 4, [(4, "repeated")])
    assert int(done.stdout) <= estimate < memory_needed(128, 4, [4]) / 4, (int(done.stdout), estimate)
