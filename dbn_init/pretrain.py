"""Greedy layer-wise pretraining: one Lightning fit per RBM of the stack, outside any model.

Data flow: :func:`pretrain` takes a :class:`~dbn_init.models.DBN` (its RBM stack and its
:class:`CDSettings`), the data and a Trainer factory; :func:`greedy` fits an :class:`RBMStage`
for each stage not yet done, on a :class:`PretrainData` view of the data, then the stack goes
into the DBN's MLP. ``Trainer.fit(dbn, datamodule)`` calls it from ``DBN.on_fit_start``, on any
number of devices: each stage's Trainer (:func:`stage_trainer`) follows the fit's, and in a
multi-process fit joins its processes.

Stage k trains RBM k on the hidden probabilities of RBMs 1..k-1, which are frozen *by
construction*: their ``requires_grad`` is switched off before the stage's Trainer wraps the
model, so DDP never registers them and no optimizer holds them (toggling ``requires_grad``
after DDP has wrapped a model silently breaks gradient synchronisation). The CD update is a loss
(:meth:`dbn_init.rbm.RBM.cd_loss`) stepped by SGD with momentum, so DDP averages it across ranks
like any gradient; in one process the stage skips autograd and writes the same gradient into
``.grad`` directly (:meth:`dbn_init.rbm.RBM.cd_grad_`) before the same optimizer step. The step
is written out (manual optimization: zero_grad, backward, step), which spares Lightning's closure
machinery about 1.5 ms per step on CPU, a fifth of a CD-1 step at batch 128, and lets one
Lightning step run several CD updates (``steps_per_batch``): the loader serves that many
mini-batches at once and each gets its own optimizer step, so the updates are exactly those of
one mini-batch per step, without Lightning's per-batch overhead for each.
Under DDP, Lightning re-arms gradient averaging before every ``manual_backward``.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import warnings
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.imports import _RICH_AVAILABLE
from lightning.pytorch.utilities.model_helpers import is_overridden
from torch import Tensor, nn
from torchmetrics import MeanMetric

from . import entry
from .ais import ais_log_partition, base_rate_bias
from .callbacks import StageProgressBar, prepare_trainer
from .constraints import UsageError
from .io import data_record, load_stack
from .monitor import MONITOR_EVERY, NON_FINITE_INPUTS, EpochMeans, newest_checkpoint, weights_diverged
from .rbm import RBM, check_visible, up_pass

if TYPE_CHECKING:
    from .models import DBN

__all__ = [
    "CDSettings",
    "RBMStage",
    "PretrainData",
    "import_stack",
    "StageTrainers",
    "make_trainer",
    "quiet_lightning",
    "stage_trainer",
    "pretrain",
    "greedy",
]

StageTrainers = Callable[[int, int], Trainer]  # (stage index from 0, epochs) -> the stage's Trainer


class _Quiet(logging.Filter):
    """Drops Lightning's advertisements ("💡 Tip: ... try installing litlogger"), which every
    Trainer prints, so once per RBM stage here: nothing a user can act on; and, while
    :func:`stage_trainer` builds a stage's Trainer, the device lines its fit printed already."""

    following = False  # a stage Trainer of a running fit is being built

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        devices = self.following and message.startswith(("GPU available", "TPU available"))
        return not (devices or message.startswith("💡 Tip"))


_QUIET = _Quiet()
logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_QUIET)
# What Lightning says on a fit here that its user can do nothing about, silenced wherever this module
# is imported (ddp_spawn's workers too), and again inside quiet_lightning for callers who asked to
# see every warning.
_LIGHTNING_NOISE = (
    # A stage validates on the data's val_dataloader when it has one; without one Lightning warns on every stage.
    r"You defined a `validation_step` but have no `val_dataloader`",
    # The stages and the models log once per epoch, so Lightning's hint that an epoch of fewer batches
    # than log_every_n_steps shows no training logs does not apply; small data met it at every fit.
    r"The number of training batches \(\d+\) is smaller than the logging",
    # Lightning's all_gather (a stage's checkpoint gathers every rank's noise stream and chains) calls a
    # torch function that torch 2.14 deprecates.
    r"torch.distributed.nn.functional.all_gather is deprecated",
    r".*LeafSpec.*is deprecated",  # Lightning's own use of torch's pytree, on every fit
)
for _message in _LIGHTNING_NOISE:
    warnings.filterwarnings("ignore", message=_message)


DEFAULT_PRETRAIN_EPOCHS = 10  # per RBM, where pretrain_epochs is None (Hinton & Salakhutdinov 2006)
# An NReLU stage's rate is at most this over the mean squared norm of its input rows (over the
# largest squared norm for Gaussian visible units, whose inputs are unbounded): the
# normalised LMS step (Nagumo & Noda 1967), stable below 2, so that one update moves a unit's
# input by about its own size, however wide the input.
NORMALISED_STEP = 1.0


