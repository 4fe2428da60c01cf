"""load_pretrained_: a user's own network started from a stack pretrained on sklearn digit_pixels."""

import copy
import json
import warnings

import numpy as np
import pytest
import torch
from lightning.pytorch import LightningDataModule
from sklearn.neural_network import BernoulliRBM
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from dbn_init.io import StackFile, load_stack, save_stack
from dbn_init.models import DBN, Baseline
from dbn_init.pretrain import pretrain
from dbn_init.rbm import RBM, make_rbm, up_pass
from dbn_init.transfer import load_pretrained_


class Digits(LightningDataModule):
    """sklearn digit_pixels as pixels / 16 in [0, 1], (1797, 64), in a seeded shuffle."""

    def __init__(self, x: torch.Tensor) -> None:
        super().__init__()
        self.x = x

    def train_dataloader(self):
        return DataLoader(
            TensorDataset(self.x), batch_size=100, shuffle=True, generator=torch.Generator().manual_seed(0)
        )


@pytest.fixture(scope="module")
def dbn(digit_pixels) -> DBN:
    """A DBN 64 -> 32 -> 16 pretrained on digit_pixels (3 CD epochs per RBM)."""
    model = DBN(recipe="textbook", input_size=64, num_classes=10, hidden=[32, 16], pretrain_epochs=3)
    pretrain(model, Digits(digit_pixels))
    assert model.pretrained
    return model


def user_net(seed: int = 1) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 32), nn.Sigmoid(), nn.Linear(32, 16), nn.Sigmoid(), nn.Linear(16, 10))


