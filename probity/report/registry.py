"""Result types by stable name, so ``load`` can rebuild a result from its ``result.json``.

An instrument marks each result dataclass that reaches a page::

    @report.result_type("scrub.CaseStudy")
    @dataclass
    class CaseStudy: ...

``save`` writes that name into ``result.json``; ``load`` (and ``probity report DIR``) looks it
up and rebuilds the dataclass from the field annotations. The name is the contract: keep it
when the class moves or is renamed. A type registers when its module is imported, so the
reader of a result imports the instrument first (the ``probity`` CLI does).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

_TYPES: dict[str, type] = {}


def result_type(name: str):
    """Class decorator: register a result dataclass under ``name`` (e.g. "scrub.CaseStudy")."""

    def register(cls: type) -> type:
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"@result_type({name!r}) goes on a dataclass; {cls.__name__} is not one")
        known = _TYPES.get(name)
        if known is not None and known.__qualname__ != cls.__qualname__:
            raise ValueError(f"result type name {name!r} is taken by {known.__module__}.{known.__qualname__}")
        cls.__result_type__ = name
        _TYPES[name] = cls
        return cls

    return register


def type_name(cls: type) -> str:
    """The registered name of ``cls``, or its class name when it is not registered."""
    return cls.__dict__.get("__result_type__", cls.__name__)


def lookup(name: str) -> type | None:
    """The class registered under ``name``, or None."""
    return _TYPES.get(name)


def result_types() -> dict[str, type]:
    """Every registered result type by name."""
    return dict(_TYPES)


def from_jsonable(tp: Any, data: Any) -> Any:
    """Rebuild a value of annotated type ``tp`` from its JSON form (nested dataclasses, lists,
    tuples, dicts and optional fields; anything else is returned as read)."""
    if tp is float and data is None:  # to_jsonable writes NaN as null
        return float("nan")
    if dataclasses.is_dataclass(tp) and isinstance(data, dict):
        hints = typing.get_type_hints(tp)
        return tp(
            **{
                f.name: from_jsonable(hints.get(f.name, Any), data[f.name])
                for f in dataclasses.fields(tp)
                if f.init and f.name in data
            }
        )
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (list, tuple) and isinstance(data, list):
        if origin is tuple and args and args[-1] is not Ellipsis and len(args) == len(data):
            return tuple(from_jsonable(a, v) for a, v in zip(args, data))
        items = [from_jsonable(args[0] if args else Any, v) for v in data]
        return items if origin is list else tuple(items)
    if origin is dict and len(args) == 2 and isinstance(data, dict):
        return {k: from_jsonable(args[1], v) for k, v in data.items()}
    if origin in (typing.Union, types.UnionType) and data is not None:
        for arg in args:
            if dataclasses.is_dataclass(arg) and isinstance(data, dict):
                return from_jsonable(arg, data)
            if typing.get_origin(arg) in (list, tuple, dict) and isinstance(data, (list, dict)):
                return from_jsonable(arg, data)
    return data
