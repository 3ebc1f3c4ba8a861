"""Causal scrubbing (Chan et al., Redwood Research 2022) on TransformerLens models.

Public API::

    Hypothesis, Node, load_hypothesis(path)      # hypotheses as data (Python, YAML, JSON)
    Task, paren_task(n, seed, model), induction_task(n, seed)
    scrub(model, task, hypothesis, seed, replicates=0) -> ScrubResult   # stderr; stderr_experiment
    Scrubber(model, task, seed)                  # shares one clean cache across hypotheses
    builtin(organism, meta) -> {name: Hypothesis}
    case_study(organism, roles=None) -> CaseStudy   # all built-ins, ours beside the paper
    reference_logits(model, hypothesis, task, seed) # the paper's recursion, plain (reference.py)
    refine(model, task, hypothesis, RefineConfig()) -> RefineResult   # greedy search, trajectory + final
    find_heads(model, task, kind="induction"|"previous_token", threshold, top_k) -> HeadScores  # heads as Sites

Sites are ``probity.models.Site`` objects or strings ``Site.parse`` reads (``1.0``, ``mlp2``, ``embed``).
"""

from probity.scrub.heads import HeadScores, find_heads
from probity.scrub.hypothesis import Hypothesis, HypothesisError, Node
from probity.scrub.hypothesis import load as load_hypothesis
from probity.scrub.library import builtin
from probity.scrub.model import Decomposed
from probity.scrub.reference import reference_logits
from probity.scrub.refine import RefineConfig, RefineResult, refine
from probity.scrub.run import EMPTY, IDENTITY, Scrubber, ScrubResult, scrub
from probity.scrub.study import CaseStudy, case_study, setup
from probity.scrub.task import Task, induction_task, paren_task

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
    "ScrubResult",
    "Scrubber",
    "Task",
    "builtin",
    "case_study",
    "find_heads",
    "induction_task",
    "load_hypothesis",
    "paren_task",
    "reference_logits",
    "refine",
    "scrub",
    "setup",
]
