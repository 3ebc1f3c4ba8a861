"""`probity scrub run|list|refine --model`: a language model on the induction or IOI study. Bad input is one
line before any weights load (the ``usage_error`` fixture); a hypothesis that needs the model (its heads,
its sites) is refused in one line after it loads, before any scrub; runs write the organism path's JSON
and report. A tiny random Llama saved as an HF folder (with a word tokenizer over letter pairs, so the
induction task can draw its rows) for the fast runs; SmolLM2-135M for the study's own hypotheses."""

import json
import string

import pytest
import torch
from typer.testing import CliRunner

from probity.models import tiny, word_tokenizer
from probity.scrub import lm
from probity.scrub.cli import app

HYPOTHESIS = "name: mine\nroot: {name: out, sites: [output], children: [{name: h, site: '1.0'}]}\n"


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    """A folder holding a tiny random HF Llama (2 layers, 4 heads) and its tokenizer over letter pairs."""
    folder = tmp_path_factory.mktemp("tiny-lm")
    model, _ = tiny("llama", seed=0)
    pairs = [a + b for a in string.ascii_lowercase for b in string.ascii_lowercase]
    model.save_pretrained(folder)
    word_tokenizer(pairs[: model.config.vocab_size - 4]).save_pretrained(folder)
    return folder


@pytest.fixture
def hypothesis_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(HYPOTHESIS)
    return path


SMOLLM2 = ["--model", "smollm2-135m"]
BAD = [
    (["run", *SMOLLM2, "--organism", "paren"], "--model: give --organism or --model, not both"),
    (["list", *SMOLLM2, "--organism", "paren"], "not both"),
    (["refine", *SMOLLM2, "--organism", "induction"], "not both"),
    (["run", *SMOLLM2, "--task", "copying"], "--task: unknown task 'copying'; choose induction or ioi"),
    (["run", *SMOLLM2, "--device", "gpu"], "--device: unknown device 'gpu'; use cpu, cuda, cuda:N or auto"),
    (["run", *SMOLLM2, "--samples", "-5"], f"--samples: must be at least {lm.MIN_SAMPLES}, got -5"),
    (["run", *SMOLLM2, "--seed", "-1"], "--seed: must be >= 0"),
    (["run", *SMOLLM2, "--threshold", "1.5"], "--threshold: must be in [0, 1]"),
    (["run", *SMOLLM2, "--batch-size", "0"], "--batch-size: must be at least 1"),
    (["run", *SMOLLM2, "--max-memory", "0"], "--max-memory: must be a positive number of GB"),
    (["refine", *SMOLLM2, "--max-steps", "0"], "max_steps must be at least 1"),
    (["refine", *SMOLLM2, "--max-memory", "-1"], "--max-memory"),
    (["run", "--task", "ioi"], "--task: applies to --model only"),
    (["refine", "--device", "cpu"], "--device: applies to --model only"),
    (["list", "--organism", "paren", "--samples", "100"], "--samples: applies to --model only"),
    (["run", "--model", "nosuch-model"], "unknown model 'nosuch-model'"),
    (["run", "--model", "paren"], "a paren or induction organism takes --organism"),
    (["run", "--model", "tiny-llama"], "ordinary word pieces"),  # its tokenizer's words are w0, w1, ...
]


