"""kprop at order K=4: every joint cumulant of a layer up to order four, stored whole (dense), or all but
the distinct slice of the fourth (``repeated``, at the end).

The plain algorithm (ARC's paper's box, with nothing factored). A layer's state is its mean [n],
covariance S [n, n], third cumulant k3 [n, n, n] and fourth cumulant k4 [n, n, n, n]: memory
8 n^4 bytes per fourth-order tensor (134 MB at n=64, 2.1 GB at n=128), O(n^5) FLOPs per layer.

Linear step z' = W a + b, exact: mean' = W mean + b, S' = W S W^T, k3' and k4' = W on every index.

Nonlinear step a = phi(z). Split z's cumulant generating function into an independent Gaussian
part (z_i ~ N(mu_i, v_i), v_i = S_ii) and the rest: the off-diagonal S_ij and every entry of k3 and
k4. For functions F_1..F_r of distinct neurons i_1..i_r,

    Cum(F_1(z_i1), ..., F_r(z_ir)) = sum over connected diagrams D of
                                     w(D) prod_{e in D} kappa_e prod_g E_G[F_g^(deg_g)](i_g)

A diagram is a multiset of hyperedges e, each a cumulant kappa_e of z with its legs on the groups
(S_gh for g != h, k3_ggh, k4_ghkl, ...; the diagonal ones k3_ggg, k4_gggg dress one group, S_gg is the
Gaussian part), connected over the r groups; deg_g counts the legs on group g, E_G is the Gaussian
expectation at the neuron's own (mu, v), and w(D) = 1 / (prod_e prod_g v_eg! prod_types m!) with
v_eg the legs of e on g and m the multiplicity of a hyperedge type (so S_ij^k gets 1/k!: Mehler).
With r = 1 the empty diagram counts and the sum is E[F(z_i)] (Edgeworth).

Power counting (ARC's): a hyperedge whose legs fall on its groups with multiplicities v costs
|v| - 1 - [every v_g even] (S 1, k3 2, k4 3, but k4_iijj and k4_iiii 2); a diagram's cost is the
sum, and a cost-c diagram is O(n^-c/2). K=4 keeps every connected diagram of cost <= B, with
B = K - 1 = 3 (``simple``) or B = K = 4 (``augment``), in every slice below; the covariance also keeps
the pure S chains c_k c_k S^k / k! up to k = ``terms`` (Mehler). Slices with repeated indices are
cumulants of powers of the centred activation a_bar = phi(z) - E[a] (one group each):

    E[a_i]                       one-group diagrams of phi
    Var, k3, k4 of a_i           from mu_p = E[a_bar^p] (one-group diagrams); k4_iiii = mu_4 - 3 mu_2^2
    Cov(a_i, a_j)                Cum(phi_i, phi_j)
    k3(a)_ijk, k4(a)_ijkl        Cum(phi_i, phi_j, phi_k), Cum(phi_i, phi_j, phi_k, phi_l)
    k3(a)_jjl                    Cum(a_bar_j^2, phi_l)
    k4(a)_jjkl                   Cum(a_bar_j^2, phi_k, phi_l) - 2 Cov_jk Cov_jl
    k4(a)_jjkk                   Cum(a_bar_j^2, a_bar_k^2) - 2 Cov_jk^2
    k4(a)_jjjk                   Cum(a_bar_j^3, phi_k) - 3 Var_j Cov_jk

where each product of two series is truncated at total cost B too. E.g. at B = 3 the distinct slice
is c1^4 k4(z)_ijkl + the 16 trees of three S edges (stars c3 c1 c1 c1 S S S, paths c1 c2 c2 c1 S S S)
+ the 12 k3(z)_ijm S_ml c1 c1 c2 c1, and the (2,1,1) slice holds the star t_j G_kj G_lj of K=3 with
t = e_2 - 2 c1^2. Unlike the factored K=3 (``propagate``), nothing is left out for want of a low-rank
form (the S triangle and S x k3_ijk are kept).

Variant ``repeated`` (budget B = 3, O(n^4) FLOPs and O(n^3) memory per layer): the same diagrams, but
the distinct slice k4(a)_ijkl (i, j, k, l all different) is never formed, i.e. set to zero after each
nonlinear step. Then k4(a) is supported on index tuples with a repeat, and all of it is one [n]^3 tensor

    T_jkl = k4(a)_jjkl   (T_jkk: the (2,2) slice, T_jjl = T_jlj: the (3,1) slice, T_jjj: the diagonal)

Nothing in the nonlinear step reads the distinct slice of k4(z) (a k4 hyperedge on at most three groups
has a repeated index), so the state carries only the repeated slices of z's fourth cumulant,
R_ikl = k4(z)_iikl [n]^3, and the repeated variant equals the dense step with the distinct slice of
k4(a) zeroed (``_propagate(..., "zero-distinct")``, the reference the tests compare with). The linear
step needs R, not the dense W^(x)4 k4(a). With m(x) the number of coinciding position pairs of a
4-tuple x (1 for (j,j,k,l), 2 for (j,j,k,k), 3 for (j,j,j,l), 6 for (j,j,j,j)), a symmetric tensor X
supported on tuples with a repeat is

    X_abcd = sum over the 6 position pairs p < q of [x_p = x_q] F_{x_p; the other two},
    F_acd  = T_acd / m(a, a, c, d)

(each tuple is counted once per coinciding pair, hence the 1/m). Moving it by W on every index and
reading the (i, i, k, l) entries gives, with G_a = W F_a W^T [n, n] per a and g_ai = (G_a)_ii,

    R_ikl = sum_a W_ia^2 (G_a)_kl                        (pair on positions 1, 2)
          + sum_a W_ka W_la g_ai                         (pair on 3, 4)
          + 2 sum_a W_ia W_ka (G_a)_il + 2 sum_a W_ia W_la (G_a)_ik   (pairs 13, 23 and 14, 24)

and at the last layer k4(z)_iiii = R_iii = 6 sum_a W_ia^2 g_ai. Cost per layer, plainly: G 4 n^4, the three
sums 2 n^4 each (10 n^4), plus 6 n^4 for the dense k3 and O(n^3) per diagram in the nonlinear step; the last
layer's diagonals 4 n^4. G_a, the first two sums and the moved k3 (per leading index) are symmetric in their
last two indices, so G_a and W k3_a W^T are ``symmetric_product``s and the first two sums and k3's last
product run on the pairs k <= l only: 7.25 n^4 for k4 and 4.25 n^4 for k3 (34.6 n^4 in all at n=64 with 4
hidden layers, from 43.5; the plain forms stay as ``_transport_`` and the tests' dense reference).
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from dataclasses import dataclass
from itertools import combinations_with_replacement

import torch

from probity.estimate.gauss import derivative_expectations
from probity.estimate.mlp import RandomMLP, check_mlp
from probity.estimate.propagate import LayerMeans, _perturbative, symmetric_product

BUDGETS = {"simple": 3, "augment": 4, "repeated": 3}  # the largest diagram cost kept, per variant
LETTERS = "ijkl"  # einsum letter of each group
CHUNK_ENTRIES = 2**22  # entries per chunk of a fourth-order tensor built from diagrams


@dataclass(frozen=True)
class Diagram:
    """A multiset of hyperedges on ``groups`` groups: ``edges``, each the sorted groups of its legs
    (2 legs: S, 3: k3, 4: k4); ``degrees`` the legs on each group; ``weight`` w(D); ``cost``."""

    edges: tuple[tuple[int, ...], ...]
    degrees: tuple[int, ...]
    weight: float
    cost: int


def edge_cost(legs: tuple[int, ...]) -> int:
    """ARC's cost of a hyperedge with these legs: |v| - 1 - [every multiplicity even]."""
    counts = Counter(legs).values()
    return len(legs) - 1 - all(c % 2 == 0 for c in counts)


