"""Every init scheme's weight statistics match its formula; a zero constant is refused."""

import math

import pytest
import torch

from dbn_init.init import INIT_SCHEMES, init_weight
from dbn_init.models import Baseline

FAN_OUT, FAN_IN = 400, 600  # 240,000 weights: sample std within ~0.3% of the truth


def _filled(scheme, activation="relu", **kw):
    torch.manual_seed(0)
    w = torch.empty(FAN_OUT, FAN_IN)
    init_weight(w, scheme, activation, **kw)
    return w


@pytest.mark.parametrize(
    "scheme, activation, bound",
    [
        ("xavier_uniform", "sigmoid", math.sqrt(6 / (FAN_IN + FAN_OUT))),
        ("xavier_uniform", "tanh", 5 / 3 * math.sqrt(6 / (FAN_IN + FAN_OUT))),
        ("he_uniform", "relu", math.sqrt(2) * math.sqrt(3 / FAN_IN)),
    ],
)
def test_uniform_schemes_fill_minus_bound_to_bound(scheme, activation, bound):
    w = _filled(scheme, activation)
    assert w.abs().max().item() <= bound
    assert w.abs().max().item() > 0.99 * bound  # the range is really used
    assert w.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.01)  # std of U(-a, a)
    assert abs(w.mean().item()) < 0.01 * bound


@pytest.mark.parametrize(
    "scheme, activation, std",
    [
        ("xavier_normal", "relu", math.sqrt(2) * math.sqrt(2 / (FAN_IN + FAN_OUT))),
        ("he_normal", "relu", math.sqrt(2 / FAN_IN)),
        ("he_normal", "sigmoid", math.sqrt(1 / FAN_IN)),
        ("normal", "relu", 1.0),
    ],
)
def test_normal_schemes_have_the_formula_std(scheme, activation, std):
    w = _filled(scheme, activation)
    assert w.std().item() == pytest.approx(std, rel=0.01)
    assert abs(w.mean().item()) < 0.01 * std


def test_normal_std_and_constant_value_are_honoured():
    assert _filled("normal", std=0.05).std().item() == pytest.approx(0.05, rel=0.01)
    w = _filled("constant", value=0.2)
    assert torch.equal(w, torch.full_like(w, 0.2))


def test_zero_constant_and_unknown_schemes_are_refused():
    with pytest.raises(ValueError, match="value 0.*non-zero"):
        _filled("constant", value=0.0)
    with pytest.raises(ValueError, match="non-zero"):
        Baseline(num_classes=10, input_size=8, hidden=[4], init="constant", init_value=0.0)
    for std in (0.0, -1.0, float("nan")):  # std 0 is the all-zero start in disguise
        with pytest.raises(ValueError, match="normal init needs a finite model.init_std > 0"):
            _filled("normal", std=std)
    with pytest.raises(ValueError, match="unknown init scheme 'glorot'.*xavier_uniform"):
        _filled("glorot")
    assert set(INIT_SCHEMES) == {"xavier_uniform", "xavier_normal", "he_uniform", "he_normal", "normal", "constant"}


def test_baseline_initialises_every_layer_and_zeroes_biases():
    torch.manual_seed(0)
    model = Baseline(input_size=600, hidden=[400, 400], num_classes=10, init="he_normal", activation="relu")
    for layer in [*model.mlp.linears, model.mlp.head]:
        assert layer.weight.std().item() == pytest.approx(math.sqrt(2 / layer.in_features), rel=0.1)
        assert torch.count_nonzero(layer.bias) == 0
