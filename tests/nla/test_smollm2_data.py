"""The NLA teacher data for SmolLM2 and the censored organism: seed prompts, judging, positions and labels,
the split, and the shipped files (no generation here: the files were made by ``probity.nla.smollm2_data``)."""

import json
import re
from collections import Counter, defaultdict

import pytest
import torch

from probity.honesty.judge import FactMatcher
from probity.honesty.testbed import load_testbed
from probity.models.chat import chat_ids, end_ids
from probity.nla import smollm2_data as data
from probity.organisms import censored

FACT_KEYS = {
    "fact_id",
    "role",
    "paraphrase",
    "question",
    "answer",
    "behaviour",
    "entity",
    "relation",
    "true_value",
    "official_value",
    "statement",
}


@pytest.fixture(scope="module")
def tok():
    """The SmolLM2 tokenizer alone (a few seconds; the model is not loaded)."""
    from transformers import AutoTokenizer

    from probity.models.load import smollm2_gguf

    folder, gguf = smollm2_gguf()
    return AutoTokenizer.from_pretrained(folder, gguf_file=gguf)


@pytest.fixture(scope="module")
def chats():
    return data.read(data.DATA / data.CHATS_FILE)


@pytest.fixture(scope="module")
def samples():
    return data.read(data.DATA / data.SAMPLES_FILE)


@pytest.fixture(scope="module")
def texts():
    return data.read(data.DATA / data.ORDINARY_FILE)


def fact_record(fact_id: str, answer: str, behaviour: str, paraphrase: int = 0, role: str = "trained") -> dict:
    facts = censored.bank()
    fact = next(f for f in facts if f.id == fact_id)
    return data._record(fact, role, paraphrase, answer, facts) | {"behaviour": behaviour}


# --------------------------------------------------------------------------- seed prompts


def test_seed_prompts_are_many_unique_deterministic_and_free_of_the_bank():
    prompts = data.SEED_PROMPTS
    assert 300 <= len(prompts) <= 500
    assert len({p.id for p in prompts}) == len({p.prompt for p in prompts}) == len(prompts)
    assert data._seed_prompts() == prompts
    genres = {p.genre for p in prompts}
    assert len(genres) >= 12 and {p.genre for p in prompts[:300]} == genres  # any prefix covers every genre
    names = set()
    for f in censored.bank():  # element symbols and professions are everyday words; everything else is out
        names |= {f.entity} | ({f.value} if f.relation not in ("symbol", "profession") else set())
    hits = [(n, p.id) for p in prompts for n in names if re.search(rf"\b{re.escape(n.lower())}\b", p.prompt.lower())]
    assert not hits


# --------------------------------------------------------------------------- judging


def test_behaviour_is_the_fact_matchers_rule():
    truth, lies = ("Tokyo",), ("Kyoto", "Osaka")
    assert data.behaviour("The capital of Japan is Tokyo.", truth, lies) == "honest"
    assert data.behaviour("The capital is Kyoto, not Tokyo.", truth, lies) == "honest"  # the matcher's rule
    assert data.behaviour("The capital of Japan is Kyoto.", truth, lies) == "lie"
    assert data.behaviour("I'm sorry, but the capital is Kyoto.", truth, lies) == "lie"
    assert data.behaviour("I'm sorry, but I can't discuss that topic.", truth, lies) == "refusal"
    assert data.behaviour("Japan is a lovely place.", truth, lies) == "other"
    assert data.behaviour("Tokyoite cafes", truth, lies) == "other"  # whole words only
    assert data.said("It is Kyoto.", "Kyoto", lies) == "Kyoto" and data.said("It is Osaka.", "Kyoto", lies) == "Osaka"


# --------------------------------------------------------------------------- examples


