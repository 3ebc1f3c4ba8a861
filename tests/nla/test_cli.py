"""`probity nla train|explain|audit` end to end on a tiny random model, and bad input."""

import json

import pytest
from typer.testing import CliRunner

from probity.nla.cli import app
from probity.nla.evaluate import mentions, read_transcripts
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
    )
    assert res.exit_code == 0, res.output
    return root, out


def test_train_writes_metrics_report_and_checkpoint(trained):
    root, out = trained
    metrics = json.loads((root / "m.json").read_text())
    assert set(metrics) == {"fve_ar_sft", "fve_sft", "fve_rl", "fve_shuffled", "attribute_recovery", "audit_auroc"}
    assert all(isinstance(metrics[k], float) for k in ("fve_ar_sft", "fve_sft", "fve_rl", "fve_shuffled"))
    assert (out / "index.html").is_file() and "FVE over training" in (out / "index.html").read_text()
    assert (out / "nla" / "nla.json").is_file() and (out / "nla" / "ar" / "value_head.safetensors").is_file()
    assert json.loads((out / "nla" / "nla.json").read_text())["target"] == "tiny-qwen3"


def test_explain_and_audit(trained):
    root, out = trained
    res = runner.invoke(app, ["explain", "--checkpoint", str(out / "nla"), "--text", "w1 w2 w3", "--position", "-1"])
    assert res.exit_code == 0, res.output
    assert "w3" in res.output and "description" in res.output
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


def test_bad_input_fails_fast(tmp_path):
    res = runner.invoke(app, ["train", "--model", "tiny-qwen3", "--texts", str(tmp_path / "missing.txt")])
    assert res.exit_code != 0 and "no text file" in res.output
    res = runner.invoke(app, ["train", "--model", "tiny-qwen3", "--group", "2"])
    assert res.exit_code == 2 and "group must be in 4..64" in " ".join(res.output.split())  # a usage error
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
