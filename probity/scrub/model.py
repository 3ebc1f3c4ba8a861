"""A transformer split into the additive terms of its residual stream.

Causal scrubbing treeifies a model through the residual stream: the input of every
receiver (a head's Q, K or V input, an MLP's input, the unembedding) is the sum of
the outputs of the components before it (embeddings, heads, MLPs) plus constant
biases, so one sender's term can be swapped in one receiver's input only.
``Decomposed`` holds a model in that form, with TransformerLens names:

    senders    hook_embed, hook_pos_embed, blocks.L.attn.hook_result[H], blocks.L.hook_mlp_out
    receivers  blocks.L.attn.hook_{q,k,v}_input[H], blocks.L.hook_mlp_in, output (the logits)

Each sender (and the output) is a ``Component``; ``Component.site`` is its ``Site``
(``Site("blocks.1.attn.hook_result", head=0)`` for head 1.0) and ``Decomposed.component(site)``
goes back, from a ``Site`` or any string ``Site.parse`` reads (``1.0``, ``mlp2``, ``embed``, ``pos``).

Two backends compute the components, and ``Decomposed``'s plain forward equals the
model's logits in both:

- TransformerLens' native transformer (what the probity organisms are), given as a
  ``TransformerBridge`` over it or as the ``NativeModel`` itself;
- Hugging Face pre-norm decoders of the Llama family (Llama, Mistral, Qwen2, Qwen3:
  RMSNorm, rotary positions, grouped-query attention, gated MLPs, Qwen3's per-head
  q/k norms) and GPT-2, given as the HF model or a ``TransformerBridge`` over one.
  Rotary models have no ``hook_pos_embed`` sender: positions enter inside every
  head's queries and keys. With grouped-query attention, a head's K and V inputs
  are still its own (the shared projection is applied to each head's input).

The model may live on any device, or across several (``device_map="auto"``): the residual stream
lives on ``Decomposed.device`` (the token embedding's), every op (embeddings, a layer's heads, an MLP,
the final norm, the unembedding) runs beside the weights it reads, and token and mask inputs may be
given on the CPU. On one device nothing is copied.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass

import torch

from probity.models.sites import Site

OUTPUT = "output"
EMBED, POS = "hook_embed", "hook_pos_embed"
KINDS = ("q", "k", "v")


@dataclass(frozen=True, order=True)
class Component:
    """One residual-stream sender (or the output): ``kind`` in embed/pos/head/mlp/output."""

    layer: int  # -1 for embeddings, n_layers for the output
    order: int  # heads before the MLP inside a layer
    kind: str
    head: int | None = None

    @property
    def site(self) -> Site:
        """This component as a ``Site``: ``Site("blocks.L.attn.hook_result", head=H)``,
        ``Site("blocks.L.hook_mlp_out")``, ``Site("hook_embed")``, ``Site("hook_pos_embed")`` or ``Site("output")``."""
        if self.kind == "head":
            return Site(f"blocks.{self.layer}.attn.hook_result", head=self.head)
        if self.kind == "mlp":
            return Site(f"blocks.{self.layer}.hook_mlp_out")
        return Site({"embed": EMBED, "pos": POS, "output": OUTPUT}[self.kind])

    @property
    def short(self) -> str:
        """The shorthand :func:`shorthand` writes for this component's site, e.g. ``1.0`` or ``mlp2``."""
        return shorthand(self.site)

    @property
    def name(self) -> str:
        """The site as the string ``str(Site)`` writes and ``Site.parse`` reads back:
        ``blocks.1.attn.hook_result[head=0]``, ``hook_embed``."""
        return str(self.site)

    @property
    def inputs(self) -> tuple[str, ...]:
        """The input kinds this component reads: q/k/v for a head, ``in`` for MLP and output."""
        return KINDS if self.kind == "head" else (() if self.kind in ("embed", "pos") else ("in",))

    def __str__(self) -> str:
        return self.name


def shorthand(site: Site | str) -> str:
    """A component's site as the shorthand ``Site.parse`` reads back: ``1.0`` (layer 1, head 0),
    ``mlp2``, ``embed``, ``pos`` or ``output``; any other site as ``str(site)``."""
    parsed = Site.parse(site)
    if parsed.head is not None and (found := re.fullmatch(r"blocks\.(\d+)\.attn\.hook_result", parsed.hook)):
        return f"{found[1]}.{parsed.head}"
    if parsed.head is None and (found := re.fullmatch(r"blocks\.(\d+)\.hook_mlp_out", parsed.hook)):
        return f"mlp{found[1]}"
    return {EMBED: "embed", POS: "pos", OUTPUT: "output"}.get(str(parsed), str(parsed))


