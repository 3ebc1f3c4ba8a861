"""`probity nla train|explain|audit` end to end on a tiny random model, and bad input."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from probity.nla.cli import app
from probity.nla.evaluate import mentions, read_transcripts
from probity.nla.training import TrainConfig
from probity.report.metrics import auroc

runner = CliRunner()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("nla_cli")
    texts = root / "texts.txt"
    texts.write_text("\n".join(" ".join(f"w{(i * 7 + k) % 40}" for k in range(5)) for i in range(16)))
    out = root / "run"
    res = runner.invoke(
        app,
        [
            "train",
            "--model",
            "tiny-qwen3",
            "--layer",
            "1",
            "--steps",
            "2",
            "--sft-steps",
            "3",
            "--batch-size",
            "4",
            "--group",
            "4",
            "--texts",
            str(texts),
            "--out",
            str(out),
            "--json",
            str(root / "m.json"),
        ],
        env={"PROBITY_PROGRESS_EVERY": "0"},  # a progress line at every step (stderr is not a terminal here)
    )
    assert res.exit_code == 0, res.output
    return root, out, res


def test_train_writes_metrics_report_and_checkpoint(trained):
    root, out, res = trained
    metrics = json.loads((root / "m.json").read_text())
    provenance = metrics.pop("provenance")
    assert set(metrics) == {"fve_ar_sft", "fve_sft", "fve_rl", "fve_shuffled", "attribute_recovery", "audit_auroc"}
    assert all(isinstance(metrics[k], float) for k in ("fve_ar_sft", "fve_sft", "fve_rl", "fve_shuffled"))
    assert provenance["command"] == "nla train" and provenance["probity"]
    assert provenance["inputs"] == {
        "model": "tiny-qwen3",
        "layer": 1,
        "steps": 2,
        "sft_steps": 3,
        "batch_size": 4,
        "group": 4,
        "replay": 1.0,
        "seed": 0,
        "texts": str(root / "texts.txt"),
        "labeller_model": None,
    }
    assert (out / "index.html").is_file() and "FVE over training" in (out / "index.html").read_text()
    assert json.loads((out / "result.json").read_text())["result"]["provenance"]["inputs"]["steps"] == 2
    assert (out / "nla" / "nla.json").is_file() and (out / "nla" / "ar" / "value_head.safetensors").is_file()
    assert json.loads((out / "nla" / "nla.json").read_text())["target"] == "tiny-qwen3"
    # in a pipe, progress comes as plain lines on stderr; a tiny model gets no cost warning
    assert "nla train: 8/8 (100%)" in res.stderr and "extract: " in res.stderr
    assert "note:" not in res.stderr


def test_real_model_says_what_it_costs_first(tmp_path):
    """A model that is not the organism or tiny-* (here a tiny one saved to a folder) gets one line
    before training: its checkpoint size, that only the newest is kept, and a time estimate."""
    from probity.models import tiny

    model, tok = tiny("llama")
    model.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(" ".join(f"w{(i * 5 + k) % 40}" for k in range(5)) for i in range(10)))
    args = ["train", "--model", str(tmp_path / "model"), "--steps", "1", "--sft-steps", "1", "--batch-size", "4"]
    res = runner.invoke(app, [*args, "--group", "4", "--texts", str(texts), "--out", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    notes = [line for line in res.stderr.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "GB (keeping the newest 1" in notes[0] and "3 steps take roughly" in notes[0]
    assert len(list((tmp_path / "run" / "checkpoints").iterdir())) == 1


def test_explain_and_audit(trained):
    root, out, _ = trained
    res = runner.invoke(app, ["explain", "--checkpoint", str(out / "nla"), "--text", "w1 w2 w3", "--position", "-1"])
    assert res.exit_code == 0, res.output
    assert "w3" in res.output and "description" in res.output
    res = runner.invoke(
        app, ["explain", "--checkpoint", str(out / "nla"), "--text", "w1 w2 w3"], env={"PROBITY_PROGRESS_EVERY": "0"}
    )
    assert res.exit_code == 0 and "describing: 3/3 (100%)" in res.stderr
    transcripts = root / "t.jsonl"
    transcripts.write_text('{"text": "w1 w2 w3", "label": 1}\n{"text": "w4 w5", "label": 0}\n')
    res = runner.invoke(
        app,
        [
            "audit",
            "--checkpoint",
            str(out / "nla"),
            "--transcripts",
            str(transcripts),
            "--concept",
            "w",
            "--out",
            str(root / "audit"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "tokens flagged" in res.output and (root / "audit" / "result.json").is_file()
    saved = json.loads((root / "audit" / "result.json").read_text())["result"]["provenance"]
    assert saved["command"] == "nla audit"
    assert saved["inputs"] == {
        "checkpoint": "../run/nla",  # result files hold paths relative to their folder
        "model": "tiny-qwen3",
        "transcripts": "../t.jsonl",
        "concept": "w",
        "layer": 1,
    }


def test_bad_input_fails_fast(tmp_path):
    res = runner.invoke(app, ["train", "--model", "tiny-qwen3", "--texts", str(tmp_path / "missing.txt")])
    assert res.exit_code != 0 and "no text file" in res.output
    res = runner.invoke(app, ["train", "--model", "tiny-qwen3", "--group", "2"])
    assert res.exit_code == 2 and "group must be in 4..64" in " ".join(res.output.split())  # a usage error
    with pytest.raises(ValueError, match="nothing to train"):
        TrainConfig(ar_sft_steps=0, av_sft_steps=0, rl_steps=0)
    with pytest.raises(ValueError, match="rl_steps must be >= 0, got -1"):
        TrainConfig(rl_steps=-1)
    res = runner.invoke(
        app, ["train", "--model", "tiny-qwen3", "--labeller-url", "localhost:8000", "--labeller-model", "m"]
    )
    assert res.exit_code == 2 and "http(s) URL" in res.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"txt": 1}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1: each line must be a JSON object"):
        read_transcripts(bad)
    with pytest.raises(FileNotFoundError, match="no checkpoint directory"):
        from probity.nla import load_nla

        load_nla(tmp_path / "nowhere")


def test_auroc_and_mentions():
    assert (
        auroc([3, 4, 1, 2], [1, 1, 0, 0]) == 1.0 and auroc([1, 1], [1, 0]) == 0.5 and auroc([0, 2, 1], [1, 1, 0]) == 0.5
    )
    assert mentions("The model  is LYING here", "is lying") and not mentions("honest", "lie")


def test_censored_smollm2_options_are_checked_before_anything_loads(tmp_path):
    res = runner.invoke(app, ["train", "--model", "censored", "--inject", "deep", "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and "unknown injection 'deep'" in res.output
    res = runner.invoke(
        app, ["train", "--model", "censored", "--texts", str(tmp_path / "t.txt"), "--out", str(tmp_path)]
    )
    assert res.exit_code == 2 and "brings its own data" in res.output


def test_torchrun_trains_on_two_processes(tmp_path):
    """``torchrun --nproc-per-node 2 probity nla train`` joins one gloo group: one report, from rank 0."""
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(" ".join(f"w{(i * 7 + k) % 40}" for k in range(5)) for i in range(16)))
    out = tmp_path / "run"
    args = ["--model", "tiny-qwen3", "--layer", "1", "--steps", "2", "--sft-steps", "2", "--batch-size", "4"]
    args += ["--group", "4", "--texts", str(texts), "--out", str(out), "--json", str(tmp_path / "m.json")]
    torchrun = Path(sys.executable).parent / "torchrun"
    probity = Path(sys.executable).parent / "probity"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PROBITY_PROGRESS_EVERY": "0"}
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = str(free.getsockname()[1])
    cmd = [str(torchrun), "--nproc-per-node", "2", "--master-port", port, str(probity), "nla", "train", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert (out / "nla" / "nla.json").is_file() and "fve_rl" in metrics
    assert done.stdout.count("checkpoint:") == 1  # rank 0 alone reports
    assert json.loads((out / "result.json").read_text())["result"]["training"]["processes"] == 2
