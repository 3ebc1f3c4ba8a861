import pytest
import torch

from probity.organisms import _native
from probity.scrub.model import Decomposed
from probity.scrub.task import Task

TINY = dict(
    d_model=16,
    d_head=4,
    n_heads=2,
    n_layers=2,
    n_ctx=6,
    d_vocab=5,
    d_mlp=16,
    act_fn="relu",
    normalization_type="LN",
    attention_dir="bidirectional",
    positional_embedding_type="standard",
)


@pytest.fixture(scope="session")
def tiny_model():
    """A random 2-layer, 2-head transformer with MLPs (bidirectional), as residual components."""
    return Decomposed(_native.bridge(_native.native_model(TINY, seed=3)))


@pytest.fixture(scope="session")
def tiny_task():
    """64 random rows over 5 tokens; loss: predict the majority-ish label (token sum mod 5) at position 0."""
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 5, (64, 6), generator=g)
    targets = torch.zeros_like(tokens)
    targets[:, 0] = tokens.sum(1) % 5
    mask = torch.zeros_like(tokens, dtype=torch.bool)
    mask[:, 0] = True
    feats = {
        "first": tokens[:, 0],
        "parity": tokens.sum(1) % 2,
        "tok": tokens,
        "big": (tokens >= 3).long(),
        "big_rows": (tokens >= 3).sum(1),
    }
    return Task("tiny", tokens, targets, mask, feats, {"even": feats["parity"] == 0})
