"""Model organisms that probity trains itself from synthetic data.

Each organism is a module ``probity/organisms/<name>.py`` defining
``load() -> (model, tokenizer)``, ``train(out_dir=None, seed=..., quick=False) -> metrics``
and ``evaluate(model=None, tokenizer=None) -> metrics``, with shipped weights under
``probity/organisms/weights/<name>/``. Importing this package registers every organism's
``load`` with ``probity.models`` (``probity.models.load("paren")``); ``import probity`` does that.

A folder an organism was trained into (``probity organisms train NAME --out DIR``) loads by path
wherever a name is accepted (:func:`load`, ``probity.models.load(DIR)``): :func:`folder_kind` tells
which organism it holds -- ``paren`` or ``induction`` from its ``config.json``'s ``tl_config``,
``censored`` for a LoRA adapter folder with the organism's ``organism.json``, ``censored_tiny`` for a
Hugging Face checkpoint folder with one.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from probity.models import SMOLLM2, register_loader
from probity.models.load import register_folder_loader
from probity.organisms import _native, censored, censored_tiny, induction, paren

WEIGHTS = Path(__file__).parent / "weights"
ORGANISMS: dict[str, ModuleType] = {
    "censored": censored,
    "censored_tiny": censored_tiny,
    "induction": induction,
    "paren": paren,
}
# The chat organisms (Hugging Face models that bring their own testbed): the modules with a testbed_path.
CHAT: dict[str, ModuleType] = {name: m for name, m in ORGANISMS.items() if hasattr(m, "testbed_path")}
# The TransformerLens native organisms (task models without chat): those whose module has a TL_CONFIG.
NATIVE: dict[str, ModuleType] = {name: m for name, m in ORGANISMS.items() if hasattr(m, "TL_CONFIG")}

for _name, _module in ORGANISMS.items():
    register_loader(_name, _module.load, config=getattr(_module, "hf_config", None))


def available() -> list[str]:
    """Names of the organisms this install has."""
    return sorted(ORGANISMS)


def module(name: str) -> ModuleType:
    """The module implementing organism ``name``; one-line error for an unknown name."""
    if name not in ORGANISMS:
        raise ValueError(f"unknown organism {name!r}; available: {', '.join(available())}")
    return ORGANISMS[name]


def folder_kind(folder: str | Path) -> str | None:
    """Which organism the folder ``folder`` holds (``paren``, ``induction``, ``censored`` or
    ``censored_tiny``), read from its config files without loading weights (which must be there: a
    one-line ``FileNotFoundError`` otherwise); None when it is not an organism folder (no
    ``config.json``, or a plain Hugging Face checkpoint). A native organism's ``tl_config`` must fit
    one of the native organisms' tasks (their vocabulary, context length and attention direction)."""
    folder = Path(folder)
    config = _native.read_config(folder, required=False)
    if config is None:
        return next((name for name, m in CHAT.items() if m.is_folder(folder)), None)
    keys = ("d_vocab", "n_ctx", "attention_dir")
    for name, organism in NATIVE.items():
        if all(config["tl_config"].get(k) == organism.TL_CONFIG[k] for k in keys):
            return name
    raise ValueError(
        f"{folder}: its tl_config fits neither organism's task ({', '.join(keys)} of {' or '.join(NATIVE)})"
    )


def find(name_or_path: str | Path) -> tuple[str, Path] | None:
    """``(kind, folder)`` of an organism name (its shipped folder) or of a folder one was trained into;
    None for anything else. Reads config files only, never weights."""
    text = str(name_or_path)
    if text in ORGANISMS:
        return text, ORGANISMS[text].WEIGHTS if text in CHAT else _native.WEIGHTS / text
    if not text.strip():
        return None
    folder = Path(text).expanduser()
    kind = folder_kind(folder) if folder.is_dir() else None
    return None if kind is None else (kind, folder)


def resolve(name_or_path: str | Path) -> tuple[str, Path]:
    """:func:`find`, with a one-line ``ValueError`` for anything that is not an organism."""
    found = find(name_or_path)
    if found is not None:
        return found
    text = str(name_or_path)
    if Path(text).expanduser().is_dir():
        raise ValueError(
            f"{text} is not an organism folder (no config.json with a tl_config, no organism.json); "
            f"write one with `probity organisms train NAME --out {text}`"
        )
    raise ValueError(
        f"unknown organism {text!r}: not one of {', '.join(available())} and not a folder; "
        "give a name or a folder written by `probity organisms train NAME --out DIR`"
    )


def check_chat_model(name: str) -> None:
    """A one-line ``ValueError`` when ``name`` is a task organism without chat (paren, induction, or a
    folder one was trained into), which the chat instruments (nla, honesty) cannot use."""
    found = find(name)
    if found is not None and found[0] in NATIVE:
        raise ValueError(
            f"{name!r} is the {found[0]} organism, a TransformerLens task model without chat; use "
            f"censored, {SMOLLM2}, an HF chat model's name or a local HF checkpoint folder"
        )


def load(name_or_path: str | Path):
    """``(model, tokenizer)`` of the shipped organism ``name`` or of an organism folder, in eval mode."""
    kind, folder = resolve(name_or_path)
    if str(name_or_path) in ORGANISMS:
        return module(kind).load()
    return load_folder(folder)


def load_folder(folder: str | Path):
    """``(model, tokenizer)`` of the organism trained into ``folder`` (see :func:`folder_kind`)."""
    folder = Path(folder)
    kind = folder_kind(folder)
    if kind is None:
        raise ValueError(f"{folder} is not an organism folder (no config.json with a tl_config, no organism.json)")
    if kind in CHAT:
        return CHAT[kind].load_folder(folder)
    return _native.load_folder(folder, NATIVE[kind].tokenizer())


def _hf_config(folder: Path):
    """The HF config of a chat organism's folder, or None (a TransformerLens organism)."""
    kind = folder_kind(folder)
    return CHAT[kind].hf_config(folder) if kind in CHAT else None


register_folder_loader(lambda folder: folder_kind(folder) is not None, load_folder, _hf_config)
