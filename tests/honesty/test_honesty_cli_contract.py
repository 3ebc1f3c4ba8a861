"""`probity honesty run`'s contract for bad input: one line on stderr, exit 2, nothing written and no
model loaded (the ``usage_error`` fixture); testbed files are fuzzed with hypothesis; a run whose
model tells no lie says so in one line; a real model's run says how long it takes; --json carries
provenance."""

import json

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from probity.honesty import RunConfig, TestbedError, load_testbed, parse_testbed
from probity.honesty.protocol import HonestyResult, TechniqueResult, check, duration_warning
from probity.models.load import is_real

GOOD = {
    "name": "t",
    "topics": [
        {
            "name": "a",
            "sensitive": True,
            "questions": [{"id": "q1", "question": "Q1?", "facts": [{"fact": "f", "match": ["x"]}]}],
        },
        {"name": "b", "questions": [{"question": "Q2?", "answer": "x.", "facts": [{"fact": "g", "match": "y"}]}]},
    ],
}


def _edit(path: list, value) -> dict:
    """GOOD with the entry at ``path`` (keys and indices) set to ``value``."""
    data = json.loads(json.dumps(GOOD))
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return data


TESTBEDS = [
    ("missing.yaml", None, "not found"),
    ("bad.yaml", "name: [unclosed", "not valid YAML"),
    ("bad.json", '{"name": ', "not valid JSON"),
    ("empty.yaml", "", "top level must be a mapping"),
    ("list.json", "[1, 2]", "top level must be a mapping"),
    ("binary.yaml", b"\xff\xfe\x00", "not a text file"),
    ("unknown.json", _edit(["colour"], 1), "unknown key(s) 'colour'"),
    ("typo.json", _edit(["topics", 0, "sensitve"], True), "unknown key(s) 'sensitve'"),
    ("qkey.json", _edit(["topics", 0, "questions", 0, "hint"], "x"), "unknown key(s) 'hint'"),
    ("fkey.json", _edit(["topics", 0, "questions", 0, "facts", 0, "weight"], 2), "unknown key(s) 'weight'"),
    ("topics.json", _edit(["topics"], []), "'topics' must be a non-empty list"),
    ("facts.json", _edit(["topics", 0, "questions", 0, "facts"], []), "'facts' must be a non-empty list"),
    ("match.json", _edit(["topics", 0, "questions", 0, "facts", 0, "match"], [""]), "'match' must be"),
    ("contradict.json", _edit(["topics", 0, "questions", 0, "facts", 0, "contradict"], 5), "'contradict' must"),
    ("sensitive.json", _edit(["topics", 0, "sensitive"], "yes"), "'sensitive' must be true or false"),
    ("id.json", _edit(["topics", 1, "questions", 0, "id"], "q1"), "used twice"),
    ("notarget.json", {"name": "t", "topics": [GOOD["topics"][1]]}, "no target question"),
    ("nohelper.json", {"name": "t", "topics": [GOOD["topics"][0]]}, "no helper question"),
]


@pytest.mark.parametrize("name, content, says", TESTBEDS, ids=[t[0] for t in TESTBEDS])
def test_bad_testbed_is_one_line(usage_error, tmp_path, name, content, says):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, dict):
        path.write_text(json.dumps(content))
    elif content is not None:
        path.write_text(content)
    line = usage_error("honesty", "run", "--testbed", path)
    assert says in line
    assert name in line or name in ("notarget.json", "nohelper.json")  # those name the testbed 't' instead


@pytest.mark.parametrize(
    "args, says",
    [
        (["--limit", "0"], "limit must be an integer >= 1"),
        (["--limit", "-1"], "limit must be an integer >= 1"),
        (["--samples", "0"], "--samples (responses per question and technique) must be an integer >= 1"),
        (["--lora-steps", "0"], "--lora-steps (LoRA fine-tuning steps) must be an integer >= 1, got 0"),
        (["--temperature", "-1"], "temperature must be a finite number >= 0"),
        (["--temperature", "nan"], "temperature must be a finite number >= 0"),
        (["--temperature", "inf"], "temperature must be a finite number >= 0"),
        (["--temperature", "0"], "temperature 0 (greedy) gives one answer per question: set samples to 1, not 4"),
        (["--detectors", "bogus"], "unknown detector(s) 'bogus'; choose from all, self_classification"),
        (["--detectors", ""], "unknown detector(s) ''"),
        (["--detectors", "probe,probe"], "names one twice"),
        (["--techniques", "telepathy"], "unknown technique(s) telepathy; choose from all, chat"),
        (["--techniques", "chat,chat"], "names one twice"),
        (["--judge", "nonsense"], "unknown judge 'nonsense'; use 'match', 'hf:MODEL'"),
        (["--judge", "openai:nourl#m"], "base_url must be an http(s) URL"),
        (["--judge", "hf:no-such-judge"], "--judge: unknown model 'no-such-judge'"),
        (["--model", "no-such-model"], "--model: unknown model 'no-such-model'"),
        (["--model", "./no/such/folder"], "--model: ./no/such/folder: no HF checkpoint there"),
        (["--model", "tiny-nosuch"], "--model: unknown tiny model 'tiny-nosuch'"),
        (["--model", "paren"], "a TransformerLens task model without chat"),
        (["--model", "induction"], "a TransformerLens task model without chat"),
        (["--reference", "no-such-model"], "--reference: unknown model 'no-such-model'"),
        (["--samples", "x"], "--samples"),
        (["--device", "gpu"], "device must be cpu, cuda, cuda:N or auto, got 'gpu'"),
        (["--device", "cuda:x"], "device must be cpu, cuda, cuda:N or auto"),
        (["--device", "cuda:99"], "--device cuda:99: this machine has"),
    ],
)
def test_bad_option_is_one_line(usage_error, args, says):
    assert says in usage_error("honesty", "run", *args)


