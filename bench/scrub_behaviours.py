"""Which behaviours SmolLM2-135M-Instruct does reliably: candidates for a second real-model
causal-scrubbing case study (issue 15, item 2).

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python bench/scrub_behaviours.py

The model runs on raw text (no chat template, no BOS, as the tokenizer gives it), right-padded
batches read at each row's last real token. Every prompt is generated here with a fixed seed:

* **IOI** (Wang et al. 2022): "When Mary and John went to the store, John gave a drink to" -> " Mary".
  Names are the candidates that are one token with a leading space. Accuracy: the indirect
  object's logit beats the subject's; logit diff: IO minus S. ABBA and BABA orders separately.
* **Greater-than** (Hanna et al. 2023): this tokenizer splits numbers into single digits, so the
  two-digit year token of the paper does not exist. Adapted to single digits:
  *units* - "The war lasted from the year 17DU to the year 17D" -> next digit; prob diff is the
  mass on digits > U minus the mass on digits <= U (the paper's metric, one digit down); accuracy:
  the most likely digit is > U. *tens* - "... from the year 17DU to the year 17" -> next digit;
  prob diff is mass on digits > D minus mass on digits < D (D itself can go either way);
  accuracy: the most likely digit is >= D.
* **Brackets**: a random well-nested prefix of ( [ { tokens with at least one bracket open, e.g.
  "( ( [ ] )" -> " )". Accuracy: the innermost open bracket's closer has the largest logit of
  the three closers; logit diff: that closer minus the best other closer; also its probability
  (full softmax). Split by whether the last token opened the bracket to close (a copy-like
  lookup) or closed another one (the stack has to be tracked).

Prints a table and writes bench/results/scrub_behaviours.json.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from probity import models
from probity.report import write_json

RESULT = Path("bench/results/scrub_behaviours.json")
SEED = 0
N = 200  # prompts per task (per stage for greater-than)
BATCH = 50
console = Console(width=110)

CANDIDATE_NAMES = (
    "Mary John Tom James Anna Paul Sarah David Mike Lisa Alice Bob Kate Mark Emma Jack Sam Peter "
    "Ben Laura Chris Dan Amy Steve Jane Tim Rachel Michael Robert Susan Linda Karen Joe Bill Nancy "
    "Helen Frank George Emily Daniel Andrew Kevin Brian Jason Ryan Eric Adam Alex Nick Matt Maria"
).split()
IOI_TEMPLATES = (
    "When {a} and {b} went to the {place}, {s} gave a {thing} to",
    "After {a} and {b} went to the {place}, {s} gave a {thing} to",
    "While {a} and {b} were working at the {place}, {s} gave a {thing} to",
    "Then, {a} and {b} had a lot of fun at the {place}. {s} gave a {thing} to",
)
PLACES = ("store", "park", "school", "hospital", "restaurant", "office", "station", "garden")
THINGS = ("drink", "book", "ring", "bone", "kiss", "basketball", "snack", "necklace")
EVENTS = ("war", "expedition", "project", "drought", "voyage", "reign", "siege", "famine")
OPENERS = {"(": ")", "[": "]", "{": "}"}


def last_logits(model, tok, prompts: list[str]) -> torch.Tensor:
    """Next-token logits (rows x vocabulary) at each prompt's last token, in right-padded batches."""
    out = []
    for start in range(0, len(prompts), BATCH):
        enc = tok(prompts[start : start + BATCH], return_tensors="pt", padding=True, add_special_tokens=False)
        assert tok.padding_side == "right"
        with torch.no_grad():
            logits = model(input_ids=enc.input_ids, attention_mask=enc.attention_mask).logits
        last = enc.attention_mask.sum(1) - 1
        out.append(logits[torch.arange(len(last)), last].float())
    return torch.cat(out)


def token_id(tok, text: str) -> int:
    """The id of ``text``, which must be a single token."""
    ids = tok(text, add_special_tokens=False).input_ids
    assert len(ids) == 1, f"{text!r} is {len(ids)} tokens"
    return ids[0]


