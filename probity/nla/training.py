"""Training a natural-language autoencoder: AR SFT, AV SFT, then GRPO on the AV.

One global step counter runs through three phases:

1. AR SFT (:func:`ar_sft_step`): regress the reconstructor's output on teacher descriptions
   onto the activations (loss = MSE of vectors normalised to sqrt(d) = 2(1 - cos)).
2. AV SFT (:func:`av_sft_step`): maximise the verbalizer's log-likelihood of the teacher
   description given the injected activation.
3. GRPO (:func:`rl_step`, :func:`grpo_step`): per activation sample a group of descriptions (length-capped), reward
   each with -MSE(AR(description), activation) (a malformed one gets -2, the
   reward of an orthogonal vector), normalise rewards within the group, and take
   one policy-gradient step with a per-token KL penalty to the frozen SFT
   verbaliser (k3 estimator). The AR takes one regression step on the same fresh
   rollouts every step, so it keeps up with (and is not gamed by) the policy.

Knowledge replay (``replay_coef`` > 0 with ``replay_texts``): every AV update
also pays a KL to the frozen target on plain texts. The AV is a copy of the
target and can name what the activation only points at (a fact's value) from
the target's own knowledge; full fine-tuning on the teacher descriptions of a
few hundred facts erases that knowledge for the others unless it is replayed.

Each step is one optimiser update, so rollouts are on-policy and the PPO ratio
is 1 (no clipping needed). Under ``torch.distributed`` each process draws its own
batch; the AV and the AR are each wrapped in torch's DistributedDataParallel
(weights broadcast from rank 0, gradients averaged on backward; gloo or nccl),
with all of a step's differentiable work in one wrapped call; one process
needs no launcher. Every optimiser is a ``probity.models.training.Stepper`` (AdamW, constant
learning rate, gradients clipped at norm 1). Checkpoints (models, optimisers, history) are
written atomically every ``checkpoint_every`` steps and training resumes from the newest one.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from probity.models.checkpoint import Checkpointer
from probity.models.training import OptimConfig, Stepper
from probity.nla.core import Reconstructor, Verbalizer, direction_mse, fve
from probity.report import Claim, result_type
from probity.report.console import progress as console_progress


class CheckpointMismatch(ValueError):
    """The output folder holds checkpoints of another run (other config or data)."""


@dataclasses.dataclass
class TrainConfig:
    """Schedule and optimiser settings. Steps are global optimiser updates; an SFT
    step takes ``batch_size`` activations, an RL step ``batch_size // group``
    activations with ``group`` rollouts each (``batch_size`` rollouts). ``lora_rank`` > 0
    trains the reconstructor as a LoRA adapter plus its head (the verbalizer's rank is set
    where it is made, ``Verbalizer.create(..., lora_rank=)``)."""

    ar_sft_steps: int = 300
    av_sft_steps: int = 300
    rl_steps: int = 200
    batch_size: int = 16
    group: int = 4
    lr_ar: float = 3e-4
    lr_av: float = 3e-4
    lr_rl: float = 3e-5
    lr_ar_rl: float = 1e-4
    kl_coef: float = 0.02
    replay_coef: float = 0.0
    replay_batch: int = 16
    temperature: float = 1.0
    eval_every: int = 50
    eval_size: int = 256
    checkpoint_every: int = 50
    shuffled_control: bool = True
    lora_rank: int = 0
    emphasis: tuple[str, ...] = ()  # label words (one token each) that weigh emphasis_weight in the AV-SFT loss
    emphasis_weight: float = 1.0
    seed: int = 0

    def __post_init__(self):
        if not 4 <= self.group <= 64:
            raise ValueError(f"group must be in 4..64 (GRPO needs several samples per activation), got {self.group}")
        for name in ("ar_sft_steps", "av_sft_steps", "rl_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.total_steps < 1:
            raise ValueError("nothing to train: every step count is 0; give at least one step")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        for name in ("eval_every", "checkpoint_every", "replay_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.eval_size < 2:
            raise ValueError(f"eval_size must be >= 2 (FVE needs two held-out activations), got {self.eval_size}")
        for name in ("kl_coef", "replay_coef"):
            value = getattr(self, name)
            if not 0 <= value < math.inf:
                raise ValueError(f"{name} must be a finite number >= 0 (0 turns it off), got {value}")
        for name in ("lr_ar", "lr_av", "lr_rl", "lr_ar_rl", "temperature", "emphasis_weight"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a positive number, got {value}")

    @property
    def total_steps(self) -> int:
        return self.ar_sft_steps + self.av_sft_steps + self.rl_steps


@dataclasses.dataclass
class CurvePoint:
    """Held-out FVE at one step: round trip (AV greedy -> AR) and AR on teacher labels."""

    step: int
    phase: str
    fve_round_trip: float
    fve_ar_teacher: float
    mean_reward: float | None = None


@result_type("nla.TrainResult")
@dataclasses.dataclass
class TrainResult:
    """Held-out metrics of a training run and its FVE-over-training curve."""

    fve_ar_sft: float
    fve_sft: float
    fve_rl: float
    fve_shuffled: float | None
    seconds: float
    steps: int
    processes: int
    curve: list[CurvePoint]
    sft_probe: dict | None = None

    def headline(self) -> list[Claim]:
        """Held-out FVE against the NLA paper's anchor and ``bench/nla.py``'s targets."""
        claims = [
            Claim(
                "held-out FVE after GRPO",
                self.fve_rl,
                reference="0.6-0.8",
                source="Anthropic 2026 (7B-70B)",
                target=">= 0.70",
            ),
            Claim("FVE gain of GRPO over SFT", self.fve_rl - self.fve_sft, target=">= 0.10"),
        ]
        if self.fve_shuffled is not None:
            claims.append(
                Claim(
                    "shuffled-pairs control FVE",
                    self.fve_shuffled,
                    reference="about 0",
                    source="Anthropic 2026",
                    target="<= 0.05",
                )
            )
        return claims

    def figures(self) -> dict:
        """The FVE-over-training curve."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6.4, 3.6))
        steps = [p.step for p in self.curve]
        ax.plot(steps, [p.fve_round_trip for p in self.curve], "o-", label="round trip (AV -> AR)")
        ax.plot(steps, [p.fve_ar_teacher for p in self.curve], "s--", label="AR on teacher labels")
        ax.axhline(self.fve_ar_sft, color="grey", lw=0.8, ls=":", label=f"AR-SFT baseline {self.fve_ar_sft:.2f}")
        if self.fve_shuffled is not None:
            ax.axhline(
                self.fve_shuffled, color="red", lw=0.8, ls=":", label=f"shuffled control {self.fve_shuffled:.2f}"
            )
        ax.set_xlabel("step")
        ax.set_ylabel("held-out FVE")
        ax.legend(fontsize=8)
        fig.tight_layout()
        return {"FVE over training": fig}


