"""Shared plumbing for organisms built on TransformerLens' native transformer.

An organism is a ``NativeModel`` (TransformerLens 4's own pre-LN transformer, with
bidirectional or causal attention, optional MLPs) wrapped in a ``TransformerBridge``
so every TransformerLens hook name works on it. Weights ship as safetensors beside
a ``config.json`` holding the ``TransformerBridgeConfig`` fields and the organism's
own metadata (metrics, head roles).
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import torch

from probity.models import training
from probity.models.checkpoint import Checkpointer

WEIGHTS = Path(__file__).parent / "weights"
CHECKPOINTS = "ckpt"  # the training checkpoints' folder inside an organism's output folder
WEIGHTS_FILE = "model.safetensors"  # an organism folder's weights, beside its config.json


def native_model(tl_config: dict, seed: int = 0, gpt2_init: bool = False) -> torch.nn.Module:
    """A freshly initialised ``NativeModel`` for the ``TransformerBridgeConfig`` fields in ``tl_config``:
    PyTorch's default init, or with ``gpt2_init`` TransformerLens' GPT-2 init (normal, std 0.8/sqrt(d_model))."""
    from transformer_lens.config import TransformerBridgeConfig
    from transformer_lens.model_bridge.sources.native import initialize_native_model
    from transformer_lens.model_bridge.sources.native.model import NativeModel

    torch.manual_seed(seed)
    cfg = TransformerBridgeConfig(**tl_config)
    model = NativeModel(cfg)
    if gpt2_init:
        initialize_native_model(model, cfg, seed=seed)
    return model


def bridge(model: torch.nn.Module, tokenizer=None):
    """Wrap a trained ``NativeModel`` in a ``TransformerBridge`` (TransformerLens hook names), eval mode."""
    from transformer_lens.model_bridge.sources._bridge_builder import build_bridge_from_module

    model.eval()
    return build_bridge_from_module(
        model,
        architecture="TransformerLensNative",
        tl_config=model.cfg,
        tokenizer=tokenizer,
        model_name="probity-organism",
    ).eval()


def save(out_dir: str | Path, model: torch.nn.Module, tl_config: dict, meta: dict) -> Path:
    """Write ``model.safetensors`` and ``config.json`` (``{"tl_config", "meta"}``) atomically into
    ``out_dir``, then delete the training checkpoints there (the run is over; a new one starts fresh)."""
    from safetensors.torch import save as st_save

    from probity.report.io import atomic_write_bytes, atomic_write_text

    out = Path(out_dir)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(out / WEIGHTS_FILE, st_save(state))
    atomic_write_text(out / "config.json", json.dumps({"tl_config": tl_config, "meta": meta}, indent=2))
    Checkpointer(out / CHECKPOINTS).clear()
    return out


def load_organism(name: str, tokenizer):
    """``(TransformerBridge, tokenizer)`` for the shipped organism ``name``; ``bridge.probity_meta``
    holds its config metadata (metrics, head roles)."""
    return load_folder(WEIGHTS / name, tokenizer)


def load_folder(folder: str | Path, tokenizer, config: dict | None = None):
    """``(TransformerBridge, tokenizer)`` for the organism saved in ``folder`` (by :func:`save`: shipped,
    or trained with ``probity organisms train NAME --out DIR``); ``bridge.probity_meta`` holds its metadata.
    ``config``: its :func:`read_config`, when the caller has read it already."""
    model, meta = load_weights(folder, config)
    out = bridge(model, tokenizer)
    out.probity_meta = meta
    return out, tokenizer


def read_config(folder: str | Path, required: bool = True) -> dict | None:
    """``{"tl_config", "meta"}`` of an organism folder written by :func:`save`, read without its weights
    (which must be there). A one-line ``FileNotFoundError`` / ``ValueError`` when the folder holds none;
    with ``required`` False, None instead when it holds no ``config.json`` or one without a ``tl_config``
    (e.g. a Hugging Face checkpoint), but still an error for a broken organism folder."""
    from probity.report.io import read_structured

    folder = Path(folder)
    path = folder / "config.json"
    if not path.is_file():
        if not required:
            return None
        raise FileNotFoundError(
            f"no organism in {folder} (no config.json); train one with `probity organisms train NAME --out {folder}`"
        )
    config = read_structured(path)
    if not isinstance(config, dict) or not isinstance(config.get("tl_config"), dict):
        if not required:
            return None
        raise ValueError(f"{path} holds no `tl_config`: not a TransformerLens organism folder")
    if not (folder / WEIGHTS_FILE).is_file():
        raise FileNotFoundError(
            f"no organism weights in {folder} (no {WEIGHTS_FILE}); train them with "
            f"`probity organisms train NAME --out {folder}`"
        )
    return {"tl_config": config["tl_config"], "meta": config.get("meta") or {}}


def load_weights(folder: str | Path, config: dict | None = None) -> tuple[torch.nn.Module, dict]:
    """``(NativeModel in eval mode, meta)`` from a folder written by :func:`save` (``config``: its
    :func:`read_config`, read here when not given)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    config = config or read_config(folder)
    model = native_model(config["tl_config"])
    model.load_state_dict(load_file(folder / WEIGHTS_FILE))
    return model.eval(), config["meta"]


def train_recipe(
    model: torch.nn.Module, batch_loss, steps: int, seed: int, lr: float, out_dir: str | Path, label: str
) -> float:
    """The native organisms' recipe on the shared loop (``probity.models.training.fit``): AdamW
    (weight decay 0.01, betas (0.9, 0.98)) on the recorded schedule :func:`recipe_lr`;
    ``batch_loss(generator, step)`` draws a batch from a generator seeded with ``seed`` and returns
    its loss. Checkpoints (weights, optimiser, generator) go to ``out_dir/ckpt`` every 500 steps
    and at the end; a rerun resumes there. Returns the seconds spent in this call."""
    gen = torch.Generator().manual_seed(seed)
    result = training.fit(
        model,
        lambda step: batch_loss(gen, step),
        steps,
        training.OptimConfig(lr, weight_decay=0.01, betas=(0.9, 0.98)),
        lr_at=lambda step: recipe_lr(step, steps, lr),
        checkpoint_dir=Path(out_dir) / CHECKPOINTS,
        checkpoint_every=500,
        state={"batches": training.GeneratorState(gen)},
        run_id={"organism": label, "seed": seed},
        label=f"training {label}",
    )
    return result.seconds


def quick_record(train, seed: int, quick: bool) -> dict | None:
    """The metrics of ``train``'s short schedule (run in a temporary folder), for a full run; None for a quick one."""
    if quick:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        return train(out_dir=tmp, seed=seed, quick=True)


def recipe_lr(step: int, steps: int, lr: float, warmup: int = 100) -> float:
    """The schedule the shipped paren and induction weights were trained with: linear warm-up
    ``lr * (step + 1) / warmup``, then cosine decay to 10% of ``lr``. It is transformers'
    ``get_cosine_with_min_lr_schedule_with_warmup(min_lr_rate=0.1)`` but for a one-step shift
    (that one counts from ``step / warmup``); kept so that the recipes reproduce the weights."""
    if step < warmup:
        return lr * (step + 1) / warmup
    frac = (step - warmup) / max(1, steps - warmup)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