def summary(correct: torch.Tensor, diff: torch.Tensor, **extra: torch.Tensor) -> dict:
    """n, accuracy, mean and standard error of ``diff``, and the mean of each ``extra`` tensor."""
    return {
        "n": len(diff),
        "accuracy": correct.float().mean().item(),
        "mean_diff": diff.mean().item(),
        "stderr_diff": (diff.std() / len(diff) ** 0.5).item(),
        **{k: v.float().mean().item() for k, v in extra.items()},
    }


def ioi(model, tok, rng: random.Random) -> dict:
    """IOI accuracy and IO-minus-S logit difference, overall and per name order (ABBA, BABA)."""
    names = [n for n in CANDIDATE_NAMES if len(tok(" " + n, add_special_tokens=False).input_ids) == 1]
    prompts, io, s, order = [], [], [], []
    for i in range(N):
        a, b = rng.sample(names, 2)  # a is the indirect object, b the subject
        first, second = (a, b) if i % 2 == 0 else (b, a)
        template = rng.choice(IOI_TEMPLATES)
        prompts.append(template.format(a=first, b=second, s=b, place=rng.choice(PLACES), thing=rng.choice(THINGS)))
        io.append(token_id(tok, " " + a))
        s.append(token_id(tok, " " + b))
        order.append("ABBA" if i % 2 == 0 else "BABA")
    logits = last_logits(model, tok, prompts)
    rows = torch.arange(N)
    diff = logits[rows, io] - logits[rows, s]
    probs = logits.softmax(-1)
    p_io = probs[rows, io]
    result = summary(diff > 0, diff, p_io=p_io, p_io_or_s=p_io + probs[rows, s])
    for kind in ("ABBA", "BABA"):
        mask = torch.tensor([o == kind for o in order])
        result[kind] = summary(diff[mask] > 0, diff[mask], p_io=p_io[mask])
    return {"names": names, "example": prompts[0], **result}


def greater_than(model, tok, rng: random.Random) -> dict:
    """Greater-than adapted to single-digit tokens: the units stage (the paper's metric one digit
    down) and the tens stage, as described in the module docstring."""
    digits = [token_id(tok, str(d)) for d in range(10)]
    units, tens = [], []
    for _ in range(N):
        event, century = rng.choice(EVENTS), rng.randint(11, 17)
        d, u = rng.randint(0, 9), rng.randint(1, 8)
        units.append((f"The {event} lasted from the year {century}{d}{u} to the year {century}{d}", u))
        d, u = rng.randint(1, 8), rng.randint(0, 9)
        tens.append((f"The {event} lasted from the year {century}{d}{u} to the year {century}", d))
    result = {}
    for stage, rows in (("units", units), ("tens", tens)):
        probs = last_logits(model, tok, [p for p, _ in rows]).softmax(-1)[:, digits]
        threshold = torch.tensor([t for _, t in rows])[:, None]
        grid = torch.arange(10)[None, :]
        if stage == "units":  # years > YY vs <= YY
            diff = (probs * (grid > threshold)).sum(1) - (probs * (grid <= threshold)).sum(1)
            correct = probs.argmax(1) > threshold[:, 0]
        else:  # tens digit > D vs < D; D itself is undecided
            diff = (probs * (grid > threshold)).sum(1) - (probs * (grid < threshold)).sum(1)
            correct = probs.argmax(1) >= threshold[:, 0]
        extra = {"digit_mass": probs.sum(1)}
        if stage == "tens":  # how often the most likely digit just repeats D
            extra["argmax_is_d"] = probs.argmax(1) == threshold[:, 0]
        result[stage] = {"example": rows[0][0], **summary(correct, diff, **extra)}
    return result


