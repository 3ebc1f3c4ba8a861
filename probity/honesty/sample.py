"""Raw-text prompts and batched sampling for any HF chat model (chat prompts are
``probity.models.chat``): :func:`generate` samples the local model, :func:`sample_endpoint` an
OpenAI-compatible server (vLLM, llama.cpp) that serves the same model."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

from probity.models.generation import generate  # noqa: F401  (part of the honesty API)
from probity.report.console import progress


def encode(tokenizer, text: str, raw: bool = False) -> list[int]:
    """Token ids of rendered ``text``; ``raw`` text (no chat template) gets the tokenizer's BOS if it uses one."""
    return tokenizer(text, add_special_tokens=raw).input_ids


def cut_raw(text: str) -> str:
    """A raw completion up to where the model starts a new question (documents go on)."""
    return re.split(r"(?i)\bquestion\s*:", text, maxsplit=1)[0].strip()


def sample_endpoint(
    client,
    prompts: list[str | list[dict]],
    n: int = 1,
    temperature: float = 0.7,
    max_new_tokens: int = 32,
    seed: int = 0,
    batch_size: int = 16,
    label: str = "sampling",
    min_new_tokens: int = 0,
    raw: bool = False,
) -> list[list[str]]:
    """:func:`generate` through an OpenAI-compatible endpoint (``client``, a ``probity.models.ChatClient``):
    ``n`` sampled continuations of each prompt, ``len(prompts)`` lists of ``n`` strings.

    A conversation (a list of ``role``/``content`` dicts) goes to ``/chat/completions`` (the server applies
    the chat template); a text (rendered locally, e.g. a chat template with a prefill) to ``/completions``,
    asking for the server's special tokens only when ``raw``, as :func:`encode` does (servers that do not
    know that field, or ``min_tokens``, ignore or drop it). Up to ``batch_size`` requests run at once;
    prompt ``i`` is seeded with ``seed * 100003 + i``."""

    def one(i: int) -> list[str]:
        args = {"n": n, "temperature": temperature, "max_tokens": max_new_tokens, "seed": seed * 100003 + i}
        if not isinstance(prompts[i], str):
            return client.chat_samples(prompts[i], **args)
        extra = {"add_special_tokens": raw} | ({"min_tokens": min_new_tokens} if min_new_tokens else {})
        return client.complete(prompts[i], **args, **extra)

    out: list[list[str]] = []
    with progress(len(prompts), label) as bar, ThreadPoolExecutor(max(1, min(batch_size, len(prompts)))) as pool:
        for texts in pool.map(one, range(len(prompts))):
            out.append(texts)
            bar.advance()
    return out