def rank_and_size() -> tuple[int, int]:
    """(this process's rank, the number of processes) of the torch.distributed group; (0, 1) without one."""
    return (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)


class _Loss(nn.Module):
    """Holds a model for torch's DistributedDataParallel: ``forward(fn, *args)`` returns
    ``fn(*args)``, all of one optimiser step's differentiable work in one call, so DDP
    sees one forward per backward and averages the gradients across processes."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, fn, *args):
        return fn(*args)


def _direct(fn, *args):
    return fn(*args)


def _ddp(model: nn.Module):
    """``run(fn, *args)`` computing a loss of ``model`` (the parameters are broadcast
    from rank 0 once, gradients averaged on backward), or a plain call in one process."""
    if rank_and_size()[1] == 1:
        return _direct
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(_Loss(model))


def _stepper(module: nn.Module, lr: float, steps: int) -> Stepper:
    """AdamW at a constant ``lr`` (no weight decay), gradients clipped at norm 1."""
    return Stepper(module.parameters(), OptimConfig(lr, schedule="constant", max_grad_norm=1.0), steps)


def ar_loss(ar: Reconstructor, descriptions, targets: torch.Tensor) -> torch.Tensor:
    """Mean direction MSE (2(1 - cos)) of the AR's predictions against ``targets`` ``[batch, d]``."""
    return direction_mse(ar(descriptions), targets).mean()


