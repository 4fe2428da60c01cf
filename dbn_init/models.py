"""LightningModules: one fine-tuning recipe, two ways to start it.

:class:`Classifier` holds the MLP, the cross-entropy step, the optimizer and the accuracy
metrics. :class:`Baseline` starts the MLP from an initialisation scheme (Xavier, He, normal,
constant); :class:`DBN` starts it from a greedily pretrained RBM stack. Nothing else differs.

Data flow of a DBN fit: pretraining (one Trainer fit per RBM, :func:`dbn_init.pretrain.pretrain`,
run from ``on_fit_start`` for the stages not yet done) -> transfer (each RBM's W and hidden bias
become a Linear layer with the RBM's hidden activation, sigmoid or ReLU) -> fine-tune (this module's own fit) -> test.
"""

from __future__ import annotations

import inspect
import itertools
import math
import os
import warnings
from functools import partial
from typing import Any, Callable, Literal, Mapping, get_args

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule, Trainer
from torch import Tensor, nn
from torchmetrics import MeanAbsoluteError, MeanMetric, MeanSquaredError, MetricCollection, R2Score
from torchmetrics.classification import MulticlassAccuracy

from . import entry
from .constraints import Interval, ListOf, Options, Rule, UsageError, validate_params
from .init import INIT_SCHEMES, InitName, check_constant, init_weight
from .io import data_record
from .mlp import MLP, Activation
from .monitor import MONITOR_EVERY, NON_FINITE_INPUTS, EpochMeans, newest_checkpoint, weights_diverged
from .pretrain import CDSettings, RBMStage, _features, pretrain, stage_trainer
from .rbm import HIDDEN_UNITS, RBM, down_pass, make_rbm, make_stack, per_rbm, up_pass, visible_units_of

__all__ = ["Classifier", "Baseline", "DBN"]

_RATE, _DECAY, _MOMENTUM = Interval(float, 0, None, "neither"), Interval(float, 0, None), Interval(float, 0, 1)
_COUNT, _SIZE = Interval(int, 0, None), Interval(int, 1, None)
TaskName = Literal["classification", "regression", "reconstruction"]
_FINE_TUNING_CONSTRAINTS = {
    "task": [None, Options(("classification", "regression", "reconstruction"))],
    "visible_units": [None, Options(("bernoulli", "gaussian"))],
    "input_size": [None, _SIZE],
    "num_classes": [None, Interval(int, 2, None)],
    "hidden": [ListOf(_SIZE)],
    "lr": [_RATE],
    "lr_schedule": [Options(("constant", "cosine"))],
    "optimizer": [Options(("adam", "sgd"))],
    "weight_decay": [_DECAY],
    "momentum": [_MOMENTUM],
    "dropout": [Interval(float, 0, 1, "left")],
    "input_dropout": [Interval(float, 0, 1, "left")],
    "body_lr_scale": [Interval(float, 0, None)],
    "warmup_epochs": [_COUNT],
    "start_decay": [_DECAY],
    "centre_inputs": [Options((False, True))],
}


class SquaredError(MeanMetric):
    """The squared error of a row, summed over its features, averaged over rows: Hinton &
    Salakhutdinov's (2006) reconstruction error per image."""

    def update(self, preds: Tensor, target: Tensor) -> None:
        super().update((preds - target).pow(2).sum(-1))


# Each task's validation and test metrics by name (logged as val_<name>, test_<name>), made for a
# number of classes.
TASK_METRICS: dict[str, dict[str, Callable[[int | None], Any]]] = {
    "classification": {"acc": partial(MulticlassAccuracy, average="micro")},
    "regression": {
        "rmse": lambda _: MeanSquaredError(squared=False),
        "mae": lambda _: MeanAbsoluteError(),
        "r2": lambda _: R2Score(),
    },
    "reconstruction": {"sse": lambda _: SquaredError()},
}


def _one_or_per_layer(name: str, one: str, each: str) -> Rule:
    """The Rule that option ``name`` is one value, or a list of one per hidden layer (``each``)."""
    return Rule(
        lambda p: not isinstance(p[name], (list, tuple)) or len(p[name]) == len(p["hidden"]),
        f"{{prefix}}{name}: expected one {one} or one per {each} ({{prefix}}hidden is {{hidden}}), got {{{name}}}",
    )


