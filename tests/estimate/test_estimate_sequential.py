"""``RandomMLP.from_sequential``: a user's PyTorch MLP is estimated as it computes; what the method does not
cover (LayerNorm, residual blocks, other modules, non-square layers, mixed activations) is one line naming
the layer."""

import pytest
import torch
from torch import nn

from probity.estimate import RandomMLP, kprop, monte_carlo
from probity.estimate.choose import estimate


def _net(*layers):
    torch.manual_seed(0)
    return nn.Sequential(*layers).double()


@pytest.mark.parametrize(
    "act, name",
    [(nn.ReLU(), "relu"), (nn.GELU(), "gelu"), (nn.Tanh(), "tanh"), (nn.SiLU(), "silu"), (nn.Softplus(), "softplus")],
)
def test_wrapped_network_computes_what_the_module_computes(act, name):
    module = _net(nn.Linear(8, 8), act, nn.Linear(8, 8), act, nn.Linear(8, 8, bias=False))
    mlp = RandomMLP.from_sequential(module)
    assert (mlp.activation, mlp.hidden_layers, mlp.width) == (name, 2, 8)
    x = torch.randn(32, 8, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(mlp.forward(x)[2], module(x), atol=1e-12)
    assert mlp.biases[0] is not None and mlp.biases[2] is None


@pytest.mark.usefixtures("one_thread")
def test_trailing_activation_estimates_the_last_activation():
    """ARC's challenge networks end in a ReLU: ``out`` is then the last activation, and kprop estimates it."""
    module = _net(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU())
    mlp = RandomMLP.from_sequential(module)
    x = torch.randn(64, 16, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(mlp.forward(x)[2], module(x), atol=1e-12)
        est = kprop(mlp, 2, "augment")
        truth = monte_carlo(mlp, 200_000, out_only=True)
    assert torch.allclose(est.out, est.act[-1])
    assert ((est.out - truth.out_mean) ** 2).mean() / truth.out_var.mean() < 0.01
    assert estimate(mlp, 1e6).out.shape == (16,)


@pytest.mark.parametrize(
    "layers, says",
    [
        ((nn.Linear(8, 8), nn.ReLU(), nn.LayerNorm(8), nn.Linear(8, 8)), "layer 2 (LayerNorm) is not supported"),
        ((nn.Linear(8, 8), nn.Dropout(0.1), nn.Linear(8, 8)), "layer 1 (Dropout) is not supported"),
        ((nn.Linear(8, 8), nn.GELU(approximate="tanh"), nn.Linear(8, 8)), "layer 1 (GELU) is not supported"),
        ((nn.Linear(8, 8), nn.LeakyReLU(), nn.Linear(8, 8)), "layer 1 (LeakyReLU) is not supported"),
        ((nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8)), "layer 0 (Linear 4->8) is not square"),
        ((nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4)), "layer 2 (Linear 8->4) is not square (8, 8)"),
        ((nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 8)), "layer 3 (Tanh) differs"),
        ((nn.Linear(8, 8), nn.Linear(8, 8)), "layer 1 (Linear) follows another Linear"),
        ((nn.ReLU(), nn.Linear(8, 8)), "layer 0 (ReLU) must follow a Linear layer"),
        ((), "has no Linear layer"),
    ],
)
def test_unsupported_layers_are_one_line_naming_the_layer(layers, says):
    with pytest.raises(ValueError) as err:
        RandomMLP.from_sequential(nn.Sequential(*layers))
    assert says in str(err.value) and "\n" not in str(err.value)


def test_residual_and_non_sequential_modules_are_refused():
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Linear(8, 8)

        def forward(self, x):
            return x + self.w(torch.relu(x))

    with pytest.raises(ValueError, match="layer 1 \\(Residual\\) is not supported.*residual blocks"):
        RandomMLP.from_sequential(nn.Sequential(nn.Linear(8, 8), Residual(), nn.Linear(8, 8)))
    with pytest.raises(TypeError, match="expected an nn.Sequential"):
        RandomMLP.from_sequential(Residual())
