"""The two halves of a natural-language autoencoder, and the metric that scores them.

Verbalizer (AV): a copy of the target chat model. An activation, L2-rescaled to
the injection scale, overwrites the input embedding of one placeholder token in
a fixed chat prompt; the model then writes a description from ``inputs_embeds``.

Reconstructor (AR): the target truncated after block K (the activation's layer),
final norm replaced by the identity, plus a Linear(d, d) head initialised to the
identity, read at the last token of a fixed template around the description.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path

import torch
import yaml
from torch import nn

from probity.models.chat import chat_ids, end_ids, pad_batch, pad_id
from probity.models.decoder import DecoderParts, decoder_parts
from probity.nla.config import ANCHOR_SIDECAR, SIDECAR, MissingLayerError, NLAConfig, from_anchor_meta
from probity.report.console import track

CENTER = "center.safetensors"  # the training mean a centred verbalizer subtracts before injection
ADAPTER = "adapter_config.json"  # a half stored as a peft LoRA adapter on a named base


def normalise(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Rescale the last dim of ``x`` (..., d) to L2 norm ``scale`` (zeros stay zero)."""
    return x * (scale / x.float().norm(dim=-1, keepdim=True).clamp_min(1e-12)).to(x.dtype)


def direction_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-row MSE ``[n]`` between ``pred`` and ``target`` ``[n, d]``, both rescaled to norm
    sqrt(d) first, so the value is 2(1 - cos) in [0, 4]."""
    d = target.shape[-1]
    return (normalise(pred.float(), math.sqrt(d)) - normalise(target.float(), math.sqrt(d))).pow(2).mean(-1)


def fve(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Fraction of variance explained on normalised vectors: 1 - MSE(pred, target) /
    MSE(mean target, target), with every row of both rescaled to norm sqrt(d).
    ``pred`` and ``target`` are ``[n, d]``, n >= 2."""
    if pred.shape != target.shape or pred.ndim != 2 or len(target) < 2:
        raise ValueError(
            f"fve needs two (N>=2, d) tensors of one shape, got {tuple(pred.shape)} and {tuple(target.shape)}"
        )
    d = target.shape[-1]
    t = normalise(target.float(), math.sqrt(d))
    baseline = (t - t.mean(0, keepdim=True)).pow(2).mean()
    return float(1 - direction_mse(pred, target).mean() / baseline.clamp_min(1e-12))


@dataclasses.dataclass
class Activations:
    """Residual-stream vectors with where they came from.

    vectors ``[n, d]``; text_index ``[n]`` which input text; position ``[n]`` token index
    in that text; token: the token string at that position."""

    vectors: torch.Tensor
    text_index: list[int]
    position: list[int]
    token: list[str]

    def __len__(self) -> int:
        return len(self.vectors)

    def subset(self, idx: Sequence[int]) -> Activations:
        """The rows ``idx``, in that order."""
        idx = list(idx)
        return Activations(
            self.vectors[idx],
            [self.text_index[i] for i in idx],
            [self.position[i] for i in idx],
            [self.token[i] for i in idx],
        )


def _ids(tokenizer, text: str | Sequence[int]) -> list[int]:
    return list(text) if not isinstance(text, str) else tokenizer(text, add_special_tokens=True)["input_ids"]


@torch.no_grad()
def extract(
    model, tokenizer, texts: Sequence[str | Sequence[int]], layer: int, positions="all", progress: bool = False
) -> Activations:
    """Residual stream after block ``layer`` (site ``blocks.{layer}.hook_resid_post``)
    at chosen token positions of each text.

    ``texts``: strings (tokenised with special tokens) or token-id lists.
    ``positions``: "all"; an int for every text (negative counts from the end); or
    one int or list of ints per text. Returns :class:`Activations` with ``[n, d]`` vectors.
    """
    from probity.models import Site, cache

    n_layers = model.config.num_hidden_layers
    if not 0 <= layer < n_layers:
        raise ValueError(f"layer {layer} out of range: this model has blocks 0..{n_layers - 1}")
    if not isinstance(positions, (str, int)) and len(positions) != len(texts):
        raise ValueError(
            f"positions has {len(positions)} entries for {len(texts)} texts; give one per text, one int, or 'all'"
        )
    site = Site.resid(layer)
    vecs, text_index, pos_out, tokens = [], [], [], []
    for i, text in enumerate(track(texts, "extract", enabled=progress)):
        ids = _ids(tokenizer, text)
        want = positions if isinstance(positions, (str, int)) else positions[i]
        want = range(len(ids)) if want == "all" else [want] if isinstance(want, int) else want
        want = [p % len(ids) if -len(ids) <= p < len(ids) else _bad_position(p, len(ids), i) for p in want]
        acts = cache(model, torch.tensor([ids]), [site])
        acts = next(iter(acts.values()))[0]
        vecs.append(acts[want].float())
        text_index += [i] * len(want)
        pos_out += want
        tokens += tokenizer.convert_ids_to_tokens([ids[p] for p in want])
    return Activations(torch.cat(vecs), text_index, pos_out, tokens)


