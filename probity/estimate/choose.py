"""Estimators chosen for a FLOP budget: ``plan(width, hidden_layers, budget)`` and ``estimate(mlp, budget)``.

The rule. Every method that fits the budget is a candidate:

- kprop at each (order, variant) of the measured frontier, ``KPROP_MSE`` (K <= 3 and K=4 repeated), if
  its FLOPs fit. The dense K=4 variant is not a candidate: O(n^5) FLOPs and x-MC below 1
  (0.57 at width 64, 0.97 at 128), so Monte Carlo is as accurate for what it costs;
- plain Monte Carlo with N = floor(budget / FLOPs per sample) samples, if N >= 2;
- ``blend`` (kprop K=2 augment plus N control-variate samples) with the most samples that fit, if
  N >= max(64, width): below that its empirical-Bayes gate keeps kprop's estimate, so it costs more
  than kprop K=2 augment for the same answer.

With ``max_bytes`` a method whose estimated peak memory (``bench.memory_needed``) exceeds it is left
out (K=4 repeated keeps a dozen [n]^3 tensors: 1.3 GB measured at width 256, about 12 GB at 512).
Each candidate gets an expected MSE/Var at the output and the lowest wins (ties: the cheaper). The
figures:

- Monte Carlo: 1/N, by definition, at any width, depth and activation.
- kprop and blend: the seed means measured by ``bench/estimate.py`` (``bench/results/estimate.json``:
  ReLU, He init, 4 hidden layers, widths 16-256, 5 seeds, 10^7-sample ground truth), interpolated
  linearly in (log width, log MSE/Var) between measured widths and, for blend, in (log N, log MSE/Var)
  between its measured budgets 10-10^5. Outside the measured widths the nearest two widths' slope is
  extended; above 10^5 samples blend's error is taken to fall as 1/N like sampling's. At width 256 K=4
  repeated's figure (4.2e-8) is below its 10^7-sample truth's own noise (1e-7 of the variance, which
  the bench subtracts), so it rests on that subtraction.

So at 4 hidden layers K=4 repeated wins from its cost (5.8e8 FLOPs at width 64, 8.2e9 at 128, 1.2e11
at 256) until blend's samples beat it (from about 5e9 at 64, 2.5e11 at 128, 1e13 at 256); below its
cost the choice is among K <= 3 and sampling.

FLOPs are exact, not modelled: kprop's count (probity's ``count_flops``) is a cubic polynomial in
the width for a fixed depth, activation and bias pattern, a quartic for K=4 repeated, on each residue
class of the width mod ``SYMMETRIC_PARTS`` (4; the row blocks of ``propagate.symmetric_product``), so
it is counted on four (five) networks of that class from width 8 and extended, and counted directly
below 8 (checked against a direct count at every width 4-40 and at 63, 64, 100, 128); blend is
that plus a per-sample cost counted the same way (to one FLOP: its gate's multiplication by zero);
Monte Carlo is ``mc_flops_per_sample`` times N.

Where it extrapolates (``Plan.extrapolated`` says which, and the CLI prints it): at another depth,
activation or init the kprop and blend figures are the 4-hidden-layer ReLU ones, carried over
unchanged. Deeper networks make kprop's error larger: at width 256 and depth 8 (``probity estimate
challenge``, last ReLU layer, variance about 0.2) MSE/Var is about 4x the 4-hidden-layer figure for K=2
simple and about 12x for K=3 simple, so there the choice leans towards kprop more than it should;
sampling's 1/N holds everywhere. The ranking of the kprop variants is width-dependent (at width 16
K=3 is no better than K=2 augment), which the table captures.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import torch

from probity.estimate.bench import memory_limit, memory_needed
from probity.estimate.estimators import blend, count_flops, mc_flops_per_sample
from probity.estimate.mlp import RandomMLP, check_mlp
from probity.estimate.propagate import SYMMETRIC_PARTS, LayerMeans, kprop
from probity.estimate.sampling import monte_carlo

# Measured frontier (bench/results/estimate.json, seed means, 3 significant figures; a test keeps them equal).
FRONTIER_WIDTHS = (16, 32, 64, 128, 256)
FRONTIER_HIDDEN_LAYERS = 4
FRONTIER_ACTIVATION = "relu"
KPROP_MSE = {
    (1, "simple"): (0.0262, 0.0104, 0.00537, 0.0031, 0.0014),
    (1, "augment"): (0.0224, 0.00988, 0.00522, 0.00312, 0.00139),
    (2, "simple"): (0.00862, 0.0032, 0.000473, 0.000169, 4.09e-05),
    (2, "augment"): (0.00164, 0.00101, 0.000159, 4.14e-05, 1.11e-05),
    (3, "simple"): (0.00182, 0.000109, 1.53e-05, 2.65e-06, 3.91e-07),
    (3, "augment"): (0.00203, 9.8e-05, 9.9e-06, 1.63e-06, 1.91e-07),
    (4, "repeated"): (0.00212, 6.21e-05, 5.14e-06, 6.26e-07, 4.25e-08),
}
BLEND_ORDER, BLEND_VARIANT = 2, "augment"  # the kprop inside blend in the measured frontier
BLEND_MSE = {  # samples N -> MSE/Var per width
    10: (0.00164, 0.00101, 0.000159, 4.14e-05, 1.11e-05),
    100: (0.00164, 0.00101, 0.000159, 4.14e-05, 1.11e-05),
    1000: (0.000772, 0.000707, 0.000159, 4.14e-05, 1.11e-05),
    10000: (4.6e-05, 5.02e-05, 4.24e-05, 3.38e-05, 1.11e-05),
    100000: (3.83e-06, 5.52e-06, 4.44e-06, 6.22e-06, 3.69e-06),
}
_BLEND_GATE = 64  # blend trusts its samples only from max(64, width) of them (estimators._MIN_SAMPLES)


@dataclass
class Option:
    """One candidate: ``method`` is "kprop", "blend" or "mc"; ``order``/``variant`` the kprop (also the
    one inside blend; 0/"" for mc); ``n_samples`` (0 for kprop); exact ``flops``; the expected
    MSE/Var at the output."""

    method: str
    order: int
    variant: str
    n_samples: int
    flops: int
    expected_mse_over_var: float

    @property
    def label(self) -> str:
        """E.g. ``kprop K=3 simple``, ``blend K=2 augment + 5000 samples``, ``mc 70000 samples``."""
        if self.method == "mc":
            return f"mc {self.n_samples} samples"
        kp = f"K={self.order} {self.variant}"
        return f"kprop {kp}" if self.method == "kprop" else f"blend {kp} + {self.n_samples} samples"


@dataclass
class Plan:
    """The method chosen for ``budget`` FLOPs (``best``), every candidate that fit (``options``, best
    first), the network's shape, and ``extrapolated``: "" when the expected MSE/Var comes from measured
    networks of this kind, else one line saying what is carried over."""

    best: Option
    budget: float
    width: int
    hidden_layers: int
    activation: str
    extrapolated: str = ""
    options: list[Option] = field(default_factory=list)


@dataclass
class Estimate:
    """``out`` [width]: E[out] by the plan's method; ``plan``; ``layers``: every layer's means when
    the method is kprop (else None: the samplers estimate the output only)."""

    out: torch.Tensor
    plan: Plan
    layers: LayerMeans | None = None


def _interp(x: float, xs, ys) -> float:
    """Piecewise-linear in (log x, log y) through (xs, ys); the end segments extended beyond them."""
    lx, lxs, lys = math.log(x), [math.log(v) for v in xs], [math.log(v) for v in ys]
    i = 1
    while i < len(lxs) - 1 and lx > lxs[i]:
        i += 1
    t = (lx - lxs[i - 1]) / (lxs[i] - lxs[i - 1])
    return math.exp(lys[i - 1] + t * (lys[i] - lys[i - 1]))


def expected_kprop(width: int, order: int, variant: str) -> float:
    """Expected MSE/Var of kprop (``order``, ``variant``) at ``width`` from the measured frontier."""
    return _interp(width, FRONTIER_WIDTHS, KPROP_MSE[(order, variant)])


def expected_blend(width: int, n_samples: int) -> float:
    """Expected MSE/Var of blend (K=2 augment inside) with ``n_samples`` at ``width``; never above
    kprop K=2 augment's, and falling as 1/N beyond the largest measured budget."""
    budgets = sorted(BLEND_MSE)
    at_width = [_interp(width, FRONTIER_WIDTHS, BLEND_MSE[n]) for n in budgets]
    top = budgets[-1]
    value = at_width[-1] * top / n_samples if n_samples > top else _interp(n_samples, budgets, at_width)
    return min(value, expected_kprop(width, BLEND_ORDER, BLEND_VARIANT))


