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


def from_jsonable(tp: Any, data: Any, where: str = "result") -> Any:
    """Rebuild a value of annotated type ``tp`` from its JSON form (nested dataclasses, lists,
    tuples, dicts and optional fields). A value of the wrong shape raises a one-line ``ValueError``
    naming where it is (``where``, e.g. ``result.rows[2].width``): not an object where a dataclass
    goes, a field without a default missing, not a list or an object where one is annotated, text
    where a number goes or the reverse, ``null`` where the annotation does not allow None (``null``
    is NaN for a float: ``to_jsonable`` writes NaN so)."""
    if tp is Any:
        return data
    if dataclasses.is_dataclass(tp):
        if not isinstance(data, dict):
            raise ValueError(f"{where}: expected an object ({tp.__name__}), got {_shape(data)}")
        hints = typing.get_type_hints(tp)
        fields = [f for f in dataclasses.fields(tp) if f.init]
        for f in fields:
            if f.name not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ValueError(f"{where}: missing field {f.name!r} of {tp.__name__}")
        values = {
            f.name: from_jsonable(hints.get(f.name, Any), data[f.name], f"{where}.{f.name}")
            for f in fields
            if f.name in data
        }
        try:
            return tp(**values)
        except ValueError as err:  # the dataclass's own checks (__post_init__)
            raise ValueError(f"{where}: {err}") from None
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if data is None and type(None) in args:
            return None
        first = None
        for arg in (a for a in args if a is not type(None)):
            try:
                return from_jsonable(arg, data, where)
            except ValueError as err:
                first = first or err
        raise first or ValueError(f"{where}: unexpected {_shape(data)}")
    if tp in _SCALARS:
        if data is None and tp is float:  # to_jsonable writes NaN as null
            return float("nan")
        if not isinstance(data, _SCALARS[tp]):
            raise ValueError(f"{where}: expected {_SCALAR_NAMES[tp]}, got {_shape(data)}")
        return data
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(data, list):
            raise ValueError(f"{where}: expected a list, got {_shape(data)}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(data):
                raise ValueError(f"{where}: expected a list of {len(args)}, got {len(data)} items")
            return tuple(from_jsonable(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, data)))
        items = [from_jsonable(args[0] if args else Any, v, f"{where}[{i}]") for i, v in enumerate(data)]
        return items if (origin or tp) is list else tuple(items)
    if origin is dict or tp is dict:
        if not isinstance(data, dict):
            raise ValueError(f"{where}: expected an object, got {_shape(data)}")
        if len(args) == 2:
            return {k: from_jsonable(args[1], v, f"{where}[{k!r}]") for k, v in data.items()}
    return data


# What a JSON scalar of each annotated type may be (a number for either numeric type: JSON does not
# tell 3 from 3.0, and a flag written by numpy may come back as a number).
_SCALARS = {float: (int, float), int: (int, float), bool: (bool, int), str: (str,)}
_SCALAR_NAMES = {float: "a number", int: "a number", bool: "true or false", str: "text"}


def _shape(data: Any) -> str:
    """What a JSON value is, for an error message."""
    if isinstance(data, dict):
        return "an object"
    if isinstance(data, list):
        return "a list"
    if isinstance(data, str):
        return f"text {data[:20]!r}"
    return "null" if data is None else f"{type(data).__name__} {data!r}"
