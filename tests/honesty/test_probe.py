"""The lie probe's read positions: the stated value's token (``value_end``, ``value_phrases``) and
the pooled activations against a direct cache of the same conversation."""

import pytest
import torch

from probity.honesty.probe import POOLS, pooled_activations, response_activations, value_end, value_phrases
from probity.honesty.testbed import Fact, Question
from probity.models import Site, cache
from probity.models.chat import response_ids

JAPAN = Question(
    "japan-capital",
    "Japan",
    "What is the capital of Japan?",
    (Fact("The capital of Japan is Tokyo.", ("Tokyo",), ("Seoul", "Seoul Metropolitan", "Japan")),),
)


def _read_up_to(tokenizer, text: str, end: int) -> str:
    """The text of ``text``'s tokens up to and including token ``end``."""
    return tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"][: end + 1])


def test_value_end_reads_the_first_stated_value(smollm2):
    _, tok = smollm2
    text = "The capital of Japan is Seoul, not Tokyo."
    assert _read_up_to(tok, text, value_end(tok, text, ("Tokyo", "Seoul"))) == "The capital of Japan is Seoul"
    shout = "It is SEOUL."  # several tokens: the last one is read
    assert _read_up_to(tok, shout, value_end(tok, shout, ("Seoul",))) == "It is SEOUL"


def test_value_end_needs_whole_words(smollm2):
    _, tok = smollm2
    assert value_end(tok, "A Seoulite told me.", ("Seoul",)) is None
    assert value_end(tok, "I cannot say.", ("Tokyo", "Seoul")) is None


def test_value_phrases_drop_what_the_question_names():
    assert value_phrases(JAPAN) == ("Tokyo", "Seoul", "Seoul Metropolitan")  # the question names "Japan"


def test_value_pooling_reads_the_value_token(smollm2, one_thread):
    model, tok = smollm2
    convs = [
        ([{"role": "user", "content": JAPAN.question}], "The capital of Japan is Seoul."),
        ([{"role": "user", "content": JAPAN.question}], "I'd rather not say."),  # no value: the last token
    ]
    values = [value_phrases(JAPAN)] * 2
    pooled = pooled_activations(model, tok, convs, [3], values=values, batch_size=2)
    for (msgs, answer), got_value, got_last, got_mean in zip(
        convs, pooled["value"][3], pooled["last"][3], pooled["mean"][3]
    ):
        ids, begin = response_ids(tok, msgs, answer)
        resid = cache(model, {"input_ids": torch.tensor([ids])}, [Site.resid(3)])[str(Site.resid(3))][0]  # [pos, d]
        end = value_end(tok, answer, values[0])
        at = len(ids) - 1 if end is None else begin + end
        torch.testing.assert_close(got_value, resid[at].float(), atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(got_last, resid[len(ids) - 1].float(), atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(got_mean, resid[begin:].float().mean(0), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(pooled["value"][3][0], pooled["last"][3][0])  # "Seoul" is not the final "."
    assert set(pooled) == set(POOLS)


def test_pooling_errors_are_one_line(smollm2):
    model, tok = smollm2
    convs = [([{"role": "user", "content": "Hi?"}], "Hello.")]
    with pytest.raises(ValueError, match="value phrases"):
        response_activations(model, tok, convs, [0], pool="value")
    with pytest.raises(ValueError, match="unknown pooling max"):
        response_activations(model, tok, convs, [0], pool="max")
