"""``paren``: a balanced-parentheses classifier shaped like Redwood's causal-scrubbing organism.

3 layers, 2 heads of width 28, d_model 56, ReLU MLPs of width 56, pre-LayerNorm,
bidirectional attention, learned positions, n_ctx 42. Input: ``START ( ) ... END PAD...``
(up to 40 parens); the two logits (unbalanced, balanced) are read at position 0.

Training data: even lengths 2-40; a quarter balanced (uniform over balanced strings of
that length), a quarter adversarial "count passes, horizon fails" (equal opens and
closes but some suffix holds more opens than closes), a quarter "horizon passes, count fails" and a
quarter uniformly random strings.

PAD is masked out of attention (``attention_mask``), as in Redwood's model (ARENA's
bracket-classifier exercises run it with a mask on PAD keys); ``logits`` and the scrub task pass
the mask. ``roles`` finds which heads play Redwood's parts (count heads, horizon head, proportion
head) from direct logit attribution; ``train`` records them in the config.

Which mechanism a run finds depends on its seed (``bench/scrub.py --recipe-seeds=0,...,9``, scrub seed 0, 2000 rows).
In every one of seeds 0-9 the last MLP writes most of the answer (keeping only mlp2's direct path to the logits,
everything else on a random input, recovers 0.60-0.82 of the loss; all six heads' 0.40-0.56), where Redwood's heads
write it; and the count heads at position 0 give at most 0.46 of their attention to position 1, where Redwood's count
heads read the count (one head of seed 5: 0.82); with seeds 0-2 the layer-1/2 heads attend 0.44-0.89 to the parens
themselves. The case study lands in the paper's order with mlp2 in the root for seeds 3 and 5 only, and with Redwood's
root (the logits) for seed 3 only; the other 8 seeds put 2a/2b (count heads restricted to position 1) below 3a/3b
(horizon head split by position). ``SEED`` = 3 is shipped (count heads 1.0 and 1.1, horizon head 2.0, proportion head
0.1; 99.8% held out): it was chosen for its case study, so the paper's order is a property of this run, not of the
recipe.

Recipe variants tried with seed 0 (not shipped): without the PAD mask mlp2 answered the same way (0.93 /
heads 0.46); 9000 steps instead of 5000 gives 0.83 / 0.27; lengths skewed to short strings (P(n) ~ 1/n)
make the layer-1 heads at position 0 attend 0.85-0.92 to position 1, as Redwood's count heads do, but
mlp2 still writes the answer (0.68 / 0.41) and 2a/2b stay below 3a (seed 1 of that variant: the same
violations, and its heads read position 1 at most 0.31); weight decay 0.1
instead of 0.01 gives 0.83 / 0.44.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F

from probity.organisms import _native

NAME = "paren"
PAD, UNK, START, END, OPEN, CLOSE = range(6)
N_CTX = 42
MAX_PARENS = N_CTX - 2
TL_CONFIG = dict(
    d_model=56,
    d_head=28,
    n_heads=2,
    n_layers=3,
    n_ctx=N_CTX,
    d_vocab=6,
    d_vocab_out=2,
    d_mlp=56,
    act_fn="relu",
    normalization_type="LN",
    attention_dir="bidirectional",
    positional_embedding_type="standard",
)
SEED = 3  # the recipe's seed (see module doc)
KINDS = ("balanced", "count_pass_horizon_fail", "horizon_pass_count_fail", "random")


def _one(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """One string of ``n`` parens (+1 open, -1 close) of the given kind, by rejection sampling."""
    while True:
        if kind in ("balanced", "count_pass_horizon_fail"):
            s = rng.permutation(np.repeat(np.array([1, -1]), n // 2))
        else:
            s = rng.choice(np.array([1, -1]), n)
        high, total = np.cumsum(s[::-1]).max(), s.sum()  # horizon: no suffix has more opens than closes
        ok = {
            "balanced": high <= 0,
            "count_pass_horizon_fail": high > 0,
            "horizon_pass_count_fail": high <= 0 and total != 0,
            "random": True,
        }[kind]
        if ok:
            return s


def sample(n: int, seed: int = 0, kinds: tuple[float, ...] = (0.25, 0.25, 0.25, 0.25)) -> torch.Tensor:
    """``n`` token rows ``[n, 42]`` (int64) drawn from the training distribution with ``seed``."""
    rng = np.random.default_rng(seed)
    lengths = rng.choice(np.arange(2, MAX_PARENS + 1, 2), n)
    which = rng.choice(len(KINDS), n, p=np.asarray(kinds) / np.sum(kinds))
    tokens = np.full((n, N_CTX), PAD, dtype=np.int64)
    tokens[:, 0] = START
    for i, (length, k) in enumerate(zip(lengths, which)):
        s = _one(KINDS[k], int(length), rng)
        tokens[i, 1 : length + 1] = np.where(s > 0, OPEN, CLOSE)
        tokens[i, length + 1] = END
    return torch.from_numpy(tokens)


def features(tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """Ground-truth features of token rows ``[n, 42]``: per-row ``balanced``, ``count_test``,
    ``horizon_test``, ``starts_open``, ``open_proportion``, ``length`` ([n]), and per-position
    ``elevation`` (opens minus closes from position i to the end), ``horizon_ok``
    (that elevation is <= 0, i.e. no suffix has more opens than closes) and ``open_after``
    (the proportion of opens among the parens from position i to the end; NaN where none) ([n, 42])."""
    step = (tokens == OPEN).long() - (tokens == CLOSE).long()
    is_paren = (tokens == OPEN) | (tokens == CLOSE)
    length = is_paren.sum(1)
    suffix = step.flip(1).cumsum(1).flip(1)  # opens - closes from i to the end
    parens_after = is_paren.long().flip(1).cumsum(1).flip(1)
    count = suffix[:, 1] == 0
    horizon_ok = (suffix <= 0) | ~is_paren
    horizon = horizon_ok.all(1)
    return {
        "balanced": count & horizon,
        "count_test": count,
        "horizon_test": horizon,
        "starts_open": tokens[:, 1] == OPEN,
        "open_proportion": (tokens == OPEN).sum(1).float() / length.clamp(min=1).float(),
        "length": length,
        "elevation": suffix,
        "horizon_ok": horizon_ok,
        "open_after": (parens_after + suffix).float() / 2 / parens_after.float(),
    }


def labels(tokens: torch.Tensor) -> torch.Tensor:
    """1 for balanced rows, 0 otherwise ([n], int64)."""
    return features(tokens)["balanced"].long()


def tokenizer():
    """Word-level tokenizer over ``( )`` with ``<pad> <unk> <bos>=START <eos>=END``."""
    from probity.models import word_tokenizer

    return word_tokenizer(["(", ")"], name="probity-paren")


def encode(strings: list[str]) -> torch.Tensor:
    """Token rows ``[n, 42]`` for paren strings such as ``"(()())"``."""
    tokens = torch.full((len(strings), N_CTX), PAD, dtype=torch.long)
    tokens[:, 0] = START
    for i, s in enumerate(strings):
        if len(s) > MAX_PARENS or set(s) - {"(", ")"}:
            raise ValueError(f"paren strings hold at most {MAX_PARENS} of '(' and ')', got {s!r}")
        tokens[i, 1 : len(s) + 1] = torch.tensor([OPEN if c == "(" else CLOSE for c in s], dtype=torch.long)
        tokens[i, len(s) + 1] = END
    return tokens


def attention_mask(tokens: torch.Tensor) -> torch.Tensor:
    """1 where a position may be attended to (every token but PAD) ``[n, 42]`` (int64)."""
    return (tokens != PAD).long()


def logits(model, tokens: torch.Tensor) -> torch.Tensor:
    """The classifier's two logits ``[n, 2]`` (unbalanced, balanced), read at position 0; PAD is masked
    out of attention."""
    return model(tokens, attention_mask=attention_mask(tokens))[:, 0, :]


def load():
    """The shipped organism: ``(TransformerBridge, tokenizer)``."""
    return _native.load_organism(NAME, tokenizer())


@torch.no_grad()
def roles(model, n: int = 2000, seed: int = 4321) -> dict:
    """Which heads of ``model`` (a bridge over the organism) play the roles of Redwood's hypotheses, on ``n``
    rows of the training distribution, from each head's direct logit attribution (DLA: its output at
    position 0 through the final LayerNorm, scale frozen, onto the balanced-minus-unbalanced logit).

    ``count``: the two layer-1/2 heads whose DLA best separates count-test passes from failures (AUROC);
    ``horizon``: the remaining layer-1/2 head that best separates horizon-test passes; ``proportion``: the
    layer-0 head whose output at position 1 is best fit by a line in the proportion of opens (R^2).
    ``scores`` holds the measurements."""
    from probity.report.metrics import auroc

    tokens = sample(n, seed=seed)
    f = features(tokens)
    _, cache = model.run_with_cache(tokens, attention_mask=attention_mask(tokens))
    native = getattr(model, "original_model", model)
    cfg = native.cfg
    w = (native.head.weight[1] - native.head.weight[0]) * native.ln_out.weight
    heads, dla = {}, {}
    for layer in range(cfg.n_layers):
        w_o = native.layers[layer].attn.o.weight.view(cfg.d_model, cfg.n_heads, cfg.d_head)
        z = cache[f"blocks.{layer}.attn.hook_z"]  # [n, p, h, dh]
        for h in range(cfg.n_heads):
            out = heads[f"{layer}.{h}"] = torch.einsum("npe,de->npd", z[:, :, h], w_o[:, h])
            dla[f"{layer}.{h}"] = (
                (out[:, 0] - out[:, 0].mean(-1, keepdim=True)) / cache["ln_final.hook_scale"][:, 0]
            ) @ w
    upper = [k for k in heads if not k.startswith("0.")]
    sep = {
        test: {k: max(a, 1 - a) for k in upper if (a := auroc(dla[k], f[test])) is not None}
        for test in ("count_test", "horizon_test")
    }
    count = sorted(upper, key=lambda k: -sep["count_test"][k])[:2]
    horizon = max((k for k in upper if k not in count), key=lambda k: sep["horizon_test"][k])
    x = torch.stack([2 * f["open_proportion"] - 1, torch.ones(n)], 1).double()
    fit = {}
    for k in (k for k in heads if k.startswith("0.")):
        out = heads[k][:, 1].double()
        resid = out - x @ torch.linalg.lstsq(x, out).solution
        fit[k] = round(float(1 - (resid**2).sum() / ((out - out.mean(0)) ** 2).sum()), 4)
    rounded = {t: {k: round(v, 4) for k, v in d.items()} for t, d in sep.items()}
    return {
        "count": count,
        "horizon": [horizon],
        "proportion": [max(fit, key=fit.get)],
        "scores": {
            "auroc_count_test": rounded["count_test"],
            "auroc_horizon_test": rounded["horizon_test"],
            "proportion_r2_at_1": fit,
        },
    }


@torch.no_grad()
def evaluate(model=None, tokenizer=None, n: int = 20000, seed: int = 12345) -> dict:
    """Held-out accuracy overall, per data kind, on uniform random strings, and mean BCE."""
    if model is None:
        model, _ = load()
    accs = {}
    for i, kind in enumerate(KINDS):
        onehot = tuple(float(j == i) for j in range(len(KINDS)))
        toks = sample(n // len(KINDS), seed=seed + i, kinds=onehot)
        pred = logits(model, toks).argmax(-1)
        accs[kind] = (pred == labels(toks)).float().mean().item()
    toks = sample(n, seed=seed + 99)
    out = logits(model, toks)
    return {
        "accuracy": (out.argmax(-1) == labels(toks)).float().mean().item(),
        "loss": F.cross_entropy(out, labels(toks)).item(),
        **{f"accuracy_{k}": v for k, v in accs.items()},
    }


def train(out_dir=None, seed: int = SEED, quick: bool = False, steps: int | None = None) -> dict:
    """Train from synthetic data (AdamW, batches of 128 from a pool of fresh rows) and save weights.

    ``quick`` runs a short schedule for tests; a full run also records that schedule's metrics
    (``meta["quick"]``) so the test can check the recipe. Resumes from ``out_dir/ckpt`` after a kill."""
    out_dir = _native.WEIGHTS / NAME if out_dir is None else out_dir
    steps = steps or (100 if quick else 5000)
    model = _native.native_model(TL_CONFIG, seed=seed)
    pool = sample(min(400_000, steps * 128), seed=seed + 1)
    pool_labels = labels(pool)

    def batch_loss(gen: torch.Generator, step: int) -> torch.Tensor:
        idx = torch.randint(len(pool), (128,), generator=gen)
        return F.cross_entropy(logits(model, pool[idx]), pool_labels[idx])

    seconds = _native.train_recipe(model, batch_loss, steps, seed, 2e-3, out_dir, NAME)
    metrics = evaluate(model)
    metrics.update(steps=steps, seed=seed, train_seconds=round(seconds, 1))
    found = roles(_native.bridge(copy.deepcopy(model)))  # bridging rewires the module in place
    _native.save(
        out_dir,
        model,
        TL_CONFIG,
        {
            "metrics": metrics,
            "roles": {k: v for k, v in found.items() if k != "scores"},
            "role_scores": found["scores"],
            "quick": _native.quick_record(train, seed, quick),
        },
    )
    return metrics
