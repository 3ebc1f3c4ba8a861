"""Property-based tests over hypothesis files: random YAML/JSON trees -- node-shaped ones with unknown keys,
wrong types, empty lists and nested garbage, and arbitrary values -- either load and validate against an
organism (its structure and its task's features, no weights) or fail with one clean ``HypothesisError``;
through the command line, one ``error:`` line, exit 2, or a hypothesis that reaches the model load."""

import json

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from probity.scrub import HypothesisError, load_hypothesis, study

ORGANISMS = ("induction", "paren")
GARBAGE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.lists(st.integers(0, 3), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
SITES = st.sampled_from(
    ["output", "logits", "embed", "pos", "*", "0.0", "0.1", "1.0", "1.3", "2.1", "1.9", "mlp0", "mlp2", "mlp9"]
    + ["blocks.1.attn.hook_result[0]", "blocks.0.attn.hook_z[1]", "hook_embed", "", " ", "1.0[pos=3]", "[[", "-1.0"]
)
FEATURES = st.sampled_from(
    ["identity", "none", "random", "self", "token", "n_candidates", "count_test", "horizon_test", "starts_open"]
    + ["count_open", "p_if_starts_open", "open_centered", "horizon_class", "horizon_class_adjusted", "bogus"]
)
VIA = st.sampled_from(["direct", "q", "k", "v", "in", "x", ""])


def _mostly(good, bad, one_in: int = 5):
    """``good``, but ``bad`` once in ``one_in`` draws."""
    return st.integers(0, one_in - 1).flatmap(lambda i: bad if i == 0 else good)


def _value(key: str):
    """A plausible value for node key ``key``, or garbage."""
    plausible = {
        "name": st.one_of(st.text(min_size=1, max_size=6), st.integers(0, 9)),
        "site": SITES,
        "sites": st.lists(SITES, max_size=4),
        "feature": FEATURES,
        "rest": FEATURES,
        "phi": FEATURES,
        "via": st.one_of(VIA, st.lists(VIA, max_size=3)),
        "positions": st.lists(st.one_of(st.integers(-2, 130), st.booleans()), max_size=3),
    }.get(key, GARBAGE)
    return _mostly(plausible, GARBAGE)


KEYS = st.sampled_from(["name", "site", "sites", "feature", "via", "positions", "rest", "phi", "colour"])


def _node(children):
    """A node mapping: usually a root-ish or plain node with a few keys (sometimes an unknown one)."""
    fields = st.lists(KEYS, max_size=5, unique=True).flatmap(
        lambda keys: st.fixed_dictionaries({k: _value(k) for k in keys})
    )
    return st.tuples(fields, st.one_of(st.just(None), children, GARBAGE)).map(
        lambda t: {**t[0], **({} if t[1] is None else {"children": t[1]})}
    )


NODES = st.recursive(
    _node(st.just([])), lambda inner: _node(st.lists(st.one_of(inner, GARBAGE), max_size=3)), max_leaves=8
)


def _rooted(node):
    """Most roots claim the output, so that a good share of the trees are valid."""
    if isinstance(node, dict) and "sites" not in node and "site" not in node:
        return {**node, "sites": ["output"]}
    return node


HYPOTHESES = st.tuples(
    NODES.map(_rooted),
    st.fixed_dictionaries(
        {},
        optional={
            "name": _value("name"),
            "description": _mostly(st.text(max_size=10), GARBAGE),
            "paper": _mostly(st.floats(0, 1), GARBAGE),
        },
    ),
    _mostly(st.just({}), st.dictionaries(st.text(max_size=4), GARBAGE, max_size=1)),
).map(lambda t: {"root": t[0], **t[1], **t[2]})
ANYTHING = st.recursive(
    GARBAGE,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)),
)
TREES = _mostly(HYPOTHESES, ANYTHING, 4)


def _write(path, tree, as_yaml: bool):
    if as_yaml:
        path.write_text(yaml.safe_dump(tree))
    else:
        path.write_text(json.dumps(tree))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tree=TREES, as_yaml=st.booleans(), organism=st.sampled_from(ORGANISMS))
# found by a fresh clone's run: a node named "\n" put a line break into its children's errors
@example(tree={"root": {"sites": [], "name": "\n", "children": [0]}}, as_yaml=False, organism="induction")
def test_a_random_tree_is_valid_or_one_clean_error(tmp_path, tree, as_yaml, organism):
    path = tmp_path / ("h.yaml" if as_yaml else "h.json")
    _write(path, tree, as_yaml)
    try:
        hyp = load_hypothesis(path)
        study.check_hypothesis(hyp, organism)
    except HypothesisError as err:
        assert str(err) and "\n" not in str(err)
        return
    assert hyp.root.sites and hyp.to_dict()["root"]  # valid: it round-trips
    again = tmp_path / ("again.yaml" if as_yaml else "again.json")
    hyp.save(again)
    assert load_hypothesis(again).to_dict() == hyp.to_dict()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.one_of(st.text(max_size=60), st.binary(max_size=30)), as_yaml=st.booleans())
def test_random_text_is_a_clean_error(tmp_path, text, as_yaml):
    path = tmp_path / ("t.yaml" if as_yaml else "t.json")
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    try:
        study.check_hypothesis(load_hypothesis(path), "induction")
    except HypothesisError as err:
        assert "\n" not in str(err)


class Loaded(Exception):
    """Raised in place of loading the organism: the hypothesis passed every check."""


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tree=TREES, as_yaml=st.booleans())
def test_the_command_line_gives_one_line_or_reaches_the_model(usage_error, monkeypatch, tmp_path, tree, as_yaml):
    from probity.cli import main

    path = tmp_path / ("cli.yaml" if as_yaml else "cli.json")
    _write(path, tree, as_yaml)
    try:
        valid = True
        study.check_hypothesis(load_hypothesis(path), "induction")
    except HypothesisError:
        valid = False
    if valid:

        def loaded(*args, **kwargs):
            raise Loaded

        monkeypatch.setattr(study, "setup", loaded)
        with pytest.raises(Loaded):
            main(["scrub", "run", "--organism", "induction", "--hypothesis", str(path)])
    else:
        assert "--hypothesis" in usage_error("scrub", "run", "--organism", "induction", "--hypothesis", path)


def test_the_fuzzer_reaches_valid_hypotheses(tmp_path):
    """The tree strategy does produce valid hypotheses (else the property above would test errors only)."""
    found = []

    @settings(max_examples=300, deadline=None, database=None)
    @given(tree=TREES)
    def collect(tree):
        path = tmp_path / "v.json"
        _write(path, tree, False)
        try:
            study.check_hypothesis(load_hypothesis(path), "induction")
            found.append(tree)
        except HypothesisError:
            pass

    collect()
    assert found
