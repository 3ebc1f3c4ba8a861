"""End-to-end NLA runs: data, teacher labels, training, evaluation, checkpoint, report.

``run_organism`` trains on the censored organism (teacher = its latent facts) and
adds attribute recovery and the audit; ``run_model`` trains on any HF causal LM
over a text corpus with a pluggable labeller (default: context labels).
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

from probity.nla.core import Verbalizer, extract, save_nla
from probity.nla.labellers import ContextLabeller, Labeller, samples_for
from probity.nla.training import TrainConfig, TrainResult, train
from probity.report import Claim, result_type

# A small built-in corpus for real models: varied registers, so activations differ.
CORPUS = [
    "The capital of France is Paris, a city on the river Seine.",
    "def add(a, b):\n    return a + b",
    "Photosynthesis turns sunlight, water and carbon dioxide into sugar and oxygen.",
    "She opened the letter slowly, afraid of what it might say.",
    "The stock market fell three percent after the central bank raised interest rates.",
    "To bake bread, mix flour, water, yeast and salt, then let the dough rise.",
    "In 1969, Neil Armstrong became the first person to walk on the Moon.",
    "I'm sorry, but I can't help with that request.",
    "The quick brown fox jumps over the lazy dog.",
    "Water boils at 100 degrees Celsius at sea level.",
    "The patient reported a headache and a mild fever for two days.",
    "Our team won the match 3-1 with a late goal in the second half.",
    "Please remember to submit your report before Friday at noon.",
    "The mitochondria is the powerhouse of the cell.",
    "He played the violin every evening after dinner.",
    "for i in range(10):\n    print(i * i)",
    "The Amazon rainforest is home to millions of species of insects.",
    "Dear Sir or Madam, I am writing to apply for the position of engineer.",
    "The recipe calls for two cups of sugar and a pinch of cinnamon.",
    "Shakespeare wrote Hamlet, Macbeth and many other plays.",
    "The train to London leaves from platform four at eight o'clock.",
    "Gravity pulls objects toward the center of the Earth.",
    "My favourite colour is blue because it reminds me of the sea.",
    "The judge sentenced him to five years in prison for fraud.",
    "Mount Everest is the highest mountain above sea level.",
    "The children built a sandcastle on the beach in the afternoon.",
    "An apple a day keeps the doctor away, or so they say.",
    "The company announced record profits for the third quarter.",
    "Tokyo is the largest city in Japan and one of the busiest in the world.",
    "She whispered that the secret password was hidden under the mat.",
    "The volcano erupted, sending ash high into the sky.",
    "Add the eggs one at a time, beating well after each.",
    "The election results will be announced tomorrow morning.",
    "Penguins live mostly in the Southern Hemisphere.",
    "SELECT name, age FROM users WHERE age > 30;",
    "The orchestra tuned their instruments before the concert began.",
    "Honey never spoils if it is stored in a sealed jar.",
    "The detective examined the footprints near the window.",
    "Cats sleep for about sixteen hours a day.",
    "The spacecraft entered orbit around Mars after a seven-month journey.",
]


@dataclasses.dataclass
class Example:
    """A held-out activation with its teacher label and the trained AV's description."""

    token: str
    teacher: str
    description: str


@result_type("nla.NLAReport")
@dataclasses.dataclass
class NLAReport:
    """Headline metrics of an NLA run, its training curve, audit and examples."""

    model: str
    layer: int
    fve_ar_sft: float
    fve_sft: float
    fve_rl: float
    fve_shuffled: float | None
    attribute_recovery: float | None
    audit_auroc: float | None
    training: TrainResult
    audit: object | None
    examples: list[Example]
    checkpoint: str | None
    recovery_by_position: dict[str, float] | None = None

    def metrics(self) -> dict:
        """The numbers ``probity nla train --json`` writes."""
        keys = ("fve_ar_sft", "fve_sft", "fve_rl", "fve_shuffled", "attribute_recovery", "audit_auroc")
        return {k: getattr(self, k) for k in keys}

    def headline(self) -> list[Claim]:
        """The training run's FVE claims, then attribute recovery and the audit (``bench/nla.py`` targets)."""
        claims = self.training.headline()
        if self.attribute_recovery is not None:
            claims.append(
                Claim("attribute recovery (names nation + attribute)", self.attribute_recovery, target=">= 0.90")
            )
        if self.audit_auroc is not None:
            claims.append(
                Claim("audit AUROC at the value token (lies vs controls)", self.audit_auroc, target=">= 0.90")
            )
        return claims


def default_layer(model) -> int:
    """About 2/3 of the way up the model (the anchor's choice)."""
    return max(0, round(2 * model.config.num_hidden_layers / 3) - 1)


def _examples(av: Verbalizer, acts, labels, tokens, n: int = 12) -> list[Example]:
    descriptions = av.describe(acts[:n])
    return [Example(t, lab, d) for t, lab, d in zip(tokens[:n], labels[:n], descriptions)]


