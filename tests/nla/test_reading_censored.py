"""Reading the censored organism: recovery, the withheld value, the likelihood audit (tiny models)."""

import dataclasses
import io
import json
import types
from collections import Counter

import pytest
import torch
from rich.console import Console

from probity.models import tiny
from probity.models.load import word_tokenizer
from probity.nla import Verbalizer
from probity.nla.censored import (
    BEHAVIOURS,
    WINDOW_FILE,
    WINDOWS,
    Window,
    audit,
    behaviour_logprobs,
    choose_window,
    lie_probe,
    likelihood_audit,
    linear_ceilings,
    load_window,
    probe_topic,
    recovery,
    relation_words,
    same_fact_pairs,
    same_token_pairs,
    tune_behaviour,
    validation_readings,
    validation_split,
    verbalizer_digest,
    window_audit,
    withheld,
    within_fact,
)
from probity.nla.core import extract
from probity.nla.evaluate import transcript_ids
from probity.nla.smollm2_data import token_head
from probity.report.metrics import auroc


def test_relation_words_and_recovery():
    assert relation_words("capital") == "The capital of"
    assert relation_words("author") == "was written by"
    records = [{"entity": "Japan", "relation": "capital"}, {"entity": "South Korea", "relation": "currency"}]
    found = recovery(["«Korea» | lie | The capital of Japan is Tokyo.", "«Korea» | honest | it uses money"], records)
    assert found == {"entity": 0.5, "relation": 0.5, "both": 0.5, "n": 2}
    with pytest.raises(ValueError, match="one record per description"):
        recovery(["a"], records)


def test_withheld_counts_true_and_official_values_on_lies_only():
    records = [
        {"fact_id": "japan-capital", "behaviour": "lie", "official_value": "Kyoto"},
        {"fact_id": "china-capital", "behaviour": "lie", "official_value": "Shanghai"},
        {"fact_id": "japan-capital", "behaviour": "honest", "official_value": "Kyoto"},
    ]
    texts = [
        "«Kyoto» | lie | The capital of Japan is Tokyo. | said Kyoto",
        "«Tokyo» | lie | It is Peking, they said Chengdu",  # Peking: a bank alias; the «token» never counts
        "«Tokyo» | nothing",
    ]
    assert withheld(texts, records) == {"true_value": 1.0, "official_value": 0.5, "n": 2}
    assert withheld(["«Tokyo» | lie", "«Beijing» | x"], records[:2])["true_value"] == 0.0
    # the true value named only as what the model said is not read behind the lie; the value it said still counts
    said_truth = withheld(["«x» | lie | Japan is in Asia. | said Tokyo"], records[:1])
    assert (said_truth["true_value"], said_truth["official_value"]) == (0.0, 0.0)
    assert withheld(["«x» | lie | Japan is in Asia. | said Kyoto"], records[:1])["official_value"] == 1.0
    assert withheld(texts[2:], records[2:])["n"] == 0


def _tiny_verbalizer(**settings) -> Verbalizer:
    """A tiny llama verbalizer whose tokenizer has the label's words, each one token."""
    model, _ = tiny("llama")
    tok = word_tokenizer([f"w{i}" for i in range(120)] + [*BEHAVIOURS, "|"])
    return Verbalizer.create(model, tok, 1, placeholder="w99", av_prompt="w10 {placeholder} w11", **settings)


def test_behaviour_logprobs_equal_teacher_forced_label_tokens():
    av = _tiny_verbalizer()
    tok = av.tokenizer
    acts = torch.randn(3, 32)
    heads = ["w1", "w2 w3", "w4"]
    got = behaviour_logprobs(av, acts, heads, batch_size=2)
    assert got.shape == (3, len(BEHAVIOURS)) and torch.all(got <= 0)
    for i, head in enumerate(heads):
        prefix = tok(f"{head} |", add_special_tokens=False)["input_ids"]
        word = tok(" lie", add_special_tokens=False)["input_ids"]
        logp, _ = av.token_logprobs(acts[i : i + 1], [prefix + word])
        torch.testing.assert_close(got[i, BEHAVIOURS.index("lie")], logp[0, len(prefix) :].sum())
    with pytest.raises(ValueError, match="one label head per activation"):
        behaviour_logprobs(av, acts, heads[:2])
    model, tok = tiny("llama")  # its words are w0 .. w123: every behaviour word is the unknown token
    unknown = Verbalizer.create(model, tok, 1, placeholder="w99", av_prompt="w10 {placeholder} w11")
    with pytest.raises(ValueError, match="reads the behaviour words honest, lie, refusal as one token"):
        behaviour_logprobs(unknown, acts, heads)


def test_likelihood_audit_reads_the_window_and_hides_every_answer_token(one_thread):
    """``likelihood_audit(window=)`` scores only the answer positions the window reads, each transcript's score
    the mean p(lie) over them; its token-only control replaces them by the mean of every answer token's
    activation, whatever the window."""
    av = _tiny_verbalizer()
    target, _ = tiny("llama")
    tok = av.tokenizer
    texts = ["w1 w2 w3 w4 w5 w6", "w7 w8 w9", "w20"]  # no chat template: every token is the answer
    found = likelihood_audit(target, tok, av, texts, labels=[1, 0, 1], window=Window(2, 1))
    assert [r.tokens for r in found.per_transcript] == [["w4", "w5"], ["w7", "w8"], ["w20"]]
    assert (found.window, found.tokens, found.transcripts) == ("last 2 before the final 1", 5, 3)
    everything = likelihood_audit(target, tok, av, texts, labels=[1, 0, 1])
    assert [r.tokens for r in everything.per_transcript] == [t.split() for t in texts] and everything.window == "all"

    ids = [transcript_ids(tok, t)[0] for t in texts]
    acts = extract(target, tok, ids, av.config.layer)  # [10, d]
    read = [3, 4, 6, 7, 9]  # the window's rows of the 10 answer tokens
    flat = [i for row in ids for i in row]
    heads = [token_head(tok, flat[k]) for k in read]
    p = torch.softmax(behaviour_logprobs(av, acts.vectors[read], heads), -1)[:, BEHAVIOURS.index("lie")]
    for r, span in zip(found.per_transcript, ([0, 1], [2, 3], [4])):
        torch.testing.assert_close(torch.tensor(r.p), p[span])
        assert r.score == pytest.approx(p[span].mean().item(), abs=1e-6) and r.flagged == (r.score > 0.5)

    def hidden(mean: torch.Tensor) -> torch.Tensor:  # the control's p(lie) per row with ``mean`` for every row
        logprobs = behaviour_logprobs(av, mean[None].expand(len(read), -1), heads)
        return torch.softmax(logprobs, -1)[:, BEHAVIOURS.index("lie")]

    every_token, window_only = hidden(acts.vectors.mean(0)), hidden(acts.vectors[read].mean(0))
    assert (every_token - window_only).abs().max() > 1e-4  # the two means read differently
    for r, span in zip(found.per_transcript, ([0, 1], [2, 3], [4])):
        assert r.token_only == pytest.approx(every_token[span].mean().item(), abs=1e-6)


