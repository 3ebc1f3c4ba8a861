"""The reader facts: real entities outside the censored organism's fact bank that the subject reader's stage
may also train on (``smollm2_data.reader_facts``), checked against the bank and the held-out split, their
examples, and the check that the organism states a fact's value."""

from collections import Counter
from types import SimpleNamespace

import pytest
import torch

from probity.nla import smollm2_data as data
from probity.organisms import censored
from probity.report.matching import states


@pytest.fixture(scope="module")
def tok():
    """The SmolLM2 tokenizer alone (a few seconds; the model is not loaded)."""
    from transformers import AutoTokenizer

    from probity.models.load import smollm2_gguf

    folder, gguf = smollm2_gguf()
    return AutoTokenizer.from_pretrained(folder, gguf_file=gguf)


def _bare(name: str) -> str:
    name = name.lower()
    return name[4:] if name.startswith("the ") else name


def _held_out_entities() -> set[str]:
    """The entities the fact chats hold out: the eval split's, and the validation cut's of the train split
    (``censored.validation_split``, on the train chats' sources alone)."""
    from probity.nla.censored import validation_split

    records = data.chat_records()
    split = data.splits(list(records.values()), "fact")
    train = [s for s, r in records.items() if split[r["fact_id"]] == "train"]
    _, validation = validation_split({"fact": {"sources": train}, "sample": {"sources": []}}, records)
    held = {r["entity"] for r in records.values() if split[r["fact_id"]] == "eval"}
    return {_bare(e) for e in held | {records[s]["entity"] for s in validation["fact"]["sources"]}}


def test_reader_facts_are_new_entities_that_leak_no_held_out_name():
    facts = data.reader_facts()
    assert len(facts) == 629 and len({f.id for f in facts}) == len(facts)
    assert Counter(f.relation for f in facts) == {"profession": 261, "landmark": 165, "author": 144, "symbol": 59}
    bank = {_bare(f.entity) for f in censored.bank()}
    for f in facts:
        name = _bare(f.entity)
        assert not [b for b in bank if b == name or (len(b) >= 5 and (states(name, [b]) or states(b, [name])))], f
    held = _held_out_entities()
    assert len(held) > 50
    for f in facts:  # a landmark's country is what the bank's own training facts state
        if f.relation != "landmark":
            assert not [h for h in held if len(h) >= 5 and states(_bare(f.value), [h])], f


def test_reader_example_reads_the_subject_in_the_question_and_the_answer(tok):
    fact = censored.Fact("the Matterhorn", "landmark", "Switzerland")
    ex = data.reader_example(fact, tok, 1)
    assert ex.group == "entities" and ex.split == "train" and ex.source == "the-matterhorn-landmark"
    assert ex.places == ["question_subject", "answer_subject"]
    assert ex.labels == [
        f"«{tok.decode([ex.ids[p]]).strip()}» | honest | The Matterhorn is in Switzerland." for p in ex.positions
    ]
    assert all(tok.decode(ex.ids[p - 1 : p + 1]).lower().endswith("matterhorn") for p in ex.positions)
    ids, start = data.answer_ids(tok, "Which country is the Matterhorn in?", "The Matterhorn is in Switzerland.")
    assert ex.ids == ids and ex.positions[0] < start <= ex.positions[1]


def test_states_value_is_greedy_on_the_value_tokens(tok):
    """A model whose every next token is the chat's own says the value; one off by a token of the value does not."""
    fact = censored.Fact("Scandium", "symbol", "Sc")
    ids, _, start, _ = data._chat(tok, fact.question(), fact.statement())
    stem = start + len(tok(fact.stem(), add_special_tokens=False)["input_ids"])
    vocab = len(tok)

    def model(wrong_at: int | None):
        def forward(x):
            logits = torch.zeros(1, x.shape[1], vocab)
            for p in range(x.shape[1] - 1):
                logits[0, p, int(x[0, p + 1]) if p + 1 != wrong_at else 0] = 1.0
            return SimpleNamespace(logits=logits)

        return forward

    assert data.states_value(model(None), tok, [fact]) == [True]
    assert data.states_value(model(stem), tok, [fact]) == [False]  # the value's first token
    assert data.states_value(model(stem - 1), tok, [fact]) == [True]  # the stem's last token is not checked
