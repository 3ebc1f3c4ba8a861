"""``induction``: a 2-layer attention-only LM that forms a previous-token head and induction heads.

Data: Zipf-distributed token noise (vocabulary 256, length 128) with repeated spans
copied from earlier in the sequence at random offsets, so only some positions are
predictable by induction. ``sample_with_candidates`` marks them (position t where token
t+1 repeats the token after an earlier copy of the span); the scrubbing loss is
counted there, in training as in Redwood's induction case study. After training the
organism records which layer-0 heads attend to the previous token and which layer-1
heads do induction (scores in ``config.json``).

How it differs from Redwood's model, and what did not change that (measured with scrub
seed 0 on 300 rows). Its layer-1 values read the current token through layer-0 heads
that attend partly to themselves (0.0 here, 24% of its attention) as much as through the
embeddings: embeddings->V recovers 0.02 of the loss (paper 0.90), with those heads also
allowed 0.98; the recipe with seed 1 gives the same (0.02; 0.99). Its queries read only the
current token (embeddings->Q 1.00, paper 0.51). Recipe variants tried, none shipped
(embeddings->V / ->Q): a BOS token at position 0 (-0.06 / 1.00: layer-0 heads do not use
it as a sink); BOS with 8 heads and d_model 128 (-0.03 / 0.98, 610 s of training); BOS with
the LM loss at every position (no induction heads within 3000 steps); BOS with the loss at
every position plus the candidate loss (0.77 / 0.99 with one data draw, 0.30 / 1.00 with
another: whether a layer-0 head turns into a current-token head varies between runs);
that plus "decoy" earlier copies of span tokens in half the rows (0.21 / 0.99).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F

from probity.organisms import _native

NAME = "induction"
N_CTX, VOCAB, N_SPECIAL = 128, 256, 4
TL_CONFIG = dict(
    d_model=64, d_head=16, n_heads=4, n_layers=2, n_ctx=N_CTX, d_vocab=VOCAB, attn_only=True,
    normalization_type="LN", attention_dir="causal", positional_embedding_type="standard",
)
PREV_THRESHOLD, INDUCTION_THRESHOLD = 0.15, 0.15  # mean attention to the one right key; chance is about 0.03
LR = 3e-3
ZIPF_EXPONENT = 1.0
SPANS, SPAN_LENGTH = (2, 4), (8, 32)


def _zipf(rng: np.random.Generator, shape) -> np.ndarray:
    ranks = np.arange(1, VOCAB - N_SPECIAL + 1)
    p = 1.0 / ranks**ZIPF_EXPONENT
    return rng.choice(np.arange(N_SPECIAL, VOCAB), size=shape, p=p / p.sum())


def sample_with_candidates(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(tokens [n, 128] int64, candidates [n, 128] bool)``: Zipf noise with 2-4 repeated
    spans of 8-32 tokens; candidate t means token t+1 is predictable by induction."""
    rng = np.random.default_rng(seed)
    tokens = _zipf(rng, (n, N_CTX))
    cand = np.zeros((n, N_CTX), dtype=bool)
    for i in range(n):
        for _ in range(rng.integers(SPANS[0], SPANS[1] + 1)):
            length = int(rng.integers(SPAN_LENGTH[0], SPAN_LENGTH[1] + 1))
            src = int(rng.integers(0, N_CTX - 2 * length))
            dst = int(rng.integers(src + length, N_CTX - length + 1))
            tokens[i, dst:dst + length] = tokens[i, src:src + length]
            cand[i, dst:dst + length - 1] = True
    # A later span may overwrite an earlier copy: keep only positions whose continuation
    # really repeats an earlier (token, next token) pair.
    t = torch.from_numpy(tokens)
    c = torch.from_numpy(cand)
    same = (t[:, :-1, None] == t[:, None, :-1]) & (t[:, 1:, None] == t[:, None, 1:])  # [n, q, k]
    earlier = torch.ones(N_CTX - 1, N_CTX - 1, dtype=torch.bool).tril(-1)
    c[:, :-1] &= (same & earlier).any(-1)
    c[:, -1] = False
    return t, c