class CDSettings:
    """How every RBM of a stack is trained: the DBN holds one (``dbn.cd``), each stage reads it.

    The DBN's pretraining options as attributes, by the names of its arguments (``cd.pretrain_lr``,
    ``cd.cd_k``, ...), read and never set: each option is declared, documented and checked once,
    in :class:`~dbn_init.models.DBN`'s signature, docstring and constraints table, and nothing here
    repeats it. ``options`` are the DBN's arguments less the fine-tuning ones; ``epochs`` is
    ``pretrain_epochs`` as one number per RBM of a ``depth``-RBM stack; ``tempered``: parallel tempering is on.
    """

    def __init__(self, options: Mapping[str, Any], depth: int) -> None:
        self.__dict__.update(options)
        self.stretches = self.pretrain_epochs is None  # the default: 10 epochs, more on small data (see stretch)
        epochs = DEFAULT_PRETRAIN_EPOCHS if self.stretches else self.pretrain_epochs
        self.epochs: tuple[int, ...] = tuple([epochs] * depth if isinstance(epochs, int) else epochs)
        self.tempered = self.pt_temperatures > 1

    def stretch(self, index: int, updates_per_epoch: int | None) -> int:
        """How many times RBM ``index``'s epochs its stage runs: with ``pretrain_epochs`` None, the
        least whole number that makes ``pretrain_updates`` CD updates at ``updates_per_epoch`` (None:
        unknown); else 1. The stage runs ``stretch * epochs`` epochs; validation, the momentum switch
        and the rate schedule keep their place in it."""
        epochs, wanted = self.epochs[index], self.pretrain_updates
        if not (self.stretches and epochs and wanted and updates_per_epoch):
            return 1
        return max(1, math.ceil(wanted / (epochs * updates_per_epoch)))


def _rate_option(rbm: RBM, index: int) -> str:
    """The DBN option that sets RBM ``index``'s CD learning rate, for what its visible units model:
    ``pretrain_lr`` for Bernoulli units, ``gaussian_lr`` for RBM 1 on standardised data,
    ``rectified_lr`` for the RBMs above it in a ReLU stack (rectified activities, not standardised)
    and for RBMs with linear hidden units (unbounded too)."""
    if rbm.hidden_units == "linear" or (rbm.visible_units == "gaussian" and index > 0):
        return "rectified_lr"
    return "gaussian_lr" if rbm.visible_units == "gaussian" else "pretrain_lr"


def _lr_factor(schedule: str, epoch: int, epochs: int) -> float:
    """A stage's learning rate at ``epoch`` (from 0) of ``epochs``, as a fraction of its base rate:
    1 throughout ("constant"), or decayed per epoch to 1/epochs in the last ("linear") or along a
    half cosine ("cosine", 0.5 (1 + cos(pi epoch / epochs)))."""
    if schedule == "linear":
        return 1.0 - epoch / epochs
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))
    return 1.0


def _sparsity_penalty(rbm: RBM, v: Tensor, target: float, cost: float) -> Tensor:
    """Lee, Ekanadham & Ng (2008): ``cost * sum_j (q_j - target)^2``, q_j the mean of sigmoid hidden
    unit j's activation over the mini-batch ``v`` (batch, n_visible); a differentiable scalar."""
    q = torch.sigmoid(rbm.hidden_logits(v)).mean(0)  # (n_hidden,)
    return cost * ((q - target) ** 2).sum()


def _features(batch: Tensor | Sequence[Any]) -> Tensor:
    """The inputs of a batch, ``x`` or ``(x, y, ...)``, flattened to (batch, features)."""
    x = batch if isinstance(batch, Tensor) else batch[0]
    return x.flatten(1) if x.ndim > 2 else x


