"""Teacher descriptions for the SFT warm start.

A labeller is any callable ``labeller(samples) -> list[str]`` taking
:class:`Sample` objects (the text up to the activation's token, the token, and
whatever metadata the data source attached) and returning one short description
per sample. Built in: :class:`ContextLabeller` (the last few tokens of context,
no model needed), :class:`OpenAILabeller` (any OpenAI-compatible chat endpoint)
and, for the censored organism, the templated fact labeller in
``probity.nla.organism``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import urllib.request
from collections.abc import Callable, Sequence

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
    """Teacher descriptions from an OpenAI-compatible ``/chat/completions`` endpoint.

    ``base_url`` like ``http://localhost:8000/v1``; the key is read from the
    environment variable named by ``api_key_env`` (may be unset for local servers)."""

    base_url: str
    model: str
    api_key_env: str = "OPENAI_API_KEY"
    prompt: str = DEFAULT_PROMPT
    max_tokens: int = 60
    timeout: float = 60.0

    def _ask(self, content: str) -> str:
        body = json.dumps(
            {
                "model": self.model,
                "max_tokens": self.max_tokens,
                "temperature": 0,
                "messages": [{"role": "user", "content": content}],
            }
        ).encode()
        headers = {"Content-Type": "application/json"}
        if os.environ.get(self.api_key_env):
            headers["Authorization"] = f"Bearer {os.environ[self.api_key_env]}"
        req = urllib.request.Request(self.base_url.rstrip("/") + "/chat/completions", data=body, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read())["choices"][0]["message"]["content"].strip()
        except OSError as err:
            raise ConnectionError(
                f"labeller endpoint {self.base_url} failed ({err}); check --labeller-url and that the server is up"
            ) from None

    def __call__(self, samples: Sequence[Sample]) -> list[str]:
        from rich.progress import track

        return [
            " ".join(self._ask(self.prompt.format(prefix=s.prefix, token=s.token)).split())
            for s in track(samples, description="labelling")
        ]
