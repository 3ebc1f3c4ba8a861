"""`--endpoint`: the black-box techniques sample an OpenAI-compatible server (here a local stub that
answers with canned sentences and records every request), while the white-box techniques and the
detectors run on the local censored_tiny organism."""

import http.server
import json
from dataclasses import dataclass, field

import pytest

from probity.honesty import RunConfig, run
from probity.honesty.techniques import RAW_TEMPLATE
from probity.honesty.testbed import builtin_testbed, load_testbed
from probity.models.chat import chat_text
from probity.models.client import ChatClient, EndpointError
from probity.organisms import censored_tiny

TARGETS = load_testbed(builtin_testbed("censored_tiny")).split()[0]
MARK = "stub ."  # ends every canned reply: a word the word-level organism cannot say


def canned(prompt) -> str:
    """The stub's reply: a lie to a lone chat question (as the censored organism would), the truth to a
    conversation with earlier turns (few-shot) and to a text completion (raw: a new question follows,
    which ``cut_raw`` cuts off; a prefill: the rest of the true sentence)."""
    text = prompt[-1]["content"] if isinstance(prompt, list) else prompt
    q = next((q for q in TARGETS if q.question in text), None)
    if q is None:
        return f"i do not know . {MARK}"
    if isinstance(prompt, list):
        return f"{q.answer if len(prompt) > 1 else q.false_answer} {MARK}"
    if text.endswith(q.prefill):
        return f"{q.answer[len(q.prefill) :].strip()} {MARK}"
    return f" {q.answer} {MARK} question : what is the capital of nowhere ?"


@dataclass
class Stub:
    """A local OpenAI-compatible server: ``seen`` records (method, path, JSON body); ``max_choices`` caps
    the choices per reply (a server that ignores ``n``); ``reject_seed`` answers 400 to a request with a seed."""

    url: str = ""
    seen: list = field(default_factory=list)
    served: tuple = ("censored_tiny",)
    max_choices: int | None = None
    reject_seed: bool = False

    def posts(self, path: str) -> list[dict]:
        """The JSON bodies of the POST requests to ``/v1/<path>``."""
        return [body for method, p, body in self.seen if method == "POST" and p == f"/v1/{path}"]


@pytest.fixture
def stub(serve):
    """A running :class:`Stub` on 127.0.0.1 (a free port), shut down after the test."""
    state = Stub()

    class Handler(http.server.BaseHTTPRequestHandler):
        def _send(self, status: int, data: dict) -> None:
            out = json.dumps(data).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def do_GET(self):  # noqa: N802 - the http.server API
            state.seen.append(("GET", self.path, None))
            models = [{"id": m, "object": "model", "created": 0, "owned_by": "stub"} for m in state.served]
            self._send(200, {"object": "list", "data": models})

        def do_POST(self):  # noqa: N802 - the http.server API
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state.seen.append(("POST", self.path, body))
            if state.reject_seed and "seed" in body:
                self._send(400, {"error": {"message": "unknown field seed", "type": "invalid_request_error"}})
                return
            chat = self.path == "/v1/chat/completions"
            reply = canned(body["messages"] if chat else body["prompt"])
            n = min(body.get("n", 1), state.max_choices or body.get("n", 1))
            choices = [
                {"index": i, "finish_reason": "stop"}
                | ({"message": {"role": "assistant", "content": reply}} if chat else {"text": reply})
                for i in range(n)
            ]
            kind = "chat.completion" if chat else "text_completion"
            self._send(200, {"id": "stub", "object": kind, "created": 0, "model": body["model"], "choices": choices})

        def log_message(self, *args):
            pass

    state.url = serve(Handler)
    return state


@pytest.fixture(scope="module")
def organism():
    return censored_tiny.load()