def av_sft_loss(
    av: Verbalizer, acts: torch.Tensor, targets: list[list[int]], weights: list[list[float]] | None = None
) -> torch.Tensor:
    """Mean per-token negative log-likelihood of teacher token sequences given activations ``[batch, d]``;
    with ``weights`` (one per target token, :func:`emphasis_weights`) the weighted mean."""
    logp, mask = av.token_logprobs(acts, targets)  # [batch, pos], right-padded
    if weights is None:
        return -(logp.sum() / mask.sum())
    w = torch.zeros_like(mask)
    for i, row in enumerate(weights):
        w[i, : len(row)] = torch.tensor(row, dtype=w.dtype)
    return -((logp * w).sum() / w.sum())


def emphasis_weights(tokenizer, targets: list[list[int]], words: Sequence[str], weight: float) -> list[list[float]]:
    """Per-token AV-SFT weights of teacher token sequences: ``weight`` on every token that is one of
    ``words`` as a label field writes it (with its leading space: one token each), 1 elsewhere. For the
    censored labels ``«tok» | lie | ...`` the behaviour word is one token of about 16, so plain NLL all
    but ignores it; this is the knob that makes the verbalizer read it."""
    ids = set()
    for word in words:
        found = tokenizer(f" {word}", add_special_tokens=False)["input_ids"]
        if len(found) != 1:
            raise ValueError(f"emphasis word {word!r} is {len(found)} tokens for this tokenizer; give one-token words")
        ids.add(found[0])
    return [[weight if t in ids else 1.0 for t in seq] for seq in targets]


def replay_loss(av: Verbalizer, target, tokenizer, texts: list[str]) -> torch.Tensor:
    """Mean per-token KL(target || AV) of next-token distributions on plain ``texts``:
    keeps the verbalizer's knowledge that of the target it was copied from."""
    batch = tokenizer(texts, add_special_tokens=False, padding=True, padding_side="right", return_tensors="pt")
    ids, mask = batch["input_ids"], batch["attention_mask"]  # [batch, pos]
    with torch.no_grad():
        ref = torch.log_softmax(target(input_ids=ids, attention_mask=mask).logits.float(), -1)  # [batch, pos, vocab]
    logp = torch.log_softmax(av.model(input_ids=ids, attention_mask=mask).logits.float(), -1)
    kl = (ref.exp() * (ref - logp)).sum(-1)  # [batch, pos]
    return (kl * mask).sum() / mask.sum()


Update = Callable[[torch.Tensor], None]


