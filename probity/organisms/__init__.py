"""Model organisms that probity trains itself from synthetic data.

Each organism is a module ``probity/organisms/<name>.py`` defining
``load() -> (model, tokenizer)``, ``train(out_dir=None, seed=..., quick=False) -> metrics``
and ``evaluate(model=None, tokenizer=None) -> metrics``, with shipped weights under
``probity/organisms/weights/<name>/``. Importing this package registers every organism's
``load`` with ``probity.models`` (``probity.models.load("paren")``); ``import probity`` does that.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from probity.models import register_loader
from probity.organisms import censored, induction, paren

WEIGHTS = Path(__file__).parent / "weights"
ORGANISMS: dict[str, ModuleType] = {"censored": censored, "induction": induction, "paren": paren}

for _name, _module in ORGANISMS.items():
    register_loader(_name, _module.load)


def available() -> list[str]:
    """Names of the organisms this install has."""
    return sorted(ORGANISMS)


def module(name: str) -> ModuleType:
    """The module implementing organism ``name``; one-line error for an unknown name."""
    if name not in ORGANISMS:
        raise ValueError(f"unknown organism {name!r}; available: {', '.join(available())}")
    return ORGANISMS[name]


def load(name: str):
    """``(model, tokenizer)`` of the shipped organism ``name``, in eval mode."""
    return module(name).load()
