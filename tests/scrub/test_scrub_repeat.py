"""Induction on a real language model: ``repeat_task`` rows, the root's ``above`` keyword, and the paper's
hypotheses built from ``find_heads`` on SmolLM2-135M (a short task: 8 rows, span 10). Few rows redraw the
reference often (the random draw is uniform over all rows), so no paper-like value is asserted here;
``bench/scrub.py --smollm2`` measures them on 64 rows."""

import math

import pytest
import torch

from probity.models import tiny
from probity.scrub import (
    Hypothesis,
    HypothesisError,
    Node,
    Scrubber,
    find_heads,
    induction_lm,
    keep_only,
    repeat_losses,
    repeat_task,
    scrub,
)
from probity.scrub.hypothesis import validate
from probity.scrub.model import Decomposed


def test_repeat_task_rows_and_masks():
    task = repeat_task(list(range(10, 60)), n=4, span=6, seed=1)
    t = task.tokens
    assert t.shape == (4, 13) and (t[:, 0] == 0).all() and torch.equal(t[:, 1:7], t[:, 7:])
    assert all(len(set(row[1:7].tolist())) == 6 for row in t)  # distinct within a row
    assert task.loss_mask.sum(1).tolist() == [5] * 4 and task.loss_mask[:, 7:12].all()
    assert torch.equal(task.targets[:, 7:12], t[:, 8:13])
    assert task.features["copy"][0].tolist() == [0] + [1] * 6 + [2] * 6
    assert repeat_task(list(range(10, 60)), n=4, span=6, seed=1, prefix=None).tokens.shape == (4, 12)
    with pytest.raises(ValueError, match="span"):
        repeat_task([1, 2, 3], n=2, span=5)


def test_above_is_the_model_above_the_childrens_sites():
    d = Decomposed(tiny("llama", seed=1, num_hidden_layers=4)[0])
    task = repeat_task(list(range(4, 100)), n=8, span=4)
    hyp = keep_only(["2.1", "1.0"])
    root = validate(hyp, d, task.features, task.n_ctx)
    named = {d.component("2.1"), d.component("1.0")}
    want = {c for c in d.components if c > d.component("1.0")} - named
    assert set(root.components) == want | {d.output}
    assert d.component("1.1") in root.components and d.component("0.1") not in root.components
    bad = Hypothesis("bad", Node("out", ["output", "above"], children=[Node("all", ["*"])]))
    with pytest.raises(HypothesisError, match="above"):
        validate(bad, d, task.features, task.n_ctx)
    inner = Hypothesis("inner", Node("out", ["output"], children=[Node("h", ["2.1"], children=[Node("x", ["above"])])]))
    with pytest.raises(HypothesisError, match="only the root"):
        validate(inner, d, task.features, task.n_ctx)


def test_smollm2_induction_study(smollm2, one_thread):
    model, tokenizer = smollm2
    task = repeat_task(tokenizer, n=8, span=10, seed=0)
    specials = set(tokenizer.all_special_ids)
    assert not (set(task.tokens[:, 1:].flatten().tolist()) & specials)
    losses = repeat_losses(model, task, batch_size=8)
    assert losses.repeat < losses.first / 3  # about 14 nats against 2-4
    d = Decomposed(model)
    ind = find_heads(d, task, "induction", threshold=0.5, batch_size=8)
    prev = find_heads(d, task, "previous_token", threshold=0.5, batch_size=8, queries="all")
    assert "18.6" in [f"{s.hook.split('.')[1]}.{s.head}" for s in ind.heads]
    hyps = {**induction_lm(prev.heads[:4], ind.heads[:4]), "keep-only": keep_only(ind.heads[:4] + prev.heads[:4])}
    s = Scrubber(d, task, seed=0, batch_size=8)
    for name, hyp in hyps.items():
        r = scrub(d, task, hyp, seed=0, batch_size=8, per_node=False, scrubber=s)
        assert math.isfinite(r.loss_recovered) and math.isfinite(r.stderr) and r.stderr > 0, name
        assert r.loss_model < r.loss_scrubbed_all, name