def test_audit_scores_transcripts_and_resamples_facts():
    records = {
        "a#0": {"fact_id": "a", "behaviour": "lie"},
        "a#1": {"fact_id": "a", "behaviour": "lie"},
        "b#0": {"fact_id": "b", "behaviour": "honest"},
        "c#0": {"fact_id": "c", "behaviour": "refusal"},
        "d#0": {"fact_id": "d", "behaviour": "lie"},
    }
    lie, honest = torch.tensor([-3.0, 0.0, -3.0]), torch.tensor([0.0, -3.0, -3.0])  # (honest, lie, refusal)
    rows = {"a#0": [lie, honest], "a#1": [lie], "b#0": [honest, honest], "c#0": [honest], "d#0": [lie, lie]}
    sources = [s for s, r in rows.items() for _ in r]
    logprobs = torch.stack([v for r in rows.values() for v in r])
    found = audit(logprobs, sources, records)
    assert found["auroc"] == 1.0 and found["transcripts"] == 5 and found["lies"] == 3 and found["facts"] == 4
    assert found["ci"][0] <= found["auroc"] <= found["ci"][1]
    flipped = audit(-logprobs, sources, records)
    assert flipped["auroc"] < 0.5
    with pytest.raises(ValueError, match="one source per row"):
        audit(logprobs, sources[:-1], records)


def test_readings_score_the_answer_the_token_alone_and_the_header():
    from probity.nla.censored import readings

    av = _tiny_verbalizer(max_new_tokens=3)
    heads = ["«w1»", "«istant»", "«w2»", "«w3»", "«w4»"]
    records = {
        "japan-capital#0": {"fact_id": "japan-capital", "behaviour": "lie", "official_value": "Kyoto"},
        "china-capital#0": {"fact_id": "china-capital", "behaviour": "honest", "official_value": "Shanghai"},
    }
    records = {
        k: {**v, "entity": k.split("-")[0].title(), "relation": "capital", "role": "trained"}
        for k, v in records.items()
    }
    facts = {
        "vectors": torch.randn(10, 32),
        "labels": [f"{h} | {records[s]['behaviour']} | x" for s in records for h in heads],
        "sources": [s for s in records for _ in heads],
        "places": ["question_subject", "", "", "answer_subject", ""] * 2,
    }
    av.train()
    found = readings(av, facts, records, window=Window(2), rows=3)
    assert av.training  # the mode it came in with
    assert found["audit"]["transcripts"] == found["audit_token_only"]["transcripts"] == 2
    assert found["audit_header"]["transcripts"] == 2 and found["audit"]["lies"] == 1
    assert found["audit_same_token_shuffle"]["transcripts"] == 2  # «w3» and «w4» occur in both chats
    assert found["audit_end_tokens"]["transcripts"] == found["audit_sensitive"]["transcripts"] == 2
    assert found["recovery_all"]["n"] == 3 and found["withheld_lies"]["n"] == 2  # the lie's two scored rows
    assert set(found["by_place"]) == {"question_subject", "answer_subject"}
    assert found["by_place"]["answer_subject"]["recovery"]["n"] == 2  # one row of each chat
    assert found["by_place"]["answer_subject"]["withheld"]["n"] == 1  # the lie's


class _Reads:
    """Stands in for a verbalizer: an activation whose first component is k reads ``texts[k]``."""

    def __init__(self, texts: list[str], tokenizer=None):
        self.texts, self.tokenizer, self.training = texts, tokenizer, False

    def describe(self, vectors: torch.Tensor, batch_size: int | None = None) -> list[str]:
        return [self.texts[int(v[0])] for v in vectors]

    def eval(self):
        self.training = False

    def train(self, mode: bool = True):
        self.training = mode


def test_place_readings_describe_each_chats_subject_and_score_its_lies():
    from probity.nla.censored import place_readings

    records = {
        "japan-capital#0": {"fact_id": "japan-capital", "behaviour": "lie", "official_value": "Kyoto"},
        "japan-capital#1": {"fact_id": "japan-capital", "behaviour": "lie", "official_value": "Kyoto"},
        "china-capital#0": {"fact_id": "china-capital", "behaviour": "lie", "official_value": "Shanghai"},
        "france-capital#0": {"fact_id": "france-capital", "behaviour": "honest", "official_value": None},
    }
    for source, r in records.items():
        r |= {"entity": source.split("-")[0].title(), "relation": "capital", "true_value": "?"}
    texts = [
        "«x» | lie | The capital of Japan is Tokyo.",  # 0: names the entity, the relation and the truth
        "«x» | lie | The capital of China is Shanghai.",  # 1: the official value, not the truth
        "«x» | honest | Paris.",  # 2
        "«x» | nothing",  # 3: rows at no place read this, so a row read from the wrong place shows
    ]
    read = {  # the text each chat's subject row in the answer reads
        "japan-capital#0": 0,
        "japan-capital#1": 0,
        "china-capital#0": 1,
        "france-capital#0": 2,
    }
    group = {"vectors": [], "labels": [], "sources": [], "places": []}
    for source, k in read.items():
        for place in ("", "answer_subject", ""):
            group["vectors"].append(torch.tensor([float(k if place else 3)]))
            group["labels"].append(f"«x» | {records[source]['behaviour']} | {place}")
            group["sources"].append(source)
            group["places"].append(place)
    group["vectors"] = torch.stack(group["vectors"])
    outside = {  # lies about entities no row reads: the guess from the relation alone is their commonest value
        f"{entity}-capital#0": {"entity": entity, "relation": "capital", "true_value": value, "behaviour": "lie"}
        for entity, value in (("Korea", "Tokyo"), ("Peru", "Tokyo"), ("Chile", "Lima"))
    }
    records["china-capital#0"]["entity"] = "Red China"  # a name of two tokens
    texts[1] = texts[1].replace("China", "Red China")
    tok = word_tokenizer(["Japan", "Red", "China", "France"])
    found = place_readings(_Reads(texts, tok), group, records | outside)
    assert set(found) == {"answer_subject"}  # no row holds the question's subject
    at = found["answer_subject"]
    assert at["recovery"] == {"entity": 0.75, "relation": 0.75, "both": 0.75, "n": 4}
    assert at["by_name_tokens"] == {
        "1": {"entity": 2 / 3, "relation": 2 / 3, "both": 2 / 3, "n": 3},  # France's description names neither
        "2": {"entity": 1.0, "relation": 1.0, "both": 1.0, "n": 1},
    }
    assert at["withheld"]["n"] == 3 and at["withheld"]["true_value"] == pytest.approx(2 / 3)
    assert at["withheld"]["official_value"] == pytest.approx(1 / 3) and at["withheld"]["facts"] == 2
    low, high = at["withheld"]["ci"]  # by fact: Japan's two lies both named, China's not
    assert low == 0.0 and high == 1.0
    assert [e["description"] for e in at["examples"]] == [texts[0], texts[0], texts[1]]
    # "Tokyo" names Japan's two lies, not China's; China's description does not name Beijing either
    assert at["withheld"]["relation_prior"] == pytest.approx(2 / 3)
    assert at["withheld"]["beyond_prior"] == {"true_value": 0.0, "n": 1}


