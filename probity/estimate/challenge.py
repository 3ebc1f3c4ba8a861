"""ARC's white-box estimation challenge (WhestBench, 2026) on probity's estimators: :func:`run_challenge`.

The protocol implemented, from the challenge's public participant guide (whest-starterkit docs
"problem-setup", "scoring-model", "ground-truth", aicrowd.github.io/whestbench) and ARC's announcement:

- A network has width n = 256 and depth d = 8: a_0 = x ~ N(0, I_n), z_l = W_l a_{l-1}, a_l = ReLU(z_l) for
  l = 1..8, no biases, every W_l (the first included) with iid N(0, 2/n) entries. (The public data set's
  first-layer means, about 0.56 = E[ReLU(N(0, 2))], confirm the first layer's 2/n.) In probity's terms it
  is a ``RandomMLP`` with 8 hidden layers and an identity output layer, so ``out`` = a_8.
- Per network m: final_layer_mse_m = mean_i (pred_i - E[a_8,i])^2 (raw, not divided by a variance); the
  compute multiplier is max(0.1, C_m / B) with B = 6.8e10 FLOPs; a method over budget has its
  prediction zeroed and multiplier 1. The score is the mean over networks of final_layer_mse_m x
  multiplier_m (lower is better).

Where ours differs:

- Networks come from probity's seeds (:func:`challenge_network`), not the challenge's data sets (not
  available offline): the same distribution, not the same networks.
- C is probity's FLOP count (``count_flops``: matrix products plus one FLOP per pointwise element), not
  flopscope's, which counts every op analytically and adds a wall-clock term lambda * R; the
  multipliers can differ by a constant factor. Monte Carlo is charged ``mc_flops_per_sample`` per sample.
- Ground truth is ``gt_samples`` samples (default 10^6; the challenge's data sets use 10^9) and its own
  noise, mean_i Var_i / N (about 1.7e-7 at 10^6, the final layer's variance being about 0.17), is
  subtracted from every MSE, which leaves it unbiased with a standard error of about sqrt(2 / n) times
  that (about 2e-8 per network at 10^6), well below the scores it grades (1e-7 and up).
- The interval is a t interval (95%) over the networks, not a leaderboard's fixed set.

Reference figures (issue 16, ARC's posts): best public score about 6.7e-7; plain covariance propagation
(kprop K=2 simple) about 3.6e-6 (raw MSE about 3.7e-5 at the 0.1 multiplier floor).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from probity.estimate.estimators import count_flops, mc_flops_per_sample
from probity.estimate.mlp import RandomMLP
from probity.estimate.propagate import check_order, kprop
from probity.estimate.sampling import ground_truth, monte_carlo
from probity.report import Claim
from probity.report.console import is_int, progress

CHALLENGE_WIDTH = 256
CHALLENGE_DEPTH = 8
CHALLENGE_BUDGET = 6.8e10
MULTIPLIER_FLOOR = 0.1
BEST_PUBLIC_SCORE = 6.7e-7
COVARIANCE_PROPAGATION_SCORE = 3.6e-6
# kprop (order, variant) run on every network; plus Monte Carlo at the multiplier floor (0.1 B of samples).
METHODS = ((2, "simple"), (2, "augment"), (3, "simple"), (3, "augment"))


@dataclass
class ChallengeConfig:
    """``networks`` drawn from seeds ``seed``, ``seed + 1``, ...; ``gt_samples`` ground-truth samples each;
    ``budget`` B in FLOPs; ``cache_dir`` for the ground truths (None: not cached)."""

    networks: int = 5
    seed: int = 0
    width: int = CHALLENGE_WIDTH
    depth: int = CHALLENGE_DEPTH
    budget: float = CHALLENGE_BUDGET
    gt_samples: int = 10**6
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        """One-line ValueErrors before any sampling."""
        if not is_int(self.networks) or self.networks < 2:
            raise ValueError(f"networks must be an integer >= 2 (for an interval), got {self.networks!r}")
        if not is_int(self.seed):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
        RandomMLP.check(self.width, self.depth)
        if self.depth < 1:
            raise ValueError(f"depth must be an integer >= 1, got {self.depth!r}")
        if isinstance(self.budget, bool) or not isinstance(self.budget, (int, float)) or not self.budget > 0:
            raise ValueError(f"budget must be a positive number of FLOPs, e.g. 6.8e10; got {self.budget!r}")
        if not is_int(self.gt_samples) or self.gt_samples < 10**4:
            raise ValueError(f"gt_samples must be an integer >= 10000 to grade a score, got {self.gt_samples!r}")


@dataclass
class ChallengeRow:
    """One method on one network: ``flops`` C, ``multiplier`` max(0.1, C/B) (1 over budget),
    ``final_layer_mse`` (ground-truth noise subtracted), ``score`` = their product; ``wall_s`` (seconds,
    run under the FLOP counter, which slows kprop's small operations)."""

    seed: int
    method: str
    flops: int
    multiplier: float
    final_layer_mse: float
    score: float
    wall_s: float


@dataclass
class ChallengeSummary:
    """A method's mean over networks: ``score`` with its 95% t ``interval``, ``final_layer_mse``,
    ``flops``, ``multiplier``, ``wall_s``."""

    method: str
    networks: int
    score: float
    interval: tuple[float, float]
    final_layer_mse: float
    flops: float
    multiplier: float
    wall_s: float


@dataclass
class ChallengeResult:
    """``summary`` (best score first) and per-network ``rows`` of :func:`run_challenge`."""

    config: ChallengeConfig
    summary: list[ChallengeSummary]
    rows: list[ChallengeRow] = field(default_factory=list)

    def headline(self) -> list[Claim]:
        """Our best score against the best public one, and covariance propagation against ARC's figure."""
        best = self.summary[0]
        cov = next(s for s in self.summary if s.method == "kprop K=2 simple")
        return [
            Claim(f"challenge score, {best.method}", best.score, best.interval, reference=BEST_PUBLIC_SCORE,
                  source="best public WhestBench score", target=f"< {BEST_PUBLIC_SCORE:g}"),
            Claim("challenge score, covariance propagation", cov.score, cov.interval,
                  reference=COVARIANCE_PROPAGATION_SCORE, source="ARC's covariance-propagation figure"),
        ]  # fmt: skip


def challenge_network(seed: int, width: int = CHALLENGE_WIDTH, depth: int = CHALLENGE_DEPTH) -> RandomMLP:
    """A challenge network: ``depth`` He ReLU layers of ``width`` (every W_l ~ N(0, 2/width), no bias) and an
    identity output layer, so ``out`` [width] is the last post-ReLU activation."""
    gen = torch.Generator().manual_seed(seed)
    weights = [torch.randn(width, width, generator=gen).double() * math.sqrt(2 / width) for _ in range(depth)]
    return RandomMLP.from_weights(weights + [torch.eye(width, dtype=torch.float64)], "relu")


def _t975(dof: int) -> float:
    from scipy.stats import t

    return float(t.ppf(0.975, dof))


def _network_rows(cfg: ChallengeConfig, seed: int) -> list[ChallengeRow]:
    mlp = challenge_network(seed, cfg.width, cfg.depth)
    gt = ground_truth(mlp, cfg.gt_samples, cache_dir=cfg.cache_dir, out_only=True, progress=False)
    floor = float(gt.out_var.mean()) / gt.n_samples

    def row(method, pred, flops, wall):
        over = flops > cfg.budget
        pred = torch.zeros_like(gt.out_mean) if over else pred
        mse = float(((pred.double() - gt.out_mean) ** 2).mean()) - floor
        mult = 1.0 if over else max(MULTIPLIER_FLOOR, flops / cfg.budget)
        return ChallengeRow(seed, method, int(flops), mult, mse, mse * mult, wall)

    rows = []
    with torch.no_grad():
        for order, variant in METHODS:
            check_order(order, variant)
            t = time.perf_counter()
            est, flops = count_flops(kprop, mlp, order, variant)
            rows.append(row(f"kprop K={order} {variant}", est.out, flops, time.perf_counter() - t))
        fps = mc_flops_per_sample(mlp)
        n_mc = max(2, int(MULTIPLIER_FLOOR * cfg.budget // fps))
        t = time.perf_counter()
        stats = monte_carlo(mlp, n_mc, generator=torch.Generator().manual_seed(7_000 + seed), out_only=True)
        rows.append(row(f"mc {n_mc} samples", stats.out_mean, n_mc * fps, time.perf_counter() - t))
    return rows


def summarise(rows: list[ChallengeRow]) -> list[ChallengeSummary]:
    """Per method: mean score over networks with a 95% t interval; best score first."""
    out = []
    for method in dict.fromkeys(r.method for r in rows):
        rs = [r for r in rows if r.method == method]
        scores = torch.tensor([r.score for r in rs], dtype=torch.float64)
        mean = float(scores.mean())
        half = _t975(len(rs) - 1) * float(scores.std()) / math.sqrt(len(rs)) if len(rs) > 1 else float("nan")
        out.append(
            ChallengeSummary(
                method,
                len(rs),
                mean,
                (mean - half, mean + half),
                sum(r.final_layer_mse for r in rs) / len(rs),
                sum(r.flops for r in rs) / len(rs),
                sum(r.multiplier for r in rs) / len(rs),
                sum(r.wall_s for r in rs) / len(rs),
            )
        )
    return sorted(out, key=lambda s: s.score)


def run_challenge(cfg: ChallengeConfig, show_progress: bool = True) -> ChallengeResult:
    """Draw ``cfg.networks`` challenge networks, grade every method in ``METHODS`` and Monte Carlo at the
    multiplier floor against a ``cfg.gt_samples`` ground truth, and score them (module docstring)."""
    rows: list[ChallengeRow] = []
    with progress(cfg.networks, "estimate challenge", enabled=show_progress) as bar:
        for seed in range(cfg.seed, cfg.seed + cfg.networks):
            rows.extend(_network_rows(cfg, seed))
            bar.advance(note=f"network {seed} done")
    return ChallengeResult(cfg, summarise(rows), rows)
