import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import probity
from probity.cli import app

runner = CliRunner()


def test_version_and_help():
    assert probity.__version__ in runner.invoke(app, ["--version"]).output
    out = runner.invoke(app, ["--help"]).output
    assert "tour" in out and "models" in out


def test_models_sites():
    result = runner.invoke(app, ["models", "sites", "tiny-gpt2"])
    assert result.exit_code == 0, result.output
    assert "blocks.{0..1}.attn.hook_z" in result.output and "21 sites" in result.output


def test_tour_models_section_writes_report(tmp_path, smollm2, monkeypatch):
    from probity import models

    monkeypatch.setattr(models, "load", lambda name: smollm2)
    result = runner.invoke(app, ["tour", "--only", "models", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    html = (tmp_path / "index.html").read_text()
    assert "Paris" in html and "<figure>" in html


# --- tour and report: the command-line contract (one error line, exit 2, nothing written) ---------


@pytest.mark.parametrize(
    "args, says",
    [
        (["tour", "--only", "nosuch"], "unknown section(s) nosuch; choose from models, estimate"),
        (["tour", "--only", "models,nosuch"], "unknown section(s) nosuch"),
        (["tour", "--only", " , "], "no section named in ' , '"),
        (["report", "no-such-folder"], "no-such-folder is not a folder"),
        (["report"], "Missing argument 'folder'"),
    ],
)
def test_bad_tour_and_report_input_is_one_line(usage_error, args, says):
    assert says in usage_error(*args)


REPORT_FILES = [
    (None, "no result.json in"),
    ("{", "not valid JSON"),
    ("[]", "a result file holds an object with 'type' and 'result', not a list"),
    ('{"type": "nosuch", "result": {}}', "holds a 'nosuch', which is not a registered result type"),
    ('{"type": "estimate.BenchResult"}', "missing field 'result'"),
    ('{"type": 3, "result": {}}', "field 'type' must be text"),
    ('{"type": "estimate.BenchResult", "result": {}}', "result: missing field 'config' of BenchResult"),
    ('{"type": "honesty.HonestyResult", "result": {"model": 1}}', "result: missing field 'testbed' of HonestyResult"),
    ('{"type": "probity.Tour", "result": {"sections": 3}}', "result.sections: expected a list, got int 3"),
]


@pytest.mark.parametrize("content, says", REPORT_FILES)
def test_bad_report_folder_is_one_line(usage_error, tmp_path, content, says):
    folder = tmp_path / "run"
    folder.mkdir()
    if content is not None:
        (folder / "result.json").write_text(content)
    assert says in usage_error("report", folder)
    assert not (folder / "index.html").exists()


def test_tour_to_a_file_is_one_line(usage_error, tmp_path):
    (tmp_path / "afile").write_text("x")
    assert "is a file, not a folder" in usage_error("tour", "--out", tmp_path / "afile")
    assert "afile is a file, so" in usage_error("tour", "--out", tmp_path / "afile" / "tour")


# --- probity report on result files: valid ones render, damaged ones fail in one line naming the field --


def _results():
    """Small valid results of several registered types, and a tour holding them."""
    from probity.estimate.bench import BenchConfig, BenchResult, Summary
    from probity.honesty.protocol import DetectorResult, HonestyResult, ProbeSummary, TechniqueResult
    from probity.models.tour import ModelsTour
    from probity.report import Section, Tour

    models = ModelsTour("smollm2-135m", 30, 576, 272, "sites", "The capital of France is", " Paris.", [1.0, 2.5])
    bench = BenchResult(
        BenchConfig(widths=[64], seeds=[0], orders=[2], variants=["simple"]),
        [
            Summary("kprop", "simple", 2, 64, 0, 1, 2.5e-4, 3.8e6, 0.01, 44.2),
            Summary("mc", "", 0, 64, 100, 1, 7e-3, 4e6, 0.01, 1.4),
        ],
        [],
    )
    technique = TechniqueResult(
        "chat", 0.5, 0.25, 0.0, 0.5, (0.4, 0.6), (0.1, 0.3), (0.0, 0.0), (0.4, 0.6), 0.6, 0.3, 3, 12
    )
    honesty = HonestyResult(
        "censored",
        "world",
        {"samples": 4, "techniques": "chat"},
        [technique],
        [DetectorResult("probe", 0.8, 0.7, (0.7, 0.9), 0.5, 4, 8, 0.25)],
        ProbeSummary(2, 0.5, [{"layer": 2, "val_auroc": 0.8}]),
        [{"technique": "chat", "question": "q?", "response": "r."}],
    )
    tour = Tour([Section("models", "Models", models), Section("estimate", "Estimate", bench)])
    return {"models": models, "bench": bench, "honesty": honesty, "tour": tour}


JSON_TREES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=False), st.text(max_size=4)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=12,
)


