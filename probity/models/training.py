"""The one training loop: AdamW, a learning-rate schedule, gradient clipping, atomic checkpoints,
resume after a kill, and a progress bar.

Every trainer in probity (the organism recipes, the LoRA honesty fine-tune, the NLA phases) uses it:

>>> config = OptimConfig(lr=2e-3, warmup=100, weight_decay=0.01)
>>> result = fit(model, lambda step: loss_of_batch(step), steps=5000, config=config, checkpoint_dir="out/ckpt")

``fit`` owns the loop; :class:`Stepper` is one optimiser with its schedule, for loops that
interleave several models (the NLA's verbalizer and reconstructor).

Schedules come from ``transformers``: linear warm-up then cosine decay
(``get_cosine_with_min_lr_schedule_with_warmup``, ``min_lr_ratio=0`` is
``get_cosine_schedule_with_warmup``), or a constant rate after the warm-up. A recipe whose
shipped weights were trained with another schedule passes it as ``lr_at(step) -> learning
rate``, so that the recipe still reproduces them bit for bit.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from probity.models.checkpoint import Checkpointer
from probity.report.console import progress as console_progress

SCHEDULES = ("cosine", "constant")


@dataclass
class OptimConfig:
    """AdamW and its learning-rate schedule.

    ``schedule``: ``cosine`` (linear warm-up over ``warmup`` steps, then cosine decay to
    ``min_lr_ratio * lr``) or ``constant`` (warm-up, then ``lr``). ``max_grad_norm`` clips the
    gradients' global norm (None: no clipping)."""

    lr: float
    warmup: int = 0
    schedule: str = "cosine"
    min_lr_ratio: float = 0.0
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    max_grad_norm: float | None = None

    def __post_init__(self):
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.warmup < 0 or self.weight_decay < 0:
            raise ValueError(f"warmup and weight_decay must be >= 0, got {self.warmup} and {self.weight_decay}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be > 0 or None, got {self.max_grad_norm}")
        self.betas = tuple(self.betas)


class Stepper:
    """One AdamW optimiser over ``params`` with its schedule over ``steps`` updates.

    ``step(loss)`` is one update: zero the gradients, backpropagate, clip, step, advance the
    schedule. ``lr_at(step) -> learning rate`` replaces the config's schedule (see module doc)."""

    def __init__(
        self,
        params: Iterable[nn.Parameter],
        config: OptimConfig,
        steps: int,
        lr_at: Callable[[int], float] | None = None,
    ):
        self.params = [p for p in params if p.requires_grad]
        if not self.params:
            raise ValueError("nothing to train: no parameter requires a gradient")
        self.config, self.lr_at, self.updates = config, lr_at, 0
        self.optimizer = torch.optim.AdamW(
            self.params, lr=config.lr, weight_decay=config.weight_decay, betas=config.betas
        )
        if lr_at is not None:
            self.schedule = None
        elif config.schedule == "cosine":
            from transformers import get_cosine_with_min_lr_schedule_with_warmup

            self.schedule = get_cosine_with_min_lr_schedule_with_warmup(
                self.optimizer, config.warmup, max(steps, 1), min_lr_rate=config.min_lr_ratio
            )
        else:
            from transformers import get_constant_schedule_with_warmup

            self.schedule = get_constant_schedule_with_warmup(self.optimizer, config.warmup)

    @property
    def lr(self) -> float:
        """The learning rate the next update uses."""
        return self.lr_at(self.updates) if self.lr_at is not None else self.optimizer.param_groups[0]["lr"]

    def set_lr(self, lr: float) -> None:
        """Change the base learning rate from the next update on (the schedule keeps its shape)."""
        if self.lr_at is not None:
            raise ValueError("this stepper follows lr_at(step); change that function instead")
        self.schedule.base_lrs = [lr] * len(self.schedule.base_lrs)
        for group, factor in zip(self.optimizer.param_groups, self.schedule.lr_lambdas):
            group["lr"] = lr * factor(self.schedule.last_epoch)

    def step(self, loss: torch.Tensor) -> None:
        """One update on ``loss`` (a scalar with a graph to ``params``)."""
        if self.lr_at is not None:
            for group in self.optimizer.param_groups:
                group["lr"] = self.lr_at(self.updates)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.config.max_grad_norm)
        self.optimizer.step()
        if self.schedule is not None:
            self.schedule.step()
        self.updates += 1

    def state_dict(self) -> dict:
        """The optimiser's and the schedule's state, and the update count."""
        schedule = None if self.schedule is None else self.schedule.state_dict()
        return {"optimizer": self.optimizer.state_dict(), "schedule": schedule, "updates": self.updates}

    def load_state_dict(self, state: Mapping) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.optimizer.load_state_dict(state["optimizer"])
        if self.schedule is not None:
            self.schedule.load_state_dict(state["schedule"])
        self.updates = state["updates"]


class Stateful(Protocol):
    """Anything whose state a checkpoint holds: models, optimisers, random generators (wrapped)."""

    def state_dict(self) -> Any: ...

    def load_state_dict(self, state: Any) -> Any: ...


@dataclass
class GeneratorState:
    """A ``torch.Generator`` or ``random.Random`` seen as :class:`Stateful`, so checkpoints
    resume its random stream where it stopped."""

    rng: torch.Generator | random.Random

    def state_dict(self):
        """The generator's state (a tensor for torch, a tuple for ``random``)."""
        return self.rng.get_state() if isinstance(self.rng, torch.Generator) else self.rng.getstate()

    def load_state_dict(self, state) -> None:
        """Put the generator back where :meth:`state_dict` saw it."""
        if isinstance(self.rng, torch.Generator):
            self.rng.set_state(state)
        else:
            self.rng.setstate(state)


