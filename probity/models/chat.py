"""Token plumbing every instrument shares: chat templates, response ids, end tokens, padding.

>>> text = chat_text(tokenizer, [{"role": "user", "content": "What is the capital of France?"}])
>>> ids, start = response_ids(tokenizer, [{"role": "user", "content": "Hi"}], "Hello!")  # ids[start:] is the answer
>>> batch = pad_batch([[1, 2, 3], [4]], pad_id(tokenizer), side="left")  # input_ids, attention_mask [batch, pos]
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

# End-of-turn tokens of common chat templates (ChatML, Llama 3, Gemma, ours).
END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<eot>")


class NoChatTemplateError(ValueError):
    """The tokenizer has no chat template, so chat prompts cannot be rendered."""


def chat_text(tokenizer, messages: list[dict], prefill: str | None = None) -> str:
    """The chat-template text of ``messages`` ending in an open assistant turn, optionally with
    ``prefill`` already written at the start of the answer."""
    if getattr(tokenizer, "chat_template", None) is None:
        raise NoChatTemplateError(
            "the tokenizer has no chat template; chat prompts need a chat model (raw completion does not)"
        )
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) + (prefill or "")


def user_prefill_text(tokenizer, messages: list[dict], stem: str) -> str:
    """The chat-template text of ``messages`` followed by an open *user* turn that starts with
    ``stem`` (the model continues the user's words)."""
    mark = "PROBITYPREFILLMARK"
    full = tokenizer.apply_chat_template(messages + [{"role": "user", "content": mark}], tokenize=False)
    return full[: full.index(mark)] + stem


def chat_ids(tokenizer, messages: list[dict]) -> list[int]:
    """Token ids of :func:`chat_text` (the template carries its own special tokens)."""
    return tokenizer(chat_text(tokenizer, messages), add_special_tokens=False)["input_ids"]


def response_ids(tokenizer, messages: list[dict], response: str) -> tuple[list[int], int]:
    """Ids of ``messages`` followed by an assistant turn holding ``response``, and the index where
    the response starts (so ``ids[start:]`` are the answer's tokens)."""
    prefix = chat_ids(tokenizer, messages)
    body = tokenizer(response, add_special_tokens=False)["input_ids"] or [tokenizer.eos_token_id]
    return prefix + body, len(prefix)


def end_ids(tokenizer) -> list[int]:
    """Token ids that end an answer: eos plus the chat template's end-of-turn token."""
    ends = {tokenizer.eos_token_id} - {None}
    vocab = tokenizer.get_vocab()
    ends |= {vocab[name] for name in END_OF_TURN if name in vocab}
    if not ends:
        raise ValueError("the tokenizer has no eos token; set tokenizer.eos_token so answers can end")
    return sorted(ends)


def pad_id(tokenizer) -> int:
    """The tokenizer's padding id, or its eos id when it has none."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def pad_batch(
    seqs: Sequence[Sequence[int]], pad_id: int, side: str = "right", device: torch.device | str | None = None
) -> dict[str, torch.Tensor]:
    """``input_ids`` and ``attention_mask`` ``[batch, pos]`` of ragged id lists, padded on ``side``
    (``"left"`` for generation, ``"right"`` for training)."""
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    if not seqs:
        raise ValueError("pad_batch needs at least one sequence")
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long, device=device)  # [batch, pos]
    mask = torch.zeros_like(ids)  # [batch, pos]
    for i, s in enumerate(seqs):
        where = slice(width - len(s), width) if side == "left" else slice(0, len(s))
        ids[i, where] = torch.as_tensor(list(s), dtype=torch.long, device=device)
        mask[i, where] = 1
    return {"input_ids": ids, "attention_mask": mask}