def _count(what: tuple, width: int, hidden_layers: int, activation: str, bias: bool) -> float:
    """FLOPs of ``what`` counted on one width-``width`` network (``what`` as in ``method_flops``; N = 1 for "mc")."""
    mlp = RandomMLP(width, hidden_layers, activation, bias=bias, seed=0)
    with torch.no_grad():
        if what[0] == "kprop":
            return count_flops(kprop, mlp, what[1], what[2])[1]
        if what[0] == "blend":
            return count_flops(blend, mlp, what[1], BLEND_ORDER, BLEND_VARIANT)[1]
        return mc_flops_per_sample(mlp)


@functools.lru_cache(maxsize=64)
def _flop_polynomial(what: tuple, hidden_layers: int, activation: str, bias: bool, residue: int) -> tuple[float, ...]:
    """Coefficients (highest power first) of a FLOP count that is a polynomial in the width, cubic (quartic
    for K=4), on the widths = ``residue`` mod p, p = ``SYMMETRIC_PARTS``: counted on networks of widths
    2p + residue + p i, i = 0..degree. ``symmetric_product`` splits the rows into p blocks from width 2p
    on, so its count is a polynomial on each residue class of the width mod p, not across them."""
    degree = 4 if what[:2] == ("kprop", 4) else 3
    widths = [2 * SYMMETRIC_PARTS + residue + SYMMETRIC_PARTS * i for i in range(degree + 1)]
    counts = [_count(what, w, hidden_layers, activation, bias) for w in widths]
    vander = torch.tensor([[float(w) ** p for p in range(degree, -1, -1)] for w in widths], dtype=torch.float64)
    return tuple(torch.linalg.solve(vander, torch.tensor(counts, dtype=torch.float64)).tolist())


