"""Start a network of one's own from a pretrained RBM stack, in the style of :mod:`torch.nn.init`.

:func:`pretrain_stack` pretrains a stack on rows of an array, outside any Lightning script.
:func:`load_pretrained_` fills the Linear layers of any ``nn.Module`` in place from a stack: our
``.safetensors`` file, a DBN ``.ckpt``, a ``.npz`` (anything :func:`dbn_init.io.load_stack`
reads), a loaded :class:`~dbn_init.io.StackFile`, a list of RBMs, a :class:`~dbn_init.models.DBN`
or fitted scikit-learn ``BernoulliRBM`` estimators.

Orientation: an RBM's ``weight`` is ``(n_hidden, n_visible)``, an ``nn.Linear``'s is
``(out_features, in_features)``, so RBM k's weight (times its ``input_scale``, 1 except above
large NReLU activities) is copied into a ``Linear(n_visible, n_hidden)`` and its ``hidden_bias``
``(n_hidden,)`` into the bias; the visible bias has no place in a feed-forward layer and is
dropped (Hinton & Salakhutdinov 2006).
"""

from __future__ import annotations

import inspect
import os
import warnings
from typing import Any, Sequence

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from sklearn.neural_network import BernoulliRBM
from torch import Tensor, nn
from torch.nn.utils import parametrize

from .constraints import Interval, validate_params
from .data import EpochShuffle, TensorBatches
from .data.base import _keep_batch, batch_size_for
from .io import StackFile, load_stack, stack_problems
from .mlp import ACTIVATIONS
from .models import DBN, resolve_recipe
from .pretrain import CDSettings, PretrainData, greedy, make_trainer, quiet_lightning
from .rbm import RBM, check_visible, make_stack, visible_units_of

__all__ = ["pretrain_stack", "load_pretrained_"]

_TRANSPARENT = (nn.Dropout, nn.Identity)  # identity at inference: the activation may follow them


# pretrain_stack's short names for three of the DBN's options; the others keep the DBN's names
_SHORT = {"epochs": "pretrain_epochs", "lr": "pretrain_lr", "seed": "pretrain_seed"}
_SIZE = Interval(int, 1, None)


