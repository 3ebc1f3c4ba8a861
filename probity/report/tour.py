"""The result of ``probity tour``: one section per instrument, each holding that instrument's result."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from probity.report.headline import Claim, claims_of
from probity.report.registry import from_jsonable, lookup, result_type, type_name


@dataclass
class Section:
    """One instrument's part of the tour: ``name`` (the page anchor, e.g. "scrub"), a human
    ``title``, and its ``result`` (a registered result dataclass); ``type`` is the result's
    registered name, filled in from ``result``."""

    name: str
    title: str
    result: Any
    type: str = ""

    def __post_init__(self):
        if isinstance(self.result, dict):  # read back from result.json
            cls = lookup(self.type)
            if cls is None:
                raise LookupError(
                    f"tour section {self.name!r} has type {self.type!r}, which is not registered; "
                    "import the instrument that defines it (the probity CLI imports all of them)"
                )
            self.result = from_jsonable(cls, self.result, f"section {self.name!r}")
        elif not self.type:
            self.type = type_name(type(self.result))


@result_type("probity.Tour")
@dataclass
class Tour:
    """Every instrument once on built-in defaults, in tour order."""

    sections: list[Section] = field(default_factory=list)

    def headline(self) -> list[Claim]:
        """Every section's claims, in order."""
        return [c for s in self.sections for c in claims_of(s.result)]