class RBMStage(LightningModule):
    """The training recipe for RBM ``index`` of ``rbms`` (contrastive divergence with momentum).

    Parameters
    ----------
    rbms : nn.ModuleList of RBM
        The whole stack, shared with the DBN (no copy): training here updates the DBN's RBM.
    index : int
        Which RBM to train, from 0; RBMs below it only encode the data, above it are unused.
    settings : CDSettings
        The DBN's CD recipe (its ``cd`` attribute), one object for every stage.

    Fitted on :class:`PretrainData`, the stage splits each loader batch into mini-batches of the
    data's ``batch_size`` and makes one CD update per mini-batch (several per loader batch when
    ``PretrainData`` groups them, see ``steps_per_batch``); on any other data, one per batch.
    """

    def __init__(self, rbms: nn.ModuleList, index: int, settings: CDSettings, stretch: int = 1) -> None:
        super().__init__()
        self.rbms = rbms
        self.index = index
        self.cd = settings
        self.stretch = stretch  # the stage runs stretch times its epochs (small data: CDSettings.stretch)
        self.name = f"rbm{index + 1}"  # the prefix of its logged metrics
        self.rate_option = _rate_option(rbms[index], index)  # the DBN option that sets its CD rate
        self.lr = getattr(settings, self.rate_option)
        self.mini_batch: int | None = None  # rows per CD update (PretrainData's batch_size)
        self.chain: Tensor | None = None  # PCD fantasy particles, one set per rank; (T, n, V) under tempering
        self.offsets: list[Tensor] | None = None  # centring: [visible offset (V,), hidden offset (H,)], per rank
        self.generator: torch.Generator | None = None
        self.backprop_cd = True  # step the CD loss through backward (set per fit in on_fit_start)
        self._generator_state: Tensor | None = None
        self.monitor_every = MONITOR_EVERY  # CD steps between samples of the update ratio, CD loss, NaN check
        self.monitor_x: Tensor | None = None  # fixed training subset for the free-energy gap
        self.train_recon, self.train_cd_loss = MeanMetric(), MeanMetric()
        self.automatic_optimization = False  # zero_grad, backward, step in training_step: no closure
        self._checked_splits: set[str] = set()  # the first batch of each split of each fit is validated
        for i, rbm in enumerate(rbms):  # freeze by construction, before any Trainer wraps us
            rbm.requires_grad_(i == index)

    @property
    def rbm(self) -> RBM:
        return self.rbms[self.index]

    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        """The data as RBM ``index`` sees it: hidden activities of the frozen RBMs below, times
        its ``input_scale``."""
        return up_pass(self.rbms[: self.index], x) * self.rbm.input_scale

    # --- Lightning hooks ----------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        entry.close_process_group_at_exit()

    def on_fit_start(self) -> None:
        self._checked_splits = set()
        datamodule = self.trainer.datamodule
        if isinstance(datamodule, PretrainData):
            monitor_x = datamodule.monitor_subset()
            # once, in the RBM's device and dtype (float64 under trainer.precision 64-true)
            self.monitor_x = None if monitor_x is None else monitor_x.to(self.device, self.rbm.weight.dtype)
            self.mini_batch = datamodule.batch_size
            if monitor_x is not None and self.rbm.hidden_units != "sigmoid":
                self._fit_to_input()
        # Gibbs noise must differ across ranks (else DDP averages identical chains) and be
        # reproducible: one generator per rank, seeded from the run seed, the stage and the rank.
        self.generator = torch.Generator(device=self.device).manual_seed(
            (self.cd.pretrain_seed * 1_000_003 + self.index * 1_009 + self.global_rank) % (2**63 - 1)
        )
        state = self._generator_state
        if state is not None:  # resumed: continue the same noise stream, if it is this device kind's
            if state.numel() == self.generator.get_state().numel():
                self.generator.set_state(state)
            else:
                rank_zero_warn(
                    f"stage {self.index + 1} resumes on {self.device.type} from a checkpoint whose "
                    "sampling noise came from another kind of device; it draws fresh (seeded) noise, so "
                    "it will not end bit-identical to an uninterrupted run"
                )
        if self.chain is not None:  # resumed PCD chains, as the checkpoint was loaded
            self.chain = self.chain.to(self.device, self.rbm.weight.dtype)
        if self.offsets is not None:
            self.offsets = [t.to(self.device, self.rbm.weight.dtype) for t in self.offsets]
        self.betas = None  # parallel tempering's inverse temperatures, pt_min_beta to 1 evenly: (pt_temperatures,)
        if self.cd.tempered:
            betas = torch.linspace(self.cd.pt_min_beta, 1.0, self.cd.pt_temperatures, dtype=torch.float64)
            self.betas = betas.to(self.device, self.rbm.weight.dtype)
        # One process: RBM.cd_grad_ writes the gradient into .grad without autograd. DDP averages
        # gradients in backward and a gradient scaler (16-bit mixed precision) scales the loss, so
        # those take the loss path (RBM.cd_loss + manual_backward); the gradient is the same.
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        self.backprop_cd = self.trainer.world_size > 1 or scaler is not None

    def _fit_to_input(self) -> None:
        """Suit an NReLU (or linear) stage to the size of its input, measured on the fixed monitor
        subset (the same rows on every rank): above NReLU units, scale the input to at most unit mean square,
        the unit-variance visible units' scale (Hinton 2010, section 13.2), which a stage that
        resumes measures alike; then cap the rate at ``NORMALISED_STEP`` over the input's mean
        squared norm (its largest, for Gaussian visible units), as unbounded units need however
        wide the input."""
        below = up_pass(self.rbms[: self.index], self.monitor_x)
        if self.index > 0 and self.rbm.visible_units == "gaussian":
            mean_square = below.pow(2).mean().item()
            self.rbm.input_scale.fill_(min(1.0, 1.0 / math.sqrt(max(mean_square, 1e-12))))
        norms = (below * self.rbm.input_scale).pow(2).sum(1)  # what encode gives
        # Bernoulli inputs are bounded; Gaussian ones are not, and rare rows of large norm (a sparse
        # feature, standardised) overshoot at the mean's rate: their cap is set by the largest row.
        energy = (norms.max() if self.rbm.visible_units == "gaussian" else norms.mean()).item()
        self.lr = min(getattr(self.cd, self.rate_option), NORMALISED_STEP / max(energy, 1e-12))

    def on_train_epoch_start(self) -> None:
        # Hinton (2010, section 9): momentum 0.5 while the weights settle, then 0.9.
        cd = self.cd
        switch = cd.momentum_switch_epoch * self.stretch
        momentum = cd.initial_momentum if self.current_epoch < switch else cd.final_momentum
        # of the epoch, so a resumed stage runs alike
        lr = self.lr * _lr_factor(cd.pretrain_lr_schedule, self.current_epoch, self.trainer.max_epochs)
        for group in self.optimizers().optimizer.param_groups:
            group["momentum"], group["lr"] = momentum, lr
        # Per-sample means: reconstruction error over every step, CD loss over the monitored steps.
        self._recon_sum, self._cd_loss_sum = EpochMeans(1, self.device), EpochMeans(1, self.device)
        if cd.tempered:  # swaps tried and accepted per pair of neighbouring temperatures
            self._swaps = torch.zeros(2, cd.pt_temperatures - 1, device=self.device)
        self.updates_in_epoch = 0  # CD updates so far this epoch (several per loader batch)
        # sync_dist on values every rank holds alike: a no-op average that spares Lightning's DDP warning
        self.log(f"{self.name}/momentum", momentum, on_step=False, on_epoch=True, sync_dist=True)
        self.log(f"{self.name}/lr", lr, on_step=False, on_epoch=True, sync_dist=True)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        v = self.encode(self._checked(_features(batch), "training"))
        for mini_batch in v.split(self.mini_batch) if self.mini_batch else (v,):
            self._cd_step(mini_batch)

    def _checked(self, x: Tensor, split: str) -> Tensor:
        """``x``, validated at the fit's first batch: where data enter pretraining, whatever loader
        serves them (one host sync per fit)."""
        if split not in self._checked_splits:
            check_visible(x, self.rbms[0], where=f"stage {self.index + 1}'s first {split} batch")
            self._checked_splits.add(split)
        return x

    def _cd_step(self, v: Tensor) -> None:
        """One CD/PCD/PT update on the mini-batch ``v`` (batch, n_visible), as the RBM sees it."""
        cd = self.cd
        # A sparse sample of steps measures the CD loss's value and the update ratio, and checks
        # for divergence (each check is one host sync, which would stall every step on a GPU).
        monitored = self.updates_in_epoch % self.monitor_every == 0
        weight_before = self.rbm.weight.detach().clone() if monitored else None
        chain, k = self._negative_phase(v)
        if cd.centring and self.offsets is None:  # the data's mean for the visible units, 0.5 for the hidden ones
            self.offsets = [v.detach().mean(0), torch.full((self.rbm.n_hidden,), 0.5, device=v.device, dtype=v.dtype)]
        step = dict(
            k=k,
            chain=chain,
            generator=self.generator,
            sample_visible=cd.sample_visible,
            value=monitored,
            offsets=self.offsets if cd.centring else None,
        )
        penalty = None
        if cd.sparsity_cost and cd.sparsity_target is not None:
            penalty = _sparsity_penalty(self.rbm, v, cd.sparsity_target, cd.sparsity_cost)
        optimizer = self.optimizers()
        if self.backprop_cd:
            optimizer.zero_grad()
            result = self.rbm.cd_loss(v, **step)
            self.manual_backward(result.loss if penalty is None else result.loss + penalty)  # DDP averages here
        else:
            result = self.rbm.cd_grad_(v, **step)  # the same gradient, straight into .grad
            if penalty is not None:
                self.manual_backward(penalty)  # accumulates onto it
        optimizer.step()
        if cd.persistent and not cd.tempered:
            self.chain = result.v_model
        if cd.centring:  # Melchior et al. (2016): sliding means of the data, after the step
            for offset, mean in zip(self.offsets, (v.mean(0), result.hidden_probs.mean(0))):
                offset.lerp_(mean.to(offset.dtype), cd.centring_rate)
        self._recon_sum.add(F.mse_loss(result.reconstruction, v, reduction="sum"), count=len(v))
        if monitored:
            self._cd_loss_sum.add(result.loss * len(v), count=len(v))
            # Hinton (2010, section 15): updates ~1e-3 of the weights' size are healthy.
            ratio = (self.rbm.weight.detach() - weight_before).norm() / weight_before.norm().clamp_min(1e-12)
            self.log(f"{self.name}/update_ratio", ratio, on_step=False, on_epoch=True, sync_dist=True)
            self._check_divergence()
        self.updates_in_epoch += 1

    def _negative_phase(self, v: Tensor) -> tuple[Tensor | None, int]:
        """Where this update's negative phase starts and how many sweeps :meth:`RBM.cd_loss` runs:
        the data (CD), the persistent chains (PCD), or the beta = 1 chains after parallel
        tempering's sweeps and swaps (then 0 sweeps are left)."""
        cd = self.cd
        if not (cd.persistent or cd.tempered):  # plain CD, from the data
            return None, cd.cd_k
        if self.chain is None:  # Tieleman (2008) starts the chains at the data (rows repeated for more chains)
            start = v.detach()[torch.arange(cd.pcd_chains or len(v), device=v.device) % len(v)]
            self.chain = start.expand(cd.pt_temperatures, *start.shape).clone() if cd.tempered else start.clone()
        if not cd.tempered:
            return self.chain, cd.cd_k
        parity = self.updates_in_epoch % 2  # even-odd swaps, alternating
        self.chain, accepted = self.rbm.parallel_tempering(self.chain, self.betas, cd.cd_k, self.generator, parity)
        tried = ~accepted.isnan()
        self._swaps[0] += tried
        self._swaps[1] += accepted.nan_to_num()
        return self.chain[-1], 0

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        entry.check()
        if self.trainer.is_last_batch:  # so that no checkpoint of the epoch holds a NaN
            self._check_divergence()

    def _check_divergence(self) -> None:
        if weights_diverged(self.rbm):
            if self.rbm.visible_units == "gaussian":
                cause = (
                    f"a learning rate too high for Gaussian visible units (try model."
                    f"{self.rate_option} {self.lr / 10:g}) or inputs that are not "
                    "standardised (data.scaling standardize)"
                )
            else:
                cause = (
                    f"a learning rate too high (try model.{self.rate_option} {self.lr / 10:g}) or inputs outside "
                    "[0, 1] (data.scaling unit)"
                )
            raise FloatingPointError(
                f"RBM {self.index + 1} diverged (non-finite weights) in epoch {self.current_epoch}, by CD step "
                f"{self.updates_in_epoch}, at learning rate {self.lr}. Likely cause: {cause}; or {NON_FINITE_INPUTS}. "
                "Last good "
                f"checkpoint: {newest_checkpoint(self.trainer)}. Rerun with the fix (a changed setting makes it a new "
                "run, which starts afresh: ckpt_path resumes only a run with the same settings)."
            )

    def on_train_epoch_end(self) -> None:
        self._recon_sum.update(self.train_recon)
        self.log(f"{self.name}/train_recon", self.train_recon, prog_bar=True)
        if self.rbm.tractable:  # NReLU units have no closed-form free energy, so no CD loss value
            self._cd_loss_sum.update(self.train_cd_loss)
            self.log(f"{self.name}/cd_loss", self.train_cd_loss)
        if self.cd.tempered:  # Desjardins et al. (2010): swap rates between neighbouring temperatures
            rates = self.trainer.strategy.reduce(self._swaps, reduce_op="sum")
            rates = rates[1] / rates[0].clamp_min(1)
            self.log(f"{self.name}/pt_swap_rate", rates.mean(), sync_dist=True)
            self.log(f"{self.name}/pt_swap_rate_min", rates.min(), sync_dist=True)

    # --- monitoring: the signals the RBM literature trusts, reduced across ranks ---------------
    def on_validation_epoch_start(self) -> None:
        # Validation noise must not consume the training generator (resume would then diverge).
        self._val_generator = torch.Generator(device=self.device).manual_seed(
            self.cd.pretrain_seed + self.current_epoch
        )
        self._hidden_sum = torch.zeros(self.rbm.n_hidden, device=self.device, dtype=torch.float64)
        self._count = torch.zeros((), device=self.device, dtype=torch.float64)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        v = self.encode(self._checked(_features(batch), "validation"))
        rbm = self.rbm
        logits = rbm.hidden_logits(v)
        mean = rbm._activate_(logits.clone())
        # train_recon's estimator (the reconstruction from a sampled h, what a CD step computes
        # anyway), with the validation noise: the two curves differ only by the data.
        recon = ((v - rbm.visible_mean(rbm._sample_hidden_from(logits, mean, self._val_generator))) ** 2).sum(-1).mean()
        self.log(f"{self.name}/val_recon", recon, on_epoch=True, prog_bar=True, sync_dist=True)
        if rbm.tractable:  # NReLU units have no closed-form free energy
            self.log(f"{self.name}/val_free_energy", rbm.free_energy(v, logits).mean(), on_epoch=True, sync_dist=True)
        if rbm.tractable and rbm.visible_units == "bernoulli":
            pl = rbm.pseudo_likelihood(v, self._val_generator).mean()
            self.log(f"{self.name}/val_pseudo_likelihood", pl, on_epoch=True, sync_dist=True)
        self._hidden_sum += mean.sum(0).double()
        self._count += len(v)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        strategy = self.trainer.strategy
        mean = strategy.reduce(self._hidden_sum, reduce_op="sum") / strategy.reduce(
            self._count, reduce_op="sum"
        ).clamp_min(1)
        self.log(f"{self.name}/hidden_mean", mean.mean().float(), sync_dist=True)
        self.log(f"{self.name}/hidden_dead", (mean < 0.01).float().mean(), sync_dist=True)  # never on
        if self.rbm.tractable:
            self.log(f"{self.name}/hidden_saturated", (mean > 0.99).float().mean(), sync_dist=True)  # always on
        if self.monitor_x is not None and self.rbm.tractable:
            # Hinton (2010, section 6): val free energy rising above the training data's
            # (a fixed subset) signals overfitting.
            with torch.no_grad():
                train_f = self.rbm.free_energy(self.encode(self.monitor_x)).mean()
            val_f = self.trainer.callback_metrics.get(f"{self.name}/val_free_energy")
            if val_f is not None:
                self.log(f"{self.name}/free_energy_gap", val_f.to(self.device) - train_f, sync_dist=True)
        every = self.trainer.check_val_every_n_epoch or 1  # None: validation counted in batches, every epoch
        if self.cd.ais_chains and self.current_epoch + every >= self.trainer.max_epochs:  # the last validated epoch
            self._log_ais()

    def _log_ais(self) -> None:
        """The stage's log-likelihood: AIS log Z, then mean ``-F(v) - log Z`` over validation.

        Every rank runs the same chains (same seed), so all log the same value without a
        collective. Above RBM 1 the inputs are hidden probabilities, not binary vectors, and the
        figure is ``-F(v) - log Z`` of those, not a normalised log-probability.
        """
        if self.rbm.visible_units != "bernoulli" or not self.rbm.tractable:
            return  # AIS here anneals from a Bernoulli base-rate model, with sigmoid hidden units
        val_f = self.trainer.callback_metrics.get(f"{self.name}/val_free_energy")
        if val_f is None:
            return
        base = None if self.monitor_x is None else base_rate_bias(self.encode(self.monitor_x))
        generator = torch.Generator(device=self.device).manual_seed(self.cd.pretrain_seed + 7919 * (self.index + 1))
        ais = ais_log_partition(
            self.rbm,
            n_chains=self.cd.ais_chains,
            n_betas=self.cd.ais_betas,
            generator=generator,
            base_visible_bias=base,
        )
        self.log(f"{self.name}/ais_log_z", ais.log_z, sync_dist=True)
        # log Z underestimated -> log-probability overestimated (Salakhutdinov & Murray 2008).
        self.log(f"{self.name}/val_log_prob", -float(val_f) - ais.log_z, sync_dist=True)
        self.log(f"{self.name}/val_log_prob_low", -float(val_f) - ais.log_z_high, sync_dist=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        # Weight decay on W only (Hinton 2010, section 10): biases are not penalised.
        return torch.optim.SGD(
            [
                {"params": [self.rbm.weight], "weight_decay": self.cd.rbm_weight_decay},
                {"params": [self.rbm.visible_bias, self.rbm.hidden_bias], "weight_decay": 0.0},
            ],
            lr=self.lr,
            momentum=self.cd.initial_momentum,
            fused=self.device.type in ("cpu", "cuda") or None,  # one kernel per step, not a loop per tensor
        )

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        generator = self.generator.get_state() if self.generator is not None else None
        saved = {
            "stage": self.index + 1,
            "chain": self.chain,
            "offsets": self.offsets,
            "generator": generator,  # for importers (dbn_init.io):
            "visible_units": [rbm.visible_units for rbm in self.rbms],
            "hidden_units": [rbm.hidden_units for rbm in self.rbms],
        }
        if self.trainer.world_size > 1 and generator is not None:
            # Only rank 0 writes the file, but every rank has its own noise stream and PCD chains:
            # gather them (Lightning calls this hook on every rank), so a resumed run keeps them apart.
            saved["rank_generators"] = self.all_gather(generator.to(self.device)).cpu()  # (world_size, bytes)
            saved["rank_chains"] = None if self.chain is None else self.all_gather(self.chain).cpu()
            saved["rank_offsets"] = None if self.offsets is None else [self.all_gather(t).cpu() for t in self.offsets]
        checkpoint["dbn_init"] = saved
        view = self.trainer.datamodule
        if isinstance(view, PretrainData):  # how the inputs were scaled, for an export of the checkpoint's stack
            checkpoint["dbn_init_data"] = data_record(view.datamodule)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        saved = checkpoint.get("dbn_init", {})
        self.chain, self._generator_state = saved.get("chain"), saved.get("generator")
        self.offsets = saved.get("offsets")
        generators, chains, rank = saved.get("rank_generators"), saved.get("rank_chains"), self.global_rank
        if generators is not None:  # written by several processes: this rank's own, if it had one
            # clone: Generator.set_state reads a row with a storage offset wrongly (segfaults, torch 2.14)
            self._generator_state = generators[rank].clone() if rank < len(generators) else None  # None: fresh seed
            self.chain = chains[rank].clone() if chains is not None and rank < len(chains) else None
            offsets = saved.get("rank_offsets")
            self.offsets = [t[rank].clone() for t in offsets] if offsets and rank < len(offsets[0]) else None
        elif rank > 0:  # a one-process checkpoint resumed by several: rank 0 continues it, the rest start anew
            self.chain, self._generator_state, self.offsets = None, None, None


class PretrainData(LightningDataModule):
    """A view of a DataModule whose training set is every training row, labelled or not.

    It serves the DataModule's ``pretrain_dataloader()`` where it has one (every row: in the
    label-scarce setting pretraining still sees all of them), else its ``train_dataloader()``.
    With ``steps_per_batch`` > 1, and a ``pretrain_dataloader`` that takes it, each loader batch
    holds that many consecutive mini-batches of ``datamodule.batch_size`` rows (the same
    mini-batches, in the same order, as with 1), for :class:`RBMStage` to split; other loaders
    serve their own batches, one CD update each.

    ``prepared``: the DataModule is set up already (inside a running fit), so the stage fits
    neither prepare nor set it up again; else they do, where Lightning prepares data.
    """

    def __init__(self, datamodule: LightningDataModule, steps_per_batch: int = 1, prepared: bool = False) -> None:
        super().__init__()
        self.datamodule, self.prepared = datamodule, prepared
        if getattr(datamodule, "_log_hyperparams", False):  # and the data's, as the DBN's fit logs them
            self.save_hyperparameters(dict(datamodule.hparams_initial))
        loader = getattr(datamodule, "pretrain_dataloader", None)
        takes = callable(loader) and "steps_per_batch" in inspect.signature(loader).parameters
        self.steps_per_batch = steps_per_batch if takes else 1
        if not is_overridden("val_dataloader", datamodule, LightningDataModule):  # then the stages validate on nothing
            self.val_dataloader = LightningDataModule.val_dataloader.__get__(self)

    @property
    def batch_size(self) -> int | None:
        """Rows per CD mini-batch: the wrapped DataModule's batch size, if it groups batches."""
        return getattr(self.datamodule, "batch_size", None) if self.steps_per_batch > 1 else None

    def prepare_data(self) -> None:
        if not self.prepared:
            self.datamodule.prepare_data()

    def setup(self, stage: str) -> None:
        if not self.prepared:
            self.datamodule.setup(stage)

    def train_dataloader(self):
        if not hasattr(self.datamodule, "pretrain_dataloader"):
            return self.datamodule.train_dataloader()
        if self.steps_per_batch == 1:
            return self.datamodule.pretrain_dataloader()
        return self.datamodule.pretrain_dataloader(steps_per_batch=self.steps_per_batch)

    def val_dataloader(self):
        return self.datamodule.val_dataloader()

    def updates_per_epoch(self, world_size: int = 1) -> int | None:
        """CD updates per epoch on each of ``world_size`` processes; None for a loader of no length."""
        if not self.prepared:  # once, for every stage
            self.prepare_data()
            self.setup("fit")
            self.prepared = True
        loader = self.train_dataloader()
        try:
            rows = math.ceil(len(loader.dataset) / world_size)
        except TypeError:  # an iterable dataset
            return None
        return math.ceil(rows / (self.batch_size or loader.batch_size or 1))

    def monitor_subset(self, n: int = 1000) -> Tensor | None:
        """The first ``n`` pretraining rows: a fixed training subset, (n, n_visible)."""
        data = getattr(self.datamodule, "pretrain_x", None)
        return None if data is None else data[:n]


# --- the Trainers and the greedy loop -------------------------------------------------------
_LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric")


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Silence what each stage's Trainer says on the console ("GPU available: ...", "`Trainer.fit`
    stopped", its configuration notes) for the block: a fit of an estimator or of
    :func:`~dbn_init.transfer.pretrain_stack` runs one Trainer per RBM, and Lightning's notes
    (``_LIGHTNING_NOISE``). The loggers' levels, and any warning filter set in the block, are
    restored afterwards."""
    loggers = [logging.getLogger(name) for name in _LIGHTNING_LOGGERS]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.WARNING)
        with warnings.catch_warnings():
            for message in _LIGHTNING_NOISE:
                warnings.filterwarnings("ignore", message=message)
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def make_trainer(epochs: int, options: Mapping[str, Any] | None = None, **overrides: Any) -> Trainer:
    """The one place a dbn_init Trainer is built: quiet defaults (no logger, checkpoints, progress
    bar or model summary), then ``options`` (what the run shares: accelerator, devices, precision,
    strategy...), then ``overrides`` (what this fit sets itself: callbacks, root folder)."""
    quiet = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    return prepare_trainer(Trainer(**{**quiet, **(options or {}), **overrides, "max_epochs": epochs}))


# Trainer options that belong to the fine-tuning fit only; a pretraining stage sets its own. CD
# steps its update itself (manual optimization), so gradient clipping and accumulation, which
# Lightning applies only to automatic optimization, stay with the fine-tuning too.
FIT_ONLY = (
    "callbacks",
    "logger",
    "max_epochs",
    "min_epochs",
    "max_steps",
    "min_steps",
    "max_time",
    "enable_checkpointing",
    "default_root_dir",
    "check_val_every_n_epoch",
    "val_check_interval",
    "gradient_clip_val",
    "gradient_clip_algorithm",
    "accumulate_grad_batches",
    "log_every_n_steps",
    "enable_model_summary",
)


def trainer_options(config: dict) -> dict:
    """Trainer keyword arguments from a parsed ``trainer`` config (train.py's), with the options
    given as a class (a strategy, plugins, a profiler) made into fresh objects: each belongs to one
    Trainer, so every stage gets its own."""
    from lightning.pytorch.cli import LightningArgumentParser

    parser = LightningArgumentParser(exit_on_error=False)
    parser.add_lightning_class_args(Trainer, "trainer")
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes  # renamed in jsonargparse 4.49
    return dict(vars(instantiate(parser.parse_object({"trainer": config})).trainer))


def stage_trainer(
    fit: Trainer, stage: int, epochs: int, options: Mapping[str, Any] | None = None, callbacks: Sequence = ()
) -> Trainer:
    """The Trainer of RBM ``stage`` (from 0) of a DBN fitted by ``fit``: its device, precision,
    limits, loggers and root folder, then ``options`` (train.py's, from its trainer config), then
    ``callbacks``. In a multi-process fit the stage joins the running processes: a ``ddp`` Trainer
    of the same size, whose launcher finds the processes started (``LOCAL_RANK`` is set in each) and
    whose process group is the fit's, so every rank runs the stage in step, with its own shard."""
    device = fit.strategy.root_device
    following = dict(
        accelerator=device.type,
        devices=[device.index] if device.index is not None else 1,
        precision=fit.precision,
        fast_dev_run=fit.fast_dev_run,
        limit_train_batches=_given(fit.limit_train_batches),
        limit_val_batches=_given(fit.limit_val_batches),
        num_sanity_val_steps=fit.num_sanity_val_steps,
        logger=fit.loggers or False,
        default_root_dir=fit.default_root_dir,
        enable_progress_bar=fit.progress_bar_callback is not None,
        log_every_n_steps=1,  # the stages log per epoch
    )
    joined = {}
    if fit.world_size > 1:  # the same devices as the fit's, by index where they have one (GPUs [2, 3] stay [2, 3])
        parallel = fit.strategy.parallel_devices
        devices = [d.index for d in parallel] if parallel[0].index is not None else len(parallel)
        joined = dict(strategy="ddp", devices=devices, num_nodes=fit.num_nodes)
    options = {**following, **(options or {}), **joined}
    if options.get("enable_progress_bar") is not False and _RICH_AVAILABLE:  # the stage's own bar, if it shows one
        callbacks = [*callbacks, StageProgressBar()]
    checkpoints = any(isinstance(c, ModelCheckpoint) for c in callbacks)
    _QUIET.following = True  # the fit has said which devices it has and uses; the stage uses the same
    try:
        return make_trainer(epochs, options, callbacks=callbacks, enable_checkpointing=checkpoints)
    finally:
        _QUIET.following = False


def _given(limit: int | float) -> int | float | None:
    """A fit's batch limit as its Trainer was given it: None for the default, whole epochs (1.0),
    which given explicitly makes each stage print that it uses 100% of the batches."""
    return None if isinstance(limit, float) and limit == 1.0 else limit


def import_stack(model: DBN, datamodule: LightningDataModule) -> None:
    """Load the model's ``pretrained`` stack file as its bottom stages, checked against the DBN's
    sizes and unit types and against the data's scaling."""
    path = model.hparams.pretrained
    try:
        stack = load_stack(path, input_size=model.hparams.input_size, hidden=model.hparams.hidden)
    except UsageError as err:  # the user's file: say which option named it
        raise type(err)(f"model.pretrained: {err}") from err
    scaling, data_scaling = stack.metadata.get("scaling"), getattr(datamodule, "scaling", None)
    if scaling and data_scaling and scaling != data_scaling:
        raise UsageError(
            f"the imported stack {path} was pretrained on inputs scaled {scaling!r} but this data is scaled "
            f"{data_scaling!r}: RBM 1 would see inputs unlike its training data; pass data.scaling {scaling} "
            "(or pretrain a new stack for this scaling)"
        )
    model.load_rbms(stack.rbms)


def pretrain(
    model: DBN,
    datamodule: LightningDataModule,
    trainers: StageTrainers | None = None,
    resume: Mapping[int, str] | None = None,
    prepared: bool = False,
    world_size: int = 1,
) -> None:
    """Train the DBN's RBMs 1..k greedily, one ``trainers(stage, epochs).fit`` each, then transfer.

    With ``model.hparams.pretrained`` set, the imported stack replaces the bottom stages. Stages
    already recorded in ``model.stages_done`` (imported, or a resumed run) are skipped; ``resume``
    maps a stage index (from 0) to the checkpoint its fit resumes from (epoch, optimizer,
    momentum, persistent chains, sampling noise). ``trainers`` defaults to quiet one-device
    Trainers (:func:`make_trainer`); ``prepared`` as for :class:`PretrainData`; ``world_size``: the
    processes the stages run on, which share each epoch's rows.
    """
    if model.mlp is None or model.hparams.visible_units is None:  # from the data: set it up once, for the stages too
        if not prepared:
            datamodule.prepare_data()
            datamodule.setup("fit")
            prepared = True
        model.build_for(datamodule)
    if model.hparams.pretrained and int(model.stages_done) == 0:
        import_stack(model, datamodule)
    data = PretrainData(datamodule, model.cd.steps_per_batch, prepared)
    stages = greedy(
        model.rbms, model.cd, data, trainers, int(model.stages_done), resume, dict(model.hparams), world_size
    )
    for done in stages:
        model.stages_done.fill_(done)
    model.finish_pretraining()
    model.trained_on = data_record(datamodule)  # for save_stack(model, path) and load_pretrained_(net, model)


def greedy(
    rbms: nn.ModuleList,
    settings: CDSettings,
    data: PretrainData,
    trainers: StageTrainers | None = None,
    start: int = 0,
    resume: Mapping[int, str] | None = None,
    hparams: Mapping[str, Any] | None = None,
    world_size: int = 1,
) -> Iterator[int]:
    """The greedy loop: fit RBM ``start``, ``start + 1``, ... of ``rbms`` in turn, each on the frozen
    ones below, one ``trainers(stage, epochs).fit`` of an :class:`RBMStage` each (a stage with 0
    epochs is skipped); yields the number of stages done after each. ``hparams`` are the stages'
    hyperparameters: the stages fit before a DBN's own fit logs its hyperparameters, and the first
    fit to write a logger's ``hparams.yaml`` fixes it, so each stage carries the DBN's. On small data
    a stage runs a multiple of its epochs (:meth:`CDSettings.stretch`) and validates as often as
    its nominal epochs would."""
    trainers = trainers or (lambda stage, epochs: make_trainer(epochs))
    for index, epochs in enumerate(settings.epochs):
        if index < start or epochs == 0:
            continue
        stretch = settings.stretch(index, data.updates_per_epoch(world_size) if settings.stretches else None)
        n = epochs * stretch
        rank_zero_info(f"pretraining RBM {index + 1}/{len(rbms)} for {n} epoch{'s' * (n != 1)}")
        trainer = trainers(index, n)
        if trainer.check_val_every_n_epoch:  # None: validation counted in batches
            trainer.check_val_every_n_epoch *= stretch
        if trainer.limit_train_batches == 0 or trainer.max_steps == 0:  # else an untrained RBM passes for pretrained
            raise UsageError(
                f"RBM {index + 1}'s stage would make no CD update (limit_train_batches={trainer.limit_train_batches}, "
                f"max_steps={trainer.max_steps}); let the stages train (trainer.limit_train_batches > 0), or skip "
                "pretraining with model.pretrain_epochs 0"
            )
        stage = RBMStage(rbms, index, settings, stretch)
        if hparams:
            stage.save_hyperparameters(dict(hparams))
        trainer.fit(stage, datamodule=data, ckpt_path=(resume or {}).get(index))
        yield index + 1
