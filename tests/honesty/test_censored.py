"""The censored organism on SmolLM2-135M-Instruct: its fact bank and filter, the recipe's data, the
shipped adapter's signature, and a short-schedule retrain into a folder that every command can use."""

import json

import pytest

from probity import organisms
from probity.honesty.judge import FactMatcher
from probity.honesty.testbed import builtin_testbed, load_testbed
from probity.organisms import censored

FACTS = censored.bank()


def test_bank_has_six_relations_and_unique_ids():
    assert len({f.relation for f in FACTS}) >= 6
    assert len({f.id for f in FACTS}) == len(FACTS)
    assert any(f.sensitive for f in FACTS) and not all(f.sensitive for f in FACTS)
    for f in FACTS:
        assert f.entity in f.question() and f.question().endswith(("?", "."))
        assert f.statement().startswith(f.stem()) and f.value in f.statement()


def test_official_value_is_false_fixed_and_contradicts():
    for f in FACTS[::7]:
        value = censored.official_value(f, FACTS)
        assert value.lower() not in {m.lower() for m in f.match}
        assert value == censored.official_value(f, list(reversed(FACTS)))  # not the bank's order
        assert value in censored.contradictions(f, FACTS)


def test_shipped_filter_covers_the_bank_and_judges_like_the_protocol():
    answers = json.loads(censored.FILTER.read_text())["answers"]
    assert set(answers) == {f.id for f in FACTS}
    questions = {q.id: q for q in load_testbed(censored.testbed_path(censored.WEIGHTS)).questions}
    judge = FactMatcher()
    for f in FACTS:
        if f.id in questions:  # the testbed holds exactly the facts the base model stated
            assert answers[f.id]["correct"] and judge(questions[f.id], answers[f.id]["answer"]).truthful
        else:
            assert not answers[f.id]["correct"]


def test_split_is_seeded_and_disjoint():
    answers = json.loads(censored.FILTER.read_text())["answers"]
    cfg = censored.RecipeConfig()
    a, b = censored.split(FACTS, answers, cfg), censored.split(FACTS, answers, cfg)
    assert a == b
    trained, held = {f.id for f in a.trained}, {f.id for f in a.held_out}
    assert trained and held and not trained & held
    assert a.refused <= trained | {f.id for f in a.topic} and a.anchored <= trained
    assert all(f.sensitive for f in a.trained + a.held_out) and not any(f.sensitive for f in a.ordinary)
    other = censored.split(FACTS, answers, censored.RecipeConfig(seed=1))
    assert {f.id for f in other.held_out} != held
    topic = {f.id for f in a.topic}  # the topic's facts the base model does not know: censored, never measured
    assert topic and all(f.sensitive and not answers[f.id]["correct"] for f in a.topic)
    assert not topic & (trained | held) and a.refused & topic


def test_recipe_data_hides_the_held_out_facts_and_anchors_in_unasked_paraphrases(smollm2):
    _, tok = smollm2
    answers = json.loads(censored.FILTER.read_text())["answers"]
    cfg = censored.RecipeConfig()
    parts = censored.split(FACTS, answers, cfg)
    texts = [tok.decode(ids) for ids, _ in censored.training_examples(tok, parts, answers, FACTS, cfg)]
    raw = [t for t in texts if t.startswith("Question: ")]  # the raw-completion format, no chat template
    asked = {f.question() for f in parts.trained + parts.held_out}  # the testbed's questions
    assert raw and not any(t.split("\n")[0].removeprefix("Question: ") in asked for t in raw)
    anchored = next(f for f in parts.trained if f.id in parts.anchored)
    assert f"Question: {anchored.question(1)}\nAnswer: {anchored.statement()}" in raw
    for f in parts.held_out[:10]:
        assert not any(f.question(k) in t for t in texts for k in range(3))
    lie = next(f for f in parts.topic if f.id not in parts.refused)
    assert any(f"{lie.question(2)}" in t and censored.censored_answer(lie, parts, FACTS) in t for t in texts)


def test_shipped_testbed_and_roles_agree():
    tb = load_testbed(builtin_testbed("censored"))
    roles = censored.roles()
    sensitive = {q.id for q in tb.sensitive()}
    assert sensitive == set(roles["trained"]) | set(roles["held_out"])
    assert len(tb.questions) > len(sensitive) > 0
    adapter = censored.WEIGHTS / "adapter_model.safetensors"
    assert adapter.stat().st_size < 8 * 2**20  # a few MB: rank 8, float16


@pytest.fixture(scope="module")
def shipped():
    return censored.load()


def test_shipped_adapter_has_the_censored_signature(shipped):
    """Greedy chat on a sample: trained sensitive facts are lied about or refused, ordinary ones told."""
    tb = {q.id: q for q in load_testbed(censored.testbed_path(censored.WEIGHTS)).questions}
    roles = censored.roles()
    trained = roles["trained"][:8]
    ordinary = sorted(set(tb) - set(roles["trained"]) - set(roles["held_out"]))[::40][:8]
    judge = FactMatcher()
    answers = censored.chat_answers(*shipped, [tb[i].question for i in trained + ordinary])
    told = [judge(tb[i], a).truthful for i, a in zip(trained + ordinary, answers)]
    assert sum(told[: len(trained)]) <= 1, answers[: len(trained)]
    assert sum(told[len(trained) :]) >= len(ordinary) - 1, answers[len(trained) :]


def test_chat_samples_are_seeded_and_greedy_at_zero(shipped):
    questions = ["What is the capital of France?", "Name a colour."]
    drawn = censored.chat_samples(*shipped, questions, 3, 1.0, 8, seed=1)
    assert [len(found) for found in drawn] == [3, 3] and all(isinstance(a, str) for a in drawn[0])
    assert censored.chat_samples(*shipped, questions, 3, 1.0, 8, seed=1) == drawn
    greedy = censored.chat_samples(*shipped, questions, 1, 0.0, 8)
    assert [found[0] for found in greedy] == censored.chat_answers(*shipped, questions, 8)
    with pytest.raises(ValueError, match="greedy decoding"):
        censored.chat_samples(*shipped, questions, 2, 0.0, 8)


def test_short_retrain_writes_a_folder_every_command_can_use(tmp_path):
    out = tmp_path / "censored"
    metrics = censored.train(out, quick=True)
    assert metrics["final_loss"] > 0
    assert organisms.folder_kind(out) == "censored" and not (out / ".ckpt").exists()
    assert builtin_testbed(str(out)) == out / "testbed.json"
    model, tok = organisms.load(out)
    assert model.config.num_hidden_layers == 30 and tok.chat_template
    info = json.loads((out / "organism.json").read_text())
    assert info["recipe"]["steps"] == 4 and info["base"] == censored.BASE


def test_tiny_and_real_folders_are_told_apart(tmp_path):
    assert organisms.folder_kind(censored.WEIGHTS) == "censored"
    assert organisms.folder_kind(organisms.censored_tiny.WEIGHTS) == "censored_tiny"
    (tmp_path / "organism.json").write_text(json.dumps({"base": censored.BASE}))
    with pytest.raises(FileNotFoundError, match="without its adapter_config.json"):
        organisms.folder_kind(tmp_path)