def pretrain_stack(
    x: Tensor | np.ndarray,
    hidden: Sequence[int],
    *,
    recipe: str | None = None,
    visible_units: str | None = None,
    hidden_units: str | None = None,
    epochs: int | Sequence[int] | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    gaussian_lr: float | None = None,
    cd_k: int | None = None,
    persistent: bool | None = None,
    seed: int = 0,
    accelerator: str = "cpu",
) -> list[RBM]:
    """Greedily pretrain an RBM stack on rows ``x`` (n_samples, n_features); returns the fitted
    RBMs, bottom to top, float32 on the CPU.

    For use outside Lightning: the same stage code as ``train.py`` (:func:`dbn_init.pretrain.greedy`),
    on quiet Trainers. ``x`` is used as given: values in [0, 1] for Bernoulli visible units,
    standardised features for Gaussian ones (``visible_units`` None: the units that suit ``x``).
    The options are the DBN's (:class:`~dbn_init.models.DBN`, where each is documented and
    checked), with ``epochs`` for ``pretrain_epochs``, ``lr`` for ``pretrain_lr`` and ``seed`` for
    ``pretrain_seed``; one left None takes the DBN's default (its ``recipe``'s), and so do the DBN's
    options not named here: ``epochs`` None makes at least ``pretrain_updates`` CD updates per RBM,
    and ``batch_size`` None suits the rows (:func:`~dbn_init.data.base.batch_size_for`). ``seed`` also seeds
    the starting weights and the mini-batch order: the same seed, the same RBMs.
    """
    # The DBN's options as given (batch_size is pretrain_stack's own), in signature order.
    given = {k: v for k, v in locals().items() if k not in ("x", "batch_size", "accelerator") and v is not None}
    table = DBN._parameter_constraints  # the DBN's checks, under pretrain_stack's names
    constraints = {k: table[_SHORT.get(k, k)] for k in given if _SHORT.get(k, k) in table}
    validate_params("pretrain_stack", {**given, "batch_size": batch_size}, {**constraints, "batch_size": [None, _SIZE]})
    defaults = {k: p.default for k, p in inspect.signature(DBN.__init__).parameters.items() if k != "self"}
    options = {**defaults, **{_SHORT.get(k, k): v for k, v in given.items()}}
    options.update(resolve_recipe(options))
    validate_params("pretrain_stack", options, {}, rules=DBN._parameter_rules)
    x = torch.as_tensor(np.asarray(x, dtype=np.float32) if not isinstance(x, Tensor) else x, dtype=torch.float32)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"expected x of shape (n_samples, n_features) with n_samples >= 1, got {tuple(x.shape)}")
    options["visible_units"] = options["visible_units"] or visible_units_of(x)
    batch_size = batch_size or batch_size_for(len(x))
    fix = "Scale x to [0, 1] (x / x.max() for pixels), or standardise it and pass visible_units='gaussian'."
    check_visible(x, options["visible_units"], where="x", fix=fix)
    settings = CDSettings(options, len(options["hidden"]))
    with torch.random.fork_rng(devices=[]), quiet_lightning():  # weights from seed; the caller's RNG left alone
        warnings.filterwarnings("ignore", message=r".* but Gaussian visible units model")  # x's check said so
        torch.manual_seed(seed)
        rbms = make_stack([x.shape[1], *options["hidden"]], options["visible_units"], options["hidden_units"])
        rbms.requires_grad_(False)
        data = PretrainData(_Rows(x, batch_size, seed), settings.steps_per_batch)
        for _ in greedy(rbms, settings, data, lambda stage, n: make_trainer(n, dict(accelerator=accelerator))):
            pass
    return [rbm.cpu() for rbm in rbms]


class _Rows(LightningDataModule):
    """Rows of a tensor in shuffled mini-batches, for :func:`pretrain_stack`."""

    def __init__(self, x: Tensor, batch_size: int, seed: int) -> None:
        super().__init__()
        self.pretrain_x, self.batch_size, self.seed = x, batch_size, seed

    def pretrain_dataloader(self, steps_per_batch: int = 1):
        dataset = TensorBatches(self.pretrain_x, torch.zeros(len(self.pretrain_x), dtype=torch.long))
        return torch.utils.data.DataLoader(
            dataset,
            batch_size=self.batch_size * steps_per_batch,
            sampler=EpochShuffle(dataset, self.seed),
            collate_fn=_keep_batch,
        )


