"""LoRA honesty fine-tuning on generic (non-sensitive) honesty data, resumable after a kill."""

from __future__ import annotations

import copy
import random
from pathlib import Path

import torch

from probity.honesty.prompts import DISHONEST_SYSTEM, HONEST_SYSTEM
from probity.honesty.testbed import Question
from probity.models import training
from probity.models.chat import pad_batch, pad_id, response_ids


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
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict

    if not data:
        raise ValueError("LoRA honesty fine-tuning needs helper questions with an 'answer'; the testbed has none")
    torch.manual_seed(seed)
    peft_model = get_peft_model(
        copy.deepcopy(model), LoraConfig(r=rank, lora_alpha=2 * rank, target_modules="all-linear", lora_dropout=0.0)
    )
    encoded = [response_ids(tokenizer, m, r) for m, r in data]
    pad = pad_id(tokenizer)

    def batch_loss(step: int) -> torch.Tensor:
        rng = random.Random(seed * 7919 + step)  # the batch depends only on the step, so a resume replays it
        chunk = [encoded[rng.randrange(len(encoded))] for _ in range(batch_size)]
        batch = pad_batch([ids for ids, _ in chunk], pad)  # [batch, pos]
        labels = torch.full_like(batch["input_ids"], -100)  # loss on the response tokens only
        for i, (ids, begin) in enumerate(chunk):
            labels[i, begin : len(ids)] = batch["input_ids"][i, begin : len(ids)]
        return peft_model(**batch, labels=labels).loss

    class Adapter:  # a checkpoint holds the adapter's weights, not the whole model's
        def state_dict(self):
            return get_peft_model_state_dict(peft_model)

        def load_state_dict(self, state):
            set_peft_model_state_dict(peft_model, state)

    training.fit(
        peft_model,
        batch_loss,
        steps,
        training.OptimConfig(lr, schedule="constant", weight_decay=0.01),
        checkpoint_dir=checkpoint_dir,
        checkpoint_every=save_every,
        state={"model": Adapter()},
        run_id={"seed": seed, "rank": rank, "batch_size": batch_size, "examples": len(encoded)},
        label="lora honesty fine-tune",
    )
    return peft_model
