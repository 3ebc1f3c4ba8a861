"""Named activation sites, and caching / patching them on HF models and TransformerLens bridges.

A *site* is a TransformerLens hook name (``blocks.1.attn.hook_z``) with an optional
head index and position index. On a ``TransformerBridge`` every hook point of the
bridge is a site. On a plain Hugging Face model (Llama / Qwen / Mistral / GPT-2
families) probity maps the TransformerLens names onto the HF modules:

=============================  ===========================================  =====================
site                           HF tensor                                    shape
=============================  ===========================================  =====================
hook_embed                     token embedding output                       [batch, pos, d_model]
hook_pos_embed                 learned position embedding (GPT-2)           [batch, pos, d_model]
blocks.K.hook_resid_pre        input of block K (= ``hidden_states[K]``)    [batch, pos, d_model]
blocks.K.hook_attn_out         attention output of block K                  [batch, pos, d_model]
blocks.K.hook_mlp_out          MLP output of block K                        [batch, pos, d_model]
blocks.K.hook_resid_post       output of block K (= ``hidden_states[K+1]``  [batch, pos, d_model]
                               before the final norm)
blocks.K.attn.hook_q/k/v       query/key/value projections (pre-rotary)     [batch, pos, head, d_head]
blocks.K.attn.hook_z           attention-weighted values, input of W_O      [batch, pos, head, d_head]
blocks.K.mlp.hook_post         MLP hidden activation, input of W_out        [batch, pos, d_mlp]
ln_final.hook_normalized       final norm output                            [batch, pos, d_model]
=============================  ===========================================  =====================
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from probity.models.decoder import decoder_parts

Index = int | Sequence[int] | slice | None
PatchValue = torch.Tensor | Callable[[torch.Tensor], torch.Tensor]


class SiteError(ValueError):
    """A site name that the model does not have, or an index outside its range."""


class PatchError(ValueError):
    """A patch value with the wrong shape, dtype or non-finite entries."""


@dataclass(frozen=True)
class Site:
    """An activation: a TransformerLens hook name, optionally one head and some positions.

    ``head`` selects along the head axis of per-head hooks (``hook_z``, ``hook_q``, ...);
    ``pos`` selects along the position axis (an int, a list of ints or a slice)."""

    hook: str
    head: int | None = None
    pos: Index = None

    def __post_init__(self):
        if isinstance(self.pos, list):  # keep Site hashable: usable as a dict key in patch()
            object.__setattr__(self, "pos", tuple(self.pos))

    @staticmethod
    def resid(layer: int, pos: Index = None) -> Site:
        """The residual stream after block ``layer`` (HF ``hidden_states[layer + 1]``)."""
        return Site(f"blocks.{layer}.hook_resid_post", pos=pos)

    @staticmethod
    def parse(site: Site | str) -> Site:
        """A ``Site`` from a ``Site`` (returned as is) or a string: a hook name or a shorthand.

        This is the one place probity reads the shorthands:

        =====================================  ======================================================
        string                                 Site
        =====================================  ======================================================
        ``1.0``                                ``Site("blocks.1.attn.hook_result", head=0)``: layer 1,
                                               head 0 (the head's output, its term in the residual
                                               stream)
        ``HOOK[0]``, ``HOOK[head=0]``          ``Site("HOOK", head=0)``, e.g.
                                               ``blocks.1.attn.hook_result[0]``, ``blocks.0.attn.hook_z[1]``
        ``mlp2``                               ``Site("blocks.2.hook_mlp_out")``
        ``embed`` (also ``tok``)               ``Site("hook_embed")``
        ``pos`` (also ``pos_embed``)           ``Site("hook_pos_embed")``
        ``logits`` (also ``unembed``)          ``Site("output")``: the logits (no hook; scrub's root)
        any other string                       ``Site(string)``: a hook name, e.g. ``blocks.2.hook_mlp_out``
        =====================================  ======================================================

        Surrounding whitespace is ignored. For a site without positions, ``Site.parse(str(site)) == site``."""
        if isinstance(site, Site):
            return site
        if not isinstance(site, str):
            raise TypeError(f"a site is a Site or a hook-name string, got {type(site).__name__}")
        text = site.strip()
        aliases = {
            "embed": "hook_embed",
            "tok": "hook_embed",
            "pos": "hook_pos_embed",
            "pos_embed": "hook_pos_embed",
            "logits": "output",
            "unembed": "output",
        }
        if text in aliases:
            return Site(aliases[text])
        if m := re.fullmatch(r"(\d+)\.(\d+)", text):
            return Site(f"blocks.{m[1]}.attn.hook_result", head=int(m[2]))
        if m := re.fullmatch(r"mlp(\d+)", text):
            return Site(f"blocks.{m[1]}.hook_mlp_out")
        if m := re.fullmatch(r"(.+)\[(?:head=)?(-?\d+)\]", text):
            return Site(m[1], head=int(m[2]))
        return Site(text)

    def __str__(self) -> str:
        extra = [f"head={self.head}"] * (self.head is not None)
        if self.pos is not None:
            pos = self.pos if not isinstance(self.pos, slice) else f"{self.pos.start}:{self.pos.stop}"
            extra.append(f"pos={pos}")
        return self.hook + (f"[{','.join(extra)}]" if extra else "")

    def _axes(self) -> tuple[int, int]:
        """(position axis, head axis) of this hook's activation."""
        if self.hook.endswith(("hook_pattern", "hook_attn_scores")):
            return 2, 1
        return 1, 2

    def select(self, act: torch.Tensor) -> tuple:
        """The indexing tuple that picks this site's head and positions out of ``act``."""
        pos_axis, head_axis = self._axes()
        index: list = [slice(None)] * act.ndim
        if self.head is not None:
            if act.ndim < 4:  # per-head hooks are [batch, pos, head, d_head] or [batch, head, pos_q, pos_k]
                raise SiteError(f"{self}: hook {self.hook} has no head axis (shape {tuple(act.shape)}); drop head=")
            if not -act.shape[head_axis] <= self.head < act.shape[head_axis]:
                raise SiteError(
                    f"{self}: head {self.head} out of range; the model has {act.shape[head_axis]} heads here"
                )
            index[head_axis] = self.head
        if self.pos is not None:
            n = act.shape[pos_axis]
            positions = (
                [self.pos] if isinstance(self.pos, int) else ([] if isinstance(self.pos, slice) else list(self.pos))
            )
            if any(not -n <= p < n for p in positions):
                raise SiteError(f"{self}: position out of range for a sequence of length {n}")
            index[pos_axis] = self.pos if not isinstance(self.pos, (list, tuple)) else torch.tensor(self.pos)
        return tuple(index)


# ---------------------------------------------------------------------------------------
# Hook points: where each site lives in a concrete model.


@dataclass(frozen=True)
class _HookPoint:
    module: nn.Module
    reads_input: bool  # True: the module's first input; False: its (first) output
    n_heads: int | None = None  # reshape [batch, pos, head * d_head] -> [batch, pos, head, d_head]
    fused: tuple[int, int] | None = None  # (i, n): the i-th of n equal chunks of the last dim
    lens: bool = False  # a TransformerLens HookPoint: hook through its own API (it reshapes)


def _is_bridge(model: nn.Module) -> bool:
    return hasattr(model, "hook_dict") and hasattr(model, "run_with_hooks")


def _hf_hook_points(model: nn.Module) -> dict[str, _HookPoint]:
    parts = decoder_parts(model)
    embed, pos_embed, layers, final_norm = parts.embed, parts.pos_embed, parts.layers, parts.final_norm
    cfg = model.config
    n_heads = getattr(cfg, "num_attention_heads", None) or cfg.n_head
    n_kv = getattr(cfg, "num_key_value_heads", None) or n_heads
    points = {"hook_embed": _HookPoint(embed, False)}
    if pos_embed is not None:
        points["hook_pos_embed"] = _HookPoint(pos_embed, False)
    for k, layer in enumerate(layers):
        b = f"blocks.{k}"
        attn = getattr(layer, "self_attn", None) or layer.attn
        points[f"{b}.hook_resid_pre"] = _HookPoint(layer, True)
        if hasattr(attn, "q_proj"):
            points[f"{b}.attn.hook_q"] = _HookPoint(attn.q_proj, False, n_heads)
            points[f"{b}.attn.hook_k"] = _HookPoint(attn.k_proj, False, n_kv)
            points[f"{b}.attn.hook_v"] = _HookPoint(attn.v_proj, False, n_kv)
            points[f"{b}.attn.hook_z"] = _HookPoint(attn.o_proj, True, n_heads)
        else:  # GPT-2: fused c_attn -> q|k|v, then c_proj
            for i, name in enumerate("qkv"):
                points[f"{b}.attn.hook_{name}"] = _HookPoint(attn.c_attn, False, n_heads, (i, 3))
            points[f"{b}.attn.hook_z"] = _HookPoint(attn.c_proj, True, n_heads)
        points[f"{b}.hook_attn_out"] = _HookPoint(attn, False)
        mlp = layer.mlp
        points[f"{b}.mlp.hook_post"] = _HookPoint(getattr(mlp, "down_proj", None) or mlp.c_proj, True)
        points[f"{b}.hook_mlp_out"] = _HookPoint(mlp, False)
        points[f"{b}.hook_resid_post"] = _HookPoint(layer, False)
    if final_norm is not None:
        points["ln_final.hook_normalized"] = _HookPoint(final_norm, False)
    return points


def _hook_points(model: nn.Module) -> dict[str, _HookPoint]:
    if _is_bridge(model):
        return {name: _HookPoint(hp, False, lens=True) for name, hp in model.hook_dict.items()}
    return _hf_hook_points(model)


def sites(model: nn.Module) -> list[str]:
    """Every hook name the model exposes, in forward order where known."""
    return list(_hook_points(model))


def summarize_sites(names: Sequence[str]) -> str:
    """Compress ``blocks.0.x, blocks.1.x, ...`` into ``blocks.{0..N}.x`` for error messages."""
    groups: dict[str, list[int]] = {}
    for name in names:
        m = re.match(r"blocks\.(\d+)\.(.+)", name)
        key = f"blocks.{{}}.{m.group(2)}" if m else name
        groups.setdefault(key, []).append(int(m.group(1)) if m else -1)
    parts = []
    for key, layers in groups.items():
        if "{}" in key:
            span = f"{min(layers)}..{max(layers)}" if len(layers) > 1 else str(layers[0])
            parts.append(key.replace("{}", "{" + span + "}"))
        else:
            parts.append(key)
    return ", ".join(parts)


def resolve(model: nn.Module, site_list: Sequence[Site | str]) -> tuple[list[Site], dict[str, _HookPoint]]:
    """Parse sites and check each exists on ``model``; raise ``SiteError`` listing the valid ones."""
    points = _hook_points(model)
    parsed = [Site.parse(s) for s in site_list]
    for s in parsed:
        if s.hook not in points:
            raise SiteError(
                f"unknown site {s.hook!r} for {type(model).__name__}; valid sites: {summarize_sites(list(points))}"
            )
    return parsed, points


# ---------------------------------------------------------------------------------------
# Hooks.


@dataclass
class _LensRemover:
    """Removes one hook from a TransformerLens HookPoint (its own API removes all)."""

    hook_point: nn.Module
    handle: object

    def remove(self) -> None:
        self.handle.hook.remove()
        self.hook_point.fwd_hooks = [h for h in self.hook_point.fwd_hooks if h is not self.handle]


def _register(point: _HookPoint, edit: Callable[[torch.Tensor], torch.Tensor | None]):
    """Install a hook that shows ``edit`` the activation at ``point`` (per-head view where
    relevant) and writes back whatever ``edit`` returns (``None`` leaves it unchanged)."""

    def view(t: torch.Tensor) -> torch.Tensor:
        if point.fused is not None:
            i, n = point.fused
            t = t.chunk(n, dim=-1)[i]
        if point.n_heads is not None and t.shape[-1] % point.n_heads == 0:
            t = t.unflatten(-1, (point.n_heads, t.shape[-1] // point.n_heads))
        return t

    def unview(full: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
        if point.n_heads is not None and new.ndim == full.ndim + 1:
            new = new.flatten(-2)
        if point.fused is not None:
            i, n = point.fused
            chunks = list(full.chunk(n, dim=-1))
            chunks[i] = new
            new = torch.cat(chunks, dim=-1)
        return new

    def apply(t: torch.Tensor) -> torch.Tensor | None:
        new = edit(view(t))
        return None if new is None else unview(t, new)

    if point.lens:
        handle = point.module.add_hook(lambda act, hook: apply(act))
        return _LensRemover(point.module, handle)
    if point.reads_input:

        def pre_hook(module, args, kwargs):
            if args:
                new = apply(args[0])
                return None if new is None else ((new, *args[1:]), kwargs)
            new = apply(kwargs["hidden_states"])
            return None if new is None else (args, {**kwargs, "hidden_states": new})

        return point.module.register_forward_pre_hook(pre_hook, with_kwargs=True)

    def post_hook(module, args, output):
        first = output[0] if isinstance(output, tuple) else output
        new = apply(first)
        if new is None:
            return None
        return (new, *output[1:]) if isinstance(output, tuple) else new

    return point.module.register_forward_hook(post_hook)


def model_dtype(model: nn.Module) -> torch.dtype:
    return next(p.dtype for p in model.parameters() if p.is_floating_point())


def input_device(model: nn.Module) -> torch.device:
    """Where ``model``'s input ids go: the device of its input embeddings (for a model dispatched with
    ``device_map="auto"``, the GPU that holds them), else of its first parameter."""
    embed = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    weight = getattr(embed, "weight", None)
    return weight.device if isinstance(weight, torch.Tensor) else next(model.parameters()).device


def _check_value(site: Site, value: PatchValue, dtype: torch.dtype) -> None:
    if callable(value) and not isinstance(value, torch.Tensor):
        return
    if not isinstance(value, torch.Tensor):
        raise PatchError(
            f"patch for {site}: value must be a tensor or a function of the activation, got {type(value).__name__}"
        )
    if not value.is_floating_point():
        raise PatchError(f"patch for {site}: value has dtype {value.dtype}; pass a floating tensor (.to({dtype}))")
    if value.dtype != dtype:
        raise PatchError(
            f"patch for {site}: value has dtype {value.dtype} but the model runs in {dtype}; cast with .to({dtype})"
        )
    if not torch.isfinite(value).all():
        raise PatchError(f"patch for {site}: value contains NaN or inf; patch with finite activations")


@contextlib.contextmanager
def patching(model: nn.Module, patches: Mapping[Site | str, PatchValue]) -> Iterator[None]:
    """Within the block, replace each site's activation by a tensor (broadcast to the
    selected shape) or by ``fn(activation)``; hooks stay on for every forward pass
    (``model.generate`` included) and are removed on exit."""
    parsed, points = resolve(model, list(patches))
    values = list(patches.values())
    dtype = model_dtype(model)
    for site, value in zip(parsed, values):
        _check_value(site, value, dtype)
    handles = []

    def make_edit(site: Site, value: PatchValue):
        def edit(act: torch.Tensor) -> torch.Tensor:
            index = site.select(act)
            current = act[index]
            new = value(current) if callable(value) and not isinstance(value, torch.Tensor) else value
            if not isinstance(new, torch.Tensor):
                raise PatchError(f"patch function for {site} returned {type(new).__name__}; return a tensor")
            try:
                fits = torch.broadcast_shapes(new.shape, current.shape) == current.shape
            except RuntimeError:
                fits = False
            if not fits:
                raise PatchError(
                    f"patch for {site}: value has shape {tuple(new.shape)} but the site's activation has shape "
                    f"{tuple(current.shape)}; pass a tensor of that shape (or one that broadcasts to it)"
                )
            out = act.clone()
            out[index] = new.to(device=act.device, dtype=act.dtype)
            return out

        return edit

    try:
        for site, value in zip(parsed, values):
            handles.append(_register(points[site.hook], make_edit(site, value)))
        yield
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def caching(
    model: nn.Module, site_list: Sequence[Site | str], detach: bool = True
) -> Iterator[dict[str, torch.Tensor]]:
    """Within the block, record each site's activation of the latest forward pass into
    the yielded dict, keyed by ``str(site)``."""
    parsed, points = resolve(model, site_list)
    store: dict[str, torch.Tensor] = {}
    handles = []

    def make_edit(site: Site):
        def edit(act: torch.Tensor) -> None:
            value = act[site.select(act)]
            store[str(site)] = value.detach() if detach else value
            return None

        return edit

    try:
        for site in parsed:
            handles.append(_register(points[site.hook], make_edit(site)))
        yield store
    finally:
        for h in handles:
            h.remove()


def run(model: nn.Module, inputs) -> torch.Tensor:
    """Logits of ``model`` on token ids ``[batch, pos]`` or a tokenizer's batch dict:
    ``[batch, pos, vocab]``."""
    if isinstance(inputs, str) or (isinstance(inputs, list) and inputs and isinstance(inputs[0], str)):
        raise TypeError("pass token ids or a tokenizer batch (tokenizer(texts, return_tensors='pt')), not raw strings")
    if isinstance(inputs, torch.Tensor):
        if inputs.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"token ids must be an integer tensor, got {inputs.dtype}")
        out = model(inputs)
    else:
        out = (
            model(**inputs)
            if not _is_bridge(model)
            else model(inputs["input_ids"], attention_mask=inputs.get("attention_mask"))
        )
    return out if isinstance(out, torch.Tensor) else out.logits


def cache(model: nn.Module, inputs, site_list: Sequence[Site | str]) -> dict[str, torch.Tensor]:
    """Activations at ``site_list`` on ``inputs`` (no grad), keyed by ``str(site)``;
    shapes per the table in this module's docstring, reduced by head/pos selection."""
    with torch.no_grad(), caching(model, site_list) as store:
        run(model, inputs)
    return store


def patch(model: nn.Module, inputs, patches: Mapping[Site | str, PatchValue]) -> torch.Tensor:
    """Logits ``[batch, pos, vocab]`` with each site's activation replaced (see ``patching``)."""
    with torch.no_grad(), patching(model, patches):
        return run(model, inputs)