class Classifier(LightningModule):
    """An MLP fine-tuned by backprop: the fine-tuning step every model shares.

    Parameters
    ----------
    task : "classification", "regression" or None
        The loss and the metrics. Classification: cross-entropy on ``num_classes`` logits;
        ``val_acc``/``test_acc``. Regression: one output, trained with the mean squared error of
        the target standardised by the training targets' mean and std (buffers ``target_mean``,
        ``target_std``, kept in checkpoints); the model's output and its metrics
        (``val_rmse``, ``val_mae``, ``val_r2``, likewise ``test_*``) are in the target's own units.
        Reconstruction: the deep autoencoder of Hinton & Salakhutdinov (2006), the hidden layers
        unrolled into a decoder back to the input (:class:`~dbn_init.mlp.MLP`), trained on the
        cross-entropy of inputs in [0, 1] through a sigmoid output (or the squared error of
        standardised ones, linear); ``model(x)`` is the reconstruction, ``encode(x)`` the code
        (the top hidden layer), and ``val_sse``/``test_sse`` the squared error per row, summed
        over its features (the paper's error per image). None (the default): the DataModule's
        ``task`` attribute, else regression if its targets are floating point.
    input_size, num_classes : int or None
        Set from the DataModule by the CLI (``data.input_size``, ``data.num_classes``). None:
        taken in ``setup`` from the DataModule's attributes, else from its first training batch
        (input_size) and recorded in the hyperparameters before any checkpoint is written.
    hidden : list of int
        Hidden-layer sizes, bottom to top, e.g. ``[256, 256]`` for 784-256-256-10.
    visible_units : "bernoulli", "gaussian" or None
        The inputs' kind, which an autoencoder reconstructs: in [0, 1] (a sigmoid output) or
        standardised (a linear one). None: from the data when built (:func:`visible_units_for`).
    activation : "relu", "sigmoid", "tanh", "linear", or one of these per hidden layer
    lr, optimizer, weight_decay, momentum :
        The fine-tuning optimizer: Adam (lr 1e-3, the seed experiment) or SGD with momentum.
    lr_schedule : "constant" or "cosine"
        The rate over fine-tuning: ``lr`` throughout, or decayed along a half cosine from ``lr`` to 0
        over the fit's optimizer steps (``Trainer.estimated_stepping_batches``; a fit without
        ``max_epochs`` or ``max_steps`` has no end to decay to, and is refused).
    dropout : float
        Dropout after each hidden layer's activation during fine-tuning (Hinton et al. 2012,
        "Improving neural networks by preventing co-adaptation of feature detectors", fine-tuned
        a DBN with 0.5); 0 for none.
    input_dropout : float
        Dropout on the input features, before the first layer (0.2 in Hinton et al. 2012); 0 for none.
    body_lr_scale : float
        The hidden layers' learning rate as a multiple of the head's ``lr`` (for a DBN, the
        pretrained layers'): below 1 moves a good start less than the new head.
    warmup_epochs : int
        Train the head alone for this many epochs first: the hidden layers' parameter group has
        rate 0 meanwhile (no ``requires_grad`` switched mid-fit, which DDP's gradient sync would
        not follow), then ``lr * body_lr_scale``.
    start_decay : float
        L2 pull of the hidden layers toward the weights the fine-tuning started from (L2-SP: Li,
        Grandvalet & Davoine 2018): ``start_decay / 2 * ||theta - theta_start||^2`` is added to the
        training loss; for a DBN that start is the pretrained stack, for a baseline its scheme's
        draw. The start is kept in checkpoints, so a resumed fit pulls toward the same one. 0 for none.
    centre_inputs : bool
        The first layer reads its inputs less the training inputs' mean (:meth:`centre_on`, measured
        when a fit sets up; a buffer in checkpoints), its bias adjusted so that the start computes
        the same function. On inputs in [0, 1] every weight of a unit otherwise gets a gradient of
        one sign, and Adam moves each by about the rate: on 3,072 such inputs the first layer of the
        DBN, and most of Xavier's, switched off for good in fine-tuning on the held-out textures.
        True (the default) for every start, chosen on the development suite's validation splits
        (results/defaults_search/centring_probe.md). A no-op on standardised data.

    The subclasses check their arguments against their ``_parameter_constraints`` once, first.
    """

    def __init__(
        self,
        input_size: int | None = None,
        num_classes: int | None = None,
        hidden: list[int] = [256, 256],  # noqa: B006  (LightningCLI reads defaults from the signature)
        task: TaskName | None = None,
        visible_units: Literal["bernoulli", "gaussian"] | None = None,
        activation: Activation | list[Activation] = "relu",
        lr: float = 1e-3,
        lr_schedule: Literal["constant", "cosine"] = "constant",
        optimizer: Literal["adam", "sgd"] = "adam",
        weight_decay: float = 0.0,
        momentum: float = 0.9,
        dropout: float = 0.0,
        input_dropout: float = 0.0,
        body_lr_scale: float = 1.0,
        warmup_epochs: int = 0,
        start_decay: float = 0.0,
        centre_inputs: bool = True,
    ) -> None:
        super().__init__()
        self.task, self.activation, self.hidden = task, activation, list(hidden)
        self.centre_inputs = centre_inputs
        self.visible_units = visible_units
        self.lr, self.lr_schedule, self.optimizer_name = lr, lr_schedule, optimizer
        self.weight_decay, self.momentum = weight_decay, momentum
        self.dropout, self.input_dropout = dropout, input_dropout
        self.body_lr_scale, self.warmup_epochs = body_lr_scale, warmup_epochs
        self.start_decay = start_decay
        self.mlp: MLP | None = None
        self._start: list[Tensor] | None = None  # the hidden layers' weights when fine-tuning began
        self.trained_on: dict[str, Any] | None = None  # io.data_record of the data it was fitted on
        # Logged once per epoch: a self.log per step costs about as much as the step's matmuls on
        # CPU. Training feeds its metrics once per epoch, from EpochMeans.
        self.train_acc, self.train_loss = MeanMetric(), MeanMetric()
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        self._build_if_sized(input_size, num_classes)

    @property
    def built(self) -> bool:
        return self.mlp is not None

    @property
    def regression(self) -> bool:
        return self.task == "regression"

    @property
    def reconstruction(self) -> bool:
        return self.task == "reconstruction"

    def _build_if_sized(self, input_size: int | None, num_classes: int | None) -> None:
        if input_size is not None and (num_classes is not None or self.task in ("regression", "reconstruction")):
            self.build(input_size, num_classes)

    def build(self, input_size: int, num_classes: int | None) -> None:
        """Make the layers for ``input_size`` features and ``num_classes`` classes (one output for
        regression, a decoder for reconstruction), and record the sizes and the task."""
        self.task = self.task or "classification"
        self.hparams.update(input_size=input_size, num_classes=num_classes, task=self.task)
        outputs = {"regression": 1, "reconstruction": None}.get(self.task, num_classes)
        self.mlp = MLP(input_size, self.hidden, outputs, self.activation, self.dropout, self.input_dropout,
                       self.centre_inputs)  # fmt: skip
        if self.regression:
            self.register_buffer("target_mean", torch.zeros(()))
            self.register_buffer("target_std", torch.zeros(()))  # 0 until fitted to the training targets
        metrics = {name: metric(num_classes) for name, metric in TASK_METRICS[self.task].items()}
        self.val_metrics = MetricCollection(metrics, prefix="val_")
        self.test_metrics = self.val_metrics.clone(prefix="test_")

    def forward(self, x: Tensor) -> Tensor:
        """(batch, input_size) -> logits (batch, num_classes), predicted targets (batch,) for
        regression, or the reconstruction (batch, input_size)."""
        return self._predicted(self.mlp(self._inputs(f"{type(self).__name__}(x)", x)))

    def _refuse_unbuilt(self, what: str) -> None:
        """``what`` (a public use of the layers) is refused while the model has none yet."""
        if not self.built:
            raise RuntimeError(
                f"{what}: this {type(self).__name__} has no layers yet: made with input_size=None, it takes its "
                "sizes from the data when it is fitted; fit it first, or make it with input_size and num_classes"
            )

    def _inputs(self, what: str, x: Tensor) -> Tensor:
        """``x`` as the layers take it for ``what`` (a public use of them): images flattened to
        (batch, features); refused while the model has no layers, and for rows of another width."""
        self._refuse_unbuilt(what)
        x = x.flatten(1) if x.ndim > 2 else x
        if x.shape[-1] != (width := self.mlp.linears[0].in_features):
            raise ValueError(
                f"{what}: expected {width} features a row, as in the data the model was built for, got x of shape "
                f"{tuple(x.shape)}; pass the same feature columns, in the same order"
            )
        return x

    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        """The fine-tuned network's top hidden layer for ``x`` (batch, input_size), dropout off:
        an autoencoder's code, (batch, hidden[-1])."""
        training = self.training
        try:
            return self.eval().mlp.forward_features(self._inputs(f"{type(self).__name__}.encode", x).to(self.device))
        finally:
            self.train(training)

    def _predicted(self, out: Tensor) -> Tensor:
        """The MLP's output in the task's terms: logits, targets in their own units (batch,), or
        the reconstruction."""
        if self.regression:
            return out.squeeze(-1) * self.target_std + self.target_mean
        return out.sigmoid() if self.reconstruction and self.visible_units != "gaussian" else out

    def _loss(self, out: Tensor, y: Tensor) -> Tensor:
        """The training loss of the MLP's output ``out``: cross-entropy, the standardised target's
        MSE, or the reconstruction's cross-entropy (inputs in [0, 1]) or MSE of ``y``, the input."""
        if self.regression:
            return F.mse_loss(out.squeeze(-1), (y - self.target_mean) / self.target_std)
        if self.reconstruction:
            gaussian = self.visible_units == "gaussian"
            return F.mse_loss(out, y) if gaussian else F.binary_cross_entropy_with_logits(out, y)
        return F.cross_entropy(out, y)

    def _target(self, batch: Tensor | tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
        """A batch's inputs and what the model learns to output: the labels, or the inputs themselves."""
        x = _features(batch)
        return x, x if self.reconstruction else batch[1]

    def _step(self, batch: tuple[Tensor, Tensor], split: str) -> Tensor:
        x, y = self._target(batch)
        out = self.mlp(x)
        loss = self._loss(out, y)
        getattr(self, f"{split}_metrics").update(self._predicted(out).detach(), y)
        getattr(self, f"{split}_loss").update(loss.detach(), weight=len(y))
        return loss

    def _log_epoch(self, split: str) -> None:
        # Metric objects reduce across processes themselves (torchmetrics' dist_reduce_fx).
        self.log(f"{split}_loss", getattr(self, f"{split}_loss"))
        if split != "train":
            self.log_dict(getattr(self, f"{split}_metrics"), prog_bar=split == "val")
        elif self.task == "classification":
            self.log("train_acc", self.train_acc, prog_bar=True)

    def fit_targets(self, datamodule) -> None:
        """Set ``target_mean`` and ``target_std`` from the training targets (one pass over the
        DataModule's training loader, the same rows on every process)."""
        y = torch.cat([batch[1].double().cpu() for batch in datamodule.train_dataloader()])
        std = float(y.std(unbiased=False))
        self.target_mean.fill_(float(y.mean()))
        self.target_std.fill_(std if std > 0 else 1.0)

    def centre_on(self, datamodule) -> None:
        """Centre the MLP's inputs on the mean of the data's training inputs (:meth:`MLP.centre_`, the
        function kept): an in-memory DataModule's pretraining rows, else the first 10,000 rows its
        pretraining (or training) loader serves, averaged over the fit's processes. Data standardised
        by their DataModule are centred already: their mean stays 0."""
        if getattr(datamodule, "scaling", None) == "standardize":
            return
        x = getattr(datamodule, "pretrain_x", None)
        if x is not None:
            mean = x.double().mean(0)
        else:
            loader = getattr(datamodule, "pretrain_dataloader", None) or datamodule.train_dataloader
            rows = list(itertools.islice((row for batch in loader() for row in _features(batch)), 10_000))
            mean = torch.stack(rows).double().mean(0)
            if self.trainer.world_size > 1:  # each process read its own share
                strategy = self.trainer.strategy
                mean = strategy.reduce(mean.to(strategy.root_device), reduce_op="mean").cpu()
        self.mlp.centre_(mean.float())

    def setup(self, stage: str) -> None:
        entry.close_process_group_at_exit()
        datamodule, ckpt_path = self.trainer.datamodule, self.trainer.ckpt_path
        if not self.built and ckpt_path and os.path.isfile(ckpt_path):  # sizes as the checkpoint's run had them
            self.build_like(torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True))
        stage = getattr(stage, "value", stage)
        if datamodule is None and stage == "fit" and self._reads_data():
            raise UsageError(
                f"this {type(self).__name__} takes its sizes, input mean, target scale or pretraining rows from a "
                "DataModule, and Trainer.fit was given dataloaders; pass the data as one: trainer.fit(model, "
                'datamodule=dbn_init.DatasetDataModule(loader.dataset, scaling="none")), or ArrayDataModule(x, y)'
            )
        if getattr(datamodule, "labelled", True) is False and stage != "predict" and not self.reconstruction:
            raise UsageError(
                f"this {type(datamodule).__name__} has no labels, so it serves pretraining only; to fine-tune "
                "a classifier or regressor, give it labels (a `target` column, `y`, or a dataset of (input, "
                'label) pairs); an autoencoder (task="reconstruction") needs none (a DBN\'s, with '
                "trainer.max_epochs 0, pretrains alone: train.py exports the stack)"
            )
        self.build_for(datamodule, stage)
        if self.regression and stage == "fit" and not self.target_std:  # not restored from a checkpoint
            self.fit_targets(datamodule)
        # From Python a size mismatch would end in a bare matmul or cross-entropy error at the first batch.
        built = {"input_size": self.mlp.linears[0].in_features}
        if self.task == "classification":
            built["num_classes"] = self.mlp.head.out_features
        for name, ours in built.items():
            theirs = getattr(datamodule, name, None)
            if isinstance(theirs, int) and theirs != ours:
                raise ValueError(
                    f"the data ({type(datamodule).__name__}) have {name}={theirs} but the model was built "
                    f"with {name}={ours}; build it with {name}=None (taken from the data) or "
                    f"{name}=datamodule.{name} (train.py links it)"
                )
        # The metrics of this module's models are known (a subclass elsewhere may log its own); a fit
        # without fine-tuning epochs never consults its monitors.
        if stage == "fit" and self.trainer.max_epochs != 0 and type(self).__module__ == __name__:
            self._check_monitors()
        if self.centre_inputs and stage == "fit":  # a resumed fit's checkpoint restores its own afterwards
            self.centre_on(datamodule)

    def _reads_data(self) -> bool:
        """Whether a fit must read the DataModule before its first step: for sizes taken from the data,
        the input mean (``centre_inputs``), a regression's target scale, or a DBN's pretraining."""
        return not self.built or self.centre_inputs or (self.regression and not self.target_std) or not self.pretrained

    @property
    def pretrained(self) -> bool:
        """Whether pretraining is done: a model without RBMs has none to do."""
        return True

    def _check_monitors(self) -> None:
        """A checkpoint or early stop that watches another task's metric (a classification config's
        ``val_acc`` on a regression) would fail at the end of the first fine-tuning epoch, after all
        of pretraining: refused here, in one line."""
        ours = {"train_loss", "val_loss", *self.val_metrics.keys()}
        if self.task == "classification":
            ours.add("train_acc")
        theirs = {f"{split}_{name}" for names in TASK_METRICS.values() for name in names for split in ("train", "val")}
        for callback in self.trainer.callbacks:
            if (monitor := getattr(callback, "monitor", None)) in theirs - ours:
                raise UsageError(
                    f"the {type(callback).__name__} monitors {monitor}, which a {self.task} never logs (it logs "
                    f"{', '.join(sorted(ours))}); monitor one of those, e.g. {type(callback).__name__}(monitor="
                    '"val_loss", mode="min") (trainer.callbacks.monitor val_loss trainer.callbacks.mode min)'
                )

    def build_for(self, datamodule, stage: str = "fit") -> None:
        """Build a model made with sizes None for ``datamodule`` (set up): its declared sizes, else its data's."""
        if {self.task, data_task := getattr(datamodule, "task", None)} == {"classification", "regression"}:
            targets = "values to predict (data.targets values)" if data_task == "regression" else "class labels"
            raise UsageError(
                f"this {type(self).__name__}'s task is {self.task}, and the data's targets are {targets}; leave "
                f"model.task out to follow the data, or set data.targets {'values' if self.regression else 'classes'}"
            )
        if not self.built:
            input_size, num_classes, self.task = _sizes_of(datamodule, self.hparams, stage)
            if self.reconstruction and self.visible_units is None:
                self.hparams.visible_units = self.visible_units = visible_units_for(datamodule, stage)
            self.build(input_size, num_classes)

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        """As :meth:`torch.nn.Module.load_state_dict`; a model made with sizes None is built first with
        the sizes of the weights (as ``ddp_spawn`` hands a fitted model back to the main process)."""
        if not self.built and any(k.startswith("mlp.head.") for k in state_dict):
            first = next(v for k, v in state_dict.items() if k.startswith("mlp.features.") and v.ndim == 2)
            head = state_dict.get("mlp.head.weight")
            self.task = "regression" if "target_mean" in state_dict else "reconstruction" if head is None else None
            self.build(first.shape[1], None if head is None else head.shape[0])
        return super().load_state_dict(state_dict, strict, assign)

    def build_like(self, checkpoint: dict[str, Any]) -> None:
        """Build a model made with sizes None as the run that wrote ``checkpoint`` was built: its
        sizes are recorded (Lightning's hyper_parameters, or a stage checkpoint's run record)."""
        if not self.built:
            saved = (checkpoint.get("dbn_init_run") or {}).get("model") or checkpoint.get("hyper_parameters") or {}
            self.hparams.update({k: saved.get(k) for k in FROM_DATA if k in self.hparams and self.hparams[k] is None})
            self.task = saved.get("task") or "classification"
            self.visible_units = self.visible_units or saved.get("visible_units")
            self.build(saved["input_size"], saved["num_classes"])

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        datamodule = self.trainer.datamodule
        if datamodule is not None:  # how the inputs were scaled, for an export of the checkpoint's stack
            checkpoint["dbn_init_data"] = data_record(datamodule)
        if self._start is not None:
            checkpoint["dbn_init_start"] = [t.cpu() for t in self._start]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._start = checkpoint.get("dbn_init_start")
        self.trained_on = checkpoint.get("dbn_init_data", self.trained_on)

    def on_fit_start(self) -> None:
        _spare_adam_the_nvml_reload()
        if self.trainer.datamodule is not None:  # dataloaders of one's own: their scaling is unknown
            self.trained_on = data_record(self.trainer.datamodule)
        # The run's seed (seed_everything's), else this process's: the base of the dropout masks' seeds.
        self._seed = int(os.environ.get("PL_GLOBAL_SEED", torch.initial_seed()))
        if self.start_decay:  # a subclass's on_fit_start has set the start (the DBN transfers first)
            body = list(self.mlp.features.parameters())
            kept = self._start  # restored from a resumed fit's checkpoint
            self._start = [t.to(p) for t, p in zip(kept, body)] if kept else [p.detach().clone() for p in body]

    def on_train_start(self) -> None:
        # Also here: a fit resumed from a checkpoint saved after an epoch's last batch but before its
        # end (a validation mid-epoch) goes straight to on_train_epoch_end.
        self._epoch_means = EpochMeans(2, self.device)

    def on_train_epoch_start(self) -> None:
        self._epoch_means = EpochMeans(2, self.device)  # loss, accuracy

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        if self.dropout or self.input_dropout:
            # Dropout draws its masks from the device's default generator, which DataLoader iterators
            # and Lightning's restart of a resumed fit draw from too: seeded per batch from the run's
            # seed, the epoch, the batch and the rank, a batch's masks are the same whatever ran before
            # it (a run resumed mid-pretraining or mid-fine-tuning ends as the uninterrupted one).
            _seed_generator(self.device, hash((self._seed, self.current_epoch, batch_idx, self.global_rank)) % 2**63)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = self._target(batch)
        out = self.mlp(x)
        loss = self._loss(out, y)
        hits = (out.argmax(-1) == y).sum() if self.task == "classification" else loss.new_zeros(())
        self._epoch_means.add(loss * len(y), hits, count=len(y))
        if self.start_decay:
            drift = sum((p - p0).pow(2).sum() for p, p0 in zip(self.mlp.features.parameters(), self._start))
            loss = loss + self.start_decay / 2 * drift
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        entry.check()
        # A sparse sample of steps and the epoch's last (so no checkpoint holds a NaN): one host sync each.
        if (batch_idx % MONITOR_EVERY == 0 or self.trainer.is_last_batch) and weights_diverged(self.mlp):
            raise FloatingPointError(
                f"fine-tuning diverged (non-finite MLP weights) in epoch {self.current_epoch}, by batch "
                f"{batch_idx}, at learning rate {self.lr} ({self.optimizer_name}). Lower model.lr (Adam: 1e-3 "
                "or below), or clip gradients with trainer.gradient_clip_val 1.0; check that the inputs are "
                f"scaled (data.scaling); another cause: {NON_FINITE_INPUTS}. Last checkpoint: "
                f"{newest_checkpoint(self.trainer)}."
            )

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def predict_step(self, batch: Tensor | tuple[Tensor, ...], batch_idx: int) -> Tensor:
        """Class probabilities (batch, num_classes), predicted targets (batch,) for regression, or
        reconstructions (batch, input_size), of a batch ``x`` or ``(x, ...)``; labels are not used."""
        out = self(_features(batch))
        return out if self.task != "classification" else torch.softmax(out, dim=-1)

    def on_train_epoch_end(self) -> None:
        if self._epoch_means.count:  # none after such a resume: nothing of the epoch to report
            self._epoch_means.update(self.train_loss, self.train_acc)
            self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def configure_optimizers(self):
        """Two parameter groups, the hidden layers (the body) and the head, so that the body can
        learn at ``body_lr_scale`` times the rate, and at rate 0 during a head-only warm-up."""
        body = [p for p in self.mlp.features.parameters() if p.requires_grad]
        head = [p for p in self.mlp.head.parameters() if p.requires_grad]
        groups = [{"params": body, "lr": self.lr * self.body_lr_scale}, {"params": head, "lr": self.lr}]
        # One fused kernel per step instead of a dozen per tensor where torch has it (CPU, CUDA).
        fused = all(p.device.type in ("cpu", "cuda") for p in body + head) or None
        if self.optimizer_name == "sgd":
            optimizer = torch.optim.SGD(
                groups, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay, fused=fused
            )
        else:
            optimizer = torch.optim.Adam(groups, lr=self.lr, weight_decay=self.weight_decay, fused=fused)
        if not self.warmup_epochs and self.lr_schedule == "constant":
            return optimizer
        steps = self.trainer.estimated_stepping_batches  # of the whole fit
        if self.lr_schedule == "cosine" and math.isinf(steps):
            raise UsageError(
                "lr_schedule 'cosine' decays the rate over the fit's steps, and this fit has no end: "
                "set max_epochs or max_steps, or lr_schedule 'constant'"
            )
        warmup, cosine = self.warmup_epochs, self.lr_schedule == "cosine"
        if warmup and math.isinf(self.trainer.num_training_batches):  # max_steps alone: no epoch sized yet
            self.trainer.fit_loop.setup_data()
        per_epoch = math.ceil(self.trainer.num_training_batches / self.trainer.accumulate_grad_batches) if warmup else 1

        def head(step: int) -> float:
            return 0.5 * (1 + math.cos(math.pi * min(step / steps, 1.0))) if cosine else 1.0

        def body(step: int) -> float:  # rate 0 during the head-only warm-up
            return head(step) if step // per_epoch >= warmup else 0.0

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, [body, head])
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def _sizes_of(datamodule, hparams, stage: str) -> tuple[int, int | None, str]:
    """input_size, num_classes and task for a model built with None: the DataModule's attributes,
    else the data: the first batch's width, its targets' type (floating point: regression), and
    one more than the largest label of the training loader (one pass over it)."""
    input_size = hparams.get("input_size") or getattr(datamodule, "input_size", None)
    num_classes = hparams.get("num_classes") or getattr(datamodule, "num_classes", None)
    task = hparams.get("task") or getattr(datamodule, "task", None)
    if datamodule is not None and (input_size is None or (num_classes is None and task in (None, "classification"))):
        batches = iter(_stage_loader(datamodule, stage)())
        first = next(batches)
        input_size = input_size or _features(first).shape[1]
        labelled = not isinstance(first, Tensor) and len(first) > 1  # TensorDataset(x) serves [x]
        task = task or ("regression" if labelled and first[1].is_floating_point() else "classification")
        if num_classes is None and labelled and task == "classification":
            num_classes = 1 + max(int(batch[1].max()) for batch in itertools.chain([first], batches))
    task = task or "classification"
    if input_size is None or (num_classes is None and task == "classification"):
        raise UsageError(
            f"the model was built with input_size={hparams.get('input_size')}, num_classes="
            f"{hparams.get('num_classes')}, and the data ({type(datamodule).__name__}) declare neither "
            "nor serve labels; pass them to the model, or give the DataModule input_size and "
            "num_classes attributes"
        )
    return int(input_size), None if num_classes is None else int(num_classes), task