def bracket_prompt(rng: random.Random) -> tuple[str, str, bool]:
    """A random well-nested bracket prefix of 4-12 tokens with something open; the closer it needs
    next; whether its last token is the opener being closed."""
    tokens, stack = [], []
    length = rng.randint(4, 12)
    while len(tokens) < length or not stack:
        if stack and (rng.random() < 0.45 or len(stack) + len(tokens) >= length + 4):
            tokens.append(OPENERS[stack.pop()])
        else:
            stack.append(rng.choice(list(OPENERS)))
            tokens.append(stack[-1])
    return " ".join(tokens), OPENERS[stack[-1]], tokens[-1] in OPENERS


def brackets(model, tok, rng: random.Random) -> dict:
    """Closing-bracket accuracy among the three closers, correct-minus-best-other logit difference
    and the correct closer's probability; overall and split by the last token's kind."""
    closer_ids = {c: token_id(tok, " " + c) for c in OPENERS.values()}
    prompts, answers, after_open = zip(*(bracket_prompt(rng) for _ in range(N)))
    logits = last_logits(model, tok, list(prompts))
    ids = list(closer_ids.values())
    closers = logits[:, ids]
    target = torch.tensor([ids.index(closer_ids[a]) for a in answers])
    rows = torch.arange(N)
    right = closers[rows, target]
    others = closers.masked_fill(torch.nn.functional.one_hot(target, len(ids)).bool(), float("-inf"))
    diff = right - others.max(1).values
    p_correct = logits.softmax(-1)[rows, torch.tensor(ids)[target]]
    p_closers = logits.softmax(-1)[:, ids].sum(1)
    result = {"example": f"{prompts[0]} -> {answers[0]}", **summary(diff > 0, diff, p_correct=p_correct)}
    result["p_any_closer"] = p_closers.mean().item()
    for name, mask in (("after_opener", torch.tensor(after_open)), ("after_closer", ~torch.tensor(after_open))):
        result[name] = summary(diff[mask] > 0, diff[mask], p_correct=p_correct[mask])
    return result


def table(results: dict) -> Table:
    """One row per task and subset: n, accuracy, mean diff (+- stderr) and the probability column."""
    out = Table(title="SmolLM2-135M-Instruct: candidate behaviours")
    for column in ("task", "n", "accuracy", "mean diff", "diff kind", "prob"):
        out.add_column(column, justify="left" if column in ("task", "diff kind") else "right")
    rows = [
        ("IOI", results["ioi"], "logit IO-S", "p_io"),
        ("IOI ABBA", results["ioi"]["ABBA"], "logit IO-S", "p_io"),
        ("IOI BABA", results["ioi"]["BABA"], "logit IO-S", "p_io"),
        ("greater-than units", results["greater_than"]["units"], "P(>U)-P(<=U)", "digit_mass"),
        ("greater-than tens", results["greater_than"]["tens"], "P(>D)-P(<D)", "digit_mass"),
        ("brackets", results["brackets"], "logit right-other", "p_correct"),
        ("brackets after opener", results["brackets"]["after_opener"], "logit right-other", "p_correct"),
        ("brackets after closer", results["brackets"]["after_closer"], "logit right-other", "p_correct"),
    ]
    for name, r, kind, prob in rows:
        out.add_row(
            name,
            str(r["n"]),
            f"{r['accuracy']:.3f}",
            f"{r['mean_diff']:.3f} ± {r['stderr_diff']:.3f}",
            kind,
            f"{prob} {r[prob]:.3f}",
        )
    return out


def main() -> None:
    """Load the model, measure the three tasks, print the table and write the JSON."""
    torch.manual_seed(SEED)
    start = time.perf_counter()
    model, tok = models.load(models.SMOLLM2)
    model.eval()
    results = {
        "model": "SmolLM2-135M-Instruct",
        "seed": SEED,
        "ioi": ioi(model, tok, random.Random(SEED)),
        "greater_than": greater_than(model, tok, random.Random(SEED + 1)),
        "brackets": brackets(model, tok, random.Random(SEED + 2)),
    }
    results["seconds"] = time.perf_counter() - start
    console.print(table(results))
    write_json(RESULT, results)
    console.print(f"[green]wrote[/green] {RESULT} in {results['seconds']:.0f} s")


if __name__ == "__main__":
    main()
