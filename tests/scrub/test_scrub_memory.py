"""A memory budget for the scrubber (issue 15, item 4: ``--max-memory``): chunks are cut to fit and the
numbers do not move, a budget the clean cache cannot fit is refused before any forward pass, and the
command line keeps its one-line contract."""

import gc
import weakref

import pytest
import torch

from probity.cli import main
from probity.scrub import Scrubber, engine, scrub, setup
from probity.scrub.run import IDENTITY


@pytest.fixture(scope="module")
def paren():
    return setup("paren", 100, seed=0)


def _chunk_sizes(monkeypatch) -> list[int]:
    sizes, execute = [], engine.execute

    def spy(model, expr, rows, cache, positions=None):
        sizes.append(len(next(iter(rows.values()))))
        return execute(model, expr, rows, cache, positions)

    monkeypatch.setattr(engine, "execute", spy)
    return sizes


def test_a_budget_cuts_the_chunks_and_not_the_numbers(paren, monkeypatch, one_thread):
    model, task, hyps = paren
    free = Scrubber(model, task, seed=0, batch_size=64)
    want = free.losses(hyps["1b"])[0]
    plan = engine.compile_plan(free.model, free.sample(hyps["1b"])[0], task.n_ctx)
    per_row = engine.row_bytes(free.model, plan, task.n_ctx, len(task.loss_positions))
    m = len(task.loss_positions)
    logits = engine.FLOAT_BYTES * 100 * m * free.model.d_vocab  # the clean logits a scrub keeps
    fixed = free.model.weight_bytes + engine.cache_bytes(free.model, free._cache.targets, 100, task.n_ctx) + logits
    budget = (fixed + 10 * per_row + per_row // 2) / 2**30  # room for 10 rows beside the cache built already
    sizes = _chunk_sizes(monkeypatch)
    bounded = Scrubber(model, task, seed=0, batch_size=64, max_memory=budget)
    bounded._cache = free._cache  # the same clean cache, so the estimate is the one computed above
    got = bounded.losses(hyps["1b"])[0]
    assert max(sizes) == 10 and sum(sizes) == 100
    # float32 losses near 10: chunks of 10 rows instead of 64 change the products' summation order, which moved
    # 3 of 100 losses by 1.9e-6 (2e-7 relative) on a fresh clone; neighbouring rows differ by 1.5 (median)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


def test_a_whole_scrub_under_a_budget_equals_the_unbounded_one(paren, monkeypatch, one_thread):
    """Identity, empty and the hypothesis get different chunk sizes under one budget; the KL pairs each
    row with its own clean logits all the same."""
    model, task, hyps = paren
    want = scrub(model, task, hyps["1b"], seed=0, per_node=False)
    sizes = _chunk_sizes(monkeypatch)
    got = scrub(model, task, hyps["1b"], seed=0, per_node=False, max_memory=0.006)
    assert len(set(sizes)) > 1 and max(sizes) < 512
    assert got.loss_recovered == pytest.approx(want.loss_recovered, abs=1e-6)
    assert got.cancellation.kl_to_model == pytest.approx(want.cancellation.kl_to_model, abs=1e-6)


def test_a_budget_too_small_for_the_cache_is_refused_before_any_forward(paren):
    model, task, _ = paren
    s = Scrubber(model, task, seed=0, max_memory=1e-4)
    with pytest.raises(MemoryError, match="too small") as err:
        s.losses(IDENTITY)
    assert "\n" not in str(err.value) and s._cache is None
    with pytest.raises(ValueError, match="positive"):
        Scrubber(model, task, max_memory=0)


def test_the_estimates_grow_with_what_they_count(paren):
    model, task, hyps = paren
    s = Scrubber(model, task, seed=0)
    small = engine.compile_plan(s.model, s.sample(IDENTITY)[0], task.n_ctx)
    large = engine.compile_plan(s.model, s.sample(hyps["4"])[0], task.n_ctx)
    assert 0 < engine.row_bytes(s.model, small, task.n_ctx, 1) < engine.row_bytes(s.model, large, task.n_ctx, 1)
    targets = engine.gather_targets(large)
    assert engine.cache_bytes(s.model, targets, 200, task.n_ctx) == 2 * engine.cache_bytes(
        s.model, targets, 100, task.n_ctx
    )


def test_the_command_line_keeps_its_contract(usage_error, capsys):
    assert "positive number of GB" in usage_error("scrub", "run", "--max-memory", "0")


def test_a_tiny_budget_on_the_command_line_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = main(["scrub", "run", "--organism", "paren", "--samples", "50", "--max-memory", "0.0001"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "too small" in err and not (tmp_path / "runs").exists()


def test_a_rebuilt_clean_cache_is_freed_at_once(paren, one_thread):
    """When a hypothesis needs targets the clean cache lacks, the old cache is garbage as soon as the new one
    is built, without waiting for Python's cyclic collector (refine rebuilds it once per new sender: kept
    alive, each old cache added its size to the peak)."""
    model, task, hyps = paren
    s = Scrubber(model, task, seed=0, batch_size=64)
    collecting = gc.isenabled()
    gc.disable()
    try:
        s.losses(IDENTITY)
        old = weakref.ref(s._cache)
        s.losses(hyps["1b"])
        assert s._cache is not old() and old() is None
    finally:
        if collecting:
            gc.enable()