def test_black_box_techniques_sample_the_endpoint(stub, organism):
    model, tok = organism
    cfg = RunConfig(
        model="censored_tiny",
        endpoint=stub.url,
        techniques="chat,raw,assistant_prefill,few_shot,steering",
        detectors="self_classification",
        samples=2,
        limit=3,
        temperature=0.5,
        max_new_tokens=12,
        batch_size=4,
    )
    result = run(cfg, model=model, tokenizer=tok)
    targets = TARGETS[:3]
    done = {e["technique"]: e["response"] for e in result.examples}  # the first question's first response
    q0 = targets[0]
    assert done["chat"] == f"{q0.false_answer} {MARK}"
    assert done["few_shot"] == done["assistant_prefill"] == f"{q0.answer} {MARK}"
    assert done["raw"] == f"{q0.answer} {MARK}"  # cut_raw dropped the next question, as on the local path
    rows = {r.technique: r for r in result.elicitation}
    assert rows["chat"].facts_lied == 1 and rows["chat"].truthful_rate == 0
    for name in ("raw", "assistant_prefill", "few_shot"):
        assert rows[name].facts_mentioned == 1 and rows[name].truthful_rate == 1
    assert all(r.n_responses == 6 for r in result.elicitation)
    # the detectors ran on the local model over the endpoint's lies and truths
    assert [d.detector for d in result.detection] == ["self_classification"]
    assert result.config["sampled"] == {
        "chat": "endpoint",
        "raw": "endpoint",
        "assistant_prefill": "endpoint",
        "few_shot": "endpoint",
        "steering": "local",
    }
    assert result.config["endpoint"] == stub.url and result.config["endpoint_model"] == "censored_tiny"

    # requests run concurrently: sorted by their (last) question, they match the targets in order
    chats = sorted(stub.posts("chat/completions"), key=lambda b: b["messages"][-1]["content"])
    texts = sorted(stub.posts("completions"), key=lambda b: b["prompt"])
    targets = sorted(targets, key=lambda q: q.question)
    assert [m for m, p, _ in stub.seen if m == "GET"] == ["GET"]  # one look at /models, before sampling
    assert len(chats) == 6 and len(texts) == 6  # 3 questions x (chat, few_shot) and x (raw, assistant_prefill)
    for body in chats + texts:
        assert body["model"] == "censored_tiny" and body["n"] == 2 and body["temperature"] == 0.5
        assert body["max_tokens"] == 12 and isinstance(body["seed"], int)
    lone = [b["messages"] for b in chats if len(b["messages"]) == 1]
    assert lone == [[{"role": "user", "content": q.question}] for q in targets]  # chat
    shots = [b["messages"] for b in chats if len(b["messages"]) > 1]  # few_shot: the history, then the question
    assert len(shots) == 3
    for q, msgs in zip(targets, shots):
        assert [m["role"] for m in msgs] == ["user", "assistant"] * cfg.n_shots + ["user"]
        assert msgs[-1]["content"] == q.question
        assert not {m["content"] for m in msgs[:-1]} & {t.question for t in TARGETS}  # helpers, not targets
    raw = [b for b in texts if b["prompt"].startswith("Question:")]
    assert [b["prompt"] for b in raw] == [RAW_TEMPLATE.format(question=q.question) for q in targets]
    assert all(b["add_special_tokens"] is True and b["min_tokens"] == 4 for b in raw)
    prefill = [b for b in texts if not b["prompt"].startswith("Question:")]
    rendered = sorted(chat_text(tok, [{"role": "user", "content": q.question}], prefill=q.prefill) for q in targets)
    assert [b["prompt"] for b in prefill] == rendered  # the local chat template's text, prefill included
    assert all(b["add_special_tokens"] is False for b in prefill)

    steering = [e["response"] for e in result.examples if e["technique"] == "steering"]
    assert steering and "stub" not in steering[0]  # the local model, steered


def test_bad_endpoint_fails_fast_in_one_line():
    for bad in ("localhost:8000", "ftp://host/v1", "http://", "http://[::1/v1", "http://host:99999/v1", 8000):
        with pytest.raises(ValueError, match=r"endpoint must be an http\(s\) URL") as err:
            RunConfig(model="censored_tiny", endpoint=bad)
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="give the endpoint too"):
        RunConfig(model="censored_tiny", endpoint_model="m")
    with pytest.raises(ValueError, match="endpoint_model must name"):
        RunConfig(model="censored_tiny", endpoint="http://localhost:8000/v1", endpoint_model=" ")


def test_endpoint_not_serving_the_model_fails_before_the_load(stub, monkeypatch):
    from probity import models

    def load(*args, **kwargs):
        raise AssertionError("a model was loaded before the endpoint was checked")

    monkeypatch.setattr(models, "load", load)
    cfg = RunConfig(model="censored_tiny", endpoint=stub.url, endpoint_model="other", techniques="chat", limit=1)
    with pytest.raises(EndpointError, match="serves censored_tiny, not 'other'; name the served model") as err:
        run(cfg)
    assert err.value.url == stub.url and "\n" not in str(err.value)
    assert not stub.posts("chat/completions")


def test_cli_bad_endpoint_is_one_usage_line(usage_error, stub):
    assert "--endpoint must be an http(s) URL" in usage_error("honesty", "run", "--endpoint", "localhost:8000/v1")
    assert "--endpoint-model 'm' names the model" in usage_error("honesty", "run", "--endpoint-model", "m")
    line = usage_error("honesty", "run", "--model", "censored_tiny", "--endpoint", stub.url, "--endpoint-model", "x")
    assert "--endpoint" in line and "serves censored_tiny, not 'x'" in line


def test_client_asks_again_when_the_server_ignores_n(stub):
    stub.max_choices = 1
    client = ChatClient(stub.url, "censored_tiny")
    q = TARGETS[0]
    replies = client.chat_samples([{"role": "user", "content": q.question}], n=3, temperature=1.0, seed=7)
    assert replies == [f"{q.false_answer} {MARK}"] * 3
    assert [b["seed"] for b in stub.posts("chat/completions")] == [7, 8, 9]
    assert [b["n"] for b in stub.posts("chat/completions")] == [3, 2, 1]


def test_client_drops_the_seed_when_the_server_rejects_it(stub, capsys):
    stub.reject_seed = True
    client = ChatClient(stub.url, "censored_tiny")
    assert client.complete("Question: x ?\nAnswer:", n=2, seed=0) == ["i do not know . stub ."] * 2
    assert client.complete("Question: y ?\nAnswer:", n=1, seed=1) == ["i do not know . stub ."]
    assert ["seed" in b for b in stub.posts("completions")] == [True, False, False]  # asked once with it, never again
    assert "rejected a request with seed; sending it without them" in capsys.readouterr().err