@pytest.mark.parametrize("args, says", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_a_bad_model_option_is_one_line(usage_error, args, says):
    assert says in usage_error("scrub", *args)


def test_hypotheses_are_checked_before_the_weights(usage_error, tiny_lm, tmp_path):
    """Names are the task's study names; a file is parsed (its sites are checked once the model loads)."""
    line = usage_error("scrub", "run", "--model", tiny_lm, "--hypothesis", "1a")
    assert "unknown hypothesis '1a'" in line and "all-three" in line and "keep-only" in line
    line = usage_error("scrub", "refine", "--model", tiny_lm, "--task", "ioi", "--hypothesis", "all-three")
    assert "unknown hypothesis 'all-three'" in line and "SI=order" in line and "keep-only name movers" in line
    bad = tmp_path / "bad.yaml"
    bad.write_text("root: [unclosed")
    assert "not valid YAML" in usage_error("scrub", "run", "--model", tiny_lm, "--hypothesis", bad)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is here")
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_cuda_without_a_gpu_is_one_line(usage_error, device):
    line = usage_error("scrub", "run", *SMOLLM2, "--device", device)
    assert line.endswith("--device: no CUDA device here; use --device cpu")


def test_what_needs_the_model_is_refused_after_it_loads(tiny_lm, tmp_path):
    """On a random model no head scores 0.5: the study's hypotheses are refused naming --threshold, list
    says why they are missing; a file naming a site the model lacks is refused. No scrub runs."""
    runner = CliRunner()
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", "--model", str(tiny_lm), "--hypothesis", "all-three", "--out", str(out)])
    assert result.exit_code == 2 and "no induction head scores >= 0.5" in result.output
    assert "--threshold" in result.output and not out.exists()
    listed = runner.invoke(app, ["list", "--model", str(tiny_lm), "--samples", "10"])
    assert listed.exit_code == 0, listed.output
    assert "identity" in listed.stdout and "empty" in listed.stdout and "all-three" not in listed.stdout
    assert "no induction head scores >= 0.5" in listed.stderr
    far = tmp_path / "far.yaml"
    far.write_text(HYPOTHESIS.replace("'1.0'", "'5.0'"))
    result = runner.invoke(app, ["run", "--model", str(tiny_lm), "--hypothesis", str(far), "--out", str(out)])
    assert result.exit_code == 2 and "unknown site '5.0'" in result.output and not out.exists()


def test_run_and_refine_a_file_on_a_tiny_model(tiny_lm, hypothesis_file, tmp_path):
    runner = CliRunner()
    args = ["--model", str(tiny_lm), "--hypothesis", str(hypothesis_file), "--samples", "12", "--seed", "1"]
    result = runner.invoke(app, ["run", *args, "--json", str(tmp_path / "r.json"), "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "r.json").read_text())
    inputs = data["provenance"]["inputs"]
    assert {k: inputs[k] for k in ("model", "task", "device", "samples", "rows", "seed", "batch_size")} == {
        "model": str(tiny_lm),
        "task": "induction",
        "device": "cpu",
        "samples": 12,
        "rows": 12,
        "seed": 1,
        "batch_size": lm.TASKS["induction"].batch_size,
    }
    assert inputs["hypothesis_tree"]["name"] == "mine" and "heads" not in data  # a file: no heads scored
    assert data["loss_model"] < data["loss_scrubbed_all"] and set(data["per_node"]) == {"h"}
    assert (tmp_path / "r" / "index.html").is_file()

    out = tmp_path / "refined"
    result = runner.invoke(app, ["refine", *args, "--max-steps", "1", "--json", str(out / "t.json"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "step 0: start: mine" in result.output and "stopped:" in result.output
    data = json.loads((out / "t.json").read_text())
    assert data["provenance"]["inputs"]["senders"] == ["mlp0", "mlp1"]  # no head scores 0.3: the MLPs only
    assert data["provenance"]["inputs"]["max_steps"] == 1 and len(data["refine"]["steps"]) <= 2
    assert (out / "final.yaml").is_file() and (out / "index.html").is_file()


def test_a_study_hypothesis_on_smollm2(tmp_path, one_thread):
    """all-three on the induction heads found in SmolLM2-135M (10 rows): the heads and the loss recovered."""
    out = tmp_path / "r.json"
    result = CliRunner().invoke(
        app,
        ["run", *SMOLLM2, "--task", "induction", "--hypothesis", "all-three", "--samples", "10"]
        + ["--json", str(out), "--out", str(tmp_path / "report")],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    inputs = data["provenance"]["inputs"]
    assert inputs["model"] == "smollm2-135m" and inputs["hypothesis"] == "all-three" and inputs["rows"] == 10
    tree = inputs["hypothesis_tree"]["root"]["children"][0]
    assert [h for h, _ in data["heads"]["induction"]] == tree["sites"] and tree["sites"]
    assert all(score >= 0.5 for _, score in data["heads"]["previous_token"])
    assert 0 < data["loss_recovered"] < 1 and data["stderr"] > 0
    assert "induction heads (score >= 0.5)" in result.output