def visible_units_for(datamodule, stage: str = "fit") -> str:
    """RBM 1's visible units for the data: Gaussian for standardised data (``scaling="standardize"``),
    Bernoulli for data in [0, 1]; a DataModule that declares no scaling is judged by its first batch
    (every value in [0, 1]: Bernoulli, else Gaussian)."""
    scaling = getattr(datamodule, "scaling", None)
    if scaling in ("standardize", "unit"):
        return "gaussian" if scaling == "standardize" else "bernoulli"
    if datamodule is None:
        return "bernoulli"
    loader = getattr(datamodule, "pretrain_dataloader", None) or _stage_loader(datamodule, stage)
    return visible_units_of(_features(next(iter(loader()))))


def _stage_loader(datamodule, stage: str) -> Callable:
    """The DataModule's loader method for a Lightning stage ("fit" reads the training loader)."""
    name = {"fit": "train", "validate": "val"}.get(stage, stage)
    return getattr(datamodule, f"{name}_dataloader")


def _seed_generator(device: torch.device, seed: int) -> None:
    """Seed ``device``'s default generator alone: ``torch.manual_seed`` seeds every device's, at about
    100 us, as much as a small fine-tuning step."""
    if device.type == "cpu":
        torch.default_generator.manual_seed(seed)
    elif device.type == "cuda":
        torch.cuda.default_generators[device.index or 0].manual_seed(seed)
    else:
        torch.manual_seed(seed)


