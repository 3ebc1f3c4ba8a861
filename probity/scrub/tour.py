"""The scrub section of ``probity tour``: both case studies on the shipped organisms, the
residual-stream decomposition of a real Hugging Face model (SmolLM2-135M, offline) and the IOI study
on it (``scrub.ioi``, the bench's 128 prompts and seed)."""

from __future__ import annotations

from dataclasses import dataclass

from probity.report import Claim, result_type
from probity.scrub.ioi import IOIStudy, ioi_study
from probity.scrub.study import CaseStudy, case_study

PROMPT = "The capital of France is Paris. The capital of Italy is"


@dataclass
class DecompositionCheck:
    """A real HF model split into residual-stream components: how many, and how far their
    recombined logits are from the model's own on ``prompt``."""

    model: str
    n_components: int
    prompt: str
    max_abs_logit_diff: float
    max_abs_logit: float

    def headline(self) -> list[Claim]:
        """The components recombine to the model's logits up to float32 round-off."""
        return [
            Claim(
                f"{self.model} split into {self.n_components} parts: max logit error",
                self.max_abs_logit_diff,
                target="<= 1e-4",
            )
        ]


@result_type("scrub.ScrubTour")
@dataclass
class ScrubTour:
    """Both case studies on the shipped organisms (paren twice: Redwood's root, then the root
    claiming mlp2), the decomposition check of a real HF decoder and its IOI study."""

    paren: CaseStudy
    paren_root_with_mlp2: CaseStudy  # the organism's last MLP writes most of its answer (README, scrub)
    induction: CaseStudy
    hf_decomposition: DecompositionCheck
    ioi: IOIStudy
    report_titles = {
        "paren": "Paren, Redwood's root (the logits)",
        "paren_root_with_mlp2": "Paren, root = logits + mlp2",
        "induction": "Induction",
        "hf_decomposition": "A real HF decoder decomposed (SmolLM2-135M)",
        "ioi": "Indirect-object identification on SmolLM2-135M",
    }

    def headline(self) -> list[Claim]:
        """Each case study's claims against the paper, the decomposition check, then the IOI study."""
        studies = (self.paren, self.paren_root_with_mlp2, self.induction)
        return (
            [c for study in studies for c in study.headline()] + self.hf_decomposition.headline() + self.ioi.headline()
        )


def decomposition_check(model=None, tokenizer=None) -> DecompositionCheck:
    """Decompose the offline SmolLM2-135M (Llama: rotary, grouped-query attention, gated MLPs; loaded
    unless given) and compare the components' recombined logits with the model's."""
    import torch

    from probity import models
    from probity.scrub.model import Decomposed

    if model is None:
        model, tokenizer = models.load(models.SMOLLM2)
    d = Decomposed(model)
    ids = tokenizer(PROMPT, return_tensors="pt")["input_ids"].to(d.device)
    with torch.no_grad():
        want = model(ids).logits
    got = d.run(ids)[0]
    return DecompositionCheck(
        models.SMOLLM2, len(d.components), PROMPT, float((got - want).abs().max()), float(want.abs().max())
    )


def section(console, cache_dir=None) -> ScrubTour:
    """Scrub every built-in hypothesis of paren (1000 examples; Redwood's root, then the root also
    claiming mlp2) and induction (150 examples), decompose SmolLM2-135M and run its IOI study (128
    prompts, about a minute); keeps no files (``cache_dir``, the tour's folder for them, goes unused)."""
    from probity import models

    out = {}
    for key, organism, n, roles in (
        ("paren", "paren", 1000, None),
        ("paren_root_with_mlp2", "paren", 1000, {"top": ["output", "mlp2"]}),
        ("induction", "induction", 150, None),
    ):
        study = case_study(organism, samples=n, roles=roles, progress=lambda name: console.print(f"  scrubbed {name}"))
        label = organism if roles is None else "paren+mlp2"
        for r in study.rows:
            paper = "" if r.paper is None else f" (paper {r.paper:.2f})"
            console.print(f"{label:10s} {r.hypothesis:18s} recovered {r.loss_recovered:6.3f} ± {r.stderr:.3f}{paper}")
        console.print(f"{label:10s} ranked against the paper: {', '.join(study.order_violations) or 'none'}")
        out[key] = study
    with console.status("decomposing SmolLM2-135M-Instruct (offline) into residual-stream components"):
        model, tokenizer = models.load(models.SMOLLM2)
        check = decomposition_check(model, tokenizer)
    console.print(
        f"HF decoder {check.model}: {check.n_components} components, recombined logits within "
        f"{check.max_abs_logit_diff:.1e} of the model's (max |logit| {check.max_abs_logit:.1f})"
    )
    ioi = ioi_study(model, tokenizer, models.SMOLLM2, progress=lambda name: console.print(f"  IOI scrubbed {name}"))
    for r in ioi.rows:
        share = f", {r.floor_share:.3f} ± {r.floor_share_stderr:.3f} of {r.floor}'s gap" if r.floor else ""
        console.print(f"IOI {r.hypothesis:22s} recovered {r.loss_recovered:6.3f} ± {r.stderr:.3f}{share}")
    return ScrubTour(**out, hf_decomposition=check, ioi=ioi)