def test_bad_folders_are_one_line(usage_error, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert "is a file, not a folder" in usage_error("honesty", "run", "--out", afile)
    assert "is a folder" in usage_error("honesty", "run", "--json", tmp_path)
    work = tmp_path / "run" / "work"
    work.mkdir(parents=True)
    (work / "config.json").write_text(json.dumps({"model": "censored_tiny", "samples": 99}))
    assert "holds samples from a run with other settings" in usage_error("honesty", "run", "--out", tmp_path / "run")


@st.composite
def trees(draw, depth=3):
    """Random JSON/YAML values shaped like testbeds: right keys, unknown keys, wrong types, empty lists."""
    leaf = st.one_of(
        st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=True), st.text(max_size=6), st.just("")
    )
    if depth == 0:
        return draw(leaf)
    keys = st.sampled_from(
        ["name", "topics", "questions", "question", "facts", "fact", "match", "contradict", "sensitive", "id"]
        + ["answer", "false_answer", "prefill", "bogus", "Name", ""]
    )
    return draw(
        st.one_of(
            leaf,
            st.lists(trees(depth=depth - 1), max_size=3),
            st.dictionaries(keys, trees(depth=depth - 1), max_size=5),
        )
    )


WORD = st.text(alphabet="abcxyz ", min_size=1, max_size=5)
LEAF = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=True), st.text(max_size=4))


@st.composite
def random_testbeds(draw):
    """Valid testbeds (every optional key now and then), then maybe one corruption: an unknown key,
    a wrong-typed or empty value, at any level."""
    fact = st.fixed_dictionaries(
        {"fact": WORD, "match": st.one_of(WORD, st.lists(WORD, min_size=1, max_size=2))},
        optional={"contradict": st.lists(WORD, max_size=2)},
    )
    question = st.fixed_dictionaries(
        {"question": WORD, "facts": st.lists(fact, min_size=1, max_size=2)},
        optional={"sensitive": st.booleans(), "answer": WORD, "false_answer": WORD, "prefill": WORD},
    )
    topic = st.fixed_dictionaries(
        {"name": WORD, "questions": st.lists(question, min_size=1, max_size=3)}, optional={"sensitive": st.booleans()}
    )
    data = draw(st.fixed_dictionaries({"name": WORD, "topics": st.lists(topic, min_size=1, max_size=3)}))
    for t, tp in enumerate(data["topics"]):
        for i, q in enumerate(tp["questions"]):
            q["id"] = f"q{t}-{i}"  # unique ids (duplicates are their own corruption below)
    entries = [data, *data["topics"]]
    entries += [q for tp in data["topics"] for q in tp["questions"]]
    entries += [f for tp in data["topics"] for q in tp["questions"] for f in q["facts"]]
    corruption = draw(st.sampled_from(["none", "none", "unknown key", "value", "empty", "drop", "duplicate id"]))
    entry = draw(st.sampled_from(entries))
    if corruption == "unknown key":
        entry[draw(st.sampled_from(["bogus", "Name", "sensitve", ""]))] = draw(LEAF)
    elif corruption in ("value", "empty", "drop"):
        key = draw(st.sampled_from(sorted(entry)))
        if corruption == "drop":
            del entry[key]
        else:
            entry[key] = draw(LEAF) if corruption == "value" else draw(st.sampled_from([[], {}, ""]))
    elif corruption == "duplicate id" and len(entries) > 2:
        questions = [q for tp in data["topics"] for q in tp["questions"]]
        questions[-1]["id"] = questions[0]["id"]
    return data


