"""find_heads: target keys on hand-made rows, the attention patterns it reads against HF's own, and the
heads it finds in the induction organism (previous-token heads 0.0-0.3, induction heads 1.0-1.3) and in
SmolLM2-135M (induction 18.6, previous-token 16.0 on top)."""

import pytest
import torch

from probity.models import Site, tiny
from probity.scrub import find_heads, setup
from probity.scrub.heads import target_keys
from probity.scrub.model import Decomposed
from probity.scrub.task import Task


def test_target_keys_on_hand_made_rows():
    tokens = torch.tensor([[7, 5, 6, 7, 5, 6], [1, 2, 3, 4, 5, 6], [9, 9, 9, 3, 9, 2]])
    assert target_keys(tokens, "previous_token")[0].tolist() == [-1, 0, 1, 2, 3, 4]
    ind = target_keys(tokens, "induction")
    assert ind[0].tolist() == [-1, -1, -1, 1, 2, 3]  # the second 7 attends to what followed the first: 5
    assert ind[1].tolist() == [-1] * 6  # no repeat: nothing scored
    assert ind[2].tolist() == [-1, -1, 1, -1, 3, -1]  # the latest earlier occurrence whose successor is not q
    padded = torch.tensor([[False, True, True, True, True, True]])  # left padding: key 0 may not be attended to
    assert target_keys(tokens[:1], "previous_token", padded).tolist() == [[-1, -1, 1, 2, 3, 4]]
    assert target_keys(tokens, "duplicate_token")[2].tolist() == [-1, 0, 1, -1, 2, -1]  # the latest earlier copy
    targets = torch.tensor([[0, 0, 0, 0, 0, 5], [0, 0, 0, 0, 0, 9], [0, 0, 0, 0, 0, 2]])  # predict at the end
    assert target_keys(tokens, "copy", targets=targets)[:, 5].tolist() == [4, -1, 5]  # may point at itself
    with pytest.raises(ValueError, match="needs targets"):
        target_keys(tokens, "copy")
    with pytest.raises(ValueError, match="kind"):
        target_keys(tokens, "name_mover")


def test_patterns_equal_hf_eager_attentions():
    model, _ = tiny("llama", seed=1, num_hidden_layers=3, attn_implementation="eager")
    tokens = torch.randint(4, 120, (3, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = model(tokens, output_attentions=True).attentions
    patterns: dict[int, torch.Tensor] = {}
    Decomposed(model).run(tokens, keep=set(), patterns=patterns)
    for layer, attn in enumerate(want):
        torch.testing.assert_close(patterns[layer], attn, atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def organism():
    bridge, task, _ = setup("induction", 64, 0)
    return bridge, task


def test_finds_the_induction_organisms_heads(organism, one_thread):
    bridge, task = organism
    prev = find_heads(bridge, task, "previous_token", threshold=0.1)
    assert prev.heads == [Site("blocks.0.attn.hook_result", head=h) for h in (1, 3, 2, 0)]  # best first
    assert prev.score("0.1") == prev.head_scores[0] and max(prev.scores[1]) < 0.05
    ind = find_heads(bridge, task, "induction", threshold=0.3, top_k=3)
    assert {(s.head, s.hook) for s in ind.heads} <= {(h, "blocks.1.attn.hook_result") for h in range(4)}
    assert len(ind.heads) == 3 and min(ind.head_scores) > 0.3 > max(ind.scores[0])
    assert ind.chance < 0.05 and ind.queries > 0
    assert "induction heads" in ind.headline()[0].name
    with pytest.raises(ValueError, match="kind"):
        find_heads(bridge, task, "name_mover")  # not a rule: give keys=


def test_no_target_is_an_error():
    model, _ = tiny("llama", seed=1)
    tokens = torch.arange(4, 10).repeat(2, 1)  # no token repeats within a row
    task = Task("flat", tokens, tokens, torch.ones_like(tokens, dtype=torch.bool), {})
    with pytest.raises(ValueError, match="induction target"):
        find_heads(model, task)


def test_finds_smollm2s_heads(smollm2, one_thread):
    """8 rows of <|endoftext|> + A + A, A 10 distinct word tokens; loss on the repeat's predictable positions."""
    model, _ = smollm2
    g = torch.Generator().manual_seed(0)
    first = torch.stack([torch.randperm(20000, generator=g)[:10] + 2000 for _ in range(8)])  # [8, 10]
    tokens = torch.cat([torch.zeros(8, 1, dtype=torch.long), first, first], 1)  # [8, 21]
    mask = torch.zeros_like(tokens, dtype=torch.bool)
    mask[:, 11:20] = True
    task = Task("repeat", tokens, torch.roll(tokens, -1, 1), mask, {})
    d = Decomposed(model)
    ind = find_heads(d, task, "induction", threshold=0.5, rows=8, batch_size=8)
    assert ind.ranked()[0][0] == Site("blocks.18.attn.hook_result", head=6)
    prev = find_heads(d, task, "previous_token", threshold=0.5, rows=8, batch_size=8, queries="all")
    assert prev.ranked()[0][0] == Site("blocks.16.attn.hook_result", head=0)
