"""Scrubbing a language model by name: its task, the heads found in it and the hypotheses built on them,
as ``bench/scrub.py`` sets up the SmolLM2 studies (``--smollm2``, ``--smollm2-ioi``, ``--smollm2-refine``) and
``probity scrub run|list|refine --model`` runs them on any supported HF decoder.

One study, in order::

    check_device("cuda"); check_model(name)          # the device and the model's config, no weights
    task  = lm_task("induction", tokenizer, n, seed)   # repeat_task (span 20) or ioi_task
    d     = Decomposed(model)                          # the weights, on any device (or across several)
    roles = score_heads(d, "induction", task)          # every head's score for each role, best first
    hyps  = builtins("induction", roles, 0.5)          # identity, empty and the study on heads >= 0.5
    refine(d, task, hyps[TASKS["induction"].start], refine_config("induction", roles, 0.5, d))

The study hypotheses: for ``induction`` the floor and the paper's four (``library.induction_lm``) and
``keep-only`` of the found heads; for ``ioi`` ``library.ioi_lm`` and the two keep-only rows
(``ioi.ioi_hypotheses``). New paths in refinement come from the heads scoring at least
:data:`SENDER_THRESHOLD` (previous-token heads: the study's threshold) and the MLPs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from probity.models.load import DEVICE
from probity.models.sites import Site
from probity.scrub.heads import HeadScores, find_heads, find_ioi_heads
from probity.scrub.hypothesis import Hypothesis
from probity.scrub.ioi import ioi_hypotheses
from probity.scrub.library import induction_lm, keep_only
from probity.scrub.model import Decomposed, _HFBackend, layer_and_head, shorthand
from probity.scrub.refine import RefineConfig
from probity.scrub.run import EMPTY, IDENTITY
from probity.scrub.task import Task, ioi_task, ordinary_tokens, repeat_task


@dataclass(frozen=True)
class LMTask:
    """A language-model study's settings, the bench's: rows, forward chunk, refinement's start, the
    features its edits may assign and its steps at most."""

    samples: int
    batch_size: int
    start: str
    features: tuple[str, ...]
    max_steps: int


TASKS = {
    "induction": LMTask(64, 16, "all-three", ("token", "copy"), 3),
    "ioi": LMTask(128, 32, "keep-only name movers", ("io", "s", "order"), 4),
}
SPAN = 20  # tokens repeated in each induction row (the bench's)
THRESHOLD = 0.5  # head score the study's hypotheses are built on (the bench's)
SENDER_THRESHOLD = 0.3  # head score a new path in refinement may come from (previous-token heads: the study's)
# Fewest rows. A row's fully scrubbed loss equals the model's only when the row draws itself as its random
# input (chance 1/n), and a bootstrap resample of only such rows makes the loss recovered's stderr 0/0, nan:
# on 4 IOI rows of SmolLM2 it did; from 10 rows such a resample is rare (with one such row, 1 in 10^10).
MIN_SAMPLES = 10
# the roles each study's hypotheses need a head in
ROLES = {"induction": ("induction", "previous_token"), "ioi": ("name_mover", "s_inhibition")}
# heads of every role, standing in for found ones where only the hypotheses' names are needed
STAND_IN = {
    "induction": {"induction": ["1.0"], "previous_token": ["0.0"]},
    "ioi": {"name_mover": ["1.0"], "s_inhibition": ["0.0"], "duplicate_token": [], "induction": []},
}


def check_device(device: str) -> None:
    """A one-line ``ValueError`` unless ``device`` is ``cpu``, ``auto``, ``cuda`` or ``cuda:N`` and present here."""
    if not DEVICE.fullmatch(device):
        raise ValueError(f"unknown device {device!r}; use cpu, cuda, cuda:N or auto")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("no CUDA device here; use --device cpu")
    gpus = torch.cuda.device_count()
    if device.startswith("cuda:") and int(device.partition(":")[2]) >= gpus:
        raise ValueError(f"{device}: this machine has {gpus} CUDA GPU(s), cuda:0 to cuda:{gpus - 1}")


def check_model(name: str) -> None:
    """A one-line ``ValueError`` (or ``FileNotFoundError``) unless ``probity.models.load`` loads ``name`` and
    its config (read without the weights) is a decoder scrub decomposes."""
    from probity.models.load import config

    kind = getattr(config(name), "model_type", None)
    if kind not in _HFBackend.SUPPORTED:
        raise ValueError(
            f"{name}: scrub decomposes HF {'/'.join(_HFBackend.SUPPORTED)} decoders, not "
            f"{'this model' if kind is None else repr(kind)}; a paren or induction organism takes --organism"
        )


def lm_task(task: str, tokenizer, n: int, seed: int = 0) -> Task:
    """``n`` rows of the study ``task`` for ``tokenizer``: ``repeat_task`` (span :data:`SPAN`, drawn from the
    tokenizer's ``ordinary_tokens``) or ``ioi_task``; a one-line ``ValueError`` when the tokenizer cannot
    write them."""
    if task == "ioi":
        return ioi_task(tokenizer, n, seed)
    ids = ordinary_tokens(tokenizer)
    if len(ids) < SPAN:
        raise ValueError(
            f"the tokenizer has {len(ids)} ordinary word pieces (ASCII letters), fewer than the {SPAN} distinct "
            "ones an induction row repeats; use another model"
        )
    return repeat_task(ids, n=n, span=SPAN, seed=seed)


def score_heads(model, task: str, rows: Task, batch_size: int = 16) -> dict[str, HeadScores]:
    """Every head's score for each role of ``task`` on all ``rows``, best first (threshold 0; ``chosen``
    picks a threshold's): induction and previous-token heads (``find_heads``), or the IOI roles
    (``find_ioi_heads``)."""
    n = len(rows.tokens)
    if task == "ioi":
        return find_ioi_heads(model, rows, 0.0, rows=n, batch_size=batch_size)
    common = dict(threshold=0.0, rows=n, batch_size=batch_size)
    return {
        "induction": find_heads(model, rows, "induction", **common),
        "previous_token": find_heads(model, rows, "previous_token", queries="all", **common),
    }


def chosen(found: HeadScores, threshold: float) -> list[tuple[Site, float]]:
    """The heads of ``found`` scoring at least ``threshold`` with their scores, best first."""
    return [(h, s) for h, s in zip(found.heads, found.head_scores) if s >= threshold]


def _study(task: str, heads: dict[str, list]) -> dict[str, Hypothesis]:
    """The study hypotheses of ``task`` on ``heads`` (role -> heads). A head named both an induction and a
    previous-token head is an induction head here (its keys cannot be read from itself)."""
    if task == "ioi":
        return ioi_hypotheses(heads)
    ind, prev = heads["induction"], heads["previous_token"]
    return {
        **induction_lm([h for h in prev if h not in ind], ind),
        "keep-only": keep_only(list(dict.fromkeys(ind + prev))),
    }


def names(task: str) -> list[str]:
    """The names of ``task``'s built-in hypotheses (``builtins``), known before any model loads."""
    return ["identity", "empty", *_study(task, STAND_IN[task])]


def builtins(task: str, roles: dict[str, HeadScores], threshold: float = THRESHOLD) -> dict[str, Hypothesis]:
    """``identity``, ``empty`` and ``task``'s study on the heads of ``roles`` (``score_heads``) scoring at
    least ``threshold``; a one-line ``ValueError`` when a role the study needs has none."""
    for role in ROLES[task]:
        if not chosen(roles[role], threshold):
            best, score = roles[role].heads[0], roles[role].head_scores[0]
            raise ValueError(
                f"no {role.replace('_', '-')} head scores >= {threshold:g} on this model (the best, "
                f"{shorthand(best)}, scores {score:.2f}); lower the threshold or give a hypothesis file"
            )
    heads = {role: [shorthand(h) for h, _ in chosen(found, threshold)] for role, found in roles.items()}
    return {"identity": IDENTITY, "empty": EMPTY, **_study(task, heads)}


def senders(task: str, roles: dict[str, HeadScores], threshold: float, n_layers: int) -> list[str]:
    """Where refinement's new paths may come from (the bench's): for ``induction`` the induction heads
    scoring at least ``min(threshold, SENDER_THRESHOLD)``, the previous-token heads at least ``threshold``
    and the MLPs below the top one of them (every MLP when no head scores); for ``ioi`` the heads scoring at
    least ``min(threshold, SENDER_THRESHOLD)`` in any role and every MLP."""
    low = min(threshold, SENDER_THRESHOLD)
    if task == "ioi":
        pool = [h for found in roles.values() for h, _ in chosen(found, low)]
        top = n_layers
    else:
        pool = [h for h, _ in chosen(roles["induction"], low) + chosen(roles["previous_token"], threshold)]
        top = max((layer_and_head(h)[0] for h in pool), default=n_layers)
    return [*dict.fromkeys(map(shorthand, pool)), *(f"mlp{layer}" for layer in range(top))]


def refine_config(task: str, roles: dict[str, HeadScores], threshold: float, model: Decomposed, **settings):
    """:class:`RefineConfig` for ``task`` on ``model`` as the bench refines it: new paths only from ``senders``,
    edits on the study's features, its steps at most unless ``settings`` (any other field) say otherwise."""
    study = TASKS[task]
    defaults = dict(features=list(study.features), max_steps=study.max_steps)
    return RefineConfig(senders=senders(task, roles, threshold, model.n_layers), **(defaults | settings))


def heads_table(roles: dict[str, HeadScores], threshold: float) -> dict[str, list]:
    """Role -> ``[[head, score], ...]`` scoring at least ``threshold``, best first (for reports and JSON)."""
    return {role: [[shorthand(h), round(s, 4)] for h, s in chosen(found, threshold)] for role, found in roles.items()}
