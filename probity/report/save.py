"""``save``, ``load`` and ``rerender`` of result dataclasses.

``result.json`` holds ``{"type", "title", "headline", "result"}``: the registered type name
(see :mod:`probity.report.registry`), the page title, the headline claims (for readers of the
JSON; the page recomputes them) and the result itself. Absolute paths inside the result are
written relative to the run folder, so a result carries no machine paths.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, TypeVar

from probity.report.headline import claims_of
from probity.report.html import render_html
from probity.report.io import atomic_write_text, read_structured, write_json
from probity.report.registry import from_jsonable, lookup, type_name

T = TypeVar("T")


def save(result: Any, out_dir: str | os.PathLike, title: str | None = None) -> Path:
    """Write ``result.json`` and a self-contained ``index.html`` for a result dataclass into
    ``out_dir`` (created if needed); returns the HTML path."""
    if not (dataclasses.is_dataclass(result) and not isinstance(result, type)):
        raise TypeError(f"save() takes a result dataclass instance, got {type(result).__name__}")
    out = Path(out_dir)
    title = title or type(result).__name__
    result = relative_paths(result, out)
    payload = {"type": type_name(type(result)), "title": title, "headline": claims_of(result), "result": result}
    write_json(out / "result.json", payload)
    return atomic_write_text(out / "index.html", render_html(result, title))


def _init_field(obj: Any, name: str) -> bool:
    return next(f.init for f in dataclasses.fields(obj) if f.name == name)


def _read(out_dir: str | os.PathLike) -> dict:
    """The document in ``out_dir/result.json``, its shape checked: an object with a ``result`` object
    and, if present, a text ``type`` and ``title``. Anything else is a one-line ``ValueError`` naming
    the file and what is wrong; a missing file is a ``FileNotFoundError``."""
    path = Path(out_dir) / "result.json"
    if not path.is_file():
        raise FileNotFoundError(f"no result.json in {out_dir}; run the command that writes the report first")
    doc = read_structured(path)
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: a result file holds an object with 'type' and 'result', not {_kind(doc)}")
    if not isinstance(doc.get("result"), dict):
        raise ValueError(f"{path}: missing field 'result' (an object); rerun the command that wrote it")
    for key in ("type", "title"):
        if doc.get(key) is not None and not isinstance(doc[key], str):
            raise ValueError(f"{path}: field {key!r} must be text, got {_kind(doc[key])}")
    return doc


def _kind(value: Any) -> str:
    return "a list" if isinstance(value, list) else "an object" if isinstance(value, dict) else repr(value)[:40]


def load(out_dir: str | os.PathLike, cls: type[T] | None = None) -> T | Any:
    """Read ``result.json`` from ``out_dir``: an instance of ``cls`` when given, else of the
    registered type named in the file, else the plain JSON value (a dict). A file of the wrong shape
    (not a result document, or a result missing a field or holding one of the wrong kind) raises one
    ``ValueError`` naming the file and the field."""
    return _rebuild(_read(out_dir), out_dir, cls)


def _rebuild(doc: dict, out_dir: str | os.PathLike, cls: type | None) -> Any:
    cls = cls or lookup(doc.get("type") or "")
    if cls is None:
        return doc["result"]
    try:
        return from_jsonable(cls, doc["result"])
    except ValueError as err:
        raise ValueError(f"{Path(out_dir) / 'result.json'}: {err}; rerun the command that wrote it") from None


def rerender(out_dir: str | os.PathLike) -> Path:
    """Rewrite ``out_dir/index.html`` from ``out_dir/result.json`` (the result type must be
    registered, i.e. its instrument imported); returns the HTML path. A file that is not a result
    of a registered type raises ``ValueError`` / ``LookupError`` (one line)."""
    doc = _read(out_dir)
    name = doc.get("type") or ""
    if lookup(name) is None:
        raise LookupError(
            f"{Path(out_dir) / 'result.json'} holds a {name!r}, which is not a registered result type; "
            "import the instrument that defines it first"
        )
    result = _rebuild(doc, out_dir, None)
    return atomic_write_text(Path(out_dir) / "index.html", render_html(result, doc.get("title") or name))


def relative_paths(value: Any, base: Path) -> Any:
    """``value`` (a result: dataclasses, dicts, lists, scalars) with every string that is an existing
    absolute path rewritten relative to ``base``; a copy where anything changed, types kept."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {}
        for f in dataclasses.fields(value):
            old = getattr(value, f.name)
            new = relative_paths(old, base)
            if new is not old:
                changes[f.name] = new
        if not changes:
            return value
        copy = dataclasses.replace(value, **{k: v for k, v in changes.items() if _init_field(value, k)})
        for k, v in changes.items():  # fields outside __init__ are set after construction
            if not _init_field(value, k):
                object.__setattr__(copy, k, v)
        return copy
    if isinstance(value, dict):
        new = {k: relative_paths(v, base) for k, v in value.items()}
        return value if all(new[k] is value[k] for k in value) else new
    if isinstance(value, (list, tuple)):
        new = [relative_paths(v, base) for v in value]
        return value if all(a is b for a, b in zip(new, value)) else type(value)(new)
    if (
        isinstance(value, str)
        and os.path.isabs(value)
        and len(value) < 1024
        and not any(ch.isspace() for ch in value)
        and os.path.exists(value)
    ):
        return os.path.relpath(value, base.resolve())
    return value
