"""Gaussian expectations of activation functions and their derivatives.

Everything the estimators need from the nonlinearity is

    D[p, k] = E[ d^k/dz^k phi(z)^p ],   z ~ N(mean, var)   (elementwise over neurons)

By Gaussian integration by parts, E[g^(k)(mu + s Z)] = s^-k E[g(mu + s Z) He_k(Z)] with
He_k the probabilists' Hermite polynomials, so one quadrature gives every k. ReLU has a
kink, where quadrature converges slowly, so it gets closed forms instead. All functions
are differentiable in ``mean`` and ``var``.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import torch

from probity.estimate.activations import ACTIVATIONS, SLOPES, check_activation

# Gauss-Hermite points: 64 give 1e-10 at variance 4 for the smooth activations except tanh,
# whose poles at +-i pi/2 need 200 for 1e-9 at variance 2.
QUADRATURE_POINTS = {"tanh": 200}
DEFAULT_POINTS = 64
_SQRT2PI = math.sqrt(2 * math.pi)


@cache
def _hermite_table(kmax: int, points: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Hermite nodes [points] and weights times He_k(node) [kmax + 1, points], normalised to N(0,1)."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(points)
    weights = weights / weights.sum()
    he = np.zeros((kmax + 1, points))
    he[0] = 1.0
    if kmax >= 1:
        he[1] = nodes
    for k in range(1, kmax):
        he[k + 1] = nodes * he[k] - k * he[k - 1]
    return nodes, he * weights


def hermite(k: int, t: torch.Tensor) -> torch.Tensor:
    """Probabilists' Hermite polynomial He_k(t), elementwise."""
    prev, cur = torch.ones_like(t), t
    if k == 0:
        return prev
    for j in range(1, k):
        prev, cur = cur, t * cur - j * prev
    return cur