def _bad_position(p: int, n: int, i: int):
    raise ValueError(f"position {p} out of range for text {i} of {n} tokens")


class Verbalizer(nn.Module):
    """Activation -> description. Wraps a causal LM (the AV) and an :class:`NLAConfig`.

    The prompt is fixed: the chat template around ``config.av_prompt`` with the
    placeholder token; its input embedding is replaced by the activation rescaled
    to ``config.injection_scale``. Descriptions end with the tokenizer's eos (or
    end-of-turn) token.
    """

    def __init__(self, model, tokenizer, config: NLAConfig):
        super().__init__()
        self.model, self.tokenizer, self.config = model, tokenizer, config
        prompt = config.av_prompt.format(placeholder=config.placeholder)
        if config.chat_template and getattr(tokenizer, "chat_template", None):
            ids = chat_ids(tokenizer, [{"role": "user", "content": prompt}])
        else:
            ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
        where = [i for i, t in enumerate(ids) if t == config.placeholder_id]
        if len(where) != 1:
            raise ValueError(
                f"placeholder id {config.placeholder_id} ({config.placeholder!r}) appears {len(where)} times in the "
                "verbalizer prompt; it must appear once (pick a token that is one token and absent from the template)"
            )
        p = where[0]
        if (
            config.placeholder_neighbors is not None
            and 0 < p < len(ids) - 1
            and (ids[p - 1], ids[p + 1]) != tuple(config.placeholder_neighbors)
        ):
            raise ValueError(
                f"placeholder neighbours {(ids[p - 1], ids[p + 1])} differ from the sidecar's "
                f"{tuple(config.placeholder_neighbors)}: tokenizer or template drift"
            )
        self.register_buffer("prompt_ids", torch.tensor(ids), persistent=False)
        self.register_buffer("center", torch.zeros(config.d_model), persistent=False)
        self.slot = p
        self.end_ids = end_ids(tokenizer)
        n_layers = len(decoder_parts(_unwrapped(model)).layers)
        if not config.inject_layer <= n_layers - 1:
            raise ValueError(
                f"inject_layer {config.inject_layer} out of range: the verbalizer has blocks 0..{n_layers - 1}"
            )

    @classmethod
    def create(
        cls, model, tokenizer, layer: int, placeholder: str | None = None, lora_rank: int = 0, **config
    ) -> Verbalizer:
        """A verbalizer on a copy of ``model`` with a fresh :class:`NLAConfig`.
        ``placeholder``: a token that encodes to one id (default: a rarely used token).
        ``lora_rank`` > 0 trains a LoRA adapter (peft, every linear layer of the blocks) on the
        copy instead of all its weights."""
        placeholder = placeholder or _pick_placeholder(tokenizer, config.get("av_prompt", NLAConfig.av_prompt))
        pid = tokenizer.get_vocab().get(placeholder)
        if pid is None:
            raise ValueError(
                f"placeholder {placeholder!r} is not a token of this tokenizer; pick one from its vocabulary"
            )
        config = {"target": getattr(model.config, "name_or_path", ""), **config}
        cfg = NLAConfig(
            layer=layer, d_model=model.config.hidden_size, placeholder=placeholder, placeholder_id=pid, **config
        )
        return cls(with_lora(copy.deepcopy(model), lora_rank), tokenizer, cfg)

    def fit_center(self, acts: torch.Tensor) -> Verbalizer:
        """Subtract the mean of ``acts`` ``[n, d]`` from every activation before injection
        (sets ``config.centered``); returns self."""
        if acts.ndim != 2 or acts.shape[1] != self.config.d_model or len(acts) < 2:
            raise ValueError(f"fit_center needs [n>=2, {self.config.d_model}] activations, got {tuple(acts.shape)}")
        self.center.copy_(acts.float().mean(0).to(self.center.device))
        self.config.centered = True
        return self

    def inject(self, hidden: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
        """``hidden`` ``[batch, pos, d]`` with the slot position replaced by (or, mode "add",
        added to) the activation ``acts`` ``[batch, d]``, centred when the config says so."""
        v = acts.float() - self.center.to(acts.device) if self.config.centered else acts.float()
        at = hidden[:, self.slot].float()  # [batch, d]
        if self.config.inject_mode == "replace":
            new = normalise(v, self.config.injection_scale)
        else:
            new = at + normalise(v, 1.0) * at.norm(dim=-1, keepdim=True)
        mask = torch.zeros(hidden.shape[1], 1, dtype=torch.bool, device=hidden.device)
        mask[self.slot] = True
        return torch.where(mask, new[:, None, :].to(hidden.dtype), hidden)

    @contextlib.contextmanager
    def injecting(self, acts: torch.Tensor):
        """Within the block, a forward pass over the prompt (the whole prompt in one call: the
        prefill of a generation or a teacher-forced pass) carries ``acts`` ``[batch, d]`` into
        block ``config.inject_layer``'s input; later one-token decoding steps are untouched.
        For ``inject_layer`` 0 :meth:`embeds` injects and this does nothing."""
        if self.config.inject_layer == 0:
            yield
            return
        block = decoder_parts(_unwrapped(self.model)).layers[self.config.inject_layer]
        prompt_len = len(self.prompt_ids)

        def hook(module, args, kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]
            if hidden.shape[1] < prompt_len:  # a decoding step: the cache holds the injected prefix
                return None
            hidden = self.inject(hidden, acts.to(hidden.device))
            return ((hidden, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": hidden})

        handle = block.register_forward_pre_hook(hook, with_kwargs=True)
        try:
            yield
        finally:
            handle.remove()

    def embeds(self, acts: torch.Tensor) -> torch.Tensor:
        """Prompt embeddings ``[batch, pos, d]``; with ``inject_layer`` 0, position ``slot`` carries
        ``acts`` ``[batch, d]`` (see :meth:`inject`; deeper layers inject under :meth:`injecting`)."""
        if acts.ndim != 2 or acts.shape[1] != self.config.d_model:
            raise ValueError(f"activations must be [batch, {self.config.d_model}], got {tuple(acts.shape)}")
        if not torch.isfinite(acts).all():
            raise ValueError("activations contain NaN or inf")
        table = self.model.get_input_embeddings()
        base = table(self.prompt_ids.to(table.weight.device))[None].expand(len(acts), -1, -1)
        return self.inject(base, acts) if self.config.inject_layer == 0 else base

    @torch.no_grad()
    def generate(
        self,
        acts: torch.Tensor,
        samples: int = 1,
        temperature: float = 1.0,
        greedy: bool = False,
        max_new_tokens: int | None = None,
    ) -> list[list[int]]:
        """Sample ``samples`` descriptions per activation (``acts`` ``[batch, d]``): a list of batch * samples
        token-id lists (activation-major), each ending with an end id unless cut
        at ``max_new_tokens`` (then it is malformed)."""
        acts = acts.repeat_interleave(samples, 0)
        emb = self.embeds(acts)
        pad = pad_id(self.tokenizer)
        kw = dict(do_sample=True, temperature=temperature, top_k=0, top_p=1.0) if not greedy else dict(do_sample=False)
        with self.injecting(acts):
            out = self.model.generate(
                inputs_embeds=emb,
                attention_mask=torch.ones(emb.shape[:2], dtype=torch.long, device=emb.device),
                max_new_tokens=max_new_tokens or self.config.max_new_tokens,
                eos_token_id=self.end_ids,
                pad_token_id=pad,
                **kw,
            )
        seqs = []
        for row in out.tolist():
            cut = next((i + 1 for i, t in enumerate(row) if t in self.end_ids), len(row))
            seqs.append(row[:cut])
        return seqs

    def decode(self, seqs: Sequence[Sequence[int]]) -> list[str]:
        """Description text of each token sequence (end token and explanation tags removed)."""
        texts = [
            self.tokenizer.decode([t for t in s if t not in self.end_ids], skip_special_tokens=True).strip()
            for s in seqs
        ]
        if self.config.explanation_tags:
            open_, close = self.config.explanation_tags
            texts = [t.split(open_, 1)[-1].split(close, 1)[0].strip() for t in texts]
        return texts

    def encode(self, descriptions: Sequence[str]) -> list[list[int]]:
        """Target token sequences for teacher descriptions (each ends with the end token)."""
        tags = self.config.explanation_tags
        out = []
        for d in descriptions:
            text = f"{tags[0]}\n{d}\n{tags[1]}" if tags else d
            out.append(self.tokenizer(text, add_special_tokens=False)["input_ids"] + [self.end_ids[0]])
        return out

    def is_well_formed(self, seq: Sequence[int]) -> bool:
        """A description is well formed when it ends with an end token and says something."""
        return len(seq) > 1 and seq[-1] in self.end_ids

    def describe(self, acts: torch.Tensor, greedy: bool = True, batch_size: int = 64) -> list[str]:
        """One description per activation (``acts`` ``[n, d]``), greedy by default."""
        out = []
        for i in range(0, len(acts), batch_size):
            out += self.decode(self.generate(acts[i : i + batch_size], greedy=greedy))
        return out

    def token_logprobs(
        self, acts: torch.Tensor, seqs: Sequence[Sequence[int]], bucket: int = 4
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probabilities of each response token given the injected prompt.

        acts ``[batch, d]``, seqs: batch token lists. Returns (logp ``[batch, pos]``, mask ``[batch, pos]``) with pos
        the longest sequence; mask is 1 on real tokens. Differentiable.

        The rows run in forwards of ``bucket`` sequences of similar length (sorted by length), each padded
        only to its own longest: GRPO rollouts are ragged (11 to 69 tokens), and one padded batch spent about half
        of its compute on padding. The values are those of one forward over all rows padded to the longest
        (the plain algorithm, which ``bucket=0`` runs), up to float rounding."""
        if len(seqs) != len(acts):
            raise ValueError(f"{len(seqs)} sequences for {len(acts)} activations")
        if bucket < 0:
            raise ValueError(f"bucket must be >= 0 (0: one padded forward), got {bucket}")
        if bucket == 0 or bucket >= len(seqs):
            return self._padded_logprobs(acts, seqs)
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
        width = max(map(len, seqs))
        logps, masks = [], []
        for lo in range(0, len(order), bucket):
            rows = order[lo : lo + bucket]
            logp, mask = self._padded_logprobs(acts[rows], [seqs[i] for i in rows])  # [bucket, its pos]
            logps.append(nn.functional.pad(logp, (0, width - logp.shape[1])))
            masks.append(nn.functional.pad(mask, (0, width - mask.shape[1])))
        back = torch.argsort(torch.tensor(order, device=acts.device))  # sorted position of each row
        return torch.cat(logps)[back], torch.cat(masks)[back]

    def _padded_logprobs(self, acts: torch.Tensor, seqs: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`token_logprobs` in one forward, every row right-padded to the longest (the plain algorithm)."""
        batch = pad_batch(seqs, 0, device=acts.device)
        ids, mask = batch["input_ids"], batch["attention_mask"].float()  # [batch, pos]
        prompt = self.embeds(acts)
        emb = torch.cat([prompt, self.model.get_input_embeddings()(ids)], 1)
        attn = torch.cat([torch.ones(prompt.shape[:2], device=acts.device), mask], 1).long()
        with self.injecting(acts):  # logits only where a description token is predicted
            logits = self.model(inputs_embeds=emb, attention_mask=attn, logits_to_keep=ids.shape[1] + 1).logits
        logp = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, ids[..., None])[..., 0]
        return logp * mask, mask

    def first_logprobs(self, acts: torch.Tensor, prefix: Sequence[int] = ()) -> torch.Tensor:
        """Log-probabilities ``[batch, vocab]`` of the description token after ``prefix`` (token ids every
        description starts with; none: the first token) given ``acts`` ``[batch, d]``."""
        emb = self.embeds(acts)
        if prefix:
            ids = torch.tensor(list(prefix), device=emb.device)
            emb = torch.cat([emb, self.model.get_input_embeddings()(ids)[None].expand(len(acts), -1, -1)], 1)
        with self.injecting(acts):
            logits = self.model(inputs_embeds=emb, logits_to_keep=1).logits[:, -1]
        return torch.log_softmax(logits.float(), -1)

    def next_logprobs(self, acts: torch.Tensor, prefixes: Sequence[Sequence[int]]) -> torch.Tensor:
        """Log-probabilities ``[batch, vocab]`` of the description token after each row's own ``prefixes``
        (teacher-forced token ids, one list per row of ``acts`` ``[batch, d]``)."""
        if len(prefixes) != len(acts):
            raise ValueError(f"{len(prefixes)} prefixes for {len(acts)} activations")
        batch = pad_batch(prefixes, 0, device=acts.device)
        ids, mask = batch["input_ids"], batch["attention_mask"]  # [batch, pos]
        prompt = self.embeds(acts)
        emb = torch.cat([prompt, self.model.get_input_embeddings()(ids)], 1)
        attn = torch.cat([torch.ones(prompt.shape[:2], device=acts.device, dtype=mask.dtype), mask], 1)
        with self.injecting(acts):
            logits = self.model(inputs_embeds=emb, attention_mask=attn).logits  # [batch, prompt + pos, vocab]
        last = prompt.shape[1] + mask.sum(1) - 1  # each row's last prefix token (right padding)
        return torch.log_softmax(logits[torch.arange(len(acts), device=acts.device), last].float(), -1)


def with_lora(model: nn.Module, rank: int, seed: int = 0) -> nn.Module:
    """``model`` with a fresh LoRA adapter of ``rank`` (alpha 2 * rank) on every linear layer of its
    blocks (peft; only the adapter trains), initialised from ``seed`` without touching the global
    random state; ``model`` itself for rank 0."""
    if rank < 0:
        raise ValueError(f"lora_rank must be >= 0 (0 = train every weight), got {rank}")
    if rank == 0:
        return model
    from peft import LoraConfig, get_peft_model

    with torch.random.fork_rng(devices=range(torch.cuda.device_count())):
        torch.manual_seed(seed)
        return get_peft_model(
            model, LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules="all-linear")
        )


def _unwrapped(model: nn.Module) -> nn.Module:
    """The transformer under a peft wrapper (``model`` itself when there is none)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _pick_placeholder(tokenizer, av_prompt: str) -> str:
    """A placeholder token absent from the prompt: a dedicated unused token if the
    vocab has one, else an added non-special token (e.g. SmolLM2's ``<empty_output>``),
    else the unknown token (real text never contains it), else the last ordinary entry."""
    vocab = tokenizer.get_vocab()
    used = set(tokenizer(av_prompt.format(placeholder=""), add_special_tokens=True)["input_ids"])
    specials = set(tokenizer.all_special_tokens)
    ordinary = sorted((t for t in vocab if t not in specials), key=vocab.get, reverse=True)
    added = sorted(t for t in tokenizer.get_added_vocab() if t not in specials)
    candidates = [
        "<placeholder>",
        "<|reserved_special_token_0|>",
        "<unused0>",
        "㈎",
        *added,
        tokenizer.unk_token,
        *ordinary,
    ]
    return next(c for c in candidates if c in vocab and vocab[c] not in used)


class Reconstructor(nn.Module):
    """Description -> activation: the target truncated after block ``layer``, final
    norm replaced by the identity, a Linear(d, d) head, read at the template's last token."""

    def __init__(self, backbone: nn.Module, head: nn.Linear, tokenizer, config: NLAConfig):
        super().__init__()
        self.backbone, self.head, self.tokenizer, self.config = backbone, head, tokenizer, config

    @classmethod
    def from_target(cls, model, tokenizer, config: NLAConfig, lora_rank: int = 0) -> Reconstructor:
        """Copy ``model``, keep blocks 0..config.layer, drop the final norm and the
        LM head, add a Linear(d, d) head initialised to the identity. ``lora_rank`` > 0
        trains a LoRA adapter on the blocks (and the whole head) instead of every weight."""
        parts = decoder_parts(model)
        n = len(parts.layers)
        if not 0 <= config.layer < n:
            raise ValueError(f"layer {config.layer} out of range: the target has blocks 0..{n - 1}")
        keep = config.layer + 1
        backbone = copy.deepcopy(parts.base)  # a copy: the AR trains it, the target stays as it is
        copied = DecoderParts(backbone, parts.family)
        setattr(backbone, parts.family.layers, nn.ModuleList(list(copied.layers)[:keep]))
        setattr(backbone, parts.family.final_norm, nn.Identity())
        cfg = backbone.config
        for name in ("num_hidden_layers", "n_layer"):
            if hasattr(cfg, name):
                setattr(cfg, name, keep)
        if getattr(cfg, "layer_types", None):
            cfg.layer_types = list(cfg.layer_types)[:keep]
        d = config.d_model
        head = nn.Linear(d, d, bias=False)
        with torch.no_grad():
            head.weight.copy_(torch.eye(d))
        return cls(with_lora(backbone, lora_rank), head.to(next(backbone.parameters()).dtype), tokenizer, config)

    def forward(self, descriptions: Sequence[str]) -> torch.Tensor:
        """Predicted activations ``[batch, d]`` for batch descriptions."""
        rows = [
            self.tokenizer(self.config.ar_template.format(description=d), add_special_tokens=True)["input_ids"]
            for d in descriptions
        ]
        device = self.head.weight.device
        batch = pad_batch(rows, 0, device=device)
        ids, mask = batch["input_ids"], batch["attention_mask"]  # [batch, pos]
        hidden = self.backbone(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
        last = hidden[torch.arange(len(rows), device=device), mask.sum(1) - 1]
        return self.head(last)

    @torch.no_grad()
    def predict(self, descriptions: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        """Batched, gradient-free :meth:`forward`: ``[n, d]`` float32."""
        return torch.cat(
            [self(descriptions[i : i + batch_size]).float() for i in range(0, len(descriptions), batch_size)]
        )


def save_nla(directory, av: Verbalizer, ar: Reconstructor | None = None, dtype: torch.dtype | None = None):
    """Write a checkpoint directory: ``nla.json`` (the sidecar), ``av/`` (an HF
    model + tokenizer folder) and, if given, ``ar/`` (the truncated backbone as an
    HF base-model folder plus ``value_head.safetensors``). A LoRA-trained half whose sidecar
    names its ``base`` is stored as its peft adapter alone (``adapter_config.json`` +
    ``adapter_model.safetensors``); without ``base`` its adapter is merged in. ``dtype`` (e.g.
    torch.float16) stores the weights smaller; loading returns float32. Returns the directory."""
    from safetensors.torch import save_file

    directory = Path(directory)

    def cast(m):
        if dtype is None and getattr(m, "hf_quantizer", None) is None:
            return m
        m = copy.deepcopy(m).to(dtype or next(m.parameters()).dtype)
        if getattr(m, "hf_quantizer", None) is not None:  # GGUF loads dequantised: the weights are plain tensors
            m.hf_quantizer = None
            m.config.quantization_config = None
        return m

    def write(model, tokenizer, folder: Path, base: str = "") -> None:
        if _is_lora(model) and av.config.base:
            cast(model).save_pretrained(folder)  # the adapter alone
            (folder / "README.md").unlink(missing_ok=True)  # peft's empty model card
            adapter = json.loads((folder / ADAPTER).read_text())  # name the base, not this machine's path to it
            adapter |= {"base_model_name_or_path": base}
            if isinstance(adapter.get("target_modules"), list):  # peft writes a set: same training, same file
                adapter["target_modules"] = sorted(adapter["target_modules"])
            (folder / ADAPTER).write_text(json.dumps(adapter, indent=2))
            return
        if _is_lora(model):
            model = copy.deepcopy(model).merge_and_unload()
        cast(model).save_pretrained(folder)
        tokenizer.save_pretrained(folder)

    write(av.model, av.tokenizer, directory / "av", av.config.base)
    av.config.save(directory / "av")
    if av.config.centered:
        save_file({"center": av.center.detach().float().contiguous()}, str(directory / "av" / CENTER))
    if ar is not None:
        write(ar.backbone, ar.tokenizer, directory / "ar", f"{ar.config.target} (blocks 0..{ar.config.layer})")
        save_file(
            {"weight": cast(ar.head).weight.detach().contiguous()}, str(directory / "ar" / "value_head.safetensors")
        )
        ar.config.save(directory / "ar")
    av.config.save(directory)
    return directory


def _is_lora(model: nn.Module) -> bool:
    return hasattr(model, "peft_config")


def check_nla(directory, ar_directory=None, layer: int | None = None) -> NLAConfig:
    """The sidecar of a checkpoint :func:`load_nla` can load, read without its weights: the folder,
    the sidecar and each half's files are checked first, so a bad path is one clear error
    (``FileNotFoundError`` or ``ValueError``) before any model loads."""
    return _checked(directory, ar_directory, layer)[0]


def _checked(directory, ar_directory, layer) -> tuple[NLAConfig, Path, Path | None]:
    """(sidecar, verbalizer folder, reconstructor folder or None) of a checkpoint, checked (:func:`check_nla`)."""
    directory = Path(directory)
    av_dir, ar_dir = _halves(directory, ar_directory)
    if not (av_dir / SIDECAR).is_file() and not (av_dir / ANCHOR_SIDECAR).is_file():
        hint = f"; did you mean {directory / 'nla'}?" if (directory / "nla" / SIDECAR).is_file() else ""
        raise FileNotFoundError(
            f"{directory} is not an NLA checkpoint (no {SIDECAR} or {ANCHOR_SIDECAR}); pass the folder "
            f"`probity nla train` wrote (OUT/nla){hint}"
        )
    config = _load_config(av_dir, layer, ar_dir)
    for half, folder in (("verbalizer", av_dir), ("reconstructor", ar_dir)):
        if folder is not None and not (folder / "config.json").is_file() and not (folder / ADAPTER).is_file():
            raise FileNotFoundError(
                f"{folder} holds no {half} model (no config.json or {ADAPTER}); point at the folder "
                "`probity nla train` wrote (OUT/nla) or at an anchor actor folder"
            )
    if (av_dir / ADAPTER).is_file() and not config.base:
        raise ValueError(f"{av_dir} holds a LoRA adapter but the sidecar names no base model; re-save the checkpoint")
    if ar_dir is not None and not (ar_dir / "value_head.safetensors").is_file():
        raise FileNotFoundError(f"no value_head.safetensors in {ar_dir}; the reconstructor is incomplete")
    return config, av_dir, ar_dir


def _halves(directory: Path, ar_directory) -> tuple[Path, Path | None]:
    """(verbalizer folder, reconstructor folder or None) of a checkpoint directory."""
    if not directory.is_dir():
        raise FileNotFoundError(
            f"no checkpoint directory {directory}; pass the folder `probity nla train` wrote (OUT/nla)"
        )
    ours = (directory / "av").is_dir()
    av_dir = directory / "av" if ours else directory
    ar_dir = (
        directory / "ar" if ours and (directory / "ar").is_dir() else (Path(ar_directory) if ar_directory else None)
    )
    if ar_dir is not None and not ar_dir.is_dir():
        raise FileNotFoundError(f"no reconstructor directory {ar_dir}")
    return av_dir, ar_dir


def load_nla(
    directory, ar_directory=None, layer: int | None = None, trainable: bool = False
) -> tuple[Verbalizer, Reconstructor | None]:
    """Load ``(verbalizer, reconstructor or None)`` from a checkpoint written by
    :func:`save_nla`, or from the anchor's released format: pass the actor folder
    (HF model + ``nla_meta.yaml``) as ``directory`` and the critic folder (truncated
    model + ``value_head.safetensors`` + ``nla_meta.yaml``) as ``ar_directory``.
    A verbalizer saved as a LoRA adapter is merged into its base, unless ``trainable``: then the
    adapter stays separate and trains (to go on training it, e.g. ``censored.tune_behaviour``).
    A missing or incomplete checkpoint raises ``FileNotFoundError`` / ``ValueError``
    (see :func:`check_nla`) before any weights are read."""
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    config, av_dir, ar_dir = _checked(directory, ar_directory, layer)
    if (av_dir / ADAPTER).is_file():
        from probity.models import load

        base, tokenizer = load(config.base, dtype=torch.float32)
        av = Verbalizer(_with_adapter(base, av_dir, trainable), tokenizer, config)
    else:
        tokenizer = AutoTokenizer.from_pretrained(str(av_dir))
        model = AutoModelForCausalLM.from_pretrained(str(av_dir), dtype=torch.float32).eval()
        av = Verbalizer(model, tokenizer, config)
    if config.centered:
        if not (av_dir / CENTER).is_file():
            raise FileNotFoundError(
                f"the sidecar says centred but {av_dir / CENTER} is missing; re-save the checkpoint"
            )
        av.center.copy_(load_file(str(av_dir / CENTER))["center"])
    if ar_dir is None:
        return av, None
    ar_config = dataclasses.replace(
        config, **{k: getattr(_load_config(ar_dir, config.layer, ar_dir), k) for k in ("ar_template", "mse_scale")}
    )
    head = nn.Linear(config.d_model, config.d_model, bias=False)
    head.load_state_dict({k: v.float() for k, v in load_file(str(ar_dir / "value_head.safetensors")).items()})
    if (ar_dir / ADAPTER).is_file():
        from probity.models import load

        target, target_tokenizer = load(ar_config.target, dtype=torch.float32)
        ar = Reconstructor.from_target(target, target_tokenizer, ar_config)
        ar.backbone = _with_adapter(ar.backbone, ar_dir)
        ar.head = head
        return av, ar.eval()
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the final norm is missing on purpose: no load report about it
    try:
        backbone = AutoModel.from_pretrained(str(ar_dir), dtype=torch.float32).eval()
    finally:
        hf_logging.set_verbosity(verbosity)
    parts = decoder_parts(backbone)
    setattr(parts.base, parts.family.final_norm, nn.Identity())
    return av, Reconstructor(
        backbone, head.to(next(backbone.parameters()).dtype), AutoTokenizer.from_pretrained(str(ar_dir)), ar_config
    )


def _with_adapter(model: nn.Module, folder: Path, trainable: bool = False) -> nn.Module:
    """``model`` with the peft adapter in ``folder`` merged into its weights (eval mode), or, if
    ``trainable``, kept as a trainable adapter."""
    from peft import PeftModel

    if trainable:
        return PeftModel.from_pretrained(model, str(folder), is_trainable=True)
    return PeftModel.from_pretrained(model, str(folder)).merge_and_unload().eval()


def _load_config(directory, layer, ar_dir) -> NLAConfig:
    """The sidecar in ``directory``; for anchor sidecars without a layer, the AR's depth gives it.
    A sidecar that does not parse or lacks a field raises one ``ValueError`` naming the file."""
    try:
        try:
            return NLAConfig.load(directory)
        except MissingLayerError:
            if layer is None and ar_dir is None:
                raise
            if layer is None:
                if not (Path(ar_dir) / "config.json").is_file():
                    raise FileNotFoundError(f"no config.json in {ar_dir}: its depth gives the layer") from None
                layer = json.loads((Path(ar_dir) / "config.json").read_text())["num_hidden_layers"] - 1
            return from_anchor_meta(yaml.safe_load((Path(directory) / ANCHOR_SIDECAR).read_text()), layer=layer)
    except (MissingLayerError, FileNotFoundError):
        raise
    except (ValueError, KeyError, TypeError, AttributeError, yaml.YAMLError) as err:
        what = f"{type(err).__name__}: {err}" if isinstance(err, KeyError) else str(err).strip().splitlines()[0]
        raise ValueError(f"{directory}: not a valid NLA sidecar ({what}); re-save the checkpoint") from None
