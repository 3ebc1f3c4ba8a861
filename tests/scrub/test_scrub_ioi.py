"""IOI on a real language model (issue 15, item 2): the prompts line up, find_heads' new kinds and
explicit keys, the roles on SmolLM2-135M, the hypotheses, a short study, and refine's sender filter.
``bench/scrub.py --smollm2-ioi`` measures the study on 128 prompts."""

import pytest
import torch

from probity.models import Site
from probity.scrub import RefineConfig, find_heads, find_ioi_heads, ioi_lm, ioi_task, refine, setup
from probity.scrub.hypothesis import HypothesisError, validate
from probity.scrub.ioi import FLOORS, ioi_study
from probity.scrub.model import Decomposed
from probity.scrub.task import IOI_POSITIONS


@pytest.fixture(scope="module")
def task(smollm2):
    return ioi_task(smollm2[1], n=24, seed=0)


def test_ioi_prompts_line_up(smollm2, task):
    _, tokenizer = smollm2
    io, s, order = (task.features[k] for k in ("io", "s", "order"))
    rows = torch.arange(len(io))
    assert task.tokens.shape == (24, 14) and order.tolist() == [0, 1] * 12
    assert (task.tokens[rows, torch.where(order == 0, 1, 3)] == io).all()  # ABBA: IO first
    assert (task.tokens[rows, torch.where(order == 0, 3, 1)] == s).all()
    assert (task.tokens[:, IOI_POSITIONS["S2"]] == s).all() and (io != s).all()
    assert (task.targets[:, IOI_POSITIONS["END"]] == io).all() and task.loss_mask.sum() == 24
    assert tokenizer.decode(task.tokens[0]).endswith(" to") and task.subsets["ABBA"].sum() == 12
    assert torch.equal(ioi_task(tokenizer, n=24, seed=0).tokens, task.tokens)
    assert not torch.equal(ioi_task(tokenizer, n=24, seed=1).tokens, task.tokens)


@pytest.mark.parametrize(
    "kwargs, match",
    [(dict(n=0), "n >= 1"), (dict(names=("Mary", "Mary")), "2 distinct"), (dict(names=("Mary", "Xzqwvbrt")), "tokens")],
)
def test_bad_ioi_input_is_one_line(smollm2, kwargs, match):
    with pytest.raises(ValueError, match=match) as err:
        ioi_task(smollm2[1], **kwargs)
    assert "\n" not in str(err.value)


def test_explicit_keys_and_query_masks(smollm2, task, one_thread):
    d = Decomposed(smollm2[0])
    n, p = task.tokens.shape
    keys = torch.full((n, p), -1)
    keys[:, IOI_POSITIONS["END"]] = IOI_POSITIONS["S2"]
    si = find_heads(d, task, "end_to_s2", threshold=0.0, rows=8, batch_size=8, keys=keys)
    assert si.kind == "end_to_s2" and si.queries == 8 and len(si.heads) == d.n_layers * d.n_heads
    with pytest.raises(ValueError, match="keys must be"):
        find_heads(d, task, "end_to_s2", keys=keys[:, :5])
    with pytest.raises(ValueError, match="positions 0..13"):
        find_heads(d, task, "end_to_s2", keys=keys + 14)
    with pytest.raises(ValueError, match="queries mask"):
        find_heads(d, task, "duplicate_token", queries=torch.ones(n, p))


def test_smollm2s_ioi_roles(smollm2, task, one_thread):
    """Name movers in layers 21-24 (END -> IO), S-inhibition 20.0 (END -> S2), duplicate-token heads in the
    lower half (S2 -> S1): Wang et al.'s layering, on 24 prompts."""
    roles = find_ioi_heads(smollm2[0], task, threshold=0.5, rows=24, batch_size=12)
    layers = {role: [int(h.hook.split(".")[1]) for h in found.heads] for role, found in roles.items()}
    assert roles["name_mover"].heads[0] in {
        Site("blocks.24.attn.hook_result", head=4),
        Site("blocks.23.attn.hook_result", head=0),
    }
    assert all(21 <= layer <= 24 for layer in layers["name_mover"]) and len(layers["name_mover"]) >= 3
    assert roles["s_inhibition"].heads[0] == Site("blocks.20.attn.hook_result", head=0)
    assert layers["duplicate_token"] and max(layers["duplicate_token"]) < 16
    with pytest.raises(ValueError, match="ioi_task"):
        find_ioi_heads(smollm2[0], setup("induction", 16, 0)[1])


def test_ioi_hypotheses_validate_and_refuse_bad_roles(smollm2, task):
    d = Decomposed(smollm2[0])
    hyps = ioi_lm(["24.4", "23.0"], ["20.0", "25.2"])
    assert set(FLOORS) | set(FLOORS.values()) == set(hyps)
    for hyp in hyps.values():
        validate(hyp, d, task.features, task.n_ctx)
    si = hyps["SI=order"].root.children[0].children[1]
    assert si.sites == ["20.0"] and si.feature == "order" and si.via == ["q"]  # 25.2 is above every name mover
    with pytest.raises(ValueError, match="below layer 24"):
        ioi_lm(["24.4"], ["25.2"])
    with pytest.raises(ValueError, match="name-mover"):
        ioi_lm([], ["20.0"])
    with pytest.raises(HypothesisError):
        validate(ioi_lm(["24.4"], ["20.0"])["SI=order"], d, {"io": task.features["io"]}, task.n_ctx)


def test_a_short_ioi_study(smollm2, one_thread):
    """16 prompts: the floors cost loss, the name movers' outputs on the same IO close that gap, the
    headline has its five claims; the rows repeat for a seed."""
    model, tokenizer = smollm2
    study = ioi_study(model, tokenizer, "smollm2", n=16, batch_size=16)
    assert [r.hypothesis for r in study.rows][-2:] == ["keep-only name movers", "keep-only circuit"]
    assert study.accuracy >= 0.9 and study.loss_model < study.constant_loss < study.loss_scrubbed_all
    floor, io = study.row("nm=none"), study.row("nm=io")
    assert floor.loss_hypothesis > study.loss_model + 0.2 and io.floor == "nm=none" and io.floor_share > 0.8
    assert study.row("nm-q-random").floor_share is None and len(study.headline()) == 5


def test_refine_scans_only_the_senders_given(one_thread):
    model, task, hyps = setup("paren", 100, seed=0)
    narrow = refine(model, task, hyps["1b"], RefineConfig(max_steps=1, width=1, senders=["0.0"]))
    wide = refine(model, task, hyps["1b"], RefineConfig(max_steps=1, width=1))
    assert narrow.steps[1].candidates < wide.steps[1].candidates
    with pytest.raises(KeyError, match="unknown site"):
        refine(model, task, hyps["1b"], RefineConfig(senders=["9.9"]))
    with pytest.raises(ValueError, match="at least one"):
        RefineConfig(senders=[])
