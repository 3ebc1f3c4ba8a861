"""What a model is scrubbed on: a dataset, the loss, the features hypotheses may name, and subsets.

A ``Task`` holds token rows ``[n, pos]`` (with an optional attention mask ``key_mask [n, pos]``,
True where a position may be attended to, e.g. False on padding), targets and a mask of the positions where the
loss is counted (``ce``: cross-entropy against integer targets; ``mse``: squared error
of logit 0 against float targets), precomputed features (one value per row ``[n]`` or
per row and position ``[n, pos]``) and named subsets of rows for the per-subset table.
``paren_task`` and ``induction_task`` build the two case studies' tasks from the organisms;
``repeat_task`` builds the induction task for a real language model (random word pieces, repeated).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from probity.models.sites import Site
from probity.scrub.hypothesis import HypothesisError
from probity.scrub.model import layer_and_head


@dataclass
class Task:
    """A scrubbing dataset and loss (see module doc)."""

    name: str
    tokens: torch.Tensor
    targets: torch.Tensor
    loss_mask: torch.Tensor
    features: dict[str, torch.Tensor]
    subsets: dict[str, torch.Tensor] = field(default_factory=dict)
    loss_kind: str = "ce"
    key_mask: torch.Tensor | None = None

    def __post_init__(self):
        n, p = self.tokens.shape
        if self.loss_kind not in ("ce", "mse"):
            raise ValueError(f"loss_kind must be 'ce' or 'mse', got {self.loss_kind!r}")
        if self.targets.shape != (n, p) or self.loss_mask.shape != (n, p):
            raise ValueError(
                f"targets and loss_mask must be [n, pos] = {[n, p]} like tokens, got "
                f"{list(self.targets.shape)} and {list(self.loss_mask.shape)}"
            )
        if not bool(self.loss_mask.any(1).all()):
            raise ValueError(
                f"row {int((~self.loss_mask.any(1)).nonzero()[0])} has no position in loss_mask; drop it or mark one"
            )
        for name, values in self.features.items():
            check_feature(name, values, n, p)
        if self.key_mask is not None and (self.key_mask.shape != (n, p) or self.key_mask.dtype != torch.bool):
            raise ValueError(
                f"key_mask must be a bool tensor [n, pos] = {[n, p]} like tokens, got "
                f"{self.key_mask.dtype} {list(self.key_mask.shape)}"
            )

    def select(self, rows: torch.Tensor) -> Task:
        """The task on dataset rows ``rows [n]`` (repeats allowed: a bootstrap draw of the dataset)."""
        return Task(
            self.name,
            self.tokens[rows],
            self.targets[rows],
            self.loss_mask[rows],
            {k: v[rows] for k, v in self.features.items()},
            {k: v[rows] for k, v in self.subsets.items()},
            self.loss_kind,
            None if self.key_mask is None else self.key_mask[rows],
        )

    @property
    def n_ctx(self) -> int:
        return self.tokens.shape[1]

    @property
    def loss_positions(self) -> torch.Tensor:
        """The positions ``[m]`` where some row's loss is counted: the only logits a loss reads."""
        return self.loss_mask.any(0).nonzero()[:, 0]

    def per_example_loss(
        self, logits: torch.Tensor, rows: torch.Tensor, positions: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Loss of each reference example ``[batch]``: mean over its masked positions; ``logits [batch, pos, vocab]``
        for the dataset rows ``rows [batch]``, or ``[batch, m, vocab]`` at ``positions [m]`` only (they must
        hold every masked position of those rows, e.g. ``loss_positions``). On the logits' device; ``rows`` and
        ``positions`` index the task's tensors (on the CPU)."""
        mask, targets = (
            (x[rows] if positions is None else x[rows][:, positions]).to(logits.device)
            for x in (self.loss_mask, self.targets)
        )
        mask = mask.float()
        if self.loss_kind == "ce":
            nll = -logits.log_softmax(-1).gather(-1, targets.long()[..., None])[..., 0]
        else:
            nll = (logits[..., 0] - targets.float()) ** 2
        return (nll * mask).sum(1) / mask.sum(1)

    def per_example_kl(
        self,
        model_logits: torch.Tensor,
        logits: torch.Tensor,
        rows: torch.Tensor,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """KL(model || scrubbed) per example ``[batch]``, averaged over masked positions (0 for ``mse``); logits
        and devices as in ``per_example_loss``."""
        if self.loss_kind != "ce":
            return torch.zeros(len(rows), device=logits.device)
        mask = self.loss_mask[rows] if positions is None else self.loss_mask[rows][:, positions]
        mask = mask.to(logits.device, torch.float)
        kl = F.kl_div(logits.log_softmax(-1), model_logits.log_softmax(-1), log_target=True, reduction="none").sum(-1)
        return (kl * mask).sum(1) / mask.sum(1)

    def constant_loss(self) -> float:
        """Loss of the best constant predictor: the entropy of the masked targets (``ce``) or their
        variance (``mse``)."""
        t = self.targets[self.loss_mask]
        if self.loss_kind == "mse":
            return float(t.float().var(unbiased=False))
        p = torch.bincount(t.long()).double()
        p = p[p > 0] / p.sum()
        return float(-(p * p.log()).sum())


def check_feature(name: str, values: torch.Tensor, n: int, p: int) -> None:
    """One-line error unless ``values`` is ``[n]`` or ``[n, pos]`` with ``pos`` = ``p``, and has no NaN."""
    if not isinstance(values, torch.Tensor) or values.shape not in ((n,), (n, p)):
        shape = list(values.shape) if isinstance(values, torch.Tensor) else type(values).__name__
        raise HypothesisError(
            f"feature {name!r} must give one value per row [{n}] or per row and position [{n}, {p}], got {shape}"
        )
    if values.is_floating_point() and bool(values.isnan().any()):
        row = int(values.isnan().reshape(n, -1).any(1).nonzero()[0])
        raise HypothesisError(f"feature {name!r} is NaN on dataset row {row}; fix the feature function")


def compute_features(
    fns: dict[str, Callable[[torch.Tensor], torch.Tensor]], tokens: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Run each feature function once over ``tokens [n, pos]`` and check its output."""
    out = {}
    for name, fn in fns.items():
        try:
            values = torch.as_tensor(fn(tokens))
        except Exception as e:  # a user's feature code: report which feature failed, not a deep traceback
            raise HypothesisError(f"feature {name!r} failed on the dataset: {type(e).__name__}: {e}") from e
        check_feature(name, values, *tokens.shape)
        out[name] = values
    return out


def horizon_classes(tokens: torch.Tensor, open_after: torch.Tensor) -> torch.Tensor:
    """Redwood's five horizon classes per position ``[n, pos]``: 0 padding, -1 / 1 the END token after
    an open / a close paren, -2 / 2 elsewhere when the parens from there on hold more / not more
    opens than closes (``open_after [n, pos]`` > 0.5 / <= 0.5)."""
    from probity.organisms import paren

    after_open = torch.zeros_like(tokens, dtype=torch.bool)
    after_open[:, 1:] = tokens[:, :-1] == paren.OPEN
    end = tokens == paren.END
    out = torch.where(open_after > 0.5, -2, 2)
    out = torch.where(end, torch.where(after_open, -1, 1), out)
    return torch.where(tokens == paren.PAD, 0, out)


@torch.no_grad()
def adjusted_open_after(model, tokens: torch.Tensor, head: Site | str) -> torch.Tensor:
    """Redwood's "adjusted" proportion of opens after each position ``[n, pos]``: the opens weighted
    as the proportion head ``head`` (e.g. "0.0") attends, with its mean attention per paren key before
    and on-or-after the query, averaged over the rows of each length (so the weights depend only on
    the length and the query position, not on the parens)."""
    from probity.models import cache
    from probity.organisms import paren

    layer, h = layer_and_head(head)
    name = f"blocks.{layer}.attn.hook_pattern"
    device = next(model.parameters()).device
    pattern = torch.cat(
        [
            cache(model, {"input_ids": t, "attention_mask": paren.attention_mask(t)}, [name])[name][:, h].cpu()
            for t in tokens.to(device).split(500)
        ]
    )
    n, p = tokens.shape
    is_paren = ((tokens == paren.OPEN) | (tokens == paren.CLOSE)).float()
    length = is_paren.sum(1).long()  # rows of one length have their parens at the same positions
    count = torch.zeros(p + 1).index_add_(0, length, torch.ones(n)).clamp(min=1)
    before = torch.ones(p, p).tril(-1).bool()  # [pos, pos] (query, key): the key before the query
    weights = torch.zeros(n, p, p)
    for side in (before, ~before):
        keys = is_paren[:, None, :] * side.float()  # [n, pos, pos]: query, key
        mean = (pattern * keys).sum(-1) / keys.sum(-1).clamp(min=1)  # mean attention per paren key, [n, pos]
        by_length = torch.zeros(p + 1, p).index_add_(0, length, mean) / count[:, None]
        weights += by_length[length][:, :, None] * keys
    weights = weights / weights.sum(-1, keepdim=True).clamp(min=1e-12)
    return (weights * (tokens == paren.OPEN).float()[:, None, :]).sum(-1)


def paren_task(n: int = 2000, seed: int = 0, model=None) -> Task:
    """The paren case study: ``n`` rows from the organism's data distribution, PAD masked out of
    attention as in the organism; loss = BCE at position 0.
    With ``model`` (the organism, its ``probity_meta`` naming the proportion head), also the
    adjusted horizon features of Redwood's hypothesis 3b."""
    from probity.organisms import paren

    tokens = paren.sample(n, seed=10_000 + seed)
    f = paren.features(tokens)
    targets = torch.zeros_like(tokens)
    targets[:, 0] = f["balanced"].long()
    mask = torch.zeros_like(tokens, dtype=torch.bool)
    mask[:, 0] = True
    p = f["open_proportion"]
    fns = {
        "balanced": lambda t: f["balanced"],
        "count_test": lambda t: f["count_test"],
        "horizon_test": lambda t: f["horizon_test"],
        "starts_open": lambda t: f["starts_open"],
        "count_open": lambda t: f["count_test"] & f["starts_open"],
        # the exact proportion of opens when the string starts with an open paren, one class otherwise
        "p_if_starts_open": lambda t: torch.where(f["starts_open"], (p * 2**20).round().long(), -1),
        "open_centered": lambda t: 2 * p - 1,  # what head 0.0 writes at position 1, up to a direction (2b's phi)
        **_horizon_fns(f["open_after"]),
    }
    if model is not None:
        head = model.probity_meta.get("roles", {}).get("proportion", ["0.0"])[0]
        adjusted = adjusted_open_after(model, tokens, head)
        fns |= {name + ADJUSTED: fn for name, fn in _horizon_fns(adjusted).items()}
    features = compute_features(fns, tokens)
    subsets = {
        "balanced": f["balanced"],
        "unbalanced": ~f["balanced"],
        "count_fails": ~f["count_test"],
        "horizon_fails": ~f["horizon_test"],
        "count_passes_horizon_fails": f["count_test"] & ~f["horizon_test"],
        "horizon_passes_count_fails": f["horizon_test"] & ~f["count_test"],
    }
    return Task("paren", tokens, targets, mask, features, subsets, "ce", paren.attention_mask(tokens).bool())


# Suffix of the paren task's features computed from the model's attention (``paren_task(..., model=)``):
# NAME + ADJUSTED is the horizon feature NAME (:func:`_horizon_fns`) with the model's proportion head's
# view of the opens in place of the exact count.
ADJUSTED = "_adjusted"


def _horizon_fns(open_after: torch.Tensor | None) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """The paren task's horizon features from ``open_after`` (per position): each position's horizon
    class, and whether every position passes."""
    return {
        "horizon_class": lambda t: horizon_classes(t, open_after),
        "horizon_all": lambda t: (horizon_classes(t, open_after) >= 0).all(1),
    }


def probe_features(organism: str, seed: int = 0, n: int = 32) -> dict[str, torch.Tensor]:
    """The features the ``organism`` task (``paren`` or ``induction``) offers hypotheses, with their
    shapes, on ``n`` rows and without the model (a model-derived feature is stood in for by the feature it
    adjusts): enough for ``hypothesis.validate`` to check names and shapes before any weights load."""
    if organism == "paren":
        features = paren_task(n, seed).features
        return {**features, **{name + ADJUSTED: features[name] for name in _horizon_fns(None)}}
    if organism == "induction":
        return induction_task(n, seed).features
    raise KeyError(f"unknown organism {organism!r}; choose paren or induction")


def induction_task(n: int = 400, seed: int = 0) -> Task:
    """The induction case study: ``n`` rows of Zipf noise with repeated spans; loss = next-token
    cross-entropy at the candidate positions (predictable by induction)."""
    from probity.organisms import induction

    tokens, cand = induction.sample_with_candidates(n, seed=20_000 + seed)
    targets = torch.zeros_like(tokens)
    targets[:, :-1] = tokens[:, 1:]
    count = cand.sum(1)
    features = compute_features({"token": lambda t: t, "n_candidates": lambda t: count}, tokens)
    median = count.float().median()
    subsets = {"few_candidates": count <= median, "many_candidates": count > median}
    keep = count > 0
    return Task(
        "induction",
        tokens[keep],
        targets[keep],
        cand[keep],
        {k: v[keep] for k, v in features.items()},
        {k: v[keep] for k, v in subsets.items()},
        "ce",
    )


def ordinary_tokens(tokenizer) -> torch.Tensor:
    """The ids ``[n]`` of ``tokenizer``'s ordinary word pieces: not special or added tokens, decoding to
    ASCII letters only (at least 2, after one optional leading space) and encoding back to themselves
    (46,974 of SmolLM2's 49,152; about a second)."""
    special = set(tokenizer.all_special_ids) | set(getattr(tokenizer, "added_tokens_decoder", {}))
    keep = []
    for i in range(len(tokenizer)):
        if i in special:
            continue
        text = tokenizer.decode([i])
        core = text.removeprefix(" ")
        if core.isascii() and core.isalpha() and len(core) >= 2:
            if tokenizer.encode(text, add_special_tokens=False) == [i]:
                keep.append(i)
    return torch.tensor(keep, dtype=torch.long)


def repeat_task(
    vocab, n: int = 64, span: int = 20, seed: int = 0, prefix: int | None = 0, name: str = "repeat"
) -> Task:
    """The induction task for a language model: ``n`` rows ``[prefix] + A + A``, A being ``span`` distinct
    tokens drawn uniformly (without replacement within a row) from ``vocab``; loss = next-token
    cross-entropy at the induction-predictable positions of the repeat (the second copy's A[0..span-2],
    targets A[1..span-1]: ``span - 1`` per row).

    ``vocab``: a tokenizer (drawing from its ``ordinary_tokens``), a model (every id of its vocabulary
    but ``prefix``: for models without a tokenizer) or the ids themselves ``[n_ids]``. ``prefix``: a token
    id put first (default 0, SmolLM2's ``<|endoftext|>``, which makes the first repeated tokens predictable:
    repeat loss 1.99 against 4.10 without it at span 20, 64 rows) or ``None`` for none.
    Features: ``token`` (each position's token) and ``copy`` (0 for the prefix, 1 / 2 in the first /
    second copy), both per position; ``repeat_losses`` reads ``copy`` to score the first half too."""
    if n < 1 or span < 2:
        raise ValueError(f"repeat_task needs n >= 1 and span >= 2, got n={n}, span={span}")
    ids = _vocab_ids(vocab, prefix)
    if len(ids) < span:
        raise ValueError(f"the vocabulary has {len(ids)} ids, fewer than span={span}; use a shorter span")
    g = torch.Generator().manual_seed(30_000 + seed)
    first = ids[torch.stack([torch.randperm(len(ids), generator=g)[:span] for _ in range(n)])]  # [n, span]
    lead = 0 if prefix is None else 1
    tokens = torch.cat([torch.full((n, lead), 0 if prefix is None else prefix), first, first], 1)  # [n, pos]
    targets = torch.zeros_like(tokens)
    targets[:, :-1] = tokens[:, 1:]
    mask = torch.zeros_like(tokens, dtype=torch.bool)
    mask[:, lead + span : lead + 2 * span - 1] = True
    copy = torch.cat([torch.zeros(lead), torch.ones(span), torch.full((span,), 2)]).long().expand(n, -1)
    features = compute_features({"token": lambda t: t, "copy": lambda t: copy.clone()}, tokens)
    return Task(f"{name}(span={span})", tokens, targets, mask, features)


def _vocab_ids(vocab, prefix: int | None) -> torch.Tensor:
    """The ids ``repeat_task`` draws from (see its doc)."""
    if isinstance(vocab, (torch.Tensor, list, tuple)):
        return torch.as_tensor(vocab, dtype=torch.long)
    if hasattr(vocab, "all_special_ids"):
        return ordinary_tokens(vocab)
    size = getattr(getattr(vocab, "config", None), "vocab_size", None) or getattr(
        getattr(vocab, "cfg", None), "d_vocab", None
    )
    if size is None:
        raise TypeError(f"repeat_task needs a tokenizer, a model or a list of ids, got {type(vocab).__name__}")
    ids = torch.arange(size)
    return ids[ids != prefix] if prefix is not None else ids


@dataclass
class RepeatLosses:
    """The model's next-token loss on a ``repeat_task``: the first copy (unpredictable) against the
    repeat (predictable by induction), each the mean over rows of the row's mean, with its stderr."""

    first: float
    first_stderr: float
    repeat: float
    repeat_stderr: float


@torch.no_grad()
def repeat_losses(model, task: Task, batch_size: int = 16) -> RepeatLosses:
    """``RepeatLosses`` of ``model`` (an HF causal LM, or anything ``Decomposed`` takes) on ``task``
    (a ``repeat_task``): the loss positions, and the same positions of the first copy."""
    from probity.scrub.model import Decomposed

    span = int((task.features["copy"][0] == 1).sum())
    first_mask = task.loss_mask.roll(-span, 1)  # [n, pos]: the first copy's A[0..span-2]
    rows = torch.arange(len(task.tokens))
    per_row = {"first": [], "repeat": []}
    hf = not isinstance(model, Decomposed) and hasattr(model, "config") and callable(model)
    d = None if hf or isinstance(model, Decomposed) else Decomposed(model)
    for chunk in rows.split(batch_size):
        if hf:
            logits = model(task.tokens[chunk].to(next(model.parameters()).device)).logits  # [batch, pos, vocab]
        else:
            logits = (d or model).run(task.tokens[chunk], keep=set())[0]
        targets = task.targets[chunk].to(logits.device)
        nll = -logits.float().log_softmax(-1).gather(-1, targets[..., None])[..., 0].cpu()  # [batch, pos]
        for key, mask in (("first", first_mask[chunk]), ("repeat", task.loss_mask[chunk])):
            per_row[key].append((nll * mask).sum(1) / mask.sum(1))
    first, repeat = torch.cat(per_row["first"]), torch.cat(per_row["repeat"])
    n = len(rows)
    return RepeatLosses(
        float(first.mean()),
        float(first.std() / n**0.5) if n > 1 else 0.0,
        float(repeat.mean()),
        float(repeat.std() / n**0.5) if n > 1 else 0.0,
    )


# The IOI prompts (Wang et al. 2022) ``ioi_task`` builds: "{opener} {A} and {B} {went to the} {place}, {S}
# {gave} a {thing} to" -> " {IO}", every part one token with a leading space (SmolLM2's tokenizer), so every
# row has 14 tokens with the names at the same positions: A at 1, B at 3, S2 at 9, the loss at 13.
IOI_NAMES = ("Mary", "John", "Tom", "Anna", "Paul", "Sarah", "David", "Lisa", "Alice", "Kate", "Mark", "Emma")
IOI_OPENERS = ("When", "After", "Once")
IOI_MOTIONS = ("went to the", "walked to the", "arrived at the", "got to the")
IOI_VERBS = ("gave", "handed")
IOI_PLACES = ("store", "park", "school", "hospital", "restaurant", "office", "station", "garden")
IOI_THINGS = ("drink", "book", "ring", "bone", "kiss", "basketball", "snack", "necklace")
IOI_POSITIONS = {"A": 1, "B": 3, "S2": 9, "END": 13}


def ioi_task(tokenizer, n: int = 128, seed: int = 0, names: tuple[str, ...] = IOI_NAMES) -> Task:
    """Indirect-object identification for a language model: ``n`` raw-text prompts (no BOS) "When Mary and
    John went to the store, John gave a drink to" with target " Mary" (the indirect object, IO); loss =
    cross-entropy of IO at the last position. Rows alternate ABBA (IO first: "Mary and John ... John") and
    BABA ("John and Mary ... John"); the two names are drawn without replacement from ``names``, the
    opener, motion, verb, place and object uniformly, with ``seed``.

    Every row is 14 tokens with the names at fixed positions (``IOI_POSITIONS``), so positions line up
    across rows. Features (per row): ``io`` and ``s`` (the IO's and the subject's token id), ``order``
    (0 ABBA, 1 BABA: where IO stands), ``io_order`` (both), ``template`` (opener, motion and verb), and
    per position ``token``. Subsets ``ABBA`` and ``BABA``. A one-line ``ValueError`` if a part is not
    one token for ``tokenizer`` or ``names`` has fewer than 2 names."""
    if n < 1:
        raise ValueError(f"ioi_task needs n >= 1, got {n}")
    names = tuple(dict.fromkeys(names))  # a repeated name would let a row's indirect object be its subject
    if len(names) < 2:
        raise ValueError(f"ioi_task needs at least 2 distinct names, got {names!r}")

    def one(word: str) -> int:
        ids = tokenizer.encode(word, add_special_tokens=False)
        if len(ids) != 1:
            raise ValueError(f"ioi_task: {word!r} is {len(ids)} tokens for this tokenizer; pass one-token names")
        return ids[0]

    name_ids = [one(" " + w) for w in names]
    openers = [one(w) for w in IOI_OPENERS]
    motions = [[one(" " + w) for w in m.split()] for m in IOI_MOTIONS]
    verbs, places, things = ([one(" " + w) for w in ws] for ws in (IOI_VERBS, IOI_PLACES, IOI_THINGS))
    comma, space_and, space_a, space_to = one(","), one(" and"), one(" a"), one(" to")
    g = torch.Generator().manual_seed(40_000 + seed)

    def draw(k: int) -> int:
        return int(torch.randint(k, (1,), generator=g))

    rows, io, s, template = [], [], [], []
    for i in range(n):
        pick = torch.randperm(len(name_ids), generator=g)[:2]
        a, b = name_ids[int(pick[0])], name_ids[int(pick[1])]  # a is the indirect object, b the subject
        first, second = (a, b) if i % 2 == 0 else (b, a)
        o, m, v = draw(len(openers)), draw(len(motions)), draw(len(verbs))
        place, thing = places[draw(len(places))], things[draw(len(things))]
        rows.append(
            [openers[o], first, space_and, second, *motions[m], place, comma, b, verbs[v], space_a, thing, space_to]
        )
        io.append(a)
        s.append(b)
        template.append((o * len(motions) + m) * len(verbs) + v)
    tokens = torch.tensor(rows)  # [n, pos]
    end = IOI_POSITIONS["END"]
    targets = torch.zeros_like(tokens)
    targets[:, end] = torch.tensor(io)
    mask = torch.zeros_like(tokens, dtype=torch.bool)
    mask[:, end] = True
    order = torch.arange(n) % 2  # [n]: 0 ABBA, 1 BABA
    io_t = torch.tensor(io)
    per_row = {
        "io": io_t,
        "s": torch.tensor(s),
        "order": order,
        "io_order": io_t * 2 + order,
        "template": torch.tensor(template),
    }
    features = compute_features({"token": lambda t: t, **{k: (lambda t, v=v: v) for k, v in per_row.items()}}, tokens)
    return Task("ioi", tokens, targets, mask, features, {"ABBA": order == 0, "BABA": order == 1})
