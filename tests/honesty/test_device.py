"""`--device`: ``probity.models.load(..., device="auto")`` (``device_map="auto"`` for HF folders and hub
names, cuda-or-cpu for the rest), the honesty protocol on the model's input device, and a work folder
that resumes across devices. The CUDA cases run only where a GPU is."""

import pytest
import torch

from probity.honesty import RunConfig
from probity.honesty.protocol import _check_work_settings, _claim_work_dir, run
from probity.honesty.sample import generate
from probity.honesty.testbed import builtin_testbed
from probity.models import input_device, load

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
FAST = dict(techniques="chat", detectors="probe", samples=1, limit=3, max_new_tokens=8)
AUTO = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def test_auto_puts_a_tiny_model_on_the_gpu_if_there_is_one():
    model, tokenizer = load("tiny-qwen3", device="auto")
    assert input_device(model).type == AUTO.type
    assert not hasattr(model, "hf_device_map")  # not an HF checkpoint: moved, not dispatched
    out = generate(model, tokenizer, [[5, 6, 7]], temperature=0, max_new_tokens=3)
    assert len(out) == 1 and len(out[0]) == 1


def test_auto_loads_an_hf_folder_with_device_map(tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    model, tokenizer = load("tiny-llama")
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    asked = []
    original = AutoModelForCausalLM.from_pretrained
    monkeypatch.setattr(
        AutoModelForCausalLM,
        "from_pretrained",
        lambda *a, **kw: asked.append(kw.get("device_map")) or original(*a, **kw),
    )
    load(str(tmp_path))
    dispatched, _ = load(str(tmp_path), device="auto")
    # accelerate places it (hf_device_map is set only when it spans several devices, e.g. GPUs and the CPU)
    assert asked == [None, "auto"]
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        want = model(ids).logits
        got = dispatched(ids.to(input_device(dispatched))).logits.cpu()
    torch.testing.assert_close(got, want)
    assert (
        generate(dispatched, tokenizer, [[5, 6], [7]], temperature=0, max_new_tokens=2)[1][0]
        == (generate(model, tokenizer, [[5, 6], [7]], temperature=0, max_new_tokens=2)[1][0])
    )


def test_device_is_checked():
    with pytest.raises(ValueError, match="device must be cpu, cuda, cuda:N or auto, got 'gpu'"):
        RunConfig(model="censored_tiny", device="gpu")
    for good in ("cpu", "cuda", "cuda:1", "auto"):
        assert RunConfig(model="censored_tiny", device=good).device == good


def test_a_work_folder_resumes_on_another_device(tmp_path):
    _claim_work_dir(tmp_path, RunConfig(model="censored_tiny", device="cpu", work_dir=str(tmp_path)))
    _check_work_settings(tmp_path, RunConfig(model="censored_tiny", device="auto", work_dir=str(tmp_path)))
    with pytest.raises(ValueError, match="other settings"):
        _check_work_settings(tmp_path, RunConfig(model="censored_tiny", samples=2, work_dir=str(tmp_path)))


@pytest.mark.parametrize("device", ["auto", pytest.param("cuda", marks=CUDA)])
def test_protocol_runs_on_the_device(device):
    result = run(RunConfig(model="censored_tiny", device=device, **FAST))
    assert result.config["device"] == device
    assert [t.technique for t in result.elicitation] == ["chat"]
    assert result.probe is not None


def test_protocol_runs_on_a_dispatched_hf_folder(tmp_path):
    from probity.organisms import censored_tiny

    model, tokenizer = censored_tiny.load()
    model.save_pretrained(tmp_path / "hf")  # a plain HF checkpoint (no organism.json): loaded with device_map
    tokenizer.save_pretrained(tmp_path / "hf")
    cfg = RunConfig(model=str(tmp_path / "hf"), testbed=str(builtin_testbed("censored_tiny")), device="auto", **FAST)
    result = run(cfg)
    assert [t.technique for t in result.elicitation] == ["chat"] and result.probe is not None
