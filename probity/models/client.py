"""One client for OpenAI-compatible chat endpoints: OpenAI, vLLM, llama.cpp server, Ollama.

Every instrument that asks a language model over HTTP (the honesty instrument's LLM judge and
its black-box techniques under ``--endpoint``, the NLA teacher labeller) goes through
:class:`ChatClient`, built on the ``openai`` package.

>>> judge = ChatClient("http://localhost:8000/v1", "Qwen/Qwen3-8B", max_tokens=8)
>>> judge("Reply with one word: is Paris the capital of France?")
'Yes'
>>> judge.chat_samples([{"role": "user", "content": "Capital of France?"}], n=2, temperature=0.7, seed=0)
['Paris.', 'The capital is Paris.']
>>> judge.complete("Question: Capital of France?\nAnswer:", n=1)  # /completions: the text as given, no template
[' Paris']
"""

from __future__ import annotations

import os
from dataclasses import dataclass


class EndpointError(ConnectionError):
    """The endpoint ``url`` could not be reached or refused the request."""

    def __init__(self, message: str, url: str = ""):
        super().__init__(message)
        self.url = url


@dataclass
class ChatClient:
    """``prompt -> reply`` through ``base_url``'s ``/chat/completions`` (one user message, greedy by
    default); :meth:`chat_samples` and :meth:`complete` sample ``n`` replies to a conversation or
    continuations of a text. The API key, if the server needs one, is read from the environment
    variable ``api_key_env`` (local servers usually need none)."""

    base_url: str
    model: str
    api_key_env: str = "OPENAI_API_KEY"
    max_tokens: int = 64
    temperature: float = 0.0
    timeout: float = 60.0
    max_retries: int = 2

    def __post_init__(self):
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must be an http(s) URL like http://localhost:8000/v1, got {self.base_url!r}")
        if not self.model:
            raise ValueError("model must name the model the endpoint serves (e.g. Qwen/Qwen3-8B)")
        if self.max_tokens < 1 or self.timeout <= 0 or self.max_retries < 0 or self.temperature < 0:
            raise ValueError(
                "need max_tokens >= 1, timeout > 0, max_retries >= 0 and temperature >= 0, got "
                f"{self.max_tokens}, {self.timeout}, {self.max_retries}, {self.temperature}"
            )
        self._client = None
        self._extras = True  # send optional fields (seed, vLLM's extras) until the server rejects them

    def _openai(self):
        if self._client is None:
            import openai

            self._client = openai.OpenAI(
                base_url=self.base_url,
                api_key=os.environ.get(self.api_key_env) or "not-needed",
                timeout=self.timeout,
                max_retries=self.max_retries,
            )
        return self._client

    def _fail(self, err) -> EndpointError:
        why = (str(err).splitlines() or [""])[0]
        return EndpointError(
            f"chat endpoint {self.base_url} failed ({type(err).__name__}: {why}); "
            "check the URL, the model name and that the server is up",
            url=self.base_url,
        )

    def __call__(self, prompt: str) -> str:
        """The endpoint's reply to ``prompt`` (stripped)."""
        import openai

        try:
            reply = self._openai().chat.completions.create(
                model=self.model,
                messages=[{"role": "user", "content": prompt}],
                max_tokens=self.max_tokens,
                temperature=self.temperature,
            )
        except openai.APIError as err:
            raise self._fail(err) from None
        return (reply.choices[0].message.content or "").strip()

    def served_models(self) -> list[str] | None:
        """The model names the endpoint serves (``GET /models``), or None when it does not list them."""
        import openai

        try:
            return [m.id for m in self._openai().models.list()]
        except openai.NotFoundError:
            return None
        except openai.APIError as err:
            raise self._fail(err) from None

    def chat_samples(
        self,
        messages: list[dict],
        n: int = 1,
        temperature: float | None = None,
        max_tokens: int | None = None,
        seed: int | None = None,
    ) -> list[str]:
        """``n`` replies (stripped) to the conversation ``messages`` (``role``/``content`` dicts) from
        ``/chat/completions``; the server applies its chat template. ``temperature`` and ``max_tokens``
        default to the client's; ``seed`` is sent unless the server rejects it."""
        return self._samples("chat", messages, n, temperature, max_tokens, seed, {})

    def complete(
        self,
        prompt: str,
        n: int = 1,
        temperature: float | None = None,
        max_tokens: int | None = None,
        seed: int | None = None,
        **extra,
    ) -> list[str]:
        """``n`` continuations (stripped) of the text ``prompt`` from ``/completions``: the text as given,
        no chat template. ``extra`` are optional request fields of servers that know them (vLLM's
        ``min_tokens``, ``add_special_tokens``); they and ``seed`` are dropped if the server rejects them."""
        return self._samples("text", prompt, n, temperature, max_tokens, seed, extra)

    def _samples(self, kind, prompt, n, temperature, max_tokens, seed, extra) -> list[str]:
        out: list[str] = []
        while len(out) < n:  # a server that ignores ``n`` returns fewer choices: ask again for the rest
            request = {
                "model": self.model,
                ("messages" if kind == "chat" else "prompt"): prompt,
                "n": n - len(out),
                "max_tokens": self.max_tokens if max_tokens is None else max_tokens,
                "temperature": self.temperature if temperature is None else temperature,
                "top_p": 1.0,
            }
            optional = dict(extra, **({} if seed is None else {"seed": seed + len(out)}))
            choices = self._create(kind, request, optional).choices
            if not choices:
                raise EndpointError(f"chat endpoint {self.base_url} returned no choices", url=self.base_url)
            out += [((c.message.content if kind == "chat" else c.text) or "").strip() for c in choices]
        return out[:n]

    def _create(self, kind: str, request: dict, optional: dict):
        """One request; ``optional`` fields go along until the server rejects a request that has them
        (then it is sent again without them, and they are never sent again)."""
        import openai

        api = self._openai().chat.completions if kind == "chat" else self._openai().completions
        sent = optional if self._extras else {}
        try:
            try:
                return api.create(**request, extra_body=sent or None)
            except (openai.BadRequestError, openai.UnprocessableEntityError):
                if not sent:
                    raise
                if self._extras:
                    self._extras = False
                    from probity.report.console import note

                    note(f"{self.base_url} rejected a request with {', '.join(sent)}; sending it without them")
                return api.create(**request)
        except openai.APIError as err:
            raise self._fail(err) from None
