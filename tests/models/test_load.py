import pytest
import torch

from probity import models


def test_smollm2_knows_paris(smollm2):
    model, tok = smollm2
    assert type(model).__name__ == "LlamaForCausalLM"
    assert tok.chat_template, "the instruct model must carry its chat template"
    ids = tok("The capital of France is", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=6, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids.input_ids.shape[1] :])


@pytest.mark.parametrize("arch", ["qwen3", "llama", "gpt2"])
def test_tiny_models_build_offline_and_run(arch):
    model, tok = models.tiny(arch, seed=1)
    ids = tok("w1 w2 w3 w4", return_tensors="pt").input_ids
    logits = models.run(model, ids)
    assert logits.shape == (1, ids.shape[1], model.config.vocab_size)
    again, _ = models.tiny(arch, seed=1)
    torch.testing.assert_close(models.run(again, ids), logits)  # seeded: reproducible


def test_load_by_tiny_name():
    model, _ = models.load("tiny-llama")
    assert model.config.model_type == "llama" and not model.training


def test_load_local_checkpoint_roundtrip(tmp_path):
    model, tok = models.tiny("qwen3")
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    loaded, _ = models.load(str(tmp_path))
    ids = torch.tensor([[5, 6, 7]])
    torch.testing.assert_close(models.run(loaded, ids), models.run(model, ids))


def test_load_missing_path_is_one_line(tmp_path):
    with pytest.raises(FileNotFoundError, match="no HF checkpoint there") as err:
        models.load(str(tmp_path / "nowhere"))
    assert "\n" not in str(err.value)


def test_unknown_tiny_arch():
    with pytest.raises(ValueError, match="unknown architecture 'bert'"):
        models.tiny("bert")


def test_unknown_organism():
    from probity import organisms

    with pytest.raises(ValueError, match="unknown organism 'nope'"):
        organisms.module("nope")