def _spare_adam_the_nvml_reload() -> None:
    """Let ``torch.cuda.is_available()`` be the cheap runtime check on machines with no GPU.

    Lightning sets ``PYTORCH_NVML_BASED_CUDA_CHECK=1`` so that looking for CUDA does not
    initialise it before DDP forks its workers; with it, every ``torch.cuda.is_available()``
    loads NVML afresh (0.2-1 ms here, on a CUDA build of torch without a GPU), and
    ``torch.optim.Adam.step`` asks on every step: 5-20% of a fine-tuning step on CPU. Where
    that check finds no GPU there is no CUDA to initialise, so dropping the variable is safe;
    with a GPU it stays.
    """
    if os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK") == "1" and not torch.cuda.is_available():
        del os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"]


# Options a model made with None for them takes from the data when it is built (and records).
FROM_DATA = frozenset({"input_size", "num_classes", "visible_units", "task"})
# The Classifier's options, read off its signature: what every model shares, the fine-tuning step's.
CLASSIFIER_OPTIONS = frozenset(inspect.signature(Classifier.__init__).parameters) - {"self"}
# What a subclass hands the Classifier: read off its signature, an option added there reaches every model (a
# DBN's activation is its hidden units). The sizes are left out: a subclass builds once its options are recorded.
_SHARED_OPTIONS = CLASSIFIER_OPTIONS - {"input_size", "num_classes"}


