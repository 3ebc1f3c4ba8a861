"""Scrubbing a model that is not on the CPU, without a GPU: the ``meta`` device stands in for one.

A meta tensor has a shape and a device but no data, and an op mixing it with a CPU tensor raises
("Tensor on device meta is not on the expected device cpu!"), so a forward that runs on meta with CPU
inputs (tokens, masks, features and row indices, as tasks build them) has put everything it creates
on the model's device. Meta tensors cannot be copied back to the CPU: the paths that end in a CPU
result (``Scrubber.losses``, ``find_heads``) are run up to that copy. A model split across devices
(``device_map="auto"``) cannot be emulated here: data cannot leave the meta device."""

import copy

import pytest
import torch

from probity.models import tiny
from probity.scrub.heads import find_heads
from probity.scrub.hypothesis import Hypothesis, Node
from probity.scrub.model import Decomposed
from probity.scrub.reference import reference_logits
from probity.scrub.run import Scrubber
from probity.scrub.task import Task

META = torch.device("meta")
HF = {"llama": dict(attention_bias=True, mlp_bias=True), "qwen3": {}, "gpt2": {}}

# every kind of term the engine evaluates: a per-position leaf, a sender on some positions only, a phi fit
HYP = Hypothesis(
    "devices",
    Node(
        "out",
        ["output"],
        children=[
            Node(
                "h10",
                ["1.0"],
                feature="first",
                rest="parity",
                children=[
                    Node("q", ["0.1", "embed"], via="q", feature="tok"),
                    Node("kv", ["mlp0"], via=["k", "v"], feature="none", positions=[1, 3]),
                ],
            ),
            Node("fit", ["0.0"], feature="parity", phi="first"),
        ],
    ),
)


def meta_model(arch: str, native: Decomposed) -> Decomposed:
    """A tiny model of ``arch`` on meta: ``native`` (a TransformerLens native model) or a tiny HF config."""
    if arch == "native":
        return Decomposed(copy.deepcopy(native.native).to(META))
    return Decomposed(tiny(arch, seed=1, **HF[arch])[0].to(META))


def padded(task: Task) -> Task:
    """``task`` with rows of random lengths 2-6, the rest masked out of attention (a CPU ``key_mask``)."""
    lengths = torch.randint(2, 7, (len(task.tokens), 1), generator=torch.Generator().manual_seed(1))
    mask = torch.arange(task.n_ctx)[None] < lengths
    return Task(task.name, task.tokens, task.targets, task.loss_mask, task.features, task.subsets, "ce", mask)


@pytest.mark.parametrize("arch", ["native", *sorted(HF)])
def test_forward_runs_on_the_models_device(arch, tiny_model, tiny_task):
    d = meta_model(arch, tiny_model)
    assert d.device == META
    tokens, key_mask = tiny_task.tokens[:3], padded(tiny_task).key_mask[:3]  # on the CPU
    patterns: dict[int, torch.Tensor] = {}
    streams = {d.output: None}
    logits, outs = d.run(tokens, key_mask=key_mask, patterns=patterns, streams=streams)
    assert logits.device == META and logits.shape == (3, 6, d.d_vocab)
    assert {v.device for v in [*outs.values(), *patterns.values(), streams[d.output]]} == {META}
    assert patterns[1].shape == (3, d.n_heads, 6, 6)


@pytest.mark.parametrize("arch", ["native", "llama", "gpt2"])
@pytest.mark.parametrize("cache", [True, False], ids=["cached", "uncached"])
def test_engine_runs_on_the_models_device(arch, cache, tiny_model, tiny_task):
    d, task = meta_model(arch, tiny_model), padded(tiny_task)
    s = Scrubber(d, task, seed=2, batch_size=24, cache=cache)
    at = task.loss_positions
    chunks = list(s.logits(HYP, positions=at))
    assert [len(rows) for rows, _ in chunks] == [24, 24, 16]
    for rows, logits in chunks:
        assert logits.device == META and logits.shape == (len(rows), len(at), d.d_vocab)
        assert task.per_example_loss(logits, rows, at).device == META
        assert task.per_example_kl(logits, logits, rows, at).device == META
    plain = reference_logits(d, HYP, task, seed=2, examples=torch.tensor([0, 5]))
    assert plain.device == META and plain.shape == (2, 6, d.d_vocab)
    # what comes back to the user is reduced on the CPU: everything up to that copy ran on the device
    with pytest.raises(NotImplementedError, match="Cannot copy out of meta"):
        s.losses(HYP)
    with pytest.raises(NotImplementedError, match="Cannot copy out of meta"):
        find_heads(d, task, "previous_token", queries="all")


def test_a_cpu_model_copies_nothing(tiny_model, tiny_task, monkeypatch):
    task = padded(tiny_task)
    to = torch.Tensor.to
    moves = set()  # (from, to) of every Tensor.to

    def spy(x, *args, **kwargs):
        out = to(x, *args, **kwargs)
        moves.add((x.device.type, out.device.type))
        return out

    monkeypatch.setattr(torch.Tensor, "to", spy)
    assert tiny_model.device == torch.device("cpu")
    loss, kl, kept = Scrubber(tiny_model, task, seed=2, batch_size=24).losses(HYP, keep=True)
    assert loss.device == kl.device == kept[0].device == torch.device("cpu")
    find_heads(tiny_model, task, "previous_token", queries="all")
    reference_logits(tiny_model, HYP, task, seed=2, examples=torch.tensor([0, 5]))
    assert moves == {("cpu", "cpu")}  # inputs were handed to the model's device, and nothing left the CPU
