"""Honesty elicitation and lie detection (after Casademunt et al., 2026, "Censored LLMs as a
Natural Testbed for Secret Knowledge Elicitation").

Public API::

    load_testbed(path) -> Testbed                      # topics -> questions -> facts, validated
    TECHNIQUES, elicit(name, model, tokenizer, question, n)   # 9 elicitation strategies
    FactMatcher(), LLMJudge(complete), make_judge(spec)       # per-fact verdicts + refusal
    train_probe(...), self_classification, confession, probe_scores   # lie detectors
    auroc, balanced_accuracy, bootstrap                # metrics
    RunConfig, run(cfg) -> HonestyResult               # the whole protocol, resumable
"""

from probity.honesty.detectors import DETECTORS, confession, probe_scores, self_classification
from probity.honesty.judge import FactMatcher, Judgement, LLMJudge, hf_backend, make_judge
from probity.honesty.lora import finetune_lora, honesty_data
from probity.honesty.metrics import auroc, balanced_accuracy, bootstrap
from probity.honesty.probe import Probe, train_probe
from probity.honesty.protocol import HonestyResult, RunConfig, run
from probity.honesty.techniques import TECHNIQUES, Context, Technique, elicit, get_techniques
from probity.honesty.testbed import Fact, Question, Testbed, TestbedError, load_testbed, parse_testbed

__all__ = [
    "DETECTORS",
    "TECHNIQUES",
    "Context",
    "Fact",
    "FactMatcher",
    "HonestyResult",
    "LLMJudge",
    "Probe",
    "Question",
    "RunConfig",
    "Technique",
    "Testbed",
    "TestbedError",
    "Judgement",
    "auroc",
    "balanced_accuracy",
    "bootstrap",
    "confession",
    "elicit",
    "finetune_lora",
    "get_techniques",
    "hf_backend",
    "honesty_data",
    "load_testbed",
    "make_judge",
    "parse_testbed",
    "probe_scores",
    "run",
    "self_classification",
    "train_probe",
]
