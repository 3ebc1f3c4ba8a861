"""``save`` and ``load`` of result dataclasses."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, TypeVar

from probity.report.html import render_html
from probity.report.io import atomic_write_text, write_json

T = TypeVar("T")


def save(result: Any, out_dir: str | os.PathLike, title: str | None = None) -> Path:
    """Write ``result.json`` and a self-contained ``index.html`` for a result
    dataclass into ``out_dir`` (created if needed); returns the HTML path."""
    if not (dataclasses.is_dataclass(result) and not isinstance(result, type)):
        raise TypeError(f"save() takes a result dataclass instance, got {type(result).__name__}")
    out = Path(out_dir)
    write_json(out / "result.json", {"type": type(result).__name__, "result": result})
    html = render_html(result, title or type(result).__name__)
    return atomic_write_text(out / "index.html", html)


def load(out_dir: str | os.PathLike, cls: type[T] | None = None) -> T | dict:
    """Read ``result.json`` from ``out_dir``: a dict, or an instance of ``cls``
    (nested dataclass fields are rebuilt from their type annotations)."""
    path = Path(out_dir) / "result.json"
    if not path.is_file():
        raise FileNotFoundError(f"no result.json in {out_dir}; run the command that writes the report first")
    data = json.loads(path.read_text())["result"]
    return data if cls is None else _build(cls, data)


def _build(tp: Any, data: Any) -> Any:
    """Rebuild a value of annotated type ``tp`` from its JSON form."""
    import typing

    if dataclasses.is_dataclass(tp) and isinstance(data, dict):
        hints = typing.get_type_hints(tp)
        return tp(
            **{f.name: _build(hints.get(f.name, Any), data[f.name]) for f in dataclasses.fields(tp) if f.name in data}
        )
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (list, tuple) and args and isinstance(data, list):
        items = [_build(args[0], v) for v in data]
        return items if origin is list else tuple(items)
    if origin is dict and len(args) == 2 and isinstance(data, dict):
        return {k: _build(args[1], v) for k, v in data.items()}
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        for arg in args:
            if arg is not type(None) and dataclasses.is_dataclass(arg) and isinstance(data, dict):
                return _build(arg, data)
    return data
