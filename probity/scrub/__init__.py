"""Causal scrubbing (Chan et al., Redwood Research 2022) on TransformerLens models.

Public API::

    Hypothesis, Node, load_hypothesis(path)      # hypotheses as data (Python, YAML, JSON)
    Task, paren_task(n, seed, model), induction_task(n, seed)
    repeat_task(tokenizer, n, span, seed), repeat_losses(model, task)   # induction on a real LM
    induction_lm(prev, ind), keep_only(heads)    # its hypotheses, for heads from find_heads
    ioi_task(tokenizer, n, seed), find_ioi_heads(model, task), ioi_lm(name_movers, s_inhibition)  # IOI
    scrub(model, task, hypothesis, seed, replicates=0) -> ScrubResult   # stderr; stderr_experiment
    Scrubber(model, task, seed)                  # shares one clean cache across hypotheses
    builtin(organism, meta) -> {name: Hypothesis}
    case_study(organism, roles=None) -> CaseStudy   # all built-ins, ours beside the paper
    reference_logits(model, hypothesis, task, seed) # the paper's recursion, plain (reference.py)
    refine(model, task, hypothesis, RefineConfig()) -> RefineResult   # greedy search, trajectory + final
    find_heads(model, task, kind="induction"|"previous_token"|"duplicate_token"|"copy", threshold, top_k,
               queries="loss"|"all"|mask, keys=None) -> HeadScores  # heads as Sites

Sites are ``probity.models.Site`` objects or strings ``Site.parse`` reads (``1.0``, ``mlp2``, ``embed``).
"""

from probity.scrub.heads import HeadScores, find_heads, find_ioi_heads
from probity.scrub.hypothesis import Hypothesis, HypothesisError, Node
from probity.scrub.hypothesis import load as load_hypothesis
from probity.scrub.library import builtin, induction_lm, ioi_lm, keep_only
from probity.scrub.model import Decomposed
from probity.scrub.reference import reference_logits
from probity.scrub.refine import RefineConfig, RefineResult, refine
from probity.scrub.run import EMPTY, IDENTITY, Scrubber, ScrubResult, scrub
from probity.scrub.study import CaseStudy, case_study, setup
from probity.scrub.task import (
    RepeatLosses,
    Task,
    induction_task,
    ioi_task,
    ordinary_tokens,
    paren_task,
    repeat_losses,
    repeat_task,
)

__all__ = [
    "EMPTY",
    "IDENTITY",
    "CaseStudy",
    "Decomposed",
    "HeadScores",
    "Hypothesis",
    "HypothesisError",
    "Node",
    "RefineConfig",
    "RefineResult",
    "RepeatLosses",
    "ScrubResult",
    "Scrubber",
    "Task",
    "builtin",
    "case_study",
    "find_heads",
    "find_ioi_heads",
    "induction_lm",
    "induction_task",
    "ioi_lm",
    "ioi_task",
    "keep_only",
    "load_hypothesis",
    "ordinary_tokens",
    "paren_task",
    "reference_logits",
    "refine",
    "repeat_losses",
    "repeat_task",
    "scrub",
    "setup",
]
