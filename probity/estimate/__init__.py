"""Mechanistic estimation of random MLPs: expected outputs without sampling.

Cumulant propagation (ARC, "Estimating the expected output of wide random MLPs more
efficiently than sampling", 2026) written from the math, Monte Carlo with cached
ground truth, FLOP accounting, and a sampler that uses the analytic estimate.

    mlp = RandomMLP(width=64, hidden_layers=4, activation="relu", seed=0)
    est = kprop(mlp, order=3)               # LayerMeans: .pre, .act, .out
    truth = ground_truth(mlp, 10**7, cache_dir="cache")
    mse_over_var(est.out, truth.out_mean, truth.out_var, truth.n_samples)
    estimate(mlp, budget=1e9)               # the method expected most accurate for 1e9 FLOPs
    RandomMLP.from_sequential(my_torch_mlp)  # nn.Sequential(Linear, act, ..., Linear)
"""

from probity.estimate.activations import ACTIVATIONS
from probity.estimate.choose import Estimate, Plan, estimate, plan
from probity.estimate.estimators import (
    Blend,
    blend,
    count_flops,
    linear_surrogate,
    mc_flops_per_sample,
    mse_over_var,
    x_mc,
)
from probity.estimate.gauss import derivative_expectations, gaussian_cumulants
from probity.estimate.mlp import RandomMLP
from probity.estimate.propagate import ORDERS, VARIANTS, LayerMeans, kprop
from probity.estimate.sampling import SampleStats, ground_truth, monte_carlo

__all__ = [
    "RandomMLP", "ACTIVATIONS", "kprop", "LayerMeans", "ORDERS", "VARIANTS",
    "monte_carlo", "ground_truth", "SampleStats", "blend", "Blend", "linear_surrogate",
    "count_flops", "mc_flops_per_sample", "mse_over_var", "x_mc",
    "derivative_expectations", "gaussian_cumulants", "estimate", "plan", "Estimate", "Plan",
]  # fmt: skip
