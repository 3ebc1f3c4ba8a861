"""The paper's recursion (scrub/reference.py) against the compiled engine (scrub/engine.py) on every
built-in hypothesis of both organisms: the same sampled trees, the same logits."""

import functools
import warnings

import pytest
import torch

from probity.scrub import Scrubber, builtin, setup
from probity.scrub.model import Decomposed
from probity.scrub.reference import reference_logits

# organism, head-role override, dataset rows; the paren case study runs with both roots (as in the tour)
CASES = {
    "paren": ("paren", None, 200),
    "paren root+mlp2": ("paren", {"top": ["output", "mlp2"]}, 200),
    "induction": ("induction", None, 60),
}


@functools.cache
def _scrubber(case: str) -> tuple[Scrubber, dict]:
    organism, roles, rows = CASES[case]
    model, task, hyps = setup(organism, rows, seed=0, roles=roles)
    return Scrubber(Decomposed(model), task, seed=0, batch_size=64), hyps


@pytest.mark.parametrize("case, name", [(case, name) for case, (org, _, _) in CASES.items() for name in builtin(org)])
def test_reference_equals_engine_on_every_builtin_hypothesis(case, name, one_thread):
    # one thread: the reference runs many tiny per-example ops
    scrubber, hyps = _scrubber(case)
    task = scrubber.task
    examples = torch.arange(0, len(task.tokens), len(task.tokens) // 12)  # 12 references spread over the rows
    with warnings.catch_warnings():  # a small dataset has feature classes of fewer than 5 rows
        warnings.simplefilter("ignore")
        fast = torch.cat([logits for _, logits in scrubber.logits(hyps[name])])
        plain = reference_logits(scrubber.model, hyps[name], task, seed=0, examples=examples)
    torch.testing.assert_close(plain, fast[examples], atol=1e-5, rtol=1e-5)