def load_pretrained_(module: nn.Module, stack: Any, layers: Sequence[nn.Linear] | None = None) -> list[nn.Linear]:
    r"""Fill the first k ``nn.Linear`` layers of ``module`` with the k RBMs of a pretrained stack.

    For RBM k (weight ``W_k`` of shape (n_hidden_k, n_visible_k), hidden bias ``c_k`` of shape
    (n_hidden_k,)) and the k-th layer (weight (out_features, in_features), bias (out_features,)):

    .. math::
        \text{weight} \leftarrow s_k W_k, \qquad \text{bias} \leftarrow c_k

    (``s_k``: the RBM's ``input_scale``, what the stack multiplies its input by; 1 except for an
    RBM above NReLU activities larger than its unit-variance visible units)

    so that layer k followed by the stack's hidden activation (``nn.Sigmoid`` for sigmoid units)
    computes p(h_k = 1 | h_{k-1}) = sigmoid(W_k h_{k-1} + c_k), and the first 2k modules of
    ``nn.Sequential(Linear, Sigmoid, Linear, Sigmoid, ...)`` reproduce the stack's up-pass
    exactly. Fine-tuning the whole network with backprop from there is the recipe of
    Hinton & Salakhutdinov (2006), "Reducing the dimensionality of data with neural networks".

    Args:
        module: the network to fill, in place; the layers keep their dtype and device.
        stack: a path (str or PathLike) to anything :func:`dbn_init.io.load_stack` reads (a
            dbn_init ``.safetensors``, a DBN ``.ckpt``, a ``.npz``), a :class:`~dbn_init.io.StackFile`,
            a list of :class:`~dbn_init.rbm.RBM` (bottom to top), a :class:`~dbn_init.models.DBN`,
            or a list of fitted ``sklearn.neural_network.BernoulliRBM``.
        layers: the Linear layers to fill, one per RBM, bottom to top; by default the first k
            ``nn.Linear`` modules of ``module`` in registration order (``module.modules()``). An
            ``nn.LazyLinear`` not yet built takes its input size from its RBM.

    Returns:
        The layers that were set, bottom to top.

    Raises:
        ValueError: if the RBMs do not chain or hold NaN/Inf values, if there are too few Linear
            layers, or if any layer's shape does not match its RBM (a transposed one is named as
            such). Everything is checked before any layer is changed, so on error the module is
            untouched, and one error lists every problem.
        RuntimeError: for a DBN with no layers yet (made with input_size=None and not fitted).

    Warns:
        When the activation module after a layer (its successor in an ``nn.Sequential``, else the
        next module in registration order) differs from the stack's hidden units, when the
        stack was pretrained on transformed inputs (e.g. standardised), which the module's inputs
        must then receive too, and when a DBN's stack is not pretrained yet.

    Example:
        >>> net = nn.Sequential(nn.Linear(64, 32), nn.Sigmoid(), nn.Linear(32, 10))
        >>> load_pretrained_(net, "dbn.safetensors")  # doctest: +SKIP
        [Linear(in_features=64, out_features=32, bias=True)]
    """
    loaded = _resolve(stack)
    targets, names = _targets(module, loaded.rbms, layers, stack_problems(loaded.rbms))
    for layer, name, unit in zip(targets, names, loaded.hidden_units, strict=True):
        _warn_activation(module, layer, name, unit)
    _warn_scaling(loaded, stack)
    with torch.no_grad():
        for rbm, layer in zip(loaded.rbms, targets, strict=True):
            if parametrize.is_parametrized(layer, "weight"):  # weight_norm's: set through its right inverse
                layer.weight = rbm.linear_weight.to(layer.weight)
            else:
                layer.weight.copy_(rbm.linear_weight)  # copy_ converts to the layer's dtype and device
            layer.bias.copy_(rbm.hidden_bias)
    return targets


# --- the stack ------------------------------------------------------------------------------
def _resolve(stack: Any) -> StackFile:
    """The stack as a :class:`StackFile`: as given, loaded from a path or from scikit-learn
    estimators, a DBN's with the record of the data it was fitted on, or RBMs (bottom to top)
    wrapped as they are."""
    if isinstance(stack, (str, os.PathLike)):
        return load_stack(stack)
    if isinstance(stack, StackFile):
        return stack
    if isinstance(stack, DBN):  # refused without layers, a warning if untrained; with the fit's data record
        recorded = stack.trained_on or {"stats": {}}
        scaling = {"scaling": recorded["scaling"]} if "scaling" in recorded else {}
        return StackFile(list(stack._stack("load_pretrained_", stacklevel=4)), scaling, dict(recorded["stats"]))
    if isinstance(stack, RBM):
        stack = [stack]
    if isinstance(stack, (list, tuple, nn.ModuleList)) and stack and all(isinstance(r, RBM) for r in stack):
        return StackFile(list(stack))
    if isinstance(stack, (list, tuple)) and stack and all(isinstance(e, BernoulliRBM) for e in stack):
        return load_stack(list(stack))  # checked there, fitted or not
    got = type(stack).__name__ if not isinstance(stack, (list, tuple)) else [type(e).__name__ for e in stack][:10]
    raise ValueError(
        f"load_pretrained_: expected a stack file path, a StackFile, a list of dbn_init RBMs, a DBN or a "
        f"list of fitted sklearn BernoulliRBM, got {got}"
    )


