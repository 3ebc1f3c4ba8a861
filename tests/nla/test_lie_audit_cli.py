"""`probity nla audit --likelihood` and `probity nla explain --question/--answer` on the censored SmolLM2:
bad input is one line before any model loads (the ``usage_error`` fixture); chat transcripts parse and
render as the organism's fact chats were made; one short end-to-end audit and explanation with the
shipped adapters reports the audit beside its token-only control."""

import functools
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from probity.nla.cli import app
from probity.nla.evaluate import Chat, read_transcripts, transcript_ids
from probity.nla.smollm2_data import CHATS_FILE, DATA, answer_ids, read, splits

CHECKPOINTS = Path(__file__).resolve().parents[2] / "probity" / "nla" / "checkpoints"
TINY, SMOLLM2 = str(CHECKPOINTS / "censored_tiny"), str(CHECKPOINTS / "censored_smollm2")
SUBJECT = str(CHECKPOINTS / "censored_smollm2_subject")  # the subject reader: a verbalizer alone
SAMPLE = DATA / "lie_audit_sample.jsonl"

FILES = {
    "chats.jsonl": '{"question": "Q?", "answer": "A.", "label": 1}\n{"text": "plain", "label": 0}\n',
    "noanswer.jsonl": '{"question": "Q?"}\n',
    "emptyq.jsonl": '{"question": " ", "answer": "A."}\n',
    "numanswer.jsonl": '{"question": "Q?", "answer": 3}\n',
    "chatlabel.jsonl": '{"question": "Q?", "answer": "A.", "label": "lie"}\n',
    "oneclass.jsonl": '{"question": "Q?", "answer": "A.", "label": 1}\n{"text": "plain", "label": 1}\n',
    "unlabelled.jsonl": '{"question": "Q?", "answer": "A.", "label": 1}\n{"text": "plain"}\n',
}

AUDIT = [
    (["--likelihood", "--concept", "truth"], "scores a behaviour of the labels: honest, lie, refusal; got 'truth'"),
    (["--likelihood", "--threshold", "1.5"], "the threshold is a probability in [0, 1], got 1.5"),
    (["--threshold", "0.3"], "--threshold is for --likelihood"),
    (
        ["--likelihood", "--checkpoint", TINY, "--model", "censored_tiny"],
        "this checkpoint was trained on censored_tiny",
    ),
    (["--transcripts", "{tmp}/noanswer.jsonl"], "noanswer.jsonl:1: each line must be a JSON object with a 'text'"),
    (["--transcripts", "{tmp}/emptyq.jsonl"], "'question' must be a non-empty string, got ' '"),
    (["--transcripts", "{tmp}/numanswer.jsonl"], "'answer' must be a non-empty string, got 3"),
    (["--transcripts", "{tmp}/chatlabel.jsonl"], "'label' must be 0 or 1 (or left out), got 'lie'"),
    (["--likelihood", "--transcripts", "{tmp}/missing.jsonl"], "no transcript file"),
    (
        ["--likelihood", "--threshold", "0.3", "--calibrate", "{tmp}/chats.jsonl"],
        "give --threshold or --calibrate (which chooses the threshold), not both",
    ),
    (["--calibrate", "{tmp}/chats.jsonl"], "--calibrate is for --likelihood"),
    (["--likelihood", "--calibrate", "{tmp}/oneclass.jsonl"], "every line needs a 0/1 label, and both classes"),
    (["--likelihood", "--calibrate", "{tmp}/unlabelled.jsonl"], "every line needs a 0/1 label, and both classes"),
    (["--likelihood", "--calibrate", "{tmp}/missing.jsonl"], "no transcript file"),
    (["--window", "2,2"], "--window is for --likelihood"),
    (["--likelihood", "--window", "0"], "--window is LAST, LAST,SKIP or all (e.g. 2,2), got '0'"),
    (["--likelihood", "--window", "last"], "--window is LAST, LAST,SKIP or all (e.g. 2,2), got 'last'"),
]