def _connected(edges, groups: int) -> bool:
    """Whether the hyperedges join all ``groups`` groups into one (one group: always)."""
    reached, frontier = {0}, [0]
    while frontier:
        g = frontier.pop()
        for legs in edges:
            if g in legs:
                new = set(legs) - reached
                reached |= new
                frontier.extend(new)
    return len(reached) == groups


@functools.cache
def diagrams(groups: int, budget: int, orders: tuple[int, ...] = (2, 3, 4)) -> tuple[Diagram, ...]:
    """Every connected diagram on ``groups`` (1-4) groups of cost <= ``budget`` whose hyperedges are
    cumulants of the given ``orders`` (2: S, 3: k3, 4: k4; the others are zero)."""
    types = [
        legs
        for order in orders
        for legs in combinations_with_replacement(range(groups), order)
        if not (order == 2 and legs[0] == legs[1])
    ]
    out = []

    def extend(start: int, chosen: list, cost: int) -> None:
        if _connected(chosen, groups):
            degrees = tuple(sum(legs.count(g) for legs in chosen) for g in range(groups))
            weight = 1.0
            for legs, m in Counter(chosen).items():
                weight /= math.factorial(m) * math.prod(math.factorial(c) for c in Counter(legs).values()) ** m
            out.append(Diagram(tuple(chosen), degrees, weight, cost))
        for t in range(start, len(types)):
            c = edge_cost(types[t])
            if cost + c <= budget:
                extend(t, chosen + [types[t]], cost + c)

    extend(0, [], 0)
    return tuple(out)