def grpo_step(
    av: Verbalizer,
    ref: Verbalizer,
    ar: Reconstructor,
    acts: torch.Tensor,
    cfg: TrainConfig,
    update_av: Update,
    update_ar: Update,
    replay=None,
    run_av=_direct,
    run_ar=_direct,
) -> dict:
    """One GRPO update of the AV and one regression update of the AR on the same rollouts.

    acts ``[batch, d]``; ``update_av`` / ``update_ar`` apply one optimiser update for a loss (e.g.
    :meth:`Stepper.step`); ``replay``: a callable giving the ``replay_coef`` term, or None;
    ``run_av`` / ``run_ar``: how a loss is computed (see :func:`_ddp`).
    Returns statistics: mean reward, malformed fraction, KL."""
    G = cfg.group
    seqs = av.generate(acts, samples=G, temperature=cfg.temperature)  # batch * G rollouts, activation-major
    texts = av.decode(seqs)
    ok = torch.tensor([av.is_well_formed(s) for s in seqs])  # [batch * G]
    targets = acts.repeat_interleave(G, 0)  # [batch * G, d]
    with torch.no_grad():
        reward = -direction_mse(ar.predict(texts), targets)
    reward = torch.where(ok, reward, torch.full_like(reward, -2.0))
    grouped = reward.view(-1, G)  # [batch, G]
    adv = ((grouped - grouped.mean(1, keepdim=True)) / (grouped.std(1, keepdim=True) + 1e-4)).view(-1)

    with torch.no_grad():
        ref_logp, _ = ref.token_logprobs(targets, seqs)
    norm = av.config.max_new_tokens

    def policy_loss():
        logp, mask = av.token_logprobs(targets, seqs)  # [batch * G, pos]
        delta = (ref_logp - logp) * mask
        kl = (delta.exp() - delta - 1) * mask  # the k3 estimator of KL(policy || reference), per token
        loss = (-(adv[:, None] * logp).sum(1) / norm + cfg.kl_coef * kl.sum(1) / norm).mean()
        return (loss if replay is None else loss + cfg.replay_coef * replay()), (
            kl.sum(1) / mask.sum(1).clamp_min(1)
        ).mean()

    loss, kl = run_av(policy_loss)
    update_av(loss)

    def reconstruction_loss():  # malformed rollouts weigh 0 (every process must still take the step)
        return (direction_mse(ar(texts), targets) * ok).sum() / ok.sum().clamp_min(1)

    update_ar(run_ar(reconstruction_loss))
    return {"reward": float(reward.mean()), "malformed": float(1 - ok.float().mean()), "kl": float(kl.detach())}


@dataclasses.dataclass
class _Run:
    """What every phase of one training run reads and updates."""

    cfg: TrainConfig
    av: Verbalizer
    ar: Reconstructor
    acts: torch.Tensor  # [n, d] training activations
    labels: list[str]  # their teacher descriptions
    teacher_ids: list[list[int]]  # the descriptions as the AV's target token ids
    teacher_weights: list[list[float]] | None  # their AV-SFT weights (None: plain NLL)
    av_stepper: Stepper
    ar_stepper: Stepper
    run_av: Callable
    run_ar: Callable
    replay: Callable[[], torch.Tensor] | None
    ref: Verbalizer | None = None  # the frozen SFT verbalizer, once GRPO starts


def ar_sft_step(run: _Run, idx: torch.Tensor) -> dict:
    """Phase 1, AR-SFT: one regression step of the reconstructor from the teacher descriptions of
    the activations ``idx`` onto those activations."""
    run.ar_stepper.step(run.run_ar(ar_loss, run.ar, [run.labels[i] for i in idx], run.acts[idx]))
    return {}


def av_sft_step(run: _Run, idx: torch.Tensor) -> dict:
    """Phase 2, AV-SFT: one maximum-likelihood step of the verbalizer on the teacher descriptions
    of the activations ``idx`` (plus the knowledge-replay term when there is one)."""

    def loss(idx):
        weights = None if run.teacher_weights is None else [run.teacher_weights[i] for i in idx]
        nll = av_sft_loss(run.av, run.acts[idx], [run.teacher_ids[i] for i in idx], weights)
        return nll if run.replay is None else nll + run.cfg.replay_coef * run.replay()

    run.av_stepper.step(run.run_av(loss, idx))
    return {}


