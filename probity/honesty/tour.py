"""Tour section: the honesty protocol on the censored organism (SmolLM2-135M-Instruct + its censorship
LoRA), a few techniques and all detectors."""

from __future__ import annotations


def section(console, cache_dir=None):
    """Chat baseline vs. raw completion vs. few-shot vs. an honesty prompt on 24 sensitive questions of
    the real censored organism, plus all lie detectors (keeps no files: no work folder, so ``cache_dir``,
    the tour's folder for them, goes unused)."""
    from probity.honesty.protocol import RunConfig, run

    cfg = RunConfig(model="censored", techniques="chat,raw,few_shot,honesty_prompt", samples=2, limit=24)
    return run(cfg, console)
