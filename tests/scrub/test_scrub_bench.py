"""The speed bench's per-example baseline (``bench/scrub.py``, loaded from its path) on a tiny HF Llama: its
forward-hooked clean activations give the engine's logits, with one forward per distinct input of an example
when memoised and more when each gather runs its own. No timing is asserted."""

import importlib.util
from pathlib import Path

from probity.models import tiny
from probity.scrub import induction_lm, repeat_task


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_scrub", Path(__file__).parents[2] / "bench" / "scrub.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_hooked_baseline_gives_the_engines_logits(one_thread):
    bench = load_bench()
    model, _ = tiny("llama", seed=1, num_hidden_layers=4)
    task = repeat_task(list(range(4, 100)), n=8, span=4)
    hyp = induction_lm(["1.0"], ["2.1", "3.0"])["all-three"]
    row = bench.speed_row(model, task, hyp, n=8, n_baseline=3, repeats=1, batch_size=4)
    # the reference and the induction node's random row (one forward when the draw is the reference itself)
    assert 1 <= row["baseline_forwards_per_example"] <= 2 < row["baseline_per_gather_forwards_per_example"]
    assert row["max_abs_logit_diff"] < 1e-4 and row["max_abs_logit_diff_per_gather"] < 1e-4
    assert row["ours_examples_per_s"] > 0 and row["ours_peak_rss_gb"] > 0
