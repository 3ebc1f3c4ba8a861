"""Indirect-object identification on a real language model: Wang et al.'s (2022) circuit roles found by
attention, then tested by causal scrubbing (issue 15, item 2).

The study, in order::

    task  = ioi_task(tokenizer, n, seed)                 # "When Mary and John went ..., John gave a drink to"
    roles = find_ioi_heads(model, task, threshold)       # name movers, S-inhibition, duplicate-token, induction
    for H in ioi_lm(roles.name_movers, roles.s_inhibition) + keep-only(name movers) + keep-only(circuit):
        L_H = Scrubber(model, task, seed).losses(H)      # one clean cache, one seed
        recovered(H)  = (L_all - L_H) / (L_all - L_model)           # Chan et al.'s loss recovered
        floor_share(H) = (L_floor - L_H) / (L_floor - L_model)      # the same against H's own floor

Each ``ioi_lm`` hypothesis keeps everything outside the name movers exact, so against L_all (every
input random) it recovers nearly everything; the informative number is the share of the gap between
the model and the hypothesis's floor (``nm-q-random`` for the query claims, ``nm=none`` for the output
claim) that it closes. The ``keep-only`` rows are the share of the behaviour the named heads carry.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from probity.report import Claim, result_type, verdict
from probity.scrub.heads import find_ioi_heads
from probity.scrub.library import ioi_lm, keep_only
from probity.scrub.model import Decomposed, layer_and_head
from probity.scrub.run import (
    EMPTY,
    IDENTITY,
    Scrubber,
    bootstrap_stderr,
    cancellation,
    constant_claim,
    recovered,
    resampled_means,
)
from probity.scrub.task import IOI_POSITIONS, ioi_task

FLOORS = {"nm-q<-SI": "nm-q-random", "SI=order": "nm-q-random", "SI=s": "nm-q-random", "nm=io": "nm=none"}


@dataclass
class IOIRow:
    """One hypothesis of the IOI study: loss recovered against L_all and against its floor (``floor``:
    the hypothesis it is measured against; empty for floors and keep-only rows)."""

    hypothesis: str
    description: str
    loss_recovered: float
    stderr: float
    loss_hypothesis: float
    floor: str
    floor_share: float | None
    floor_share_stderr: float | None
    worse_than_constant: bool
    cancellation_suspected: bool


@result_type("scrub.IOIStudy")
@dataclass
class IOIStudy:
    """The IOI study of one model (module doc)."""

    model: str
    n: int
    seed: int
    threshold: float
    loss_model: float
    accuracy: float  # the IO's logit beats the subject's
    logit_diff: float  # mean logit(IO) - logit(S) at END
    constant_loss: float
    loss_scrubbed_all: float
    signal_gap_stderr: float  # of SI=order's floor share minus SI=s's, both bootstrapped on the same rows
    heads: dict  # role -> [[head, score], ...] scoring >= threshold, best first
    rows: list[IOIRow]
    report_titles = {"rows": "Loss recovered by hypothesis"}

    def row(self, name: str) -> IOIRow:
        """The row of hypothesis ``name``."""
        return next(r for r in self.rows if r.hypothesis == name)

    def headline(self) -> list[Claim]:
        """What the name movers' queries read (Wang et al.: where S stands, not who S is), how much of
        the behaviour the name movers alone carry, and the constant-predictor check."""
        order, name, query = self.row("SI=order"), self.row("SI=s"), self.row("nm-q<-SI")
        movers = self.row("keep-only name movers")
        q_se = query.floor_share_stderr
        gap, se = order.floor_share - name.floor_share, self.signal_gap_stderr
        passing = sum(not (r.worse_than_constant or r.cancellation_suspected) for r in self.rows)
        label = f"{self.model} IOI"
        return [
            Claim(
                f"{label}: name movers' queries, share of the floor gap the S-inhibition heads close",
                query.floor_share,
                (query.floor_share - 1.96 * q_se, query.floor_share + 1.96 * q_se),
            ),
            Claim(
                f"{label}: S-inhibition heads on the same name order minus on the same subject (floor share)",
                gap,
                (gap - 1.96 * se, gap + 1.96 * se),
                reference="position signal > token signal",
                source="Wang et al. 2022 (GPT-2 small)",
                target="> 0 beyond 1.96 stderr",
                verdict=verdict(gap > 1.96 * se),
            ),
            Claim(
                f"{label}: loss recovered when only the name movers carry the prompt",
                movers.loss_recovered,
                (movers.loss_recovered - 1.96 * movers.stderr, movers.loss_recovered + 1.96 * movers.stderr),
            ),
            constant_claim(
                f"{label}: name movers alone vs a constant predictor",
                movers.loss_hypothesis,
                self.constant_loss,
                movers.worse_than_constant,
            ),
            Claim(
                f"{label}: hypotheses beating constant, no cancellation",
                f"{passing} of {len(self.rows)}",
                target=f"{len(self.rows)} of {len(self.rows)}",
                verdict=verdict(passing == len(self.rows)),
            ),
        ]


def ioi_hypotheses(heads: dict) -> dict:
    """The study's hypotheses for ``heads`` (role -> heads, e.g. the ``heads`` of each ``find_ioi_heads``
    result): ``ioi_lm`` on the name movers and S-inhibition heads, and ``keep_only`` of the name movers and
    of every head named."""
    movers, inhibition = heads["name_mover"], heads["s_inhibition"]
    circuit = list(dict.fromkeys(h for found in heads.values() for h in found))
    return {
        **ioi_lm(movers, inhibition),
        "keep-only name movers": keep_only(movers, "keep-only name movers"),
        "keep-only circuit": keep_only(circuit, "keep-only circuit"),
    }


def gap_stderr(l_model, l_floor, l_a, l_b, samples: int = 1000, seed: int = 0) -> float:
    """Standard error of the difference of two floor shares, (L_floor - L_a) / (L_floor - L_model) minus the
    same for ``l_b`` (per-example losses ``[n]``, one floor), resampling the same reference examples for both."""
    m, f, a, b = resampled_means(l_model, l_floor, l_a, l_b, samples=samples, seed=seed)
    return float(((b - a) / (f - m)).std())


@torch.no_grad()
def ioi_study(
    model,
    tokenizer,
    name: str = "model",
    n: int = 128,
    seed: int = 0,
    threshold: float = 0.5,
    batch_size: int = 32,
    progress=None,
) -> IOIStudy:
    """The IOI study (module doc) of ``model`` (an HF causal LM or anything ``Decomposed`` takes) on ``n``
    prompts from ``ioi_task(tokenizer, n, seed)``, heads scoring >= ``threshold`` in each role (scored on
    every row), one ``Scrubber`` with ``seed``; ``progress(name)`` after each hypothesis. ``name`` labels
    the model in the report."""
    task = ioi_task(tokenizer, n, seed)
    d = model if isinstance(model, Decomposed) else Decomposed(model)
    roles = find_ioi_heads(d, task, threshold, rows=n, batch_size=batch_size)
    hyps = ioi_hypotheses({role: found.heads for role, found in roles.items()})
    s = Scrubber(d, task, seed=seed, batch_size=batch_size)
    l_model, _, clean = s.losses(IDENTITY, keep=True)  # [n]
    l_all = s.losses(EMPTY)[0]
    per_example = {}
    rows = []
    for key, hyp in hyps.items():
        per_example[key], kl, _ = s.losses(hyp, clean)
        floor = FLOORS.get(key, "")
        share = se = None
        if floor:
            share = recovered(l_model, per_example[floor], per_example[key])
            se = bootstrap_stderr(l_model, per_example[floor], per_example[key], seed=seed)
        c = cancellation(l_model, l_all, per_example[key], kl, task.constant_loss())
        rows.append(
            IOIRow(
                key,
                hyp.description,
                recovered(l_model, l_all, per_example[key]),
                bootstrap_stderr(l_model, l_all, per_example[key], seed=seed),
                float(per_example[key].mean()),
                floor,
                share,
                se,
                c.worse_than_constant,
                c.cancellation_suspected,
            )
        )
        if progress is not None:
            progress(key)
    end, at = IOI_POSITIONS["END"], torch.arange(n)
    logits = torch.cat([d.run(task.tokens[c], keep=set())[0][:, end].cpu() for c in at.split(batch_size)])  # [n, vocab]
    diff = logits[at, task.features["io"]] - logits[at, task.features["s"]]  # [n]
    heads = {
        role: [[f"{layer_and_head(h)[0]}.{h.head}", round(v, 4)] for h, v in zip(found.heads, found.head_scores)]
        for role, found in roles.items()
    }
    return IOIStudy(
        name,
        n,
        seed,
        threshold,
        float(l_model.mean()),
        float((diff > 0).float().mean()),
        float(diff.mean()),
        task.constant_loss(),
        float(l_all.mean()),
        gap_stderr(l_model, *(per_example[k] for k in ("nm-q-random", "SI=order", "SI=s")), seed=seed),
        heads,
        rows,
    )