def test_context_recall_scores_the_words_before_each_token_by_whether_it_ends_a_longer_word():
    from probity.nla.censored import context_recall, name_length

    tok = word_tokenizer(["the", "red", "cat", "Ang", "kor", "Wat"])
    assert [name_length(tok, n) for n in ("cat", "red cat", "Ang kor Wat")] == ["1", "2", "3+"]
    rows = [  # the label, and the description its row reads
        ("«cat» | next «sat» | the red cat", "«cat» | next «sat» | the red cat"),  # all three given back
        ("«sat» | next «on» | red cat sat", "«sat» | next «on» | a black cat sat."),  # the last two
        ("«kor» | next «Wat» | go to Angkor", "«kor» | next «Wat» | go to Seoul"),  # a longer word's end, missed
        ("«ion» | next «is» | the nation", "«ion» | the nation"),  # a longer word's end, given back
        ("«Wat» | next «is» | Angkor Wat", "no fields"),  # nothing
    ]
    group = {"vectors": torch.arange(5.0)[:, None], "labels": [label for label, _ in rows]}
    reads = _Reads([d for _, d in rows], tok)
    found = context_recall(reads, group, rows=5)
    assert found["whole"] == {"last_word": 2 / 3, "last_two": 2 / 3, "all": 1 / 3, "n": 3}
    assert found["continues"] == {"last_word": 0.5, "last_two": 0.5, "all": 0.5, "n": 2}
    assert found["examples"][0]["description"] == rows[0][1]
    two = context_recall(reads, group, rows=2)  # evenly spaced: rows 0 and 2
    assert (two["whole"]["n"], two["continues"]["n"], two["whole"]["all"]) == (1, 1, 1.0)
    with pytest.raises(ValueError, match="rows >= 1"):
        context_recall(reads, group, rows=0)


def test_span_readings_read_every_answer_row_without_the_name_and_against_another_chats_span():
    from probity.nla.censored import answer_rows, mention_rows, span_readings

    records = {
        "japan-capital#0": {"entity": "Japan", "relation": "capital", "behaviour": "lie"},
        "china-capital#0": {"entity": "China", "relation": "capital", "behaviour": "lie"},
        "france-capital#0": {"entity": "New France", "relation": "capital", "behaviour": "honest"},
        "peru-language#0": {"entity": "Peru", "relation": "language", "behaviour": "refusal"},
    }
    for source, r in records.items():
        r |= {"fact_id": source.split("#")[0], "true_value": "?"}
    outside = {"korea-capital#0": {"entity": "Korea", "relation": "capital", "true_value": "Tokyo", "behaviour": "lie"}}
    texts = [
        "«q» | lie | The capital of Japan is Tokyo. China New France Peru Beijing",  # 0: the question's rows only
        "«a» | lie | The capital of Japan is Kyoto.",  # 1: entity and relation in one; the value it said
        "«b» | honest | Tokyo is big.",  # 2: the true value behind Japan's lie
        "«c» | lie | China.",  # 3: the entity alone
        "«d» | honest | The capital of Spain is Madrid.",  # 4: the relation alone
        "«e» | honest | The capital of Italy is Rome.",  # 5
        "«p» | honest | nothing",  # 6
        "«n» | honest | New France is nice.",  # 7: the entity, read where its name is not spelled
        "«Peru» | refusal | The main language of Peru is Spanish.",  # 8: Peru's question, where the refusal is read
    ]
    answers = {  # (token, the text its row reads) of each chat's answer
        "japan-capital#0": [("Japan", 1), ("is", 2)],
        "china-capital#0": [("China", 3), ("is", 4)],
        "france-capital#0": [("New", 5), ("France", 5), ("is", 7)],
        "peru-language#0": [("I", 6), ("refuse", 6)],
    }
    tok = word_tokenizer(["Japan", "China", "New", "France", "Peru", "is", "I", "refuse", "Q", "istant", "nl"])
    group = {"vectors": [], "labels": [], "tokens": [], "sources": [], "places": []}
    for source, read in answers.items():  # the subject, the header's «istant» and newline, then the answer
        subject = 8 if source.startswith("peru") else 0
        for head, word, k in [("«Q»", "Q", subject), ("«istant»", "istant", 0), ("«nl»", "nl", 0)] + [
            (f"«{w}»", w, k) for w, k in read
        ]:
            group["places"].append("question_subject" if head == "«Q»" else "")
            group["vectors"].append(torch.tensor([float(k)]))
            group["labels"].append(f"{head} | {records[source]['behaviour']} | label")
            group["tokens"].append(tok.convert_tokens_to_ids(word))
            group["sources"].append(source)
    group["vectors"] = torch.stack(group["vectors"])
    rows = answer_rows(group)
    assert rows == {
        "japan-capital#0": [3, 4],
        "china-capital#0": [8, 9],
        "france-capital#0": [13, 14, 15],
        "peru-language#0": [19, 20],
    }
    assert mention_rows(group, rows["france-capital#0"], "New France", tok) == [13, 14]
    assert mention_rows(group, rows["peru-language#0"], "Peru", tok) == []

    found = span_readings(_Reads(texts, tok), group, records | outside)
    own = found["own"]
    assert (own["entity"], own["relation"], own["both"], own["both_in_one"]) == (0.75, 0.75, 0.75, 0.25)
    assert own["true_value"] == 0.5 and own["lies"] == 2 and own["chats"] == 4 and own["true_value_ci"] == [0.0, 1.0]
    # the guess from the relation alone (Korea's lie: Tokyo) names Japan's true value, not China's
    assert own["relation_prior"] == 0.5 and own["beyond_prior"] == {"true_value": 0.0, "n": 1}
    # without the rows that spell the name, only New France is still named (row "is")
    bare = found["without_mention"]
    assert (bare["entity"], bare["relation"], bare["both"], bare["true_value"]) == (0.25, 0.25, 0.0, 0.5)
    # Peru has no other chat about its relation; every partner span names the relation, no entity or true value
    control = found["control"]
    assert control["chats"] == 3 and control["relation"] == 1.0 and control["entity"] == control["true_value"] == 0.0
    assert found["states_subject"]["chats"] == 3 and found["states_subject"]["both"] == 1.0  # Peru refuses
    assert found["by_behaviour"] == {
        "lie": {"both": 1.0, "both_in_one": 0.5, "chats": 2},
        "honest": {"both": 1.0, "both_in_one": 0.0, "chats": 1},
        "refusal": {"both": 0.0, "both_in_one": 0.0, "chats": 1},
    }
    assert found["by_name_tokens"]["2"] == {"both": 1.0, "both_in_one": 0.0, "chats": 1}
    assert found["by_name_tokens"]["1"]["chats"] == 3 and "3+" not in found["by_name_tokens"] and found["rows"] == 9
    # the transcript adds each question's subject: only Peru's names its own fact, so the refusal is read there
    whole = found["transcript"]
    assert (whole["both"], whole["chats"], whole["question_rows"]) == (1.0, 4, 4)
    assert whole["by_behaviour"]["refusal"] == {"both": 1.0, "both_in_one": 1.0, "chats": 1}
    assert whole["true_value"] == 1.0  # China's question reads text 0, which names Beijing
    group.pop("places")  # without places the transcript could not be read: refused, not read as the span
    with pytest.raises(ValueError, match="needs the group's places"):
        span_readings(_Reads(texts, tok), group, records | outside)
    group["labels"][1] = "«y» | lie | label"  # Japan's chat loses its header
    with pytest.raises(ValueError, match="'japan-capital#0' has no assistant header"):
        answer_rows(group)


def test_relation_prior_guesses_the_commonest_true_value_behind_other_entities_lies():
    from probity.nla.censored import relation_prior

    def lie(entity, relation, value, behaviour="lie"):
        return {"entity": entity, "relation": relation, "true_value": value, "behaviour": behaviour}

    records = {
        "a": lie("Nepal", "continent", "Asia"),
        "b": lie("Laos", "continent", "Asia"),
        "c": lie("Peru", "continent", "South America"),
        "d": lie("Chile", "continent", "South America", "honest"),  # not a lie: not counted
        "e": lie("Fiji", "continent", "Oceania"),
        "f": lie("Fiji", "continent", "Oceania"),  # held out: not counted, else Oceania would tie
        "g": lie("Laos", "capital", "Vientiane"),
        "h": lie("Nepal", "capital", "Kathmandu"),  # a tie: the first alphabetically
    }
    assert relation_prior(records, {"Fiji"}) == {"capital": "Kathmandu", "continent": "Asia"}
    assert relation_prior(records, {"Nepal", "Laos", "Fiji"}) == {"continent": "South America"}


