"""The activation functions a random MLP may use, and their slopes in closed form.

``ACTIVATIONS[name]`` is phi and ``SLOPES[name]`` is phi', both elementwise on any shape.
``mlp`` (the networks) and ``gauss`` (their Gaussian expectations) both read this table.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

ACTIVATIONS = {
    "relu": torch.relu,
    "gelu": F.gelu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "silu": F.silu,
    "softplus": F.softplus,
}
# phi' in closed form (differentiable, unlike autograd of a detached input).
SLOPES = {
    "relu": lambda z: (z > 0).to(z.dtype),
    "gelu": lambda z: 0.5 * (1 + torch.erf(z / math.sqrt(2))) + z * torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi),
    "tanh": lambda z: 1 - torch.tanh(z) ** 2,
    "sigmoid": lambda z: torch.sigmoid(z) * (1 - torch.sigmoid(z)),
    "silu": lambda z: torch.sigmoid(z) * (1 + z * (1 - torch.sigmoid(z))),
    "softplus": torch.sigmoid,
}


def check_activation(activation: str) -> None:
    """Raise a one-line ValueError unless ``activation`` is supported."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose one of {', '.join(ACTIVATIONS)}")
