"""The one MLP used by every model: Linear + activation blocks, then a classifier head."""

from __future__ import annotations

from typing import Literal, Sequence

import torch
from torch import Tensor, nn

from .init import init_weight
from .rbm import RBM

__all__ = ["MLP", "Activation", "check_hidden"]

Activation = Literal["relu", "sigmoid", "tanh"]
_ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}


def check_hidden(hidden: Sequence[int]) -> list[int]:
    """Validate the list of hidden-layer sizes (the ``hidden`` config key) once, at the boundary."""
    hidden = list(hidden)
    if not hidden:
        raise ValueError("hidden must list at least one hidden-layer size, e.g. model.hidden '[256, 256]'; got []")
    bad = [h for h in hidden if not isinstance(h, int) or isinstance(h, bool) or h < 1]
    if bad:
        raise ValueError(f"hidden sizes must be positive integers, got {hidden} (bad: {bad})")
    return hidden


class MLP(nn.Module):
    """``input_size -> hidden[0] -> ... -> hidden[-1] -> num_classes`` with one activation.

    ``features`` is an ``nn.Sequential`` of (Linear, activation) pairs, each followed by
    ``nn.Dropout(dropout)`` when ``dropout > 0``; ``head`` a Linear producing logits. Linear
    weights are (out_features, in_features), the RBM orientation too. ``input_dropout`` drops
    input features before the first layer (Hinton et al. 2012 used 0.2 with 0.5 in the hidden
    layers); it is a module of its own, outside ``features``, so parameter names do not depend on it.
    """

    def __init__(
        self,
        input_size: int,
        hidden: Sequence[int],
        num_classes: int,
        activation: Activation = "relu",
        dropout: float = 0.0,
        input_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
        self.activation = activation
        sizes = [input_size, *check_hidden(hidden)]
        layers: list[nn.Module] = []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(fan_in, fan_out), _ACTIVATIONS[activation]()]
            layers += [nn.Dropout(dropout)] if dropout else []
        self.input_dropout = nn.Dropout(input_dropout) if input_dropout else nn.Identity()
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(sizes[-1], num_classes)

    @property
    def linears(self) -> list[nn.Linear]:
        """The hidden Linear layers, bottom to top (the head excluded)."""
        return [m for m in self.features if isinstance(m, nn.Linear)]

    def forward_features(self, x: Tensor) -> Tensor:
        """(batch, input_size) -> (batch, hidden[-1])."""
        return self.features(self.input_dropout(x))

    def forward_head(self, features: Tensor) -> Tensor:
        """(batch, hidden[-1]) -> logits (batch, num_classes)."""
        return self.head(features)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    @torch.no_grad()
    def init_weights(self, scheme: str, std: float = 1.0, value: float = 0.01) -> None:
        """Initialise every Linear (head included) by scheme name; biases start at zero."""
        for layer in [*self.linears, self.head]:
            init_weight(layer.weight, scheme, self.activation, std=std, value=value)
            nn.init.zeros_(layer.bias)

    @torch.no_grad()
    def load_rbms(self, rbms: Sequence[RBM]) -> None:
        """Copy each RBM's weight (n_hidden, n_visible) and hidden bias into the matching Linear.

        Requires the RBMs' hidden activation, so that layer k computes exactly the mean hidden
        activation of RBM k given layer k - 1: p(h_k = 1 | h_{k-1}) for sigmoid units,
        max(0, W h_{k-1} + c) for NReLU units.
        """
        units = {getattr(rbm, "hidden_units", "sigmoid") for rbm in rbms}
        if units != {self.activation}:
            raise ValueError(
                f"an RBM stack with {sorted(units)} hidden units transfers into an MLP of that activation, "
                f"got activation={self.activation!r}"
            )
        if len(rbms) != len(self.linears):
            raise ValueError(f"expected {len(self.linears)} RBMs for this MLP, got {len(rbms)}")
        for i, (rbm, linear) in enumerate(zip(rbms, self.linears)):
            if rbm.weight.shape != linear.weight.shape:
                raise ValueError(
                    f"RBM {i + 1} weight has shape {tuple(rbm.weight.shape)}, expected "
                    f"{tuple(linear.weight.shape)} (n_hidden, n_visible) for layer {i + 1}"
                )
            linear.weight.copy_(rbm.linear_weight)
            linear.bias.copy_(rbm.hidden_bias)
