"""The plain algorithm beside ``propagate.kprop``'s factored K=3: the same truncation with dense tensors.

``propagate`` never materialises an n^3 or n^4 tensor: the third cumulant is a list of factor blocks,
the one-pair fourth-cumulant slice T a pair of column sets, the carried diagonal sources a list of
composite maps, and the fourth cumulant of z' is read off through identities such as
sum_{k != l} W_ik W_il G_kj G_lj = (W G)_ij^2 - (W^2 G^2)_ij. Here every one of those objects is a
dense tensor and every contraction an explicit ``einsum`` over the terms as the module docstring of
``propagate`` states them: k3 [width, width, width] moved by W on all three indices, T and its star
part [width, width, width], the carried sources as one [width]^4 tensor. Only for tests at small
width (n <= 12): ``tests/estimate`` checks that both give the same numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from probity.estimate.gauss import (
    derivative_expectations,
    edgeworth_cumulants,
    edgeworth_expectation,
    gaussian_cumulants,
)
from probity.estimate.mlp import RandomMLP, check_mlp
from probity.estimate.propagate import LayerMeans, _centred_square, _perturbative

MAX_WIDTH = 12


def third_tensor(blocks: list, n: int) -> torch.Tensor:
    """Dense [width, width, width] tensor of sum_r Sym(A_r x B_r x C_r) (C = B when None): the mean
    of A x B x C over the six orders of its legs."""
    out = torch.zeros(n, n, n, dtype=torch.float64)
    for A, B, C in blocks:
        C = B if C is None else C
        for X, Y, Z in ((A, B, C), (A, C, B), (B, A, C), (B, C, A), (C, A, B), (C, B, A)):
            out = out + torch.einsum("ir,jr,kr->ijk", X, Y, Z).to(out.dtype) / 6
    return out


@dataclass
class _Dense:
    """One layer's cumulants as dense tensors: ``mean`` [width], ``cov`` [width, width], ``k3``
    [width]^3, ``k4`` [width] (k4_iiii less the carried sources), ``P`` [width, width] (zero
    diagonal), ``sources`` [width]^4 (the carried diagonal sources), augment: ``T``, ``T_fresh``
    (this layer's pair and star part), ``T_star`` (star-like part), each [width]^3 with
    T[i, j, k] ~ k4_ijkk."""

    mean: torch.Tensor
    cov: torch.Tensor
    k3: torch.Tensor
    k4: torch.Tensor
    P: torch.Tensor
    sources: torch.Tensor
    T: torch.Tensor | None = None
    T_fresh: torch.Tensor | None = None
    T_star: torch.Tensor | None = None


def kprop_dense(mlp: RandomMLP, variant: str = "simple", series_order: int = 8) -> LayerMeans:
    """K=3 ``kprop`` (``variant`` "simple" or "augment") with dense tensors: a ``LayerMeans`` like
    ``kprop(mlp, 3, variant)``. Width at most ``MAX_WIDTH``; at least 2 hidden layers."""
    check_mlp(mlp)
    n = mlp.weights[0].shape[0]
    if n > MAX_WIDTH or mlp.hidden_layers < 2:
        raise ValueError(
            f"kprop_dense is for tests: width <= {MAX_WIDTH}, >= 2 hidden layers; got {n}, {mlp.hidden_layers}"
        )
    aug = variant == "augment"
    w = mlp.weights[0]
    z = w.new_zeros
    s = _Dense(
        z(n) if mlp.biases[0] is None else mlp.biases[0].clone(), w @ w.T, z(n, n, n), z(n), z(n, n), z(n, n, n, n)
    )
    pre, act, pre_var, slope = [], [], [], []
    for layer in range(mlp.hidden_layers):
        pre.append(s.mean)
        pre_var.append(torch.diagonal(s.cov))
        c, mean = _mean(s, mlp.activation, series_order)
        act.append(mean)
        slope.append(c[1])
        if layer == mlp.hidden_layers - 1:
            break
        s = _layer(s, mlp.activation, mlp.weights[layer + 1], mlp.biases[layer + 1], aug, series_order)
    out = mlp.weights[-1] @ act[-1] + (0 if mlp.biases[-1] is None else mlp.biases[-1])
    return LayerMeans(pre, act, out, pre_var, slope)


def _mean(s: _Dense, activation: str, terms: int):
    """(c [kmax + 1, width], E[a] [width]) by Edgeworth with the dense k3 diagonal and k4."""
    var = torch.diagonal(s.cov)
    c = derivative_expectations(activation, 1, s.mean, var, max(terms, 4))
    k3z = _perturbative(torch.einsum("iii->i", s.k3), var, 3)
    k4z = _perturbative(s.k4 + torch.einsum("iiii->i", s.sources), var, 4)
    return c, edgeworth_expectation(c, k3z, k4z)


def _layer(s: _Dense, activation: str, w: torch.Tensor, b, aug: bool, terms: int) -> _Dense:
    """a = phi(z) then z' = W a + b, every tensor dense."""
    n = s.mean.shape[0]
    S, P, eye = s.cov, s.P, torch.eye(n, dtype=s.cov.dtype)
    off = 1 - eye
    var = torch.diagonal(S)
    c, mean = _mean(s, activation, terms)
    d2 = derivative_expectations(activation, 2, s.mean, var, 4)
    k3_raw = torch.einsum("iii->i", s.k3)
    k4_total = s.k4 + torch.einsum("iiii->i", s.sources)
    k3z, k4z = _perturbative(k3_raw, var, 3), _perturbative(k4_total, var, 4)
    a_var = edgeworth_expectation(d2, k3z, k4z) - mean * mean
    edge = edgeworth_cumulants(activation, s.mean, var, k3z, k4z)
    c1, c2, c3 = c[1], c[2], c[3]
    e1, e2, e3 = _centred_square(c, d2)
    h, c1sq = e2 / 2, c1 * c1
    M = torch.einsum("iij->ij", s.k3)  # k3(z)_iij
    G = c1[:, None] * S * off

    # covariance of a
    cov = sum(torch.outer(c[k], c[k]) * S**k / math.factorial(k) for k in range(1, terms + 1))
    cov = cov + 0.5 * (c2[:, None] * c1[None, :] * M + c1[:, None] * c2[None, :] * M.T) + torch.outer(c2, c2) * P / 4
    if aug:
        cov = cov + 0.5 * S * (c3[:, None] * c2[None, :] * M + c2[:, None] * c3[None, :] * M.T)
        cov = cov + torch.outer(c3, c3) * S * P / 4
        if s.T is not None:
            Tijj = torch.einsum("ijj->ij", s.T)
            cov = cov + 0.5 * (c1[:, None] * c3[None, :] * Tijj + c3[:, None] * c1[None, :] * Tijj.T)
    cov = cov * off + torch.diag(a_var)

    # third cumulant of a: transported + stars + B1 (distinct indices), then the (j, j, l) and (j, j, j) slices set
    k3a = torch.einsum("i,j,k,ijk->ijk", c1, c1, c1, s.k3)
    star_leg = c2[None, :] * G
    if aug:
        F3 = c1[:, None] * M.T / 2 + c2[:, None] * S * S / 2 + c2[:, None] * P / 4
        star_leg = star_leg + 2 * (c3[None, :] * F3 + c2[None, :] * c2[:, None] * M / 2) * off
    Q = 0.5 * (torch.einsum("im,jm->ijm", G, star_leg) + torch.einsum("im,jm->ijm", star_leg, G))  # star centred at m
    k3a = k3a + torch.einsum("jki->ijk", Q) + torch.einsum("ikj->ijk", Q) + Q
    if aug and s.T_fresh is not None:
        Tf = s.T_fresh
        B1 = 0.5 * (
            torch.einsum("i,j,k,ijk->ijk", c1, c1, c2, Tf)
            + torch.einsum("i,j,k,ikj->ijk", c1, c2, c1, Tf)
            + torch.einsum("i,j,k,jki->ijk", c2, c1, c1, Tf)
        )
        distinct = off[:, :, None] * off[:, None, :] * off[None, :, :]
        k3a = k3a + B1 * distinct
    L = e1[:, None] * c1[None, :] * S + e2[:, None] * c2[None, :] * S * S / 2 + e2[:, None] * c1[None, :] * M / 2
    L = L + e1[:, None] * c2[None, :] * M.T / 2 + e2[:, None] * c2[None, :] * P / 4
    if aug:
        L = L + S * (e3[:, None] * c2[None, :] * M + e2[:, None] * c3[None, :] * M.T) / 2
        L = L + e3[:, None] * c3[None, :] * S * P / 4
        k3_diag = edge[2]
    else:
        k3_diag = gaussian_cumulants(activation, s.mean, var, 3)[2] + c1**3 * k3_raw
    for j in range(n):
        for m in range(n):
            if j != m:
                k3a[j, j, m] = k3a[j, m, j] = k3a[m, j, j] = L[j, m]
        k3a[j, j, j] = k3_diag[j]

    # fourth-cumulant slices of a
    sources_a = torch.einsum("i,j,k,l,ijkl->ijkl", c1, c1, c1, c1, s.sources)
    k4a = gaussian_cumulants(activation, s.mean, var, 4)[3]
    if aug:
        k4a = edge[3] - torch.einsum("iiii->i", sources_a)
    pairs = torch.outer(h, h) * (P + 2 * S * S) - 2 * torch.outer(c1sq, c1sq) * S * S
    pairs = pairs - torch.einsum("aabb->ab", sources_a) * off
    if aug:
        pairs = pairs + torch.outer(e1, e1) * S + h[:, None] * e1[None, :] * M + (h[:, None] * e1[None, :] * M).T
    pairs = pairs * off
    t = 2 * h - 2 * c1sq
    va = d2[0] - c[0] ** 2
    d3 = derivative_expectations(activation, 3, s.mean, var, 2)
    xi = d3[1] - 3 * c[0] * d2[1] + 3 * c[0] ** 2 * c1 - 3 * va * c1
    xi2 = d3[2] - 3 * c[0] * d2[2] + 3 * c[0] ** 2 * c2 - 3 * va * c2
    r31 = xi[:, None] * c1[None, :] * S + xi2[:, None] * c2[None, :] * S * S / 2
    r31 = (r31 + xi2[:, None] * c1[None, :] * M / 2 + xi[:, None] * c2[None, :] * M.T / 2) * off

    # linear step
    w2 = w * w
    out = _Dense(
        w @ mean + (0 if b is None else b),
        w @ cov @ w.T,
        torch.einsum("ia,jb,kc,abc->ijk", w, w, w, k3a),
        None,
        None,
        None,
    )
    diag4 = torch.zeros(n, n, n, n, dtype=w.dtype)
    for p in range(n):
        diag4[p, p, p, p] = k4a[p]
    out.sources = torch.einsum("ia,jb,kc,ld,abcd->ijkl", w, w, w, w, sources_a + diag4)
    ne = off  # k != l
    star = torch.einsum("ij,j,ik,il,kj,lj,kl->i", w2, t, w, w, G, G, ne)
    out.k4 = 3 * torch.einsum("ia,ib,ab->i", w2, w2, pairs) + 6 * star + 4 * torch.einsum("ia,ib,ab->i", w2 * w, w, r31)
    star_P = torch.einsum("ix,x,jk,jl,kx,lx,kl->ij", w2, t, w, w, G, G, ne)
    P_new = torch.einsum("ia,jb,ab->ij", w2, w2, pairs) + star_P + star_P.T
    if aug:
        out.k4 = out.k4 + 12 * torch.einsum("ib,b,bk,ik,k,il,lk->i", w2, e1, S * off, w, c2, w, G)
        X211 = torch.einsum("b,c,d,bcd,cd->bcd", e1, c1, c1, s.k3, ne)  # e1_b c1_c c1_d k3(z)_bcd, c != d
        if s.T_star is not None:
            X211 = X211 + torch.einsum("c,d,b,cdb,cd->bcd", c1, c1, c1sq, s.T_star, ne)
        out.k4 = out.k4 + 6 * torch.einsum("ib,ic,id,bcd->i", w2, w, w, X211)
        F = torch.einsum("ib,jc,jd,bcd->ij", w2, w, w, X211)
        P_new = P_new + F + F.T
        WG = w @ G
        star_fresh = torch.einsum("ic,jc,kc,c->ijk", WG, WG, w2, t)
        T_fresh = torch.einsum("ix,jx,kb,bx->ijk", w, w, w2, pairs + torch.diag(k4a)) + star_fresh
        moved = 0.0
        if s.T_star is not None:
            moved = torch.einsum("ic,jd,kb,c,d,b,cdb->ijk", w, w, w2, c1, c1, c1sq, s.T_star)
        out.T_fresh, out.T_star, out.T = T_fresh, star_fresh + moved, T_fresh + moved
    out.P = (P_new + torch.einsum("iijj->ij", out.sources)) * off
    return out