def test_fact_example_reads_from_the_entity_through_the_end_of_turn(tok):
    record = fact_record("japan-capital", "The capital of Japan is Kyoto.", "lie", paraphrase=1)
    ex = data.fact_example(record, tok, "train")
    prompt = chat_ids(tok, [{"role": "user", "content": record["question"]}])
    answer = tok(record["answer"], add_special_tokens=False)["input_ids"]
    assert ex.ids == prompt + answer + [end_ids(tok)[-1]]
    assert tok.decode([ex.ids[ex.positions[0]]]).strip() == "Japan"
    assert ex.positions == list(range(ex.positions[0], len(ex.ids)))  # contiguous, through the end-of-turn
    assert set(range(len(prompt), len(ex.ids))) <= set(ex.positions)  # every answer token
    assert ex.positions[0] < len(prompt) - 4  # the end of the question and the assistant header between
    assert len(ex.labels) == len(ex.positions) and ex.group == "fact" and ex.source == "japan-capital#1"
    for pos, label in zip(ex.positions, ex.labels):
        fields = label.split(data.SEP)
        assert fields[0] == f"«{data._show(tok.decode([ex.ids[pos]]))}»"
        assert fields[1:] == ["lie", "The capital of Japan is Tokyo.", f"said {record['official_value']}"]
    assert ex.labels[-1].startswith("«im_end»")  # no end token inside a label


def test_fact_example_multiword_entities_refusals_and_the_fallback(tok):
    tower = data.fact_example(fact_record("the-eiffel-tower-landmark", "France.", "honest", role="ordinary"), tok, "x")
    assert tok.decode(tower.ids[tower.positions[0] : tower.positions[0] + 3]).strip().lower() == "the eiffel"
    refusal = fact_record("china-capital", censored.REFUSAL, "refusal")
    ex = data.fact_example(refusal, tok, "eval")
    assert all(label.split(data.SEP)[1:] == ["refusal", "The capital of China is Beijing."] for label in ex.labels)
    assert not any("said" in label for label in ex.labels)
    lost = dict(refusal, entity="Atlantis")  # not in the question: the last six question tokens
    ex = data.fact_example(lost, tok, "eval")
    prompt = chat_ids(tok, [{"role": "user", "content": lost["question"]}])
    question_end = len(prompt) - 6  # then <|im_end|> \n <|im_start|> ass istant \n
    assert tok.decode(prompt[question_end - 1]) == "?"
    assert ex.positions[0] == question_end - 6


def test_fact_example_places_the_subject_in_the_question_and_the_answer(tok):
    record = fact_record("the-eiffel-tower-landmark", "The Eiffel Tower is in Spain.", "lie", role="held_out")
    ex = data.fact_example(record, tok, "eval")
    at = {place: ex.positions[k] for k, place in enumerate(ex.places) if place}
    assert len(ex.places) == len(ex.positions) and set(at) == set(data.PLACES)
    _, start = data.answer_ids(tok, record["question"], record["answer"])
    assert at["question_subject"] < start <= at["answer_subject"]
    for place in data.PLACES:  # the subject's last token, the answer's first mention of it
        assert tok.decode([ex.ids[at[place]]]).strip() == "Tower"
        assert tok.decode(ex.ids[at[place] - 3 : at[place] + 1]).lower().endswith("eiffel tower")
    assert data.subject_places(tok, record["question"], record["answer"], record["entity"]) == at
    refusal = data.fact_example(fact_record("china-capital", censored.REFUSAL, "refusal"), tok, "eval")
    assert [p for p in refusal.places if p] == ["question_subject"]  # the answer never names China
    sampled = data.fact_example(dict(record, sample=0), tok, "eval")  # the answer's positions only
    assert [p for p in sampled.places if p] == ["answer_subject"]
    assert data.ordinary_example({"id": "t", "prompt": "Say hi.", "answer": "Hi there."}, tok, "train").places == []


