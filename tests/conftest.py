"""Shared fixtures: the real SmolLM2-135M-Instruct (loaded once per test worker), a local
OpenAI-compatible chat server, one torch thread, and the command-line contract (``usage_error``)."""

import http.server
import json
import os
import threading
from dataclasses import dataclass, field

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test` runs two workers on two cores: one thread each,
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # read by torch at import and by the processes tests start

import torch  # noqa: E402  (after OMP_NUM_THREADS)


@pytest.fixture
def one_thread():
    """Torch on one thread for the test: on the shared 2-core machine, intra-op threads of tiny
    matrices fight the other test worker and run many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def smollm2():
    """(model, tokenizer) of the real SmolLM2-135M-Instruct, offline, eval mode, float32."""
    from probity import models

    return models.load(models.SMOLLM2)


@dataclass
class ChatServer:
    """A local stand-in for an OpenAI-compatible endpoint: ``reply(prompt) -> text`` answers each
    ``/chat/completions`` request; ``seen`` records (path, JSON body, Authorization header)."""

    reply: object = None
    status: int = 200
    seen: list = field(default_factory=list)
    url: str = ""


@pytest.fixture
def serve():
    """``serve(Handler) -> base URL``: runs an ``http.server`` request handler class on 127.0.0.1 (a free
    port) as ``http://127.0.0.1:PORT/v1``, shut down after the test."""
    servers = []

    def start(handler) -> str:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}/v1"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def chat_server(serve):
    """A running :class:`ChatServer` on 127.0.0.1 (a free port), shut down after the test."""
    state = ChatServer(reply=lambda prompt: "OK")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - the http.server API
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state.seen.append((self.path, body, self.headers.get("Authorization")))
            if state.status != 200:
                out = json.dumps({"error": {"message": "stub failure", "type": "server_error"}}).encode()
            else:
                text = state.reply(body["messages"][-1]["content"])
                out = json.dumps(
                    {
                        "id": "chatcmpl-stub",
                        "object": "chat.completion",
                        "created": 0,
                        "model": body["model"],
                        "choices": [
                            {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}
                        ],
                    }
                ).encode()
            self.send_response(state.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *args):
            pass

    state.url = serve(Handler)
    return state


def _no_loading(*args, **kwargs):
    raise AssertionError("a model was loaded before the command checked its input")


@pytest.fixture
def usage_error(monkeypatch, tmp_path, capsys):
    """``usage_error(*args) -> str``: run ``probity ARGS`` through the entry point in an empty
    working folder with every model loader disabled, and check the command-line contract for bad
    input: exit status 2, exactly one line ``error: ...`` on stderr, no traceback, no file written,
    no model loaded. Returns the error line."""
    from transformers import PreTrainedModel

    from probity.cli import main
    from probity.organisms import _native, censored_tiny

    monkeypatch.setattr(PreTrainedModel, "from_pretrained", classmethod(_no_loading))
    monkeypatch.setattr(_native, "load_weights", _no_loading)
    monkeypatch.setattr(censored_tiny, "load_folder", _no_loading)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)

    def run(*args: str) -> str:
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        assert code == 2, f"exit {code} for {args}; stderr: {err!r}; stdout: {out[-500:]!r}"
        assert err.count("\n") == 1 and err.startswith("error: "), f"not one error line: {err!r}"
        assert "Traceback" not in out + err
        assert not any(work.iterdir()), f"{args} wrote {[p.name for p in work.iterdir()]}"
        return err.strip()

    return run
