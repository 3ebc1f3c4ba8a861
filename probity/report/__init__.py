"""Results as JSON plus a self-contained HTML page with inline figures.

A result is any dataclass. ``save(result, dir)`` writes ``result.json`` and
``index.html`` atomically. The HTML renderer walks the dataclass: scalars become a
key/value table, a list of flat dicts or dataclasses becomes a table, a nested
dataclass becomes a section, and any object with a ``figures()`` method
(returning ``{title: matplotlib Figure}``) contributes inline PNG figures.
``probity.report.metrics`` holds the classification metrics instruments share
(AUROC, balanced accuracy).
"""

from probity.report.html import render_html
from probity.report.io import atomic_write_bytes, atomic_write_text, to_jsonable, write_json
from probity.report.save import load, save

__all__ = ["save", "load", "render_html", "to_jsonable", "atomic_write_bytes", "atomic_write_text", "write_json"]