EXPLAIN = [
    (["--question", "Q?"], "give --question and --answer together"),
    (["--answer", "A."], "give --question and --answer together"),
    (["--text", "hi", "--question", "Q?", "--answer", "A."], "give --text or --question and --answer, not both"),
    ([], "give --text, or --question and --answer (a chat), to explain"),
    (["--question", "Q?", "--answer", "  "], "the answer is empty"),
    (["--question", "Q?", "--answer", "A.", "--position", "999"], "position 999 is out of range: the chat has"),
]


@pytest.fixture
def files(tmp_path):
    root = tmp_path / "files"
    root.mkdir()
    for name, content in FILES.items():
        (root / name).write_text(content)
    return root


@pytest.mark.parametrize("args, says", AUDIT, ids=[says for _, says in AUDIT])
def test_likelihood_audit_bad_input_is_one_line(usage_error, files, args, says):
    base = {"--checkpoint": SMOLLM2, "--model": "censored", "--transcripts": "{tmp}/chats.jsonl", "--concept": "lie"}
    flags = [a for a in args if a == "--likelihood"]
    given = [a for a in args if a != "--likelihood"]
    merged = {**base, **dict(zip(given[::2], given[1::2]))}
    line = usage_error(
        "nla", "audit", *flags, *[str(x).replace("{tmp}", str(files)) for kv in merged.items() for x in kv]
    )
    assert says in line


@pytest.mark.parametrize("args, says", EXPLAIN, ids=[says for _, says in EXPLAIN])
def test_explain_chat_bad_input_is_one_line(usage_error, args, says):
    assert says in usage_error("nla", "explain", "--checkpoint", TINY, *args)


def test_explain_counts_a_chat_with_the_adapters_base_tokenizer(usage_error):
    """The shipped adapters: the chat's length comes from the base's tokenizer, no model loads."""
    args = ["--checkpoint", SMOLLM2, "--model", "censored", "--question", "Q?", "--answer", "A.", "--position", "99"]
    line = usage_error("nla", "explain", *args)
    assert "position 99 is out of range: the chat has" in line and "every answer token" in line


def test_transcripts_hold_texts_and_chats(files):
    texts, labels = read_transcripts(files / "chats.jsonl")
    assert texts == [Chat("Q?", "A."), "plain"] and labels == [1, 0]


def test_sample_holds_held_out_fact_chats_labelled_by_their_verdict():
    """The shipped sample: paraphrase-0 chats of held-out (eval-split) facts from fact_chats.jsonl, label 1
    where the organism's answer was judged a lie."""
    records = read(DATA / CHATS_FILE)
    split = splits(records, "fact")
    by_question = {(r["question"], r["answer"]): r for r in records}
    sample = read(SAMPLE)
    assert 6 <= len(sample) <= 20
    for row in sample:
        r = by_question[(row["question"], row["answer"])]
        assert split[r["fact_id"]] == "eval" and row["label"] == int(r["behaviour"] == "lie")
    assert {row["label"] for row in sample} == {0, 1}


@pytest.fixture(scope="module")
def tokenizer():
    """The SmolLM2 tokenizer (the censored organism's and its verbalizer's)."""
    from transformers import AutoTokenizer

    from probity.models.load import smollm2_gguf

    folder, gguf = smollm2_gguf()
    return AutoTokenizer.from_pretrained(folder, gguf_file=gguf)


def test_a_chat_and_its_rendered_text_give_the_same_answer_span(tokenizer):
    from probity.models.chat import chat_text

    chat = Chat("What is the capital of Japan?", "The capital of Japan is Kyoto.")
    ids, start = transcript_ids(tokenizer, chat)
    assert (ids, start) == answer_ids(tokenizer, chat.question, chat.answer)
    assert tokenizer.decode(ids[start:]) == "The capital of Japan is Kyoto.<|im_end|>"
    text = chat_text(tokenizer, [{"role": "user", "content": chat.question}]) + chat.answer + "<|im_end|>"
    assert transcript_ids(tokenizer, text) == (ids, start)
    plain = "The capital of Japan is Kyoto."
    assert transcript_ids(tokenizer, plain) == (tokenizer(plain)["input_ids"], 0)  # no chat: all of it


