"""Shared fixtures. The real SmolLM2-135M-Instruct loads once per test worker."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def smollm2():
    """(model, tokenizer) of the real SmolLM2-135M-Instruct, offline, eval mode, float32."""
    from probity import models

    return models.load(models.SMOLLM2)
