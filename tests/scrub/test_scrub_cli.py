"""`probity scrub run|list` on the shipped paren organism, and a hypothesis given as a YAML file."""

import json

from typer.testing import CliRunner

from probity.organisms import _native
from probity.scrub.cli import app


def test_list_and_run_write_json_and_report(tmp_path, monkeypatch):
    monkeypatch.setenv("PROBITY_PROGRESS_EVERY", "0")  # a progress line after every scrub of the dataset
    runner = CliRunner()
    listed = runner.invoke(app, ["list", "--organism", "paren"])
    assert listed.exit_code == 0, listed.output
    for name in ("identity", "empty", "1a", "1b", "2a", "2b", "3a", "3b", "4"):
        assert name in listed.output
    out = tmp_path / "r.json"
    result = runner.invoke(
        app,
        [
            "run",
            "--organism",
            "paren",
            "--hypothesis",
            "1b",
            "--samples",
            "300",
            "--seed",
            "1",
            "--json",
            str(out),
            "--out",
            str(tmp_path / "report"),
            "--replicates",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    inputs = data["provenance"]["inputs"]
    assert data["provenance"]["command"] == "scrub run" and data["provenance"]["probity"]
    assert {k: inputs[k] for k in ("organism", "hypothesis", "samples", "rows", "seed", "replicates")} == {
        "organism": "paren",
        "hypothesis": "1b",
        "samples": 300,
        "rows": 300,
        "seed": 1,
        "replicates": 2,
    }
    assert inputs["batch_size"] == 512 and inputs["hypothesis_tree"]["name"] == "1b"
    steps = 3 + 3 + 3 * 2  # model, empty, 1b; one per head node; three per replicate
    lines = [line for line in result.stderr.splitlines() if line.startswith("scrubbing 1b (300 rows)")]
    done = [int(line.split(": ")[1].split("/")[0]) for line in lines]
    assert sorted(set(done)) == list(range(1, steps + 1)) and lines[-1].startswith(f"scrubbing 1b (300 rows): {steps}/")
    assert set(data) >= {
        "loss_model",
        "loss_scrubbed_all",
        "loss_hypothesis",
        "loss_recovered",
        "stderr",
        "per_node",
        "cancellation",
    }
    assert data["loss_model"] < data["loss_hypothesis"] < data["loss_scrubbed_all"]
    assert data["stderr_experiment"] > 0  # two whole-experiment replicates: dataset and trees redrawn
    roles = json.loads((_native.WEIGHTS / "paren" / "config.json").read_text())["meta"]["roles"]
    assert set(data["per_node"]) == set(
        roles["count"] + roles["horizon"]
    )  # one node per claimed head, as in Redwood's correspondence
    assert data["cancellation"]["constant_loss"] > 0
    assert (tmp_path / "report" / "index.html").is_file()


def test_run_a_yaml_hypothesis_and_reject_unknown_names(tmp_path):
    path = tmp_path / "h.yaml"
    horizon = json.loads((_native.WEIGHTS / "paren" / "config.json").read_text())["meta"]["roles"]["horizon"][0]
    path.write_text(
        "name: mine\nroot:\n  name: out\n  sites: [output, mlp2]\n  children:\n"
        f"    - {{name: horizon, site: '{horizon}', feature: horizon_test}}\n"
    )
    runner = CliRunner()
    out = tmp_path / "r.json"
    result = runner.invoke(
        app, ["run", "--hypothesis", str(path), "--samples", "200", "--json", str(out), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 0, result.output
    assert 0 < json.loads(out.read_text())["loss_recovered"] < 1
    bad = runner.invoke(app, ["run", "--hypothesis", "nonsense", "--samples", "50"])
    assert bad.exit_code != 0 and "unknown hypothesis 'nonsense'" in bad.output


def test_a_malformed_hypothesis_file_is_a_usage_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("root: [unclosed")
    result = CliRunner().invoke(app, ["run", "--organism", "paren", "--hypothesis", str(bad), "--samples", "50"])
    text = " ".join(result.output.replace("│", " ").split())  # the message, unwrapped from its box
    assert result.exit_code == 2 and "not valid YAML" in text and "Traceback" not in text
