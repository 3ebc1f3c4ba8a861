"""The posterior-collapse diagnosis on a tiny random Llama verbalizer: blind when every activation
is the same, sighted after a short SFT on a task where the label is a function of the activation."""

import json
import math

import pytest
import torch

from probity.models import tiny
from probity.nla import Verbalizer
from probity.nla.diagnose import (
    _derangement,
    diagnose,
    distinct_share,
    first_token_kl,
    geometry,
    nll_gap,
    retrieval,
)

pytestmark = pytest.mark.usefixtures("one_thread")

LABELS = ["w1", "w2", "w3", "w4"]


def verbalizer() -> Verbalizer:
    model, tok = tiny("llama")
    return Verbalizer.create(model, tok, 1, placeholder="w99", av_prompt="w10 w11 {placeholder} w12", max_new_tokens=4)


def sft(av: Verbalizer, acts: torch.Tensor, seqs: list[list[int]], steps: int = 60) -> Verbalizer:
    """Full-batch AdamW on the teacher-forced NLL of ``seqs`` given ``acts``; returns ``av`` in eval mode."""
    optimiser = torch.optim.AdamW(av.parameters(), lr=1e-2)
    av.train()
    for _ in range(steps):
        logp, mask = av.token_logprobs(acts, seqs)
        loss = -logp.sum() / mask.sum()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return av.eval()


def test_geometry_of_a_hand_made_tensor():
    # a shared offset of 3 on coordinate 0 plus +-1 on coordinate 1 or 2: mean (3, 0, 0, 0)
    acts = torch.tensor([[3.0, 1, 0, 0], [3, -1, 0, 0], [3, 0, 1, 0], [3, 0, -1, 0]])
    found = geometry(acts, torch.full((5, 4), 0.5))  # embedding rows of norm 1
    assert found["median_norm"] == pytest.approx(math.sqrt(10))
    assert found["mean_norm_ratio"] == pytest.approx(3 / math.sqrt(10))
    # raw cosines 0.8 (twice) and 0.9 (four times); centred: -1 (twice) and 0
    assert found["mean_cosine"] == pytest.approx((2 * 0.8 + 4 * 0.9) / 6)
    assert found["mean_cosine_centred"] == pytest.approx(-1 / 3)
    top = found["top_mean_dims"][0]
    assert top["index"] == 0 and top["value"] == pytest.approx(3) and top["share"] == pytest.approx(1)
    assert len(found["top_mean_dims"]) == 4  # d < 5: every coordinate
    assert found["embedding_median_norm"] == pytest.approx(1) and found["sqrt_d_over_embedding_norm"] == 2
    # the pairwise cosines of a subsample: still the mean over distinct pairs
    many = torch.randn(600, 4) + torch.tensor([10.0, 0, 0, 0])
    assert 0.9 < geometry(many, torch.ones(3, 4), rows=50)["mean_cosine"] < 1


def test_identical_activations_are_indistinguishable():
    """An AV that cannot tell its inputs apart: no NLL gap, no first-token KL, retrieval at chance."""
    av = verbalizer()
    acts = torch.randn(1, 32).expand(6, -1).clone()
    seqs = av.encode(["w1 w2", "w3", "w4 w5 w6 w7 w8", "w1", "w2 w2", "w9"])
    gap = nll_gap(av, acts, seqs, first=2)
    assert gap["gap_shuffled"] == 0.0 and gap["first_gap_shuffled"] == 0.0
    assert gap["gap_mean"] == pytest.approx(0, abs=1e-6)
    assert gap["tokens"] == 3 + 2 + 6 + 2 + 3 + 2  # each sequence ends with the end token
    assert gap["own"] > 0 and gap["first_own"] > 0
    kl = first_token_kl(av, acts, pairs=16)
    assert kl["kl"] == pytest.approx(0, abs=1e-6) and kl["reference_kl"] > 0
    found = retrieval(av, acts, seqs, candidates=4)
    assert found["top1"] == pytest.approx(found["chance_top1"]) == pytest.approx(0.25)
    assert found["mrr"] == pytest.approx(found["chance_mrr"]) == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 4) / 4)


def test_after_sft_the_activation_is_read():
    torch.manual_seed(0)
    av = verbalizer()
    acts = torch.randn(len(LABELS), 32)  # each activation has its own one-token label
    seqs = av.encode(LABELS)
    before = nll_gap(av, acts, seqs)
    assert abs(before["gap_shuffled"]) < 0.05  # a random AV barely reads the slot
    found = diagnose(sft(av, acts, seqs), acts, seqs, pairs=16, candidates=4)
    assert found.nll_gap["gap_shuffled"] > 0.5 and found.nll_gap["first_gap_shuffled"] > 0.5
    assert found.nll_gap["gap_mean"] > 0.5
    assert found.retrieval["top1"] > found.retrieval["chance_top1"]
    assert found.first_token_kl["kl"] > 0.5
    assert found.descriptions == LABELS and found.distinct_share == 1.0
    summary = found.summary()
    assert json.loads(json.dumps(summary, allow_nan=False)) == summary
    assert "descriptions" not in summary


def test_distinct_share_and_derangement():
    assert distinct_share(["a", "a", "b", "a"]) == 0.5 and distinct_share(["x"] * 5) == 0.2
    for n in range(2, 10):
        perm = _derangement(n, seed=n)
        assert sorted(perm.tolist()) == list(range(n)) and not (perm == torch.arange(n)).any()


def test_bad_input_fails_fast():
    av = verbalizer()
    acts = torch.randn(4, 32)
    seqs = av.encode(LABELS)
    with pytest.raises(ValueError, match="3 sequences for 4 activations"):
        nll_gap(av, acts, seqs[:3])
    with pytest.raises(ValueError, match="at least 2 activations"):
        first_token_kl(av, acts[:1])
    with pytest.raises(ValueError, match=r"must be \[n, 32\]"):
        retrieval(av, torch.randn(4, 31), seqs)
    with pytest.raises(ValueError, match="NaN or inf"):
        nll_gap(av, torch.full((4, 32), float("nan")), seqs)
    with pytest.raises(ValueError, match="sequence 1 is empty"):
        diagnose(av, acts, [seqs[0], [], *seqs[2:]])
    with pytest.raises(ValueError, match=r"embeddings must be \[V, 32\]"):
        geometry(acts, torch.randn(10, 16))
    with pytest.raises(ValueError, match="first must be >= 1"):
        nll_gap(av, acts, seqs, first=0)
    with pytest.raises(ValueError, match="pairs must be >= 1"):
        first_token_kl(av, acts, pairs=0)
    with pytest.raises(ValueError, match="candidates >= 2"):
        retrieval(av, acts, seqs, candidates=1)
    with pytest.raises(ValueError, match="at least one description"):
        distinct_share([])


def test_common_prefix_and_kl_after_it():
    from probity.nla.diagnose import common_prefix

    assert common_prefix([[1, 2, 3], [1, 2, 4, 5], [1, 2, 3]]) == [1, 2]
    assert common_prefix([[7, 8], [7, 8]]) == [7]  # never the whole of the shortest
    assert common_prefix([[1], [2]]) == []
