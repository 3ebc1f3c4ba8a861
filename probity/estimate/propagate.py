"""Cumulant propagation ("kprop"): the expected value of every layer without sampling.

Each layer is two steps. The linear step z = W a + b maps cumulants exactly: the mean by
W, the covariance by W . W^T, the third cumulant by W on all three indices. The
nonlinear step a = phi(z) expands each neuron around a Gaussian with its own mean and
variance: E[g(z_i)] = E_G[g] + k3_i/6 E_G[g'''] + k4_i/24 E_G[g''''] (Edgeworth), and
pairs by Mehler's formula Cov(phi(z_i), phi(z_j)) = sum_k c_k(i) c_k(j) S_ij^k / k!,
with c_k = E_G[phi^(k)] (``gauss.derivative_expectations``).

Power counting in the width n (weights ~ n^-1/2): off-diagonal covariances are
O(n^-1/2), third and fourth cumulants of a pre-activation O(n^-1). Orders:

- K=1 (mean field): means and per-neuron variances only; O(n^2) per layer.
- K=2 (covariance propagation): means and the full covariance, Gaussian closure; O(n^3).
- K=3: adds the third cumulant tensor, stored factored as sum_r Sym(a_r x b_r x b_r)
  (rank grows by 2n per layer: a "star" term c2_m (c1 S)_{.m} (c1 S)_{.m} per centre
  neuron m, and the (j,j,l) and (j,j,j) slices), never materialised as n^3 entries.
  It corrects means and variances (k3_iii) and covariances (k3_iij). O(L n^3) per layer.

``variant="augment"`` adds fourth cumulants. At K=1 and K=2: per-neuron third and
fourth cumulants of the pre-activations as independent sums, k_p(z_i) = sum_j W_ij^p
k_p(a_j), an O(n^2) extra feeding the Edgeworth terms. At K=3: per-neuron k4 plus the
n x n pair slice P_jk = k4(z)_jjkk, which is O(1/n) for every pair with a coherent sign
(so it survives summation), with star terms k4(a)_jjkl; P shifts covariances by
c2_i c2_j P_ij / 4 and third-cumulant slabs, at about 6 n^3 more per layer.

Which terms to keep was decided by power counting and then checked against sampled
cumulants layer by layer: a term whose sign is coherent across the summed index
(squares of weights, k4(z)_jjkk, k3(z)_jjl) counts one order higher than its entry size
suggests; terms with random signs do not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from probity.estimate.gauss import derivative_expectations, gaussian_cumulants
from probity.estimate.mlp import RandomMLP, check_mlp

ORDERS = (1, 2, 3)
VARIANTS = ("simple", "augment")


@dataclass
class LayerMeans:
    """Per-layer mean estimates: ``pre[l]``, ``act[l]`` for hidden layer l+1, each [width]; ``out`` [width].
    ``pre_var[l]`` [width] is the estimated variance of each pre-activation and ``slope[l]``
    [width] is E_G[phi'(pre[l])], the Gaussian-closure slope of each neuron."""

    pre: list[torch.Tensor]
    act: list[torch.Tensor]
    out: torch.Tensor
    pre_var: list[torch.Tensor]
    slope: list[torch.Tensor]


def check_order(order: int, variant: str) -> None:
    """Raise a one-line ValueError for an unsupported (order, variant)."""
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")


def kprop(mlp: RandomMLP, order: int = 2, variant: str = "simple", series_order: int | None = None) -> LayerMeans:
    """Estimate E[pre], E[act] of every hidden layer and E[out] for x ~ N(0, I_n), by
    cumulant propagation of order ``order`` (1, 2 or 3): a ``LayerMeans`` of [width] vectors,
    H per field for the hidden layers and one for the output. ``series_order`` is the number
    of Mehler terms kept for off-diagonal covariances (default 2*order + 2). Works in the
    weights' dtype (float64) and is differentiable with respect to them."""
    check_order(order, variant)
    if series_order is not None and (not isinstance(series_order, int) or series_order < 1):
        raise ValueError(f"series_order must be an integer >= 1 (Mehler terms kept), got {series_order!r}")
    check_mlp(mlp)
    terms = series_order if series_order is not None else 2 * order + 2
    # The output's mean needs only the last activation's mean, which needs only the
    # per-neuron cumulants of the last pre-activation: off-diagonal ones are skipped there.
    last = mlp.hidden_layers - 1
    state = _input_state(mlp, order, variant, diag_only=last == 0)
    pre, act, pre_var, slope = [], [], [], []
    for layer in range(mlp.hidden_layers):
        pre.append(state.mean)
        pre_var.append(_diag(state.cov))
        a = _nonlinear(state, mlp.activation, order, variant, terms, mean_only=layer == last)
        act.append(a.mean)
        slope.append(a.slope)
        state = _linear(a, mlp.weights[layer + 1], mlp.biases[layer + 1], order, variant, diag_only=layer + 1 == last)
    return LayerMeans(pre, act, state.mean, pre_var, slope)


@dataclass
class _State:
    """Cumulants of one layer's neurons. ``cov`` is [width, width], or its diagonal [width] at K=1 and
    at the last hidden layer; the third cumulant is sum_r Sym(A[:, r], B[:, r], B[:, r])
    (K=3), with A and B [width, rank]; ``k3``/``k4`` [width] are per-neuron cumulants propagated as independent sums
    (augment). After a nonlinear
    step, ``fresh = (c2, G, slab)`` holds the new third-cumulant terms in the structured
    form Sym(3 c2_m e_m, G_m, G_m) + Sym(3 slab_j, e_j, e_j), so that the linear step
    multiplies W by a diagonal and an identity for free. K=3 augment also carries ``P``
    [width, width], the pair fourth cumulants k4(z)_jjkk (zero diagonal), and after a nonlinear
    step ``quartic = (pairs, t)`` from ``_quartic_terms``."""

    mean: torch.Tensor
    cov: torch.Tensor
    A: torch.Tensor | None = None
    B: torch.Tensor | None = None
    k3: torch.Tensor | None = None
    k4: torch.Tensor | None = None
    fresh: tuple | None = None
    quartic: tuple | None = None
    P: torch.Tensor | None = None
    slope: torch.Tensor | None = None


def _input_state(mlp: RandomMLP, order: int, variant: str, diag_only: bool = False) -> _State:
    """First pre-activation z = W_1 x + b_1: exactly Gaussian."""
    w, b = mlp.weights[0], mlp.biases[0]
    n = w.shape[0]
    mean = b.clone() if b is not None else w.new_zeros(n)  # [width]
    cov = (w * w).sum(1) if (order == 1 or diag_only) else w @ w.T  # [width] or [width, width]
    zeros = w.new_zeros(n)
    empty = w.new_zeros(n, 0)
    return _State(
        mean,
        cov,
        A=empty if order == 3 else None,
        B=empty if order == 3 else None,
        k3=zeros if (variant == "augment" and order < 3) else None,
        k4=zeros if variant == "augment" else None,
        P=w.new_zeros(n, n) if (variant == "augment" and order == 3) else None,
    )


def _diag(cov: torch.Tensor) -> torch.Tensor:
    """Per-neuron variances [width] from a covariance [width, width] or its stored diagonal [width]."""
    return cov if cov.ndim == 1 else torch.diagonal(cov)


def _third_diag(s: _State) -> torch.Tensor | None:
    """k3(z_i) per neuron: from the factored tensor (K=3) or the tracked vector."""
    if s.A is not None:
        return (s.A * s.B * s.B).sum(1)
    return s.k3


MAX_STANDARDISED = {3: 1.0, 4: 2.0}


def _perturbative(k: torch.Tensor | None, var: torch.Tensor, p: int) -> torch.Tensor | None:
    """Clip the standardised cumulant k / var^(p/2) to +-MAX_STANDARDISED[p]: beyond that a
    truncated Edgeworth series is meaningless (it happens to narrow neurons at n <= 16)."""
    if k is None:
        return None
    scale = var ** (p / 2)
    lim = MAX_STANDARDISED[p]
    return torch.maximum(torch.minimum(k, lim * scale), -lim * scale)


def _edgeworth(D: torch.Tensor, k3: torch.Tensor | None, k4: torch.Tensor | None) -> torch.Tensor:
    """E[g(z)] from Gaussian derivative expectations D[k] = E_G[g^(k)] and small k3, k4."""
    out = D[0]
    if k3 is not None:
        out = out + k3 / 6 * D[3]
    if k4 is not None:
        out = out + k4 / 24 * D[4]
    return out


def _nonlinear(s: _State, activation: str, order: int, variant: str, terms: int, mean_only: bool = False) -> _State:
    """Cumulants of a = phi(z) from those of z (only the mean when ``mean_only``), keeping
    ``terms`` Mehler terms for off-diagonal covariances."""
    var = _diag(s.cov)
    kmax = max(terms, 4)
    c = derivative_expectations(activation, 1, s.mean, var, kmax)  # [kmax + 1, width]: c[k] = E_G[phi^(k)]
    k3z, k4z = _perturbative(_third_diag(s), var, 3), _perturbative(s.k4, var, 4)
    mean = _edgeworth(c, k3z, k4z)
    if mean_only:
        return _State(mean, None, slope=c[1])
    d2 = derivative_expectations(activation, 2, s.mean, var, 4)  # [5, width]: E_G[(phi^2)^(k)]
    a_var = _edgeworth(d2, k3z, k4z) - mean * mean
    out = _State(mean, a_var, slope=c[1])
    if variant == "augment":
        g3, g4 = gaussian_cumulants(activation, s.mean, var, 4)[2:]
        out.k3 = g3 if order < 3 else None
        out.k4 = g4
    if order == 1:
        return out

    S = s.cov
    cov = torch.zeros_like(S)
    S_pow = torch.ones_like(S)
    for k in range(1, terms + 1):
        S_pow = S_pow * S
        cov = cov + (c[k][:, None] * c[k][None, :] / math.factorial(k)) * S_pow
    if order == 3:
        # k3(z)_iij as a matrix; it shifts Cov(phi_i, phi_j) by (c2_i c1_j k3_iij + c1_i c2_j k3_ijj)/2.
        M = (2.0 / 3.0) * (s.A * s.B) @ s.B.T + (1.0 / 3.0) * (s.B * s.B) @ s.A.T
        shift = 0.5 * c[2][:, None] * c[1][None, :] * M
        cov = cov + shift + shift.T
        if s.P is not None:  # pair fourth cumulants k4(z)_iijj shift it by c2_i c2_j k4_iijj / 4
            cov = cov + 0.25 * torch.outer(c[2], c[2]) * s.P
    eye = torch.eye(S.shape[0], dtype=S.dtype)
    out.cov = cov * (1 - eye) + torch.diag(a_var)
    if order == 3:
        out.A, out.B, out.fresh = _third_factors(s, c, d2, activation, var, M)
        if variant == "augment":
            out.quartic = _quartic_terms(s, c, d2)
    return out


def _quartic_terms(s: _State, c, d2):
    """The fourth cumulants of a that reach O(1/n) in the next layer (tree diagrams), by
    Mehler's formula for (phi_j - c0_j)^2 against (phi_k - c0_k)^2: pairs
    k4(a)_jjkk = h_j h_k (k4(z)_jjkk + 2 S_jk^2) - 2 c1_j^2 c1_k^2 S_jk^2 and stars
    k4(a)_jjkl = t_j (c1_k S_kj)(c1_l S_lj), with h = E[((phi - c0)^2)'']/2 and
    t = 2 h - 2 c1^2. Returns (pairs [width, width] with zero diagonal, t [width])."""
    S = s.cov
    h = d2[2] / 2 - c[0] * c[2]
    c1sq = c[1] * c[1]
    pairs = torch.outer(h, h) * (s.P + 2 * S * S) - 2 * torch.outer(c1sq, c1sq) * S * S
    return pairs * (1 - torch.eye(S.shape[0], dtype=S.dtype)), 2 * h - 2 * c1sq


def _third_factors(s: _State, c: torch.Tensor, d2: torch.Tensor, activation: str, var: torch.Tensor, M: torch.Tensor):
    """k3(a): the transported factors of k3(z) (scaled by c1) and the fresh terms: stars
    centred at each neuron and the (j,j,l)/(j,j,j) slices. ``M[j, l]`` = k3(z)_jjl."""
    S = s.cov
    n = S.shape[0]
    eye = torch.eye(n, dtype=S.dtype)
    G = c[1][:, None] * S * (1 - eye)  # G[j, m] = c1_j S_jm, zero diagonal
    # Cum(phi_j, phi_j, phi_l) = Cov((phi_j - c0_j)^2, phi_l), by Mehler to second order,
    # minus what the star centred at l already puts there (c2_l G[j, l]^2).
    e1 = d2[1] - 2 * c[0] * c[1]
    e2 = d2[2] - 2 * c[0] * c[2]
    slab = e1[:, None] * c[1][None, :] * S + 0.5 * e2[:, None] * c[2][None, :] * S * S - c[2][None, :] * G * G
    # k3(z)_jjl is coherent across j (about the same for every j), so its second-order
    # Mehler coefficient matters; the transported factors already carry c1_j^2 c1_l of it.
    slab = slab + (0.5 * e2 - c[1] ** 2)[:, None] * c[1][None, :] * M
    if s.P is not None:  # and so is k4(z)_jjll, through Cov(h_j dz_j^2, c2_l dz_l^2 / 2)
        slab = slab + 0.25 * e2[:, None] * c[2][None, :] * s.P
    k3_gauss = gaussian_cumulants(activation, s.mean, var, 3)[2]
    slab = slab * (1 - eye) + torch.diag(k3_gauss / 3)
    return c[1][:, None] * s.A, c[1][:, None] * s.B, (c[2], G, slab)


def _linear(
    a: _State, w: torch.Tensor, b: torch.Tensor | None, order: int, variant: str, diag_only: bool = False
) -> _State:
    """Cumulants of z = W a + b (per-neuron ones only when ``diag_only``)."""
    mean = w @ a.mean
    if b is not None:
        mean = mean + b
    if a.cov is None:
        return _State(mean, None)
    w2 = w * w
    if order == 1:
        cov = w2 @ a.cov
    else:
        cov = ((w @ a.cov) * w).sum(1) if diag_only else w @ a.cov @ w.T
    out = _State(mean, cov)
    if a.k3 is not None:
        out.k3 = (w2 * w) @ a.k3
    if a.k4 is not None:
        out.k4 = (w2 * w2) @ a.k4
    if a.A is not None:
        c2, G, slab = a.fresh
        WG = w @ G
        out.A = torch.cat([w @ a.A, w * (3 * c2)[None, :], 3 * (w @ slab.T)], dim=1)
        out.B = torch.cat([w @ a.B, WG, w], dim=1)
        if a.quartic is not None:
            pairs, t = a.quartic
            XP = w2 @ pairs
            Y = WG * WG - w2 @ (G * G)  # sum over ordered k != l of W_ik W_il G_kj G_lj
            Xt = w2 * t[None, :]
            out.k4 = out.k4 + 3 * (XP * w2).sum(1) + 6 * (Xt * Y).sum(1)
            if not diag_only:
                star = Xt @ Y.T
                P = (XP + w2 * a.k4[None, :]) @ w2.T + star + star.T
                out.P = P * (1 - torch.eye(P.shape[0], dtype=P.dtype))
    return out
