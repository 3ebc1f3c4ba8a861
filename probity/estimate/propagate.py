"""Cumulant propagation ("kprop"): the expected value of every layer without sampling.

Each layer is two steps. The linear step z' = W a + b maps cumulants exactly: the mean by
W, the covariance by W . W^T, higher cumulants by W on every index. The nonlinear step
a = phi(z) expands each neuron around a Gaussian with its own mean and variance:
E[g(z_i)] = E_G[g] + k3_i/6 E_G[g'''] + k4_i/24 E_G[g''''] (Edgeworth), and pairs by
Mehler's formula Cov(phi(z_i), phi(z_j)) = sum_k c_k(i) c_k(j) S_ij^k / k!.

Notation (per neuron i of z; Gaussian expectations at (mu_i, v_i = S_ii)):
S = Cov(z), M_ij = k3(z)_iij, P_ij = k4(z)_iijj (i != j), c_k = E_G[phi^(k)],
d^p_k = E_G[(phi^p)^(k)] (``gauss.derivative_expectations``), mu = c_0; for the centred square
g = (phi - mu)^2: e_k = d^2_k - 2 mu c_k, h = e_2 / 2, t = 2 h - 2 c1^2; for the centred cube
p3 = (phi - mu)^3 - 3 v_a (phi - mu) (v_a = d^2_0 - mu^2): xi_k = d^3_k - 3 mu d^2_k + 3 mu^2 c_k - 3 v_a c_k;
G_jm = c1_j S_jm (j != m); r_i = sum_a W_ia^2 (row norm); Sym(A x B x C) = the mean of A x B x C
over the six orders of its legs.

Power counting in the width n (weights ~ n^-1/2): off-diagonal covariances are O(n^-1/2),
third and fourth cumulants of a pre-activation O(n^-1). A term whose sign is coherent across
the summed index (squares of weights, P, M) counts one order higher than its entry size
suggests. "Cost" of a diagram: the number of cumulant legs beyond a pair, as in ARC's paper.

Orders and variants (issue 16 measured each against ARC's reference code on the bench networks):

- K=1 (mean field): means and per-neuron variances only; O(n^2) per layer. ``augment``: per-neuron
  k3, k4 of z as independent sums k_p(z_i) = sum_j W_ij^p k_p(a_j) (Gaussian k_p(a_j)).
- K=2 ``simple`` (covariance propagation): means and the full covariance, Gaussian closure; O(n^3).
- K=2 ``augment`` (coherent traces): covariance propagation plus, per layer, the per-neuron
  k3_i, k4_i and two O(n^2) traces of the coherent slices, M_ij ~ r_i m_j and P_ij ~ r_i r_j p:

      Cov(a_i, a_j) = sum_k c_k c_k S^k/k! + (c2_i c1_j M_ij + c1_i c2_j M_ji)/2 + c2_i c2_j P_ij/4
      L_jl = k3(a)_jjl = e1_j c1_l S_jl + e2_j c2_l S_jl^2/2 + e2_j c1_l M_jl/2 + e1_j c2_l M_lj/2 + e2_j c2_l P_jl/4
      sc_l = c2_l sum_j G_jl^2                                   (star centred at l, traced)
      pairs_jl = k4(a)_jjll = h_j h_l (P + 2 S^2)_jl - 2 c1_j^2 c1_l^2 S_jl^2 + e1_j e1_l S_jl
                              + h_j e1_l M_jl + e1_j h_l M_lj
      k3(z')_i = sum_a W_ia^3 k3(a)_a + 3 sum_{a != l} W_ia^2 W_il L_al + r_i (W sc)_i / n
      m'       = (W colsum(L) + W sc) / n
      k4(z')_i = sum_a W_ia^4 k4(a)_a + 3 r_i^2 sum(pairs) / n^2
      p'       = (sum(pairs) + sum_a k4(a)_a + 2 sum_j t_j |G_.j|^2) / n^2

  with k3(a)_a, k4(a)_a and Var(a) from Edgeworth moments (``gauss.edgeworth_cumulants``) and e_k, h
  centred at the Edgeworth mean of a.
  2 n^3 per layer more than ``simple``.
- K=3: adds the third cumulant tensor, stored factored as sum_r Sym(A_r x B_r x C_r) (blocks of
  columns [width, rank]; C = B when omitted), never materialised as n^3 entries; every block is
  moved by W and scaled by c1 at each layer, and each nonlinear step adds fresh blocks: the star
  Sym(3 e_m x G_.m x C*_.m) per centre neuron m, the (j, j, l) slab Sym(3 L_.j x e_j x e_j) and its
  diagonal. Both variants track k4(z)_iiii and P (pair slice), and carry the diagonal fourth
  cumulant sources kw_s of each earlier layer s through the composite maps X_s = W diag(c1) ... W:
  k4(z)_iiii += sum_s (X_s^4 kw_s)_i, P += sum_s X_s^2 diag(kw_s) X_s^2^T. The rank grows with depth,
  so the cost is O(H^2 n^3) in all (about 84 n^3 simple, 280 n^3 augment at H = 4, n = 128).
  Three identities keep it there, each exact (tests hold the results equal to the plain products):
  (1) the star of layer s is Sym(3 X_s diag(c2) x ...) and its slab Sym(... x X_s x X_s), so those
  factors are the moved source map X_s times a scale (``_State.ties``), never moved on their own, and
  in M = k3_iij the products with X_s^T are summed before one product; (2) the stars' k != l sum is
  (WG)^2 - W^2 Q with Q_kj = G_kj^2 t_j, which folds into the pairs: one product W^2 (pairs - Q - Q^T)
  serves k4_iiii and P; (3) the symmetric products (W C W^T and the pair slices) make only their
  upper row blocks (``symmetric_product``).

  ``simple`` ("lean") keeps, at each nonlinear step:

      E[a], Var(a)  : Edgeworth with k3_iii, k4_iiii
      Cov(a_i,a_j)  : Mehler + (c2_i c1_j M_ij + c1_i c2_j M_ji)/2 + c2_i c2_j P_ij/4
      k3(a)         : c1 c1 c1 k3(z) (transported blocks) + star c2_m G_jm G_km
                      + slab L_jl = e1 c1 S + e2 c2 S^2/2 - c2_l G_jl^2 + (e2_j/2 - c1_j^2) c1_l M_jl
                                    + e1_j c2_l M_lj/2 + e2_j c2_l P_jl/4;  diagonal: Gaussian k3(a_j)
      k4(a)         : diagonal Gaussian k4(a_j); pairs h h (P + 2 S^2) - 2 c1^2 c1^2 S^2 - c1^2 c1^2 P_carried;
                      stars t_j G_kj G_lj; (3,1) slice k4(a)_jjjk = xi_j c1_k S_jk + xi2_j c2_k S_jk^2/2
                      + xi2_j c1_k M_jk/2 + xi_j c2_k M_kj/2
      k4(z')_iiii   = sum_a W_ia^4 k4(a)_a + 3 sum_{a!=b} W_ia^2 W_ib^2 pairs_ab
                      + 6 sum_j W_ij^2 t_j sum_{k!=l} W_ik W_il G_kj G_lj
                      + 4 sum_{a!=b} W_ia^3 W_ib k4(a)_aaab + carried sources

  ``augment`` ("exact") adds every cost-3 diagram that has a factored form (all but the two
  non-hypertree ones, S x k3_ijk and the S triangle):

      Cov(a_i,a_j)  += S_ij (c3_i c2_j M_ij + c2_i c3_j M_ji)/2 + c3_i c3_j S_ij P_ij/4
                       + (c3_i c1_j T_jii + c1_i c3_j T_ijj)/2          (k4(z)_ijjj ~ 3 T_ijj)
      star legs     : C*_.m = c2_m G_.m + 2 H_.m,  H_im = c3_m (c1_i M_mi/2 + c2_i S_im^2/2 + c2_i P_im/4)
                                                           + c2_m c2_i M_im/2
      slab          += e3_j c2_l S_jl M_jl/2 + e2_j c3_l S_jl M_lj/2 + e3_j c3_l S_jl P_jl/4;
                       diagonal: Edgeworth k3(a_j) minus the c1^3 k3(z)_jjj already transported
      B1            : k3(a)_ijk += c1_i c1_j c2_k T_ijk/2 with the one-pair slice T_ijk ~ k4(z)_ijkk
                      = sum_x U_ix U_jx V_kx (this layer's pair and star parts), less its (j,j,l) spill
      k4(a) pairs   += e1_j e1_k S_jk + h_j e1_k M_jk + e1_j h_k M_kj;  diagonal: Edgeworth k4(a_j)
                       minus the carried sources' c1^4 share
      (2,1,1)       : k4(a)_bbcd += e1_b c1_c c1_d k3(z)_bcd (every k3 block, every leg as b)
                      + the path e1_b c2_k c1_l S_bk S_kl + c1^2 c1 c1 of the star-like part of T
      T' (for B1 and the (1,3) Cov term) = pairs/k4(a) through W^2 on k and W on i, j; stars
                      through (WG, WG, W^2 t); the transported star-like part of T

- K=4: every joint cumulant up to order four kept whole, as dense tensors (``probity.estimate.kprop4``):
  the fourth cumulant [n]^4 is moved by W on every index and each nonlinear step sums every connected
  diagram of cost <= 3 (``simple``) or <= 4 (``augment``) into every slice. O(n^5) FLOPs and 8 n^4
  bytes per layer (2.1 GB at n=128); not differentiable (its tensors are overwritten in place).
  ``repeated`` (K=4 only): the same diagrams at cost <= 3 with the distinct slice k4(a)_ijkl dropped,
  the fourth cumulant carried as its repeated slices k4_jjkl [n]^3; O(n^4) FLOPs per layer.

The plain reference (dense tensors at small n) of the factored contractions is
``probity.estimate.reference``; a test checks that they agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from probity.estimate.gauss import (
    derivative_expectations,
    edgeworth_cumulants,
    edgeworth_expectation,
    gaussian_cumulants,
)
from probity.estimate.mlp import RandomMLP, check_mlp

ORDERS = (1, 2, 3, 4)
VARIANTS = ("simple", "augment")
K4_VARIANTS = VARIANTS + ("repeated",)  # K=4 only: the repeated-index slices of k4, O(n^4) (kprop4)
# Row blocks of ``symmetric_product``: 4 makes 5/8 of a plain product's FLOPs. 8 (9/16) saves 1 n^3
# more of K=3 simple's 84 n^3 but ran 30-50% slower at widths 64-128 on 2 CPU cores (smaller products).
SYMMETRIC_PARTS = 4


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
    allowed = K4_VARIANTS if order == 4 else VARIANTS
    if variant not in allowed:
        k4_only = f" ({variant!r} is K=4 only)" if variant in K4_VARIANTS else ""
        raise ValueError(f"variant must be one of {allowed} at order {order}, got {variant!r}{k4_only}")


@dataclass(frozen=True)
class _Truncation:
    """Which terms one (order, variant) keeps (see the module docstring)."""

    order: int
    augment: bool

    @property
    def traces(self) -> bool:
        """K=2 augment: per-neuron k3, k4 and the traces m, p of M and P."""
        return self.order == 2 and self.augment

    @property
    def cost3(self) -> bool:
        """K=3 augment: the cost-3 diagrams."""
        return self.order == 3 and self.augment


def kprop(mlp: RandomMLP, order: int = 2, variant: str = "simple", series_order: int | None = None) -> LayerMeans:
    """Estimate E[pre], E[act] of every hidden layer and E[out] for x ~ N(0, I_n), by
    cumulant propagation of order ``order`` (1-4; terms per ``variant`` in the module
    docstring): a ``LayerMeans`` of [width] vectors, H per field for the hidden layers and one
    for the output. ``series_order`` is the number of Mehler terms kept for off-diagonal
    covariances (default 2*order + 2). Works in the weights' dtype (float64) and, for K <= 3,
    is differentiable with respect to them."""
    check_order(order, variant)
    if series_order is not None and (not isinstance(series_order, int) or series_order < 1):
        raise ValueError(f"series_order must be an integer >= 1 (Mehler terms kept), got {series_order!r}")
    check_mlp(mlp)
    terms = series_order if series_order is not None else 2 * order + 2
    if order == 4:
        from probity.estimate.kprop4 import kprop4  # it builds on this module's LayerMeans

        return kprop4(mlp, variant, terms)
    trunc = _Truncation(order, variant == "augment")
    # The output's mean needs only the last activation's mean, which needs only the
    # per-neuron cumulants of the last pre-activation: off-diagonal ones are skipped there.
    last = mlp.hidden_layers - 1
    state = _input_state(mlp, trunc, diag_only=last == 0)
    pre, act, pre_var, slope = [], [], [], []
    for layer in range(mlp.hidden_layers):
        pre.append(state.mean)
        pre_var.append(_diag(state.cov))
        a = _nonlinear(state, mlp.activation, trunc, terms, mean_only=layer == last)
        act.append(a.mean)
        slope.append(a.slope)
        state = _linear(a, mlp.weights[layer + 1], mlp.biases[layer + 1], trunc, diag_only=layer + 1 == last)
    return LayerMeans(pre, act, state.mean, pre_var, slope)


@dataclass
class _State:
    """Cumulants of one layer's neurons (z before a nonlinear step, a after it).

    ``cov`` [width, width], or its diagonal [width] at K=1 and at the last hidden layer.
    ``k3``/``k4`` [width]: per-neuron cumulants (k3 only below K=3, where it is not factored).
    K=2 augment: ``m`` [width] and ``p`` (scalar) with M_ij ~ r_i m_j, P_ij ~ r_i r_j p; ``r``
    [width] the row norms sum_a W_ia^2 of the last W.
    K=3: ``blocks``, the third cumulant sum_r Sym(A[:, r] x B[:, r] x C[:, r]) as a list of
    (A, B, C or None = B), each [width, rank]; ``P`` [width, width] (zero diagonal);
    ``ties`` (one per block): None, or (slot, s, scale) when factor ``slot`` (0 = A, 1 = B) of that
    block is X_s diag(scale) (scale None: X_s), X_s the map of ``sources[s]``;
    ``sources`` the carried diagonal k4 sources [(X [width, width], kw [width])] and ``sources_P``
    [width, width] their pair slice; augment: ``T`` = (U, V) [width, rank] with
    k4(z)_ijkk ~ sum_x U_ix U_jx V_kx and ``T_star`` its star-like part.
    After a nonlinear step: ``fresh`` (new third-cumulant terms, for ``_linear``), ``quartic``
    (k4(a) slices, from ``_quartic_terms``) or ``trace_terms`` (K=2 augment)."""

    mean: torch.Tensor
    cov: torch.Tensor | None
    k3: torch.Tensor | None = None
    k4: torch.Tensor | None = None
    m: torch.Tensor | None = None
    p: torch.Tensor | None = None
    r: torch.Tensor | None = None
    blocks: list | None = None
    ties: list = field(default_factory=list)
    P: torch.Tensor | None = None
    sources: list = field(default_factory=list)
    sources_P: torch.Tensor | None = None
    T: tuple | None = None
    T_star: tuple | None = None
    fresh: dict | None = None
    quartic: dict | None = None
    trace_terms: dict | None = None
    slope: torch.Tensor | None = None


def _input_state(mlp: RandomMLP, trunc: _Truncation, diag_only: bool = False) -> _State:
    """First pre-activation z = W_1 x + b_1: exactly Gaussian."""
    w, b = mlp.weights[0], mlp.biases[0]
    n = w.shape[0]
    mean = b.clone() if b is not None else w.new_zeros(n)  # [width]
    cov = (w * w).sum(1) if (trunc.order == 1 or diag_only) else symmetric_product(w, w)  # [width] or [width, width]
    out = _State(mean, cov)
    if trunc.augment or trunc.order == 3:
        out.k4 = w.new_zeros(n)
    if trunc.augment and trunc.order < 3:
        out.k3 = w.new_zeros(n)
    if trunc.traces:
        out.m, out.p, out.r = w.new_zeros(n), w.new_zeros(()), (w * w).sum(1)
    if trunc.order == 3:
        out.blocks = []
        out.P = w.new_zeros(n, n)
    return out


def symmetric_product(L: torch.Tensor, R: torch.Tensor, parts: int = SYMMETRIC_PARTS) -> torch.Tensor:
    """L @ R^T [..., rows, rows] for L [..., rows, k] and R [rows, k] (or [..., rows, k]) whose product
    is known to be symmetric (W C W^T, W^2 R W^2^T, per leading index): the rows in ``parts`` blocks,
    each multiplied only from its diagonal block on ((parts + 1) / (2 parts) of the FLOPs, like BLAS's
    syrk), the rest mirrored. ``parts=1`` is the plain product; a test holds the two equal."""
    n = L.shape[-2]
    if parts <= 1 or n < 2 * parts:
        return L @ R.transpose(-1, -2)
    edges = [n * i // parts for i in range(parts + 1)]
    out = L.new_empty(L.shape[:-1] + (n,))
    for a, b in zip(edges, edges[1:]):
        block = L[..., a:b, :] @ R[..., a:, :].transpose(-1, -2)  # [..., b - a, n - a]: from the diagonal block on
        out[..., a:b, a:] = block
        out[..., b:, a:b] = block[..., b - a :].transpose(-1, -2)  # its mirror below the diagonal block
    return out


def _diag(cov: torch.Tensor) -> torch.Tensor:
    """Per-neuron variances [width] from a covariance [width, width] or its stored diagonal [width]."""
    return cov if cov.ndim == 1 else torch.diagonal(cov)


def third_diagonal(blocks: list) -> torch.Tensor:
    """k3_iii [width] of sum_r Sym(A_r x B_r x C_r) (``blocks`` as in ``_State``)."""
    return sum((A * B * (B if C is None else C)).sum(1) for A, B, C in blocks)


def third_pair_slice(
    blocks: list, n: int, like: torch.Tensor, ties: list | None = None, sources: list | None = None
) -> torch.Tensor:
    """M [width, width] with M[i, j] = k3_iij of sum_r Sym(A_r x B_r x C_r) (zero blocks: zeros):
    a sum of products coef (X o Y) Z^T over each block's factors. With ``ties`` and ``sources`` (as
    in ``_State``), the products whose right factor Z is tied to a source map X_s are summed first,
    (X o Y o scale) X_s^T: a layer's star and slab share X_s, so one product serves both. Without
    them, every product is made on its own (the plain algorithm; a test holds the two equal)."""
    out = like.new_zeros(n, n)
    on_source = {}  # s -> [width, width], the summed left factors of the products with X_s^T
    for block, tie in zip(blocks, ties or [None] * len(blocks), strict=True):
        A, B, C = block
        if C is None:  # Sym(A x B x B)
            terms = ((2.0 / 3.0, A * B, 1), (1.0 / 3.0, B * B, 0))
        else:
            terms = ((1.0 / 3.0, A * B, 2), (1.0 / 3.0, A * C, 1), (1.0 / 3.0, B * C, 0))
        for coef, left, slot in terms:
            if tie is not None and sources is not None and tie[0] == slot:
                _, src, scale = tie
                left = coef * left if scale is None else coef * left * scale
                on_source[src] = on_source[src] + left if src in on_source else left
            else:
                out = out + coef * left @ block[slot].T
    for src, left in on_source.items():
        out = out + left @ sources[src][0].T
    return out


def _third_diag(s: _State) -> torch.Tensor | None:
    """k3(z_i) per neuron: from the factored tensor (K=3) or the tracked vector."""
    if s.blocks is not None:
        return third_diagonal(s.blocks) if s.blocks else torch.zeros_like(s.mean)
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


def _nonlinear(s: _State, activation: str, trunc: _Truncation, terms: int, mean_only: bool = False) -> _State:
    """Cumulants of a = phi(z) from those of z (only the mean when ``mean_only``), keeping
    ``terms`` Mehler terms for off-diagonal covariances."""
    var = _diag(s.cov)
    kmax = max(terms, 4)
    c = derivative_expectations(activation, 1, s.mean, var, kmax)  # [kmax + 1, width]: c[k] = E_G[phi^(k)]
    k3_raw = _third_diag(s)
    k3z, k4z = _perturbative(k3_raw, var, 3), _perturbative(s.k4, var, 4)
    mean = edgeworth_expectation(c, k3z, k4z)
    if mean_only:
        return _State(mean, None, slope=c[1])
    d2 = derivative_expectations(activation, 2, s.mean, var, 4)  # [5, width]: E_G[(phi^2)^(k)]
    a_var = edgeworth_expectation(d2, k3z, k4z) - mean * mean
    out = _State(mean, a_var, slope=c[1])
    edge = None  # Edgeworth cumulants of a, where a variant uses them
    if trunc.traces or trunc.cost3:
        edge = edgeworth_cumulants(activation, s.mean, var, k3z, k4z)
    if trunc.augment and trunc.order == 1:
        out.k3, out.k4 = gaussian_cumulants(activation, s.mean, var, 4)[2:]
    if trunc.traces:
        out.k3, out.k4 = edge[2], edge[3]
    if trunc.order == 3:
        out.k4 = gaussian_cumulants(activation, s.mean, var, 4)[3]
        carried = [(c[1][:, None] * X, kw) for X, kw in s.sources]  # sources move with c1 on each leg
        if trunc.cost3:
            # Edgeworth k4(a) already holds c1^4 times the carried sources' diagonal: keep only the rest
            out.k4 = edge[3] - c[1] ** 4 * sum(((X * X) ** 2) @ kw for X, kw in s.sources)
        out.sources = carried
    if trunc.order == 1:
        return out

    S = s.cov
    n = S.shape[0]
    off = 1 - torch.eye(n, dtype=S.dtype)
    cov = torch.zeros_like(S)
    S_pow = torch.ones_like(S)
    for k in range(1, terms + 1):
        S_pow = S_pow * S
        cov = cov + (c[k][:, None] * c[k][None, :] / math.factorial(k)) * S_pow
    M = P = None  # k3(z)_iij and k4(z)_iijj [width, width]
    if trunc.traces:
        M = s.r[:, None] * s.m[None, :]
        P = s.p * torch.outer(s.r, s.r)
    elif trunc.order == 3:
        M = third_pair_slice(s.blocks, n, S, s.ties, s.sources)
        P = s.P
    if M is not None:
        shift = 0.5 * c[2][:, None] * c[1][None, :] * M  # (c2_i c1_j k3_iij + c1_i c2_j k3_ijj)/2
        cov = cov + shift + shift.T + 0.25 * torch.outer(c[2], c[2]) * P  # + c2_i c2_j k4_iijj / 4
    if trunc.cost3:
        x = 0.5 * c[3][:, None] * c[2][None, :] * S * M  # S_ij (c3_i c2_j k3_iij) / 2
        cov = cov + x + x.T + 0.25 * torch.outer(c[3], c[3]) * S * P
        if s.T is not None:  # (1,3) blocks, k4(z)_ijjj ~ 3 T_ijj: (c3_j c1_i 3 T_ijj) / 6
            U, V = s.T
            T_jij = (U * V) @ U.T  # [width, width]: [j, i] = T_ijj
            y = 0.5 * c[3][:, None] * c[1][None, :] * T_jij
            cov = cov + y + y.T
    out.cov = cov * off + torch.diag(a_var)
    if trunc.traces:
        out.trace_terms = _trace_terms(s, c, d2, mean, M, P, off)
    if trunc.order == 3:
        out.blocks, out.fresh = _third_factors(s, c, d2, activation, var, M, edge, trunc, off)
        out.ties = s.ties
        out.quartic = _quartic_terms(s, c, d2, activation, M, trunc, off)
    return out


def _centred_square(c: torch.Tensor, d2: torch.Tensor, mu: torch.Tensor | None = None) -> tuple:
    """(e1, e2, e3), e_k = E_G[g^(k)] [width] of the centred square g = (phi - mu)^2, mu = E_G[phi] unless given."""
    mu = c[0] if mu is None else mu
    return tuple(d2[k] - 2 * mu * c[k] for k in (1, 2, 3))


def _trace_terms(s: _State, c, d2, mean, M, P, off) -> dict:
    """K=2 augment: the (2,1) slice L [width, width], the star traces sc [width], the pair slice's
    sum and sum_j t_j |G_.j|^2 (module docstring), centred at the Edgeworth ``mean`` of a [width]."""
    S = s.cov
    e1, e2, _ = _centred_square(c, d2, mean)
    h = e2 / 2
    G = c[1][:, None] * S * off  # [width, width]: G[j, m] = c1_j S_jm
    L = (
        e1[:, None] * c[1][None, :] * S
        + 0.5 * e2[:, None] * c[2][None, :] * S * S
        + 0.5 * e2[:, None] * c[1][None, :] * M
        + 0.5 * e1[:, None] * c[2][None, :] * M.T
        + 0.25 * e2[:, None] * c[2][None, :] * P
    ) * off
    c1sq = c[1] ** 2
    hM = h[:, None] * e1[None, :] * M
    pairs = (
        torch.outer(h, h) * (P + 2 * S * S) - 2 * torch.outer(c1sq, c1sq) * S * S + torch.outer(e1, e1) * S + hM + hM.T
    ) * off
    G2 = (G * G).sum(0)  # [width]: |G_.l|^2
    return {"L": L, "sc": c[2] * G2, "pairs_sum": pairs.sum(), "star_sum": ((2 * h - 2 * c1sq) * G2).sum()}


def _quartic_terms(s: _State, c, d2, activation: str, M, trunc: _Truncation, off) -> dict:
    """The fourth cumulants of a that reach O(1/n) in the next layer (module docstring): ``pairs``
    [width, width] (zero diagonal), star weights ``t`` [width], the (3,1) slice ``r31`` [j, k] =
    k4(a)_jjjk; augment: the (2,1,1) pieces (``k3_211`` = (z blocks, e1, c1), path ``e1S``
    [j, k] = e1_j S_jk, ``c2``) and the carried star-like part ``T_star`` of T."""
    S = s.cov
    e1, e2, _ = _centred_square(c, d2)
    h = e2 / 2
    c1sq = c[1] * c[1]
    pairs = torch.outer(h, h) * (s.P + 2 * S * S) - 2 * torch.outer(c1sq, c1sq) * S * S
    if s.sources_P is not None:  # carried sources already give c1^2 c1^2 of their pair slice
        pairs = pairs - torch.outer(c1sq, c1sq) * s.sources_P
    va = d2[0] - c[0] ** 2
    d3 = derivative_expectations(activation, 3, s.mean, torch.diagonal(S), 2)  # [3, width]: E_G[(phi^3)^(k)]
    xi = d3[1] - 3 * c[0] * d2[1] + 3 * c[0] ** 2 * c[1] - 3 * va * c[1]
    xi2 = d3[2] - 3 * c[0] * d2[2] + 3 * c[0] ** 2 * c[2] - 3 * va * c[2]
    r31 = (
        xi[:, None] * c[1][None, :] * S
        + 0.5 * xi2[:, None] * c[2][None, :] * S * S
        + 0.5 * xi2[:, None] * c[1][None, :] * M
        + 0.5 * xi[:, None] * c[2][None, :] * M.T
    )
    out = {"r31": r31 * off, "t": 2 * h - 2 * c1sq}
    if trunc.cost3:
        hM = h[:, None] * e1[None, :] * M
        pairs = pairs + torch.outer(e1, e1) * S + hM + hM.T
        out["k3_211"] = (s.blocks, e1, c[1])
        out["e1S"] = e1[:, None] * S * off
        out["c2"] = c[2]
        if s.T_star is not None:
            U, V = s.T_star
            out["T_star"] = (c[1][:, None] * U, c1sq[:, None] * V)
    out["pairs"] = pairs * off
    return out


def _third_factors(s: _State, c, d2, activation: str, var, M, edge, trunc: _Truncation, off):
    """k3(a): the transported blocks of k3(z) (scaled by c1) and the fresh terms (module docstring):
    returns (blocks, fresh) with fresh = {G, star (third star factor or None = c2 G), slab [j, l] with
    its diagonal, B1 columns (ea, eb) or None, c2}."""
    S = s.cov
    G = c[1][:, None] * S * off  # [width, width]: G[j, m] = c1_j S_jm, zero diagonal
    e1, e2, e3 = _centred_square(c, d2)
    star = None
    star_c = c[2][None, :] * G  # third factor of the star centred at m (column m)
    if trunc.cost3:
        F3 = c[1][:, None] * M.T / 2 + c[2][:, None] * (S * S) / 2 + c[2][:, None] * s.P / 4
        F2 = c[2][:, None] * M / 2
        H = (c[3][None, :] * F3 + c[2][None, :] * F2) * off  # heavy legs H[i, m]
        star = star_c = star_c + 2 * H
    # Cum(phi_j, phi_j, phi_l) = Cov((phi_j - c0_j)^2, phi_l) by Mehler to second order, minus what
    # the star centred at l already puts there (G_jl C*_jl).
    slab = e1[:, None] * c[1][None, :] * S + 0.5 * e2[:, None] * c[2][None, :] * S * S - G * star_c
    # k3(z)_jjl is coherent across j; the transported blocks already carry c1_j^2 c1_l of it.
    slab = slab + (0.5 * e2 - c[1] ** 2)[:, None] * c[1][None, :] * M
    slab = slab + 0.5 * e1[:, None] * c[2][None, :] * M.T + 0.25 * e2[:, None] * c[2][None, :] * s.P
    if trunc.cost3:
        slab = slab + 0.5 * e3[:, None] * c[2][None, :] * S * M + 0.5 * e2[:, None] * c[3][None, :] * S * M.T
        slab = slab + 0.25 * e3[:, None] * c[3][None, :] * S * s.P
        # diagonal: Edgeworth k3(a), minus the c1^3 k3(z)_jjj the transported blocks already put there
        k3_diag = edge[2] - c[1] ** 3 * _third_diag(s)
    else:
        k3_diag = gaussian_cumulants(activation, s.mean, var, 3)[2]
    b1 = None
    if trunc.cost3 and s.T is not None:
        # B1: c1_i c1_j c2_k T_ijk / 2 as Sym(ea x eb x eb), T from this layer's pair and star columns
        n = S.shape[0]
        U, V = s.T[0][:, : 2 * n], s.T[1][:, : 2 * n]
        ea, eb = 1.5 * c[2][:, None] * V, c[1][:, None] * U
        b1 = (ea, eb)
        # it is a distinct-index term: remove what it puts on the (j, j, l) and (j, j, j) slices
        slab = slab - (2 * (ea * eb) @ eb.T + (eb * eb) @ ea.T) / 3
        k3_diag = k3_diag - (ea * eb * eb).sum(1)
    slab = slab * off + torch.diag(k3_diag / 3)
    c1 = c[1][:, None]
    blocks = [(c1 * A, c1 * B, None if C is None else c1 * C) for A, B, C in s.blocks]  # ties carry over
    return blocks, {"G": G, "star": star, "slab": slab, "b1": b1, "c2": c[2]}


def _linear(a: _State, w: torch.Tensor, b: torch.Tensor | None, trunc: _Truncation, diag_only: bool = False) -> _State:
    """Cumulants of z = W a + b (per-neuron ones only when ``diag_only``)."""
    mean = w @ a.mean
    if b is not None:
        mean = mean + b
    if a.cov is None:
        return _State(mean, None)
    w2 = w * w
    if trunc.order == 1:
        cov = w2 @ a.cov
    else:
        WC = w @ a.cov  # [width, width]
        cov = (WC * w).sum(1) if diag_only else symmetric_product(WC, w)
    out = _State(mean, cov)
    if a.k3 is not None:
        out.k3 = (w2 * w) @ a.k3
    if a.k4 is not None:
        out.k4 = (w2 * w2) @ a.k4
    if a.trace_terms is not None:
        _linear_traces(a, w, w2, out)
    if a.blocks is not None:
        out.sources = [(w @ X, kw) for X, kw in a.sources] + [(w, a.k4)]  # X_s' = W X_s; this layer's is W
        _linear_third(a, w, out)
        _linear_fourth(a, w, w2, out, diag_only)
    return out


def _linear_traces(a: _State, w, w2, out: _State) -> None:
    """K=2 augment: k3(z')_i, k4(z')_i, m', p', r' from the trace terms (module docstring)."""
    t = a.trace_terms
    n = a.mean.shape[0]
    out.r = w2.sum(1)
    WL = w @ t["L"].sum(0)  # [width]
    Wsc = w @ t["sc"]  # [width]
    out.k3 = out.k3 + 3 * ((w2 @ t["L"]) * w).sum(1) + out.r * Wsc / n
    out.m = (WL + Wsc) / n
    out.k4 = out.k4 + 3 * out.r * out.r * t["pairs_sum"] / n**2
    out.p = (t["pairs_sum"] + a.k4.sum() + 2 * t["star_sum"]) / n**2


