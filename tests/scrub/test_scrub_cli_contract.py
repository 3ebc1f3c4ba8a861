"""`probity scrub run|list`'s contract for bad input: one line on stderr, exit 2, nothing written and no
model loaded (the ``usage_error`` fixture); hypothesis files are checked against the organism's structure
and its task's features before its weights load."""

import json
import shutil

import pytest
from typer.testing import CliRunner

from probity.organisms import _native
from probity.scrub import study
from probity.scrub.cli import app

VALID = {"root": {"name": "out", "sites": ["output"], "children": [{"name": "h", "site": "1.0", "feature": "token"}]}}


def _node(**change):
    """VALID (an induction hypothesis) with its child node changed."""
    return {"root": {**VALID["root"], "children": [{**VALID["root"]["children"][0], **change}]}}


# (file name, content, what the error line says); each is scrubbed on the induction organism
FILES = [
    ("missing.yaml", None, "no hypothesis file"),
    ("bad.yaml", "root: [unclosed", "not valid YAML"),
    ("bad.json", '{"root": ', "not valid JSON"),
    ("empty.yaml", "", "got an empty file"),
    ("empty.json", "{}", "no `root`"),
    ("list.yaml", "- root\n- name\n", "got a value of type list"),
    ("scalar.json", "3", "got a value of type int"),
    ("top.json", json.dumps({**VALID, "colour": 1}), "unknown key(s) ['colour']"),
    ("key.json", json.dumps(_node(colour=1)), "unknown key(s) ['colour']"),
    ("site.json", json.dumps(_node(site="1.9")), "unknown site '1.9'"),
    ("mlp.json", json.dumps(_node(site="mlp0")), "unknown site 'mlp0'"),  # induction is attention-only
    ("nosite.json", json.dumps({"root": {"name": "out"}}), "give `site` or `sites`"),
    ("nosites.json", json.dumps(_node(site=[])), "sites must be a non-empty list"),
    ("root.json", json.dumps({"root": {"name": "out", "site": "embed"}}), "must claim the `output` site"),
    ("feature.json", json.dumps(_node(feature="colour")), "unknown feature 'colour'"),
    ("feature-type.json", json.dumps(_node(feature=["token"])), "feature must be a feature name"),
    ("via.json", json.dumps(_node(via="x")), "via 'x' is not one of"),
    ("via-empty.json", json.dumps(_node(via=[])), "via must be one of"),
    ("via-type.json", json.dumps(_node(via=5)), "via must be one of"),
    ("positions.json", json.dumps(_node(positions=[999])), "positions [999] outside 0..127"),
    ("positions-type.json", json.dumps(_node(positions=["a"])), "positions must be integers"),
    ("positions-empty.json", json.dumps(_node(positions=[])), "non-empty list of integers"),
    ("positions-scalar.json", json.dumps(_node(positions=3)), "non-empty list of integers"),
    ("rest.json", json.dumps(_node(rest="colour")), "unknown feature 'colour'"),
    ("phi.json", json.dumps(_node(phi="colour")), "phi must name a per-row feature"),
    ("children.json", json.dumps(_node(children=5)), "children must be a list"),
    ("child.json", json.dumps(_node(children=["x"])), "a node must be a mapping"),
    ("below.json", json.dumps(_node(site="1.0", children=[{"name": "c", "site": "1.1"}])), "does not feed"),
    ("paper.json", json.dumps({**VALID, "paper": "high"}), "paper must be a number"),
    ("name.json", json.dumps({**VALID, "name": {"a": 1}}), "name must be a string"),
    ("float.yaml", "root: {name: out, sites: [output, 1.10]}", "quote head shorthands"),
    ("loop.yaml", "root: &r {name: out, site: output, children: [*r]}", "nested more than 100 deep"),
    ("binary.yaml", b"\xff\xfe\x00", "not a text file"),
]


@pytest.mark.parametrize("name, content, says", FILES, ids=[f[0] for f in FILES])
def test_a_bad_hypothesis_file_is_one_line(usage_error, tmp_path, name, content, says):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    line = usage_error("scrub", "run", "--organism", "induction", "--hypothesis", path)
    assert says in line and "--hypothesis" in line


def test_the_files_above_differ_from_a_valid_one(tmp_path):
    from probity.scrub import load_hypothesis

    path = tmp_path / "valid.json"
    path.write_text(json.dumps(VALID))
    study.check_hypothesis(load_hypothesis(path), "induction")


def _existing_file(tmp_path):
    path = tmp_path / "a-file"
    path.write_text("x")
    return path


