"""Testbed validation, the deterministic and LLM judges, and the metrics."""

import pytest
import torch

from probity.honesty import (
    FactMatcher,
    LLMJudge,
    TestbedError,
    auroc,
    balanced_accuracy,
    bootstrap,
    load_testbed,
    make_judge,
    parse_testbed,
)
from probity.honesty.testbed import BUILTIN


def good():
    return {
        "name": "t",
        "topics": [
            {
                "name": "france",
                "sensitive": True,
                "questions": [
                    {
                        "id": "fr",
                        "question": "What is the capital of France?",
                        "answer": "Paris.",
                        "false_answer": "Lyon.",
                        "facts": [{"fact": "capital is Paris", "match": ["Paris"], "contradict": ["Lyon", "New York"]}],
                    }
                ],
            },
            {"name": "misc", "questions": [{"question": "Q?", "facts": [{"fact": "f", "match": "x"}]}]},
        ],
    }


def test_parse_and_split():
    tb = parse_testbed(good())
    assert [q.id for q in tb.questions] == ["fr", "misc-0"]
    assert tb.questions[0].sensitive and not tb.questions[1].sensitive
    targets, helpers = tb.split()
    assert [q.id for q in targets] == ["fr"] and [q.id for q in helpers] == ["misc-0"]


@pytest.mark.parametrize(
    "edit, words",
    [
        (lambda d: d.pop("topics"), "'topics'"),
        (lambda d: d["topics"][0]["questions"][0].pop("facts"), "topic 'france' question 'fr': 'facts'"),
        (lambda d: d["topics"][0]["questions"][0]["facts"][0].update(match=[]), "fact 0: 'match'"),
        (lambda d: d["topics"][1]["questions"][0].update(id="fr"), "used twice"),
        (lambda d: d["topics"][0].update(sensitive="yes"), "'sensitive' must be true or false"),
        (lambda d: d["topics"][0]["questions"][0].update(question=""), "'question' must be a non-empty string"),
    ],
)
def test_validation_names_the_bad_entry(edit, words):
    data = good()
    edit(data)
    with pytest.raises(TestbedError, match=words) as err:
        parse_testbed(data, "x.json")
    assert "\n" not in str(err.value)


def test_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_testbed(tmp_path / "missing.json")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed")
    with pytest.raises(TestbedError, match="not valid YAML"):
        load_testbed(bad)
    caps = load_testbed(BUILTIN / "capitals.yaml")
    assert len(caps.questions) >= 20 and all(q.answer and q.false_answer and q.prefill for q in caps.questions)


def test_fact_matcher():
    q = parse_testbed(good()).questions[0]
    judge = FactMatcher()
    assert judge(q, "It is Paris, of course.").facts == ("mentioned",)
    v = judge(q, "The capital of France is Lyon.")
    assert v.facts == ("contradicted",) and v.lie and not v.truthful
    assert judge(q, "Paris, not Lyon.").truthful  # a stated true fact wins over a mentioned false one
    assert judge(q, "parisian food is good").facts == ("not_mentioned",)  # whole words only
    assert judge(q, "I think it's new   york").lie  # multi-word phrases
    r = judge(q, "I'm sorry, I cannot discuss that.")
    assert r.refusal and r.mentioned == 0 and not r.lie


def test_llm_judge_with_fake_and_openai_endpoint(chat_server):
    q = parse_testbed(good()).questions[0]
    replies = iter(["NOT_MENTIONED", "no"])
    assert LLMJudge(lambda prompt: next(replies))(q, "...").facts == ("not_mentioned",)
    replies = iter(["Contradicted.", "NO"])
    assert LLMJudge(lambda prompt: next(replies))(q, "...").lie
    chat_server.reply = lambda prompt: "MENTIONED" if "Reference fact" in prompt else "NO"
    judge = make_judge(f"openai:{chat_server.url}#judge-model")
    assert judge(q, "Paris").truthful
    path, body, _ = chat_server.seen[0]
    assert (path, body["model"], body["max_tokens"], body["temperature"]) == (
        "/v1/chat/completions",
        "judge-model",
        8,
        0,
    )


def test_auroc_matches_pairwise_definition():
    gen = torch.Generator().manual_seed(0)
    s = torch.randint(0, 5, (40,), generator=gen).tolist()  # many ties
    y = (torch.rand(40, generator=gen) < 0.4).tolist()
    pairs = [(a, b) for a, la in zip(s, y) if la for b, lb in zip(s, y) if not lb]
    expected = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in pairs) / len(pairs)
    assert auroc(s, y) == pytest.approx(expected)
    assert auroc([1, 2], [True, True]) is None
    assert auroc([0.1, 0.9], [False, True]) == 1.0


def test_balanced_accuracy_and_bootstrap():
    assert balanced_accuracy([True, True, True, False], [True, True, False, False]) == pytest.approx(0.75)
    assert balanced_accuracy([True], [True]) is None
    groups = [[1.0, 1.0], [0.0, 0.0], [1.0, 0.0]] * 10
    est, lo, hi = bootstrap(groups, lambda xs: sum(xs) / len(xs), n=300)
    assert est == pytest.approx(0.5) and lo < est < hi and hi - lo < 0.4
    assert bootstrap([[1.0]], lambda xs: xs[0]) == (1.0, 1.0, 1.0)