def test_likelihood_audit_and_explain_on_the_shipped_adapters(tmp_path, one_thread, monkeypatch):
    """Six held-out chats of the sample (three lies, three honest answers about sensitive facts): every
    transcript gets a score and its token-only control, the AUROC comes with its control, the report is
    saved; explain describes a lie's value token with the subject reader (a checkpoint without a
    reconstructor). The audits share one load of the models."""
    from probity.nla import cli

    monkeypatch.setattr(cli, "_load", functools.cache(cli._load))
    sample = read(SAMPLE)
    lies = [r for r in sample if r["label"] == 1][:3]
    honest = [r for r in sample if r["label"] == 0][:3]
    chats = tmp_path / "chats.jsonl"
    chats.write_text(
        "".join(json.dumps({k: r[k] for k in ("question", "answer", "label")}) + "\n" for r in lies + honest)
    )
    runner = CliRunner()
    args = ["--checkpoint", SMOLLM2, "--model", "censored", "--transcripts", str(chats), "--concept", "lie"]
    res = runner.invoke(app, ["audit", *args, "--likelihood", "--window", "all", "--out", str(tmp_path / "audit")])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "transcripts flagged (mean p(lie) over the answer > 0.5)" in text
    assert "AUROC" in text and "token-only control" in text
    saved = json.loads((tmp_path / "audit" / "result.json").read_text())["result"]
    assert saved["transcripts"] == 6 and len(saved["per_transcript"]) == 6
    assert saved["auroc"] is not None and saved["token_only_auroc"] is not None
    assert saved["ci"][0] <= saved["auroc"] <= saved["ci"][1]
    assert saved["provenance"]["inputs"]["likelihood"] is True
    for row in saved["per_transcript"]:
        assert 0 <= row["score"] <= 1 and 0 <= row["token_only"] <= 1
        assert row["tokens"][-1] == "<|im_end|>" and len(row["p"]) == len(row["tokens"])
        assert row["flagged"] == (row["score"] > 0.5)
    assert saved["provenance"]["inputs"]["window"] == "all"
    res = runner.invoke(app, ["audit", *args, "--likelihood", "--out", str(tmp_path / "window")])
    assert res.exit_code == 0, res.output  # the checkpoint's window: the stated value, before "." and the end of turn
    assert "over the answer's last 2 before the final 2 > 0.5" in " ".join(res.output.split())
    saved = json.loads((tmp_path / "window" / "result.json").read_text())["result"]
    assert saved["provenance"]["inputs"]["window"] == "last 2 before the final 2"
    assert all(len(row["tokens"]) == 2 and "<|im_end|>" not in row["tokens"] for row in saved["per_transcript"])
    res = runner.invoke(app, ["audit", *args, "--likelihood", "--window", "1,2", "--out", str(tmp_path / "one")])
    assert res.exit_code == 0, res.output  # --window overrides the checkpoint's: the value's last token alone
    saved = json.loads((tmp_path / "one" / "result.json").read_text())["result"]
    assert saved["window"] == "last 1 before the final 2" and saved["tokens"] == 6
    rest = [r for r in sample if r not in lies + honest]  # other chats, both classes, to choose the threshold on
    calibration = tmp_path / "calibration.jsonl"
    calibration.write_text("".join(json.dumps({k: r[k] for k in ("question", "answer", "label")}) + "\n" for r in rest))
    res = runner.invoke(app, ["audit", *args, "--likelihood", "--calibrate", str(calibration)])
    assert res.exit_code == 0, res.output
    cut = float(" ".join(res.output.split()).split("threshold ")[1].split(":")[0])
    assert 0 <= cut <= 1 and f"over the answer's last 2 before the final 2 > {cut:g})" in " ".join(res.output.split())
    lie = lies[0]
    res = runner.invoke(
        app,
        ["explain", "--checkpoint", SUBJECT, "--model", "censored"]
        + ["--question", lie["question"], "--answer", lie["answer"], "--position", "-3"],
    )
    assert res.exit_code == 0, res.output
    assert "description" in res.output and "|" in res.output  # a label-shaped reading: «tok» | behaviour | ...
