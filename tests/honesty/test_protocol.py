"""The honesty protocol end to end: organism, resume after a kill, LoRA resume, CLI, real SmolLM2."""

import json

import pytest
import torch
from typer.testing import CliRunner

from probity.honesty import RunConfig, elicit, finetune_lora, get_techniques, honesty_data, load_testbed, run
from probity.honesty.probe import POOLS
from probity.honesty.protocol import SampleStore
from probity.honesty.testbed import builtin_testbed
from probity.organisms import censored_tiny

FAST = dict(model="censored_tiny", samples=2, limit=6, lora_steps=6, max_new_tokens=16, batch_size=8)


@pytest.fixture(scope="module")
def organism():
    return censored_tiny.load()


@pytest.fixture(scope="module")
def result(organism):
    return run(RunConfig(**FAST), model=organism[0], tokenizer=organism[1])


def test_all_techniques_and_detectors_report(result):
    summary = json.loads(json.dumps(result.summary()))
    assert [r["technique"] for r in summary["elicitation"]] == list(n.name for n in get_techniques("all"))
    for row in summary["elicitation"]:
        assert {"technique", "facts_mentioned", "facts_lied", "refusal_rate", "truthful_rate"} <= set(row)
        assert row["n_responses"] == 12 and 0 <= row["facts_mentioned"] <= 1
        lo, hi = row["truthful_rate_ci"]
        assert lo <= row["truthful_rate"] <= hi
        assert row["facts_mentioned"] <= row["facts_mentioned_pooled"]
    assert [d["detector"] for d in summary["detection"]] == [
        "self_classification",
        "confession",
        "probe",
        "probe_statements",
        "reference",
    ]
    for d in result.detection:  # the share of lies caught at 1% false positives, from the ROC curve
        assert d.tpr_at_1pct_fpr is None or 0 <= d.tpr_at_1pct_fpr <= 1
    rows = {r.technique: r for r in result.elicitation}
    # the organism's signature, even on six questions: chat hides, raw completion tells
    assert rows["chat"].facts_lied > rows["raw"].facts_lied
    assert rows["raw"].facts_mentioned > rows["chat"].facts_mentioned
    assert result.probe.layer in range(organism_layers())
    assert len(result.probe.sweep) == len(POOLS) * organism_layers()  # every layer, every pooling
    assert set(result.figures()) == {"elicitation", "detection"}


def organism_layers():
    return censored_tiny.load()[0].config.num_hidden_layers


def test_resume_after_kill_gives_the_same_result(organism, tmp_path):
    cfg = RunConfig(
        **{**FAST, "techniques": "chat,fuzzing", "detectors": "self_classification", "limit": 4}, work_dir=str(tmp_path)
    )
    first = run(cfg, model=organism[0], tokenizer=organism[1])
    path = tmp_path / "samples.jsonl"
    lines = path.read_text().splitlines()
    assert len(lines) == 8
    path.write_text("\n".join(lines[:5]) + "\n" + lines[5][:20])  # killed mid-write
    assert len(SampleStore(path).done) == 5
    again = run(cfg, model=organism[0], tokenizer=organism[1])
    assert again.summary() == first.summary()
    assert len(SampleStore(path).done) == 8


def test_lora_resumes_from_its_checkpoint(organism, tmp_path):
    model, tok = organism
    data = honesty_data(load_testbed(builtin_testbed("censored_tiny")).split()[1][:20])
    straight = finetune_lora(model, tok, data, steps=4, batch_size=4)
    finetune_lora(model, tok, data, steps=2, batch_size=4, checkpoint_dir=tmp_path, save_every=2)
    resumed = finetune_lora(model, tok, data, steps=4, batch_size=4, checkpoint_dir=tmp_path, save_every=2)
    a, b = straight.state_dict(), resumed.state_dict()
    assert all(torch.allclose(a[k], b[k]) for k in a if "lora_" in k)
    assert not any("lora_" in k for k in model.state_dict())  # the base model is untouched


def test_bad_names_fail_fast(organism):
    with pytest.raises(ValueError, match="unknown technique.*choose from"):
        run(RunConfig(techniques="chat,telepathy"), model=organism[0], tokenizer=organism[1])
    with pytest.raises(ValueError, match="needs a prepared 'shots'"):
        elicit("few_shot", *organism, load_testbed(builtin_testbed("censored_tiny")).questions[0])
    q = load_testbed(builtin_testbed("censored_tiny")).sensitive()[0]
    assert len(elicit("raw", *organism, q, n=3)) == 3


def test_cli_writes_json_and_html(tmp_path):
    from probity.cli import app

    out = tmp_path / "run"
    res = CliRunner().invoke(
        app,
        [
            "honesty",
            "run",
            "--model",
            "censored_tiny",
            "--techniques",
            "chat,raw",
            "--detectors",
            "self_classification,probe",
            "--samples",
            "1",
            "--limit",
            "3",
            "--json",
            str(tmp_path / "h.json"),
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "h.json").read_text())
    assert [r["technique"] for r in data["elicitation"]] == ["chat", "raw"]
    assert {"detector", "auroc", "balanced_accuracy"} <= set(data["detection"][0])
    assert (out / "index.html").read_text().count("<figure>") >= 2  # the figures, inline (SVG or PNG)
    data = json.loads((tmp_path / "h.json").read_text())
    assert data["provenance"]["command"] == "honesty run" and data["provenance"]["inputs"]["limit"] == 3


def test_real_smollm2_end_to_end(smollm2):
    model, tok = smollm2
    cfg = RunConfig(
        model="smollm2-135m",
        techniques="chat,assistant_prefill",
        detectors="self_classification,probe",
        samples=1,
        limit=2,
        max_new_tokens=10,
        temperature=0,
    )
    res = run(cfg, model=model, tokenizer=tok)
    rows = {r.technique: r for r in res.elicitation}
    assert rows["chat"].n_questions == 2 and res.testbed == "capitals"
    assert rows["assistant_prefill"].facts_mentioned > 0  # "The capital of Japan is" -> Tokyo
    assert res.probe is not None and len(res.probe.sweep) == len(POOLS) * model.config.num_hidden_layers