def layer_and_head(site: Site | str) -> tuple[int, int]:
    """``(layer, head)`` of an attention head's site, without a model: ``"1.0"``,
    ``"blocks.1.attn.hook_result[0]"`` or ``Site("blocks.1.attn.hook_result", head=0)`` give ``(1, 0)``."""
    parsed = Site.parse(site)
    found = re.fullmatch(r"blocks\.(\d+)\.attn\.hook_result", parsed.hook)
    if found is None or parsed.head is None:
        raise ValueError(f"{site!r} is not an attention head's site; write it as '1.0' (layer 1, head 0)")
    return int(found[1]), parsed.head


class Decomposed:
    """A transformer as residual-stream components (see module doc)."""

    def __init__(self, model):
        inner = getattr(model, "original_model", model)
        self.weight_bytes = sum(p.numel() * p.element_size() for p in inner.parameters())
        if type(inner).__name__ == "NativeModel":
            self.backend = _Native(inner)
        elif getattr(getattr(inner, "config", None), "model_type", None) in _HFBackend.SUPPORTED:
            self.backend = _HFBackend(inner)
        else:
            raise TypeError(
                f"scrub needs a TransformerLens native model or an HF {'/'.join(_HFBackend.SUPPORTED)} decoder "
                f"(or a TransformerBridge over one), got {type(inner).__name__}"
            )
        b = self.backend
        self.n_layers, self.n_heads, self.d_head, self.attn_only = b.n_layers, b.n_heads, b.d_head, b.attn_only
        self.d_vocab, self.n_ctx, self.causal, self.d_model = b.d_vocab, b.n_ctx, b.causal, b.d_model
        self.components = [Component(-1, 0, "embed")] + [Component(-1, 1, "pos")] * b.has_pos
        for layer in range(self.n_layers):
            self.components += [Component(layer, 0, "head", h) for h in range(self.n_heads)]
            if not self.attn_only:
                self.components.append(Component(layer, 1, "mlp"))
        self.output = Component(self.n_layers, 0, "output")
        self.by_site = {c.site: c for c in self.components + [self.output]}

    @property
    def native(self) -> torch.nn.Module:
        """The plain TransformerLens ``NativeModel`` (native backend only)."""
        return self.backend.native

    @property
    def cfg(self):
        """The TransformerLens config (native backend) or the HF config."""
        return self.backend.cfg

    @property
    def device(self) -> torch.device:
        """Where the residual stream lives: the token embedding's device. Every output comes back here."""
        return self.backend.tok_embed.weight.device

    def _on(self, module: torch.nn.Module, fn, *args):
        """``fn(*args)`` run where ``module``'s weights are (the tensors among ``args`` moved there; a module
        without weights runs on ``device``), its output (a tensor or a tuple of them) moved back to ``device``.
        On a model split across devices each op runs beside its weights; on one device nothing moves
        (``Tensor.to`` returns the tensor itself when it is on the device already)."""
        weight = next(module.parameters(), None)
        where = self.device if weight is None else weight.device
        out = fn(*(a.to(where) if isinstance(a, torch.Tensor) else a for a in args))
        return tuple(o.to(self.device) for o in out) if isinstance(out, tuple) else out.to(self.device)

    # ---- names and graph -------------------------------------------------------------
    def component(self, site: Site | str) -> Component:
        """The component ``site`` names: a ``Site`` or any string ``Site.parse`` reads (a TransformerLens
        hook such as ``blocks.1.attn.hook_result[0]`` or ``blocks.0.hook_mlp_out``, the shorthands ``1.0``,
        ``mlp0``, ``embed``, ``pos``, or ``output``). Raises ``KeyError`` naming the valid sites."""
        parsed = Site.parse(site)
        if parsed.pos is not None:
            raise KeyError(f"site {site} selects positions; give positions on the hypothesis node instead")
        if parsed not in self.by_site:
            raise KeyError(f"unknown site {site!r}; valid sites: {', '.join(c.name for c in self.by_site.values())}")
        return self.by_site[parsed]

    def senders(self, receiver: Component) -> list[Component]:
        """Components whose outputs are summed into ``receiver``'s input (earlier in the residual stream)."""
        return [c for c in self.components if (c.layer, c.order) < (receiver.layer, receiver.order)]

    def below(self, upper: Component, lower: Component) -> bool:
        """Whether ``lower`` can feed ``upper`` (directly or through other components)."""
        return (lower.layer, lower.order) < (upper.layer, upper.order)

    # ---- component functions (pure, batched) ---------------------------------------
    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token embeddings ``[batch, pos, d_model]`` of ``tokens [batch, pos]`` (on any device)."""
        return self._on(self.backend.tok_embed, self.backend.embed, tokens)

    def pos_embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """Learned positional embeddings ``[batch, pos, d_model]`` (input independent; not for rotary models)."""
        return self._on(self.backend.pos, self.backend.pos_embed, tokens)

    def attn_bias(self, layer: int) -> torch.Tensor:
        """The attention output bias ``[d_model]`` of ``layer`` (zeros when it has none)."""
        return self.backend.attn_bias(layer).to(self.device)

    def mlp_bias(self, layer: int) -> torch.Tensor:
        """The MLP output bias ``[d_model]`` of ``layer`` (zeros when it has none)."""
        return self.backend.mlp_bias(layer).to(self.device)

    def bias(self, receiver: Component) -> torch.Tensor:
        """The constant part of ``receiver``'s input: the attention and MLP output biases below it ``[d_model]``."""
        total = torch.zeros(self.d_model, dtype=self.backend.dtype, device=self.device)
        for layer in range(min(receiver.layer + 1, self.n_layers)):
            if layer < receiver.layer or receiver.order > 0:
                total = total + self.attn_bias(layer)
            if not self.attn_only and layer < receiver.layer:
                total = total + self.mlp_bias(layer)
        return total

    def heads(
        self,
        layer: int,
        heads: list[int],
        q_in: torch.Tensor,
        k_in: torch.Tensor,
        v_in: torch.Tensor,
        key_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Outputs ``[batch, head, pos, d_model]`` of ``heads`` of ``layer`` (without the output bias), given
        per-head residual inputs ``[batch, head, pos, d_model]`` (or ``[batch, 1, pos, d_model]``, shared by all)
        for their queries, keys and values. ``key_mask [batch, pos]`` (bool, True = may be attended to) masks
        keys out, e.g. padding; a query with no key left attends to nothing (output 0)."""
        return self._attend(layer, heads, q_in, k_in, v_in, key_mask)[0]

    def _attend(self, layer, heads, q_in, k_in, v_in, key_mask) -> tuple[torch.Tensor, torch.Tensor]:
        """``heads``' outputs ``[batch, head, pos, d_model]`` and attention patterns ``[batch, head, pos, pos]``
        (query, key), as in ``heads``, computed where ``layer``'s weights are."""
        return self._on(self.backend.layers[layer], self._attention, layer, heads, q_in, k_in, v_in, key_mask)

    def _attention(self, layer, heads, q_in, k_in, v_in, key_mask) -> tuple[torch.Tensor, torch.Tensor]:
        """``_attend`` on inputs already on ``layer``'s device."""
        q, k, v, w_o = self.backend.qkv(layer, heads, q_in, k_in, v_in)
        scores = self.backend.scores(layer, q, k)
        if self.causal:
            p = scores.shape[-1]
            future = torch.ones(p, p, dtype=torch.bool, device=scores.device).triu(1)
            scores = scores.masked_fill(future, float("-inf"))
        if key_mask is None:
            pattern = scores.softmax(-1)
        else:  # a query whose keys are all masked gets nan from softmax: it attends to nothing
            pattern = scores.masked_fill(~key_mask[:, None, None, :], float("-inf")).softmax(-1).nan_to_num(0.0)
        z = pattern @ v  # [batch, head, pos, d_head]
        return torch.einsum("bnph,nhd->bnpd", z, w_o), pattern

    def all_heads(self, layer: int, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Outputs ``[batch, head, pos, d_model]`` of every head of ``layer`` on one residual input
        ``x [batch, pos, d_model]``."""
        x = x[:, None]  # one input for every head: normalised once, broadcast in the projections
        return self.heads(layer, list(range(self.n_heads)), x, x, x, key_mask)

    def mlp(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        """MLP output ``[batch, pos, d_model]`` (without the output bias) for residual input
        ``x [batch, pos, d_model]``."""
        return self._on(self.backend.layers[layer], self.backend.mlp, layer, x)

    def unembed(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[batch, pos, vocab]`` from the final residual stream ``x [batch, pos, d_model]``."""
        b = self.backend
        return self._on(b.head, b.head, self._on(b.final_norm, b.final_norm, x))

    # ---- clean forward ------------------------------------------------------------------
    @torch.no_grad()
    def run(
        self,
        tokens: torch.Tensor,
        keep: set[Component] | None = None,
        key_mask: torch.Tensor | None = None,
        patterns: dict[int, torch.Tensor] | None = None,
        upto: Component | None = None,
        streams: dict[Component, torch.Tensor | None] | None = None,
    ) -> tuple[torch.Tensor | None, dict[Component, torch.Tensor]]:
        """Plain forward on ``tokens [batch, pos]``: ``(logits [batch, pos, vocab], {component: output
        [batch, pos, d_model]})`` for the components in ``keep`` (all when ``None``); ``key_mask [batch, pos]``
        as in ``heads``. A ``patterns`` dict is filled with every layer's attention patterns
        ``{layer: [batch, head, pos, pos]}`` (query, key). With ``upto``, only the components below it (those
        that can feed its input) are computed, and the logits are None unless ``upto`` is the output. Each
        receiver that is a key of ``streams`` gets as its value the sum of its senders' outputs
        ``[batch, pos, d_model]``: the residual stream at its input, without the biases. ``tokens`` and
        ``key_mask`` may be on any device; every output is on ``device``."""
        b = self.backend
        outs: dict[Component, torch.Tensor] = {self.components[0]: self.embed(tokens)}
        if b.has_pos:
            outs[self.components[1]] = self.pos_embed(tokens)
        resid = sum(outs.values())

        def reach(layer: int, order: int) -> bool:
            """Record the stream at this point for the receivers there; whether to compute what reads it."""
            for c in streams or ():
                if (c.layer, c.order) == (layer, order):
                    streams[c] = resid - self.bias(c)
            return upto is None or (layer, order) < (upto.layer, upto.order)

        for layer in range(self.n_layers):
            if not reach(layer, 0):
                break
            x = resid[:, None]  # one input for every head, as in all_heads
            h, pattern = self._attend(layer, list(range(self.n_heads)), x, x, x, key_mask)
            if patterns is not None:
                patterns[layer] = pattern
            for i in range(self.n_heads):
                outs[Component(layer, 0, "head", i)] = h[:, i]
            resid = resid + h.sum(1) + self.attn_bias(layer)
            if self.attn_only:
                continue
            if not reach(layer, 1):
                break
            m = self.mlp(layer, resid)
            outs[Component(layer, 1, "mlp")] = m
            resid = resid + m + self.mlp_bias(layer)
        else:
            reach(self.n_layers, 0)
        logits = self.unembed(resid) if upto in (None, self.output) else None
        if keep is not None:
            outs = {c: v for c, v in outs.items() if c in keep}
        return logits, outs


class _Native:
    """Weights of a TransformerLens ``NativeModel`` (learned positions, pre-norm, plain MLPs)."""

    has_pos = True

    def __init__(self, native):
        self.native = native = _plain(native)
        cfg = self.cfg = native.cfg
        bad = {
            "rotary positions": native.pos is None,
            "grouped-query attention": (cfg.n_key_value_heads or cfg.n_heads) != cfg.n_heads,
            "soft caps": float(cfg.attn_scores_soft_cap) > 0 or float(cfg.output_logits_soft_cap) > 0,
            "gated MLPs": bool(cfg.gated_mlp),
        }
        if any(bad.values()):
            raise ValueError(
                f"scrub does not support native models with {', '.join(k for k, v in bad.items() if v)}; "
                "use a standard pre-norm model"
            )
        self.n_layers, self.n_heads, self.d_head, self.d_model = cfg.n_layers, cfg.n_heads, cfg.d_head, cfg.d_model
        self.attn_only, self.causal = bool(cfg.attn_only), cfg.attention_dir == "causal"
        self.d_vocab, self.n_ctx, self.dtype = cfg.d_vocab, cfg.n_ctx, native.tok_embed.weight.dtype
        self.tok_embed, self.pos, self.layers = native.tok_embed, native.pos, native.layers
        self.final_norm, self.head = native.ln_out, native.head

    def embed(self, tokens):
        return self.native.tok_embed(tokens)

    def pos_embed(self, tokens):
        return self.native.pos.weight[: tokens.shape[1]].expand(tokens.shape[0], -1, -1)

    def attn_bias(self, layer: int) -> torch.Tensor:
        return self.native.layers[layer].attn.o.bias.detach()

    def mlp_bias(self, layer: int) -> torch.Tensor:
        return self.native.layers[layer].mlp.fc_out.bias.detach()

    def scores(self, layer: int, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return q @ k.transpose(-1, -2) / self.native.layers[layer].attn.scale

    def qkv(self, layer, heads: list[int], q_in, k_in, v_in):
        """Per-head queries, keys, values ``[batch, head, pos, d_head]`` of ``heads`` and their W_O
        ``[head, d_head, d_model]``."""
        block = self.native.layers[layer]
        attn = block.attn
        normed = {}

        def project(lin: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
            if id(x) not in normed:  # q, k and v often share one input: normalise it once
                normed[id(x)] = block.ln1(x)
            w = lin.weight.view(self.n_heads, self.d_head, -1)[heads]  # [head, d_head, d_model]
            b = lin.bias.view(self.n_heads, self.d_head)[heads]
            return torch.einsum("bnpd,nhd->bnph", normed[id(x)], w) + b[None, :, None, :]

        w_o = attn.o.weight.view(-1, self.n_heads, self.d_head).permute(1, 2, 0)[heads]
        return project(attn.q, q_in), project(attn.k, k_in), project(attn.v, v_in), w_o

    def mlp(self, layer, x):
        block = self.native.layers[layer]
        mlp = block.mlp
        mid = mlp.act(mlp.fc_in(block.ln2(x)))
        if mlp.ln is not None:
            mid = mlp.ln(mid)
        return mid @ mlp.fc_out.weight.T


class _HFBackend:
    """Weights of an HF Llama-family decoder or GPT-2, read from its own modules (see module doc)."""

    SUPPORTED = ("llama", "mistral", "qwen2", "qwen3", "gpt2")
    causal = True

    def __init__(self, model):
        from probity.models.decoder import decoder_parts

        self.hf = model = _plain(model) if _wrapped(model) else model.eval()
        cfg = model.config
        self.cfg = cfg
        parts = decoder_parts(model)
        self.tok_embed, self.pos, self.layers, self.final_norm = (
            parts.embed,
            parts.pos_embed,
            parts.layers,
            parts.final_norm,
        )
        self.head = model.lm_head
        self.gpt2 = cfg.model_type == "gpt2"
        self.has_pos, self.attn_only = self.pos is not None, False
        self.n_layers = len(self.layers)
        self.n_heads = cfg.num_attention_heads
        self.d_model = cfg.hidden_size
        self.d_head = getattr(cfg, "head_dim", None) or self.d_model // self.n_heads
        self.n_kv = getattr(cfg, "num_key_value_heads", None) or self.n_heads
        self.d_vocab = cfg.vocab_size
        window = getattr(cfg, "sliding_window", None) if getattr(cfg, "use_sliding_window", True) else None
        self.n_ctx = min(cfg.max_position_embeddings, window or cfg.max_position_embeddings)
        self.dtype = self.tok_embed.weight.dtype
        if getattr(cfg, "final_logit_softcapping", None) or getattr(cfg, "attn_logit_softcapping", None):
            raise ValueError("scrub does not support soft-capped logits")
        if self.gpt2 and cfg.scale_attn_by_inverse_layer_idx:
            raise ValueError("scrub does not support GPT-2's scale_attn_by_inverse_layer_idx")
        if not self.gpt2:
            self.rotary = parts.base.rotary_emb
            self.rope = sys.modules[type(self.layers[0].self_attn).__module__].apply_rotary_pos_emb

    def embed(self, tokens):
        return self.tok_embed(tokens)

    def pos_embed(self, tokens):
        return self.pos.weight[: tokens.shape[1]].expand(tokens.shape[0], -1, -1)

    def _attn(self, layer):
        block = self.layers[layer]
        return block.attn if self.gpt2 else block.self_attn

    def attn_bias(self, layer: int) -> torch.Tensor:
        return self._out_bias(self._attn(layer).c_proj if self.gpt2 else self._attn(layer).o_proj)

    def mlp_bias(self, layer: int) -> torch.Tensor:
        mlp = self.layers[layer].mlp
        return self._out_bias(mlp.c_proj if self.gpt2 else mlp.down_proj)

    def _out_bias(self, out: torch.nn.Module) -> torch.Tensor:
        """The bias ``[d_model]`` of output projection ``out``, or zeros beside its weight when it has none."""
        if out.bias is None:
            return torch.zeros(self.d_model, dtype=self.dtype, device=out.weight.device)
        return out.bias.detach()

    def scores(self, layer: int, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return (q @ k.transpose(-1, -2)) * self._attn(layer).scaling

    def _weights(self, layer):
        """``(W_q [head, d_head, d_model], b_q, W_k, b_k, W_v, b_v, W_o [head, d_head, d_model])``: W_k and W_v
        have one head per K/V group (grouped-query attention); biases may be None."""
        attn, H, KV, dh, d = self._attn(layer), self.n_heads, self.n_kv, self.d_head, self.d_model
        if self.gpt2:  # Conv1D: y = x @ W + b with W [d_model, 3 * d_model] = q | k | v
            w, b = attn.c_attn.weight, attn.c_attn.bias
            split = [
                (w[:, i * d : (i + 1) * d].T.reshape(H, dh, d), b[i * d : (i + 1) * d].view(H, dh)) for i in range(3)
            ]
            return (*split[0], *split[1], *split[2], attn.c_proj.weight.view(H, dh, d))

        def lin(m, n):
            return m.weight.view(n, dh, d), None if m.bias is None else m.bias.view(n, dh)

        w_o = attn.o_proj.weight.view(d, H, dh).permute(1, 2, 0)
        return (*lin(attn.q_proj, H), *lin(attn.k_proj, KV), *lin(attn.v_proj, KV), w_o)

    def qkv(self, layer, heads: list[int], q_in, k_in, v_in):
        """Per-head queries, keys, values ``[batch, head, pos, d_head]`` of ``heads`` and their W_O
        ``[head, d_head, d_model]``; rotary models get their q/k norms and rotary positions here."""
        block, attn = self.layers[layer], self._attn(layer)
        norm = block.ln_1 if self.gpt2 else block.input_layernorm
        wq, bq, wk, bk, wv, bv, w_o = self._weights(layer)
        kv = [h // (self.n_heads // self.n_kv) for h in heads]  # each head's K/V group
        normed = {}

        def project(x, w, b, sel: list[int]):
            """``x [batch, 1 or head, pos, d_model]`` through projections ``w[sel]``: ``[batch, head, pos, d_head]``."""
            if id(x) not in normed:
                normed[id(x)] = norm(x)
            x = normed[id(x)]
            if x.shape[1] == 1:  # one input for every head: one matmul per distinct projection (a K/V group), then pick
                uniq = sorted(set(sel))
                y = (x[:, 0] @ w[uniq].flatten(0, 1).T).unflatten(-1, (len(uniq), -1)).transpose(1, 2)
                y = y[:, [uniq.index(s) for s in sel]]
            else:
                y = torch.einsum("bnpd,nhd->bnph", x, w[sel])
            return y if b is None else y + b[sel][None, :, None, :]

        q, k, v = project(q_in, wq, bq, heads), project(k_in, wk, bk, kv), project(v_in, wv, bv, kv)
        if not self.gpt2:
            if hasattr(attn, "q_norm"):
                q, k = attn.q_norm(q), attn.k_norm(k)
            positions = torch.arange(q.shape[2], device=q.device)[None]
            cos, sin = (x.to(q.device) for x in self.rotary(q, positions))  # the rotary module may sit elsewhere
            q, k = self.rope(q, k, cos, sin)
        return q, k, v, w_o[heads]

    def mlp(self, layer, x):
        block = self.layers[layer]
        out = block.mlp(block.ln_2(x) if self.gpt2 else block.post_attention_layernorm(x))
        return out - self.mlp_bias(layer)


def _wrapped(model: torch.nn.Module) -> bool:
    """Whether a ``TransformerBridge`` has rewired ``model``'s modules."""
    return any("_original_component" in k for k in model.state_dict())


def _plain(model: torch.nn.Module) -> torch.nn.Module:
    """A plain copy (same class, same config) of a model a ``TransformerBridge`` wraps: wrapping
    rewires the module's children through hook components, which are slow to call (and hide
    the HF modules' own helpers); the weights are the same."""
    state = {
        k.replace("._original_component", "").replace("_original_component.", ""): v
        for k, v in model.state_dict().items()
    }
    config = model.cfg if type(model).__name__ == "NativeModel" else model.config
    weight = next(model.parameters())
    plain = type(model)(config).to(weight.device, weight.dtype)
    missing, _aliases = plain.load_state_dict(state, strict=False)  # the bridge adds alias names (mlp.in, ...)
    if missing:
        raise ValueError(f"could not read weights {missing[:3]} from the model")
    return plain.eval()
