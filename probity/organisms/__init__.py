"""Model organisms that probity trains itself from synthetic data.

Each organism is a module ``probity/organisms/<name>.py`` defining
``load() -> (model, tokenizer)``, ``train(out_dir=None, seed=0, quick=False) -> metrics``
and ``evaluate(model=None, tokenizer=None) -> metrics``, with shipped weights under
``probity/organisms/weights/<name>/``. This registry finds them by module discovery.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from types import ModuleType

WEIGHTS = Path(__file__).parent / "weights"
_NOT_ORGANISMS = {"cli"}


def available() -> list[str]:
    """Names of the organisms this install has."""
    return sorted(
        m.name
        for m in pkgutil.iter_modules(__path__)
        if not m.ispkg and not m.name.startswith("_") and m.name not in _NOT_ORGANISMS
    )


def module(name: str) -> ModuleType:
    """The module implementing organism ``name``; one-line error for an unknown name."""
    if name not in available():
        raise ValueError(f"unknown organism {name!r}; available: {', '.join(available()) or 'none'}")
    return importlib.import_module(f"probity.organisms.{name}")


def load(name: str):
    """``(model, tokenizer)`` of the shipped organism ``name``, in eval mode."""
    return module(name).load()
