"""LightningModules: one fine-tuning recipe, two ways to start it.

:class:`Classifier` holds the MLP, the cross-entropy step, the optimizer and the accuracy
metrics. :class:`Baseline` starts the MLP from an initialisation scheme (Xavier, He, normal,
constant); :class:`DBN` starts it from a greedily pretrained RBM stack. Nothing else differs.

Data flow of a DBN fit: ``pretrain`` (one Trainer fit per RBM, :mod:`dbn_init.pretrain`) ->
``transfer`` (each RBM's W and hidden bias become a sigmoid Linear layer) -> fine-tune (this
module's own fit) -> test.
"""

from __future__ import annotations

import logging
import os
from typing import Literal

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningDataModule, LightningModule
from torch import Tensor, nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from .init import InitName, init_weight
from .mlp import MLP, Activation, check_hidden
from .monitor import MONITOR_EVERY, NON_FINITE_INPUTS, EpochMeans, newest_checkpoint, weights_diverged
from .pretrain import PretrainData, RBMStage, StageTrainerFactory, default_stage_trainer, up_pass
from .io import load_stack
from .rbm import RBM, check_visible, make_rbm

__all__ = ["Classifier", "Baseline", "DBN"]

log = logging.getLogger(__name__)

# Model options that change how fast a run goes, not what it computes (tested bit for bit): runs
# differing only in these are the same experiment (train.py's --ckpt_path, compare's cells).
SPEED_OPTIONS = frozenset({"steps_per_batch"})