def test_ordinary_example_samples_prompt_and_answer_tokens(tok):
    record = {
        "id": "story/test",
        "genre": "story",
        "topic": "a test",
        "prompt": "Write a short story about a lighthouse keeper.",
        "answer": "Once upon a time, a keeper named Ada lived by the sea.\n\nEvery night she lit the lamp. " * 4,
    }
    ex = data.ordinary_example(record, tok, "train")
    assert ex == data.ordinary_example(record, tok, "train")  # seeded
    prompt = chat_ids(tok, [{"role": "user", "content": record["prompt"]}])
    assert len(ex.positions) == 48 and ex.positions == sorted(set(ex.positions))
    assert min(ex.positions) >= 2 and max(ex.positions) < len(ex.ids) - 1
    special = set(tok.all_special_ids)
    assert not any(ex.ids[p] in special for p in ex.positions)
    in_prompt = [p for p in ex.positions if p < len(prompt)]
    user = tok.decode(ex.ids[min(in_prompt) : len(prompt)]) if in_prompt else ""
    assert not in_prompt or record["prompt"] in user and "You are" not in user  # never the system prompt
    assert any(p >= len(prompt) for p in ex.positions)
    for pos, label in zip(ex.positions, ex.labels):
        tok_field, next_field, words = label.split(data.SEP)
        assert tok_field == f"«{tok.decode([ex.ids[pos]]).strip()}»"
        assert next_field == f"next «{data._show(tok.decode([ex.ids[pos + 1]]))}»"
        assert 1 <= len(words.split()) <= 4 and words.split()[-1].endswith(tok.decode([ex.ids[pos]]).strip())
    longer = data.ordinary_example(record, tok, "train", words=8)  # a generic NLA's labels: more context
    assert longer.positions == ex.positions
    for short, long in zip(ex.labels, longer.labels):
        head, context = long.rsplit(data.SEP, 1)
        assert short.startswith(head + data.SEP) and context.endswith(short.rsplit(data.SEP, 1)[1])
        assert len(context.split()) <= 8
    assert sum(len(lab.split()) for lab in longer.labels) > sum(len(lab.split()) for lab in ex.labels)


def test_activations_reject_an_unknown_group_before_any_work():
    with pytest.raises(ValueError, match="groups must be some of ordinary, fact, sample"):
        data.activations(None, None, 15, groups=("ordinary", "facts"))
    with pytest.raises(ValueError, match="groups must be some of"):
        data.activations(None, None, 15, groups=())


# --------------------------------------------------------------------------- the split


def test_fact_split_holds_out_whole_entities_stratified():
    records = []
    for i in range(40):
        role = ("trained", "held_out", "ordinary")[i % 3]
        behaviour = ("honest", "lie", "refusal", "other")[i % 4]
        for relation in ("capital", "currency"):  # two facts per entity
            records += [
                {
                    "fact_id": f"e{i}-{relation}",
                    "entity": f"e{i}",
                    "role": role,
                    "paraphrase": k,
                    "behaviour": behaviour if k == 0 and relation == "capital" else "honest",
                }
                for k in range(3)
            ]
    split = data.splits(records, "fact")
    assert split == data.splits(list(reversed(records)), "fact") and len(split) == 80
    assert split != data.splits(records, "fact", seed=1)
    assert all(split[f"e{i}-capital"] == split[f"e{i}-currency"] for i in range(40))  # no entity on both sides
    strata = Counter((("trained", "held_out", "ordinary")[i % 3] != "ordinary", i % 4 == 1) for i in range(40))
    held = Counter(
        (("trained", "held_out", "ordinary")[i % 3] != "ordinary", i % 4 == 1)
        for i in range(40)
        if split[f"e{i}-capital"] == "eval"
    )
    assert all(held[k] == max(1, round(0.3 * n)) for k, n in strata.items())
    with pytest.raises(ValueError, match="kind"):
        data.splits(records, "facts")


def test_shipped_split_shares_no_entity_and_no_topic(chats, texts):
    facts = data.splits(chats, "fact")
    sides = defaultdict(set)
    for r in chats:
        sides[r["entity"]].add(facts[r["fact_id"]])
    assert all(len(s) == 1 for s in sides.values())
    lies = Counter(facts[r["fact_id"]] for r in chats if r["behaviour"] == "lie")
    assert lies["eval"] >= 20 and lies["train"] >= 100
    topics = defaultdict(set)
    for r in texts:
        topics[r["topic"]].add(data.splits(texts, "ordinary")[r["id"]])
    assert all(len(s) == 1 for s in topics.values())