@dataclass
class _Cumulants:
    """A layer's cumulants, dense: ``mean`` [n], ``cov`` [n, n] (or its diagonal [n] at the last
    layer), ``k3`` [n, n, n] and ``k4`` [n, n, n, n] (None where zero; at the last layer their
    diagonals [n]). Variant ``repeated`` keeps ``k4`` None before the last layer and carries only
    the repeated slices ``k4r`` [n, n, n], k4r[j, k, l] = k4_jjkl, instead."""

    mean: torch.Tensor
    cov: torch.Tensor
    k3: torch.Tensor | None = None
    k4: torch.Tensor | None = None
    k4r: torch.Tensor | None = None


def kprop4(mlp: RandomMLP, variant: str = "simple", series_order: int = 10, budget: int | None = None) -> LayerMeans:
    """Order-4 cumulant propagation (module docstring; ``kprop(mlp, 4, variant)`` calls it): a
    ``LayerMeans`` of [width] vectors. ``simple``/``augment`` keep k4 dense, ``repeated`` only its
    repeated-index slices. ``budget`` overrides the variant's largest diagram cost (tests raise it
    to see the expansion converge); ``series_order`` Mehler terms in the covariance."""
    check_mlp(mlp)
    if variant not in BUDGETS:
        raise ValueError(f"variant must be one of {tuple(BUDGETS)}, got {variant!r}")
    B = BUDGETS[variant] if budget is None else budget
    return _propagate(mlp, B, series_order, "repeated" if variant == "repeated" else "full")


def _propagate(mlp: RandomMLP, B: int, series_order: int, fourth: str) -> LayerMeans:
    """kprop4's layer loop at budget ``B``: a ``LayerMeans`` of [width] vectors. ``fourth`` says how each
    activation's fourth cumulant is kept: "full" dense [n]^4 with every slice, "zero-distinct" dense with
    its distinct slice zeroed (the plain reference of ``repeated``), "repeated" only its repeated slices
    [n]^3 (module docstring)."""
    w, b = mlp.weights[0], mlp.biases[0]
    last = mlp.hidden_layers - 1
    mean = b.clone() if b is not None else w.new_zeros(w.shape[0])  # [n]
    s = _Cumulants(mean, (w * w).sum(1) if last == 0 else w @ w.T)
    pre, act, pre_var, slope = [], [], [], []
    for layer in range(mlp.hidden_layers):
        pre.append(s.mean)
        pre_var.append(s.cov if s.cov.ndim == 1 else torch.diagonal(s.cov))
        a, c1 = _nonlinear(s, mlp.activation, B, series_order, mean_only=layer == last, fourth=fourth)
        act.append(a.mean)
        slope.append(c1)
        s = _linear(a, mlp.weights[layer + 1], mlp.biases[layer + 1], diag_only=layer + 1 == last)
    return LayerMeans(pre, act, s.mean, pre_var, slope)


def _max_degree(budget: int, terms: int, orders: tuple[int, ...]) -> int:
    """The highest derivative any kept diagram (or Mehler term) needs."""
    return max([terms, 4] + [max(d.degrees) for r in (1, 2, 3, 4) for d in diagrams(r, budget, orders)])


def _centred_tables(raw: list[torch.Tensor], mean: torch.Tensor) -> list[torch.Tensor]:
    """E_G[((phi - mean)^p)^(k)] for p = 0..4 from raw[p] = E_G[(phi^p)^(k)], each [kmax + 1, n]."""
    return [
        sum(math.comb(p, q) * (-mean) ** (p - q) * raw[q] for q in range(p + 1))  # [kmax + 1, n]
        for p in range(5)
    ]