def _flops_at(what: tuple, width: int, hidden_layers: int, activation: str, bias: bool) -> float:
    """FLOPs of ``what`` at ``width``: counted directly below 2 ``SYMMETRIC_PARTS``, else the polynomial
    of its residue class."""
    if width < 2 * SYMMETRIC_PARTS:
        return _count(what, width, hidden_layers, activation, bias)
    coeffs = _flop_polynomial(what, hidden_layers, activation, bias, width % SYMMETRIC_PARTS)
    return sum(c * width**p for p, c in enumerate(reversed(coeffs)))


def method_flops(width: int, hidden_layers: int, what: tuple, activation: str = "relu", bias: bool = False) -> int:
    """Exact FLOPs (probity's counter) of ``what`` on a width-``width`` network with ``hidden_layers``
    hidden layers: ``("kprop", K, variant)``, ``("mc", N)`` or ``("blend", N)`` (N >= max(64, width),
    where blend's cost is affine in N)."""
    if what[0] == "kprop":
        return round(_flops_at(what, width, hidden_layers, activation, bias))
    if what[0] == "mc":
        return round(what[1] * _flops_at(("mc",), width, hidden_layers, activation, bias))
    at_gate = _flops_at(("blend", _BLEND_GATE), width, hidden_layers, activation, bias)
    per = _flops_at(("blend", _BLEND_GATE + 1), width, hidden_layers, activation, bias) - at_gate
    return round(at_gate + (what[1] - _BLEND_GATE) * per)


def _check_budget(budget) -> None:
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not math.isfinite(budget) or budget <= 0:
        raise ValueError(f"budget must be a positive number of FLOPs, e.g. 1e9; got {budget!r}")


def _extrapolation(width: int, hidden_layers: int, activation: str) -> str:
    reasons = []
    if not FRONTIER_WIDTHS[0] <= width <= FRONTIER_WIDTHS[-1]:
        reasons.append(f"width {width} outside the measured {FRONTIER_WIDTHS[0]}-{FRONTIER_WIDTHS[-1]}")
    if hidden_layers != FRONTIER_HIDDEN_LAYERS:
        reasons.append(f"{hidden_layers} hidden layers, not the measured {FRONTIER_HIDDEN_LAYERS}")
    if activation != FRONTIER_ACTIVATION:
        reasons.append(f"{activation}, not the measured {FRONTIER_ACTIVATION}")
    if not reasons:
        return ""
    return (
        "kprop and blend figures extrapolated from 4-hidden-layer ReLU networks (" + "; ".join(reasons) + "); "
        "Monte Carlo's 1/N is exact"
    )