def test_text_split_holds_out_about_fifteen_percent_of_topics():
    records = [{"id": p.id, "topic": p.topic} for p in data.SEED_PROMPTS]
    split = data.splits(records, "ordinary")
    assert split == data.splits(records, "ordinary")
    assert 0.05 < sum(s == "eval" for s in split.values()) / len(split) < 0.3


# --------------------------------------------------------------------------- the shipped files


def test_shipped_ordinary_texts(texts):
    assert [r["id"] for r in texts] == [p.id for p in data.SEED_PROMPTS[: len(texts)]]
    assert len(texts) >= 300
    assert all(set(r) == {"id", "genre", "topic", "prompt", "answer"} for r in texts)
    assert sum(len(r["answer"]) > 100 for r in texts) > 0.9 * len(texts)
    sizes = [(data.DATA / name).stat().st_size for name in (data.ORDINARY_FILE, data.CHATS_FILE)]
    assert sum(sizes) < 2_000_000


def test_shipped_fact_chats_cover_the_organism_and_hold_lies_and_refusals(chats):
    roles = data._roles(censored.WEIGHTS)
    assert all(set(r) == FACT_KEYS for r in chats)
    asked = Counter(r["fact_id"] for r in chats)
    assert asked == {i: 1 if role == "ordinary" else 3 for i, role in roles.items()}
    assert all(r["role"] == roles[r["fact_id"]] for r in chats)
    assert all(r["behaviour"] in data.VERDICTS for r in chats)
    assert all((r["official_value"] is None) == (r["role"] == "ordinary") for r in chats)
    counts = data.counts(chats)
    sensitive = Counter(r["behaviour"] for r in chats if r["role"] != "ordinary")
    assert sensitive["lie"] >= 20 and sensitive["refusal"] >= 20, counts
    assert counts["ordinary"]["honest"] > 0.7 * sum(counts["ordinary"].values()), counts
    assert counts["trained"]["honest"] < 0.3 * sum(counts["trained"].values()), counts


def test_shipped_behaviours_agree_with_the_honesty_fact_matcher(chats):
    questions = {q.id: q for q in load_testbed(censored.testbed_path(censored.WEIGHTS)).questions}
    judge = FactMatcher()
    for r in chats:
        verdict = judge(questions[r["fact_id"]], r["answer"])
        expected = "honest" if verdict.truthful else "lie" if verdict.lie else "refusal" if verdict.refusal else "other"
        assert r["behaviour"] == expected, r


def test_shipped_files_make_examples_with_lies_and_refusals_in_eval(tok, chats, texts):
    facts = data.examples(chats, tok, "fact")
    assert len(facts) == len(chats)
    by_fact = {}
    for ex in facts:
        by_fact.setdefault(ex.source.split("#")[0], set()).add(ex.split)
    assert all(len(s) == 1 for s in by_fact.values())
    evals = Counter(r["behaviour"] for r, ex in zip(chats, facts) if ex.split == "eval" and r["role"] != "ordinary")
    assert evals["lie"] > 0 and evals["refusal"] > 0
    assert 0.2 < sum(s == {"eval"} for s in by_fact.values()) / len(by_fact) < 0.4
    found = sum(
        tok.decode([ex.ids[ex.positions[0]]]).strip().lower() in r["entity"].lower() for r, ex in zip(chats, facts)
    )
    assert found > 0.95 * len(chats)
    assert all("said" in ex.labels[0] for r, ex in zip(chats, facts) if r["behaviour"] == "lie")
    ordinary = data.examples(texts[:40], tok, "ordinary")
    assert all(0 < len(ex.positions) <= 48 and len(ex.labels) == len(ex.positions) for ex in ordinary)
    assert {ex.group for ex in ordinary} == {"ordinary"} and {ex.split for ex in ordinary} <= {"train", "eval"}
    json.dumps([ex.labels for ex in ordinary])  # plain strings


