"""One client for OpenAI-compatible chat endpoints: OpenAI, vLLM, llama.cpp server, Ollama.

Every instrument that asks a language model over HTTP (the honesty instrument's LLM judge,
the NLA teacher labeller) goes through :class:`ChatClient`, built on the ``openai`` package.

>>> judge = ChatClient("http://localhost:8000/v1", "Qwen/Qwen3-8B", max_tokens=8)
>>> judge("Reply with one word: is Paris the capital of France?")
'Yes'
"""

from __future__ import annotations

import os
from dataclasses import dataclass


class EndpointError(ConnectionError):
    """The endpoint could not be reached or refused the request."""


@dataclass
class ChatClient:
    """``prompt -> reply`` through ``base_url``'s ``/chat/completions`` (one user message, greedy by
    default). The API key, if the server needs one, is read from the environment variable
    ``api_key_env`` (local servers usually need none)."""

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
            why = (str(err).splitlines() or [""])[0]
            raise EndpointError(
                f"chat endpoint {self.base_url} failed ({type(err).__name__}: {why}); "
                "check the URL, the model name and that the server is up"
            ) from None
        return (reply.choices[0].message.content or "").strip()
