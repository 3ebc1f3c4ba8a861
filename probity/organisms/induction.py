"""``induction``: a 2-layer attention-only LM that forms a previous-token head and induction heads.

Data: a BOS token, then Zipf-distributed token noise (vocabulary 256, 128 positions in all)
with repeated spans copied from earlier in the sequence at random offsets, so only some
positions are predictable by induction. ``sample_with_candidates`` marks them (position t
where token t+1 repeats the token after an earlier copy of the span); the scrubbing loss is
counted there, as in Redwood's induction case study. After training the organism records
which layer-0 heads attend to the previous token and which layer-1 heads do induction
(scores in ``config.json``).

Two recipe choices follow Redwood's setting (a 2-layer attention-only LM trained on natural
text) more closely than the first recipe did (no BOS, loss at the candidates only):

- a BOS token at position 0 of every sequence, as in a text LM; the induction heads use it
  as an attention sink (a quarter of their attention goes there);
- the LM objective: next-token loss at *every* position, as a text LM is trained (Redwood's
  candidate mask only selects where the scrubbing loss is measured), plus the mean loss at
  the candidate positions. The model must then not predict an induction continuation where a
  token merely recurs, which rewards matching more than the current token. The candidate
  term makes the induction heads form within the 10-minute budget: with the all-position
  loss alone none formed in 3000 steps.

Which mechanism a run finds depends on its seed: 3 of the 5 seeds tried (1, 3, 4) land in the
paper's order, 2 (0, 2) do not. The shipped weights are seed 1 (chosen when only seeds 0-2
had been tried; scrub seed 0, 300 rows; embeddings->V / embeddings->Q / prev->K / all three;
paper 0.90 / 0.51 / 0.83 / 0.36):

- seed 1 (shipped): 0.99 / 0.55 / 0.93 / 0.52. All four layer-0 heads attend to the previous
  token and the queries read them too (candidate accuracy 0.91): as in Redwood's model, the
  induction heads match more than the current token.
- seeds 3 and 4 (trained afterwards with ``train(seed=3|4)``, 242 s / 236 s): 0.99 / 0.53 /
  0.94 / 0.51 and 0.99 / 0.53 / 0.95 / 0.51, the same mechanism (all four layer-0 heads
  previous-token heads; candidate accuracy 0.92, 0.93).
- seed 0: 0.77 / 0.99 / 0.94 / 0.72; seed 2: 0.08 / 1.00 / 0.86 / 0.07. A spare layer-0 head
  attends to the current token, the values read the token through it as well as from the
  embeddings, and the queries read only the current token (candidate accuracy 0.52, 0.58).

Not shipped either (embeddings->V / embeddings->Q, seed 0 unless noted): the first recipe (no
BOS, loss at the candidates only) 0.02 / 1.00 with seeds 0 and 1; BOS alone -0.06 / 1.00; BOS
with 8 heads and d_model 128 -0.03 / 0.98 (610 s of training); BOS with the loss at every
position only: no induction heads in 3000 steps; this recipe with BOS overwriting the first
noise token instead of shifting the noise 0.30 / 1.00; this recipe plus "decoy" earlier copies
of span tokens in half the rows 0.21 / 0.99.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F

from probity.organisms import _native

NAME = "induction"
N_CTX, VOCAB, N_SPECIAL = 128, 256, 4
BOS = 2  # the word tokenizer's <bos>
SEED = 1  # the recipe's seed (see module doc)
TL_CONFIG = dict(
    d_model=64,
    d_head=16,
    n_heads=4,
    n_layers=2,
    n_ctx=N_CTX,
    d_vocab=VOCAB,
    attn_only=True,
    normalization_type="LN",
    attention_dir="causal",
    positional_embedding_type="standard",
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
    """``(tokens [n, 128] int64, candidates [n, 128] bool)``: BOS, then the first 127 tokens of
    Zipf noise with 2-4 repeated spans of 8-32 tokens; candidate t means token t+1 is predictable
    by induction."""
    rng = np.random.default_rng(seed)
    tokens = _zipf(rng, (n, N_CTX))
    cand = np.zeros((n, N_CTX), dtype=bool)
    for i in range(n):
        for _ in range(rng.integers(SPANS[0], SPANS[1] + 1)):
            length = int(rng.integers(SPAN_LENGTH[0], SPAN_LENGTH[1] + 1))
            src = int(rng.integers(0, N_CTX - 2 * length))
            dst = int(rng.integers(src + length, N_CTX - length + 1))
            tokens[i, dst : dst + length] = tokens[i, src : src + length]
            cand[i, dst : dst + length - 1] = True
    # A later span may overwrite an earlier copy: keep only positions whose continuation
    # really repeats an earlier (token, next token) pair.
    t = torch.from_numpy(tokens)
    c = torch.from_numpy(cand)
    same = (t[:, :-1, None] == t[:, None, :-1]) & (t[:, 1:, None] == t[:, None, 1:])  # [n, q, k]
    earlier = torch.ones(N_CTX - 1, N_CTX - 1, dtype=torch.bool).tril(-1)
    c[:, :-1] &= (same & earlier).any(-1)
    bos = torch.full((n, 1), BOS)
    c = torch.cat([torch.zeros(n, 1, dtype=torch.bool), c[:, :-2], torch.zeros(n, 1, dtype=torch.bool)], 1)
    return torch.cat([bos, t[:, :-1]], 1), c


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
    measured on BOS then uniformly random tokens repeated twice (mean attention to t-1, resp.
    to the token after the earlier copy)."""
    from probity.models import cache

    half = (N_CTX - 1) // 2
    g = torch.Generator().manual_seed(seed)
    first = torch.randint(N_SPECIAL, VOCAB, (n, half), generator=g)
    toks = torch.cat([torch.full((n, 1), BOS), first, first], 1)
    pats = cache(model, toks, ["blocks.0.attn.hook_pattern", "blocks.1.attn.hook_pattern"])
    p0, p1 = pats["blocks.0.attn.hook_pattern"], pats["blocks.1.attn.hook_pattern"]  # [n, head, q, k]
    prev = p0[:, :, 2:, 1:].diagonal(dim1=-2, dim2=-1).mean((0, 2))  # query 2+i -> key 1+i
    ind = p1[:, :, 1 + half :, 2:].diagonal(dim1=-2, dim2=-1).mean((0, 2))  # query 1+half+i -> key 2+i
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
    return {
        "loss_candidates": nll[c].mean().item(),
        "loss_other": nll[~c].mean().item(),
        "accuracy_candidates": acc,
        "candidate_share": c.float().mean().item(),
        "head_scores": scores,
        "prev_token_heads": prev,
        "induction_heads": ind,
    }