# --- the layers -----------------------------------------------------------------------------
def _targets(
    module: nn.Module, rbms: list[RBM], layers: Sequence[nn.Linear] | None, problems: list[str]
) -> tuple[list[nn.Linear], list[str]]:
    """The layers to fill, one per RBM, and their qualified names in ``module`` (e.g. "features.2",
    else "layers[i]"), after checking every one of them; raises one ValueError listing ``problems``
    (the stack's) and every problem found here, so that on error nothing is changed."""
    if layers is None:
        linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
        if len(linears) < len(rbms):
            problems.append(
                f"the module has {len(linears)} nn.Linear layer(s) but the stack has {len(rbms)} RBMs; "
                f"give it at least {len(rbms)} Linear layers, or pass fewer RBMs (e.g. stack.rbms[:"
                f"{len(linears)}])"
            )
        targets = linears[: len(rbms)]
    else:
        targets = list(layers)
        problems += _check_explicit(module, targets, len(rbms))
    qualified = {id(m): name or type(module).__name__ for name, m in module.named_modules()}
    names = [qualified.get(id(layer), f"layers[{i}]") for i, layer in enumerate(targets)]
    for i, (rbm, layer, name) in enumerate(zip(rbms, targets, names, strict=False)):  # targets may be short
        if isinstance(layer, nn.LazyLinear) and layer.has_uninitialized_params():  # its inputs are the RBM's
            layer(torch.zeros(1, rbm.n_visible, device=layer.weight.device))
        if isinstance(layer, nn.Linear):
            problems += _check_shape(i, rbm, layer, name)
    if problems:
        hint = ""
        if layers is None and len(targets) == len(rbms):  # the first Linears, as registered: say which
            hint = (
                f"\nThe stack went to its first {len(rbms)} Linear layers in the order they were registered "
                f"({', '.join(names)}); if others should receive it, name them: layers=[...], bottom to top."
            )
        raise ValueError(
            f"load_pretrained_: {len(problems)} problem(s) loading the stack into the {type(module).__name__}; "
            "nothing was changed:\n  - " + "\n  - ".join(problems) + hint
        )
    return targets, names


def _check_explicit(module: nn.Module, layers: list[Any], n_rbms: int) -> list[str]:
    problems = []
    if len(layers) != n_rbms:
        problems.append(
            f"layers= lists {len(layers)} layer(s) but the stack has {n_rbms} RBMs; pass one Linear per "
            "RBM, bottom to top"
        )
    inside = {id(m) for m in module.modules()}
    for i, layer in enumerate(layers):
        if not isinstance(layer, nn.Linear):
            problems.append(f"layers[{i}] is a {type(layer).__name__}, expected an nn.Linear")
        elif id(layer) not in inside:
            problems.append(f"layers[{i}] is not a submodule of the module; pass layers of the module itself")
    return problems


def _check_shape(i: int, rbm: RBM, layer: nn.Linear, name: str) -> list[str]:
    """Layer ``name`` against RBM i: weight (out, in) must be the RBM's (n_hidden, n_visible)."""
    want, got = tuple(rbm.weight.shape), tuple(layer.weight.shape)  # (n_hidden, n_visible), (out, in)
    fix = f"build it as nn.Linear({rbm.n_visible}, {rbm.n_hidden})"
    if got == want[::-1] and want[0] != want[1]:
        return [
            f"layer {name!r} is Linear({got[1]}, {got[0]}), the transpose of RBM {i + 1} ({rbm.n_visible} visible "
            f"-> {rbm.n_hidden} hidden units): Linear weights are (out_features, in_features) = (n_hidden, "
            f"n_visible), so {fix}; if the stack's weights were stored as (n_visible, n_hidden), re-export them "
            "transposed"
        ]
    problems = []
    if got != want:
        problems.append(
            f"layer {name!r} is Linear({got[1]}, {got[0]}) but RBM {i + 1} maps {rbm.n_visible} visible "
            f"to {rbm.n_hidden} hidden units; {fix}"
        )
    if layer.bias is None:
        problems.append(
            f"layer {name!r} has no bias, which receives RBM {i + 1}'s hidden bias; build it with bias=True"
        )
    return problems


