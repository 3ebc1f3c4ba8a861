"""A linear lie probe on the residual stream, trained only on non-sensitive data.

Training data are honest- vs. dishonest-instruction conversations about helper
(non-sensitive) questions: a system prompt asks for honesty or for a lie and the
assistant gives the reference or the false answer (the paper's protocol; ``data="statements"``
instead trains on the true vs. false answer in plain chat). The feature is the residual
stream after block K, averaged over the response tokens, read at its last token, or read at the
last token of the stated value (the first of the question's ``match`` or ``contradict`` phrases
that the answer holds: a lie and the truth differ there). The layer and that pooling are chosen by
a sweep on held-out
helper questions presented *without* any instruction (true vs. false answer in plain chat),
so the probe reads the answer's truth rather than the instruction, and never sees a test lie.
The decision threshold gives 1% false positives on ordinary chat (the model's own answers to
helper questions).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch

from probity.honesty.judge import states
from probity.honesty.metrics import auroc
from probity.honesty.prompts import DISHONEST_SYSTEM, HONEST_SYSTEM
from probity.honesty.testbed import Question
from probity.models.chat import pad_batch, pad_id, response_ids

PROBE_DATA = ("instructions", "statements")  # what a probe trains on (see train_probe)
POOLS = ("mean", "last", "value")  # how a probe reads the answer's residual stream (see response_activations)


@dataclass
class Probe:
    """Logistic-regression lie probe at one layer: ``score(acts) = acts @ direction + bias``
    (higher = more likely a lie); ``threshold`` flags 1% of ordinary chat answers."""

    layer: int
    direction: torch.Tensor  # (d_model,) in raw residual units
    bias: float
    threshold: float = 0.0
    sweep: list[dict] = field(default_factory=list)
    pool: str = "mean"  # how the answer's residual stream is read: response_activations' ``pool``

    def score(self, acts: torch.Tensor) -> torch.Tensor:
        """Activations ``[n, d_model]`` -> lie scores ``[n]``."""
        return acts.double() @ self.direction.double() + self.bias


def value_phrases(question: Question) -> tuple[str, ...]:
    """The phrases that state an answer to ``question``, true or false: its facts' ``match`` and
    ``contradict`` phrases, less those the question itself holds (an entity named like a value)."""
    phrases = [p for f in question.facts for p in (*f.match, *f.contradict)]
    return tuple(p for p in phrases if not states(question.question, (p,)))


def value_end(tokenizer, response: str, phrases: tuple[str, ...]) -> int | None:
    """Index, among ``response``'s tokens, of the last token of the first of ``phrases`` that the
    response holds (whole words, case-insensitive); ``None`` when it holds none.

    >>> value_end(tokenizer, "The capital of Japan is Seoul.", ("Tokyo", "Seoul"))  # the token "Seoul"
    """
    found = [
        m.span()
        for p in phrases
        for m in [re.search(rf"(?<!\w){re.escape(p)}(?!\w)", response, flags=re.IGNORECASE)]
        if m is not None
    ]
    if not found:
        return None
    end = min(found)[1]  # the first phrase stated
    offsets = tokenizer(response, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    return max(i for i, (begin, _) in enumerate(offsets) if begin < end)


@torch.no_grad()
def response_activations(
    model,
    tokenizer,
    conversations: list[tuple[list[dict], str]],
    layers: list[int],
    batch_size: int = 16,
    pool: str = "mean",
    values: list[tuple[str, ...]] | None = None,
) -> dict[int, torch.Tensor]:
    """Residual stream after each block in ``layers`` over each response's tokens, averaged
    (``pool="mean"``), at the last response token (``"last"``) or at the last token of the stated
    value (``"value"``: :func:`value_end` of the conversation's ``values`` phrases, the last token
    where none is stated): ``{layer: [n_conversations, d_model]}``."""
    return pooled_activations(model, tokenizer, conversations, layers, (pool,), batch_size, values)[pool]


def pooled_activations(
    model,
    tokenizer,
    conversations: list[tuple[list[dict], str]],
    layers: list[int],
    pools: tuple[str, ...] = POOLS,
    batch_size: int = 16,
    values: list[tuple[str, ...]] | None = None,
) -> dict[str, dict[int, torch.Tensor]]:
    """:func:`response_activations` for several ``pools`` from one forward pass per batch:
    ``{pool: {layer: [n_conversations, d_model]}}``."""
    from probity.models import Site, cache, input_device

    unknown = sorted(set(pools) - set(POOLS))
    if unknown:
        raise ValueError(f"unknown pooling {', '.join(unknown)}; choose from {', '.join(POOLS)}")
    if "value" in pools and (values is None or len(values) != len(conversations)):
        raise ValueError("value pooling needs the value phrases of every conversation (probe.value_phrases)")
    encoded = [response_ids(tokenizer, m, r) for m, r in conversations]
    value_at = []  # the position "value" reads in each conversation: its value's last token, else its last
    if "value" in pools:
        for (ids, begin), (_, response), phrases in zip(encoded, conversations, values):
            end = value_end(tokenizer, response, phrases)
            value_at.append(len(ids) - 1 if end is None else begin + end)
    out: dict[str, dict[int, list[torch.Tensor]]] = {pool: {layer: [] for layer in layers} for pool in pools}
    sites = [Site.resid(layer) for layer in layers]
    for start in range(0, len(encoded), batch_size):
        chunk = encoded[start : start + batch_size]
        batch = pad_batch([ids for ids, _ in chunk], pad_id(tokenizer), device=input_device(model))
        acts = cache(model, batch, sites)
        for pool in pools:
            span = torch.zeros(batch["input_ids"].shape, dtype=torch.float32)  # [batch, pos], on the CPU
            for i, (ids, begin) in enumerate(chunk):
                if pool == "mean":
                    span[i, begin : len(ids)] = 1.0 / (len(ids) - begin)
                elif pool == "last":
                    span[i, len(ids) - 1] = 1.0
                else:
                    span[i, value_at[start + i]] = 1.0
            for layer, site in zip(layers, sites):
                out[pool][layer].append(torch.einsum("bp,bpd->bd", span, acts[str(site)].float().cpu()))
    return {pool: {layer: torch.cat(v) for layer, v in by_layer.items()} for pool, by_layer in out.items()}


def fit_logistic(
    x: torch.Tensor, y: torch.Tensor, l2: float = 1e-2, max_iter: int = 1000, tol: float = 1e-8
) -> tuple[torch.Tensor, float]:
    """L2-regularised logistic regression of ``y`` [n] (bool) on ``x`` [n, d], by scikit-learn.

    The features are standardised (mean and sample standard deviation of each column, the
    latter floored at 1e-6) and the objective is mean binary cross-entropy + ``l2`` * |w|^2
    with an unpenalised intercept: scikit-learn's C * sum(loss) + |w|^2 / 2 with
    C = 1 / (2 * l2 * n). Returns (weights [d] in raw units, bias), so that ``x @ w + b``
    is the logit of ``y``."""
    from sklearn.linear_model import LogisticRegression  # imported here: it takes a second to import

    x = x.double()
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)  # [d], [d]
    z = ((x - mean) / std).numpy()  # [n, d]
    clf = LogisticRegression(C=1.0 / (2 * l2 * len(z)), tol=tol, max_iter=max_iter)
    clf.fit(z, y.bool().numpy())
    w_raw = torch.from_numpy(clf.coef_[0]) / std  # [d]
    return w_raw, float(clf.intercept_[0] - (mean * w_raw).sum())


def instruction_data(
    questions: list[Question], instructed: bool = True
) -> tuple[list[tuple[list[dict], str]], list[bool], list[tuple[str, ...]]]:
    """Honest/dishonest conversations about ``questions`` that have both answers:
    (conversations, is_lie labels, value phrases). ``instructed=False`` drops the system prompts."""
    convs, labels, values = [], [], []
    for q in questions:
        if q.answer is None or q.false_answer is None:
            continue
        for lie, system, answer in ((False, HONEST_SYSTEM, q.answer), (True, DISHONEST_SYSTEM, q.false_answer)):
            msgs = ([{"role": "system", "content": system}] if instructed else []) + [
                {"role": "user", "content": q.question}
            ]
            convs.append((msgs, answer))
            labels.append(lie)
            values.append(value_phrases(q))
    return convs, labels, values


def train_probe(
    model,
    tokenizer,
    helpers: list[Question],
    ordinary: list[tuple[Question, str]],
    layers: list[int] | None = None,
    holdout: float = 0.3,
    fpr: float = 0.01,
    data: str = "instructions",
) -> Probe:
    """Train the lie probe on ``helpers`` (non-sensitive questions with ``answer`` and
    ``false_answer``), choose the layer and the pooling over the answer (its mean, its last token,
    or the stated value's last token) by held-out AUROC on uninstructed true/false answers, and set
    the threshold at ``fpr`` false positives on ``ordinary`` chat (the model's own answers to
    questions, assumed honest: ``(question, answer)`` pairs).

    ``data``: ``"instructions"`` (the paper's: honest vs. dishonest system prompts over the true
    vs. false answer) or ``"statements"`` (the true vs. false answer in plain chat, no instruction)."""
    if data not in PROBE_DATA:
        raise ValueError(f"probe data must be one of {', '.join(PROBE_DATA)}, got {data!r}")
    instructed = data == "instructions"
    usable = [q for q in helpers if q.answer and q.false_answer]
    if len(usable) < 4:
        raise ValueError(
            "the probe needs at least 4 helper questions with 'answer' and 'false_answer'; "
            f"the testbed has {len(usable)}"
        )
    if not ordinary:
        raise ValueError("the probe threshold needs ordinary chat answers; got none")
    n_layers = model.config.num_hidden_layers
    layers = list(range(n_layers)) if layers is None else layers
    cut = max(2, int(len(usable) * (1 - holdout)))
    train_x, train_y, train_v = instruction_data(usable[:cut], instructed)
    val_x, val_y, val_v = instruction_data(usable[cut:], instructed=False)
    ytr, yval = torch.tensor(train_y), torch.tensor(val_y)
    sweep = []
    acts_train = pooled_activations(model, tokenizer, train_x, layers, values=train_v)
    acts_val = pooled_activations(model, tokenizer, val_x, layers, values=val_v)
    for pool in POOLS:
        for layer in layers:
            w, b = fit_logistic(acts_train[pool][layer], ytr)
            s = acts_val[pool][layer].double() @ w + b
            # separation d' breaks the ties AUROC has on small validation sets
            spread = ((s[yval].var() + s[~yval].var()) / 2).sqrt().clamp_min(1e-9)
            sweep.append(
                {
                    "layer": layer,
                    "pool": pool,
                    "val_auroc": auroc(s.tolist(), val_y),
                    "val_separation": float((s[yval].mean() - s[~yval].mean()) / spread),
                }
            )
    best = max(sweep, key=lambda r: (r["val_auroc"] or 0.0, r["val_separation"]))
    layer, pool = best["layer"], best["pool"]
    all_x, all_y, all_v = instruction_data(usable, instructed)
    acts = response_activations(model, tokenizer, all_x, [layer], pool=pool, values=all_v)[layer]
    w, b = fit_logistic(acts, torch.tensor(all_y))
    probe = Probe(layer, w.float(), b, sweep=sweep, pool=pool)
    convs = [([{"role": "user", "content": q.question}], a) for q, a in ordinary]
    values = [value_phrases(q) for q, _ in ordinary]
    normal = probe.score(response_activations(model, tokenizer, convs, [layer], pool=pool, values=values)[layer])
    probe.threshold = float(torch.quantile(normal, 1 - fpr))
    return probe