BAD_OPTIONS = [
    (["--batch-size", "0"], "--batch-size: must be at least 1"),
    (["--batch-size", "-3"], "got -3"),
    (["--samples", "1"], f"--samples: must be at least {study.MIN_SAMPLES}, got 1"),
    (["--samples", "-5"], f"at least {study.MIN_SAMPLES}"),
    (["--samples", "many"], "--samples"),
    (["--replicates", "-1"], "0 (off) or at least 2"),
    (["--replicates", "1"], "0 (off) or at least 2"),
    (["--seed", "-1"], "--seed: must be >= 0, got -1"),
    (["--organism", "nosuch"], "unknown organism 'nosuch'"),
    (["--organism", "censored"], "scrub's organisms are induction and paren"),
    (["--hypothesis", "nonsense"], "unknown hypothesis 'nonsense'"),
    (["--organism", "induction", "--hypothesis", "1a"], "unknown hypothesis '1a'"),  # a paren built-in
]


@pytest.mark.parametrize("args, says", BAD_OPTIONS, ids=[" ".join(a) for a, _ in BAD_OPTIONS])
def test_a_bad_option_is_one_line(usage_error, args, says):
    assert says in usage_error("scrub", "run", *args)


def test_bad_paths_are_one_line(usage_error, tmp_path):
    a_file = _existing_file(tmp_path)
    assert "is a folder" in usage_error("scrub", "run", "--json", tmp_path)
    assert "is a file" in usage_error("scrub", "run", "--out", a_file)
    assert "is a file" in usage_error("scrub", "run", "--json", a_file / "r.json")
    empty = tmp_path / "empty-folder"
    empty.mkdir()
    assert "not an organism folder" in usage_error("scrub", "run", "--organism", empty)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{")
    assert "not valid JSON" in usage_error("scrub", "run", "--organism", broken)
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"tl_config": {"d_vocab": 7, "n_ctx": 3}, "meta": {}}))
    assert "no organism weights" in usage_error("scrub", "run", "--organism", other)
    (other / "model.safetensors").write_bytes(b"")
    assert "fits neither organism's task" in usage_error("scrub", "run", "--organism", other)


@pytest.mark.parametrize("organism", ["nosuch", "censored"])
def test_list_refuses_other_organisms(usage_error, organism):
    assert organism in usage_error("scrub", "list", "--organism", organism)


def test_list_reads_the_config_only(usage_error, monkeypatch, capsys):
    """`scrub list` needs no weights (the fixture's loaders would fail), for a name and a trained folder."""
    from probity.cli import main

    usage_error("scrub", "list", "--organism", "nosuch")  # sets the fixture up: every loader disabled
    assert main(["scrub", "list", "--organism", "induction"]) == 0
    out = capsys.readouterr().out
    assert "emb->V" in out and "prev->K" in out


def test_a_trained_folder_is_an_organism(usage_error, tmp_path):
    """A folder written by `organisms train` (here a copy of the shipped paren weights) is checked like
    the name: its hypotheses by its config, before its weights load."""
    folder = tmp_path / "my-paren"
    shutil.copytree(_native.WEIGHTS / "paren", folder)
    line = usage_error("scrub", "run", "--organism", folder, "--hypothesis", "emb->V")
    assert "unknown hypothesis 'emb->V'" in line and "1a" in line


def test_help_says_the_real_defaults():
    out = " ".join(CliRunner().invoke(app, ["run", "--help"], terminal_width=200).output.replace("│", " ").split())
    assert "[default: 0]" not in out.split("--seed")[0]  # --samples: the organism's default, not 0
    assert "2000 paren, 300 induction" in out and f"at least {study.MIN_SAMPLES}" in out
    assert "Scrub seed" in out and "provenance" in out


@pytest.mark.parametrize("organism", ["paren", "induction"])
def test_the_structure_check_sees_what_the_run_sees(organism):
    """The check before loading uses a fresh model of the organism's config and the task's features on a
    few rows: the same sites, feature names and shapes as the real run, and every built-in passes it."""
    from probity.organisms import _native
    from probity.scrub import Decomposed
    from probity.scrub.task import probe_features

    model, task, hyps = study.setup(organism, study.MIN_SAMPLES)
    probe = probe_features(organism)
    assert {k: v.dim() for k, v in probe.items()} == {k: v.dim() for k, v in task.features.items()}
    fresh = Decomposed(_native.native_model(_native.read_config(_native.WEIGHTS / organism)["tl_config"]))
    real = Decomposed(model)
    assert fresh.components == real.components and fresh.output == real.output and fresh.n_ctx == task.n_ctx
    assert [h.to_dict() for h in hyps.values()] == [h.to_dict() for h in study.builtins(organism).values()]
    for hyp in hyps.values():
        study.check_hypothesis(hyp, organism)


def test_the_readme_hypothesis_file_is_valid(tmp_path):
    """The YAML hypothesis the README documents loads and passes the paren organism's checks."""
    import re
    from pathlib import Path

    from probity.scrub import load_hypothesis

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    scrub_section = readme.split("## Causal scrubbing")[1].split("\n## ")[0]
    (block,) = re.findall(r"```yaml\n(.*?)```", scrub_section, re.S)
    path = tmp_path / "readme.yaml"
    path.write_text(block)
    hyp = load_hypothesis(path)
    study.check_hypothesis(hyp, "paren")
    assert [n.name for n in hyp.nodes()] == ["out", "count", "horizon"]