def tokenizer():
    """Word-level tokenizer over ``t0 .. t251`` (ids 4-255) plus the four specials."""
    from probity.models import word_tokenizer

    return word_tokenizer([f"t{i}" for i in range(VOCAB - N_SPECIAL)], name="probity-induction")


def load():
    """The shipped organism: ``(TransformerBridge, tokenizer)``; ``bridge.probity_meta`` holds head roles."""
    return _native.load_organism(NAME, tokenizer())


@torch.no_grad()
def head_scores(model, n: int = 64, seed: int = 7) -> dict:
    """Previous-token score of each layer-0 head and induction score of each layer-1 head,
    measured on uniformly random tokens repeated twice (mean attention to t-1, resp. to the
    token after the earlier copy)."""
    from probity.models import cache

    half = N_CTX // 2
    g = torch.Generator().manual_seed(seed)
    first = torch.randint(N_SPECIAL, VOCAB, (n, half), generator=g)
    toks = torch.cat([first, first], 1)
    pats = cache(model, toks, ["blocks.0.attn.hook_pattern", "blocks.1.attn.hook_pattern"])
    p0, p1 = pats["blocks.0.attn.hook_pattern"], pats["blocks.1.attn.hook_pattern"]  # [n, head, q, k]
    prev = p0.diagonal(offset=-1, dim1=-2, dim2=-1).mean((0, 2))
    ind = p1[:, :, half:, :].diagonal(offset=1, dim1=-2, dim2=-1).mean((0, 2))  # query half+i -> key i+1
    return {"prev_token": [round(v, 4) for v in prev.tolist()], "induction": [round(v, 4) for v in ind.tolist()]}


@torch.no_grad()
def evaluate(model=None, tokenizer=None, n: int = 256, seed: int = 12345) -> dict:
    """Next-token loss at candidate and other positions, top-1 accuracy at candidates, head roles."""
    if model is None:
        model, _ = load()
    toks, cand = sample_with_candidates(n, seed)
    logp = model(toks)[:, :-1].log_softmax(-1)
    nll = -logp.gather(-1, toks[:, 1:, None])[..., 0]
    c = cand[:, :-1]
    acc = (logp.argmax(-1) == toks[:, 1:])[c].float().mean().item()
    scores = head_scores(model)
    prev = [h for h, s in enumerate(scores["prev_token"]) if s > PREV_THRESHOLD]
    ind = [h for h, s in enumerate(scores["induction"]) if s > INDUCTION_THRESHOLD]
    return {"loss_candidates": nll[c].mean().item(), "loss_other": nll[~c].mean().item(),
            "accuracy_candidates": acc, "candidate_share": c.float().mean().item(),
            "head_scores": scores, "prev_token_heads": prev, "induction_heads": ind}


def train(out_dir=None, seed: int = 0, quick: bool = False, steps: int | None = None) -> dict:
    """Train on synthetic batches of 32 (AdamW), next-token loss at the candidate positions only,
    and save weights plus the heads it formed.

    ``quick`` runs a short schedule for tests; a full run also records that schedule's metrics
    (``meta["quick"]``) so the test can check the recipe. Resumes from ``out_dir/ckpt`` after a kill."""
    out_dir = _native.WEIGHTS / NAME if out_dir is None else out_dir
    steps = steps or (100 if quick else 3000)
    model = _native.native_model(TL_CONFIG, seed=seed, gpt2_init=True)
    pool, cand = sample_with_candidates(min(40_000, steps * 32), seed=seed + 1)

    def batch_loss(gen: torch.Generator, step: int) -> torch.Tensor:
        idx = torch.randint(len(pool), (32,), generator=gen)
        toks, mask = pool[idx], cand[idx, :-1]
        return F.cross_entropy(model(toks)[:, :-1][mask], toks[:, 1:][mask])

    seconds = _native.fit(model, batch_loss, steps, seed, LR, out_dir, NAME)
    metrics = evaluate(_native.bridge(copy.deepcopy(model)))  # bridging rewires the module in place
    metrics.update(steps=steps, seed=seed, train_seconds=round(seconds, 1))
    _native.save(out_dir, model, TL_CONFIG, {"metrics": metrics, "prev_token_heads": metrics["prev_token_heads"],
                                              "induction_heads": metrics["induction_heads"],
                                              "quick": _native.quick_record(train, seed, quick)})
    return metrics
