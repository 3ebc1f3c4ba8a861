"""`probity models ...` and `probity organisms ...`: bad input is one line before anything loads (the
``usage_error`` fixture); an organism folder loads by path wherever a name is accepted; training never
writes into the shipped weights unless asked."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from probity import models, organisms
from probity.organisms import _native, censored_tiny, paren


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _file(tmp_path):
    path = tmp_path / "a-file"
    path.write_text("x")
    return path


BAD = [
    (["models", "sites", "NOSUCH"], "cannot be a hub name"),
    (["models", "sites", "nosuch-org/nosuch-model"], "cannot be a hub name"),
    (["models", "sites", "tiny-bert"], "unknown tiny model 'tiny-bert'"),
    (["models", "sites", "./nowhere"], "no HF checkpoint there"),
    (["models", "sites", "a/b/c"], "no HF checkpoint there"),
    (["models", "sites", "two words"], "not a valid HF hub name"),
    (["models", "sites", ""], "empty model name"),
    (["organisms", "eval", "nosuch"], "unknown organism 'nosuch'"),
    (["organisms", "train", "nosuch"], "unknown organism 'nosuch'"),
    (["organisms", "train", "paren", "--seed", "-1"], "--seed: must be >= 0, got -1"),
]


@pytest.mark.parametrize("args, says", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_is_one_line(usage_error, args, says):
    line = usage_error(*args)
    assert says in line
    if args[:2] == ["models", "sites"] and args[2]:
        assert any(fix in line for fix in ("smollm2-135m", "checkpoint", "tiny-qwen3"))  # says what would work


def test_bad_folders_are_one_line(usage_error, tmp_path):
    assert "is a file" in usage_error("organisms", "train", "paren", "--out", _file(tmp_path))
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "not an organism folder" in usage_error("organisms", "eval", empty)
    assert "no HF checkpoint there" in usage_error("models", "sites", empty)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{")
    assert "not valid JSON" in usage_error("models", "sites", broken)
    assert "not valid JSON" in usage_error("organisms", "eval", broken)


def test_check_knows_every_kind_of_name(tmp_path):
    from probity.models.load import check

    assert check("tiny-gpt2") == "tiny" and check("smollm2-135m") == "smollm2" and check("paren") == "registered"
    shutil.copytree(_native.WEIGHTS / "induction", tmp_path / "ind")
    assert check(str(tmp_path / "ind")) == "registered-folder"
    model, tok = models.tiny("gpt2")
    model.save_pretrained(tmp_path / "hf")
    assert check(str(tmp_path / "hf")) == "folder"


def test_organism_folders_load_by_path(tmp_path):
    """A folder written by `organisms train --out DIR` (here copies of the shipped ones) loads through
    probity.models.load(DIR) like the name: the native organisms as bridges with their tokenizer and
    metadata, the censored_tiny one with its word-level tokenizer."""
    for name in ("paren", "induction", "censored_tiny"):
        shipped = censored_tiny.WEIGHTS if name == "censored_tiny" else _native.WEIGHTS / name
        folder = tmp_path / f"my-{name}"
        shutil.copytree(shipped, folder)
        assert organisms.folder_kind(folder) == name and organisms.resolve(folder) == (name, folder)
        by_path, tok = models.load(str(folder))
        by_name, tok_name = models.load(name)
        text = "( )" if name == "paren" else "t5 t6 t7" if name == "induction" else "who is"
        x = tok(text, return_tensors="pt").input_ids
        assert x.tolist() == tok_name(text, return_tensors="pt").input_ids.tolist()
        torch.testing.assert_close(models.run(by_path, x), models.run(by_name, x), atol=0, rtol=0)
        if name != "censored_tiny":
            assert by_path.probity_meta == by_name.probity_meta
        else:
            assert tok.init_kwargs["name_or_path"] == tok_name.init_kwargs["name_or_path"] == "censored_tiny"


def test_sites_and_eval_of_a_folder(tmp_path, capsys):
    from probity.cli import main

    folder = tmp_path / "my-paren"
    shutil.copytree(_native.WEIGHTS / "paren", folder)
    assert main(["models", "sites", str(folder)]) == 0
    by_path = capsys.readouterr().out
    assert main(["models", "sites", "paren", "--bridge"]) == 0  # already a bridge: listed as it is
    assert by_path.splitlines()[-1] == capsys.readouterr().out.splitlines()[-1]  # "N sites on TransformerBridge"
    induction = tmp_path / "my-induction"
    shutil.copytree(_native.WEIGHTS / "induction", induction)
    assert main(["organisms", "eval", str(induction)]) == 0
    by_path = capsys.readouterr().out
    assert main(["organisms", "eval", "induction"]) == 0
    by_name = capsys.readouterr().out
    assert "accuracy_candidates" in by_path and by_path[by_path.index("┏") :] == by_name[by_name.index("┏") :]


def test_list_prints_plain_text():
    from probity.organisms.cli import app

    out = CliRunner().invoke(app, ["list"], terminal_width=200).output
    assert "`" not in out and "paren: a balanced-parentheses classifier" in out


def test_train_without_out_writes_a_run_folder(tmp_path, monkeypatch):
    """Without --out the weights go to runs/organisms/NAME of the working folder, never into the package."""
    from probity.cli import main

    seen = []

    def fake_train(out_dir=None, quick=False, **kw):
        seen.append(Path(out_dir))
        return {"accuracy": 1.0}

    monkeypatch.setattr(paren, "train", fake_train)
    monkeypatch.chdir(tmp_path)
    before = (_native.WEIGHTS / "paren" / "config.json").read_bytes()
    assert main(["organisms", "train", "paren", "--quick"]) == 0
    assert seen == [Path("runs/organisms/paren")]
    assert (_native.WEIGHTS / "paren" / "config.json").read_bytes() == before
    assert json.loads(before)["meta"]["metrics"]["seed"] == paren.SEED