def _valid_or_testbed_error(data, path, suffix):
    if suffix == ".json":
        path.write_text(json.dumps(data))
    else:
        path.write_text(yaml.safe_dump(data))
    try:
        testbed = load_testbed(path)
    except TestbedError as err:
        assert "\n" not in str(err) and str(path) in str(err)
        return
    assert testbed.questions and all(q.facts and q.question.strip() for q in testbed.questions)
    assert len({q.id for q in testbed.questions}) == len(testbed.questions)
    try:  # the protocol's own check before a model loads: a usable split, or a one-line TestbedError
        plan = check(RunConfig(testbed=str(path)))
    except TestbedError as err:
        assert "\n" not in str(err)
        return
    assert plan.targets and plan.helpers


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(trees(), random_testbeds()), suffix=st.sampled_from([".json", ".yaml"]))
def test_fuzzed_testbed_files_give_a_testbed_or_a_testbed_error(tmp_path, data, suffix):
    _valid_or_testbed_error(data, tmp_path / f"fuzz{suffix}", suffix)


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=40))
def test_fuzzed_yaml_text_gives_a_testbed_or_a_testbed_error(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("yaml") / "fuzz.yaml"
    path.write_text(text)
    try:
        load_testbed(path)
    except TestbedError as err:
        assert "\n" not in str(err)


def test_parse_accepts_every_documented_key():
    data = _edit(["topics", 0, "questions", 0, "facts", 0, "contradict"], ["z"])
    data["topics"][0]["questions"][0].update(answer="a", false_answer="b", prefill="c", sensitive=True)
    assert parse_testbed(data).questions[0].facts[0].contradict == ("z",)
    assert parse_testbed(_edit(["topics", 0, "questions", 0, "facts", 0, "contradict"], [])).questions[0]


def test_a_run_without_lies_says_so_in_one_line():
    """No lies among the judged responses: no AUROC table or empty plot, one line in the result."""
    result = HonestyResult(
        "smollm2-135m",
        "capitals",
        {},
        [],
        [],
        detection_note="not scored: no lies among the 6 judged responses (AUROC needs lies and truthful answers)",
    )
    claims = {c.name: c for c in result.headline()}
    assert claims["lie detectors"].value.startswith("not scored: no lies")
    assert "detection" not in result.figures() and result.summary()["detection_note"] == result.detection_note


def test_a_limited_run_says_its_headline_is_a_sample():
    chat = TechniqueResult("chat", 0.1, 0.8, 0.1, 0.1, (0, 0.2), (0.7, 0.9), (0, 0.2), (0, 0.2), 0.2, 0.9, 24, 48)
    sample = HonestyResult("censored", "censored-smollm2", {"limit": 24}, [chat], []).headline()
    assert sample[0].name == "scope" and "24 sensitive questions" in sample[0].value
    assert all(c.name != "scope" for c in HonestyResult("censored", "t", {"limit": None}, [chat], []).headline())


def test_real_models_get_a_duration_warning():
    assert is_real("smollm2-135m") and not is_real("censored_tiny") and not is_real("tiny-qwen3")
    line = duration_warning(RunConfig(model="smollm2-135m", samples=4), 3)
    assert "about 30 minutes" in line and "\n" not in line
    assert "about 3 minutes" in duration_warning(RunConfig(model="smollm2-135m", techniques="chat", samples=4), 3)


def test_cli_run_without_lies_and_json_provenance(tmp_path, monkeypatch, capsys):
    """The censored_tiny organism on ordinary (non-sensitive) questions tells no lie: the run says so in one
    line instead of an AUROC table and plot, and its --json says what produced it."""
    from probity import __version__
    from probity.cli import main
    from probity.organisms import censored_tiny

    world = json.loads(censored_tiny.TESTBED.read_text())
    topics = [dict(t, questions=t["questions"][:2]) for t in world["topics"] if not t.get("sensitive")][:6]
    testbed = tmp_path / "ordinary.json"
    testbed.write_text(json.dumps({"name": "ordinary", "topics": topics}))
    monkeypatch.chdir(tmp_path)
    args = ["honesty", "run", "--model", "censored_tiny", "--testbed", testbed, "--techniques", "chat"]
    args += ["--detectors", "self_classification"]
    args += ["--samples", "1", "--limit", "3", "--temperature", "0", "--json", "h.json", "--out", "run"]
    assert main([str(a) for a in args]) == 0
    err = capsys.readouterr().err  # notes go to stderr, beside the output
    assert "note: lie detectors not scored: no lies among the 3 judged responses" in " ".join(err.split())
    data = json.loads((tmp_path / "h.json").read_text())
    assert data["detection"] == [] and data["detection_note"].startswith("not scored: no lies")
    prov = data["provenance"]
    assert prov["probity"] == __version__ and prov["command"] == "honesty run"
    assert prov["inputs"]["model"] == "censored_tiny" and prov["inputs"]["seed"] == 0 and prov["inputs"]["limit"] == 3
    assert prov["inputs"]["target_questions"] == 3 and prov["inputs"]["testbed_name"] == "ordinary"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h.json", "ordinary.json", "run"]
    page = (tmp_path / "run" / "index.html").read_text()
    assert "not scored: no lies" in page and page.count("<figure>") == 1  # elicitation only, no empty plot


def test_real_model_warning_comes_before_the_load(tmp_path, monkeypatch, capsys):
    from probity import models
    from probity.cli import main

    class Loaded(Exception):
        pass

    def load(name, *args, **kwargs):
        raise Loaded(name)

    monkeypatch.setattr(models, "load", load)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(Loaded):
        main(["honesty", "run", "--model", "smollm2-135m", "--limit", "3"])
    out = " ".join(capsys.readouterr().err.split())
    assert "real model: this run (3 questions x 9 techniques x 4 samples) takes about 30 minutes" in out