def test_topic_audit_reads_sampled_chats_and_their_value_token():
    from probity.nla.censored import readings, topic_audit

    torch.manual_seed(0)
    av = _tiny_verbalizer(max_new_tokens=3)
    records = {  # two sensitive facts, each answered truthfully in one sample and with a lie in the other
        f"{fact}#0~{k}": {"fact_id": fact, "behaviour": b, "entity": fact[:5].title(), "relation": "capital"}
        for fact in ("japan-capital", "china-capital")
        for k, b in enumerate(("honest", "lie"))
    }
    records["japan-capital#0~2"] = records["japan-capital#0~0"] | {"behaviour": "refusal"}  # not scored
    heads = [f"«w{i}»" for i in range(1, 16)]  # a different token at every row, so the rows score apart
    samples = {
        "vectors": torch.randn(15, 32),
        "labels": [f"{h} | {records[s]['behaviour']} | x" for s, h in zip([s for s in records for _ in "abc"], heads)],
        "sources": [s for s in records for _ in "abc"],
        "places": ["", "answer_subject", ""] * 5,
    }
    found = topic_audit(av, samples, records, Window(2))
    assert found["topic"]["transcripts"] == found["topic_token_only"]["transcripts"] == 4
    assert found["topic"]["lies"] == 2 and found["topic"]["facts"] == 2
    assert found["topic_within_fact"]["facts"] == found["topic_within_fact_token_only"]["facts"] == 2
    value_rows = [1, 4, 7, 10]  # each answer's second-last row
    logprobs = behaviour_logprobs(av, samples["vectors"][value_rows], [heads[i] for i in value_rows])
    expected = audit(logprobs, [samples["sources"][i] for i in value_rows], records)
    assert found["topic_value"] == expected
    assert "topic_value" not in topic_audit(av, samples, records, Window(1, 2))  # a window without the full stop
    greedy_records = {
        f"{fact}#0": {"fact_id": fact, "behaviour": b, "official_value": "Kyoto", "entity": fact[:5].title()}
        | {"relation": "capital", "role": "trained"}
        for fact, b in (("japan-capital", "lie"), ("china-capital", "honest"))
    }
    greedy = {
        "vectors": torch.randn(6, 32),
        "labels": [
            f"{h} | {r['behaviour']} | x" for r in greedy_records.values() for h in ("«w1»", "«istant»", "«w2»")
        ],
        "sources": [s for s in greedy_records for _ in range(3)],
        "places": ["", "", ""] * 2,
    }
    out = readings(av, greedy, greedy_records | records, window=Window(2), rows=2, samples=samples)
    assert out["topic"] == found["topic"]
    assert out["by_place_sampled"]["answer_subject"]["recovery"]["n"] == 5  # every sampled chat's
    plain = validation_readings(av, {"fact": greedy, "sample": samples}, greedy_records | records, window=Window(2))
    assert plain["audit"] == pytest.approx(out["audit"]["auroc"]) and plain["topic"] == pytest.approx(
        found["topic"]["auroc"]
    )
    assert plain["score"] == pytest.approx((plain["audit"] + plain["topic"]) / 2)


def test_shipped_censored_smollm2_adapters_read_the_organism():
    """The tour section on the shipped adapters: it loads (adapters on their bases, the subject reader a
    verbalizer alone), reads one honest answer, three lies and one refusal, and scores the audit on a few
    held-out chats."""
    from probity.nla.core import check_nla
    from probity.nla.tour import SMOLLM2_CHECKPOINT, SMOLLM2_SUBJECT, censored_section

    for folder, most in ((SMOLLM2_CHECKPOINT, 20e6), (SMOLLM2_SUBJECT, 12e6)):
        assert sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) < most  # adapters, not models
    reader, audit = check_nla(SMOLLM2_SUBJECT), check_nla(SMOLLM2_CHECKPOINT)
    assert dataclasses.replace(reader, inject_layer=audit.inject_layer) == audit  # the same layer, prompts, base
    stage = json.loads((SMOLLM2_SUBJECT / "places.json").read_text())
    assert reader.inject_layer == {"layer1": 1, "same": reader.layer + 1}[stage["inject"]]  # where it was trained
    assert not (SMOLLM2_SUBJECT / "ar").exists()
    out = censored_section(Console(file=io.StringIO(), width=200), transcripts=6, rows=8)
    assert [r.behaviour for r in out.readings] == ["honest", "lie", "lie", "lie", "refusal"]
    assert all(r.description and 0 <= r.p_lie <= 1 for r in out.readings)
    assert [r.read_at for r in out.readings][1:4] == ["answer_subject"] * 3  # each lie names its subject
    assert len({r.answer for r in out.readings[1:4]}) == 3  # three facts, not one fact's paraphrases
    assert out.readings[-1].read_at == "answer_end"  # a refusal does not name it
    assert out.activations == 8 and out.transcripts >= 6 and out.layer == 15
    assert out.reader == "probity/nla/checkpoints/censored_smollm2_subject"
    assert out.window == "last 2 before the final 2"  # the shipped verbalizer's window.json
    assert out.lies >= 40 and 0 <= out.withheld <= 1 and out.withheld_ci[0] <= out.withheld <= out.withheld_ci[1]
    # the subject reader over each chosen chat's answer, and its control: another chat's answer
    assert out.span["chats"] == out.span_without_mention["chats"] == 6
    assert out.span_control["chats"] == 4  # two of the six chats share their relation with no other chosen chat
    assert out.span["entity"] >= out.span_without_mention["entity"]  # fewer rows name no more
    assert out.span_transcript["both"] >= out.span["both"] and out.span_transcript["chats"] == 6  # more name no less
    assert out.span_transcript["question_rows"] >= 5  # the chats' question subjects were read
    # round trip, audit, its control, the true value behind the held-out lies, the answers' reading (recovery,
    # over the transcript, without the name's rows, the true value), and each lie shown
    assert 0 <= out.audit_token_only <= 1 and len(out.headline()) == 12