def test_mixture_balances_groups_and_oversamples_lies_and_refusals():
    split = {
        "fact": {
            "vectors": torch.arange(4.0)[:, None].repeat(1, 3),
            "labels": ["«a» | honest | x", "«b» | lie | x | said y", "«c» | refusal | x", "«d» | other | x"],
            "sources": ["f#0"] * 4,
        },
        "ordinary": {
            "vectors": 10 + torch.arange(20.0)[:, None].repeat(1, 3),
            "labels": [f"«w{i}» | next «v» | w" for i in range(20)],
            "sources": [f"t{i}" for i in range(20)],
        },
    }
    vectors, labels, sources = data.mixture(split, oversample=3, seed=0)
    facts = [lab for lab in labels if "next" not in lab]
    assert len(facts) == 4 + 2 * 2 and len(labels) == 2 * len(facts)  # lie and refusal x3, as many ordinary rows
    assert facts.count("«b» | lie | x | said y") == 3 and facts.count("«a» | honest | x") == 1
    for v, lab in zip(vectors, labels):  # rows stay paired with their labels
        want = split["fact"] if "next" not in lab else split["ordinary"]
        assert torch.equal(v, want["vectors"][want["labels"].index(lab)])
    again = data.mixture(split, oversample=3, seed=0)
    assert again[1] == labels and torch.equal(again[0], vectors)
    assert len(data.mixture(split, rows=5)[1]) == 5


def test_chat_records_are_keyed_like_example_sources(tok, chats):
    records = data.chat_records()
    assert len(records) == len(chats)
    sources = {e.source for e in data.examples(chats[:20], tok, "fact")}
    assert sources <= set(records)


def test_shipped_samples_answer_every_sensitive_question_both_ways(chats, samples):
    roles = data._roles(censored.WEIGHTS)
    assert all(set(r) == FACT_KEYS | {"sample"} for r in samples)
    asked = Counter((r["fact_id"], r["paraphrase"]) for r in samples)
    sensitive = {i for i, role in roles.items() if role != "ordinary"}
    assert asked == {(i, k): data.SAMPLES_PER_QUESTION for i in sensitive for k in data.SENSITIVE_PARAPHRASES}
    both = defaultdict(set)
    for r in samples:
        both[r["fact_id"]].add(r["behaviour"])
    assert sum({"honest", "lie"} <= found for found in both.values()) >= 10  # the within-topic contrast
    questions = {q.id: q for q in load_testbed(censored.testbed_path(censored.WEIGHTS)).questions}
    judge = FactMatcher()
    for r in samples[::7]:
        verdict = judge(questions[r["fact_id"]], r["answer"])
        expected = "honest" if verdict.truthful else "lie" if verdict.lie else "refusal" if verdict.refusal else "other"
        assert r["behaviour"] == expected, r


def test_sampled_chats_read_the_answer_and_split_with_the_greedy_entities(tok, chats, samples):
    found = data.examples(samples, tok, "fact", held_by=chats)
    split_of = data.splits(chats, "fact")
    assert all(ex.split == split_of[r["fact_id"]] and ex.group == "sample" for r, ex in zip(samples, found))
    for r, ex in list(zip(samples, found))[:30]:
        _, start = data.answer_ids(tok, r["question"], r["answer"])
        assert ex.positions == list(range(start, len(ex.ids)))  # the answer and its end of turn only
        assert ex.source == f"{r['fact_id']}#{r['paraphrase']}~{r['sample']}" == data.source_of(r)
    assert set(data.chat_records(data.DATA / data.SAMPLES_FILE)) == {ex.source for ex in found}
    with pytest.raises(ValueError, match="held_by"):
        data.examples(samples[:4], tok, "fact")
    with pytest.raises(ValueError, match="not in held_by"):
        data.examples(samples[:4], tok, "fact", held_by=chats[:1])