class Baseline(Classifier):
    """The MLP started from an initialisation scheme of :mod:`dbn_init.init`.

    Parameters
    ----------
    init : scheme name
        ``xavier_uniform``, ``xavier_normal``, ``he_uniform``, ``he_normal`` (gain from
        ``activation``), ``normal`` (N(0, init_std^2)) or ``constant`` (every weight
        ``init_value``; zero is refused).
    lr, lr_schedule :
        Adam from 1e-3 decayed along a half cosine to 0 by default: chosen on the development
        suite's validation splits by the same procedure as the DBN's recipe, where it led a
        constant 1e-3 on Fashion-MNIST by 0.8 to 1.4 points and tied it on the small datasets
        (results/defaults_search/cosine_probe.md).

    The other options are the :class:`Classifier`'s.
    """

    _parameter_constraints = {
        **_FINE_TUNING_CONSTRAINTS,
        "init": [Options(tuple(INIT_SCHEMES))],
        "activation": [Options(get_args(Activation)), ListOf(Options(get_args(Activation)))],
        "init_std": [Interval(float, 0, None, "neither")],
        "init_value": [Interval(float, None, None)],
    }

    _parameter_rules = (_one_or_per_layer("activation", "name", "hidden layer"),)

    def __init__(
        self,
        input_size: int | None = None,
        num_classes: int | None = None,
        hidden: list[int] = [256, 256],  # noqa: B006
        task: TaskName | None = None,
        init: InitName = "xavier_uniform",
        visible_units: Literal["bernoulli", "gaussian"] | None = None,
        activation: Activation | list[Activation] = "relu",
        init_std: float = 1.0,
        init_value: float = 0.01,
        lr: float = 1e-3,
        lr_schedule: Literal["constant", "cosine"] = "cosine",
        optimizer: Literal["adam", "sgd"] = "adam",
        weight_decay: float = 0.0,
        momentum: float = 0.9,
        dropout: float = 0.0,
        input_dropout: float = 0.0,
        body_lr_scale: float = 1.0,
        warmup_epochs: int = 0,
        start_decay: float = 0.0,
        centre_inputs: bool = True,
    ) -> None:
        args = locals()
        validate_params("Baseline", args, self._parameter_constraints, "model.", self._parameter_rules)
        if init == "constant":
            check_constant(init_value)  # zero makes every gradient the same
        super().__init__(None, None, **{k: args[k] for k in _SHARED_OPTIONS})  # sizes: built in setup, or below
        self.save_hyperparameters()
        self._build_if_sized(input_size, num_classes)

    def build(self, input_size: int, num_classes: int | None) -> None:
        super().build(input_size, num_classes)
        hp = self.hparams
        self.mlp.init_weights(hp.init, std=hp.init_std, value=hp.init_value)


RecipeName = Literal["relu", "textbook"]
# The named recipes: a DBN's value for each of these options it is given as None (the default).
# "relu", the default, was chosen on validation splits (docs/compare.md, "The defaults"):
# noisy-ReLU RBMs (Nair & Hinton 2010) at CD rate 0.01, a Gaussian RBM 1 at 1e-2, transferred into
# a ReLU MLP fine-tuned with dropout 0.2, by Adam from 3e-3 decayed along a half cosine to 0. Over
# the development suite's validation splits the Gaussian RBM 1 at 1e-2 led 1e-3 by 1.35 points, and
# the cosine from 3e-3 led a constant 1e-3 by 0.72 points with all labels and 0.17 with 10% of
# them on the small datasets, 0.33 and 0.44 on Fashion-MNIST (results/defaults_search/). "textbook"
# is Hinton & Salakhutdinov's (2006): sigmoid RBMs at CD rate 0.1, fine-tuned at a constant 1e-3
# without dropout.
RECIPES: dict[str, dict[str, Any]] = {
    "relu": {"hidden_units": "relu", "pretrain_lr": 0.01, "gaussian_lr": 1e-2, "dropout": 0.2, "lr": 3e-3,
             "lr_schedule": "cosine"},
    "textbook": {"hidden_units": "sigmoid", "pretrain_lr": 0.1, "gaussian_lr": 1e-2, "dropout": 0.0, "lr": 1e-3,
                 "lr_schedule": "constant"},
}  # fmt: skip


def resolve_recipe(args: Mapping[str, Any]) -> dict[str, Any]:
    """The options of ``args["recipe"]`` (a DBN's arguments) with the recipe's values where they are None
    (an unknown recipe is refused by the constraints table, which runs on these values); an
    autoencoder's top RBM has linear hidden units, its code layer (Hinton & Salakhutdinov 2006)."""
    recipe = RECIPES.get(args["recipe"], RECIPES["relu"])
    resolved = {name: value if args[name] is None else args[name] for name, value in recipe.items()}
    if args.get("task") == "reconstruction" and args["hidden_units"] is None:  # an autoencoder's code is linear
        resolved["hidden_units"] = [resolved["hidden_units"]] * (len(args["hidden"]) - 1) + ["linear"]
    return resolved