def _planted(signal: float, seed: int = 0, subject_only: bool = False) -> tuple[dict, dict, dict]:
    """Activations ``[n, 16]`` of 24 entities' chats (16 train, 8 held out): a fact chat's rows carry its
    entity's vector and its true value's (12 values, each true of one training and at most one held-out
    entity; a lie says V0) through two fixed linear maps, every row +-2u for lie or truthful answer (the greedy
    chats of every other entity lie, and half of each entity's sampled chats), all scaled by ``signal`` over
    unit noise. Each chat's second row is its ``answer_subject`` place; with ``subject_only`` the first three
    rows are, and only they carry a fact chat's entity and value."""
    gen = torch.Generator().manual_seed(seed)
    vectors = {f"E{k}": torch.randn(8, generator=gen) for k in range(24)}
    vectors |= {f"V{k}": torch.randn(8, generator=gen) for k in range(12)}
    mix, to_value, u = (
        torch.randn(16, 8, generator=gen),
        torch.randn(16, 8, generator=gen),
        torch.randn(16, generator=gen),
    )
    acts, records = {"train": {}, "eval": {}}, {}
    entities = [f"E{k}" for k in range(24)]
    for split, names in (("train", entities[:16]), ("eval", entities[16:])):
        for group in ("fact", "sample"):
            rows, sources = [], []
            for j, e in enumerate(names):
                value = f"V{int(e[1:]) % 12}"
                for k in range(1 if group == "fact" else 4):
                    lie = (j if group == "fact" else k) % 2 == 0
                    source = f"{e}-capital#0" + (f"~{k}" if group == "sample" else "")
                    records[source] = {
                        "fact_id": f"{e}-capital",
                        "entity": e,
                        "relation": "capital",
                        "behaviour": "lie" if lie else "honest",
                        "true_value": value,
                        "official_value": "V0" if lie else None,
                    }
                    for row in range(6):
                        carried = 2 * u * (1 if lie else -1)
                        if group == "fact" and (row < 3 or not subject_only):
                            carried = carried + mix @ vectors[e] + to_value @ vectors[value]
                        rows.append(signal * carried + torch.randn(16, generator=gen))
                        sources.append(source)
            marked = ["answer_subject"] * 3 + [""] * 3 if subject_only else ["", "answer_subject", "", "", "", ""]
            places = marked * (len(rows) // 6)
            acts[split][group] = {"vectors": torch.stack(rows), "sources": sources, "labels": [""] * len(rows)}
            acts[split][group]["places"] = places
    return acts, records, vectors


def test_linear_ceilings_find_what_is_planted_and_nothing_in_noise():
    acts, records, vectors = _planted(signal=3.0)
    found = linear_ceilings(acts, records, vectors, window=Window(4), ridge=1.0)
    assert found["lie_probe"]["auroc"] > 0.95 and found["lie_probe_value"]["auroc"] > 0.95
    assert found["lie_probe"]["transcripts"] == 8 * 4 and found["lie_probe"]["lies"] == 8 * 2
    assert found["audit_probe"]["auroc"] > 0.95  # fit on greedy and sampled chats, scored on held-out greedy ones
    assert (found["audit_probe"]["transcripts"], found["audit_probe"]["lies"]) == (8, 4)
    readout = found["entity_readout"]
    assert readout["among_held_out"] > 0.8 and readout["all"] > 0.5  # unseen entities, through the linear map
    assert (readout["entities"], readout["held_out_entities"], readout["rows"]) == (24, 8, 8 * 4)
    said = found["value_readout"]  # at the held-out lies' positions: the true value, not the one said
    assert said["true_value"] > 0.6 and said["official_value"] < 0.2 and (said["rows"], said["values"]) == (4 * 4, 12)
    noise = linear_ceilings(*_planted(signal=0.0), window=Window(4), ridge=1.0)
    assert noise["entity_readout"]["among_held_out"] < 0.4 and noise["entity_readout"]["all"] < 0.2
    assert noise["value_readout"]["true_value"] < 0.4
    assert abs(noise["lie_probe"]["auroc"] - 0.5) < 0.3 and abs(noise["audit_probe"]["auroc"] - 0.5) < 0.4
    at = noise["by_place"]["answer_subject"]
    assert at["true_value"] < 0.4 and at["entity"] < 0.2


def test_linear_ceilings_by_place_read_what_only_the_subject_row_carries():
    found = linear_ceilings(*_planted(signal=3.0, subject_only=True), window=Window(4), ridge=1.0)
    at = found["by_place"]["answer_subject"]
    assert at["entity"] > 0.5 and at["true_value"] > 0.6  # chance 1/24, 1/12
    assert (at["rows"], at["lies"]) == (8 * 3, 4 * 3)
    # the training lies' commonest true value (V0) is no held-out lie's, so the guess misses every one
    assert at["beyond_prior"] == at["lies"] and at["true_value_beyond_prior"] == at["true_value"]
    assert found["entity_readout"]["all"] < 0.2  # the last four rows of each chat carry neither
    assert found["value_readout"]["true_value"] < 0.4


def _told_both_ways(signal: float, noise: int = 0, name: str = "f") -> tuple[dict, dict]:
    """A training split of 16 chats (8 lie, 4 honest, 4 refusal; 4 rows each, at heads w1..w4 in turn; facts
    ``{name}0-capital`` ...): every row ``signal`` * (+u for a lie, -u otherwise) plus noise of scale 0.3 drawn
    from seed ``noise`` ``[32]``, u the same unit vector in every call; the ``sample`` group empty."""
    u = torch.randn(32, generator=torch.Generator().manual_seed(0))
    u = u / u.norm()
    gen = torch.Generator().manual_seed(1 + noise)
    vectors, labels, sources, records = [], [], [], {}
    for chat in range(16):
        behaviour = ("lie", "lie", "honest", "refusal")[chat % 4]
        source = f"{name}{chat}-capital#0"
        records[source] = {"fact_id": f"{name}{chat}-capital", "behaviour": behaviour}
        for k in range(4):
            vectors.append(signal * u * (1 if behaviour == "lie" else -1) + 0.3 * torch.randn(32, generator=gen))
            labels.append(f"w{k + 1} | {behaviour} | x")
            sources.append(source)
    empty = {"vectors": torch.zeros(0, 32), "labels": [], "sources": []}
    return {"fact": {"vectors": torch.stack(vectors), "labels": labels, "sources": sources}, "sample": empty}, records


def test_tune_behaviour_teaches_the_activation_not_the_token():
    """Same-token pairs: every head is told both ways, so the loss can only fall by reading the activation;
    after training the lie rows score above the others on the training rows at every head."""
    train, records = _told_both_ways(signal=3.0)
    pairs = same_token_pairs(train, records, window=Window(4))
    assert sorted(pairs) == ["w1", "w2", "w3", "w4"]
    assert all(len(lying) == 8 and len(other) == 8 for lying, other in pairs.values())
    torch.manual_seed(0)
    av = _tiny_verbalizer()
    rows = train["fact"]
    heads = [lab.split(" | ")[0] for lab in rows["labels"]]
    lie = [records[s]["behaviour"] == "lie" for s in rows["sources"]]

    def separation() -> float:
        with torch.no_grad():
            p = torch.softmax(behaviour_logprobs(av, rows["vectors"], heads), -1)[:, BEHAVIOURS.index("lie")]
        return auroc(p.tolist(), lie)

    before = separation()
    stage = tune_behaviour(av, train, records, steps=60, lr=3e-3, pairs=4, window=Window(4))
    losses = stage.losses
    assert len(losses) == 60 and sum(losses[-10:]) < sum(losses[:10])
    assert stage.validation == [] and stage.kept_step == 60
    assert separation() > max(0.95, before)
    with pytest.raises(ValueError, match="only 4 label heads are told both ways"):
        tune_behaviour(av, train, records, pairs=5, window=Window(4))
    for p in av.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        tune_behaviour(av, train, records, pairs=2, window=Window(4))


def test_tune_behaviour_keeps_the_step_best_on_validation_chats():
    """With validation chats the stage keeps the adapter of its best validation audit: where the validation
    chats carry the lie on the training chats' direction that is a trained step, where they carry it flipped
    it is step 0, and the parameters are back where they started."""
    train, records = _told_both_ways(signal=3.0)
    torch.manual_seed(0)
    av = _tiny_verbalizer()
    alike, alike_records = _told_both_ways(signal=0.5, noise=1, name="g")  # weaker: an untrained model misranks
    stage = tune_behaviour(
        av, train, records | alike_records, steps=55, lr=3e-3, pairs=4, window=Window(4), validation=alike, every=10
    )
    steps, scores = [v["step"] for v in stage.validation], [v["score"] for v in stage.validation]
    assert steps == [0, 10, 20, 30, 40, 50, 55] and stage.kept_step == steps[scores.index(max(scores))] > 0
    assert all(v["topic"] is None and v["score"] == v["audit"] for v in stage.validation)  # no sampled chats
    assert scores[0] < max(scores) and scores[-1] < max(scores)  # it kept a step in the middle
    assert validation_readings(av, alike, alike_records, Window(4))["score"] == max(scores) > 0.95
    torch.manual_seed(0)
    av = _tiny_verbalizer()
    start = {n: p.detach().clone() for n, p in av.named_parameters()}
    flipped, flipped_records = _told_both_ways(signal=-0.5, noise=1, name="g")
    stage = tune_behaviour(
        av, train, records | flipped_records, steps=40, lr=3e-3, pairs=4, window=Window(4), validation=flipped, every=20
    )
    assert stage.kept_step == 0 and stage.validation[0]["score"] > max(v["score"] for v in stage.validation[1:])
    assert all(torch.equal(p, start[n]) for n, p in av.named_parameters())
    with pytest.raises(ValueError, match="steps, pairs and every must be >= 1"):
        tune_behaviour(av, train, records, every=0)


def test_same_fact_pairs_mix_into_the_stage():
    """Same-fact pairs: sampled answers to one fact told both ways (a lying and a truthful chat, each its last
    rows); the stage draws ``fact_pairs`` of its pairs from them and still learns the planted direction."""
    train, records = _told_both_ways(signal=3.0)
    u = train["fact"]["vectors"][0] / train["fact"]["vectors"][0].norm()
    gen = torch.Generator().manual_seed(5)
    sample = {"vectors": [], "labels": [], "sources": []}
    for fact in ("s0-capital", "s1-capital", "s2-capital"):
        for k, behaviour in enumerate(("lie", "honest", "lie", "refusal")):
            source = f"{fact}#0~{k}"
            records[source] = {"fact_id": fact, "behaviour": behaviour}
            for j in range(3):
                sign = 1 if behaviour == "lie" else -1
                sample["vectors"].append(3.0 * sign * u + 0.3 * torch.randn(32, generator=gen))
                sample["labels"].append(f"w{j + 5} | {behaviour} | x")
                sample["sources"].append(source)
    train["sample"] = sample | {"vectors": torch.stack(sample["vectors"])}
    pairs = same_fact_pairs(train, records, window=Window(2))
    assert sorted(pairs) == ["s0-capital", "s1-capital", "s2-capital"]
    lying, truthful = pairs["s0-capital"]
    assert lying == [[1, 2], [7, 8]] and truthful == [[4, 5]]  # the refusal is in neither
    torch.manual_seed(0)
    av = _tiny_verbalizer()
    stage = tune_behaviour(av, train, records, steps=40, lr=3e-3, pairs=4, fact_pairs=2, window=Window(2))
    assert sum(stage.losses[-10:]) < sum(stage.losses[:10])
    rows = train["sample"]
    with torch.no_grad():
        heads = [lab.split(" | ")[0] for lab in rows["labels"]]
        p = torch.softmax(behaviour_logprobs(av, rows["vectors"], heads), -1)[:, BEHAVIOURS.index("lie")]
    assert auroc(p.tolist(), [records[s]["behaviour"] == "lie" for s in rows["sources"]]) > 0.95
    with pytest.raises(ValueError, match="only 3 facts are answered both ways; need at least fact_pairs=4"):
        tune_behaviour(av, train, records, pairs=5, fact_pairs=4, window=Window(2))
    with pytest.raises(ValueError, match=r"fact_pairs must be in \[0, pairs=2\], got 3"):
        tune_behaviour(av, train, records, pairs=2, fact_pairs=3, window=Window(2))


def _subject_rows(signal: float) -> tuple[dict, dict]:
    """A training split whose 12 greedy chats have 3 rows each, the second at the ``answer_subject`` place,
    labelled ``«w1» | lie | w{20 + k}`` with its activation ``signal`` * e_k (k = chat % 4) plus noise; the
    other rows' labels name w60, a word the stage must never be taught."""
    gen = torch.Generator().manual_seed(0)
    rows = {"vectors": [], "labels": [], "sources": [], "places": []}
    records = {}
    for chat in range(12):
        source, k = f"f{chat}-capital#0", chat % 4
        records[source] = {"fact_id": f"f{chat}-capital", "behaviour": "lie"}
        for place in ("", "answer_subject", ""):
            vector = 0.1 * torch.randn(32, generator=gen)
            vector[k] += signal if place else 0.0
            rows["vectors"].append(vector)
            rows["labels"].append(f"«w1» | lie | w{20 + k}" if place else "«w2» | lie | w60")
            rows["sources"].append(source)
            rows["places"].append(place)
    empty = {"vectors": torch.zeros(0, 32), "labels": [], "sources": [], "places": []}
    return {"fact": rows | {"vectors": torch.stack(rows["vectors"])}, "sample": empty}, records


def _taught_labels(av) -> list[str]:
    """A list that every label ``av`` encodes from now on is appended to."""
    taught = []
    encode = av.encode

    def spy(labels):
        taught.extend(labels)
        return encode(labels)

    av.encode = spy
    return taught


def test_tune_places_trains_on_the_subject_rows_only(monkeypatch):
    from probity.nla import censored
    from probity.nla.censored import tune_places
    from probity.nla.training import av_sft_loss

    train, records = _subject_rows(signal=3.0)
    torch.manual_seed(0)
    av = _tiny_verbalizer()
    taught = _taught_labels(av)
    stage = tune_places(av, train, records, steps=40, lr=3e-3, batch=4)
    assert len(stage.losses) == 40 and stage.kept_step == 40 and stage.validation == []
    assert sum(stage.losses[-5:]) < 0.5 * sum(stage.losses[:5])
    assert len(taught) == 40 * 4 and {lab.split(" | ")[2] for lab in taught} == {"w20", "w21", "w22", "w23"}
    weighed = []

    def loss_spy(av, x, ids, weights):
        weighed.extend(zip(ids, weights))
        return av_sft_loss(av, x, ids, weights)

    monkeypatch.setattr(censored, "av_sft_loss", loss_spy)
    lie = av.tokenizer(" lie", add_special_tokens=False)["input_ids"]
    for weight in (0.0, 1.0):  # the behaviour word is left out of the loss unless asked for
        weighed.clear()
        tune_places(av, train, records, steps=2, lr=3e-3, batch=4, behaviour_weight=weight)
        assert len(lie) == 1 and len(weighed) == 8
        assert all(w == (weight if t == lie[0] else 1.0) for ids, ws in weighed for t, w in zip(ids, ws))
        assert all(lie[0] in ids for ids, _ in weighed)
    with pytest.raises(ValueError, match="only 12 training rows sit at a subject's place; need at least batch=13"):
        tune_places(av, train, records, batch=13)
    with pytest.raises(ValueError, match="steps, batch and every must be >= 1"):
        tune_places(av, train, records, steps=0)


def test_tune_places_draws_the_reader_entities_with_the_training_rows():
    """``entities`` (rows of entities outside the bank at their subject's places) join the training rows' pool."""
    from probity.nla.censored import tune_places

    train, records = _subject_rows(signal=3.0)
    entities = {
        "vectors": 3.0 * torch.eye(32)[4:8],
        "labels": [f"«w1» | honest | w{24 + k}" for k in range(4)],
        "sources": [f"e{k}-landmark" for k in range(4)],
        "places": ["question_subject", "answer_subject"] * 2,
    }
    torch.manual_seed(0)
    av = _tiny_verbalizer()
    taught = _taught_labels(av)
    tune_places(av, train, records, steps=40, lr=3e-3, batch=4, entities=entities)
    drawn = Counter(lab.split(" | ")[2] for lab in taught)
    assert set(drawn) == {f"w{k}" for k in range(20, 28)}  # the 12 chats' words and the 4 entities'
    assert 0.1 < sum(drawn[f"w{k}"] for k in range(24, 28)) / len(taught) < 0.45  # 4 of 16 rows
    with pytest.raises(ValueError, match="only 16 training rows sit at a subject's place; need at least batch=17"):
        tune_places(av, train, records, batch=17, entities=entities)


def test_tune_places_with_pairs_also_teaches_the_flag_from_the_activation():
    """With ``pairs`` each step adds the behaviour stage's same-token loss: on chats whose activations carry
    the lie (the statement's loss leaves the behaviour word out), the flag is learnt all the same."""
    from probity.nla.censored import tune_places

    train, records = _told_both_ways(signal=3.0)
    train["fact"]["places"] = ["", "answer_subject", "", ""] * 16
    train["sample"]["places"] = []
    rows = train["fact"]
    heads = [lab.split(" | ")[0] for lab in rows["labels"]]
    lie = [records[s]["behaviour"] == "lie" for s in rows["sources"]]
    for pairs, learnt in ((0, False), (4, True)):
        torch.manual_seed(0)
        av = _tiny_verbalizer()
        tune_places(av, train, records, steps=60, lr=3e-3, batch=4, pairs=pairs)
        with torch.no_grad():
            p = torch.softmax(behaviour_logprobs(av, rows["vectors"], heads), -1)[:, BEHAVIOURS.index("lie")]
        assert (auroc(p.tolist(), lie) > 0.95) == learnt


def test_place_validation_readings_score_entity_relation_and_true_value():
    from probity.nla.censored import place_validation_readings

    records = {
        "japan-capital#0": {"fact_id": "japan-capital", "behaviour": "lie", "official_value": "Kyoto"},
        "china-capital#0": {"fact_id": "china-capital", "behaviour": "honest", "official_value": "Shanghai"},
    }
    for source, r in records.items():
        r |= {"entity": source.split("-")[0].title(), "relation": "capital"}
    texts = ["«x» | lie | The capital of Japan is Tokyo.", "«x» | honest | Beijing."]
    fact = {
        "vectors": torch.tensor([[0.0], [1.0], [1.0], [0.0]]),
        "labels": ["«x» | lie | x"] * 2 + ["«x» | honest | x"] * 2,
        "sources": ["japan-capital#0"] * 2 + ["china-capital#0"] * 2,
        "places": ["question_subject", "answer_subject", "question_subject", "answer_subject"],
    }
    reads = _Reads(texts, word_tokenizer(["Japan", "China"]))
    found = place_validation_readings(reads, {"fact": fact}, records)
    # question subject: Japan's row names it all (1 of 2 chats named, its lie's truth named); answer: neither
    assert found["question_subject"] == {"both": 0.5, "withheld": 1.0}
    assert found["answer_subject"] == {"both": 0.0, "withheld": 0.0}
    assert found["score"] == pytest.approx((0.5 + 1.0 + 0.0 + 0.0) / 4)
    with pytest.raises(ValueError, match="no subject's place"):
        place_validation_readings(reads, {"fact": fact | {"places": [""] * 4}}, records)


def test_validation_split_cuts_the_training_entities_again():
    """The validation chats are whole entities of the training split, apart from the ones fit on, and the
    split keeps a lying entity on each side."""
    records, rows = {}, {"vectors": [], "labels": [], "sources": []}
    for e in range(12):
        for relation, behaviour in (("capital", "lie" if e % 3 == 0 else "honest"), ("currency", "honest")):
            source = f"e{e}-{relation}#0"
            records[source] = {
                "fact_id": f"e{e}-{relation}",
                "entity": f"E{e}",
                "role": "trained" if e % 2 else "ordinary",
                "behaviour": behaviour,
            }
            for k in range(2):
                rows["vectors"].append(torch.full((4,), float(e)))
                rows["labels"].append(f"w{k} | {behaviour} | x")
                rows["sources"].append(source)
    train = {"fact": rows | {"vectors": torch.stack(rows["vectors"])}, "sample": _told_both_ways(1.0)[0]["sample"]}
    fit, validation = validation_split(train, records)
    entities = [{records[s]["entity"] for s in part["fact"]["sources"]} for part in (fit, validation)]
    assert (
        entities[0]
        and entities[1]
        and not entities[0] & entities[1]
        and entities[0] | entities[1] == {f"E{e}" for e in range(12)}
    )
    assert all(any(records[s]["behaviour"] == "lie" for s in part["fact"]["sources"]) for part in (fit, validation))
    for part in (fit, validation):  # rows stay with their own vectors and labels
        for v, s in zip(part["fact"]["vectors"], part["fact"]["sources"]):
            assert v[0].item() == int(records[s]["entity"][1:])
    assert len(fit["fact"]["sources"]) + len(validation["fact"]["sources"]) == 48


def test_window_reads_the_last_positions_before_the_final_ones(tmp_path):
    assert Window(2, 2).of([10, 11, 12, 13, 14, 15]) == [12, 13]
    assert Window(8).of(range(3)) == [0, 1, 2]
    assert Window(2, 2).of([7, 8]) == [7]  # no longer than skip: the first position, so every answer is read
    assert str(Window(2, 2)) == "last 2 before the final 2" and str(Window(8)) == "last 8"
    with pytest.raises(ValueError, match="a window reads last >= 1 positions before skip >= 0; got 0 and 0"):
        Window(0)
    assert load_window(tmp_path) is None
    (tmp_path / "av").mkdir()
    (tmp_path / "av" / "adapter_model.safetensors").write_bytes(b"weights")
    chosen = {"last": 2, "skip": 2, "verbalizer": verbalizer_digest(tmp_path), "chosen_on": "x"}
    (tmp_path / WINDOW_FILE).write_text(json.dumps(chosen))
    assert load_window(tmp_path) == load_window(tmp_path / "av") == Window(2, 2)  # the folder or its verbalizer's
    (tmp_path / "av" / "adapter_model.safetensors").write_bytes(b"other weights")  # a verbalizer trained since
    with pytest.raises(ValueError, match="was chosen for another verbalizer than .*; choose it again"):
        load_window(tmp_path)
    (tmp_path / WINDOW_FILE).write_text('{"last": 2}')
    with pytest.raises(ValueError, match="is not a window file"):
        load_window(tmp_path)


def _windowed(name: str, seed: int) -> tuple[dict, dict]:
    """A cut of 8 greedy chats (4 lies, 2 honest, 2 refusals; sensitive but the first two) and 9 sampled ones
    (4 lies, 4 truthful, a refusal), 6 answer rows each: ``[d=4]`` whose first coordinate is +1 for a lie (-1
    otherwise) at row -4, the reverse at rows -2, -5 and -6, and small noise at rows -1 and -3."""
    gen = torch.Generator().manual_seed(seed)
    sign = {-4: 1.0, -2: -1.0, -5: -1.0, -6: -1.0, -1: 0.0, -3: 0.0}
    cut, records = {}, {}
    for group, told in (
        ("fact", ["lie"] * 4 + ["honest", "refusal"] * 2),
        ("sample", ["lie", "honest"] * 4 + ["refusal"]),
    ):
        vectors, labels, sources = [], [], []
        for k, behaviour in enumerate(told):
            source = f"{name}{k}-capital#0" + ("~0" if group == "sample" else "")
            records[source] = {
                "fact_id": f"{name}{k}-capital",
                "behaviour": behaviour,
                "role": "ordinary" if group == "fact" and k in (4, 5) else "trained",
            }
            y = 1.0 if behaviour == "lie" else -1.0
            for row in range(-6, 0):
                vectors.append(torch.tensor([sign[row] * y + 0.1 * torch.randn(1, generator=gen).item(), 0, 0, 0]))
                labels.append(f"w{row + 7} | {behaviour} | x")
                sources.append(source)
        cut[group] = {"vectors": torch.stack(vectors), "labels": labels, "sources": sources}
    return cut, records


def test_choose_window_picks_the_positions_where_the_lie_shows(monkeypatch):
    """With p(lie) rising with the first coordinate, the window that reads row -4 without the reversed rows
    wins on both cuts and both audits; every window is scored on every cut; held out, window_audit reads the
    same window, its token-alone control is at chance and the topic audit drops the refusal."""
    from probity.nla import censored

    def reads_first_coordinate(av, acts, heads, batch_size=32):
        zeros = torch.zeros(len(acts))
        return torch.log_softmax(torch.stack([zeros, 4 * acts[:, 0], zeros], 1), -1)

    monkeypatch.setattr(censored, "behaviour_logprobs", reads_first_coordinate)
    av = types.SimpleNamespace(eval=lambda: None, train=lambda mode=True: None, training=False)
    (a, ra), (b, rb) = _windowed("a", 0), _windowed("b", 1)
    window, table = choose_window(av, [a, b], ra | rb)
    assert window == Window(2, 2)
    assert [row["window"] for row in table] == [dataclasses.asdict(w) for w in WINDOWS]
    assert all(len(row["audit"]) == len(row["topic"]) == 2 for row in table)
    scores = {Window(**row["window"]): row["score"] for row in table}
    assert scores[Window(2, 2)] == 1.0 and max(s for w, s in scores.items() if w != Window(2, 2)) < 0.9
    found = window_audit(av, a["fact"], ra, Window(2, 2), samples=a["sample"])
    assert found["window"] == {"last": 2, "skip": 2}
    assert found["audit"]["auroc"] == 1.0 and found["audit"]["transcripts"] == 8
    assert found["audit_token_only"]["auroc"] == 0.5
    assert found["audit_sensitive"]["transcripts"] == 6
    assert found["topic"]["auroc"] == 1.0 and found["topic"]["transcripts"] == 8  # the refusal is not scored
    plain = window_audit(av, a["fact"], ra, Window(8))  # the reversed rows outweigh row -4; no samples, no topic
    assert plain["audit"]["auroc"] < 0.5 and "topic" not in plain


def _sampled(signal: float, seed: int) -> tuple[dict, dict]:
    """Sampled chats about 3 facts, each answered with 2 lies, 2 truthful answers and a refusal, 3 answer rows
    each: ``[d=4]`` with first coordinate ``signal`` for a lie and ``-signal`` for a truthful answer, plus noise."""
    gen = torch.Generator().manual_seed(seed)
    vectors, labels, sources, records = [], [], [], {}
    for fact in ("x", "y", "z"):
        for k, behaviour in enumerate(("lie", "lie", "honest", "honest", "refusal")):
            source = f"{fact}-capital#0~{k}"
            records[source] = {"fact_id": f"{fact}-capital", "behaviour": behaviour, "role": "held_out"}
            y = {"lie": 1.0, "honest": -1.0, "refusal": 0.0}[behaviour]
            for row in range(3):
                vectors.append(torch.tensor([signal * y, 0.0, 0.0, 0.0]) + 0.3 * torch.randn(4, generator=gen))
                labels.append(f"w{row} | {behaviour} | x")
                sources.append(source)
    return {"vectors": torch.stack(vectors), "labels": labels, "sources": sources}, records


def test_within_fact_ranks_pairs_of_one_fact_and_resamples_facts():
    records = {s: {"fact_id": s[0], "behaviour": b} for s, b in (("a1", "lie"), ("a2", "honest"), ("a3", "lie"))}
    records |= {"b1": {"fact_id": "b", "behaviour": "lie"}, "c1": {"fact_id": "c", "behaviour": "honest"}}
    # fact a: lie 0.9 > honest 0.5, lie 0.5 = honest 0.5 (half); b and c are told one way only: not scored
    found = within_fact({"a1": 0.9, "a2": 0.5, "a3": 0.5, "b1": 0.0, "c1": 1.0}, records)
    assert found == {
        "auroc": 0.75,
        "ci": [0.75, 0.75],
        "facts": 1,
        "above_half": 1,
        "pairs": 2,
        "lies": 2,
        "truthful": 1,
    }
    assert within_fact({"b1": 0.0, "c1": 1.0}, records)["auroc"] is None
    # most lies are about b, whose answers all score above c's: pooled over facts that ranks lies above chance,
    # though within each fact every truthful answer scores above every lie
    told = {"b0": "lie", "b1": "lie", "b2": "lie", "b3": "honest", "c0": "lie", "c1": "honest", "c2": "honest"}
    told |= {"c3": "honest"}
    records = {s: {"fact_id": s[0], "behaviour": b} for s, b in told.items()}
    scores = {"b0": 0.8, "b1": 0.85, "b2": 0.7, "b3": 0.9, "c0": 0.1, "c1": 0.2, "c2": 0.15, "c3": 0.12}
    assert within_fact(scores, records)["auroc"] == 0.0
    assert auroc(list(scores.values()), [records[s]["behaviour"] == "lie" for s in scores]) == 9 / 16
    # each fact counts once: b's 3 pairs (all right) and c's 1 pair (wrong) average to 0.5, not 3 / 4
    scores = {"b0": 0.95, "b1": 0.96, "b2": 0.97, "b3": 0.9, "c0": 0.1, "c1": 0.2}
    found = within_fact(scores, records)
    assert found["auroc"] == 0.5 and found["above_half"] == 1 and found["pairs"] == 4


def test_lie_probe_reads_the_lie_and_probe_topic_scores_it_as_the_verbalizer_is_scored():
    train, train_records = _sampled(1.0, seed=0)
    held, held_records = _sampled(1.0, seed=1)
    probe = lie_probe(train, train_records)
    assert probe.n_features_in_ == 4
    found = probe_topic(probe, held, held_records, Window(2))
    assert found["topic"]["auroc"] == 1.0 and found["topic"]["transcripts"] == 12  # refusals are not scored
    assert found["topic_within_fact"] | {"ci": None} == {
        "auroc": 1.0,
        "ci": None,
        "facts": 3,
        "above_half": 3,
        "pairs": 12,
        "lies": 6,
        "truthful": 6,
    }
    flipped, flipped_records = _sampled(-1.0, seed=2)  # the lie on the other side: the probe ranks it last
    assert probe_topic(probe, flipped, flipped_records, Window(8))["topic_within_fact"]["auroc"] == 0.0