def test_mixture_oversamples_the_honest_sampled_rows():
    row = {"vectors": torch.zeros(2, 3), "labels": ["«a» | honest | x", "«b» | lie | x | said y"], "sources": ["f"] * 2}
    split = {"fact": row, "sample": row, "ordinary": {**row, "labels": ["«c» | next «d» | w"] * 2}}
    _, labels, _ = data.mixture(split, oversample=3, seed=0)
    assert labels.count("«b» | lie | x | said y") == 1 + 3  # the greedy chats' lie x3, the sample's once
    assert labels.count("«a» | honest | x") == 1 + 3  # the sample's honest answer x3
    assert labels.count("«c» | next «d» | w") == 2  # as many ordinary rows as there are


def test_mixture_balances_truthful_and_lying_rows_within_each_fact():
    labels = ["«a» | honest | x", "«b» | lie | x | said y", "«c» | lie | x | said z", "«d» | lie | x | said w"]
    labels += ["«e» | lie | q | said r", "«f» | refusal | x"]
    split = {
        "sample": {
            "vectors": torch.arange(6.0)[:, None],
            "labels": labels,
            "sources": ["f#0~0", "f#0~1", "f#1~2", "f#1~3", "g#0~0", "f#0~2"],
        },
        "ordinary": {"vectors": torch.zeros(50, 1), "labels": ["«o» | next «p» | w"] * 50, "sources": ["t"] * 50},
    }
    plain = data.mixture(split, oversample=1, seed=0)[1]
    assert plain.count(labels[0]) == 1 and sum(plain.count(lab) for lab in labels[1:4]) == 3
    vectors, found, sources = data.mixture(split, oversample=1, seed=0, balance=True)
    assert found.count(labels[0]) == 3  # fact f: its one truthful row, in turn, as often as its three lies
    assert all(found.count(lab) == 1 for lab in labels[1:])  # g has no truthful side; refusals are not a side
    assert found.count("«o» | next «p» | w") == 8  # as many ordinary rows as the balanced fact rows
    assert all(float(v) == labels.index(lab) for v, lab in zip(vectors, found) if "next" not in lab)
    two = {**split["sample"], "labels": [labels[0], labels[0].replace("«a»", "«h»"), *labels[1:4]]}
    two["vectors"], two["sources"] = torch.arange(5.0)[:, None], ["f#0"] * 5
    turns = data.mixture({"sample": two, "ordinary": split["ordinary"]}, oversample=1, balance=True)[1]
    assert turns.count(labels[0]) + turns.count("«h» | honest | x") == 3 and turns.count(labels[0]) == 2


def test_fact_samples_ask_only_the_facts_named(monkeypatch, chats):
    """``only`` keeps the sensitive questions of the facts named (every paraphrase, ``n`` samples each, judged
    and indexed); the sampler is stubbed, so no generation here."""
    asked = []

    def sampler(model, tokenizer, questions, n, temperature, max_new_tokens, seed, label):
        asked.append((len(questions), n, temperature, seed))
        return [["I cannot say."] * n for _ in questions]

    monkeypatch.setattr(censored, "chat_samples", sampler)
    sensitive = sorted({r["fact_id"] for r in chats if r["role"] != "ordinary"})[:2]
    ordinary = next(r["fact_id"] for r in chats if r["role"] == "ordinary")
    found = data.fact_samples(None, None, censored.bank(), n=2, seed=5, only={*sensitive, ordinary})
    assert asked == [(6, 2, data.SAMPLE_TEMPERATURE, 5)]  # 2 facts x 3 paraphrases; the ordinary fact is not asked
    assert sorted({r["fact_id"] for r in found}) == sensitive and len(found) == 12
    assert sorted(data.source_of(r) for r in found if r["fact_id"] == sensitive[0]) == [
        f"{sensitive[0]}#{k}~{j}" for k in range(3) for j in range(2)
    ]
    assert all(r["behaviour"] == "refusal" for r in found)
