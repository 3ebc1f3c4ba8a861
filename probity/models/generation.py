"""Batched sampling from any HF causal LM: the one generation loop the instruments and organisms share."""

from __future__ import annotations

from contextlib import nullcontext

import torch

from probity.models.chat import pad_batch, pad_id
from probity.models.sites import input_device, patching
from probity.report.console import progress


@torch.no_grad()
def generate(
    model,
    tokenizer,
    prompts: list[list[int]],
    n: int = 1,
    temperature: float = 0.7,
    max_new_tokens: int = 32,
    seed: int = 0,
    batch_size: int = 16,
    patches=None,
    label: str = "sampling",
    min_new_tokens: int = 0,
) -> list[list[str]]:
    """``n`` sampled continuations (greedy when ``temperature == 0``) of each prompt
    (token ids), as decoded text: a list of ``len(prompts)`` lists of ``n`` strings.

    ``patches`` ({site: tensor | fn}) stay on during generation (steering, fuzzing).
    Each batch is seeded from ``seed`` and its index, so reruns and resumed runs agree."""
    if temperature == 0 and n != 1:
        raise ValueError(f"greedy decoding (temperature 0) gives one answer per prompt, not n={n}: use n=1 or sample")
    out: list[list[str]] = []
    pad = pad_id(tokenizer)
    with progress(len(prompts), label) as bar:
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start : start + batch_size]
            enc = pad_batch(chunk, pad, side="left", device=input_device(model))
            torch.manual_seed(seed * 100003 + start)
            with patching(model, patches) if patches else nullcontext():
                ids = model.generate(
                    **enc,
                    max_new_tokens=max_new_tokens,
                    min_new_tokens=min_new_tokens,
                    do_sample=temperature > 0,
                    temperature=temperature if temperature > 0 else None,
                    top_p=None,
                    top_k=None,
                    num_return_sequences=n,
                    pad_token_id=pad,
                )
            texts = tokenizer.batch_decode(ids[:, enc["input_ids"].shape[1] :].cpu(), skip_special_tokens=True)
            out += [[t.strip() for t in texts[i * n : (i + 1) * n]] for i in range(len(chunk))]
            bar.advance(len(chunk))
    return out
