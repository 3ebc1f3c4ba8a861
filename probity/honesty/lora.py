"""LoRA honesty fine-tuning on generic (non-sensitive) honesty data, resumable after a kill."""

from __future__ import annotations

import copy
from pathlib import Path

from probity.honesty.prompts import DISHONEST_SYSTEM, HONEST_SYSTEM
from probity.honesty.testbed import Question
from probity.models import training
from probity.models.chat import pad_id, response_ids


def honesty_data(helpers: list[Question]) -> list[tuple[list[dict], str]]:
    """Conversations teaching honesty on non-sensitive questions: the reference answer
    with no system prompt, under an honesty prompt, and under a prompt that asks for a
    lie (the model answers truthfully anyway)."""
    data = []
    for q in helpers:
        if not q.answer:
            continue
        user = [{"role": "user", "content": q.question}]
        for system in (None, HONEST_SYSTEM, DISHONEST_SYSTEM):
            data.append(([{"role": "system", "content": system}] * (system is not None) + user, q.answer))
    return data


def finetune_lora(
    model,
    tokenizer,
    data: list[tuple[list[dict], str]],
    steps: int = 150,
    lr: float = 2e-3,
    rank: int = 8,
    batch_size: int = 16,
    seed: int = 0,
    checkpoint_dir: str | Path | None = None,
    save_every: int = 25,
):
    """A LoRA-adapted copy of ``model`` trained on ``data`` (messages, response) with the
    loss on response tokens only; ``model`` itself is left unchanged. With
    ``checkpoint_dir`` the adapter and optimiser are saved every ``save_every`` steps and a rerun
    resumes from the latest checkpoint."""
    if not data:
        raise ValueError("LoRA honesty fine-tuning needs helper questions with an 'answer'; the testbed has none")
    peft_model, _ = training.fit_lora(
        copy.deepcopy(model),
        [response_ids(tokenizer, m, r) for m, r in data],
        steps,
        training.OptimConfig(lr, schedule="constant", weight_decay=0.01),
        pad_id(tokenizer),
        rank=rank,
        batch_size=batch_size,
        seed=seed,
        checkpoint_dir=checkpoint_dir,
        checkpoint_every=save_every,
        label="lora honesty fine-tune",
    )
    return peft_model
