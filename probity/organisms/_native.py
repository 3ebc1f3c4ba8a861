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
import time
from pathlib import Path

import torch

WEIGHTS = Path(__file__).parent / "weights"


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
    """Write ``model.safetensors`` and ``config.json`` (``{"tl_config", "meta"}``) atomically into ``out_dir``."""
    from safetensors.torch import save as st_save

    from probity.report.io import atomic_write_bytes, atomic_write_text

    out = Path(out_dir)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(out / "model.safetensors", st_save(state))
    atomic_write_text(out / "config.json", json.dumps({"tl_config": tl_config, "meta": meta}, indent=2))
    return out


def load_organism(name: str, tokenizer):
    """``(TransformerBridge, tokenizer)`` for the shipped organism ``name``; ``bridge.probity_meta``
    holds its config metadata (metrics, head roles)."""
    model, meta = load_weights(WEIGHTS / name)
    out = bridge(model, tokenizer)
    out.probity_meta = meta
    return out, tokenizer


def load_weights(folder: str | Path) -> tuple[torch.nn.Module, dict]:
    """``(NativeModel in eval mode, meta)`` from a folder written by :func:`save`."""
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / "model.safetensors").is_file():
        raise FileNotFoundError(f"no organism weights in {folder}; train them with `probity organisms train NAME`")
    config = json.loads((folder / "config.json").read_text())
    model = native_model(config["tl_config"])
    model.load_state_dict(load_file(folder / "model.safetensors"))
    return model.eval(), config["meta"]


def fit(model: torch.nn.Module, batch_loss, steps: int, seed: int, lr: float, out_dir: str | Path, label: str) -> float:
    """AdamW with warm-up and cosine decay for ``steps`` steps; ``batch_loss(generator, step)`` draws a
    batch and returns its loss. Checkpoints atomically to ``out_dir/ckpt`` every 500 steps and resumes
    from there after a kill. Returns the seconds spent in this call."""
    from rich.progress import Progress

    from probity.models import Checkpointer

    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    gen = torch.Generator().manual_seed(seed)
    ckpt = Checkpointer(Path(out_dir) / "ckpt")
    start = 0
    if (found := ckpt.latest()) is not None:
        start, state = found
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        gen.set_state(state["gen"])
    t0 = time.time()
    model.train()
    with Progress() as progress:
        task = progress.add_task(f"training {label}", total=steps, completed=start)
        for step in range(start, steps):
            for g in opt.param_groups:
                g["lr"] = _lr_at(step, steps, lr)
            loss = batch_loss(gen, step)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            progress.update(task, advance=1, description=f"training {label} loss={loss.item():.4f}")
            if (step + 1) % 500 == 0 and step + 1 < steps:
                ckpt.save(step + 1, {"model": model.state_dict(), "opt": opt.state_dict(), "gen": gen.get_state()})
    model.eval()
    return time.time() - t0


def quick_record(train, seed: int, quick: bool) -> dict | None:
    """The metrics of ``train``'s short schedule (run in a temporary folder), for a full run; None for a quick one."""
    if quick:
        return None
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return train(out_dir=tmp, seed=seed, quick=True)


def _lr_at(step: int, steps: int, lr: float, warmup: int = 100) -> float:
    """Linear warm-up then cosine decay to 10% of ``lr``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    frac = (step - warmup) / max(1, steps - warmup)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
