"""The OpenAI-compatible chat client against a local stub server."""

import pytest

from probity.models import ChatClient, EndpointError
from probity.nla.labellers import OpenAILabeller, Sample


def test_client_sends_one_user_message_and_the_key(chat_server, monkeypatch):
    monkeypatch.setenv("PROBITY_TEST_KEY", "sk-test")
    chat_server.reply = lambda prompt: f"  echo: {prompt}  "
    client = ChatClient(chat_server.url, "stub-model", api_key_env="PROBITY_TEST_KEY", max_tokens=5)
    assert client("hello") == "echo: hello"
    path, body, auth = chat_server.seen[0]
    assert path == "/v1/chat/completions" and auth == "Bearer sk-test"
    assert body["model"] == "stub-model" and body["max_tokens"] == 5 and body["temperature"] == 0
    assert body["messages"] == [{"role": "user", "content": "hello"}]


def test_client_failure_is_one_typed_line(chat_server):
    chat_server.status = 500
    client = ChatClient(chat_server.url, "stub-model", max_retries=0)
    with pytest.raises(EndpointError, match="chat endpoint .* failed") as err:
        client("hello")
    assert "\n" not in str(err.value)
    with pytest.raises(EndpointError, match="check the URL"):
        ChatClient("http://127.0.0.1:9/v1", "stub-model", max_retries=0, timeout=2)("hello")  # nothing listens


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"base_url": "localhost:8000"}, "http\\(s\\) URL"),
        ({"model": ""}, "model must name"),
        ({"max_tokens": 0}, "max_tokens >= 1"),
        ({"timeout": 0}, "timeout > 0"),
    ],
)
def test_client_rejects_bad_settings_before_any_request(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ChatClient(**{"base_url": "http://localhost:8000/v1", "model": "m", **kwargs})


def test_nla_labeller_goes_through_the_client(chat_server):
    chat_server.reply = lambda prompt: "a  city\nname"
    labeller = OpenAILabeller(ChatClient(chat_server.url, "labeller", max_tokens=60))
    assert labeller([Sample("The capital of France is Paris", "Paris", 6)]) == ["a city name"]
    assert "The capital of France is Paris" in chat_server.seen[0][1]["messages"][0]["content"]