def _operands(d: Diagram, coefs: list, s: _Cumulants, diag: dict, rows: slice | None):
    """The einsum operands of one diagram: (tensors, subscripts), each group's coefficient folded
    into the first hyperedge that touches it, the first group's index restricted to ``rows``."""
    tensors, subs, folded = [], [], set()
    for legs in d.edges:
        if len(set(legs)) == 1:  # k3_ggg or k4_gggg: the group's (clipped) diagonal cumulant
            t, sub = diag[len(legs)], LETTERS[legs[0]]
        else:
            sub = "".join(LETTERS[g] for g in legs)
            uniq = "".join(dict.fromkeys(sub))
            if len(legs) == 4 and s.k4 is None:  # read k4_..(repeat).. from the repeated slices k4r
                rep = next(letter for letter in uniq if sub.count(letter) > 1)
                t = torch.einsum(f"{rep}{sub.replace(rep, '', 2)}->{uniq}", s.k4r)
            else:
                full = {2: s.cov, 3: s.k3, 4: s.k4}[len(legs)]
                t = torch.einsum(f"{sub}->{uniq}", full) if uniq != sub else full
            sub = uniq
        if rows is not None and "i" in sub:
            t = t[(slice(None),) * sub.index("i") + (rows,)]
        for g in sorted(set(legs) - folded):
            coef = coefs[g][d.degrees[g]]  # [n]
            coef = coef[rows] if rows is not None and g == 0 else coef
            t = t * coef.view([-1 if letter == LETTERS[g] else 1 for letter in sub])
            folded.add(g)
        tensors.append(t)
        subs.append(sub)
    if not tensors:  # the empty one-group diagram: E_G[F]
        tensors, subs = [coefs[0][0]], ["i"]
    return tensors, subs


def diagram_sum(groups: int, budget: int, coefs: list, s: _Cumulants, diag: dict, rows=None) -> list:
    """Cum(F_1, ..., F_groups) of distinct neurons as a series in the cost: a list over c = 0..budget
    of [n]*groups tensors (0.0 where nothing of that cost), F_g given by its coefficient table
    coefs[g] = E_G[F_g^(k)] [kmax + 1, n]. ``rows`` (a slice) restricts the first group's index."""
    out = [0.0] * (budget + 1)
    orders = _orders(s)
    for d in diagrams(groups, budget, orders):
        tensors, subs = _operands(d, coefs, s, diag, rows)
        term = torch.einsum(",".join(subs) + "->" + LETTERS[:groups], *tensors)
        if torch.is_tensor(out[d.cost]):  # accumulate in place (an aten.add, so the FLOP counter sees it)
            torch.add(out[d.cost], term, alpha=d.weight, out=out[d.cost])
        else:
            out[d.cost] = d.weight * term
    return out


def _orders(s: _Cumulants) -> tuple[int, ...]:
    """The cumulant orders of z that are not zero (2 always; k3 and k4 from the second layer on)."""
    return (2,) + ((3,) if s.k3 is not None else ()) + ((4,) if s.k4 is not None or s.k4r is not None else ())


def _product(x: list, y: list, budget: int, combine) -> torch.Tensor | float:
    """sum over cx + cy <= budget of combine(x[cx], y[cy]): two cost series multiplied, truncated."""
    total = 0.0
    for cx, a in enumerate(x):
        for cy, b in enumerate(y):
            if cx + cy <= budget and torch.is_tensor(a) and torch.is_tensor(b):
                total = total + combine(a, b)
    return total


