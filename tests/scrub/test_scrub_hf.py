"""Scrubbing Hugging Face decoders: rotary positions, grouped-query attention, gated MLPs,
Qwen3's q/k norms (tiny random Qwen3 / Llama configs) and GPT-2, given plain or as a
TransformerBridge. The decomposition must reproduce the model's logits, and the fast
engine must equal the plain recursion (reference.py) on hypotheses that split heads sharing one K/V group."""

import pytest
import torch

from probity.models import tiny, to_bridge
from probity.scrub.hypothesis import Hypothesis, HypothesisError, Node
from probity.scrub.model import Decomposed
from probity.scrub.reference import reference_logits
from probity.scrub.run import IDENTITY, Scrubber
from probity.scrub.task import Task

ARCHS = {"qwen3": {}, "llama": dict(attention_bias=True, mlp_bias=True), "gpt2": {}}

# heads 1.0 and 1.1 share a K/V group (4 query heads, 2 K/V heads) but get different K/V inputs
GQA_SPLIT = Node(
    "out",
    ["output"],
    children=[
        Node("h10", ["1.0"], feature="first", children=[Node("k", ["0.1", "embed"], via="k", feature="parity")]),
        Node(
            "h11",
            ["1.1"],
            feature="parity",
            rest="first",
            children=[
                Node("kv", ["mlp0", "0.0"], via=["k", "v"], feature="none"),
                Node("q", ["embed"], via="q", positions=[0, 2], feature="first"),
            ],
        ),
        Node("mlp", ["mlp1"], feature="big"),
    ],
)


@pytest.fixture(scope="module", params=sorted(ARCHS))
def hf(request):
    model, tok = tiny(request.param, seed=1, **ARCHS[request.param])
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(4, 120, (24, 6), generator=g)
    targets = torch.roll(tokens, -1, 1)
    mask = torch.zeros_like(tokens, dtype=torch.bool)
    mask[:, :-1] = True
    feats = {"first": tokens[:, 0] % 3, "parity": tokens.sum(1) % 2, "big": (tokens[:, 1] >= 60).long()}
    return request.param, model, tok, Task("next", tokens, targets, mask, feats)


def test_decomposition_reproduces_the_logits(hf):
    arch, model, tok, task = hf
    with torch.no_grad():
        want = model(task.tokens).logits
    for wrapped in (model, to_bridge(model, tok)):
        d = Decomposed(wrapped)
        torch.testing.assert_close(d.run(task.tokens)[0], want, atol=1e-5, rtol=1e-5)
    names = [c.name for c in Decomposed(model).components]
    assert ("hook_pos_embed" in names) == (arch == "gpt2")  # rotary models have no position sender


def test_padding_mask_matches_the_hf_attention_mask(hf):
    _, model, _, task = hf
    real = torch.arange(6)[None] >= torch.tensor([0, 2, 3, 1])[:, None]  # left padding: rows of 6, 4, 3, 5 tokens
    tokens = task.tokens[:4]
    with torch.no_grad():
        want = model(tokens, attention_mask=real.long()).logits
    d = Decomposed(model)
    got = d.run(tokens, key_mask=real)[0]
    torch.testing.assert_close(got[real], want[real], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(d.run(tokens)[0][real], want[real], atol=1e-3)  # the padded keys were masked


def test_fast_path_equals_reference_with_shared_kv_heads(hf):
    _, model, _, task = hf
    d = Decomposed(model)
    s = Scrubber(d, task, seed=4, batch_size=5)
    hyp = Hypothesis("gqa", GQA_SPLIT)
    fast = torch.cat([lg for _, lg in s.logits(hyp)])
    examples = torch.tensor([0, 9, 23])
    torch.testing.assert_close(
        fast[examples], reference_logits(d, hyp, task, seed=4, examples=examples), atol=1e-5, rtol=1e-5
    )
    assert torch.equal(
        s.losses(IDENTITY)[0], task.per_example_loss(d.run(task.tokens)[0], torch.arange(len(task.tokens)))
    )


def test_rotary_models_have_no_position_site():
    model, _ = tiny("qwen3")
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(4, 120, (8, 4), generator=g)
    task = Task("t", tokens, tokens, torch.ones_like(tokens, dtype=torch.bool), {"f": tokens[:, 0] % 2})
    hyp = Hypothesis("p", Node("out", ["output"], children=[Node("x", ["pos"], feature="f")]))
    with pytest.raises((KeyError, HypothesisError), match="pos"):
        Scrubber(model, task).resolve(hyp)


def test_real_smollm2_decomposes_to_its_logits(smollm2):
    from probity.scrub.tour import decomposition_check

    check = decomposition_check(*smollm2)
    assert check.n_components == 1 + 30 * (9 + 1)  # embeddings; 30 layers of 9 heads and an MLP (rotary: no pos)
    assert check.max_abs_logit_diff < 1e-3 * check.max_abs_logit
