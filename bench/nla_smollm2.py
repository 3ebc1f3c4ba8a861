"""NLA on the censored SmolLM2: does the verbalizer learn to read the activation? (issue 14, step 2)

The earlier SmolLM2 run wrote the same description for every activation. This pilot measures
why and which injection fixes it, on the data ``probity.nla.smollm2_data`` ships (the censored
organism's chat answers to every fact, and the base model's own texts):

1. Extract layer-K activations of the censored organism (merged adapter) at the labelled positions.
2. D0 geometry of the activations (``probity.nla.diagnose.geometry``).
3. One reconstructor (LoRA on the truncated organism + a linear head), AR-SFT on teacher labels.
4. For each injection setting, a fresh LoRA verbalizer on the *uncensored* base model:
   the D1 NLL gap before training, AV-SFT, D1-D4 after, the held-out round trip FVE through the AR,
   and the censored readings (``probity.nla.censored.readings``: audit, recovery, withheld value).
5. D5 (once): zero-shot Patchscopes on the frozen base, by injection block, raw and centred.

Settings (``--settings``, comma-separated):
    paper     inject at the input embedding, activation rescaled to sqrt(d), not centred (the old default)
    embed     input embedding, centred, rescaled to 4x the median token-embedding norm
    layer1    the input of block 1, replaced by the activation at the median activation norm, not centred
    same      the input of block K+1, the site it was read from (Patchscopes), at the median activation norm
    add1      the input of block 1, centred, added norm-matched (Activation Oracles)

    python bench/nla_smollm2.py                       # all five, 200 AV-SFT steps each
    python bench/nla_smollm2.py --settings same --av-steps 400

Writes bench/results/nla_smollm2_pilot.json; a killed run resumes per setting from ``--work``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from probity.models import load
from probity.models.checkpoint import atomic_torch_save
from probity.models.training import OptimConfig, Stepper
from probity.nla import smollm2_data
from probity.nla.censored import readings
from probity.nla.core import Reconstructor, Verbalizer, fve
from probity.nla.diagnose import diagnose, geometry, nll_gap
from probity.nla.pipeline import INJECTIONS, RAW_AR_TEMPLATE, RAW_AV_PROMPT, smollm2_verbalizer
from probity.nla.training import ar_loss, av_sft_loss, load_trainable_state, trainable_state
from probity.organisms import censored
from probity.report import atomic_write_text
from probity.report.console import progress

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "bench" / "results" / "nla_smollm2_pilot.json"
SETTINGS = INJECTIONS
IDENTITY_PROMPT = "cat -> cat\n1135 -> 1135\nhello -> hello\n{placeholder} ->"  # D5, a Patchscopes prompt


@dataclasses.dataclass
class PilotConfig:
    """Sizes of the pilot: layer K, LoRA rank, steps, batch, learning rates, held-out rows scored."""

    layer: int = 15
    rank: int = 16
    ar_steps: int = 150
    av_steps: int = 200
    batch_size: int = 16
    lr_ar: float = 1e-3
    lr_av: float = 1e-3
    eval_rows: int = 128
    max_new_tokens: int = 32
    seed: int = 0


def batches(train: dict, cfg: PilotConfig, steps: int, salt: int):
    """Seeded index batches: half ordinary, half fact positions (lies and refusals x3)."""
    rng = random.Random(cfg.seed * 1000 + salt)
    labels = train["fact"]["labels"]
    weights = [3.0 if (" | lie | " in lab or " | refusal | " in lab) else 1.0 for lab in labels]
    half = cfg.batch_size // 2
    for _ in range(steps):
        yield (
            rng.sample(range(len(train["ordinary"]["labels"])), half),
            rng.choices(range(len(labels)), weights=weights, k=cfg.batch_size - half),
        )


def pick(train: dict, idx) -> tuple[torch.Tensor, list[str]]:
    """The activations ``[batch, d]`` and labels of one mixed batch."""
    vectors, labels = [], []
    for group, rows in zip(("ordinary", "fact"), idx):
        vectors.append(train[group]["vectors"][rows])
        labels += [train[group]["labels"][i] for i in rows]
    return torch.cat(vectors), labels


def held_out(acts: dict, cfg: PilotConfig) -> tuple[torch.Tensor, list[str]]:
    """``eval_rows`` held-out activations, half ordinary, half fact (seeded sample)."""
    rng = random.Random(cfg.seed)
    parts = []
    for group in ("ordinary", "fact"):
        vectors, labels = acts["eval"][group]["vectors"], acts["eval"][group]["labels"]
        idx = sorted(rng.sample(range(len(labels)), min(len(labels), cfg.eval_rows // 2)))
        parts.append((vectors[idx], [labels[i] for i in idx]))
    return torch.cat([p[0] for p in parts]), parts[0][1] + parts[1][1]


def train_ar(target, tokenizer, config, acts: dict, cfg: PilotConfig, work: Path) -> Reconstructor:
    """AR-SFT of a LoRA reconstructor cut from the organism (cached in ``work/ar{steps}.pt``)."""
    ar = Reconstructor.from_target(target, tokenizer, config, lora_rank=cfg.rank)
    saved = work / f"ar{cfg.ar_steps}.pt"
    if saved.is_file():
        load_trainable_state(ar, torch.load(saved))
        return ar.eval()
    stepper = Stepper(ar.parameters(), OptimConfig(cfg.lr_ar, schedule="constant", max_grad_norm=1.0), cfg.ar_steps)
    ar.train()
    with progress(cfg.ar_steps, "AR-SFT") as bar:
        for idx in batches(acts["train"], cfg, cfg.ar_steps, salt=1):
            vectors, labels = pick(acts["train"], idx)
            stepper.step(ar_loss(ar, labels, vectors))
            bar.advance()
    atomic_torch_save(saved, trainable_state(ar))
    return ar.eval()


@torch.no_grad()
def identity_readout(base, tokenizer, vectors: torch.Tensor, token_ids: list[int], cfg: PilotConfig) -> dict:
    """D5, zero-shot Patchscopes on the frozen base: inject layer-K activations ``[n, d]`` at block L of
    an identity prompt and score whether the next token is the source token (top-1, top-5), for
    L in 0, 1, 2, 4, 8, K+1, raw (at the median activation norm; at 4x the embedding norm for L=0)
    and centred."""
    emb_norm = float(base.get_input_embeddings().weight.detach().norm(dim=-1).median())
    spaced = [tokenizer.encode(" " + tokenizer.decode([t]).strip(), add_special_tokens=False)[0] for t in token_ids]
    out = {}
    for layer in (0, 1, 2, 4, 8, cfg.layer + 1):
        for centred in (False, True):
            scale = 4 * emb_norm if layer == 0 else float(vectors.norm(dim=-1).median())
            av = Verbalizer.create(
                base,
                tokenizer,
                cfg.layer,
                av_prompt=IDENTITY_PROMPT,
                chat_template=False,
                inject_layer=layer,
                injection_scale=scale,
            )
            if centred:
                av.fit_center(vectors)
            top5 = torch.cat(
                [av.first_logprobs(vectors[i : i + 64]).topk(5, -1).indices for i in range(0, len(vectors), 64)]
            )
            wanted = torch.tensor([[a, b] for a, b in zip(token_ids, spaced)])  # [n, 2]: the token, or it with a space
            hits = (top5[:, :, None] == wanted[:, None, :]).any(-1)  # [n, 5]
            out[f"L{layer}{'-centred' if centred else ''}"] = {
                "top1": float(hits[:, 0].float().mean()),
                "top5": float(hits.any(-1).float().mean()),
            }
    return out


def score(av: Verbalizer, ar: Reconstructor, vectors: torch.Tensor, labels: list[str], cfg: PilotConfig) -> dict:
    """D1-D4 on held-out rows and the round trip FVE (AR of the greedy description)."""
    av.eval()
    with torch.no_grad():
        found = diagnose(av, vectors, av.encode(labels), rows=min(64, len(vectors)), seed=cfg.seed)
        texts = av.describe(vectors)
        fve_round_trip = fve(ar.predict(texts), vectors)
    half = len(vectors) // 2
    summary = found.summary()
    del summary["geometry"]
    return summary | {
        "fve_round_trip": fve_round_trip,
        "fve_round_trip_ordinary": fve(ar.predict(texts[:half]), vectors[:half]),
        "fve_round_trip_fact": fve(ar.predict(texts[half:]), vectors[half:]),
        "distinct_share_all": len(set(texts)) / len(texts),
        "examples": [{"label": labels[i], "description": texts[i]} for i in (0, 1, half, half + 1, half + 2)],
    }


def run_setting(base, tokenizer, ar, setting: str, acts: dict, cfg: PilotConfig) -> dict:
    """Before/after AV-SFT diagnosis of one injection setting."""
    torch.manual_seed(cfg.seed)
    train_vectors = torch.cat([acts["train"][g]["vectors"] for g in ("ordinary", "fact")])
    av = smollm2_verbalizer(
        base, tokenizer, cfg.layer, train_vectors, "censored", setting, cfg.rank, max_new_tokens=cfg.max_new_tokens
    )
    vectors, labels = held_out(acts, cfg)
    every_other = list(range(0, len(vectors), 2))  # ordinary and fact rows alike
    with torch.no_grad():
        before = nll_gap(av.eval(), vectors[every_other], av.encode([labels[i] for i in every_other]))
    stepper = Stepper(
        av.model.parameters(), OptimConfig(cfg.lr_av, schedule="constant", max_grad_norm=1.0), cfg.av_steps
    )
    losses, start = [], time.time()
    av.train()
    with progress(cfg.av_steps, f"AV-SFT {setting}") as bar:
        for idx in batches(acts["train"], cfg, cfg.av_steps, salt=2):
            batch_vectors, batch_labels = pick(acts["train"], idx)
            loss = av_sft_loss(av, batch_vectors, av.encode(batch_labels))
            stepper.step(loss)
            losses.append(float(loss.detach()))
            bar.advance()
    seconds = time.time() - start
    return {
        "config": dataclasses.asdict(av.config) | {"center": None},
        "before": before,
        "after": score(av, ar, vectors, labels, cfg),
        "censored": readings(av, acts["eval"]["fact"], smollm2_data.chat_records(), seed=cfg.seed),
        "train_loss_first_last_20": [sum(losses[:20]) / 20, sum(losses[-20:]) / 20],
        "seconds_per_step": seconds / cfg.av_steps,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--settings", default=",".join(SETTINGS))
    ap.add_argument("--av-steps", type=int, default=PilotConfig.av_steps)
    ap.add_argument("--ar-steps", type=int, default=PilotConfig.ar_steps)
    ap.add_argument("--work", type=Path, default=Path("runs/nla_pilot"))
    args = ap.parse_args()
    settings = args.settings.split(",")
    if unknown := set(settings) - set(SETTINGS):
        raise SystemExit(f"unknown setting(s) {sorted(unknown)}; choose from {', '.join(SETTINGS)}")
    cfg = PilotConfig(av_steps=args.av_steps, ar_steps=args.ar_steps)
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    target, tokenizer = censored.load()
    base, _ = load("smollm2-135m")
    acts = smollm2_data.activations(target, tokenizer, cfg.layer, cache=work / "acts.pt", seed=cfg.seed)
    train_vectors = torch.cat([acts["train"]["ordinary"]["vectors"], acts["train"]["fact"]["vectors"]])
    state_file = work / "pilot.json"
    state = json.loads(state_file.read_text()) if state_file.is_file() else {}
    state["pilot"] = dataclasses.asdict(cfg)
    state["counts"] = {s: {g: len(acts[s][g]["labels"]) for g in acts[s]} for s in acts}
    state["geometry"] = geometry(train_vectors, base.get_input_embeddings().weight)
    probe = Verbalizer.create(base, tokenizer, cfg.layer, av_prompt=RAW_AV_PROMPT, ar_template=RAW_AR_TEMPLATE)
    ar = train_ar(target, tokenizer, probe.config, acts, cfg, work)
    vectors, labels = held_out(acts, cfg)
    if "identity_readout" not in state:
        ordinary = acts["eval"]["ordinary"]
        rows = ordinary["vectors"][: 4 * cfg.eval_rows]
        state["identity_readout"] = identity_readout(base, tokenizer, rows, ordinary["tokens"][: len(rows)], cfg)
    state["fve_ar_teacher"] = fve(ar.predict(labels), vectors)
    for setting in settings:
        key = f"{setting}@{cfg.av_steps}"
        if key not in state.get("settings", {}):
            state.setdefault("settings", {})[key] = run_setting(base, tokenizer, ar, setting, acts, cfg)
            atomic_write_text(state_file, json.dumps(state, indent=2))
    atomic_write_text(state_file, json.dumps(state, indent=2))
    atomic_write_text(RESULT, json.dumps(state, indent=2))
    table = Table(title=f"NLA pilot, censored SmolLM2 layer {cfg.layer} (held-out, {cfg.eval_rows} rows)")
    for col in ("setting", "D1 gap (nats/tok)", "D1 gap first 4", "D2 KL", "D3 top-1 (chance)", "distinct", "FVE rt"):
        table.add_column(col)
    for key, res in state["settings"].items():
        a = res["after"]
        table.add_row(
            key,
            f"{a['nll_gap']['gap_shuffled']:.3f}",
            f"{a['nll_gap']['first_gap_shuffled']:.3f}",
            f"{a['first_token_kl']['kl']:.3f}",
            f"{a['retrieval']['top1']:.2f} ({a['retrieval']['chance_top1']:.2f})",
            f"{a['distinct_share_all']:.2f}",
            f"{a['fve_round_trip']:.3f}",
        )
    Console().print(table)
    Console().print(f"AR on teacher labels (held-out FVE): {state['fve_ar_teacher']:.3f}")


if __name__ == "__main__":
    main()