def features(net: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return net[:4](x)


def test_from_a_dbn_reproduces_its_up_pass_exactly(dbn, digit_pixels):
    net = user_net()
    head = copy.deepcopy(net[4].state_dict())
    before = features(net, digit_pixels)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a matching sigmoid network: no warning
        set_layers = load_pretrained_(net, dbn)
    assert set_layers == [net[0], net[2]]
    out = features(net, digit_pixels)
    assert torch.equal(out, up_pass(dbn.rbms, digit_pixels))
    assert not torch.allclose(out, before, atol=1e-2)  # it did change the network
    assert all(torch.equal(head[k], v) for k, v in net[4].state_dict().items())  # the head keeps its init


def test_lazy_linear_layers_take_their_input_size_from_the_stack(dbn, digit_pixels):
    net = nn.Sequential(nn.LazyLinear(32), nn.Sigmoid(), nn.LazyLinear(16), nn.Sigmoid(), nn.LazyLinear(10))
    load_pretrained_(net, dbn)
    assert torch.equal(features(net, digit_pixels), up_pass(dbn.rbms, digit_pixels))
    assert net(digit_pixels).shape == (len(digit_pixels), 10)  # the head, still lazy, builds on its first batch


def test_weight_normalised_layers_take_the_stack_through_their_parametrization(dbn, digit_pixels):
    from torch.nn.utils.parametrizations import weight_norm

    net = user_net()
    net[0], net[2] = weight_norm(net[0]), weight_norm(net[2])  # weight = g v / |v|, computed from g and v
    load_pretrained_(net, dbn)
    assert torch.allclose(features(net, digit_pixels), up_pass(dbn.rbms, digit_pixels), atol=1e-6)


def test_from_exported_safetensors_npz_and_rbm_list(dbn, digit_pixels, tmp_path):
    reference = up_pass(dbn.rbms, digit_pixels)
    path = save_stack(list(dbn.rbms), tmp_path / "dbn.safetensors")
    npz = tmp_path / "dbn.npz"
    np.savez(
        npz,
        **{
            f"{k}_{i}": getattr(r, k).detach().numpy()
            for i, r in enumerate(dbn.rbms)
            for k in ("weight", "visible_bias", "hidden_bias")
        },
    )
    for stack in (path, str(path), load_stack(path), npz, list(dbn.rbms), dbn.rbms):
        net = user_net()
        load_pretrained_(net, stack)
        assert torch.equal(features(net, digit_pixels), reference), type(stack)


def test_from_fitted_sklearn_bernoulli_rbms(digit_pixels):
    x = digit_pixels.double().numpy()
    first = BernoulliRBM(n_components=32, n_iter=3, random_state=0).fit(x)
    second = BernoulliRBM(n_components=16, n_iter=3, random_state=0).fit(first.transform(x))
    net = user_net()
    load_pretrained_(net, [first, second])
    out = features(net, digit_pixels)
    assert torch.equal(out, up_pass(load_stack([first, second]).rbms, digit_pixels))
    # scikit-learn's own float64 up-pass, up to the float32 of the network
    torch.testing.assert_close(out.double(), torch.from_numpy(second.transform(first.transform(x))), atol=1e-6, rtol=0)


def test_float64_module_on_another_dtype_keeps_its_dtype(dbn, digit_pixels):
    net = user_net().double()
    load_pretrained_(net, dbn)
    assert net[0].weight.dtype == torch.float64
    assert torch.equal(net[0].weight, dbn.rbms[0].weight.double())
    torch.testing.assert_close(
        features(net, digit_pixels.double()).float(), up_pass(dbn.rbms, digit_pixels), atol=1e-6, rtol=0
    )


def test_explicit_layers(dbn, digit_pixels):
    class TwoTower(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = nn.Linear(16, 10)  # registered first: registration order would pick it
            self.top = nn.Linear(32, 16)
            self.bottom = nn.Linear(64, 32)

        def forward(self, x):
            return self.head(torch.sigmoid(self.top(torch.sigmoid(self.bottom(x)))))

    net = TwoTower()
    with pytest.raises(ValueError, match="layer 'head' is Linear"):
        load_pretrained_(net, dbn)
    assert load_pretrained_(net, dbn, layers=[net.bottom, net.top]) == [net.bottom, net.top]
    with torch.no_grad():
        out = torch.sigmoid(net.top(torch.sigmoid(net.bottom(digit_pixels))))
    assert torch.equal(out, up_pass(dbn.rbms, digit_pixels))


def test_explicit_layers_checked(dbn):
    net = user_net()
    with pytest.raises(ValueError) as err:
        load_pretrained_(net, dbn, layers=[net[0], nn.Linear(32, 16), net[1]])
    message = str(err.value)
    assert "3 problem(s)" in message and "lists 3 layer(s) but the stack has 2 RBMs" in message
    assert "layers[1] is not a submodule" in message and "layers[2] is a Sigmoid, expected an nn.Linear" in message


def test_transposed_stack_refused_and_module_unchanged(dbn, tmp_path):
    wrong = []  # RBMs built the wrong way round: RBM(n_hidden, n_visible), weight (n_visible, n_hidden)
    for rbm in dbn.rbms:
        flipped = make_rbm(rbm.n_hidden, rbm.n_visible)
        with torch.no_grad():
            flipped.weight.copy_(rbm.weight.t())
        wrong.append(flipped)
    net = user_net()
    before = copy.deepcopy(net.state_dict())
    with pytest.raises(ValueError) as err:
        load_pretrained_(net, wrong)
    message = str(err.value)
    assert "3 problem(s)" in message and "nothing was changed" in message
    assert "broken layer chain: layer 0 has n_hidden=64 but layer 1 has n_visible=16" in message
    assert "layer '0' is Linear(64, 32), the transpose of RBM 1 (32 visible -> 64 hidden units)" in message
    assert "build it as nn.Linear(32, 64)" in message
    assert "layer '2' is Linear(32, 16), the transpose of RBM 2" in message
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    # a file whose weights were stored (n_visible, n_hidden): load_stack names it, the module stays as it was
    path = tmp_path / "transposed.npz"
    rbm = dbn.rbms[0]
    np.savez(
        path,
        weight_0=rbm.weight.detach().t().numpy(),
        visible_bias_0=rbm.visible_bias.detach().numpy(),
        hidden_bias_0=rbm.hidden_bias.detach().numpy(),
    )
    with pytest.raises(ValueError, match=r"weight_0 has shape \(64, 32\) .* the weight looks transposed"):
        load_pretrained_(net, path)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_mismatched_sizes_all_listed(dbn):
    net = nn.Sequential(nn.Linear(64, 30), nn.Sigmoid(), nn.Linear(30, 16, bias=False), nn.Sigmoid())
    before = copy.deepcopy(net.state_dict())
    with pytest.raises(ValueError) as err:
        load_pretrained_(net, dbn)
    message = str(err.value)
    assert "3 problem(s)" in message
    assert (
        "layer '0' is Linear(64, 30) but RBM 1 maps 64 visible to 32 hidden units; build it as nn.Linear(64, 32)"
        in message
    )
    assert "layer '2' is Linear(30, 16) but RBM 2 maps 32 visible" in message and "has no bias" in message
    assert "went to its first 2 Linear layers in the order they were registered (0, 2); if others" in message
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_too_few_linear_layers_refused(dbn):
    net = nn.Sequential(nn.Linear(64, 32), nn.Sigmoid())
    before = copy.deepcopy(net.state_dict())
    with pytest.raises(
        ValueError,
        match=r"the module has 1 nn.Linear layer\(s\) but the stack has 2 RBMs; give it at "
        r"least 2 Linear layers, or pass fewer RBMs \(e.g. stack.rbms\[:1\]\)",
    ):
        load_pretrained_(net, dbn)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert load_pretrained_(net, list(dbn.rbms)[:1]) == [net[0]]


def test_relu_after_sigmoid_stack_warns_naming_the_layer(dbn, digit_pixels):
    net = nn.Sequential(
        nn.Linear(64, 32),
        nn.ReLU(),
        nn.Dropout(0.1),
        nn.Linear(32, 16),
        nn.Dropout(0.1),
        nn.Sigmoid(),
        nn.Linear(16, 10),
    )
    with pytest.warns(UserWarning) as record:
        load_pretrained_(net, dbn)
    messages = [str(w.message) for w in record]
    assert len(messages) == 1  # layer '3' is followed (after Dropout) by its Sigmoid: no warning
    assert (
        "layer '0' is followed by ReLU, but the stack's hidden units there are sigmoid, computed by nn.Sigmoid"
        in messages[0]
    )
    assert torch.equal(net[0].weight, dbn.rbms[0].weight)  # set anyway: fine-tuning may still recover


def test_activation_found_in_registration_order(dbn):
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.act1 = nn.Linear(64, 32), nn.Tanh()
            self.fc2 = nn.Linear(32, 16)  # followed by no activation module: its forward may use torch.sigmoid

    with pytest.warns(UserWarning, match="layer 'fc1' is followed by Tanh") as record:
        load_pretrained_(Net(), dbn)
    assert len(record) == 1
    nested = nn.Sequential(
        nn.Sequential(nn.Linear(64, 32)), nn.Sequential(nn.Sigmoid(), nn.Linear(32, 16)), nn.Linear(16, 16)
    )  # the second layer of the stack has no activation after it
    with pytest.warns(UserWarning, match="layer '1.1' is followed by Linear") as record:
        load_pretrained_(nested, dbn)
    assert len(record) == 1  # '0.0' is followed by '1.0', a Sigmoid
    with pytest.warns(UserWarning, match="layer '2' is followed by nothing") as record:
        load_pretrained_(nn.Sequential(nn.Linear(64, 32), nn.Sigmoid(), nn.Linear(32, 16)), dbn)
    assert len(record) == 1


def test_standardised_stack_warns_with_the_transform(tmp_path):
    wine_like = torch.randn(200, 5, generator=torch.Generator().manual_seed(0)) * 10 + 3
    mean, std = wine_like.mean(0), wine_like.std(0)
    rbm = make_rbm(5, 4, "gaussian")
    path = save_stack(
        [rbm], tmp_path / "wine.safetensors", scaling="standardize", stats={"feature_mean": mean, "feature_std": std}
    )
    with pytest.warns(UserWarning) as record:
        load_pretrained_(nn.Sequential(nn.Linear(5, 4), nn.Sigmoid()), path)
    assert len(record) == 1
    message = str(record[0].message)
    assert "pretrained on inputs scaled 'standardize'" in message
    assert (
        f"x = (raw - stack.feature_mean) / stack.feature_std, with stack = dbn_init.load_stack({str(path)!r})"
        in message
    )
    identity = save_stack(
        [rbm],
        tmp_path / "unit.safetensors",
        scaling="unit",
        stats={"feature_mean": torch.zeros(5), "feature_std": torch.ones(5)},
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an identity transform needs no warning
        load_pretrained_(nn.Sequential(nn.Linear(5, 4), nn.Sigmoid()), identity)


def test_a_fitted_dbn_carries_its_data_s_scaling_into_load_pretrained_and_save_stack_and_its_checkpoint(tmp_path):
    from lightning.pytorch import Trainer
    from sklearn.datasets import load_wine

    from dbn_init.data import ArrayDataModule

    x, y = load_wine(return_X_y=True)
    data = ArrayDataModule(x, y, scaling="standardize")
    model = DBN(hidden=[8], pretrain_epochs=1)
    trainer = Trainer(max_epochs=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                      enable_checkpointing=False)  # fmt: skip
    trainer.fit(model, datamodule=data)
    net = nn.Sequential(nn.Linear(13, 8), nn.ReLU(), nn.Linear(8, 3))
    with pytest.warns(UserWarning, match=r"scaled 'standardize'.*stack = dbn_init.load_stack\(dbn_init.save_stack\("):
        load_pretrained_(net, model)  # as it warns for the same stack in a file
    raw = torch.as_tensor(x[:7], dtype=torch.float32)
    saved = load_stack(save_stack(model, tmp_path / "dbn.safetensors"))
    assert saved.scaling == "standardize" and torch.allclose(saved.scale(raw), data.scale(raw), atol=1e-6)
    trainer.save_checkpoint(tmp_path / "dbn.ckpt")
    restored = DBN.load_from_checkpoint(tmp_path / "dbn.ckpt")
    assert torch.equal(restored.trained_on["stats"]["feature_std"], model.trained_on["stats"]["feature_std"])
    assert torch.equal(load_stack(save_stack(restored, tmp_path / "again.safetensors")).scale(raw), saved.scale(raw))
    alone = DBN(hidden=[8], pretrain_epochs=1)
    pretrain(alone, ArrayDataModule(x, y, scaling="standardize"))  # the greedy loop outside a fit records it too
    assert torch.allclose(load_stack(save_stack(alone, tmp_path / "alone.safetensors")).scale(raw), saved.scale(raw))


def test_untrained_dbn_warns_and_unknown_stack_refused():
    model = DBN(recipe="textbook", input_size=64, num_classes=10, hidden=[32, 16], pretrain_epochs=3)
    with pytest.warns(UserWarning, match="the RBM stack is not pretrained yet, so this is its random start"):
        load_pretrained_(user_net(), model)
    with pytest.raises(RuntimeError, match="this DBN has no layers yet"):
        load_pretrained_(user_net(), DBN(recipe="textbook", hidden=[32, 16]))
    with pytest.raises(RuntimeError, match=r"Baseline\(x\): this Baseline has no layers yet.*fit it first"):
        Baseline(hidden=[8])(torch.rand(2, 64))
    with pytest.raises(ValueError, match=r"expected a stack file path, .* got \['int', 'str'\]"):
        load_pretrained_(user_net(), [1, "a"])
    with pytest.raises(ValueError, match="layer 0 has n_hidden=32 but layer 1 has n_visible=20"):
        load_pretrained_(user_net(), [RBM(64, 32), RBM(20, 16)])


def test_recorded_relu_units_expect_relu(dbn):
    relu_stack = StackFile(list(dbn.rbms), {"hidden_units": json.dumps(["relu", "relu"])})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_pretrained_(nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU()), relu_stack)
    with pytest.warns(
        UserWarning,
        match="layer '0' is followed by Sigmoid, but the stack's hidden units there are relu, computed by nn.ReLU",
    ):
        load_pretrained_(nn.Sequential(nn.Linear(64, 32), nn.Sigmoid(), nn.Linear(32, 16), nn.ReLU()), relu_stack)


def test_diverged_rbms_refused():
    rbm = RBM(64, 32)
    with torch.no_grad():
        rbm.weight[0, 0] = float("nan")
    net = user_net()
    before = copy.deepcopy(net.state_dict())
    with pytest.raises(ValueError, match=r"rbms\[0\]\.weight holds 1 NaN and 0 Inf value\(s\).*a diverged RBM"):
        load_pretrained_(net, [rbm])
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