def _linear_third(a: _State, w, out: _State) -> None:
    """K=3: move every k3 block by W and add the fresh ones (star, slab, B1). A factor tied to a
    source map (``_State.ties``) is that map, already moved in ``out.sources``, times its scale."""
    f = a.fresh
    WG = w @ f["G"]
    moved = [_move_block(block, tie, w, out.sources) for block, tie in zip(a.blocks, a.ties, strict=True)]
    s = len(a.sources)  # index of this layer's source (W, k4(a)) in out.sources
    if f["star"] is None:
        scale = 3 * f["c2"]
        fresh = [(w * scale[None, :], WG, None)]  # Sym(3 c2_m e_m x G_m x G_m)
        ties = [(0, s, scale)]
    else:
        fresh = [(3 * w, WG, w @ f["star"])]  # Sym(3 e_m x G_m x C*_m)
        ties = [(0, s, 3.0)]
    fresh.append((3 * (w @ f["slab"].T), w, None))  # Sym(3 slab_.j x e_j x e_j)
    ties.append((1, s, None))
    if f["b1"] is not None:
        fresh.append((w @ f["b1"][0], w @ f["b1"][1], None))
        ties.append(None)
    out.blocks = moved + fresh
    out.ties = a.ties + ties
    out.fresh = {"WG": WG, "moved": moved}


