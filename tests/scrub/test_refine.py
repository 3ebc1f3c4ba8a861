"""``probity.scrub.refine``: the greedy search improves monotonically, repeats itself for a seed, and its
command keeps the scrub CLI contract; the paren organism's ``faithful`` built-in it reached."""

import pytest

from probity.scrub import scrub, setup
from probity.scrub.refine import RefineConfig, determines_targets, refine


@pytest.fixture(scope="module")
def paren():
    return setup("paren", 150, seed=0)


def _trajectory(result):
    return [(s.edit, round(s.loss_recovered, 6), s.hypothesis) for s in result.steps]


def test_refine_improves_monotonically_and_repeats_for_a_seed(paren, one_thread):
    model, task, hyps = paren
    config = RefineConfig(max_steps=2, width=1, tolerance=0.005)
    first = refine(model, task, hyps["1b"], config)
    assert first.steps[0].edit == "start: 1b" and len(first.steps) >= 2
    gains = [b.loss_recovered - a.loss_recovered for a, b in zip(first.steps, first.steps[1:])]
    assert all(g > config.tolerance for g in gains), gains
    assert all(s.candidates > 0 for s in first.steps[1:])
    assert first.hypothesis.to_dict()["root"] == first.steps[-1].hypothesis["root"]
    assert _trajectory(refine(model, task, hyps["1b"], config)) == _trajectory(first)


def test_refine_stops_at_the_target(paren, one_thread):
    model, task, hyps = paren
    result = refine(model, task, hyps["identity"], RefineConfig(target=0.9))
    assert len(result.steps) == 1 and result.stopped.startswith("reached the target")


def test_the_label_is_recognised(paren):
    _, task, _ = paren
    assert determines_targets(task, "balanced")
    assert not any(determines_targets(task, f) for f in ("count_test", "horizon_test", "starts_open", "horizon_class"))


@pytest.mark.parametrize(
    "change",
    [dict(target=0), dict(target=1.5), dict(max_steps=0), dict(tolerance=-1), dict(width=0), dict(seed=-1)],
)
def test_bad_settings_are_one_line(change):
    with pytest.raises(ValueError) as err:
        RefineConfig(**change)
    assert "\n" not in str(err.value)


def test_unknown_features_are_refused(paren):
    model, task, hyps = paren
    with pytest.raises(ValueError, match="not the task's"):
        refine(model, task, hyps["1b"], RefineConfig(features=["colour"]))


def test_the_faithful_paren_hypothesis(one_thread):
    """The built-in refine reached from 1b: >= 0.90 of the loss, and better than the constant predictor."""
    model, task, hyps = setup("paren", 400, seed=0)
    r = scrub(model, task, hyps["faithful"], per_node=False)
    assert r.loss_recovered >= 0.90, r.loss_recovered
    assert not r.cancellation.worse_than_constant
    assert r.loss_hypothesis < task.constant_loss()


BAD = [
    (["--target", "0"], "--target"),
    (["--target", "1.5"], "target must be in (0, 1]"),
    (["--max-steps", "0"], "max_steps must be at least 1"),
    (["--samples", "1"], "--samples: must be at least 50"),
    (["--seed", "-1"], "--seed: must be >= 0"),
    (["--organism", "nosuch"], "unknown organism 'nosuch'"),
    (["--hypothesis", "nonsense"], "unknown hypothesis 'nonsense'"),
    (["--organism", "induction", "--hypothesis", "1b"], "unknown hypothesis '1b'"),
]


@pytest.mark.parametrize("args, says", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_refine_bad_options_are_one_line(usage_error, args, says):
    assert says in usage_error("scrub", "refine", *args)


def test_refine_bad_files_and_paths_are_one_line(usage_error, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("root: {name: out, sites: [output], children: [{name: h, site: '1.9'}]}")
    assert "unknown site '1.9'" in usage_error("scrub", "refine", "--hypothesis", bad)
    assert "is a folder" in usage_error("scrub", "refine", "--json", tmp_path)
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    assert "is a file" in usage_error("scrub", "refine", "--out", a_file)
