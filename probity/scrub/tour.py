"""The scrub section of ``probity tour``: both case studies on the shipped organisms."""

from __future__ import annotations

from dataclasses import dataclass

from probity.scrub.study import CaseStudy, case_study


@dataclass
class ScrubTour:
    paren: CaseStudy
    induction: CaseStudy


def section(console) -> ScrubTour:
    """Scrub every built-in hypothesis of paren (1000 examples) and induction (150 examples)."""
    out = {}
    for organism, n in (("paren", 1000), ("induction", 150)):
        study = case_study(organism, samples=n, progress=lambda name: console.print(f"  scrubbed {name}"))
        for r in study.rows:
            paper = "" if r.paper is None else f" (paper {r.paper:.2f})"
            console.print(f"{organism:9s} {r.hypothesis:18s} recovered {r.loss_recovered:6.3f} ± {r.stderr:.3f}{paper}")
        console.print(f"{organism:9s} ranked against the paper: {', '.join(study.order_violations) or 'none'}")
        out[organism] = study
    return ScrubTour(**out)