class Classifier(LightningModule):
    """An MLP classifier trained with cross-entropy: the fine-tuning step every model shares.

    Parameters
    ----------
    input_size, num_classes : int
        Set from the DataModule by the CLI (``data.input_size``, ``data.num_classes``).
    hidden : list of int
        Hidden-layer sizes, bottom to top, e.g. ``[256, 256]`` for 784-256-256-10.
    activation : "relu", "sigmoid" or "tanh"
    lr, optimizer, weight_decay, momentum :
        The fine-tuning optimizer: Adam (lr 1e-3, the seed experiment) or SGD with momentum.
    """

    def __init__(
        self,
        input_size: int = 784,
        num_classes: int = 10,
        hidden: list[int] = [256, 256],  # noqa: B006  (LightningCLI reads defaults from the signature)
        activation: Activation = "relu",
        lr: float = 1e-3,
        optimizer: Literal["adam", "sgd"] = "adam",
        weight_decay: float = 0.0,
        momentum: float = 0.9,
    ) -> None:
        super().__init__()
        _check_optimizer_settings(rates=dict(lr=lr), decays=dict(weight_decay=weight_decay),
                                  momenta=dict(momentum=momentum))
        self.mlp = MLP(input_size, check_hidden(hidden), num_classes, activation)
        self.lr, self.optimizer_name = lr, optimizer
        self.weight_decay, self.momentum = weight_decay, momentum
        # Logged once per epoch: a self.log per step costs about as much as the step's matmuls on
        # CPU. Training feeds its metrics once per epoch, from EpochMeans.
        self.train_acc, self.train_loss = MeanMetric(), MeanMetric()
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()

    def forward(self, x: Tensor) -> Tensor:
        """(batch, input_size) -> logits (batch, num_classes)."""
        return self.mlp(x)

    def _step(self, batch: tuple[Tensor, Tensor], split: str) -> Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        getattr(self, f"{split}_acc").update(logits.detach(), y)
        getattr(self, f"{split}_loss").update(loss.detach(), weight=len(y))
        return loss

    def _log_epoch(self, split: str) -> None:
        # Metric objects reduce across processes themselves (torchmetrics' dist_reduce_fx).
        self.log(f"{split}_loss", getattr(self, f"{split}_loss"))
        self.log(f"{split}_acc", getattr(self, f"{split}_acc"), prog_bar=split != "test")

    def setup(self, stage: str) -> None:
        # The CLI links these from the data; from Python a mismatch would end in a bare matmul or
        # cross-entropy error at the first batch.
        datamodule = getattr(self.trainer, "datamodule", None)
        built = {"input_size": self.mlp.linears[0].in_features, "num_classes": self.mlp.head.out_features}
        for name, ours in built.items():
            theirs = getattr(datamodule, name, None)
            if isinstance(theirs, int) and theirs != ours:
                raise ValueError(f"the data ({type(datamodule).__name__}) have {name}={theirs} but the model was built "
                                 f"with {name}={ours}; build it with {name}=datamodule.{name} (train.py links it)")

    def on_fit_start(self) -> None:
        _spare_adam_the_nvml_reload()

    def on_train_start(self) -> None:
        # Also here: a fit resumed from a checkpoint saved after an epoch's last batch but before its
        # end (a validation mid-epoch) goes straight to on_train_epoch_end.
        self._epoch_means = EpochMeans(2, self.device)

    def on_train_epoch_start(self) -> None:
        self._epoch_means = EpochMeans(2, self.device)  # loss, accuracy

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        self._epoch_means.add(loss * len(y), (logits.argmax(-1) == y).sum(), count=len(y))
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        # A sparse sample of steps and the epoch's last (so no checkpoint holds a NaN): one host sync each.
        if (batch_idx % MONITOR_EVERY == 0 or self.trainer.is_last_batch) and weights_diverged(self.mlp):
            raise FloatingPointError(
                f"fine-tuning diverged (non-finite MLP weights) in epoch {self.current_epoch}, by batch "
                f"{batch_idx}, at learning rate {self.lr} ({self.optimizer_name}). Lower --model.lr (Adam: 1e-3 "
                "or below), or clip gradients with --trainer.gradient_clip_val 1.0; check that the inputs are "
                f"scaled (--data.scaling); another cause: {NON_FINITE_INPUTS}. Last checkpoint: "
                f"{newest_checkpoint(self.trainer)}."
            )

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def predict_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        """Logits (batch, num_classes) of a batch's images; its labels, if any, are not used."""
        return self(batch[0])

    def on_train_epoch_end(self) -> None:
        if self._epoch_means.count:  # none after such a resume: nothing of the epoch to report
            self._epoch_means.update(self.train_loss, self.train_acc)
            self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        params = [p for p in self.mlp.parameters() if p.requires_grad]
        # One fused kernel per step instead of a dozen per tensor where torch has it (CPU, CUDA).
        fused = all(p.device.type in ("cpu", "cuda") for p in params) or None
        if self.optimizer_name == "sgd":
            return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay,
                                   fused=fused)
        return torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay, fused=fused)


def _check_optimizer_settings(rates: dict[str, float], decays: dict[str, float], momenta: dict[str, float]) -> None:
    """Refuse settings torch would refuse only at the first optimizer step (after a whole
    pretraining, for a DBN) or not at all: rates > 0, decays >= 0, momenta in [0, 1)."""
    bad = [f"{n} (--model.{n}) must be > 0, got {v}" for n, v in rates.items() if not v > 0]
    bad += [f"{n} (--model.{n}) must be >= 0, got {v}" for n, v in decays.items() if not v >= 0]
    bad += [f"{n} (--model.{n}) must lie in [0, 1) (0.5 to 0.9 are usual), got {v}"
            for n, v in momenta.items() if not 0 <= v < 1]
    if bad:
        raise ValueError("; ".join(bad))


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


class Baseline(Classifier):
    """The MLP started from an initialisation scheme of :mod:`dbn_init.init`.

    Parameters
    ----------
    init : scheme name
        ``xavier_uniform``, ``xavier_normal``, ``he_uniform``, ``he_normal`` (gain from
        ``activation``), ``normal`` (N(0, init_std^2)) or ``constant`` (every weight
        ``init_value``; zero is refused).
    """

    def __init__(
        self,
        input_size: int = 784,
        num_classes: int = 10,
        hidden: list[int] = [256, 256],  # noqa: B006
        init: InitName = "xavier_uniform",
        activation: Activation = "relu",
        init_std: float = 1.0,
        init_value: float = 0.01,
        lr: float = 1e-3,
        optimizer: Literal["adam", "sgd"] = "adam",
        weight_decay: float = 0.0,
        momentum: float = 0.9,
    ) -> None:
        super().__init__(input_size, num_classes, hidden, activation, lr, optimizer, weight_decay, momentum)
        self.save_hyperparameters()
        self.mlp.init_weights(init, std=init_std, value=init_value)  # refuses a zero constant


