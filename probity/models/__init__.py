"""The shared model layer: loading, named activation sites, caching and patching.

Public API::

    load(name_or_path) -> (model, tokenizer)     # "smollm2-135m", organism, HF name or path
    load_tokenizer(name_or_path)                 # its tokenizer, without the weights where it can
    tiny(arch, seed) -> (model, tokenizer)        # tiny random Qwen3 / Llama / GPT-2, offline
    to_bridge(model, tokenizer)                   # TransformerLens TransformerBridge
    Site(hook, head=None, pos=None), Site.resid(K)
    sites(model) -> [hook names]
    input_device(model) -> torch.device           # where input ids go (the input embeddings' device)
    cache(model, inputs, sites) -> {str(site): tensor}
    patch(model, inputs, {site: tensor | fn}) -> logits
    patching(model, {site: tensor | fn}), caching(model, sites)   # context managers
    Checkpointer(folder)                          # atomic, resumable checkpoints
    register_loader(name, loader), registered()   # load(name) for your own models; the organisms register here
    ChatClient(base_url, model)                   # prompt -> reply from an OpenAI-compatible endpoint

Submodules the instruments share: ``chat`` (chat templates, response ids, end tokens, padding),
``decoder`` (where an HF decoder keeps its layers), ``training`` (the one training loop).
"""

from probity.models.checkpoint import Checkpointer, atomic_torch_save
from probity.models.client import ChatClient, EndpointError
from probity.models.load import (
    SMOLLM2,
    load,
    load_tokenizer,
    register_loader,
    registered,
    smollm2_gguf,
    tiny,
    to_bridge,
    word_tokenizer,
)
from probity.models.sites import (
    PatchError,
    Site,
    SiteError,
    cache,
    caching,
    input_device,
    model_dtype,
    patch,
    patching,
    run,
    sites,
)

__all__ = [
    "SMOLLM2",
    "ChatClient",
    "Checkpointer",
    "EndpointError",
    "atomic_torch_save",
    "PatchError",
    "Site",
    "SiteError",
    "cache",
    "caching",
    "input_device",
    "load",
    "load_tokenizer",
    "register_loader",
    "registered",
    "model_dtype",
    "patch",
    "patching",
    "run",
    "sites",
    "smollm2_gguf",
    "tiny",
    "to_bridge",
    "word_tokenizer",
]