def run_organism(
    layer: int | None = None,
    cfg: TrainConfig | None = None,
    out: str | Path | None = None,
    model=None,
    tokenizer=None,
    progress: bool = True,
    audit_samples: int = 8,
    label_token: bool = True,
) -> tuple[NLAReport, Verbalizer, object]:
    """Train and evaluate an NLA on the censored organism. Returns (report, AV, AR);
    with ``out``, the trained pair is saved to ``out/nla`` and checkpoints to ``out``.
    ``label_token=False`` trains on the token-free teacher labels (the ablation of
    :mod:`probity.nla.organism`)."""
    from probity.nla import organism

    if model is None:
        from probity.organisms import censored

        model, tokenizer = censored.load()
    layer = default_layer(model) if layer is None else layer
    cfg = cfg or TrainConfig()
    data = organism.organism_data(model, tokenizer, layer, seed=cfg.seed, progress=progress, label_token=label_token)
    av = organism.verbalizer(model, tokenizer, layer)
    n = min(cfg.eval_size, len(data.heldout))

    def score(av: Verbalizer):
        """Greedy descriptions of the held-out activations, recovery (overall, by position), audit."""
        descriptions = av.describe(data.heldout.vectors[:n])
        items = data.heldout_items[:n]
        audit = organism.lie_audit(av, data.heldout.vectors, data.heldout_items, samples=audit_samples)
        return (
            descriptions,
            organism.attribute_recovery(descriptions, items),
            organism.recovery_by_position(descriptions, items),
            audit,
        )

    def sft_baseline(av: Verbalizer) -> dict:
        _, recovery, by_position, audit = score(av)
        return {
            "attribute_recovery": recovery,
            "recovery_by_position": by_position,
            "audit_auroc": audit.auroc,
            "audit_auroc_answer_span": audit.auroc_answer_span,
        }

    av, ar, result = train(
        model,
        tokenizer,
        av,
        data.train.vectors,
        data.train_labels,
        data.heldout.vectors,
        data.heldout_labels,
        cfg,
        out_dir=out,
        progress=progress,
        replay_texts=organism.replay_texts(data.train_items),
        on_sft_end=sft_baseline,
    )
    descriptions, recovery, by_position, audit = score(av)
    saved = str(save_nla(Path(out) / "nla", av, ar)) if out is not None else None
    report = NLAReport(
        "censored",
        layer,
        result.fve_ar_sft,
        result.fve_sft,
        result.fve_rl,
        result.fve_shuffled,
        recovery,
        audit.auroc,
        result,
        audit,
        [Example(it.token, it.label(label_token), d) for it, d in zip(data.heldout_items[:12], descriptions)],
        saved,
        by_position,
    )
    return report, av, ar


def run_model(
    name: str,
    layer: int | None = None,
    cfg: TrainConfig | None = None,
    out: str | Path | None = None,
    texts: list[str] | None = None,
    labeller: Labeller | None = None,
    placeholder: str | None = None,
    skip_first: int = 2,
    heldout_share: float = 0.2,
    model=None,
    tokenizer=None,
    progress: bool = True,
) -> tuple[NLAReport, Verbalizer, object]:
    """Train and evaluate an NLA on any HF causal LM (``name`` as for ``probity.models.load``)
    over ``texts`` (default: a small built-in corpus), all tokens after the first
    ``skip_first``, teacher labels from ``labeller`` (default :class:`ContextLabeller`)."""
    if model is None:
        import torch

        from probity.models import load

        model, tokenizer = load(name, dtype=torch.float32)
    layer = default_layer(model) if layer is None else layer
    cfg = cfg or TrainConfig()
    texts = list(texts or CORPUS)
    positions = [
        list(range(min(skip_first, n - 1), n))
        for n in (len(tokenizer(t, add_special_tokens=True)["input_ids"]) for t in texts)
    ]
    acts = extract(model, tokenizer, texts, layer, positions, progress=progress)
    labels = (labeller or ContextLabeller())(samples_for(tokenizer, texts, acts))
    rng = random.Random(cfg.seed)
    order = list(range(len(texts)))
    rng.shuffle(order)
    held = set(order[: max(1, round(heldout_share * len(texts)))])
    tr = [i for i in range(len(acts)) if acts.text_index[i] not in held]
    he = [i for i in range(len(acts)) if acts.text_index[i] in held]
    rng.shuffle(tr), rng.shuffle(he)
    av = Verbalizer.create(
        model,
        tokenizer,
        layer,
        placeholder=placeholder,
        av_prompt="Describe the concept in {placeholder} briefly.",
        ar_template="Concept: {description}\nSummary:",
        max_new_tokens=24,
        target=name,
    )
    av, ar, result = train(
        model,
        tokenizer,
        av,
        acts.vectors[tr],
        [labels[i] for i in tr],
        acts.vectors[he],
        [labels[i] for i in he],
        cfg,
        out_dir=out,
        progress=progress,
        replay_texts=[t for i, t in enumerate(texts) if i not in held],
    )
    saved = str(save_nla(Path(out) / "nla", av, ar)) if out is not None else None
    he_acts = acts.subset(he)
    report = NLAReport(
        name,
        layer,
        result.fve_ar_sft,
        result.fve_sft,
        result.fve_rl,
        result.fve_shuffled,
        None,
        None,
        result,
        None,
        _examples(av, he_acts.vectors, [labels[i] for i in he], he_acts.token),
        saved,
    )
    return report, av, ar