class DBN(Classifier):
    """A Deep Belief Network: greedy RBM pretraining, then the same fine-tuning as the baselines.

    Hinton, Osindero & Teh (2006); Hinton & Salakhutdinov (2006) for fine-tuning the stack with
    backprop. The first RBM models the data (Bernoulli visible units for inputs in [0, 1], or
    Gaussian for standardised data); every RBM above models the hidden probabilities of the one
    below. The stack then becomes an MLP (sigmoid, or ReLU for NReLU units) with a new classifier head.

    ``Trainer(...).fit(dbn, datamodule=dm)`` does the whole job, on one device or on many (DDP,
    multi-node): ``on_fit_start`` pretrains the stages not yet done (after Lightning restored a
    resumed fit's ``stages_done``), each on a Trainer that follows the fit's processes, device and
    precision (:func:`~dbn_init.pretrain.stage_trainer`; ``stage_trainers``, if set, makes them
    instead: train.py's adds checkpoints and pictures), then transfers and fine-tunes.

    Parameters
    ----------
    hidden : list of int
        Hidden sizes of RBM 1..k, which are also the MLP's hidden layers.
    recipe : "relu" or "textbook"
        Where the options left None (``hidden_units``, ``pretrain_lr``, ``gaussian_lr``,
        ``dropout``, ``lr``, ``lr_schedule``) take their values (:data:`RECIPES`; an option given
        explicitly wins): ``"relu"`` (the default, chosen on validation: fine-tuned from 3e-3 along
        a cosine, dropout 0.2) or ``"textbook"`` (Hinton & Salakhutdinov 2006: sigmoid RBMs at 0.1,
        1e-2 for Gaussian visible units, a constant 1e-3, no dropout).
        The hyperparameters (``hparams.yaml``, checkpoints) record the values used.
    visible_units : "bernoulli", "gaussian" or None
        Unit type of RBM 1's visible layer. None (the default) follows the data when the DBN is
        built: Gaussian for standardised data, Bernoulli for data in [0, 1]
        (:func:`visible_units_for`).
    hidden_units : "sigmoid", "relu", "linear", or one of these per RBM
        Hidden units of the RBMs: Bernoulli, transferred into a sigmoid layer; noisy rectified
        linear units (Nair & Hinton 2010), transferred into a ReLU layer like the baselines'; or
        linear units with unit-variance Gaussian noise (the code layer of a deep autoencoder,
        ``["sigmoid", "sigmoid", "linear"]``). An RBM above ReLU or linear units models them with
        unit-variance Gaussian visible units (``rectified_lr``). Only sigmoid stacks have a
        tractable free energy: parallel tempering, centring and AIS need ``hidden_units="sigmoid"``;
        so does the sparsity penalty, and persistent chains need units other than NReLU ones.
    pretrain_epochs : int, list of int or None
        Epochs per stage (one number for all, or one per RBM). 0 skips pretraining: the MLP
        starts from RBMs at their N(0, 0.01) initialisation. None (the default): 10, or on small
        data a multiple of 10 that makes at least ``pretrain_updates`` CD updates per RBM (128
        rows in batches of 16 make 8 updates an epoch: 250 epochs). Validation, the momentum
        switch and the rate schedule keep their place in the stretched stage (``momentum_switch_epoch``
        5 switches halfway). Fashion-MNIST's 54,000 rows in batches of 100 make 5,400 updates in
        10 epochs: 10.
    pretrain_updates : int
        The fewest CD updates per RBM when ``pretrain_epochs`` is None; 0: always 10 epochs.
    pretrain_lr : float
        CD learning rate of RBMs with Bernoulli visible units.
    gaussian_lr : float
        CD learning rate of a first RBM with Gaussian visible units, on standardised inputs.
        Unit-variance Gaussian units diverge at Bernoulli rates on larger data (Hinton 2010,
        section 13.2); ``benchmarks/gaussian_lr.py`` measures the rates on standardised digits
        and wine.
    rectified_lr : float
        CD learning rate of the RBMs above RBM 1 in a ReLU stack: Gaussian visible units on the
        rectified activities below, which are neither standardised nor bounded (1e-3, as chosen
        on Fashion-MNIST validation; at 1e-2 a Fashion-MNIST DBN fine-tunes to chance accuracy);
        and of RBMs with linear hidden units (Hinton & Salakhutdinov's 2006 code layer, at 1e-3).
    initial_momentum, final_momentum, momentum_switch_epoch :
        Momentum schedule of each stage (0.5 for the first 5 epochs, then 0.9; Hinton 2010), on
        the clock of ``pretrain_epochs`` (see ``pretrain_updates``).
    rbm_weight_decay : float
        L2 cost on RBM weights (2e-4, Hinton 2010 section 10); biases are not decayed.
    cd_k : int
        Gibbs sweeps per CD update.
    persistent : bool
        Persistent CD (Tieleman 2008): chains carry over between updates, one set per rank. Not
        with NReLU hidden units: at the default rate their chains left 99% of digits' RBM 1 units
        off for every row, and the fine-tuned network scored chance. Nor the better start for a
        classifier: on digits with 10% of labels the textbook recipe's PCD stack fine-tunes to
        86.3% (90.7% with ``pretrain_lr_schedule="linear"``), CD-1's to 95.1%
        (``benchmarks/pcd_start.py``); docs/ais.md compares the samplers as density models.
    pcd_chains : int, optional
        Number of persistent chains per rank (and per temperature); None: one per row of the
        mini-batch. They start at the first mini-batch's rows and are saved in checkpoints.
    pt_temperatures : int
        Parallel tempering (Desjardins et al. 2010) with this many inverse temperatures, evenly
        from ``pt_min_beta`` to 1; 1 (the default) is off. Each update runs ``cd_k`` sweeps of every
        tempered chain, then swaps neighbours (even and odd pairs in turn) and takes the beta = 1
        chains as the negative phase; ``rbm{k}/pt_swap_rate`` (mean over pairs) and
        ``pt_swap_rate_min`` are logged per epoch. Costs ``pt_temperatures`` times the Gibbs
        sweeps of PCD.
    pt_min_beta : float
        The lowest inverse temperature of parallel tempering.
    centring : bool
        Centred RBMs (Melchior, Fischer & Wiskott 2016): the gradient of the energy with the
        visible and hidden units shifted by offsets, sliding means of the data and of its hidden
        probabilities (rate ``centring_rate``). The offsets are folded into the biases, so the
        RBM and its transfer are ordinary ones.
    pretrain_lr_schedule : "constant", "linear" or "cosine"
        Each stage's learning rate over its own epochs: fixed, or decayed per epoch (linearly to
        1/epochs of the base rate in the last epoch, or along a half cosine).
    sample_visible : bool
        Sample visible units in CD's chain instead of using their mean.
    sparsity_target, sparsity_cost :
        Optional sparsity penalty on the mean activation of sigmoid hidden units (Lee et al. 2008).
        Sigmoid hidden units only: on NReLU units it pulls sigmoid(W v + c), which is no mean of
        theirs, to the target, and leaves 99% of the transferred ReLUs off (chance on crabs).
    lr, lr_schedule, optimizer, weight_decay, momentum :
        Fine-tuning optimizer, as for :class:`Baseline`; ``lr`` and ``lr_schedule`` None take the
        recipe's (3e-3 decayed along a cosine for ``"relu"``).
    pretrain_seed : int
        Seeds the Gibbs sampling noise (combined with stage and rank), 0 to 2**32 - 1.
    ais_chains, ais_betas : int
        With ``ais_chains > 0``, each Bernoulli stage ends with an AIS estimate of its log Z
        (:mod:`dbn_init.ais`; 100 chains as in Salakhutdinov & Murray 2008, and 10,000 betas in
        the paper's 500 : 4,000 : 10,000 proportions, where the paper used all 14,500)
        and logs ``rbm{k}/ais_log_z`` and ``rbm{k}/val_log_prob`` (mean -F(v) - log Z on the
        validation split, in nats; ``val_log_prob_low`` uses the upper end of log Z's 3-sigma
        interval). 0 (the default) skips it.
    steps_per_batch : int
        CD updates per Lightning step in pretraining: the loader serves this many mini-batches
        of ``batch_size`` at once and each gets its own optimizer step, so the updates are the
        same as with 1 (tested bit for bit), minus Lightning's per-step overhead (about 1 ms, a
        tenth of a CD-1 step at batch 128 on 2 CPU cores). Stage progress bars count CD updates.
        A DataModule whose ``pretrain_dataloader`` takes no ``steps_per_batch`` serves its own
        batches, one update each.
    pretrained : str, optional
        Start from an exported RBM stack (our ``.safetensors``, a DBN ``.ckpt`` or a ``.npz``;
        see :mod:`dbn_init.io`) instead of pretraining. A stack shorter than ``hidden`` is the
        bottom of the DBN: the RBMs above it are pretrained on top of it.
    """

    _parameter_constraints = {
        **_FINE_TUNING_CONSTRAINTS,
        "recipe": [Options(tuple(RECIPES))],
        "hidden_units": [Options(HIDDEN_UNITS), ListOf(Options(HIDDEN_UNITS))],
        "pcd_chains": [None, _SIZE],
        "pt_temperatures": [_SIZE],
        "pt_min_beta": [Interval(float, 0, 1, "left")],
        "centring_rate": [Interval(float, 0, 1, "right")],
        "pretrain_lr_schedule": [Options(("constant", "linear", "cosine"))],
        "pretrain_epochs": [None, _COUNT, ListOf(_COUNT)],
        "pretrain_updates": [_COUNT],
        "pretrain_lr": [_RATE],
        "gaussian_lr": [_RATE],
        "rectified_lr": [_RATE],
        "initial_momentum": [_MOMENTUM],
        "final_momentum": [_MOMENTUM],
        "momentum_switch_epoch": [_COUNT],
        "rbm_weight_decay": [_DECAY],
        "cd_k": [_SIZE],
        "sparsity_target": [None, Interval(float, 0, 1, "neither")],
        "sparsity_cost": [_DECAY],
        "pretrain_seed": [Interval(int, 0, 2**32 - 1, "both")],
        "ais_chains": [Options((0,)), Interval(int, 2, None)],
        "ais_betas": [Interval(int, 4, None)],
        "steps_per_batch": [_SIZE],
    }
    _parameter_rules = (
        Rule(
            lambda p: _all_sigmoid(p) or (p["pt_temperatures"] == 1 and not p["centring"]),
            "{prefix}hidden_units is {hidden_units} (the default recipe's is relu): parallel tempering and centring "
            "need the free energy and the mean of Bernoulli hidden units, which NReLU and linear units lack; set "
            "{prefix}hidden_units sigmoid (or {prefix}recipe textbook)",
        ),
        Rule(
            lambda p: "relu" not in per_rbm(p["hidden_units"], len(p["hidden"])) or not p["persistent"],
            "{prefix}persistent: persistent chains turn NReLU units off for nearly every row, and the fine-tuned "
            "network scores chance (digits), but {prefix}hidden_units is {hidden_units} (the default recipe's is "
            "relu); set {prefix}hidden_units sigmoid (or {prefix}recipe textbook), or {prefix}persistent false",
        ),
        Rule(
            lambda p: _all_sigmoid(p) or p["sparsity_target"] is None or p["sparsity_cost"] == 0,
            "{prefix}sparsity_cost: the sparsity penalty pulls the mean of sigmoid hidden units, and "
            "{prefix}hidden_units is {hidden_units} (the default recipe's is relu; on NReLU units it leaves nearly "
            "every one off, and the network scores chance on crabs); set {prefix}hidden_units sigmoid, or "
            "{prefix}sparsity_cost 0",
        ),
        Rule(
            lambda p: _all_sigmoid(p) or p["ais_chains"] == 0,
            "{prefix}ais_chains: AIS needs the free energy of sigmoid hidden units, and {prefix}hidden_units is "
            "{hidden_units} (the default recipe's is relu); set {prefix}hidden_units sigmoid, or {prefix}ais_chains 0",
        ),
        _one_or_per_layer("hidden_units", "name", "RBM"),
        _one_or_per_layer("pretrain_epochs", "number", "RBM"),
        Rule(
            lambda p: p["pcd_chains"] is None or p["persistent"] or p["pt_temperatures"] > 1,
            "{prefix}pcd_chains is set but no chains persist; add {prefix}persistent true (PCD) or "
            "{prefix}pt_temperatures > 1 (parallel tempering)",
        ),
    )

    def __init__(
        self,
        input_size: int | None = None,
        num_classes: int | None = None,
        hidden: list[int] = [256, 256],  # noqa: B006
        task: TaskName | None = None,
        recipe: RecipeName = "relu",
        visible_units: Literal["bernoulli", "gaussian"] | None = None,
        hidden_units: Literal["sigmoid", "relu", "linear"] | list[Literal["sigmoid", "relu", "linear"]] | None = None,
        pretrain_epochs: int | list[int] | None = None,
        pretrain_updates: int = 2000,
        pretrain_lr: float | None = None,
        gaussian_lr: float | None = None,
        rectified_lr: float = 1e-3,
        initial_momentum: float = 0.5,
        final_momentum: float = 0.9,
        momentum_switch_epoch: int = 5,
        rbm_weight_decay: float = 2e-4,
        cd_k: int = 1,
        persistent: bool = False,
        pcd_chains: int | None = None,
        pt_temperatures: int = 1,
        pt_min_beta: float = 0.9,
        centring: bool = False,
        centring_rate: float = 0.01,
        pretrain_lr_schedule: Literal["constant", "linear", "cosine"] = "constant",
        sample_visible: bool = False,
        sparsity_target: float | None = None,
        sparsity_cost: float = 0.0,
        lr: float | None = None,
        lr_schedule: Literal["constant", "cosine"] | None = None,
        optimizer: Literal["adam", "sgd"] = "adam",
        weight_decay: float = 0.0,
        momentum: float = 0.9,
        dropout: float | None = None,
        input_dropout: float = 0.0,
        body_lr_scale: float = 1.0,
        warmup_epochs: int = 0,
        start_decay: float = 0.0,
        centre_inputs: bool = True,
        pretrain_seed: int = 0,
        pretrained: str | None = None,
        ais_chains: int = 0,
        ais_betas: int = 10000,
        steps_per_batch: int = 8,
    ) -> None:
        args = {**locals(), **resolve_recipe(locals())}  # the recipe's value for each of its options left None
        validate_params("DBN", args, self._parameter_constraints, "model.", self._parameter_rules)
        args["activation"] = args["hidden_units"]  # the MLP layer that computes each RBM's mean hidden activation
        super().__init__(None, None, **{k: args[k] for k in _SHARED_OPTIONS})  # sizes: built in setup, or below
        self.save_hyperparameters()
        self.hparams.update({name: args[name] for name in RECIPES[recipe]})  # checkpoints record the values
        fine_tuning = CLASSIFIER_OPTIONS - {"hidden"}
        self.cd = CDSettings({k: v for k, v in self.hparams.items() if k not in fine_tuning}, len(hidden))
        # How many stages are finished; saved in checkpoints so a resumed run skips them.
        self.register_buffer("stages_done", torch.tensor(0))
        self.rbms = nn.ModuleList()
        # Set by train.py: (the fit's Trainer, stage, epochs) -> the stage's Trainer, and the checkpoint a
        # stage resumes from. Both are plain picklable objects: under ddp_spawn they travel with the model.
        self.stage_trainers: Callable[[Trainer, int, int], Trainer] | None = None
        self.stage_resume: dict[int, str] = {}
        self._build_if_sized(input_size, num_classes)

    def build_for(self, datamodule, stage: str = "fit") -> None:
        """As :meth:`Classifier.build_for`; visible units None follow the data (:func:`visible_units_for`).
        A DBN built with its sizes before it saw the data has a Bernoulli RBM 1 until then: it takes
        the data's units here, its initial weights kept."""
        if self.hparams.visible_units is None:
            self.hparams.visible_units = self.visible_units = units = visible_units_for(datamodule, stage)
            if self.built and self.rbms[0].visible_units != units:
                first = self.rbms[0]
                self.rbms[0] = make_rbm(first.n_visible, first.n_hidden, units, hidden_units=first.hidden_units)
                self.rbms[0].load_state_dict(first.state_dict())
                self.rbms[0].requires_grad_(False)
        super().build_for(datamodule, stage)

    def build(self, input_size: int, num_classes: int | None) -> None:
        super().build(input_size, num_classes)
        # Visible units None: Bernoulli until the data are seen (build_for); the up-pass, and so the
        # MLP, is the same for both kinds (a model built from weights alone, as ddp_spawn returns it).
        visible_units = self.hparams.visible_units or "bernoulli"
        self.rbms = make_stack([input_size, *self.hidden], visible_units, self.hparams.hidden_units)
        self.rbms.requires_grad_(False)  # trained only inside their own stage's fit
        if not self.mlp.decoder:  # a head of its own; a decoder is the stack's, transposed
            init_weight(self.mlp.head.weight, "xavier_uniform", self.mlp.activations[-1])
            nn.init.zeros_(self.mlp.head.bias)
        self.transfer()  # until pretraining runs, the MLP mirrors the RBMs' N(0, 0.01) start

    # --- pretraining --------------------------------------------------------------------------
    @property
    def pretrained(self) -> bool:
        return self.built and int(self.stages_done) >= len(self.rbms)

    def stage(self, index: int) -> RBMStage:
        """The LightningModule that trains RBM ``index`` (from 0) on the frozen ones below."""
        return RBMStage(self.rbms, index, self.cd)

    @torch.no_grad()
    def load_rbms(self, rbms: list[RBM]) -> None:
        """Use ``rbms`` (validated, bottom to top) as this DBN's first ``len(rbms)`` stages; the DBN
        is left unchanged if any of them does not fit."""
        if len(rbms) > len(self.rbms):
            raise ValueError(
                f"the imported stack has {len(rbms)} RBMs but this DBN has {len(self.rbms)} "
                f"(hidden={self.hparams.hidden}); pass model.hidden with one size per imported RBM "
                "(or more, to pretrain RBMs on top of it)"
            )
        for i, (source, target) in enumerate(zip(rbms, self.rbms)):
            kind, expected = _kind(source), _kind(target)
            if source.weight.shape != target.weight.shape or kind != expected:
                hint = {"sigmoid": "model.recipe textbook", "relu": "model.recipe relu"}.get(
                    source.hidden_units, "an autoencoder's code layer: model.task reconstruction"
                )
                raise UsageError(
                    f"imported RBM {i + 1} is {kind} {tuple(source.weight.shape)} but this DBN "
                    f"expects {expected} {tuple(target.weight.shape)} (n_hidden, n_visible); match "
                    "model.hidden, model.visible_units and model.hidden_units to the imported stack "
                    f"({source.hidden_units} hidden units: {hint})"
                )
        for source, target in zip(rbms, self.rbms):
            target.load_state_dict(source.state_dict())
        self.stages_done.fill_(max(int(self.stages_done), len(rbms)))
        self.transfer()

    @torch.no_grad()
    def load_stage_checkpoint(self, state_dict: dict[str, Tensor], stage: int) -> None:
        """Take the RBM stack from a stage checkpoint (``rbm{stage}-last.ckpt``): RBMs below
        ``stage`` are finished, RBM ``stage`` resumes from it."""
        rbm_state = {k.removeprefix("rbms."): v for k, v in state_dict.items() if k.startswith("rbms.")}
        self.rbms.load_state_dict(rbm_state)
        self.stages_done.fill_(stage - 1)

    def finish_pretraining(self) -> None:
        """Freeze the stack, mark every stage done and copy it into the MLP. (RBMs act alike in
        train and eval mode, so they stay in the mode the fit sets, and Lightning finds no module
        left in eval mode.)"""
        self.rbms.requires_grad_(False)
        self.stages_done.fill_(len(self.rbms))
        self.transfer()

    @torch.no_grad()
    def transfer(self) -> None:
        """Copy the RBM stack into the MLP's hidden layers (the head keeps its own init)."""
        self.mlp.load_rbms(list(self.rbms))

    # --- the generative model -----------------------------------------------------------------
    def transform(self, x: Tensor) -> Tensor:
        """Features of ``x`` (batch, input_size): the pretrained stack's top hidden probabilities
        (batch, hidden[-1]), as pretraining left them. The fine-tuned network's (an autoencoder's
        code) are :meth:`encode`'s."""
        stack = self._stack("DBN.transform")
        return up_pass(stack, self._inputs("DBN.transform", x).to(stack[0].weight))

    @torch.no_grad()
    def sample(self, n: int, steps: int = 1000, generator: torch.Generator | None = None) -> Tensor:
        """``n`` samples of the DBN's generative model, (n, input_size): ``steps`` Gibbs sweeps of
        the top RBM from noise, then down through the lower RBMs' visible means (Hinton et al.
        2006): pixel probabilities for Bernoulli inputs, standardised values for Gaussian ones."""
        stack = self._stack("DBN.sample", stacklevel=4)  # past no_grad's wrapper
        samples = down_pass(stack, stack[-1].sample(n, steps, generator=generator))
        if not bool(samples.isfinite().all()):
            raise FloatingPointError(
                f"DBN.sample: the top RBM's Gibbs chain diverged (non-finite after {steps} sweeps): with "
                f"{stack[-1].visible_units} visible and {stack[-1].hidden_units} hidden units nothing bounds it, "
                "and a sweep multiplies it by about the weights' largest squared singular value where that "
                "exceeds 1; take fewer steps, or sample a sigmoid stack (recipe textbook)"
            )
        return samples

    def _stack(self, what: str, stacklevel: int = 3) -> nn.ModuleList:
        """The RBM stack, for ``what`` (the public function that uses it): refused while the DBN has no
        layers (sizes None are taken from the data when it is fitted), and a warning while it is
        untrained, at ``stacklevel`` (the caller of ``what``)."""
        self._refuse_unbuilt(what)
        if not self.pretrained and any(self.cd.epochs):
            message = f"{what}: the RBM stack is not pretrained yet, so this is its random start; fit first"
            warnings.warn(message, stacklevel=stacklevel)
        return self.rbms

    # --- Lightning hooks ----------------------------------------------------------------------
    def on_fit_start(self) -> None:
        if not self.pretrained:  # a resumed fine-tuning fit has restored stages_done by now
            trainer = self.trainer
            trainers = partial(self.stage_trainers or stage_trainer, trainer)  # (stage, epochs) -> Trainer
            pretrain(
                self, trainer.datamodule, trainers, self.stage_resume, prepared=True, world_size=trainer.world_size
            )
            self.rbms.to(self.device)  # each stage fit's teardown moved the shared RBMs to the CPU
        super().on_fit_start()

    def refuse_evaluating_untrained(self, stage: Literal["validate", "test", "predict"]) -> None:
        """Raise :class:`UsageError` if evaluating (a Lightning stage, as train.py's subcommand names it)
        would score RBMs never trained."""
        if self.built and not self.pretrained and any(self.cd.epochs):
            what = {"validate": "validation", "test": "the test", "predict": "prediction"}[stage]
            raise UsageError(
                f"this DBN is neither pretrained nor loaded from a checkpoint, so {what} would score "
                "random weights; pass the fine-tuning checkpoint of a run as ckpt_path (PATH/last.ckpt, "
                "or last), or fit first"
            )

    def on_validation_start(self) -> None:
        if not self.trainer.sanity_checking:
            self.refuse_evaluating_untrained("validate")

    def on_test_start(self) -> None:
        self.refuse_evaluating_untrained("test")

    def on_predict_start(self) -> None:
        self.refuse_evaluating_untrained("predict")


def _all_sigmoid(params: Mapping[str, Any]) -> bool:
    return set(per_rbm(params["hidden_units"], len(params["hidden"]))) == {"sigmoid"}


def _kind(rbm: RBM) -> str:
    """An RBM's unit types, as messages name them: "bernoulli visible, relu hidden units"."""
    return f"{rbm.visible_units} visible, {rbm.hidden_units} hidden units"