# --- what the network should do around the layers -------------------------------------------
def _following(module: nn.Module, layer: nn.Module) -> tuple[nn.Module | None, bool]:
    """The module applied after ``layer``, and whether that order is certain.

    Inside ``nn.Sequential`` containers the next sibling is what runs next (certain; at the end
    of a nested Sequential, the next sibling of the enclosing one); elsewhere the next leaf
    module in registration order is only a hint (``forward`` may apply a functional activation).
    Dropout and Identity are skipped: at inference they pass the layer's output through.
    """
    parents = {id(child): parent for parent in module.modules() for child in parent.children()}
    node = layer
    while isinstance(parents.get(id(node)), nn.Sequential):
        siblings = list(parents[id(node)].children())
        after = siblings[[id(c) for c in siblings].index(id(node)) + 1 :]
        following = next((c for c in after if not isinstance(c, _TRANSPARENT)), None)
        if following is not None:  # its first leaf module (itself, if it has no children)
            return next(m for m in following.modules() if not list(m.children())), True
        node = parents[id(node)]
    if node is module:  # the end of the whole network: nothing follows
        return None, True
    leaves = [m for m in module.modules() if not list(m.children())]
    index = next((j for j, m in enumerate(leaves) if m is layer), len(leaves))
    return next((m for m in leaves[index + 1 :] if not isinstance(m, _TRANSPARENT)), None), False


def _warn_activation(module: nn.Module, layer: nn.Linear, name: str, unit: str) -> None:
    """Warn when the activation after ``layer`` is not the one its RBM's hidden ``unit`` type computes."""
    expected = ACTIVATIONS.get(unit)  # the module that computes the unit type's mean
    following, certain = _following(module, layer)
    is_activation = type(following).__module__ == nn.Sigmoid.__module__  # torch.nn.modules.activation
    if expected is None or isinstance(following, expected) or (unit == "linear" and not is_activation):
        return
    if certain or is_activation:
        got = type(following).__name__ if following is not None else "nothing"
        warnings.warn(
            f"load_pretrained_: layer {name!r} is followed by {got}, but the stack's hidden units there are "
            f"{unit}, computed by nn.{expected.__name__}; with another activation the layer's outputs are "
            "not the pretrained features (fine-tuning may still recover)",
            stacklevel=3,
        )


def _warn_scaling(loaded: StackFile, source: Any) -> None:
    """Warn once when the stack was pretrained on inputs transformed from the raw data."""
    stats, x = loaded.stats, "raw"
    if not _identity(stats, "raw_low", "raw_high"):
        x = "(raw - stack.stats['raw_low']) / (stack.stats['raw_high'] - stack.stats['raw_low'])"
    if not _identity(stats, "feature_mean", "feature_std"):
        x = f"({x} - stack.feature_mean) / stack.feature_std"
    if x == "raw":
        return
    origin = "the StackFile"
    if isinstance(source, (str, os.PathLike)):
        origin = f"dbn_init.load_stack({os.fspath(source)!r})"
    elif isinstance(source, DBN):
        origin = "dbn_init.load_stack(dbn_init.save_stack(dbn, path))"
    warnings.warn(
        f"load_pretrained_: the stack was pretrained on inputs scaled {loaded.scaling!r}, so the module's "
        f"inputs must be transformed the same way: x = {x}, with stack = {origin} (stack.scale(raw) "
        "does it)",
        stacklevel=3,
    )


def _identity(stats: dict[str, torch.Tensor], shift: str, scale: str) -> bool:
    """Whether a recorded step is absent or the identity: ``(x - mean) / std`` with 0 and 1, or
    ``(x - raw_low) / (raw_high - raw_low)`` with 0 and 1."""
    return shift not in stats or (bool((stats[shift] == 0).all()) and bool((stats[scale] == 1).all()))