def rl_step(run: _Run, idx: torch.Tensor) -> dict:
    """Phase 3, GRPO: on entry freeze the SFT verbalizer as the KL reference and switch to the RL
    learning rates; then one :func:`grpo_step` on the first ``batch_size // group`` activations."""
    if run.ref is None:
        run.ref = copy.deepcopy(run.av).eval().requires_grad_(False)
        run.av_stepper.set_lr(run.cfg.lr_rl)
        run.ar_stepper.set_lr(run.cfg.lr_ar_rl)
    acts = run.acts[idx[: max(1, run.cfg.batch_size // run.cfg.group)]]
    return grpo_step(
        run.av,
        run.ref,
        run.ar,
        acts,
        run.cfg,
        run.av_stepper.step,
        run.ar_stepper.step,
        run.replay,
        run.run_av,
        run.run_ar,
    )


def phase_at(cfg: TrainConfig, step: int) -> tuple[str, Callable[[_Run, torch.Tensor], dict]]:
    """The phase (name, step function) that global step ``step`` belongs to."""
    if step < cfg.ar_sft_steps:
        return "ar_sft", ar_sft_step
    if step < cfg.ar_sft_steps + cfg.av_sft_steps:
        return "av_sft", av_sft_step
    return "rl", rl_step


@torch.no_grad()
def round_trip_fve(av: Verbalizer, ar: Reconstructor, acts: torch.Tensor) -> tuple[float, list[str]]:
    """Held-out FVE of AR(greedy AV description) against the activations ``[n, d]``."""
    texts = av.describe(acts)
    return fve(ar.predict(texts), acts), texts


def _digest(labels: list[str], acts: torch.Tensor) -> str:
    """A fingerprint of the training data, so a checkpoint is only resumed by the run that wrote it."""
    h = hashlib.sha256("\n".join(labels).encode())
    h.update(acts.detach().to(torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def _shuffled_control(
    model, tokenizer, config, train_labels, train_acts, eval_labels, eval_acts, cfg: TrainConfig, progress=False
) -> float:
    """FVE of an AR trained for the same AR-SFT budget on teacher labels paired with
    permuted activations: what a reconstructor gets from the labels' format alone."""
    g = torch.Generator().manual_seed(cfg.seed + 7)
    perm = torch.randperm(len(train_acts), generator=g)
    ar = Reconstructor.from_target(model, tokenizer, config, lora_rank=cfg.lora_rank).train()
    stepper = _stepper(ar, cfg.lr_ar, cfg.ar_sft_steps)
    with console_progress(cfg.ar_sft_steps, "shuffled control", enabled=progress) as bar:
        for _ in range(cfg.ar_sft_steps):
            idx = torch.randint(len(train_acts), (cfg.batch_size,), generator=g)
            stepper.step(ar_loss(ar, [train_labels[i] for i in idx], train_acts[perm[idx]]))
            bar.advance()
    return fve(ar.eval().predict(eval_labels), eval_acts)


def trainable_state(module: nn.Module, like: nn.Module | None = None) -> dict:
    """The state of the parameters that train in ``like`` (default ``module``), taken from ``module``:
    every weight for a full fine-tune, the adapter (and head) for LoRA, so a checkpoint of a LoRA run
    holds megabytes, not the frozen base."""
    names = {n for n, p in (like or module).named_parameters() if p.requires_grad}
    return {k: v for k, v in module.state_dict().items() if k in names}


def load_trainable_state(module: nn.Module, state: dict) -> None:
    """Load a :func:`trainable_state` state into ``module``; a key it does not know, or a parameter
    that trains and is missing from ``state``, is an error."""
    unexpected = module.load_state_dict(state, strict=False).unexpected_keys
    missing = [n for n, p in module.named_parameters() if p.requires_grad and n not in state]
    if unexpected or missing:
        raise CheckpointMismatch(
            f"checkpoint does not fit this model: unknown {unexpected[:3]}, missing {missing[:3]}; "
            "pass a fresh output folder"
        )


def _check_data(av: Verbalizer, train_acts, train_labels, eval_acts, eval_labels) -> None:
    if len(train_acts) != len(train_labels) or len(eval_acts) != len(eval_labels):
        raise ValueError(
            f"need one label per activation: {len(train_acts)} vs {len(train_labels)} (train), "
            f"{len(eval_acts)} vs {len(eval_labels)} (eval)"
        )
    if len(eval_acts) < 2 or len(train_acts) < 1:
        raise ValueError("need at least 1 training and 2 held-out activations")
    for name, t in (("train_acts", train_acts), ("eval_acts", eval_acts)):
        if t.ndim != 2 or t.shape[1] != av.config.d_model or not torch.isfinite(t).all():
            raise ValueError(f"{name} must be finite [n, {av.config.d_model}], got {tuple(t.shape)}")


def train(
    model,
    tokenizer,
    av: Verbalizer,
    train_acts: torch.Tensor,
    train_labels: list[str],
    eval_acts: torch.Tensor,
    eval_labels: list[str],
    cfg: TrainConfig,
    out_dir: str | Path | None = None,
    progress: bool = True,
    replay_texts: list[str] | None = None,
    on_sft_end=None,
    keep_checkpoints: int = 2,
) -> tuple[Verbalizer, Reconstructor, TrainResult]:
    """Train an NLA on ``train_acts`` ``[n, d]`` with teacher descriptions ``train_labels``,
    scoring on held-out ``eval_acts`` ``[m, d]`` / ``eval_labels``: one global step counter
    runs through :func:`ar_sft_step`, :func:`av_sft_step` and :func:`rl_step` (see :func:`phase_at`).

    ``av`` is a fresh :class:`Verbalizer` (it is trained in place); ``model`` is the
    target (the AR is cut from it). With ``out_dir``, checkpoints go to
    ``out_dir/checkpoints`` and a run killed at any point resumes from the newest.
    With ``replay_texts`` and ``cfg.replay_coef`` > 0, every AV update also pays
    ``replay_coef`` x KL(target || AV) on a batch of those texts (see :func:`replay_loss`).
    ``on_sft_end(av) -> dict`` scores the SFT verbaliser before GRPO (e.g. the
    organism's attribute recovery and audit), kept as ``TrainResult.sft_probe``.
    ``keep_checkpoints``: how many of the newest checkpoints stay on disk (1 for a real model,
    where each holds the AV, the AR, their optimiser states and the frozen SFT reference).
    Returns (verbalizer, reconstructor, :class:`TrainResult`)."""
    _check_data(av, train_acts, train_labels, eval_acts, eval_labels)
    if keep_checkpoints < 1:
        raise ValueError(f"keep_checkpoints must be >= 1, got {keep_checkpoints}")
    rank, world = rank_and_size()
    eval_acts, eval_labels = eval_acts[: cfg.eval_size], eval_labels[: cfg.eval_size]
    ar = Reconstructor.from_target(model, tokenizer, av.config, lora_rank=cfg.lora_rank)
    replay = None
    if replay_texts and cfg.replay_coef > 0:
        target = model.eval()

        def replay() -> torch.Tensor:
            pick = torch.randint(len(replay_texts), (cfg.replay_batch,)).tolist()
            return replay_loss(av, target, tokenizer, [replay_texts[i] for i in pick])

    teacher_ids = av.encode(train_labels)
    weighted = cfg.emphasis and cfg.emphasis_weight != 1
    run = _Run(
        cfg,
        av,
        ar,
        train_acts,
        train_labels,
        teacher_ids,
        emphasis_weights(av.tokenizer, teacher_ids, cfg.emphasis, cfg.emphasis_weight) if weighted else None,
        _stepper(av, cfg.lr_av, cfg.total_steps),
        _stepper(ar, cfg.lr_ar, cfg.total_steps),
        _direct,
        _direct,
        replay,
    )
    state = {"curve": [], "metrics": {}, "seconds": 0.0}
    ckpt = Checkpointer(Path(out_dir) / "checkpoints", keep=keep_checkpoints) if out_dir is not None else None
    start = 0
    # "format": what a checkpoint holds; 2 = per-model Steppers (older folders are another run)
    run_id = {
        "format": 2,
        "config": dataclasses.asdict(cfg),
        "verbalizer": dataclasses.asdict(av.config) | {"center": _digest([], av.center[None])},
        "data": _digest(train_labels, train_acts),
    }
    if ckpt is not None and (found := ckpt.latest()) is not None:
        start, saved = found
        if saved.get("run") != run_id:
            raise CheckpointMismatch(
                f"{ckpt.folder} holds checkpoints of a different run (other config or data); "
                "pass a fresh output folder or delete that one"
            )
        load_trainable_state(av.model, saved["av"])
        load_trainable_state(ar, saved["ar"])
        run.av_stepper.load_state_dict(saved["av_stepper"])
        run.ar_stepper.load_state_dict(saved["ar_stepper"])
        state = saved["state"]
        if saved.get("ref") is not None:
            run.ref = copy.deepcopy(av).eval().requires_grad_(False)
            load_trainable_state(run.ref.model, saved["ref"])
    run.run_av, run.run_ar = _ddp(av), _ddp(ar)  # after a resume: every process holds rank 0's weights
    sft_end = cfg.ar_sft_steps + cfg.av_sft_steps
    t0 = time.perf_counter() - state["seconds"]

    def evaluate(step: int, phase: str, reward=None) -> None:
        av.eval(), ar.eval()
        rt, _ = round_trip_fve(av, ar, eval_acts) if step > cfg.ar_sft_steps else (float("nan"), None)
        teacher = fve(ar.predict(eval_labels), eval_acts)
        state["curve"].append(CurvePoint(step, phase, rt, teacher, reward))
        av.train(), ar.train()

    def save(step: int) -> None:
        if ckpt is not None and rank == 0:
            state["seconds"] = time.perf_counter() - t0
            ckpt.save(
                step,
                {
                    "av": trainable_state(av.model),
                    "ar": trainable_state(ar),
                    "av_stepper": run.av_stepper.state_dict(),
                    "ar_stepper": run.ar_stepper.state_dict(),
                    "state": state,
                    "ref": None if run.ref is None else trainable_state(run.ref.model, like=av.model),
                    "run": run_id,
                },
            )
        if world > 1:
            dist.barrier()

    av.train(), ar.train()
    rewards = []
    with console_progress(cfg.total_steps, "nla train", enabled=progress and rank == 0, done=start) as bar:
        for step in range(start, cfg.total_steps):
            torch.manual_seed(cfg.seed * 1_000_003 + step * world + rank)
            idx = torch.randint(len(train_acts), (cfg.batch_size,))
            phase, phase_step = phase_at(cfg, step)
            stats = phase_step(run, idx)
            if "reward" in stats:
                rewards.append(stats["reward"])
            done = step + 1
            bar.advance(note=phase)
            boundary = done in (cfg.ar_sft_steps, sft_end, cfg.total_steps)
            if rank == 0 and (done % cfg.eval_every == 0 or boundary):
                recent = rewards[-cfg.eval_every :]
                evaluate(done, phase, sum(recent) / len(recent) if recent else None)
                if done == cfg.ar_sft_steps:
                    state["metrics"]["fve_ar_sft"] = state["curve"][-1].fve_ar_teacher
                if done == sft_end:
                    state["metrics"]["fve_sft"] = state["curve"][-1].fve_round_trip
                    if on_sft_end is not None:
                        av.eval()
                        state["metrics"]["sft_probe"] = on_sft_end(av)
                        av.train()
                    state["metrics"].setdefault("fve_ar_sft", state["curve"][-1].fve_ar_teacher)
            if done % cfg.checkpoint_every == 0 or done == cfg.total_steps:
                save(done)

    av.eval(), ar.eval()
    if rank == 0 and not state["curve"]:
        evaluate(cfg.total_steps, "final")
    metrics = state["metrics"]
    last = state["curve"][-1] if state["curve"] else None
    shuffled = None
    if cfg.shuffled_control and rank == 0:
        shuffled = _shuffled_control(
            model, tokenizer, av.config, train_labels, train_acts, eval_labels, eval_acts, cfg, progress
        )
    result = TrainResult(
        fve_ar_sft=metrics.get("fve_ar_sft", last.fve_ar_teacher if last else float("nan")),
        fve_sft=metrics.get("fve_sft", float("nan")),
        fve_rl=last.fve_round_trip if last and cfg.rl_steps else float("nan"),
        fve_shuffled=shuffled,
        seconds=time.perf_counter() - t0,
        steps=cfg.total_steps,
        processes=world,
        sft_probe=metrics.get("sft_probe"),
        curve=list(state["curve"]),
    )
    return av, ar, result