def _paths(value, path=()):
    """Every (path, value) inside a JSON value: paths are tuples of keys and indices."""
    yield path, value
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        yield from _paths(child, (*path, key))


def _saved(tmp_path_factory, name):
    from probity import report

    folder = tmp_path_factory.mktemp(name)
    report.save(_results()[name], folder, title=name)
    return folder, json.loads((folder / "result.json").read_text())


@pytest.mark.parametrize("name", ["models", "bench", "honesty", "tour"])
def test_report_renders_valid_results(tmp_path_factory, capsys, name):
    from probity.cli import main

    folder, _ = _saved(tmp_path_factory, name)
    (folder / "index.html").unlink()
    assert main(["report", str(folder)]) == 0 and (folder / "index.html").is_file()
    capsys.readouterr()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), name=st.sampled_from(["models", "bench", "honesty", "tour"]), delete=st.booleans())
def test_a_damaged_result_renders_or_fails_in_one_line_naming_the_field(tmp_path_factory, capsys, data, name, delete):
    """One field of a valid result.json deleted, or replaced by any JSON value: `probity report` renders
    it or fails with one line that names the field (or the object holding it) -- never a traceback
    (an exception other than a usage error propagates out of main and fails the test)."""
    from probity.cli import main

    folder, doc = _saved(tmp_path_factory, name)
    paths = [p for p, _ in _paths(doc["result"]) if p]
    path = data.draw(st.sampled_from(paths))
    parent = doc["result"]
    for key in path[:-1]:
        parent = parent[key]
    if delete and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = data.draw(JSON_TREES)
    (folder / "result.json").write_text(json.dumps(doc))
    code = main(["report", str(folder)])
    err = capsys.readouterr().err
    assert code == 0 or (code == 2 and err.count("\n") == 1 and err.startswith("error: ")), err
    if code == 2:
        assert any(str(key) in err for key in path if isinstance(key, str)), (path, err)


@pytest.mark.parametrize("flops", [0, -1.0])
def test_the_error_figure_leaves_out_a_damaged_flop_count(flops):
    """A summary row whose FLOP count is not positive (a damaged result.json) is left off the log-log figure;
    the 1/N line is drawn from the rows left (hypothesis once found a zero there dividing by zero)."""
    import dataclasses

    result = _results()["bench"]
    mc = next(i for i, s in enumerate(result.summary) if s.method == "mc")
    summary = list(result.summary)
    summary[1 - mc] = dataclasses.replace(summary[1 - mc], flops=flops)
    figures = dataclasses.replace(result, summary=summary).figures()
    assert list(figures) == ["error vs FLOPs"]
    lines = figures["error vs FLOPs"].axes[0].get_lines()
    assert all(min(line.get_xdata()) > 0 for line in lines) and len(lines) == 2  # mc and its 1/N line


def test_an_older_bench_result_still_loads(tmp_path):
    """The ground-truth rule (100x the largest budget) is checked before a run, not when a result is read:
    a result of an older, looser config (10^6 ground-truth samples, budgets up to 10^5) still loads."""
    from probity import report
    from probity.estimate.bench import BenchConfig, BenchResult

    result = _results()["bench"]
    old = BenchResult(BenchConfig(widths=[64], seeds=[0], gt_samples=10**6), result.summary, [])
    report.save(old, tmp_path, title="old")
    assert report.load(tmp_path).config.gt_samples == 10**6
    with pytest.raises(ValueError, match="cannot grade a sample budget of 100000"):
        old.config.check_grading()


def test_tour_writes_nothing_outside_out(tmp_path, monkeypatch, capsys):
    """The estimate section (the one that caches) on a smaller network: its ground truth goes to
    OUT/estimate-cache, the current folder stays empty, and the report re-renders."""
    from probity.cli import main
    from probity.estimate import tour as estimate_tour

    small = {**estimate_tour.CONFIG, "gt_samples": 20_000, "mc_budgets": [100], "blend_budgets": [100], "widths": [8]}
    monkeypatch.setattr(estimate_tour, "CONFIG", small)
    cwd, out = tmp_path / "cwd", tmp_path / "out"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    assert main(["tour", "--only", "estimate", "--out", str(out)]) == 0
    assert list(cwd.iterdir()) == []
    assert sorted(p.name for p in out.iterdir()) == ["estimate-cache", "index.html", "result.json"]
    assert len(list((out / "estimate-cache").glob("gt_*.pt"))) == 1
    assert main(["report", str(out)]) == 0
    capsys.readouterr()


def test_a_bench_result_with_an_empty_summary_renders_without_its_figure(tmp_path_factory, capsys):
    """The damage hypothesis found: ``summary`` replaced by ``[]`` made the figure a 0-column grid."""
    from probity.cli import main

    folder, doc = _saved(tmp_path_factory, "bench")
    doc["result"]["summary"] = []
    (folder / "result.json").write_text(json.dumps(doc))
    assert main(["report", str(folder)]) == 0
    capsys.readouterr()
