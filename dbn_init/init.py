"""Initialisation schemes for the MLP's weights: a small registry of ``torch.nn.init`` functions.

Every scheme has the signature ``scheme(weight, activation, std, value) -> None`` (``std`` is read
by ``normal`` only, ``value`` by ``constant`` only) and fills a Linear weight of shape
``(fan_out, fan_in)`` in place; the activation picks the gain from
:func:`torch.nn.init.calculate_gain` (1 for sigmoid, sqrt(2) for ReLU, 5/3 for tanh).

===============  ===========================================  ===============================
name             distribution                                 reference
===============  ===========================================  ===============================
xavier_uniform   U(-a, a), a = gain * sqrt(6 / (fan_in+fan_out))  Glorot & Bengio (2010)
xavier_normal    N(0, gain^2 * 2 / (fan_in + fan_out))           Glorot & Bengio (2010)
he_uniform       U(-a, a), a = gain * sqrt(3 / fan_in)           He et al. (2015)
he_normal        N(0, gain^2 / fan_in)                          He et al. (2015)
normal           N(0, std^2), std = 1 by default: the naive start
constant         every weight = value (non-zero): the symmetric start
===============  ===========================================  ===============================
"""

from __future__ import annotations

import math
from typing import Callable, Literal

from torch import Tensor, nn

__all__ = ["INIT_SCHEMES", "InitName", "init_weight", "check_constant"]

InitName = Literal["xavier_uniform", "xavier_normal", "he_uniform", "he_normal", "normal", "constant"]
Scheme = Callable[[Tensor, str, float, float], None]  # (weight, activation, std, value)


def check_constant(value: float) -> None:
    """Refuse a zero constant start: every unit of a layer would compute the same function and
    receive the same (through ReLU/tanh, zero) gradient, so the network could never learn."""
    if value == 0.0:
        raise ValueError(
            "constant init with value 0 makes every weight gradient identical (and zero through "
            "ReLU/tanh), so the network cannot learn; pick a non-zero model.init_value "
            "(e.g. 0.01) or another scheme such as xavier_uniform"
        )


def _constant(weight: Tensor, activation: str, std: float, value: float) -> None:
    check_constant(value)
    nn.init.constant_(weight, value)


def _normal(weight: Tensor, activation: str, std: float, value: float) -> None:
    if not (math.isfinite(std) and std > 0):  # std 0 is the all-zero start again, with the same flaw
        raise ValueError(
            f"normal init needs a finite model.init_std > 0, got {std}; e.g. 1.0 (the naive N(0, 1) reference) or 0.01"
        )
    nn.init.normal_(weight, 0.0, std)


INIT_SCHEMES: dict[str, Scheme] = {
    "xavier_uniform": lambda w, act, std, value: nn.init.xavier_uniform_(w, gain=nn.init.calculate_gain(act)),
    "xavier_normal": lambda w, act, std, value: nn.init.xavier_normal_(w, gain=nn.init.calculate_gain(act)),
    "he_uniform": lambda w, act, std, value: nn.init.kaiming_uniform_(w, mode="fan_in", nonlinearity=act),
    "he_normal": lambda w, act, std, value: nn.init.kaiming_normal_(w, mode="fan_in", nonlinearity=act),
    "normal": _normal,
    "constant": _constant,
}


def init_weight(weight: Tensor, scheme: str, activation: str, std: float = 1.0, value: float = 0.01) -> None:
    """Fill a Linear ``weight`` of shape (fan_out, fan_in) in place by scheme name.

    ``std`` is used by "normal", ``value`` by "constant". Raises ValueError for an unknown name,
    a zero constant, or a normal std that is not a positive number.
    """
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"unknown init scheme {scheme!r}; expected one of {sorted(INIT_SCHEMES)}")
    INIT_SCHEMES[scheme](weight, activation, std, value)
