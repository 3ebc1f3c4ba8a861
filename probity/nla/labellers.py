"""Teacher descriptions for the SFT warm start.

A labeller is any callable ``labeller(samples) -> list[str]`` taking
:class:`Sample` objects (the text up to the activation's token, the token, and
whatever metadata the data source attached) and returning one short description
per sample. Built in: :class:`ContextLabeller` (the last few tokens of context,
no model needed), :class:`OpenAILabeller` (any OpenAI-compatible chat endpoint)
and, for the censored_tiny organism, the templated fact labeller in
``probity.nla.organism``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from probity.models.client import ChatClient
from probity.report.console import track

Labeller = Callable[[Sequence["Sample"]], list[str]]


@dataclasses.dataclass
class Sample:
    """Where an activation came from: ``prefix`` is the text up to and including
    ``token`` (the token at ``position``); ``meta`` is the data source's metadata."""

    prefix: str
    token: str
    position: int
    meta: dict = dataclasses.field(default_factory=dict)


def samples_for(tokenizer, texts: Sequence[str], acts, meta: Sequence[dict] | None = None) -> list[Sample]:
    """One :class:`Sample` per row of ``acts`` (an :class:`~probity.nla.core.Activations`
    extracted from ``texts``); ``meta`` is per text."""
    out = []
    for i, p, t in zip(acts.text_index, acts.position, acts.token):
        ids = tokenizer(texts[i], add_special_tokens=True)["input_ids"] if isinstance(texts[i], str) else list(texts[i])
        prefix = tokenizer.decode(ids[: p + 1], skip_special_tokens=True)
        out.append(
            Sample(prefix, tokenizer.convert_tokens_to_string([t]).strip() or t, p, dict(meta[i]) if meta else {})
        )
    return out


@dataclasses.dataclass
class ContextLabeller:
    """Describes an activation by its recent context: "<last words> ; token <tok>".

    A cheap, model-free teacher for real models: the residual stream at layer K
    mostly carries the current token and its recent context, so these labels
    give the SFT warm start something the reconstructor can use. RL then learns
    what they miss."""

    window: int = 6

    def __call__(self, samples: Sequence[Sample]) -> list[str]:
        return [f"{' '.join(s.prefix.split()[-self.window :])} ; token {s.token}" for s in samples]


DEFAULT_PROMPT = (
    "A language model is reading the text below. In at most 25 words, describe what "
    "it is probably representing at the final token ({token!r}): topic, entities, what "
    "comes next.\n\nText: {prefix}"
)


@dataclasses.dataclass
class OpenAILabeller:
    """Teacher descriptions from an OpenAI-compatible chat endpoint: ``client`` (a
    :class:`probity.models.ChatClient`) answers ``prompt`` filled with each sample's text up
    to the token (``{prefix}``) and the token (``{token}``).

    >>> OpenAILabeller(ChatClient("http://localhost:8000/v1", "Qwen/Qwen3-8B", max_tokens=60))"""

    client: ChatClient
    prompt: str = DEFAULT_PROMPT

    def __post_init__(self):
        if "{prefix}" not in self.prompt:
            raise ValueError("the labeller prompt must contain '{prefix}' (the text up to the token)")

    def __call__(self, samples: Sequence[Sample]) -> list[str]:
        return [
            " ".join(self.client(self.prompt.format(prefix=s.prefix, token=s.token)).split())
            for s in track(samples, "labelling")
        ]