def _nonlinear(s: _Cumulants, activation: str, B: int, terms: int, mean_only: bool, fourth: str = "full"):
    """Cumulants of a = phi(z) from those of z (module docstring); only the mean when ``mean_only``;
    a's fourth cumulant as ``fourth`` (``_propagate``: dense ``k4`` [n]^4, or ``k4r`` [n]^3 when "repeated").
    Returns (cumulants of a, c1 = E_G[phi'] [n])."""
    n = s.mean.shape[0]
    var = s.cov if s.cov.ndim == 1 else torch.diagonal(s.cov)
    kmax = _max_degree(B, terms, _orders(s))
    raw = [torch.zeros(kmax + 1, n, dtype=s.mean.dtype)]
    raw[0][0] = 1.0  # E_G[(phi^0)^(k)] = [k == 0]
    raw += [derivative_expectations(activation, p, s.mean, var, kmax) for p in range(1, 5)]  # [kmax + 1, n]
    k3d = None if s.k3 is None else (s.k3 if s.k3.ndim == 1 else torch.einsum("iii->i", s.k3))
    if s.k4 is not None:
        k4d = s.k4 if s.k4.ndim == 1 else torch.einsum("iiii->i", s.k4)  # [n]
    else:
        k4d = None if s.k4r is None else torch.einsum("iii->i", s.k4r)  # [n]
    diag = {3: _perturbative(k3d, var, 3), 4: _perturbative(k4d, var, 4)}  # [n] each (None = 0)
    mean = sum(diagram_sum(1, B, [raw[1]], s, diag))  # [n]
    if mean_only:
        return _Cumulants(mean, var), raw[1][1]
    cp = _centred_tables(raw, mean)  # cp[p][k] = E_G[((phi - E[a])^p)^(k)]
    mu2, mu3, mu4 = (diagram_sum(1, B, [cp[p]], s, diag) for p in (2, 3, 4))  # central moments by cost
    a_var, k3_diag = sum(mu2), sum(mu3)  # [n]
    k4_diag = sum(mu4) - 3 * _product(mu2, mu2, B, torch.mul)  # [n]
    phi = raw[1]
    C = diagram_sum(2, B, [phi, phi], s, diag)  # Cov(a_i, a_j) by cost, [n, n] each
    S_pow = s.cov**B
    cov = sum(C)
    for k in range(B + 1, terms + 1):  # Mehler beyond the budget
        S_pow = S_pow * s.cov
        cov = cov + torch.outer(phi[k], phi[k]) * S_pow / math.factorial(k)
    eye = torch.eye(n, dtype=s.mean.dtype)
    cov = cov * (1 - eye) + torch.diag(a_var)

    # third cumulant: distinct slice, then the (j, j, l) slices and the diagonal
    k3 = sum(diagram_sum(3, B, [phi, phi, phi], s, diag))  # [n, n, n]
    L = sum(diagram_sum(2, B, [cp[2], phi], s, diag))  # [j, l] = k3(a)_jjl
    k3 = _fill_third(k3, L, k3_diag)

    # fourth cumulant: the repeated-index slices first (they read slices of k4(z)), then the distinct
    # slice, block by block of rows, written over k4(z)'s own storage (a block reads only its own rows)
    x211 = sum(diagram_sum(3, B, [cp[2], phi, phi], s, diag))  # [j, k, l]
    x211 = x211 - 2 * _product(C, C, B, lambda x, y: x[:, :, None] * y[:, None, :])
    x22 = sum(diagram_sum(2, B, [cp[2], cp[2]], s, diag)) - 2 * _product(C, C, B, torch.mul)  # [j, k]
    x31 = sum(diagram_sum(2, B, [cp[3], phi], s, diag)) - 3 * _product(mu2, C, B, lambda v, c: v[:, None] * c)
    if fourth == "repeated":
        return _Cumulants(mean, cov, k3, k4r=_fill_repeated(x211, x22, x31, k4_diag)), raw[1][1]
    k4 = s.k4 if s.k4 is not None else torch.zeros(n, n, n, n, dtype=s.mean.dtype)
    if fourth == "zero-distinct":
        k4.zero_()
    else:
        step = max(1, CHUNK_ENTRIES // n**3)
        for lo in range(0, n, step):
            rows = slice(lo, min(n, lo + step))
            k4[rows] = sum(diagram_sum(4, B, [phi] * 4, s, diag, rows))
    k4 = _fill_fourth(k4, x211, x22, x31, k4_diag)
    return _Cumulants(mean, cov, k3, k4), raw[1][1]


def _pairs(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Ordered index pairs (j, k), j != k: two [n (n - 1)] tensors."""
    j, k = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    keep = j != k
    return j[keep], k[keep]


def _fill_third(k3: torch.Tensor, L: torch.Tensor, k3_diag: torch.Tensor) -> torch.Tensor:
    """k3 [n, n, n] with its repeated-index entries set: (j, j, k) in each order to L[j, k], (j, j, j)
    to k3_diag[j]."""
    n = k3.shape[0]
    j, k = _pairs(n)
    v = L[j, k]
    k3 = k3.index_put((j, j, k), v).index_put((j, k, j), v).index_put((k, j, j), v)
    d = torch.arange(n)
    return k3.index_put((d, d, d), k3_diag)


def _fill_fourth(k4, x211, x22, x31, k4_diag) -> torch.Tensor:
    """k4 [n, n, n, n] with its repeated-index entries set, in place: the pattern (j, j, k, m) (j, k, m
    distinct) to x211[j, k, m] at each of its 6 placements, (j, j, k, k) to x22[j, k], (j, j, j, k) to
    x31[j, k], and the diagonal to k4_diag."""
    n = k4.shape[0]
    j, k, m = torch.meshgrid(torch.arange(n), torch.arange(n), torch.arange(n), indexing="ij")
    keep = (j != k) & (j != m) & (k != m)
    j, k, m = j[keep], k[keep], m[keep]
    v = x211[j, k, m]
    for idx in ((j, j, k, m), (j, k, j, m), (j, k, m, j), (k, j, j, m), (k, j, m, j), (k, m, j, j)):
        k4.index_put_(idx, v)
    j, k = _pairs(n)
    v = x22[j, k]
    for idx in ((j, j, k, k), (j, k, j, k), (j, k, k, j)):
        k4.index_put_(idx, v)
    v = x31[j, k]
    for idx in ((j, j, j, k), (j, j, k, j), (j, k, j, j), (k, j, j, j)):
        k4.index_put_(idx, v)
    d = torch.arange(n)
    k4.index_put_((d, d, d, d), k4_diag)
    return k4


def _fill_repeated(x211, x22, x31, k4_diag) -> torch.Tensor:
    """T [n, n, n], T[j, k, l] = k4(a)_jjkl: x211 [n, n, n] where j, k, l are distinct (written over
    x211), x22 [n, n] at (j, k, k), x31 [n, n] at (j, j, k) and (j, k, j), and k4_diag [n] at (j, j, j)."""
    n = x211.shape[0]
    j, k = _pairs(n)
    x211.index_put_((j, k, k), x22[j, k])
    v = x31[j, k]
    x211.index_put_((j, j, k), v).index_put_((j, k, j), v)
    d = torch.arange(n)
    return x211.index_put_((d, d, d), k4_diag)


def _coincidences(n: int, dtype: torch.dtype) -> torch.Tensor:
    """m [n, n, n]: the number of coinciding position pairs of the 4-tuple (j, j, k, l),
    1 + 2 [j = k] + 2 [j = l] + [k = l] (1, 2, 3 or 6)."""
    eye = torch.eye(n, dtype=dtype)
    return 1 + 2 * eye[:, :, None] + 2 * eye[:, None, :] + eye[None, :, :]


def _repeated_transport(t: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """R [n, n, n], R[i, k, l] = k4(z)_iikl for z = W a, from the repeated slices t [n, n, n] of a
    k4(a) with no distinct slice (t[a, c, d] = k4(a)_aacd): the four sums of the module docstring.
    G_a and the first two sums are symmetric in (k, l), so G_a is a ``symmetric_product`` and the two
    sums are made on the pairs k <= l only: 7.25 n^4 FLOPs where the plain sums make 10 n^4."""
    n = w.shape[0]
    f = t / _coincidences(n, t.dtype)  # [a, c, d]: F_acd = T_acd / m
    g = symmetric_product(torch.matmul(w, f), w)  # [a, k, l] = (W F_a W^T)_kl
    lo, hi = torch.triu_indices(n, n, device=w.device)  # the pairs (k, l), k <= l
    ww = w.T[:, lo] * w.T[:, hi]  # [a, (k <= l)] = W_ka W_la
    r = (w * w) @ g[:, lo, hi] + torch.diagonal(g, dim1=1, dim2=2).T @ ww  # [i, (k <= l)]: the first two sums
    cross = w @ (g.transpose(0, 1) * w[:, :, None])  # [i, k, l] = sum_a W_ka W_ia G_a,il
    return _unpack_pairs(r, lo, hi) + 2 * (cross + cross.transpose(1, 2))


def _unpack_pairs(
    packed: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, out: torch.Tensor | None = None
) -> torch.Tensor:
    """[n, n, n] symmetric in its last two indices from its entries [n, pairs] on the index pairs (lo, hi),
    lo <= hi; written into ``out`` when given."""
    n = packed.shape[0]
    out = packed.new_empty(n, n, n) if out is None else out
    out[:, lo, hi] = packed
    out[:, hi, lo] = packed
    return out


def _symmetric_transport_(k3: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """W on every index of a symmetric k3 [n, n, n], in place: Y_a = W k3_a W^T by ``symmetric_product``,
    then W on the first index over the pairs j <= k only; 4.25 n^4 FLOPs where ``_transport_`` (the plain
    form, tested equal) makes 6 n^4, with two [n]^3 temporaries where it has none."""
    n = w.shape[0]
    lo, hi = torch.triu_indices(n, n, device=w.device)  # the pairs (j, k), j <= k
    packed = symmetric_product(torch.matmul(w, k3), w)[:, lo, hi]  # [a, (j <= k)]: (W k3_a W^T)_jk
    return _unpack_pairs(w @ packed, lo, hi, out=k3)  # [i, j, k]


def _repeated_diagonal(t: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """k4(z)_iiii [n] for z = W a from the repeated slices t [n, n, n] of k4(a) (no distinct slice):
    6 sum_a W_ia^2 (W F_a W^T)_ii, 2 n^4 FLOPs."""
    f = t / _coincidences(w.shape[0], t.dtype)  # [a, c, d]
    g = ((w @ f) * w).sum(2)  # [a, i] = (W F_a W^T)_ii
    return 6 * ((w * w) * g.T).sum(1)


def _contract_(x: torch.Tensor, w: torch.Tensor, axis: int) -> None:
    """x <- W on index ``axis`` of x [n]*r, in place, a block at a time (no second [n]*r tensor):
    2 n^(r+1) FLOPs."""
    n = w.shape[0]
    if axis == x.ndim - 1:
        flat = x.view(-1, n)  # [rest, n]
        step = max(1, CHUNK_ENTRIES // n)
        for lo in range(0, flat.shape[0], step):
            flat[lo : lo + step] = flat[lo : lo + step] @ w.T
        return
    view = x.view(n**axis, n, -1)  # [before, n, after]
    bm = min(view.shape[2], max(1, CHUNK_ENTRIES // n))
    bp = max(1, CHUNK_ENTRIES // (n * bm))
    for p in range(0, view.shape[0], bp):
        for c in range(0, view.shape[2], bm):
            view[p : p + bp, :, c : c + bm] = torch.matmul(w, view[p : p + bp, :, c : c + bm])


def _transport_(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """W on every index of x [n]*r, in place: x_ab.. <- sum W_ia W_jb .. x_ab.. (r n^(r+1) 2 FLOPs)."""
    for axis in range(x.ndim):
        _contract_(x, w, axis)
    return x


def _transport_diagonal_(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The diagonal [n] of W on every index of x [n]*r, sum_{ab..} W_ia W_ib .. x_ab.. (x is overwritten)."""
    n = w.shape[0]
    _contract_(x, w, x.ndim - 1)  # [.., b, i]
    y = x.reshape(-1, n, n)  # [rest, b, i]
    while True:
        step = max(1, CHUNK_ENTRIES // n**2)
        y = torch.cat([(y[lo : lo + step] * w.T).sum(1) for lo in range(0, y.shape[0], step)])  # [rest, i]
        if y.shape[0] == 1:
            return y[0]
        y = y.view(-1, n, n)


def _linear(a: _Cumulants, w: torch.Tensor, b: torch.Tensor | None, diag_only: bool) -> _Cumulants:
    """Cumulants of z = W a + b (diagonals only when ``diag_only``; only the mean after a mean-only
    step); a's repeated slices ``k4r`` give z's (or z's diagonal). a's k3 and k4 tensors are
    overwritten."""
    mean = w @ a.mean + (0 if b is None else b)  # [n]
    if a.k3 is None:
        return _Cumulants(mean, a.cov)
    if diag_only:
        cov = ((w @ a.cov) * w).sum(1)  # [n]
        k4 = _transport_diagonal_(a.k4, w) if a.k4r is None else _repeated_diagonal(a.k4r, w)  # [n]
        return _Cumulants(mean, cov, _transport_diagonal_(a.k3, w), k4)
    cov = w @ a.cov @ w.T  # [n, n]
    if a.k4r is not None:
        return _Cumulants(mean, cov, _symmetric_transport_(a.k3, w), k4r=_repeated_transport(a.k4r, w))
    return _Cumulants(mean, cov, _transport_(a.k3, w), _transport_(a.k4, w))
