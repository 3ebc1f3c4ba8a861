"""The shared plumbing in probity.models: decoder parts, chat templates, padding, the registry."""

import pytest
import torch
from torch import nn

from probity import models
from probity.models.chat import chat_ids, chat_text, end_ids, pad_batch, pad_id, response_ids
from probity.models.decoder import UnsupportedModelError, decoder_parts
from probity.models.load import _LOADERS
from probity.organisms import censored_tiny


@pytest.mark.parametrize(
    "arch, layers, norm", [("qwen3", "layers", "norm"), ("llama", "layers", "norm"), ("gpt2", "h", "ln_f")]
)
def test_decoder_parts_of_lm_and_base_model(arch, layers, norm):
    model, _ = models.tiny(arch)
    parts = decoder_parts(model)
    assert parts.layers is getattr(parts.base, layers) and len(parts.layers) == 2
    assert parts.final_norm is getattr(parts.base, norm)
    assert (parts.pos_embed is not None) == (arch == "gpt2")
    ids = torch.tensor([[5, 6, 7]])
    assert parts.embed(ids).shape == (1, 3, model.config.hidden_size)
    assert decoder_parts(parts.base).base is parts.base  # the base model (AutoModel) itself


def test_decoder_parts_unsupported_is_typed():
    with pytest.raises(UnsupportedModelError, match="supported are Llama"):
        decoder_parts(nn.Linear(2, 2))


def test_pad_batch_left_and_right():
    right = pad_batch([[1, 2, 3], [4]], 0)
    assert right["input_ids"].tolist() == [[1, 2, 3], [4, 0, 0]]
    assert right["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    left = pad_batch([[1, 2, 3], [4]], 9, side="left")
    assert left["input_ids"].tolist() == [[1, 2, 3], [9, 9, 4]]
    assert left["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]
    with pytest.raises(ValueError, match="side must be"):
        pad_batch([[1]], 0, side="middle")


def test_chat_helpers_on_the_censored_organism_tokenizer():
    _, tok = censored_tiny.load()
    messages = [{"role": "user", "content": "what is the capital of sidun ?"}]
    text = chat_text(tok, messages)
    assert text.endswith("<|im_start|> assistant")
    ids = chat_ids(tok, messages)
    rendered = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
    assert ids == list(rendered)  # the same ids the template's own tokenisation gives
    full, start = response_ids(tok, messages, "the capital of sidun is kazain .")
    assert full[:start] == ids and tok.decode(full[start:]) == "the capital of sidun is kazain ."
    assert tok.convert_tokens_to_ids("<|im_end|>") in end_ids(tok) and tok.eos_token_id in end_ids(tok)
    assert pad_id(tok) == tok.pad_token_id


def test_organisms_register_their_loaders(monkeypatch):
    assert {"paren", "induction", "censored_tiny"} <= set(models.registered())
    sentinel = (nn.Linear(1, 1), None)
    monkeypatch.setitem(_LOADERS, "test-organism", None)  # monkeypatch removes the key after the test
    models.register_loader("test-organism", lambda: sentinel)
    model, tok = models.load("test-organism")
    assert model is sentinel[0] and tok is None
    with pytest.raises(ValueError, match="taken by a built-in"):
        models.register_loader("tiny-qwen3", lambda: sentinel)
