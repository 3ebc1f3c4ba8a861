"""Natural-language autoencoders (Anthropic, 2026): describe activations in words.

A verbalizer (AV, a copy of the target chat model) reads an activation injected
as one placeholder token's embedding and writes a description; a reconstructor
(AR, the target truncated at the activation's layer plus a linear head) maps the
description back to the activation. Both are warm-started by SFT on teacher
descriptions, then the AV is trained with GRPO to make its descriptions
reconstructable. Public API::

    extract(model, tokenizer, texts, layer, positions) -> Activations
    Verbalizer.create(model, tokenizer, layer, ...), Reconstructor.from_target(model, tokenizer, config)
    NLAConfig (the sidecar), save_nla(dir, av, ar), load_nla(dir[, ar_dir])
    train(model, tokenizer, av, train_acts, train_labels, eval_acts, eval_labels, TrainConfig(...))
    fve(pred, target), explain(...), audit(...)
    run_organism(...), run_model(name, ...)       # end to end, returns an NLAReport
"""

from probity.nla.config import NLAConfig, from_anchor_meta
from probity.nla.core import (
    Activations,
    Reconstructor,
    Verbalizer,
    direction_mse,
    extract,
    fve,
    load_nla,
    normalise,
    save_nla,
)
from probity.nla.evaluate import ConceptAudit, audit, auroc, explain, read_transcripts
from probity.nla.labellers import ContextLabeller, OpenAILabeller, Sample, samples_for
from probity.nla.pipeline import NLAReport, default_layer, run_model, run_organism
from probity.nla.training import CurvePoint, TrainConfig, TrainResult, train

__all__ = [
    "Activations",
    "ConceptAudit",
    "ContextLabeller",
    "CurvePoint",
    "NLAConfig",
    "NLAReport",
    "OpenAILabeller",
    "Reconstructor",
    "Sample",
    "TrainConfig",
    "TrainResult",
    "Verbalizer",
    "audit",
    "auroc",
    "default_layer",
    "direction_mse",
    "explain",
    "extract",
    "from_anchor_meta",
    "fve",
    "load_nla",
    "normalise",
    "read_transcripts",
    "run_model",
    "run_organism",
    "samples_for",
    "save_nla",
    "train",
]
