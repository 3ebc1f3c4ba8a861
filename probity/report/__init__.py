"""Results as JSON plus a self-contained HTML page that leads with the verdict.

A result is a dataclass with ``headline() -> list[Claim]`` (the claims a reader needs first:
our value with its interval, the reference and who it is from, the target, the verdict) and
optionally ``figures() -> {title: matplotlib Figure}``. ``save(result, dir)`` writes
``result.json`` and ``index.html`` atomically: the verdict card first, then the figures, then
compact tables, with configs, trees and raw arrays folded away or left to the JSON.
``@result_type("instrument.Name")`` registers a result dataclass so ``load(dir)`` and
``probity report DIR`` (``rerender``) can rebuild it. ``Tour`` is the result of
``probity tour``. ``probity.report.metrics`` holds the classification metrics instruments
share (AUROC, balanced accuracy).

    @report.result_type("mine.Result")
    @dataclass
    class Result:
        score: float
        def headline(self):
            return [report.Claim("score", self.score, target=">= 0.9", reference=0.93, source="Doe 2024")]

    report.save(Result(0.95), "runs/mine")
"""

from probity.report.headline import MET, MISSED, NO_REFERENCE, Claim, fmt_number, verdict, verdict_against
from probity.report.html import render_html
from probity.report.io import atomic_write_bytes, atomic_write_text, to_jsonable, write_json
from probity.report.registry import from_jsonable, lookup, result_type, result_types, type_name
from probity.report.save import load, rerender, save
from probity.report.tour import Section, Tour

__all__ = [
    "save",
    "load",
    "rerender",
    "render_html",
    "Claim",
    "MET",
    "MISSED",
    "NO_REFERENCE",
    "verdict_against",
    "verdict",
    "fmt_number",
    "result_type",
    "type_name",
    "lookup",
    "result_types",
    "from_jsonable",
    "Tour",
    "Section",
    "to_jsonable",
    "atomic_write_bytes",
    "atomic_write_text",
    "write_json",
]