def _move_block(block: tuple, tie, w: torch.Tensor, sources: list) -> tuple:
    """W on every factor of one k3 block (A, B, C), each [width, rank]; a tied factor is taken from
    the moved source map instead of a product with W."""
    moved = []
    for slot, F in enumerate(block):
        if tie is not None and tie[0] == slot:
            X, scale = sources[tie[1]][0], tie[2]
            moved.append(X if scale is None else X * scale)
        else:
            moved.append(None if F is None else w @ F)
    return tuple(moved)


def _linear_fourth(a: _State, w, w2, out: _State, diag_only: bool) -> None:
    """K=3: k4(z')_iiii and P' (and T' for augment) from the k4(a) slices and the carried sources."""
    q, G, WG, moved = a.quartic, a.fresh["G"], out.fresh["WG"], out.fresh["moved"]
    out.fresh = None
    n = w.shape[0]
    off = 1 - torch.eye(n, dtype=w.dtype)
    sources = out.sources[:-1]  # the carried ones, moved by W
    for X, kw in sources:
        out.k4 = out.k4 + ((X * X) ** 2) @ kw
    # Pairs and stars: 3 sum_{a!=b} W_ia^2 W_ib^2 pairs_ab + 6 sum_j W_ij^2 t_j sum_{k!=l} W_ik W_il G_kj G_lj.
    # The stars' k != l is (WG)_ij^2 minus its k = l part sum_k W_ik^2 Q_kj, Q_kj = G_kj^2 t_j, which
    # joins the pairs: R = pairs - Q - Q^T, so one product w2 @ R serves both k4 and P.
    Xt = w2 * q["t"][None, :]  # [width, width]: W_ij^2 t_j
    WG2 = WG * WG  # [width, width]: (sum_k W_ik G_kj)^2
    Q = G * G * q["t"][None, :]  # [width, width]
    XR = w2 @ (q["pairs"] - Q - Q.T)  # [width, width]
    out.k4 = out.k4 + 3 * (XR * w2).sum(1) + 6 * (Xt * WG2).sum(1)
    out.k4 = out.k4 + 4 * ((w @ q["r31"].T) * w2 * w).sum(1)  # 4 sum_{j!=k} W_ij^3 W_ik k4(a)_jjjk
    star_u, star_v = [WG], [Xt]  # star-like part of T': sum_x U_ix U_jx V_kx
    extra_P = 0.0
    if "k3_211" in q:
        # path: 12 sum_k W_ik c2_k (sum_b W_ib^2 e1_b S_bk) (WG)_ik
        out.k4 = out.k4 + 12 * (w * q["c2"][None, :] * (w2 @ q["e1S"]) * WG).sum(1)
        # k3 blocks: e1_b c1_c c1_d k3(z)_bcd with each leg of a block as b, c != d
        z_blocks, e1, c1 = q["k3_211"]
        F = 0.0
        for (Az, Bz, Cz), (Aa, Ba, Ca) in zip(z_blocks, moved):
            if Cz is None:  # Sym(A x B x B): the B and C legs as b give the same term
                choices = ((Az, Ba, Ba, Bz, Bz, 1), (Bz, Aa, Ba, Az, Bz, 2))
            else:
                choices = ((Az, Ba, Ca, Bz, Cz, 1), (Bz, Aa, Ca, Az, Cz, 1), (Cz, Aa, Ba, Az, Bz, 1))
            for Vb, X1, X2, Y1, Y2, times in choices:
                V3 = w2 @ (e1[:, None] * Vb) * (times / 3)
                UU = X1 * X2 - w2 @ ((c1 * c1)[:, None] * Y1 * Y2)
                out.k4 = out.k4 + 6 * (V3 * UU).sum(1)
                if not diag_only:
                    F = F + V3 @ UU.T
        if not diag_only and torch.is_tensor(F):
            extra_P = extra_P + F + F.T
    if "T_star" in q:  # transported star-like part: c1^2 c1 c1 k4(z)_bbcd, k4(z)_bbcd ~ sum_x U_cx U_dx V_bx
        Ua, Va = q["T_star"]
        U2, V2 = w @ Ua, w2 @ Va
        Yt = U2 * U2 - w2 @ (Ua * Ua)
        out.k4 = out.k4 + 6 * (V2 * Yt).sum(1)
        star_u.append(U2)
        star_v.append(V2)
        if not diag_only:
            x = V2 @ Yt.T
            extra_P = extra_P + x + x.T
    if diag_only:
        return
    star = Xt @ WG2.T
    fresh_P = symmetric_product(w2 * a.k4[None, :], w2)  # pair slice of this layer's new diagonal source
    carried_P = sum(symmetric_product((X * X) * kw[None, :], X * X) for X, kw in sources) * off if sources else 0.0
    P = symmetric_product(XR, w2) + fresh_P + star + star.T + extra_P + carried_P
    out.P = P * off
    out.sources_P = carried_P + fresh_P * off
    if "k3_211" in q:
        out.T_star = (torch.cat(star_u, 1), torch.cat(star_v, 1))
        XP = w2 @ q["pairs"]  # [width, width]: sum_b W_ib^2 pairs_bk
        out.T = (torch.cat([w] + star_u, 1), torch.cat([XP + w2 * a.k4[None, :]] + star_v, 1))
