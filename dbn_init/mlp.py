"""The one MLP used by every model: Linear + activation blocks, then a head: a classifier's or
regressor's Linear, or an autoencoder's decoder (the hidden layers unrolled back to the input)."""

from __future__ import annotations

from typing import Literal, Sequence

import torch
from torch import Tensor, nn

from .init import init_weight
from .rbm import RBM

__all__ = ["MLP", "Activation"]

Activation = Literal["relu", "sigmoid", "tanh", "linear"]
# The module of each activation name; a hidden unit type's name is that of the activation computing its mean.
ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "linear": nn.Identity}


class MLP(nn.Module):
    """``input_size -> hidden[0] -> ... -> hidden[-1] -> head``.

    ``features`` is an ``nn.Sequential`` of (Linear, activation) pairs, each followed by
    ``nn.Dropout(dropout)`` when ``dropout > 0``; ``activation`` is one name for every hidden layer
    or one per layer (``"linear"``: none). ``head`` is a Linear producing ``num_classes`` logits;
    or, with ``num_classes=None``, the decoder of a deep autoencoder (Hinton & Salakhutdinov 2006):
    the hidden layers unrolled, ``hidden[-1] -> ... -> hidden[0] -> input_size``, each layer
    reconstructing the one below with a sigmoid where that layer is sigmoid, else linearly; its
    output is left as pre-activations (the model applies the sigmoid of inputs in [0, 1], or none).
    Linear weights are (out_features, in_features), the RBM orientation too. ``input_dropout``
    drops input features before the first layer (Hinton et al. 2012 used 0.2 with 0.5 in the
    hidden layers); it is a module of its own, outside ``features``, so parameter names do not
    depend on it. With ``centred``, the first layer reads its inputs less ``input_mean`` (a buffer,
    set by :meth:`centre_`), a reparametrisation that keeps the function and centres the gradients.
    """

    def __init__(
        self,
        input_size: int,
        hidden: Sequence[int],
        num_classes: int | None,
        activation: Activation | Sequence[Activation] = "relu",
        dropout: float = 0.0,
        input_dropout: float = 0.0,
        centred: bool = False,
    ) -> None:
        super().__init__()
        self.centred = centred
        if centred:
            self.register_buffer("input_mean", torch.zeros(input_size))
        sizes = [input_size, *hidden]
        self.activations = [activation] * len(hidden) if isinstance(activation, str) else list(activation)
        if len(self.activations) != len(hidden) or not set(self.activations) <= set(ACTIVATIONS):
            raise ValueError(
                f"activation must be one of {sorted(ACTIVATIONS)}, or one per hidden layer, got {activation!r}"
            )
        layers: list[nn.Module] = []
        for fan_in, fan_out, name in zip(sizes[:-1], sizes[1:], self.activations):
            layers += [nn.Linear(fan_in, fan_out), ACTIVATIONS[name]()]
            layers += [nn.Dropout(dropout)] if dropout else []
        self.input_dropout = nn.Dropout(input_dropout) if input_dropout else nn.Identity()
        self.features = nn.Sequential(*layers)
        self.decoder_activations: list[str] = []  # what each decoder layer feeds, top to bottom
        if num_classes is not None:
            self.head = nn.Linear(sizes[-1], num_classes)
        else:  # the decoder: layer k reconstructs layer k - 1 as RBM k's visible units would
            below = ["sigmoid" if name == "sigmoid" else "linear" for name in self.activations[:-1]]
            self.decoder_activations = [*below[::-1], "linear"]  # the output: pre-activations
            decoder: list[nn.Module] = []
            for fan_in, fan_out, name in zip(sizes[:0:-1], sizes[-2::-1], self.decoder_activations):
                decoder += [nn.Linear(fan_in, fan_out), ACTIVATIONS[name]()]
            self.head = nn.Sequential(*decoder[:-1])

    @property
    def linears(self) -> list[nn.Linear]:
        """The hidden Linear layers, bottom to top (the head excluded)."""
        return [m for m in self.features if isinstance(m, nn.Linear)]

    @property
    def decoder(self) -> list[nn.Linear]:
        """An autoencoder's decoder Linear layers, top to bottom; [] for a classifier's head."""
        return [m for m in self.head if isinstance(m, nn.Linear)] if isinstance(self.head, nn.Sequential) else []

    def forward_features(self, x: Tensor) -> Tensor:
        """(batch, input_size) -> (batch, hidden[-1])."""
        return self.features(self.input_dropout(x - self.input_mean if self.centred else x))

    @torch.no_grad()
    def centre_(self, mean: Tensor) -> None:
        """Read the inputs less ``mean`` from now on, computing the same function: the first layer's
        bias takes ``W (mean - input_mean)``. Its weights' gradients, each an input times the unit's
        error, then take both signs where inputs lie in [0, 1] (LeCun, Bottou, Orr & Müller 1998,
        "Efficient BackProp", 4.3), instead of moving every weight of a unit one way, which with
        Adam's steps of about the rate each can switch a unit off for good on wide inputs."""
        first = self.linears[0]
        first.bias.add_(first.weight @ (mean.to(first.weight) - self.input_mean))
        self.input_mean.copy_(mean)

    def forward_head(self, features: Tensor) -> Tensor:
        """(batch, hidden[-1]) -> logits (batch, num_classes), or a decoder's (batch, input_size)."""
        return self.head(features)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    @torch.no_grad()
    def init_weights(self, scheme: str, std: float = 1.0, value: float = 0.01) -> None:
        """Initialise every Linear (head included) by scheme name, each with the gain of the
        activation it feeds (a classifier's head: the top hidden layer's); biases start at zero."""
        layers = [*self.linears, *self.decoder] if self.decoder else [*self.linears, self.head]
        for layer, activation in zip(layers, [*self.activations, *(self.decoder_activations or self.activations[-1:])]):
            init_weight(layer.weight, scheme, activation, std=std, value=value)
            nn.init.zeros_(layer.bias)

    @torch.no_grad()
    def load_rbms(self, rbms: Sequence[RBM]) -> None:
        """Copy each RBM's weight (n_hidden, n_visible) and hidden bias into the matching Linear,
        and into an autoencoder's decoder the transposed weight and the visible bias.

        The MLP must have the stack's sizes and each layer its RBM's hidden activation, as the DBN
        builds them, so that layer k computes exactly the mean hidden activation of RBM k given
        layer k - 1: p(h_k = 1 | h_{k-1}) for sigmoid units, max(0, W h_{k-1} + c) for NReLU
        units, W h_{k-1} + c for linear ones; and decoder layer k then computes RBM k's visible
        mean given h_k, over its ``input_scale`` (the down-pass).
        """
        if len(rbms) != len(self.linears):
            raise ValueError(f"expected {len(self.linears)} RBMs for this MLP, got {len(rbms)}")
        for rbm, linear in zip(rbms, self.linears):
            linear.weight.copy_(rbm.linear_weight)
            linear.bias.copy_(rbm.hidden_bias)
        if self.centred:  # the first layer reads x - input_mean: W x + c = W (x - input_mean) + c + W input_mean
            self.linears[0].bias.add_(self.linears[0].weight @ self.input_mean)
        for rbm, linear in zip(reversed(rbms), self.decoder):
            linear.weight.copy_(rbm.weight.t() / rbm.input_scale)
            linear.bias.copy_(rbm.visible_bias / rbm.input_scale)
