"""Random MLPs in ARC's convention, and a validated forward pass.

A ``RandomMLP`` with ``hidden_layers = H`` has H+1 square linear layers of width n:

    z_1 = W_1 x + b_1,   a_l = phi(z_l),   z_{l+1} = W_{l+1} a_l + b_{l+1},   out = z_{H+1}

with x ~ N(0, I_n). Layer l (1-based) has pre-activation ``pre[l-1]`` and activation
``act[l-1]``; ``out`` has no activation. Weights are N(0, w_var_l / n): w_var_1 = 1 and,
for He init, w_var_l = 1 / E[phi(Z)^2] (2 for ReLU) so every pre-activation has
variance about 1.
"""

from __future__ import annotations

import math

import torch

from probity.estimate.activations import ACTIVATIONS, check_activation
from probity.estimate.gauss import gaussian_moment
from probity.report.console import is_int

INITS = ("he", "critical")


class RandomMLP:
    """A square random MLP. ``weights[l]`` is [width, width] float64, ``biases[l]`` is [width] or None.

    ``RandomMLP(width, hidden_layers, activation, init, bias, seed)`` draws a network;
    ``RandomMLP.from_weights(weights, activation)`` wraps your own weights;
    ``RandomMLP.from_sequential(nn.Sequential(...))`` wraps your own PyTorch MLP."""

    weights: list[torch.Tensor]
    biases: list[torch.Tensor | None]
    activation: str

    def __init__(
        self,
        width: int,
        hidden_layers: int,
        activation: str = "relu",
        init: str = "he",
        bias: bool = False,
        seed: int = 0,
        q_star: float = 1.0,
    ):
        """Draw a network from ``torch.manual_seed(seed)`` semantics (a private generator,
        so global RNG state is untouched). ``init="critical"`` puts the network at the edge
        of chaos for fixed point variance ``q_star`` (Pennington et al.), adding bias
        variance where the activation needs it; ``bias=True`` with He init draws biases
        N(0, 0.1)."""
        self.check(width, hidden_layers, activation, init)
        w_vars, b_var = _layer_variances(activation, init, hidden_layers, bias, q_star)
        gen = torch.Generator().manual_seed(seed)
        self.weights, self.biases, self.activation = [], [], activation
        for w_var in w_vars:
            w = torch.randn(width, width, generator=gen) * math.sqrt(w_var / width)
            self.weights.append(w.double())
            has_bias = b_var > 0
            self.biases.append(torch.randn(width, generator=gen).double() * math.sqrt(b_var) if has_bias else None)

    @staticmethod
    def check(width: int, hidden_layers: int, activation: str = "relu", init: str = "he") -> None:
        """One-line ``ValueError`` unless ``RandomMLP(width, hidden_layers, activation, init)`` can be drawn
        (nothing is allocated: commands call it before they estimate the memory a network needs)."""
        if not is_int(width) or width < 1:
            if is_int(width) or isinstance(width, (float, str)):
                raise ValueError(f"width must be an integer >= 1, got {width!r}")
            raise ValueError(
                f"width must be an integer >= 1, got a {type(width).__name__}; to wrap your own weights use "
                "RandomMLP.from_weights"
            )
        if not is_int(hidden_layers) or hidden_layers < 0:
            raise ValueError(f"hidden_layers must be an integer >= 0, got {hidden_layers!r}")
        check_activation(activation)
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}; choose one of {', '.join(INITS)}")

    @property
    def width(self) -> int:
        """n, the width of every layer."""
        return self.weights[0].shape[0]

    @property
    def hidden_layers(self) -> int:
        """H: the number of activations (one fewer than linear layers)."""
        return len(self.weights) - 1

    @property
    def phi(self):
        """The activation function, elementwise on any shape."""
        return ACTIVATIONS[self.activation]

    @classmethod
    def from_weights(cls, weights, activation: str = "relu", biases=None) -> RandomMLP:
        """Wrap a user's list of [width, width] weight matrices (and optional [width] biases)."""
        check_activation(activation)
        if not isinstance(weights, (list, tuple)) or not weights:
            raise ValueError("weights must be a non-empty list of (n, n) matrices, one per linear layer")
        ws = [torch.as_tensor(w).double() for w in weights]
        if ws[0].ndim != 2:
            raise ValueError(f"weights[0] has shape {tuple(ws[0].shape)}; pass (n, n) matrices, one per linear layer")
        n = ws[0].shape[0]
        for i, w in enumerate(ws):
            if w.shape != (n, n):
                raise ValueError(f"weights[{i}] has shape {tuple(w.shape)}; every layer must be square ({n}, {n})")
            if not torch.isfinite(w).all():
                raise ValueError(f"weights[{i}] contains NaN or inf; pass finite weights")
        bs = (
            [None] * len(ws) if biases is None else [None if b is None else torch.as_tensor(b).double() for b in biases]
        )
        if len(bs) != len(ws):
            raise ValueError(f"got {len(bs)} biases for {len(ws)} weight matrices; pass one per layer (None for none)")
        for i, b in enumerate(bs):
            if b is not None and (b.shape != (n,) or not torch.isfinite(b).all()):
                raise ValueError(f"biases[{i}] must be a finite vector of shape ({n},)")
        mlp = cls.__new__(cls)
        mlp.weights, mlp.biases, mlp.activation = ws, bs, activation
        return mlp

    @classmethod
    def from_sequential(cls, module) -> RandomMLP:
        """Wrap a PyTorch ``nn.Sequential(Linear, act, Linear, act, ..., Linear)`` for estimation under
        x ~ N(0, I_n). Every Linear must be square (n, n) with the same n (bias optional); every
        activation the same one of ``nn.ReLU``, ``nn.GELU`` (exact, not tanh), ``nn.Tanh``,
        ``nn.Sigmoid``, ``nn.SiLU``, ``nn.Softplus`` (beta 1, threshold 20). A trailing activation is
        allowed: an identity output layer is appended, so ``out`` is the last activation's mean.

        Not covered: cumulant propagation as implemented here moves cumulants through a linear map and an
        elementwise activation only. A residual block (x + W phi(x)), LayerNorm (a per-example division by
        a norm), dropout or any other module is refused with a one-line ``ValueError`` naming the layer;
        so are non-square layers and mixed activations. Weights are copied (float64, detached)."""
        from torch import nn

        if not isinstance(module, nn.Sequential):
            raise TypeError(f"expected an nn.Sequential of Linear layers and activations, got {type(module).__name__}")
        layers = list(module)
        weights, biases, activation = [], [], None
        for i, layer in enumerate(layers):
            if isinstance(layer, nn.Linear):
                if i > 0 and isinstance(layers[i - 1], nn.Linear):
                    raise ValueError(f"layer {i} (Linear) follows another Linear; put an activation between them")
                n = layers[0].out_features if isinstance(layers[0], nn.Linear) else None
                if (layer.in_features, layer.out_features) != (n, n):
                    raise ValueError(
                        f"layer {i} (Linear {layer.in_features}->{layer.out_features}) is not square ({n}, {n}); "
                        "kprop needs every layer of one width n"
                    )
                weights.append(layer.weight.detach())
                biases.append(None if layer.bias is None else layer.bias.detach())
                continue
            name = _activation_name(layer)
            if name is None:
                raise ValueError(
                    f"layer {i} ({type(layer).__name__}) is not supported: cumulant propagation covers Linear layers "
                    f"and the elementwise activations {', '.join(_MODULE_ACTIVATIONS.values())} (not LayerNorm, "
                    "residual blocks or other modules)"
                )
            if i == 0 or not isinstance(layers[i - 1], nn.Linear):
                raise ValueError(f"layer {i} ({type(layer).__name__}) must follow a Linear layer")
            if activation is not None and name != activation:
                raise ValueError(
                    f"layer {i} ({type(layer).__name__}) differs from the earlier {activation}; use one activation"
                )
            activation = name
        if not weights:
            raise ValueError("the nn.Sequential has no Linear layer; pass Linear, activation, ..., Linear")
        if _activation_name(layers[-1]) is not None:  # trailing activation: identity output layer
            weights.append(torch.eye(weights[0].shape[0], dtype=torch.float64))
            biases.append(None)
        return cls.from_weights(weights, activation or "relu", biases)

    def validate(self) -> None:
        """Raise a one-line ValueError if weights are non-finite or mis-shaped."""
        RandomMLP.from_weights(self.weights, self.activation, self.biases)

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
        """x [batch, width] -> (pre: H tensors [batch, width], act: H tensors [batch, width], out [batch, width]),
        in x's dtype."""
        pre, act = [], []
        h = x
        for layer, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = h @ w.to(x.dtype).T
            if b is not None:
                h = h + b.to(x.dtype)
            if layer == self.hidden_layers:
                return pre, act, h
            pre.append(h)
            h = self.phi(h)
            act.append(h)
        raise AssertionError("unreachable")

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Flat tensor dict (for hashing and saving)."""
        out = {f"w{i}": w for i, w in enumerate(self.weights)}
        out.update({f"b{i}": b for i, b in enumerate(self.biases) if b is not None})
        return out


_MODULE_ACTIVATIONS = {
    "ReLU": "relu", "GELU": "gelu", "Tanh": "tanh", "Sigmoid": "sigmoid", "SiLU": "silu", "Softplus": "softplus",
}  # fmt: skip


def _activation_name(layer) -> str | None:
    """The ``ACTIVATIONS`` name of a torch activation module that computes exactly that function, else None."""
    from torch import nn

    name = _MODULE_ACTIVATIONS.get(type(layer).__name__)
    if name is None or type(layer).__module__ != nn.ReLU.__module__:
        return None
    if isinstance(layer, nn.GELU) and layer.approximate != "none":
        return None
    if isinstance(layer, nn.Softplus) and (layer.beta != 1 or layer.threshold != 20):
        return None
    return name


def check_mlp(mlp) -> None:
    """Raise a one-line error unless ``mlp`` is a RandomMLP with finite, square weights."""
    if not isinstance(mlp, RandomMLP):
        raise TypeError(
            f"expected a RandomMLP, got {type(mlp).__name__}; "
            "wrap your weights with RandomMLP.from_weights(weights, activation)"
        )
    mlp.validate()


def _layer_variances(activation: str, init: str, hidden_layers: int, bias: bool, q_star: float):
    """Per-layer weight variances (times fan-in) and the bias variance."""
    zero, one = torch.zeros(1, dtype=torch.float64), torch.ones(1, dtype=torch.float64)
    if init == "he":
        he = 1.0 / gaussian_moment(activation, 2, zero, one).item()
        return [1.0] + [he] * hidden_layers, (0.1 if bias else 0.0)
    if q_star <= 0:
        raise ValueError(f"q_star must be > 0 for critical init, got {q_star}")
    q = torch.full((1,), q_star, dtype=torch.float64)
    sigma_w2 = 1.0 / gaussian_moment(activation, 2, zero, q, derivative=True).item()
    sigma_b2 = q_star - sigma_w2 * gaussian_moment(activation, 2, zero, q).item()
    if sigma_b2 < -1e-9:
        raise ValueError(
            f"critical init infeasible for {activation} at q_star={q_star} "
            f"(bias variance {sigma_b2:.3g} < 0); try another q_star"
        )
    sigma_b2 = sigma_b2 if sigma_b2 > 1e-9 else 0.0
    return [q_star - sigma_b2] + [sigma_w2] * hidden_layers, sigma_b2
