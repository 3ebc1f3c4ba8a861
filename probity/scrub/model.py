"""A transformer split into the additive terms of its residual stream.

Causal scrubbing treeifies a model through the residual stream: the input of every
receiver (a head's Q, K or V input, an MLP's input, the unembedding) is the sum of
the outputs of the components before it (embeddings, heads, MLPs) plus constant
biases, so one sender's term can be swapped in one receiver's input only.
``Decomposed`` holds a model in that form, with TransformerLens names:

    senders    hook_embed, hook_pos_embed, blocks.L.attn.hook_result[H], blocks.L.hook_mlp_out
    receivers  blocks.L.attn.hook_{q,k,v}_input[H], blocks.L.hook_mlp_in, output (the logits)

It is built from a ``TransformerBridge`` over TransformerLens' native transformer (what
the probity organisms are) or from that ``NativeModel`` directly; its plain forward
equals the bridge's logits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

OUTPUT = "output"
EMBED, POS = "hook_embed", "hook_pos_embed"
KINDS = ("q", "k", "v")
_HEAD = re.compile(r"^(?:blocks\.)?(\d+)\.(?:attn\.hook_result\[)?(\d+)\]?$")
_MLP = re.compile(r"^(?:blocks\.(\d+)\.hook_mlp_out|mlp(\d+))$")


@dataclass(frozen=True, order=True)
class Component:
    """One residual-stream sender (or the output): ``kind`` in embed/pos/head/mlp/output."""

    layer: int  # -1 for embeddings, n_layers for the output
    order: int  # heads before the MLP inside a layer
    kind: str
    head: int | None = None

    @property
    def name(self) -> str:
        if self.kind == "head":
            return f"blocks.{self.layer}.attn.hook_result[{self.head}]"
        if self.kind == "mlp":
            return f"blocks.{self.layer}.hook_mlp_out"
        return {"embed": EMBED, "pos": POS, "output": OUTPUT}[self.kind]

    @property
    def inputs(self) -> tuple[str, ...]:
        """The input kinds this component reads: q/k/v for a head, ``in`` for MLP and output."""
        return KINDS if self.kind == "head" else (() if self.kind in ("embed", "pos") else ("in",))

    def __str__(self) -> str:
        return self.name


class Decomposed:
    """A native-TransformerLens transformer as residual-stream components (see module doc)."""

    def __init__(self, model):
        native = getattr(model, "original_model", model)
        if type(native).__name__ != "NativeModel":
            raise TypeError(f"scrub needs a TransformerLens native model (or a bridge over one), got {type(native).__name__}; "
                            "build organisms with probity.organisms or TransformerBridge.boot_native")
        self.native = native = _plain(native)
        cfg = native.cfg
        bad = {"rotary positions": native.pos is None, "grouped-query attention": (cfg.n_key_value_heads or cfg.n_heads) != cfg.n_heads,
               "soft caps": float(cfg.attn_scores_soft_cap) > 0 or float(cfg.output_logits_soft_cap) > 0,
               "gated MLPs": bool(cfg.gated_mlp)}
        if any(bad.values()):
            raise ValueError(f"scrub does not support {', '.join(k for k, v in bad.items() if v)} yet; use a standard pre-norm model")
        self.native = native.eval()
        self.cfg = cfg
        self.n_layers, self.n_heads, self.d_head = cfg.n_layers, cfg.n_heads, cfg.d_head
        self.attn_only = bool(cfg.attn_only)
        self.causal = cfg.attention_dir == "causal"
        self.components = [Component(-1, 0, "embed"), Component(-1, 1, "pos")]
        for layer in range(self.n_layers):
            self.components += [Component(layer, 0, "head", h) for h in range(self.n_heads)]
            if not self.attn_only:
                self.components.append(Component(layer, 1, "mlp"))
        self.output = Component(self.n_layers, 0, "output")
        self.by_name = {c.name: c for c in self.components + [self.output]}

    # ---- names and graph -------------------------------------------------------------
    def parse(self, site: str) -> Component:
        """The component a site string names: a TransformerLens hook (``blocks.1.attn.hook_result[0]``,
        ``blocks.0.hook_mlp_out``, ``hook_embed``, ``hook_pos_embed``, ``output``) or shorthand
        ``1.0`` (layer 1, head 0), ``mlp0``, ``embed``, ``pos``."""
        s = site.strip()
        s = {"embed": EMBED, "tok": EMBED, "pos": POS, "pos_embed": POS, "unembed": OUTPUT, "logits": OUTPUT}.get(s, s)
        if (m := _HEAD.match(s)) is not None:
            s = f"blocks.{m.group(1)}.attn.hook_result[{m.group(2)}]"
        elif (m := _MLP.match(s)) is not None:
            s = f"blocks.{m.group(1) or m.group(2)}.hook_mlp_out"
        if s not in self.by_name:
            raise KeyError(f"unknown site {site!r}; valid sites: {', '.join(self.by_name)}")
        return self.by_name[s]

    def senders(self, receiver: Component) -> list[Component]:
        """Components whose outputs are summed into ``receiver``'s input (earlier in the residual stream)."""
        return [c for c in self.components if (c.layer, c.order) < (receiver.layer, receiver.order)]

    def below(self, upper: Component, lower: Component) -> bool:
        """Whether ``lower`` can feed ``upper`` (directly or through other components)."""
        return (lower.layer, lower.order) < (upper.layer, upper.order)

    # ---- component functions (pure, batched) ---------------------------------------
    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token embeddings ``[b, p, d]``."""
        return self.native.tok_embed(tokens)

    def pos_embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """Positional embeddings ``[b, p, d]`` (input independent)."""
        return self.native.pos.weight[: tokens.shape[1]].expand(tokens.shape[0], -1, -1)

    def bias(self, receiver: Component) -> torch.Tensor:
        """The constant part of ``receiver``'s input: the attention and MLP output biases below it ``[d]``."""
        total = torch.zeros(self.cfg.d_model)
        for layer in range(min(receiver.layer + 1, self.n_layers)):
            if layer < receiver.layer or receiver.order > 0:
                total = total + self.native.layers[layer].attn.o.bias.detach()
            if not self.attn_only and layer < receiver.layer:
                total = total + self.native.layers[layer].mlp.fc_out.bias.detach()
        return total

    def heads(self, layer: int, heads: list[int], q_in: torch.Tensor, k_in: torch.Tensor, v_in: torch.Tensor) -> torch.Tensor:
        """Outputs ``[b, n, p, d]`` of ``heads`` of ``layer`` (without the output bias), given per-head
        residual inputs ``[b, n, p, d]`` for their queries, keys and values."""
        block = self.native.layers[layer]
        attn = block.attn
        idx = torch.tensor(heads)

        normed = {}

        def project(lin: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
            if id(x) not in normed:  # q, k and v often share one input: normalise it once
                normed[id(x)] = block.ln1(x)
            w = lin.weight.view(self.n_heads, self.d_head, -1)[idx]  # [n, dh, d]
            b = lin.bias.view(self.n_heads, self.d_head)[idx]
            return torch.einsum("bnpd,nhd->bnph", normed[id(x)], w) + b[None, :, None, :]

        q, k, v = project(attn.q, q_in), project(attn.k, k_in), project(attn.v, v_in)
        return self._attend(layer, q, k, v, idx)

    def _attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Per-head outputs ``[b, n, p, d]`` from queries, keys, values ``[b, n, p, dh]`` of heads ``idx``."""
        attn = self.native.layers[layer].attn
        scores = q @ k.transpose(-1, -2) / attn.scale
        if self.causal:
            p = scores.shape[-1]
            scores = scores.masked_fill(torch.ones(p, p, dtype=torch.bool).triu(1), float("-inf"))
        z = scores.softmax(-1) @ v  # [b, n, p, dh]
        w_o = attn.o.weight.view(-1, self.n_heads, self.d_head).permute(1, 2, 0)[idx]  # [n, dh, d]
        return torch.einsum("bnph,nhd->bnpd", z, w_o)

    def all_heads(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        """Outputs ``[b, n_heads, p, d]`` of every head of ``layer`` on one residual input ``x [b, p, d]``."""
        block = self.native.layers[layer]
        h = block.ln1(x)
        b, p, _ = x.shape

        def split(lin: torch.nn.Linear) -> torch.Tensor:
            return lin(h).view(b, p, self.n_heads, self.d_head).transpose(1, 2)

        return self._attend(layer, split(block.attn.q), split(block.attn.k), split(block.attn.v), torch.arange(self.n_heads))

    def mlp(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        """MLP output ``[b, p, d]`` (without the output bias) for residual input ``x``."""
        block = self.native.layers[layer]
        mlp = block.mlp
        mid = mlp.act(mlp.fc_in(block.ln2(x)))
        if mlp.ln is not None:
            mid = mlp.ln(mid)
        return mid @ mlp.fc_out.weight.T

    def unembed(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[b, p, vocab]`` from the final residual stream ``x``."""
        return self.native.head(self.native.ln_out(x))

    # ---- clean forward ------------------------------------------------------------------
    @torch.no_grad()
    def run(self, tokens: torch.Tensor, keep: set[Component] | None = None) -> tuple[torch.Tensor, dict[Component, torch.Tensor]]:
        """Plain forward on ``tokens [b, p]``: ``(logits [b, p, vocab], {component: output [b, p, d]})``
        for the components in ``keep`` (all when ``None``)."""
        outs: dict[Component, torch.Tensor] = {}
        resid = self.embed(tokens) + self.pos_embed(tokens)
        outs[self.components[0]] = self.embed(tokens)
        outs[self.components[1]] = self.pos_embed(tokens)
        for layer in range(self.n_layers):
            h = self.all_heads(layer, resid)
            for i in range(self.n_heads):
                outs[Component(layer, 0, "head", i)] = h[:, i]
            resid = resid + h.sum(1) + self.native.layers[layer].attn.o.bias
            if not self.attn_only:
                m = self.mlp(layer, resid)
                outs[Component(layer, 1, "mlp")] = m
                resid = resid + m + self.native.layers[layer].mlp.fc_out.bias
        logits = self.unembed(resid)
        if keep is not None:
            outs = {c: v for c, v in outs.items() if c in keep}
        return logits, outs


def _plain(native: torch.nn.Module) -> torch.nn.Module:
    """A plain ``NativeModel`` with the weights of ``native``: wrapping in a bridge rewires the module's
    children through hook components, which are slow to call; the weights are the same."""
    from transformer_lens.model_bridge.sources.native.model import NativeModel

    state = {k.replace("._original_component", "").replace("_original_component.", ""): v
             for k, v in native.state_dict().items()}
    plain = NativeModel(native.cfg)
    missing, _aliases = plain.load_state_dict(state, strict=False)  # the bridge adds alias names (mlp.in, ...)
    if missing:
        raise ValueError(f"could not read weights {missing[:3]} from the model")
    return plain.eval()
