"""`probity nla train|explain|audit`'s contract for bad input: one line on stderr, exit 2, nothing
written and no model loaded (the ``usage_error`` fixture). The target's depth comes from its config,
a checkpoint's settings from its sidecar and a text's length from the checkpoint's tokenizer, so
every check runs before a model loads. Also: help says the real defaults, a real model's run says
what it will cost first, and the estimate of that cost."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from probity.nla.cli import app

CKPT = str(Path(__file__).resolve().parents[2] / "probity" / "nla" / "checkpoints" / "censored_tiny")

# files the cases below name as {tmp}/NAME (written outside the fixture's empty working folder)
FILES = {
    "empty.txt": "",
    "blank.txt": "\n  \n",
    "one.txt": "only one text\n",
    "empty.jsonl": "",
    "bad.jsonl": '{"text": "hi"\n',
    "nokey.jsonl": '{"txt": "hi"}\n',
    "list.jsonl": '["hi"]\n',
    "notext.jsonl": '{"text": ""}\n',
    "numtext.jsonl": '{"text": 3}\n',
    "label.jsonl": '{"text": "hi", "label": "yes"}\n',
    "label2.jsonl": '{"text": "hi", "label": 2}\n',
    "array.json": '[{"text": "hi"}]',
    "binary.txt": b"\xff\xfe\x00",
    "nosidecar/placeholder": "",
    "run/nla/nla.json": "{}",  # OUT of a run: the checkpoint is OUT/nla
    "badsidecar/nla.json": "{not json",
    "oldsidecar/nla.json": json.dumps({"format": "probity-nla/0", "layer": 1}),
    "noweights/nla.json": (Path(CKPT) / "nla.json").read_text(),
}

TRAIN = [
    (["--steps", "-1"], "steps must be >= 1, got -1"),
    (["--sft-steps", "-3"], "sft-steps must be >= 1, got -3"),
    (["--steps", "0", "--sft-steps", "0"], "steps must be >= 1, got 0"),
    (["--steps", "0"], "after GRPO"),  # no held-out FVE after GRPO could exist
    (["--sft-steps", "0"], "after SFT"),
    (["--batch-size", "0"], "--batch-size must be >= 1, got 0"),
    (["--batch-size", "-4"], "--batch-size must be >= 1"),
    (["--group", "0"], "group must be in 4..64"),
    (["--group", "1"], "got 1"),
    (["--group", "65"], "group must be in 4..64"),
    (["--layer", "99"], "layer 99 is out of range: censored_tiny has blocks 0..3"),
    (["--layer", "4"], "leave it out for auto (block 2"),
    (["--layer", "-2"], "layer -2 is out of range"),
    (["--model", "smollm2-135m", "--layer", "30"], "smollm2-135m has blocks 0..29"),
    (["--model", "tiny-qwen3", "--layer", "2"], "tiny-qwen3 has blocks 0..1"),
    (["--replay", "-1"], "--replay must be a finite number >= 0"),
    (["--replay", "nan"], "got nan"),
    (["--replay", "inf"], "got inf"),
    (["--keep-checkpoints", "0"], "at least 1 checkpoint"),
    (["--model", "nosuch"], "unknown model 'nosuch'"),
    (["--model", "org/nosuch-model"], "not in the local cache"),
    (["--model", "tiny-foo"], "unknown tiny model 'tiny-foo'"),
    (["--model", "./nowhere"], "no HF checkpoint there"),
    (["--model", "paren"], "a TransformerLens task model without chat"),
    (["--model", "induction"], "the induction organism, a TransformerLens task model without chat"),
    (["--model", ""], "empty model name"),
    (["--out", "{tmp}/one.txt"], "one.txt is a file, not a folder; give a folder for --out"),
    (["--json", "{tmp}/run"], "run is a folder, not a file; give a file name"),
    (["--texts", "{tmp}/one.txt"], "for real models"),  # the organism brings its own texts
    (["--model", "tiny-qwen3", "--texts", "{tmp}/missing.txt"], "no text file"),
    (["--model", "tiny-qwen3", "--texts", "{tmp}/empty.txt"], "holds no non-empty lines"),
    (["--model", "tiny-qwen3", "--texts", "{tmp}/blank.txt"], "holds no non-empty lines"),
    (["--model", "tiny-qwen3", "--texts", "{tmp}/one.txt"], "holds 1 non-empty line;"),
    (["--model", "tiny-qwen3", "--texts", "{tmp}/binary.txt"], "not a text file (UTF-8)"),
    (["--model", "tiny-qwen3", "--labeller-url", "http://localhost:1/v1"], "give both --labeller-url"),
    (["--model", "tiny-qwen3", "--labeller-url", "localhost:8000", "--labeller-model", "m"], "http(s) URL"),
]

EXPLAIN = [
    (["--checkpoint", "{tmp}/missing", "--text", "hi"], "no checkpoint directory"),
    (["--checkpoint", "{tmp}/nosidecar", "--text", "hi"], "not an NLA checkpoint (no nla.json"),
    (["--checkpoint", "{tmp}/run", "--text", "hi"], "did you mean"),
    (["--checkpoint", "{tmp}/badsidecar", "--text", "hi"], "not a valid NLA sidecar"),
    (["--checkpoint", "{tmp}/oldsidecar", "--text", "hi"], "re-save the checkpoint"),
    (["--checkpoint", "{tmp}/noweights", "--text", "hi"], "holds no verbalizer model"),
    (["--checkpoint", "{tmp}/one.txt", "--text", "hi"], "no checkpoint directory"),
    (["--checkpoint", CKPT, "--text", ""], "the text is empty"),
    (["--checkpoint", CKPT, "--text", "   "], "the text is empty"),
    (["--checkpoint", CKPT, "--text", "hi", "--position", "99"], "position 99 is out of range: the text has 2"),
    (["--checkpoint", CKPT, "--text", "hi", "--position", "-3"], "position -3 is out of range"),
    (["--checkpoint", CKPT, "--text", "hi", "--model", "nosuch"], "unknown model 'nosuch'"),
    (["--checkpoint", CKPT, "--text", "hi", "--model", "tiny-qwen3"], "tiny-qwen3 is 32 wide"),
    (["--checkpoint", CKPT, "--text", "hi", "--model", "paren"], "a TransformerLens task model without chat"),
]

AUDIT = [
    (["--transcripts", "{tmp}/missing.jsonl"], "no transcript file"),
    (["--transcripts", "{tmp}/empty.jsonl"], "holds no transcripts"),
    (["--transcripts", "{tmp}/empty.txt"], "holds no transcripts"),
    (["--transcripts", "{tmp}/blank.txt"], "holds no transcripts"),
    (["--transcripts", "{tmp}/bad.jsonl"], "bad.jsonl:1: each line must be a JSON object with a 'text' field"),
    (["--transcripts", "{tmp}/nokey.jsonl"], "nokey.jsonl:1: each line must be a JSON object"),
    (["--transcripts", "{tmp}/list.jsonl"], "list.jsonl:1: each line must be a JSON object"),
    (["--transcripts", "{tmp}/notext.jsonl"], "'text' must be a non-empty string"),
    (["--transcripts", "{tmp}/numtext.jsonl"], "'text' must be a non-empty string, got 3"),
    (["--transcripts", "{tmp}/label.jsonl"], "'label' must be 0 or 1 (or left out), got 'yes'"),
    (["--transcripts", "{tmp}/label2.jsonl"], "got 2"),
    (["--transcripts", "{tmp}/array.json"], "a .json file is not read as transcripts"),
    (["--transcripts", "{tmp}/binary.txt"], "not a text file (UTF-8)"),
    (["--transcripts", "{tmp}/one.txt", "--concept", " "], "the concept is empty"),
    (["--transcripts", "{tmp}/one.txt", "--checkpoint", "{tmp}/missing"], "no checkpoint directory"),
    (["--transcripts", "{tmp}/one.txt", "--checkpoint", "{tmp}/nosidecar"], "not an NLA checkpoint"),
    (["--transcripts", "{tmp}/one.txt", "--model", "nosuch"], "unknown model 'nosuch'"),
    (["--transcripts", "{tmp}/one.txt", "--out", "{tmp}/empty.txt"], "empty.txt is a file, not a folder"),
]


@pytest.fixture
def files(tmp_path):
    """The FILES under ``tmp_path / "files"``; returns that folder."""
    root = tmp_path / "files"
    for name, content in FILES.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return root


def _args(args, root):
    return [a.replace("{tmp}", str(root)) for a in args]


@pytest.mark.parametrize("args, says", TRAIN, ids=[" ".join(a) for a, _ in TRAIN])
def test_train_bad_input_is_one_line(usage_error, files, args, says):
    assert says in usage_error("nla", "train", *_args(args, files))


@pytest.mark.parametrize("args, says", EXPLAIN, ids=[says for _, says in EXPLAIN])
def test_explain_bad_input_is_one_line(usage_error, files, args, says):
    assert says in usage_error("nla", "explain", *_args(args, files))


@pytest.mark.parametrize("args, says", AUDIT, ids=[says for _, says in AUDIT])
def test_audit_bad_input_is_one_line(usage_error, files, args, says):
    base = {"--checkpoint": CKPT, "--concept": "lie"}
    given = dict(zip(args[::2], args[1::2]))
    line = usage_error("nla", "audit", *_args([x for kv in {**base, **given}.items() for x in kv], files))
    assert says in line


def _help(command: str) -> str:
    """The help text of ``probity nla COMMAND``, box drawing and line breaks removed."""
    out = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "100"}).output
    return " ".join(out.replace("│", " ").split())


def test_help_says_the_real_defaults():
    text = _help("train")
    assert "auto: about 2/3 up the model" in text and "default: -1" not in text
    assert "the same seed gives the same run" in text  # --seed is documented
    assert "auto: 1 for real models, 2 for censored_tiny and tiny-*" in text
    explain = _help("explain")
    assert "default: (all positions)" in explain and "default: (the one named in the checkpoint)" in explain


def test_estimate_of_a_real_model():
    """SmolLM2-135M at the default layer: a checkpoint is what a run writes (measured: 3.346 GB) and
    45 steps at the default batch take well over 15 minutes on 2 CPU cores."""
    from probity.nla.pipeline import estimate, layer_for, target_config
    from probity.nla.training import TrainConfig

    config = target_config("smollm2-135m")
    layer = layer_for(config.num_hidden_layers)
    assert layer == 19
    cfg = TrainConfig(ar_sft_steps=15, av_sft_steps=15, rl_steps=15, batch_size=32, group=8, replay_coef=1.0)
    est = estimate("smollm2-135m", config, layer, cfg, keep=1, out="runs/nla", threads=2)
    assert est.params == 134_515_008
    assert est.checkpoint_bytes == pytest.approx(3.346e9, rel=0.01)
    assert est.seconds > 15 * 60
    line = est.line()
    assert "\n" not in line and "3.3 GB" in line and "45 steps" in line and "2 CPU threads" in line
