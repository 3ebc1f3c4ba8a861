"""Elicitation techniques: strategies that turn (model, question) into sampled responses.

Each technique renders prompts for a batch of questions and may change the model
(LoRA) or add activation patches (steering, fuzzing) while sampling. They share a
``Context``: the model, the helper questions (non-sensitive) and what was learned
from them (few-shot examples, the probe's truth direction, the LoRA model).

With ``Context.endpoint`` (a ``ChatClient``) the black-box techniques, which need no
weights, sample an OpenAI-compatible server of the same model instead: a chat technique
sends its conversation to ``/chat/completions``, a prompt-text one (raw completion, the
prefills) its locally rendered text to ``/completions``. LoRA, steering and fuzzing
always run on the local model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from probity.honesty.prompts import HONEST_SYSTEM
from probity.honesty.sample import cut_raw, encode, generate, sample_endpoint
from probity.honesty.testbed import Question
from probity.models.chat import chat_text, user_prefill_text

DEFAULT_PREFILL = "The answer is"
RAW_TEMPLATE = "Question: {question}\nAnswer:"


@dataclass
class Context:
    """Everything techniques may need beyond the question."""

    model: object
    tokenizer: object
    helpers: list[Question] = field(default_factory=list)
    shots: list[tuple[str, str]] = field(default_factory=list)  # (question, the model's own truthful answer)
    direction: torch.Tensor | None = None  # unit truth direction (lie -> positive), residual units
    layer: int | None = None
    resid_norm: float = 1.0  # typical residual norm at ``layer``, to scale steering and noise
    lora_model: object | None = None
    steer_scale: float = 0.5  # steering vector norm as a fraction of ``resid_norm``
    noise_scale: float = 0.3  # noise norm as a fraction of ``resid_norm``
    fuzz_layer: int | None = None
    endpoint: object | None = None  # a ChatClient: black-box techniques sample it instead of ``model``


def _user(q: Question) -> list[dict]:
    return [{"role": "user", "content": q.question}]


@dataclass(frozen=True)
class Technique:
    """A named elicitation strategy: ``messages`` gives each question's conversation (rendered with the
    chat template) or ``prompts`` its prompt text; ``patches`` and ``model`` optionally change the
    forward pass; ``post`` cleans a response."""

    name: str
    prompts: Callable[[Context, list[Question]], list[str]] | None = None
    messages: Callable[[Context, list[Question]], list[list[dict]]] | None = None
    raw: bool = False
    patches: Callable[[Context], dict] | None = None
    model: Callable[[Context], object] | None = None
    post: Callable[[Question, str], str] = lambda q, r: r
    needs: str = ""  # what Context field must be prepared: "shots", "direction", "lora"
    min_new_tokens: int = 0  # raw completion: instruct models may end the text at once otherwise

    def respond(
        self,
        ctx: Context,
        questions: list[Question],
        n: int = 4,
        temperature: float = 0.7,
        max_new_tokens: int = 32,
        seed: int = 0,
        batch_size: int = 16,
    ) -> list[list[str]]:
        """``n`` sampled responses for each question: ``[len(questions)][n]`` strings, from
        ``ctx.endpoint`` when it is set and the technique is :attr:`black_box`, else from the local model."""
        args = {
            "n": n,
            "temperature": temperature,
            "max_new_tokens": max_new_tokens,
            "seed": seed,
            "batch_size": batch_size,
            "label": self.name,
            "min_new_tokens": self.min_new_tokens,
        }
        if self.uses_endpoint(ctx):
            prompts = self.messages(ctx, questions) if self.messages else self.prompts(ctx, questions)
            outs = sample_endpoint(ctx.endpoint, prompts, raw=self.raw, **args)
        else:
            ids = [encode(ctx.tokenizer, p, raw=self.raw) for p in self.render(ctx, questions)]
            model = self.model(ctx) if self.model else ctx.model
            patches = self.patches(ctx) if self.patches else None
            outs = generate(model, ctx.tokenizer, ids, patches=patches, **args)
        return [[self.post(q, r) for r in rs] for q, rs in zip(questions, outs)]

    def render(self, ctx: Context, questions: list[Question]) -> list[str]:
        """The prompt text of each question: ``prompts``, or ``messages`` through the chat template."""
        if self.prompts:
            return self.prompts(ctx, questions)
        return [chat_text(ctx.tokenizer, m) for m in self.messages(ctx, questions)]

    @property
    def black_box(self) -> bool:
        """Whether the technique needs only samples, not the weights (no LoRA model, no patches)."""
        return self.model is None and self.patches is None

    def uses_endpoint(self, ctx: Context) -> bool:
        """Whether :meth:`respond` samples ``ctx.endpoint`` (set, and the technique is black-box)."""
        return ctx.endpoint is not None and self.black_box


def _prefill(q: Question) -> str:
    return q.prefill or DEFAULT_PREFILL


def _chat(ctx: Context, qs: list[Question]) -> list[list[dict]]:
    return [_user(q) for q in qs]


def _few_shot(ctx: Context, qs: list[Question]) -> list[list[dict]]:
    history = [
        m
        for question, answer in ctx.shots
        for m in ({"role": "user", "content": question}, {"role": "assistant", "content": answer})
    ]
    return [history + _user(q) for q in qs]


def _steer(ctx: Context) -> dict:
    from probity.models import Site

    vec = (-ctx.steer_scale * ctx.resid_norm * ctx.direction).to(ctx.model.dtype)
    return {Site.resid(ctx.layer): lambda act: act + vec.to(act.device)}  # the layer's device (device_map)


def _fuzz(ctx: Context) -> dict:
    from probity.models import Site

    # isotropic noise whose expected norm is noise_scale * the typical residual norm
    sigma = ctx.noise_scale * ctx.resid_norm / ctx.model.config.hidden_size**0.5
    layer = ctx.fuzz_layer if ctx.fuzz_layer is not None else ctx.model.config.num_hidden_layers // 2
    return {Site.resid(layer): lambda act: act + sigma * torch.randn_like(act)}


TECHNIQUES: dict[str, Technique] = {
    t.name: t
    for t in [
        Technique("chat", messages=_chat),
        Technique(
            "honesty_prompt",
            messages=lambda c, qs: [[{"role": "system", "content": HONEST_SYSTEM}] + _user(q) for q in qs],
        ),
        Technique(
            "assistant_prefill",
            lambda c, qs: [chat_text(c.tokenizer, _user(q), prefill=_prefill(q)) for q in qs],
            post=lambda q, r: f"{_prefill(q)} {r}",
        ),
        Technique(
            "user_prefill",
            lambda c, qs: [
                user_prefill_text(
                    c.tokenizer, _user(q) + [{"role": "assistant", "content": "I cannot answer that."}], _prefill(q)
                )
                for q in qs
            ],
            post=lambda q, r: f"{_prefill(q)} {cut_raw(r)}",
        ),
        Technique(
            "raw",
            lambda c, qs: [RAW_TEMPLATE.format(question=q.question) for q in qs],
            raw=True,
            post=lambda q, r: cut_raw(r),
            min_new_tokens=4,
        ),
        Technique("few_shot", messages=_few_shot, needs="shots"),
        Technique("lora", messages=_chat, model=lambda c: c.lora_model, needs="lora"),
        Technique("steering", messages=_chat, patches=_steer, needs="direction"),
        Technique("fuzzing", messages=_chat, patches=_fuzz),
    ]
}


def get_techniques(spec: str | list[str]) -> list[Technique]:
    """Techniques by name (``all`` or a comma-separated list); unknown names fail with the valid ones."""
    names = (
        list(TECHNIQUES) if spec == "all" or spec == ["all"] else (spec.split(",") if isinstance(spec, str) else spec)
    )
    unknown = [n for n in names if n.strip() not in TECHNIQUES]
    if unknown:
        raise ValueError(f"unknown technique(s) {', '.join(unknown)}; choose from all, {', '.join(TECHNIQUES)}")
    return [TECHNIQUES[n.strip()] for n in names]


def elicit(technique: str, model, tokenizer, question: Question, n: int = 4, **context) -> list[str]:
    """Convenience: ``n`` responses of one technique to one question; ``context`` fills
    ``Context`` fields the technique needs (``shots``, ``direction``/``layer``/``resid_norm``, ``lora_model``)
    or may use (``endpoint``, a ``ChatClient``: a black-box technique samples it)."""
    tech = get_techniques(technique)[0]
    ctx = Context(model, tokenizer, **context)
    if (
        tech.needs == "shots"
        and not ctx.shots
        or tech.needs == "direction"
        and ctx.direction is None
        or tech.needs == "lora"
        and ctx.lora_model is None
    ):
        raise ValueError(f"technique {technique!r} needs a prepared {tech.needs!r}; use honesty.prepare() or pass it")
    return tech.respond(ctx, [question], n=n)[0]
