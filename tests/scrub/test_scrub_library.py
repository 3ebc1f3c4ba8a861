"""The built-in paren hypotheses against Redwood's definitions: features, and each refinement adds structure to 1b."""

import torch

from probity.organisms import paren
from probity.scrub.library import paren as paren_hypotheses
from probity.scrub.task import horizon_classes, paren_task


def test_redwood_horizon_classes_and_features():
    t = paren.encode(["(())", "())(", ")("])
    c = horizon_classes(t, paren.features(t)["open_after"])
    # START and each paren: do the parens from here on hold more opens (-2) or not (2);
    # END after a close 1 / an open -1; PAD 0
    assert c[0, :7].tolist() == [2, 2, 2, 2, 2, 1, 0]
    assert c[1, :7].tolist() == [2, 2, 2, 2, -2, -1, 0]
    assert c[2, :5].tolist() == [2, 2, -2, -1, 0]
    task = paren_task(400, seed=3)
    f = task.features
    assert torch.equal(f["horizon_all"], f["horizon_test"])  # 3a's node feature is the horizon test itself
    assert torch.equal(f["count_open"], f["count_test"] & f["starts_open"])
    starts_open = f["p_if_starts_open"] >= 0
    assert torch.equal(starts_open, f["starts_open"].bool())
    assert torch.equal(f["count_open"], f["p_if_starts_open"] == 2**19)  # p = 1/2 exactly, starting open


def test_refinements_keep_every_node_of_1b_and_add_structure():
    hyps = paren_hypotheses(n_heads=2)

    def nodes(name):
        return {(n.name, tuple(n.sites), n.feature) for n in hyps[name].nodes()}

    base = nodes("1b")
    assert {n.name for n in hyps["1a"].nodes()} == {n.name for n in hyps["1b"].nodes()}
    for name in ("2a", "2b"):
        assert base < nodes(name)
    for name in ("3a", "3b"):  # the horizon head's node: horizon_all (the same classes as horizon_test, or adjusted)
        assert {n for n in base if n[0] != "2.1"} < nodes(name)
    four = {(n.name, n.feature, n.phi) for n in hyps["4"].nodes()}
    assert {(n.name, n.feature, n.phi) for n in hyps["2b"].nodes() if not n.name.startswith("2.1")} <= four
    assert {(n.name, n.feature, n.phi) for n in hyps["3b"].nodes() if not n.name.startswith(("1.0", "2.0"))} <= four


def test_adjusted_proportion_is_exact_where_no_paren_precedes_the_query():
    from probity.scrub.task import adjusted_open_after

    model, _ = paren.load()
    tokens = paren.sample(64, seed=5)
    adjusted = adjusted_open_after(model, tokens, "0.0")
    exact = paren.features(tokens)["open_after"]
    # at START and at the first paren every paren is on or after the query: one weight per key, the exact proportion
    torch.testing.assert_close(adjusted[:, :2], exact[:, :2])
    assert bool(((adjusted >= 0) & (adjusted <= 1)).all())
