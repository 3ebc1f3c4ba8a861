"""Monte Carlo: streamed per-layer means and variances, and cached ground truth.

Passes run in float32 (as a sampler would); sums accumulate in float64, shifted by a
reference mean so that sum-of-squares variances keep their precision at 10^8 samples.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from probity.estimate.mlp import RandomMLP, check_mlp
from probity.models.checkpoint import atomic_torch_save
from probity.report.console import progress as console_progress

CHUNK = 1_000_000  # samples per checkpointed chunk of a ground-truth run
SAMPLE_BATCH = 65536  # inputs per float32 sampling batch (memory O(batch * width)); every sampler's default


@dataclass
class SampleStats:
    """Per-layer sample means and variances (float64). ``pre_*``/``act_*``: H tensors [width];
    ``out_*``: [width]; ``n_samples``: how many samples they average."""

    pre_mean: list[torch.Tensor]
    pre_var: list[torch.Tensor]
    act_mean: list[torch.Tensor]
    act_var: list[torch.Tensor]
    out_mean: torch.Tensor
    out_var: torch.Tensor
    n_samples: int


class _Moments:
    """Running shifted sums of [batch, width] batches for 2H+1 layers."""

    def __init__(self):
        self.count, self.shift, self.s1, self.s2 = 0, None, None, None

    def add(self, layers: list[torch.Tensor]) -> None:
        if self.shift is None:
            self.shift = [x.mean(0, dtype=torch.float64) for x in layers]
            self.s1 = [torch.zeros_like(m) for m in self.shift]
            self.s2 = [torch.zeros_like(m) for m in self.shift]
        for i, x in enumerate(layers):
            # Shifted and summed over the batch in the pass dtype (rounding ~1e-6 sd, far
            # below sampling noise); batches accumulate in float64.
            d = x - self.shift[i].to(x.dtype)
            self.s1[i] += d.sum(0).double()
            self.s2[i] += (d * d).sum(0).double()
        self.count += layers[0].shape[0]

    def merge(self, other: _Moments) -> None:
        """Add another accumulator's sums (re-centred onto this one's shift)."""
        if other.count == 0:
            return
        if self.shift is None:
            self.count, self.shift, self.s1, self.s2 = other.count, other.shift, other.s1, other.s2
            return
        for i in range(len(self.s1)):
            delta = other.shift[i] - self.shift[i]
            self.s2[i] += other.s2[i] + 2 * delta * other.s1[i] + other.count * delta * delta
            self.s1[i] += other.s1[i] + other.count * delta
        self.count += other.count

    def stats(self, hidden: int) -> SampleStats:
        """Means and unbiased variances; ``hidden=0`` when only the output was accumulated."""
        if self.count < 2:
            raise ValueError(f"need at least 2 samples for means and variances, got {self.count}")
        means = [sh + s / self.count for sh, s in zip(self.shift, self.s1)]
        var = [(s2 - s1 * s1 / self.count) / (self.count - 1) for s1, s2 in zip(self.s1, self.s2)]
        H = hidden
        return SampleStats(means[:H], var[:H], means[H : 2 * H], var[H : 2 * H], means[-1], var[-1], self.count)

    def state(self) -> dict:
        return {"count": self.count, "shift": self.shift, "s1": self.s1, "s2": self.s2}

    @classmethod
    def from_state(cls, st: dict) -> _Moments:
        m = cls()
        m.count, m.shift, m.s1, m.s2 = st["count"], st["shift"], st["s1"], st["s2"]
        return m


def _check_samples(n_samples: int, batch: int) -> None:
    if not isinstance(n_samples, int) or n_samples < 2:
        raise ValueError(f"n_samples must be an integer >= 2, got {n_samples!r}")
    if not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be an integer >= 1, got {batch!r}")


def _sample_into(
    acc: _Moments,
    mlp: RandomMLP,
    n_samples: int,
    batch: int,
    generator: torch.Generator,
    out_only: bool,
    bar=None,
):
    done = 0
    while done < n_samples:
        b = min(batch, n_samples - done)
        x = torch.randn(b, mlp.width, generator=generator, dtype=torch.float32)  # [batch, width]
        pre, act, out = mlp.forward(x)
        acc.add([out] if out_only else pre + act + [out])
        done += b
        if bar is not None:
            bar.advance(b)


def monte_carlo(
    mlp: RandomMLP,
    n_samples: int,
    batch: int = SAMPLE_BATCH,
    generator: torch.Generator | None = None,
    progress: bool = False,
    out_only: bool = False,
) -> SampleStats:
    """Sample x ~ N(0, I) ``n_samples`` times in float32 batches of ``batch`` and return
    every layer's sample mean and variance (float64; only the output's when
    ``out_only``, which halves the cost). Memory is O(batch * n)."""
    _check_samples(n_samples, batch)
    check_mlp(mlp)
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    acc = _Moments()
    with console_progress(n_samples, "sampling", enabled=progress) as bar:
        _sample_into(acc, mlp, n_samples, batch, gen, out_only, bar)
    return acc.stats(0 if out_only else mlp.hidden_layers)


def network_key(mlp: RandomMLP, n_samples: int, seed: int, out_only: bool = False) -> str:
    """Hash of (weights, biases, activation, N, sampling seed, layers): the ground-truth cache key."""
    h = hashlib.sha256()
    h.update(f"{mlp.activation}|{n_samples}|{seed}|{out_only}|".encode())
    for name, t in sorted(mlp.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().double().contiguous().numpy().tobytes())
    return h.hexdigest()[:24]


def ground_truth(
    mlp: RandomMLP,
    n_samples: int,
    cache_dir: str | Path | None = None,
    seed: int = 12345,
    batch: int = SAMPLE_BATCH,
    progress: bool = True,
    out_only: bool = False,
) -> SampleStats:
    """A large sampling run, cached on disk under ``cache_dir`` keyed by (network, N, seed).
    It runs in chunks of 10^6 samples, each from its own generator seeded by
    (seed, chunk), and checkpoints atomically after each chunk, so a killed run resumes
    where it stopped and gives the same result as an uninterrupted one."""
    _check_samples(n_samples, batch)
    check_mlp(mlp)
    key = network_key(mlp, n_samples, seed, out_only)
    final = partial = None
    if cache_dir is not None:
        final = Path(cache_dir) / f"gt_{key}.pt"
        partial = Path(cache_dir) / f"gt_{key}.partial.pt"
        if final.is_file():
            return SampleStats(**torch.load(final))
    acc, chunk = _Moments(), 0
    if partial is not None and partial.is_file():
        st = torch.load(partial)
        acc, chunk = _Moments.from_state(st["moments"]), st["chunk"]
    n_chunks = -(-n_samples // CHUNK)
    label = f"ground truth n={mlp.width} N={n_samples:.0e}"
    with console_progress(n_samples, label, enabled=progress, done=min(chunk * CHUNK, n_samples)) as bar:
        while chunk < n_chunks:
            size = min(CHUNK, n_samples - chunk * CHUNK)
            gen = torch.Generator().manual_seed(seed * 1_000_003 + chunk)
            part = _Moments()
            _sample_into(part, mlp, size, batch, gen, out_only, bar)
            acc.merge(part)
            chunk += 1
            if partial is not None and chunk < n_chunks:
                atomic_torch_save(partial, {"moments": acc.state(), "chunk": chunk})
    stats = acc.stats(0 if out_only else mlp.hidden_layers)
    if final is not None:
        atomic_torch_save(final, stats.__dict__)
        partial.unlink(missing_ok=True)
    return stats