def _relu_moment(p: int, mean: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """E[relu(z)^p], z ~ N(mean, s^2), closed form for p <= 4."""
    t = mean / s
    cdf = 0.5 * (1 + torch.erf(t / math.sqrt(2)))
    pdf = torch.exp(-0.5 * t * t) / _SQRT2PI
    m = mean
    if p == 0:
        return torch.ones_like(mean)
    if p == 1:
        return m * cdf + s * pdf
    if p == 2:
        return (m * m + s * s) * cdf + m * s * pdf
    if p == 3:
        return (m**3 + 3 * m * s * s) * cdf + (m * m + 2 * s * s) * s * pdf
    if p == 4:
        return (m**4 + 6 * m * m * s * s + 3 * s**4) * cdf + (m**3 + 5 * m * s * s) * s * pdf
    raise ValueError(f"closed-form ReLU moments go up to power 4, got {p}")


def _relu_derivative(p: int, k: int, mean: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """E[(relu^p)^(k)(z)]: (relu^p)' = p relu^(p-1) for p >= 2; relu' = step; step^(m) = delta^(m-1)."""
    if k == 0:
        return _relu_moment(p, mean, s)
    if p >= 2:
        return p * _relu_derivative(p - 1, k - 1, mean, s)
    t = mean / s
    if k == 1:
        return 0.5 * (1 + torch.erf(t / math.sqrt(2)))
    m = k - 2  # E[delta^(m)(z)] = (-1)^m s^-(m+1) He_m(t) pdf(t)
    return (-1) ** m * hermite(m, t) * torch.exp(-0.5 * t * t) / (_SQRT2PI * s ** (m + 1))


def derivative_expectations(activation: str, p: int, mean: torch.Tensor, var: torch.Tensor, kmax: int) -> torch.Tensor:
    """D[k] = E[(phi^p)^(k)(z)] for k = 0..kmax, z ~ N(mean, var): [kmax + 1, *mean.shape]."""
    check_activation(activation)
    s = var.clamp_min(1e-300).sqrt()
    if activation == "relu":
        return torch.stack([_relu_derivative(p, k, mean, s) for k in range(kmax + 1)])
    nodes, he_w = _hermite_table(kmax, QUADRATURE_POINTS.get(activation, DEFAULT_POINTS))
    nodes_t = torch.as_tensor(nodes, dtype=mean.dtype)
    vals = ACTIVATIONS[activation](mean[..., None] + s[..., None] * nodes_t) ** p  # [..., points]
    proj = vals @ torch.as_tensor(he_w, dtype=mean.dtype).T  # [..., kmax + 1]
    scale = s[..., None] ** -torch.arange(kmax + 1, dtype=mean.dtype)
    return (proj * scale).movedim(-1, 0)


def gaussian_moment(
    activation: str, p: int, mean: torch.Tensor, var: torch.Tensor, derivative: bool = False
) -> torch.Tensor:
    """E[phi(z)^p] (or E[phi'(z)^p] when ``derivative``), z ~ N(mean, var) elementwise: shaped like ``mean``."""
    if not derivative:
        return derivative_expectations(activation, p, mean, var, 0)[0]
    if activation == "relu":
        return _relu_derivative(1, 1, mean, var.sqrt())  # step^p = step
    nodes, he_w = _hermite_table(0, QUADRATURE_POINTS.get(activation, DEFAULT_POINTS))
    z = mean[..., None] + var.sqrt()[..., None] * torch.as_tensor(nodes, dtype=mean.dtype)
    return SLOPES[activation](z) ** p @ torch.as_tensor(he_w[0], dtype=mean.dtype)


def gaussian_cumulants(activation: str, mean: torch.Tensor, var: torch.Tensor, order: int) -> list[torch.Tensor]:
    """First ``order`` (<= 4) cumulants of phi(z), z ~ N(mean, var) elementwise:
    [mean, var, k3, k4][:order], each shaped like ``mean``."""
    m = [derivative_expectations(activation, p, mean, var, 0)[0] for p in range(1, order + 1)]
    out = [m[0]]
    if order >= 2:
        out.append(m[1] - m[0] ** 2)
    if order >= 3:
        out.append(m[2] - 3 * m[1] * m[0] + 2 * m[0] ** 3)
    if order >= 4:
        out.append(m[3] - 4 * m[2] * m[0] - 3 * m[1] ** 2 + 12 * m[1] * m[0] ** 2 - 6 * m[0] ** 4)
    return out


def edgeworth_expectation(D: torch.Tensor, k3: torch.Tensor | None, k4: torch.Tensor | None) -> torch.Tensor:
    """E[g(z)] from Gaussian derivative expectations D[k] = E_G[g^(k)] ([>= 5, width]) and small
    third and fourth cumulants k3, k4 [width] (None = 0): E_G[g] + k3/6 E_G[g^(3)] + k4/24 E_G[g^(4)]
    (Edgeworth, first order in each)."""
    out = D[0]
    if k3 is not None:
        out = out + k3 / 6 * D[3]
    if k4 is not None:
        out = out + k4 / 24 * D[4]
    return out


def edgeworth_cumulants(
    activation: str, mean: torch.Tensor, var: torch.Tensor, k3: torch.Tensor | None, k4: torch.Tensor | None
) -> list[torch.Tensor]:
    """First four cumulants [mean, var, k3, k4] of phi(z) for z with ``mean``, ``var`` and small
    third and fourth cumulants ``k3``, ``k4`` (None = 0), each shaped like ``mean``: the raw moments
    E[phi^p] by :func:`edgeworth_expectation`, then cumulants. With ``k3 = k4 = None`` this is
    :func:`gaussian_cumulants` at order 4."""
    m = [edgeworth_expectation(derivative_expectations(activation, p, mean, var, 4), k3, k4) for p in range(1, 5)]
    c2 = m[1] - m[0] ** 2
    c3 = m[2] - 3 * m[1] * m[0] + 2 * m[0] ** 3
    c4 = m[3] - 4 * m[2] * m[0] - 3 * m[1] ** 2 + 12 * m[1] * m[0] ** 2 - 6 * m[0] ** 4
    return [m[0], c2, c3, c4]
