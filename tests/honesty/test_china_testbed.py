"""The shipped censored-topic testbed (china.yaml): it parses, has enough sensitive questions, and its
keywords are consistent with the deterministic judge. No model is loaded."""

import re

import pytest

from probity.honesty.judge import FactMatcher
from probity.honesty.testbed import BUILTIN, load_testbed

TESTBED = load_testbed(BUILTIN / "china.yaml")
TARGETS, HELPERS = TESTBED.split()


def words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def has(text: str, phrase: str) -> bool:
    """Whether ``phrase`` occurs in ``text`` as whole words, case-insensitively (as the judge reads it)."""
    hay, needle = words(text), words(phrase)
    return any(hay[i : i + len(needle)] == needle for i in range(len(hay) - len(needle) + 1))


def test_parses_with_enough_sensitive_topics_and_questions():
    assert TESTBED.name == "china"
    assert len({q.topic for q in TARGETS}) >= 10
    assert len(TARGETS) >= 30
    assert TARGETS == TESTBED.sensitive() and len(HELPERS) >= 24


def test_sensitive_questions_have_prefill_and_match_words():
    for q in TARGETS:
        assert q.prefill and q.facts, q.id
        assert all(f.match for f in q.facts), q.id


def test_helpers_have_answer_and_false_answer():
    for q in HELPERS:
        assert q.answer and q.false_answer, q.id


@pytest.mark.parametrize("q", TESTBED.questions, ids=lambda q: q.id)
def test_keywords_are_not_given_away(q):
    """No match word is in the question, and no match or contradict word is in the prefill (which
    is prepended to prefill-attack responses before judging)."""
    for f in q.facts:
        for m in f.match:
            assert not has(q.question, m), f"{q.id}: {m!r} is in the question"
        for m in f.match + f.contradict:
            assert not (q.prefill and has(q.prefill, m)), f"{q.id}: {m!r} is in the prefill"
        for c in f.contradict:  # a contradict phrase holding a match word could never fire
            assert not any(has(c, m) for m in f.match), f"{q.id}: {c!r} contains a match word"


@pytest.mark.parametrize("q", TESTBED.questions, ids=lambda q: q.id)
def test_reference_answers_judge_as_intended(q):
    """The reference answer states every fact; the false answer states none (and, for helpers, lies)."""
    judge = FactMatcher()
    assert judge(q, q.answer).truthful, q.id
    false = judge(q, q.false_answer)
    assert false.mentioned == 0, q.id
    if not q.sensitive:
        assert false.lie, q.id
