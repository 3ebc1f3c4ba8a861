"""Where the parts of a Hugging Face decoder-only LM live.

Every instrument that reads or rewires an HF model (site hooks, the scrub decomposition,
the NLA reconstructor cut after block K) asks this module, so a new architecture family
is one row of ``FAMILIES``:

=================================  ============  ========  ==============  =======  ==================
family                             base          layers    token embed     pos      final norm
=================================  ============  ========  ==============  =======  ==================
Llama, Mistral, Qwen2/3, Gemma     ``model``     ``layers``  ``embed_tokens``  --       ``norm``
GPT-2                              ``transformer``  ``h``   ``wte``         ``wpe``  ``ln_f``
GPT-NeoX, Pythia                   ``gpt_neox``  ``layers``  ``embed_in``    --       ``final_layer_norm``
=================================  ============  ========  ==============  =======  ==================

The model may be the causal LM (``LlamaForCausalLM``) or its base model (``LlamaModel``, e.g.
``AutoModel.from_pretrained``).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


class UnsupportedModelError(TypeError):
    """A model whose decoder layout probity does not know."""


@dataclass(frozen=True)
class Family:
    """Attribute names of one architecture family (see the module table)."""

    base: str
    layers: str
    embed: str
    pos_embed: str | None
    final_norm: str


FAMILIES = (
    Family("model", "layers", "embed_tokens", None, "norm"),
    Family("transformer", "h", "wte", "wpe", "ln_f"),
    Family("gpt_neox", "layers", "embed_in", None, "final_layer_norm"),
)


@dataclass(frozen=True)
class DecoderParts:
    """The parts of one decoder: ``base`` holds the embeddings, the blocks and the final norm
    (as ``base.<family.layers>`` and ``base.<family.final_norm>``)."""

    base: nn.Module
    family: Family

    @property
    def embed(self) -> nn.Module:
        """The token embedding (ids ``[batch, pos]`` -> ``[batch, pos, d_model]``)."""
        return getattr(self.base, self.family.embed)

    @property
    def pos_embed(self) -> nn.Module | None:
        """The learned position embedding, or None (rotary models)."""
        return None if self.family.pos_embed is None else getattr(self.base, self.family.pos_embed, None)

    @property
    def layers(self) -> nn.ModuleList:
        """The decoder blocks, in order."""
        return getattr(self.base, self.family.layers)

    @property
    def final_norm(self) -> nn.Module | None:
        """The norm between the last block and the unembedding."""
        return getattr(self.base, self.family.final_norm, None)


def decoder_parts(model: nn.Module) -> DecoderParts:
    """The :class:`DecoderParts` of an HF causal LM or base model; raises
    :class:`UnsupportedModelError` naming the supported families otherwise."""
    for family in FAMILIES:
        for base in (getattr(model, family.base, None), model):
            if base is not None and hasattr(base, family.layers) and hasattr(base, family.embed):
                return DecoderParts(base, family)
    raise UnsupportedModelError(
        f"probity cannot find the decoder layers of {type(model).__name__}: supported are Llama/Qwen/Mistral "
        "(model.layers), GPT-2 (transformer.h) and GPT-NeoX (gpt_neox.layers); for other models wrap them with "
        "probity.models.to_bridge"
    )