@dataclass
class FitResult:
    """What one call of :func:`fit` did: ``losses`` of the steps it ran (after a resume, only
    those), the step it started from, and its seconds."""

    losses: list[float]
    start: int
    seconds: float

    def mean_loss(self, last: int = 50) -> float:
        """Mean loss of the last ``last`` steps run (nan when none ran)."""
        tail = self.losses[-last:]
        return sum(tail) / len(tail) if tail else float("nan")


def fit(
    model: nn.Module,
    batch_loss: Callable[[int], torch.Tensor],
    steps: int,
    config: OptimConfig,
    lr_at: Callable[[int], float] | None = None,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 500,
    state: Mapping[str, Stateful] | None = None,
    run_id: Mapping | None = None,
    label: str = "training",
    progress: bool = True,
) -> FitResult:
    """Train ``model`` for ``steps`` updates of ``batch_loss(step)`` (draw a batch, return its loss).

    With ``checkpoint_dir``, the model, the optimiser and everything in ``state`` (e.g. the
    batch generator as :class:`GeneratorState`; by default ``{"model": model}`` is what holds the
    weights, pass your own to save less, e.g. a LoRA adapter) are written atomically every
    ``checkpoint_every`` steps and at the end, and a rerun resumes from the newest checkpoint
    losing nothing. ``run_id`` (the settings that make a run this run, e.g. the seed; the optimiser
    config and, unless the schedule is constant, ``steps`` are added) is saved with every
    checkpoint; checkpoints of another run are never resumed (``ValueError``).
    The model is in train mode during the loop and in eval mode after it."""
    if steps < 0 or checkpoint_every < 1:
        raise ValueError(f"need steps >= 0 and checkpoint_every >= 1, got {steps} and {checkpoint_every}")
    saved = {"model": model, **(state or {})}
    stepper = Stepper(model.parameters(), config, steps, lr_at)
    ckpt = Checkpointer(checkpoint_dir) if checkpoint_dir is not None else None
    start = 0
    # the step count is part of a run when the schedule depends on it (a constant rate does not:
    # such a run may be resumed to go on for longer)
    shaped = lr_at is not None or config.schedule != "constant"
    run_id = {"config": dataclasses.asdict(config), **({"steps": steps} if shaped else {}), **(run_id or {})}
    if ckpt is not None and (found := ckpt.latest()) is not None:
        start, snapshot = found
        if snapshot.get("run_id") != run_id:
            raise ValueError(
                f"{ckpt.folder} holds checkpoints of another run (other settings); "
                "delete that folder or pass a fresh one"
            )
        for name, obj in saved.items():
            obj.load_state_dict(snapshot[name])
        stepper.load_state_dict(snapshot["stepper"])
    losses: list[float] = []
    t0 = time.perf_counter()
    model.train()
    with console_progress(steps, label, enabled=progress, done=start) as bar:
        for step in range(start, steps):
            loss = batch_loss(step)
            stepper.step(loss)
            losses.append(loss.item())
            bar.advance(note=f"loss {sum(losses[-50:]) / len(losses[-50:]):.4f}")
            done = step + 1
            if ckpt is not None and (done % checkpoint_every == 0 or done == steps):
                snapshot = {"run_id": run_id, "stepper": stepper.state_dict()}
                ckpt.save(done, {**snapshot, **{k: v.state_dict() for k, v in saved.items()}})
    model.eval()
    return FitResult(losses, start, time.perf_counter() - t0)


def fit_lora(
    model: nn.Module,
    examples: list[tuple[list[int], int]],
    steps: int,
    config: OptimConfig,
    pad_id: int,
    rank: int = 8,
    batch_size: int = 16,
    seed: int = 0,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 25,
    run_id: Mapping | None = None,
    label: str = "LoRA fine-tune",
):
    """``(peft_model, FitResult)``: a rank-``rank`` LoRA adapter (alpha ``2 * rank``, peft) on every linear
    layer of ``model`` (wrapped in place: pass a copy to keep the original), trained by :func:`fit` on
    ``examples`` ``(ids, start)`` with the loss on ``ids[start:]``. Step ``s`` draws ``batch_size``
    examples with ``random.Random(seed * 7919 + s)``, so a resumed run replays the same batches; a
    checkpoint holds the adapter and the optimiser, not the base model."""
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict

    from probity.models.chat import pad_batch
    from probity.models.sites import input_device

    torch.manual_seed(seed)  # the adapter's initialisation
    lora = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules="all-linear", lora_dropout=0.0)
    peft_model = get_peft_model(model, lora)

    def batch_loss(step: int) -> torch.Tensor:
        rng = random.Random(seed * 7919 + step)
        chunk = [examples[rng.randrange(len(examples))] for _ in range(batch_size)]
        batch = pad_batch([ids for ids, _ in chunk], pad_id, device=input_device(peft_model))  # [batch, pos]
        labels = torch.full_like(batch["input_ids"], -100)  # [batch, pos]: -100 where no loss is taken
        for i, (ids, start) in enumerate(chunk):
            labels[i, start : len(ids)] = batch["input_ids"][i, start : len(ids)]
        return peft_model(**batch, labels=labels).loss

    class Adapter:
        def state_dict(self):
            return get_peft_model_state_dict(peft_model)

        def load_state_dict(self, state):
            set_peft_model_state_dict(peft_model, state)

    result = fit(
        peft_model,
        batch_loss,
        steps,
        config,
        checkpoint_dir=checkpoint_dir,
        checkpoint_every=checkpoint_every,
        state={"model": Adapter()},
        run_id={"rank": rank, "batch_size": batch_size, "seed": seed, "examples": len(examples), **(run_id or {})},
        label=label,
    )
    return peft_model, result