def plan(
    width: int,
    hidden_layers: int,
    budget: float,
    activation: str = "relu",
    bias: bool = False,
    max_bytes: int | None = None,
) -> Plan:
    """The method expected to be most accurate for ``budget`` FLOPs on a width-``width`` network with
    ``hidden_layers`` hidden layers (module docstring for the rule), among those estimated to need at
    most ``max_bytes`` of memory (None: no limit). A one-line ``ValueError`` when the budget is below
    the cheapest method, or no method within it fits in ``max_bytes``."""
    _check_budget(budget)
    RandomMLP.check(width, hidden_layers, activation)
    if hidden_layers < 1:
        raise ValueError("a budget plan needs hidden_layers >= 1 (with none the network is linear: E[out] = 0)")
    options = []
    for order, variant in KPROP_MSE:
        flops = method_flops(width, hidden_layers, ("kprop", order, variant), activation, bias)
        if flops <= budget:
            options.append(Option("kprop", order, variant, 0, flops, expected_kprop(width, order, variant)))
    per_sample = method_flops(width, hidden_layers, ("mc", 1), activation, bias)
    n_mc = int(budget // per_sample)
    if n_mc >= 2:
        options.append(
            Option("mc", 0, "", n_mc, method_flops(width, hidden_layers, ("mc", n_mc), activation, bias), 1 / n_mc)
        )
    gate = max(_BLEND_GATE, width)
    at_gate = method_flops(width, hidden_layers, ("blend", gate), activation, bias)
    if at_gate <= budget:
        per = method_flops(width, hidden_layers, ("blend", gate + 1), activation, bias) - at_gate
        n_blend = gate + int((budget - at_gate) // max(per, 1))
        flops = method_flops(width, hidden_layers, ("blend", n_blend), activation, bias)
        options.append(Option("blend", BLEND_ORDER, BLEND_VARIANT, n_blend, flops, expected_blend(width, n_blend)))
    if not options:
        k1 = method_flops(width, hidden_layers, ("kprop", 1, "simple"), activation, bias)
        cheapest, name = min((k1, "kprop K=1 simple"), (2 * per_sample, "mc 2 samples"))
        raise ValueError(
            f"a budget of {budget:.3g} FLOPs is below the cheapest method at width {width} with {hidden_layers} "
            f"hidden layers ({name}, {cheapest:.3g} FLOPs); raise the budget to at least {cheapest:.3g}"
        )
    if max_bytes is not None:
        fitting = [o for o in options if _memory(o, width, hidden_layers) <= max_bytes]
        if not fitting:
            least = min(options, key=lambda o: _memory(o, width, hidden_layers))
            raise ValueError(
                f"no method within {budget:.3g} FLOPs fits in {max_bytes / 2**30:.3g} GB at width {width} "
                f"(the smallest, {least.label}, needs about {_memory(least, width, hidden_layers) / 2**30:.3g} GB)"
            )
        options = fitting
    options.sort(key=lambda o: (o.expected_mse_over_var, o.flops))
    return Plan(
        options[0],
        float(budget),
        width,
        hidden_layers,
        activation,
        _extrapolation(width, hidden_layers, activation),
        options,
    )


def _memory(option: Option, width: int, hidden_layers: int) -> int:
    """Estimated peak bytes of ``option`` (``bench.memory_needed``)."""
    methods = [] if option.method == "mc" else [(option.order, option.variant)]
    return memory_needed(width, hidden_layers, methods, option.n_samples)


def estimate(
    mlp: RandomMLP,
    budget: float,
    generator: torch.Generator | None = None,
    progress: bool = False,
    max_gb: float | None = None,
) -> Estimate:
    """E[out] [width] of ``mlp`` by the method :func:`plan` chooses for ``budget`` FLOPs among those that
    fit in ``max_gb`` GB of memory (default: 3/4 of this machine's RAM, ``bench.memory_limit``); the
    returned ``Estimate.plan`` carries the method, its exact FLOPs and its expected MSE/Var.
    ``generator`` seeds the samplers (default: seed 0)."""
    check_mlp(mlp)
    bias = any(b is not None for b in mlp.biases)
    chosen = plan(mlp.width, mlp.hidden_layers, budget, mlp.activation, bias, memory_limit(max_gb)[0])
    best = chosen.best
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    with torch.no_grad():
        if best.method == "kprop":
            layers = kprop(mlp, best.order, best.variant)
            return Estimate(layers.out, chosen, layers)
        if best.method == "mc":
            stats = monte_carlo(mlp, best.n_samples, generator=gen, progress=progress, out_only=True)
            return Estimate(stats.out_mean, chosen)
        return Estimate(blend(mlp, best.n_samples, best.order, best.variant, generator=gen).out, chosen)
