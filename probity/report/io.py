"""Atomic file writes and conversion of results to JSON-ready values."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temp file in the same folder and a rename,
    so a reader (or a resumed job) never sees a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file normal permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """``atomic_write_bytes`` for UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, value: Any, indent: int | None = 2) -> Path:
    """Write ``value`` (dataclasses, tensors and arrays included) to ``path`` as strict
    JSON, atomically; non-finite floats become ``null``."""
    return atomic_write_text(path, json.dumps(to_jsonable(value), indent=indent, allow_nan=False))


MAX_NESTING = 100  # deepest nesting of lists and mappings a structured file may hold


def read_text(path: str | os.PathLike, error: type[Exception] = ValueError) -> str:
    """The text of the file ``path`` (UTF-8). A file that is not text raises ``error`` with one line
    naming it; a missing file raises ``FileNotFoundError``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no file {path}")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise error(f"{path}: not a text file (UTF-8)") from None


def read_structured(path: str | os.PathLike, error: type[Exception] = ValueError) -> Any:
    """The value stored in a ``.json`` or ``.yaml``/``.yml`` file (JSON for any other suffix).
    A file that is not UTF-8 text, does not parse, or nests lists and mappings deeper than
    :data:`MAX_NESTING` (or holds a YAML alias that contains itself) raises ``error`` with one line
    naming the file; a missing file raises ``FileNotFoundError``. So a reader never meets a
    ``UnicodeDecodeError`` or a ``RecursionError``."""
    path = Path(path)
    text = read_text(path, error)
    yaml_file = path.suffix in (".yaml", ".yml")
    try:
        value = yaml.safe_load(text) if yaml_file else json.loads(text)
        too_deep = _too_deep(value)
    except (yaml.YAMLError, json.JSONDecodeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise error(f"{path}: not valid {'YAML' if yaml_file else 'JSON'} ({first})") from None
    except RecursionError:  # the parser's own stack ran out
        too_deep = True
    if too_deep:
        raise error(f"{path}: nested more than {MAX_NESTING} deep, or a YAML alias contains itself; flatten it")
    return value


def _too_deep(value: Any) -> bool:
    """Whether ``value`` nests lists and dicts more than :data:`MAX_NESTING` deep or contains itself
    (walked without recursion; a part shared through YAML aliases is walked once per depth)."""
    stack, shallowest = [(value, 0, frozenset())], {}
    while stack:
        item, depth, above = stack.pop()
        if not isinstance(item, (list, dict)):
            continue
        if depth >= MAX_NESTING or id(item) in above:
            return True
        if shallowest.get(id(item), MAX_NESTING) <= depth:
            continue
        shallowest[id(item)] = depth
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1, above | {id(item)}) for child in children)
    return False


def write_structured(path: str | os.PathLike, value: Any) -> Path:
    """Write ``value`` atomically as YAML (``.yaml``/``.yml``, keys in order) or JSON (any other suffix)."""
    path = Path(path)
    if path.suffix in (".yaml", ".yml"):
        return atomic_write_text(path, yaml.safe_dump(to_jsonable(value), sort_keys=False))
    return write_json(path, value)


def to_jsonable(value: Any) -> Any:
    """Convert dataclasses, tensors, numpy values and paths to plain JSON values.

    Non-finite floats become ``None`` so the output is strict JSON."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return to_jsonable(value.detach().cpu().tolist())
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        return to_jsonable(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (bool, int, str)):
        return value
    raise TypeError(
        f"cannot serialise {type(value).__name__} to JSON; store it in the result as a "
        "number, string, list, dict, tensor, array or dataclass"
    )