class DBN(Classifier):
    """A Deep Belief Network: greedy RBM pretraining, then the same fine-tuning as the baselines.

    Hinton, Osindero & Teh (2006); Hinton & Salakhutdinov (2006) for fine-tuning the stack with
    backprop. The first RBM models the data (Bernoulli visible units for pixels in [0, 1], or
    Gaussian for standardised data); every RBM above models the hidden probabilities of the one
    below with Bernoulli units. The stack then becomes a sigmoid MLP with a new classifier head.

    Parameters
    ----------
    hidden : list of int
        Hidden sizes of RBM 1..k, which are also the MLP's hidden layers.
    visible_units : "bernoulli" or "gaussian"
        Unit type of RBM 1's visible layer.
    pretrain_epochs : int or list of int
        Epochs per stage (one number for all, or one per RBM). 0 skips pretraining: the MLP
        starts from RBMs at their N(0, 0.01) initialisation.
    pretrain_lr : float
        CD learning rate of Bernoulli RBMs (0.1, as in Hinton & Salakhutdinov's code).
    gaussian_lr : float
        CD learning rate of a Gaussian first RBM. Unit-variance Gaussian visible units diverge at
        Bernoulli rates (Hinton 2010, section 13.2); 1e-3 is stable on standardised pixels.
    initial_momentum, final_momentum, momentum_switch_epoch :
        Momentum schedule of each stage (0.5 for the first 5 epochs, then 0.9; Hinton 2010).
    rbm_weight_decay : float
        L2 cost on RBM weights (2e-4, Hinton 2010 section 10); biases are not decayed.
    cd_k : int
        Gibbs sweeps per CD update.
    persistent : bool
        Persistent CD (Tieleman 2008): chains carry over between updates, one set per rank.
    sample_visible : bool
        Sample visible units in CD's chain instead of using their mean.
    sparsity_target, sparsity_cost :
        Optional sparsity penalty on mean hidden activation (Lee et al. 2008).
    lr, optimizer, weight_decay, momentum :
        Fine-tuning optimizer, as for :class:`Baseline`.
    pretrain_seed : int
        Seeds the Gibbs sampling noise (combined with stage and rank).
    ais_chains, ais_betas : int
        With ``ais_chains > 0``, each Bernoulli stage ends with an AIS estimate of its log Z
        (:mod:`dbn_init.evaluate`; 100 chains as in Salakhutdinov & Murray 2008, and 10,000 betas in
        the paper's 500 : 4,000 : 10,000 proportions, where the paper used all 14,500)
        and logs ``rbm{k}/ais_log_z`` and ``rbm{k}/val_log_prob`` (mean -F(v) - log Z on the
        validation split, in nats; ``val_log_prob_low`` uses the upper end of log Z's 3-sigma
        interval). 0 (the default) skips it.
    steps_per_batch : int
        CD updates per Lightning step in pretraining: the loader serves this many mini-batches
        of ``batch_size`` at once and each gets its own optimizer step, so the updates are the
        same as with 1 (tested bit for bit), minus Lightning's per-step overhead (about 1 ms, a
        tenth of a CD-1 step at batch 128 on 2 CPU cores; on a GPU, where the step's arithmetic
        takes microseconds, a larger share, not measured here). Stage progress bars
        and ``limit_train_batches`` count loader batches (stages validate once per epoch).
    pretrained : str, optional
        Start from an exported RBM stack (our ``.safetensors``, a DBN ``.ckpt`` or a ``.npz``;
        see :mod:`dbn_init.io`) instead of pretraining. A stack shorter than ``hidden`` is the
        bottom of the DBN: the RBMs above it are pretrained on top of it.
    """

    def __init__(
        self,
        input_size: int = 784,
        num_classes: int = 10,
        hidden: list[int] = [256, 256],  # noqa: B006
        visible_units: Literal["bernoulli", "gaussian"] = "bernoulli",
        pretrain_epochs: int | list[int] = 10,
        pretrain_lr: float = 0.1,
        gaussian_lr: float = 1e-3,
        initial_momentum: float = 0.5,
        final_momentum: float = 0.9,
        momentum_switch_epoch: int = 5,
        rbm_weight_decay: float = 2e-4,
        cd_k: int = 1,
        persistent: bool = False,
        sample_visible: bool = False,
        sparsity_target: float | None = None,
        sparsity_cost: float = 0.0,
        lr: float = 1e-3,
        optimizer: Literal["adam", "sgd"] = "adam",
        weight_decay: float = 0.0,
        momentum: float = 0.9,
        pretrain_seed: int = 0,
        pretrained: str | None = None,
        ais_chains: int = 0,
        ais_betas: int = 10000,
        steps_per_batch: int = 8,
    ) -> None:
        super().__init__(input_size, num_classes, hidden, "sigmoid", lr, optimizer, weight_decay, momentum)
        self.save_hyperparameters()
        hidden = check_hidden(hidden)
        epochs = [pretrain_epochs] * len(hidden) if isinstance(pretrain_epochs, int) else list(pretrain_epochs)
        if len(epochs) != len(hidden) or any(e < 0 for e in epochs):
            raise ValueError(
                f"pretrain_epochs must be one non-negative number or one per RBM ({len(hidden)} for "
                f"hidden={hidden}), got {pretrain_epochs}"
            )
        if ais_chains == 1 or ais_chains < 0 or ais_betas < 4:
            raise ValueError(f"ais_chains must be 0 (off) or >= 2 (the error bar needs a spread) and ais_betas >= 4 "
                             f"(the schedule has three pieces; thousands are typical), got ais_chains={ais_chains}, "
                             f"ais_betas={ais_betas}")
        _check_optimizer_settings(rates=dict(pretrain_lr=pretrain_lr, gaussian_lr=gaussian_lr),
                                  decays=dict(rbm_weight_decay=rbm_weight_decay),
                                  momenta=dict(initial_momentum=initial_momentum, final_momentum=final_momentum))
        if cd_k < 1:
            raise ValueError(f"cd_k must be >= 1, got {cd_k}")
        if momentum_switch_epoch < 0:
            raise ValueError(f"momentum_switch_epoch must be >= 0 (the epoch from which final_momentum applies; 0: "
                             f"from the start), got {momentum_switch_epoch}")
        if sparsity_cost < 0:
            raise ValueError(f"sparsity_cost must be >= 0 (0 turns the penalty off), got {sparsity_cost}")
        if steps_per_batch < 1:
            raise ValueError(f"steps_per_batch must be >= 1 (CD updates per Lightning step), got {steps_per_batch}")
        if sparsity_target is not None and not 0.0 < sparsity_target < 1.0:
            raise ValueError(f"sparsity_target must lie in (0, 1), got {sparsity_target}")
        self.pretrain_epochs = epochs
        sizes = [input_size, *hidden]
        self.rbms = nn.ModuleList(
            make_rbm(n_vis, n_hid, visible_units if i == 0 else "bernoulli")
            for i, (n_vis, n_hid) in enumerate(zip(sizes[:-1], sizes[1:]))
        )
        self.rbms.requires_grad_(False)  # trained only inside their own stage's fit
        # How many stages are finished; saved in checkpoints so a resumed run skips them.
        self.register_buffer("stages_done", torch.tensor(0))
        init_weight(self.mlp.head.weight, "xavier_uniform", "sigmoid")
        nn.init.zeros_(self.mlp.head.bias)
        self.transfer()  # until pretraining runs, the MLP mirrors the RBMs' N(0, 0.01) start

    # --- pretraining --------------------------------------------------------------------------
    @property
    def pretrained(self) -> bool:
        return int(self.stages_done) >= len(self.rbms)

    def stage(self, index: int) -> RBMStage:
        """The LightningModule that trains RBM ``index`` (from 0) on the frozen ones below."""
        hp = self.hparams
        first_gaussian = index == 0 and hp.visible_units == "gaussian"
        return RBMStage(
            self.rbms, index,
            lr=hp.gaussian_lr if first_gaussian else hp.pretrain_lr,
            initial_momentum=hp.initial_momentum, final_momentum=hp.final_momentum,
            momentum_switch_epoch=hp.momentum_switch_epoch, weight_decay=hp.rbm_weight_decay,
            cd_k=hp.cd_k, persistent=hp.persistent, sample_visible=hp.sample_visible,
            sparsity_target=hp.sparsity_target, sparsity_cost=hp.sparsity_cost, seed=hp.pretrain_seed,
            ais_chains=hp.ais_chains, ais_betas=hp.ais_betas,
        )

    @torch.no_grad()
    def load_rbms(self, rbms: list[RBM]) -> None:
        """Use ``rbms`` (validated, bottom to top) as this DBN's first ``len(rbms)`` stages; the DBN
        is left unchanged if any of them does not fit."""
        if len(rbms) > len(self.rbms):
            raise ValueError(f"the imported stack has {len(rbms)} RBMs but this DBN has {len(self.rbms)} "
                             f"(hidden={self.hparams.hidden}); pass --model.hidden with one size per imported RBM "
                             "(or more, to pretrain RBMs on top of it)")
        for i, (source, target) in enumerate(zip(rbms, self.rbms)):
            if source.weight.shape != target.weight.shape or source.visible_units != target.visible_units:
                raise ValueError(
                    f"imported RBM {i + 1} is {source.visible_units} {tuple(source.weight.shape)} but this DBN "
                    f"expects {target.visible_units} {tuple(target.weight.shape)} (n_hidden, n_visible); "
                    "match --model.hidden and --model.visible_units to the imported stack"
                )
        for source, target in zip(rbms, self.rbms):
            target.load_state_dict(source.state_dict())
        self.stages_done.fill_(max(int(self.stages_done), len(rbms)))
        self.transfer()

    def import_pretrained(self, data_scaling: str | None) -> None:
        """Load the ``pretrained`` stack file as the bottom stages, checked against this DBN's sizes
        and unit types and against ``data_scaling`` (the DataModule's ``scaling``, if it has one)."""
        stack = load_stack(self.hparams.pretrained, input_size=self.hparams.input_size, hidden=self.hparams.hidden)
        scaling = stack.metadata.get("scaling")
        if scaling and data_scaling and scaling != data_scaling:
            raise ValueError(
                f"the imported stack {self.hparams.pretrained} was pretrained on inputs scaled {scaling!r} but "
                f"this data is scaled {data_scaling!r}: RBM 1 would see inputs unlike its training data; "
                f"pass --data.scaling {scaling} (or pretrain a new stack for this scaling)"
            )
        self.load_rbms(stack.rbms)

    @torch.no_grad()
    def load_stage_checkpoint(self, state_dict: dict[str, Tensor], stage: int) -> None:
        """Take the RBM stack from a stage checkpoint (``rbm{stage}-last.ckpt``): RBMs below
        ``stage`` are finished, RBM ``stage`` resumes from it."""
        rbm_state = {k.removeprefix("rbms."): v for k, v in state_dict.items() if k.startswith("rbms.")}
        self.rbms.load_state_dict(rbm_state)
        self.stages_done.fill_(stage - 1)

    def pretrain(self, datamodule: LightningDataModule, trainer_factory: StageTrainerFactory = default_stage_trainer,
                 resume: dict[int, str] | None = None) -> None:
        """Train RBM 1..k greedily, one ``trainer_factory(stage, epochs).fit`` each, then transfer.

        With ``pretrained`` set, the imported stack replaces the bottom stages. Stages already
        recorded in ``stages_done`` (imported, or a resumed run) are skipped; ``resume`` maps a
        stage index (from 0) to the checkpoint its fit resumes from (epoch, optimizer, momentum,
        persistent chains, sampling noise).
        """
        if self.hparams.pretrained and int(self.stages_done) == 0:
            self.import_pretrained(getattr(datamodule, "scaling", None))
        datamodule.prepare_data()
        datamodule.setup("fit")
        data = getattr(datamodule, "pretrain_x", None)
        if data is not None:
            if data.shape[1] != self.rbms[0].n_visible:
                raise ValueError(
                    f"the data has {data.shape[1]} features per image but RBM 1 expects "
                    f"{self.rbms[0].n_visible} (input_size); let the CLI link data.input_size or "
                    "pass the DataModule's input_size to the model"
                )
            check_visible(data, self.hparams.visible_units, where="the pretraining data")
        for index, epochs in enumerate(self.pretrain_epochs):
            if index < int(self.stages_done) or epochs == 0:
                continue
            log.info("pretraining RBM %d/%d for %d epochs", index + 1, len(self.rbms), epochs)
            trainer = trainer_factory(index, epochs)
            # else an untrained RBM passes for pretrained (max_steps 0: a Python factory's; train.py keeps it for fine-tuning)
            if trainer.limit_train_batches == 0 or trainer.max_steps == 0:
                raise RuntimeError(
                    f"RBM {index + 1}'s stage would make no CD update (limit_train_batches="
                    f"{trainer.limit_train_batches}, max_steps={trainer.max_steps}); let the stages train "
                    "(--trainer.limit_train_batches > 0), or skip pretraining with --model.pretrain_epochs 0"
                )
            trainer.fit(self.stage(index), datamodule=PretrainData(datamodule, self.hparams.steps_per_batch),
                        ckpt_path=(resume or {}).get(index))
            self.stages_done.fill_(index + 1)
        self.rbms.requires_grad_(False)
        self.rbms.eval()
        self.stages_done.fill_(len(self.rbms))
        self.transfer()

    @torch.no_grad()
    def transfer(self) -> None:
        """Copy the RBM stack into the MLP's hidden layers (the head keeps its own init)."""
        self.mlp.load_rbms(list(self.rbms))

    def up_pass(self, x: Tensor) -> Tensor:
        """The DBN's top-level hidden probabilities: (batch, input_size) -> (batch, hidden[-1])."""
        return up_pass(self.rbms, x)

    def _refuse_untrained(self, problem: str) -> None:
        """Refuse to use RBMs never pretrained, unless pretrain_epochs 0 asked for exactly that."""
        if not self.pretrained and any(self.pretrain_epochs):
            raise RuntimeError(f"this DBN {problem}")

    def on_fit_start(self) -> None:
        self._refuse_untrained("has not been pretrained: call model.pretrain(datamodule) before trainer.fit "
                               "(train.py does this for you), or set pretrain_epochs to 0 to fine-tune from "
                               "randomly initialised RBMs")
        super().on_fit_start()

    def refuse_evaluating_untrained(self, stage: Literal["validate", "test", "predict"]) -> None:
        """Raise RuntimeError if evaluating (a Lightning stage, as train.py's subcommand names it)
        would score RBMs never trained."""
        what = {"validate": "validation", "test": "the test", "predict": "prediction"}[stage]
        self._refuse_untrained(f"is neither pretrained nor loaded from a checkpoint, so {what} would score random "
                               "weights; pass the fine-tuning checkpoint of a run (train.py: --ckpt_path "
                               "PATH/last.ckpt or --ckpt_path last), or fit first")

    def on_validation_start(self) -> None:
        self.refuse_evaluating_untrained("validate")

    def on_test_start(self) -> None:
        self.refuse_evaluating_untrained("test")

    def on_predict_start(self) -> None:
        self.refuse_evaluating_untrained("predict")
