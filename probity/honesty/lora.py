"""LoRA honesty fine-tuning on generic (non-sensitive) honesty data, resumable after a kill."""

from __future__ import annotations

import copy
import random
from pathlib import Path

import torch
from rich.progress import Progress

from probity.honesty.prompts import DISHONEST_SYSTEM, HONEST_SYSTEM
from probity.honesty.sample import pad_batch, pad_id, response_ids
from probity.honesty.testbed import Question


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

    from probity.models import Checkpointer

    if not data:
        raise ValueError("LoRA honesty fine-tuning needs helper questions with an 'answer'; the testbed has none")
    torch.manual_seed(seed)
    peft_model = get_peft_model(
        copy.deepcopy(model), LoraConfig(r=rank, lora_alpha=2 * rank, target_modules="all-linear", lora_dropout=0.0)
    )
    opt = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=lr)
    saver = Checkpointer(checkpoint_dir) if checkpoint_dir is not None else None
    start = 0
    if saver is not None and (last := saver.latest()) is not None:
        start, state = last
        set_peft_model_state_dict(peft_model, state["adapter"])
        opt.load_state_dict(state["opt"])
    encoded = [response_ids(tokenizer, m, r) for m, r in data]
    pad = pad_id(tokenizer)
    peft_model.train()
    with Progress(transient=True) as bar:
        task = bar.add_task("lora honesty fine-tune", total=steps, completed=start)
        for step in range(start, steps):
            rng = random.Random(seed * 7919 + step)  # batch depends only on the step, so resuming replays exactly
            chunk = [encoded[rng.randrange(len(encoded))] for _ in range(batch_size)]
            batch = pad_batch([ids for ids, _ in chunk], pad, left=False)
            labels = torch.full_like(batch["input_ids"], -100)
            for i, (ids, begin) in enumerate(chunk):
                labels[i, begin : len(ids)] = batch["input_ids"][i, begin : len(ids)]
            loss = peft_model(**batch, labels=labels).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            bar.update(task, advance=1, description=f"lora honesty fine-tune loss {loss.item():.3f}")
            if saver is not None and (step + 1) % save_every == 0:
                saver.save(step + 1, {"adapter": get_peft_model_state_dict(peft_model), "opt": opt.state_dict()})
    return peft_model.eval()