def train(out_dir=None, seed: int = SEED, quick: bool = False, steps: int | None = None) -> dict:
    """Train on synthetic batches of 32 (AdamW) on the next-token loss at every position plus the
    loss at the candidate positions (see module doc), and save weights plus the heads it formed.

    ``quick`` runs a short schedule for tests; a full run also records that schedule's metrics
    (``meta["quick"]``) so the test can check the recipe. Resumes from ``out_dir/ckpt`` after a kill."""
    out_dir = _native.WEIGHTS / NAME if out_dir is None else out_dir
    steps = steps or (100 if quick else 3000)
    model = _native.native_model(TL_CONFIG, seed=seed, gpt2_init=True)
    pool, cand = sample_with_candidates(min(40_000, steps * 32), seed=seed + 1)

    def batch_loss(gen: torch.Generator, step: int) -> torch.Tensor:
        idx = torch.randint(len(pool), (32,), generator=gen)
        toks, mask = pool[idx], cand[idx, :-1]
        nll = F.cross_entropy(model(toks)[:, :-1].transpose(1, 2), toks[:, 1:], reduction="none")  # [32, 127]
        return nll[mask].mean() + nll.mean()

    seconds = _native.train_recipe(model, batch_loss, steps, seed, LR, out_dir, NAME)
    metrics = evaluate(_native.bridge(copy.deepcopy(model)))  # bridging rewires the module in place
    metrics.update(steps=steps, seed=seed, train_seconds=round(seconds, 1))
    _native.save(
        out_dir,
        model,
        TL_CONFIG,
        {
            "metrics": metrics,
            "prev_token_heads": metrics["prev_token_heads"],
            "induction_heads": metrics["induction_heads"],
            "quick": _native.quick_record(train, seed, quick),
        },
    )
    return metrics
