"""The NLA sidecar: everything a checkpoint needs besides its weights.

Every checkpoint directory carries ``nla.json`` (an :class:`NLAConfig`): the
layer the activations come from, the verbalizer prompt and the placeholder token
whose input embedding the activation overwrites, the injection scale, the
reconstructor template and where the description goes in it. Loading reads these
back; nothing is hard-coded. Checkpoints in the released anchor format
(kitft/natural_language_autoencoders: ``nla_meta.yaml`` beside an HF model
directory) are mapped onto the same fields by :func:`from_anchor_meta`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import yaml

from probity.report import atomic_write_text

SIDECAR = "nla.json"
ANCHOR_SIDECAR = "nla_meta.yaml"
FORMAT = "probity-nla/2"  # /2 adds where and how the activation is injected, centring and an adapter base
READS = ("probity-nla/1", FORMAT)  # sidecars this version loads (a /1 one gets the /2 fields' defaults)
INJECT_MODES = ("replace", "add")


class MissingLayerError(ValueError):
    """An anchor sidecar that does not say which layer its activations come from."""


@dataclasses.dataclass
class NLAConfig:
    """Prompt templates, placeholder and scales shared by a verbalizer/reconstructor pair.

    ``av_prompt`` is the user-turn text of the verbalizer prompt; ``{placeholder}``
    marks where the placeholder token goes. ``ar_template`` is the raw text the
    reconstructor reads; ``{description}`` marks where the description goes, and
    the reconstructor reads the residual stream at its last token.
    ``injection_scale`` is the L2 norm the activation is rescaled to before
    injection (None in a sidecar file means sqrt(d_model)); ``mse_scale`` the norm
    both vectors get before the MSE (sqrt(d_model) makes MSE = 2(1 - cos)).
    ``target`` names the model the activations come from (for ``probity.models.load``).

    Where the activation enters the verbalizer: ``inject_layer`` is the block whose *input* it
    replaces at the placeholder's position (0: the input embedding, as in the NLA paper; ``layer + 1``:
    the same residual site it was read from, as in Patchscopes). ``inject_mode`` "replace" writes
    the activation rescaled to ``injection_scale``; "add" adds it to the hidden state h there,
    norm-matched (h + |h| a/|a|, as Activation Oracles do). ``centered``: the training mean is
    subtracted first (the checkpoint carries it in ``center.safetensors``).
    ``base``: the model (a ``probity.models.load`` name) under the verbalizer's LoRA adapter; when
    set, a checkpoint of LoRA-trained halves holds the adapters only (the reconstructor's sits on
    ``target`` cut after ``layer``), a few MB instead of two models.
    """

    layer: int
    d_model: int
    placeholder: str
    placeholder_id: int
    av_prompt: str = "Describe this activation: {placeholder}"
    ar_template: str = "Description: {description} . Activation:"
    injection_scale: float | None = None
    mse_scale: float | None = None
    max_new_tokens: int = 24
    placeholder_neighbors: tuple[int, int] | None = None
    explanation_tags: tuple[str, str] | None = None
    target: str = ""
    chat_template: bool = True
    inject_layer: int = 0
    inject_mode: str = "replace"
    centered: bool = False
    base: str = ""

    def __post_init__(self):
        if self.injection_scale is None:
            self.injection_scale = math.sqrt(self.d_model)
        if self.mse_scale is None:
            self.mse_scale = math.sqrt(self.d_model)
        if "{placeholder}" not in self.av_prompt:
            raise ValueError(f"av_prompt must contain '{{placeholder}}', got {self.av_prompt!r}")
        if "{description}" not in self.ar_template:
            raise ValueError(f"ar_template must contain '{{description}}', got {self.ar_template!r}")
        if self.layer < 0 or self.d_model <= 0 or self.injection_scale <= 0:
            raise ValueError(
                "need layer >= 0, d_model > 0 and injection_scale > 0, "
                f"got {self.layer}, {self.d_model}, {self.injection_scale}"
            )
        if self.inject_mode not in INJECT_MODES:
            raise ValueError(f"inject_mode must be one of {INJECT_MODES}, got {self.inject_mode!r}")
        if self.inject_layer < 0:
            raise ValueError(f"inject_layer must be >= 0 (0 = the input embedding), got {self.inject_layer}")
        if self.placeholder_neighbors is not None:
            self.placeholder_neighbors = tuple(self.placeholder_neighbors)
        if self.explanation_tags is not None:
            self.explanation_tags = tuple(self.explanation_tags)

    def save(self, directory: str | Path) -> Path:
        """Write ``nla.json`` into ``directory`` atomically; returns its path."""
        payload = {"format": FORMAT, **dataclasses.asdict(self)}
        return atomic_write_text(Path(directory) / SIDECAR, json.dumps(payload, indent=2))

    @classmethod
    def load(cls, directory: str | Path) -> NLAConfig:
        """Read the sidecar of a checkpoint directory (ours, or the anchor's ``nla_meta.yaml``)."""
        directory = Path(directory)
        if (directory / SIDECAR).is_file():
            data = json.loads((directory / SIDECAR).read_text())
            if data.pop("format", None) not in READS:
                raise ValueError(
                    f"{directory / SIDECAR} is not a {' or '.join(READS)} sidecar; re-save the checkpoint with this "
                    "probity version"
                )
            known = {f.name for f in dataclasses.fields(cls)}
            return cls(**{k: v for k, v in data.items() if k in known})
        if (directory / ANCHOR_SIDECAR).is_file():
            return from_anchor_meta(yaml.safe_load((directory / ANCHOR_SIDECAR).read_text()))
        raise FileNotFoundError(
            f"no {SIDECAR} or {ANCHOR_SIDECAR} in {directory}; point at an NLA checkpoint directory"
        )


def from_anchor_meta(meta: dict, layer: int | None = None) -> NLAConfig:
    """Map an anchor ``nla_meta.yaml`` (kind nla_model) onto :class:`NLAConfig`.

    Anchor fields: ``d_model``; ``tokens.injection_char/_token_id/_left_neighbor_id/
    _right_neighbor_id``; ``prompt_templates.av|actor`` (with ``{injection_char}``)
    and ``.ar|critic`` (with ``{explanation}``); ``extraction.injection_scale`` and
    ``.mse_scale`` (a number, or ``"sqrt_d_model"``); descriptions are wrapped in
    ``<explanation>...</explanation>``. The layer is read from ``extraction`` when
    present, else from ``layer`` (the AR's ``num_hidden_layers - 1``).
    """
    if meta.get("kind") not in ("nla_model", "nla_dataset"):
        raise ValueError(f"unknown anchor sidecar kind {meta.get('kind')!r}; expected 'nla_model'")
    extraction = meta.get("extraction") or {}
    d_model = int(meta.get("d_model") or extraction["d_model"])

    def scale(raw):
        if raw is None or raw == "sqrt_d_model":
            return math.sqrt(d_model)
        return float(raw)

    found = next((extraction[k] for k in ("layer", "layer_index", "layer_idx") if k in extraction), None)
    found = found if found is not None else meta.get("layer", layer)
    if found is None:
        raise MissingLayerError(
            "anchor sidecar names no layer; pass layer= (the reconstructor's num_hidden_layers - 1)"
        )
    tokens, templates = meta["tokens"], meta.get("prompt_templates") or {}
    av = templates.get("av") or templates.get("actor") or "{injection_char}"
    ar = templates.get("ar") or templates.get("critic") or "{explanation}"
    return NLAConfig(
        layer=int(found),
        d_model=d_model,
        placeholder=tokens["injection_char"],
        placeholder_id=int(tokens["injection_token_id"]),
        av_prompt=av.replace("{injection_char}", "{placeholder}"),
        ar_template=ar.replace("{explanation}", "{description}"),
        injection_scale=scale(extraction.get("injection_scale")),
        mse_scale=scale(extraction.get("mse_scale")),
        max_new_tokens=200,
        placeholder_neighbors=(int(tokens["injection_left_neighbor_id"]), int(tokens["injection_right_neighbor_id"])),
        explanation_tags=("<explanation>", "</explanation>"),
        target=str(meta.get("base_model", meta.get("model", ""))),
    )
