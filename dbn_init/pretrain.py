"""Greedy layer-wise pretraining: one Lightning fit per RBM of the stack.

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

import inspect
from typing import Callable

import torch
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric

from .monitor import MONITOR_EVERY, NON_FINITE_INPUTS, EpochMeans, newest_checkpoint, weights_diverged
from .rbm import RBM, bernoulli, check_visible

__all__ = ["RBMStage", "PretrainData", "StageTrainerFactory", "default_stage_trainer", "up_pass"]

StageTrainerFactory = Callable[[int, int], Trainer]  # (stage index from 0, epochs) -> Trainer


def up_pass(rbms: nn.ModuleList | list[RBM], x: Tensor) -> Tensor:
    """Hidden probabilities of the top RBM given data: (batch, n_visible_0) -> (batch, n_hidden_top)."""
    for rbm in rbms:
        x = rbm.hidden_probs(x)
    return x


class RBMStage(LightningModule):
    """The training recipe for RBM ``index`` of ``rbms`` (contrastive divergence with momentum).

    Parameters
    ----------
    rbms : nn.ModuleList of RBM
        The whole stack, shared with the DBN (no copy): training here updates the DBN's RBM.
    index : int
        Which RBM to train, from 0; RBMs below it only encode the data, above it are unused.
    lr, initial_momentum, final_momentum, momentum_switch_epoch, weight_decay, cd_k, persistent,
    sample_visible, sparsity_target, sparsity_cost, seed, ais_chains, ais_betas :
        As documented on :class:`dbn_init.models.DBN`.

    Fitted on :class:`PretrainData`, the stage splits each loader batch into mini-batches of the
    data's ``batch_size`` and makes one CD update per mini-batch (several per loader batch when
    ``PretrainData`` groups them, see ``steps_per_batch``); on any other data, one per batch.
    """

    def __init__(
        self,
        rbms: nn.ModuleList,
        index: int,
        lr: float = 0.1,
        initial_momentum: float = 0.5,
        final_momentum: float = 0.9,
        momentum_switch_epoch: int = 5,
        weight_decay: float = 2e-4,
        cd_k: int = 1,
        persistent: bool = False,
        sample_visible: bool = False,
        sparsity_target: float | None = None,
        sparsity_cost: float = 0.0,
        seed: int = 0,
        ais_chains: int = 0,
        ais_betas: int = 10000,
    ) -> None:
        super().__init__()
        self.rbms = rbms
        self.index = index
        self.lr, self.weight_decay = lr, weight_decay
        self.initial_momentum, self.final_momentum = initial_momentum, final_momentum
        self.momentum_switch_epoch = momentum_switch_epoch
        self.cd_k, self.persistent, self.sample_visible = cd_k, persistent, sample_visible
        self.sparsity_target, self.sparsity_cost = sparsity_target, sparsity_cost
        self.seed = seed
        self.ais_chains, self.ais_betas = ais_chains, ais_betas
        self.mini_batch: int | None = None  # rows per CD update (PretrainData's batch_size)
        self.chain: Tensor | None = None  # PCD fantasy particles, one set per rank
        self.generator: torch.Generator | None = None
        self.backprop_cd = True  # step the CD loss through backward (set per fit in on_fit_start)
        self._generator_state: Tensor | None = None
        self.monitor_every = MONITOR_EVERY  # CD steps between samples of the update ratio, CD loss, NaN check
        self.monitor_x: Tensor | None = None  # fixed training subset for the free-energy gap
        self.train_recon, self.train_cd_loss = MeanMetric(), MeanMetric()
        self.automatic_optimization = False  # zero_grad, backward, step in training_step: no closure
        self._input_checked = False  # the first training batch of each fit is validated
        for i, rbm in enumerate(rbms):  # freeze by construction, before any Trainer wraps us
            rbm.requires_grad_(i == index)

    @property
    def rbm(self) -> RBM:
        return self.rbms[self.index]

    @property
    def name(self) -> str:
        return f"rbm{self.index + 1}"

    def encode(self, x: Tensor) -> Tensor:
        """The data as RBM ``index`` sees it: hidden probabilities of the frozen RBMs below."""
        with torch.no_grad():
            return up_pass(self.rbms[: self.index], x)

    # --- Lightning hooks ----------------------------------------------------------------------
    def on_fit_start(self) -> None:
        self._input_checked = False
        for rbm in self.rbms[: self.index]:
            rbm.eval()
        datamodule = getattr(self.trainer, "datamodule", None)
        if isinstance(datamodule, PretrainData):
            monitor_x = datamodule.monitor_subset()
            # once, in the RBM's device and dtype (float64 under --trainer.precision 64-true)
            self.monitor_x = None if monitor_x is None else monitor_x.to(self.device, self.rbm.weight.dtype)
            self.mini_batch = datamodule.batch_size
        # Gibbs noise must differ across ranks (else DDP averages identical chains) and be
        # reproducible: one generator per rank, seeded from the run seed, the stage and the rank.
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(_stage_seed(self.seed, self.index, self.global_rank))
        state = self._generator_state
        if state is not None:  # resumed: continue the same noise stream, if it is this device kind's
            if state.numel() == self.generator.get_state().numel():
                self.generator.set_state(state)
            else:
                rank_zero_warn(f"stage {self.index + 1} resumes on {self.device.type} from a checkpoint whose "
                               "sampling noise came from another kind of device; it draws fresh (seeded) noise, so "
                               "it will not end bit-identical to an uninterrupted run")
        if self.chain is not None:  # resumed PCD chains, as the checkpoint was loaded
            self.chain = self.chain.to(self.device, self.rbm.weight.dtype)
        # One process: RBM.cd_grad_ writes the gradient into .grad without autograd. DDP averages
        # gradients in backward and a gradient scaler (16-bit mixed precision) scales the loss, so
        # those take the loss path (RBM.cd_loss + manual_backward); the gradient is the same.
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        self.backprop_cd = self.trainer.world_size > 1 or scaler is not None

    def on_train_epoch_start(self) -> None:
        # Hinton (2010, section 9): momentum 0.5 while the weights settle, then 0.9.
        momentum = self.initial_momentum if self.current_epoch < self.momentum_switch_epoch else self.final_momentum
        for group in self.optimizers().optimizer.param_groups:
            group["momentum"] = momentum
        # Per-sample means: reconstruction error over every step, CD loss over the monitored steps.
        self._recon_sum, self._cd_loss_sum = EpochMeans(1, self.device), EpochMeans(1, self.device)
        self._step_in_epoch = 0  # CD updates so far this epoch (several per loader batch)
        self.log(f"{self.name}/momentum", momentum, on_step=False, on_epoch=True)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        if not self._input_checked:  # a loader of the user's own is not validated at load like ours
            check_visible(batch[0], self.rbms[0].visible_units, where=f"stage {self.index + 1}'s first training batch")
            self._input_checked = True  # one host sync per fit
        v = self.encode(batch[0])
        for mini_batch in v.split(self.mini_batch) if self.mini_batch else (v,):
            self._cd_step(mini_batch)

    def _cd_step(self, v: Tensor) -> None:
        """One CD/PCD update on the mini-batch ``v`` (batch, n_visible), as the RBM sees it."""
        if self.persistent and self.chain is None:
            self.chain = v.detach().clone()  # Tieleman (2008) starts the chains at the data
        # A sparse sample of steps measures the CD loss's value and the update ratio, and checks
        # for divergence (each check is one host sync, which would stall every step on a GPU).
        monitored = self._step_in_epoch % self.monitor_every == 0
        weight_before = self.rbm.weight.detach().clone() if monitored else None
        cd = dict(k=self.cd_k, chain=self.chain if self.persistent else None, generator=self.generator,
                  sample_visible=self.sample_visible, value=monitored)
        penalty = self._sparsity_penalty(v)
        optimizer = self.optimizers()
        if self.backprop_cd:
            optimizer.zero_grad()
            result = self.rbm.cd_loss(v, **cd)
            self.manual_backward(result.loss if penalty is None else result.loss + penalty)  # DDP averages here
        else:
            result = self.rbm.cd_grad_(v, **cd)  # the same gradient, straight into .grad
            if penalty is not None:
                self.manual_backward(penalty)  # accumulates onto it
        optimizer.step()
        if self.persistent:
            self.chain = result.v_model
        self._recon_sum.add(F.mse_loss(result.reconstruction, v, reduction="sum"), count=len(v))
        if monitored:
            self._cd_loss_sum.add(result.loss * len(v), count=len(v))
            # Hinton (2010, section 15): updates ~1e-3 of the weights' size are healthy.
            ratio = (self.rbm.weight.detach() - weight_before).norm() / weight_before.norm().clamp_min(1e-12)
            self.log(f"{self.name}/update_ratio", ratio, on_step=False, on_epoch=True, sync_dist=True)
            self._check_divergence()
        self._step_in_epoch += 1

    def _sparsity_penalty(self, v: Tensor) -> Tensor | None:
        if self.sparsity_cost == 0 or self.sparsity_target is None:
            return None
        # Lee et al. (2008): pull each unit's mean activation towards the target.
        q = torch.sigmoid(self.rbm.hidden_logits(v)).mean(0)  # (n_hidden,)
        return self.sparsity_cost * ((q - self.sparsity_target) ** 2).sum()

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self.trainer.is_last_batch:  # so that no checkpoint of the epoch holds a NaN
            self._check_divergence()

    def _check_divergence(self) -> None:
        if weights_diverged(self.rbm):
            if self.rbm.visible_units == "gaussian":
                cause = (f"a learning rate too high for Gaussian visible units (try --model.gaussian_lr {self.lr / 10:g}) "
                         "or inputs that are not standardised (--data.scaling standardize)")
            else:
                cause = (f"a learning rate too high (try --model.pretrain_lr {self.lr / 10:g}) or inputs outside "
                         "[0, 1] (--data.scaling unit)")
            raise FloatingPointError(
                f"RBM {self.index + 1} diverged (non-finite weights) in epoch {self.current_epoch}, by CD step "
                f"{self._step_in_epoch}, at learning rate {self.lr}. Likely cause: {cause}; or {NON_FINITE_INPUTS}. "
                "Last good "
                f"checkpoint: {newest_checkpoint(self.trainer)}. Rerun with the fix (a changed setting makes it a new "
                "run, which starts afresh: --ckpt_path resumes only a run with the same settings)."
            )

    def on_train_epoch_end(self) -> None:
        self._recon_sum.update(self.train_recon)
        self._cd_loss_sum.update(self.train_cd_loss)
        self.log(f"{self.name}/train_recon", self.train_recon, prog_bar=True)
        self.log(f"{self.name}/cd_loss", self.train_cd_loss)

    # --- monitoring: the signals the RBM literature trusts, reduced across ranks ---------------
    def on_validation_epoch_start(self) -> None:
        # Validation noise must not consume the training generator (resume would then diverge).
        self._val_generator = torch.Generator(device=self.device).manual_seed(self.seed + self.current_epoch)
        self._hidden_sum = torch.zeros(self.rbm.n_hidden, device=self.device, dtype=torch.float64)
        self._count = torch.zeros((), device=self.device, dtype=torch.float64)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        v = self.encode(batch[0])
        probs = self.rbm.hidden_probs(v)
        # train_recon's estimator (the reconstruction from a sampled h, what a CD step computes
        # anyway), with the validation noise: the two curves differ only by the data.
        recon = ((v - self.rbm.visible_mean(bernoulli(probs, self._val_generator))) ** 2).sum(-1).mean()
        self.log(f"{self.name}/val_recon", recon, on_epoch=True, prog_bar=True, sync_dist=True)
        self.log(f"{self.name}/val_free_energy", self.rbm.free_energy(v).mean(), on_epoch=True, sync_dist=True)
        if self.rbm.visible_units == "bernoulli":
            pl = self.rbm.pseudo_likelihood(v, self._val_generator).mean()
            self.log(f"{self.name}/val_pseudo_likelihood", pl, on_epoch=True, sync_dist=True)
        self._hidden_sum += probs.sum(0).double()
        self._count += len(v)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        strategy = self.trainer.strategy
        mean = strategy.reduce(self._hidden_sum, reduce_op="sum") / strategy.reduce(self._count, reduce_op="sum").clamp_min(1)
        self.log(f"{self.name}/hidden_mean", mean.mean().float())
        self.log(f"{self.name}/hidden_dead", (mean < 0.01).float().mean())  # never on
        self.log(f"{self.name}/hidden_saturated", (mean > 0.99).float().mean())  # always on
        if self.monitor_x is not None:
            # Hinton (2010, section 6): val free energy rising above the training data's
            # (a fixed subset) signals overfitting.
            with torch.no_grad():
                train_f = self.rbm.free_energy(self.encode(self.monitor_x)).mean()
            val_f = self.trainer.callback_metrics.get(f"{self.name}/val_free_energy")
            if val_f is not None:
                self.log(f"{self.name}/free_energy_gap", val_f.to(self.device) - train_f)
        if self.ais_chains and self.current_epoch == self.trainer.max_epochs - 1:
            self._log_ais()

    def _log_ais(self) -> None:
        """The stage's log-likelihood: AIS log Z, then mean ``-F(v) - log Z`` over validation.

        Every rank runs the same chains (same seed), so all log the same value without a
        collective. Above RBM 1 the inputs are hidden probabilities, not binary vectors, and the
        figure is ``-F(v) - log Z`` of those, not a normalised log-probability.
        """
        from .evaluate import ais_log_partition, base_rate_bias

        if self.rbm.visible_units != "bernoulli":
            return  # AIS here anneals from a Bernoulli base-rate model
        val_f = self.trainer.callback_metrics.get(f"{self.name}/val_free_energy")
        if val_f is None:
            return
        base = None if self.monitor_x is None else base_rate_bias(self.encode(self.monitor_x))
        generator = torch.Generator(device=self.device).manual_seed(self.seed + 7919 * (self.index + 1))
        ais = ais_log_partition(self.rbm, n_chains=self.ais_chains, n_betas=self.ais_betas, generator=generator,
                                base_visible_bias=base)
        self.log(f"{self.name}/ais_log_z", ais.log_z)
        # log Z underestimated -> log-probability overestimated (Salakhutdinov & Murray 2008).
        self.log(f"{self.name}/val_log_prob", -float(val_f) - ais.log_z)
        self.log(f"{self.name}/val_log_prob_low", -float(val_f) - ais.log_z_high)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        # Weight decay on W only (Hinton 2010, section 10): biases are not penalised.
        return torch.optim.SGD(
            [
                {"params": [self.rbm.weight], "weight_decay": self.weight_decay},
                {"params": [self.rbm.visible_bias, self.rbm.hidden_bias], "weight_decay": 0.0},
            ],
            lr=self.lr,
            momentum=self.initial_momentum,
            fused=self.device.type in ("cpu", "cuda") or None,  # one kernel per step, not a loop per tensor
        )

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        generator = self.generator.get_state() if self.generator is not None else None
        data = getattr(getattr(self.trainer, "datamodule", None), "datamodule", None)  # PretrainData's
        saved = {"stage": self.index + 1, "chain": self.chain, "generator": generator,  # for importers (dbn_init.io):
                 "visible_units": [rbm.visible_units for rbm in self.rbms], "scaling": getattr(data, "scaling", None)}
        if self.trainer.world_size > 1 and generator is not None:
            # Only rank 0 writes the file, but every rank has its own noise stream and PCD chains:
            # gather them (Lightning calls this hook on every rank), so a resumed run keeps them apart.
            saved["rank_generators"] = self.all_gather(generator.to(self.device)).cpu()  # (world_size, bytes)
            saved["rank_chains"] = None if self.chain is None else self.all_gather(self.chain).cpu()
        checkpoint["dbn_init"] = saved

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        saved = checkpoint.get("dbn_init", {})
        self.chain, self._generator_state = saved.get("chain"), saved.get("generator")
        generators, chains, rank = saved.get("rank_generators"), saved.get("rank_chains"), self.global_rank
        if generators is not None:  # written by several processes: this rank's own, if it had one
            # clone: Generator.set_state reads a row with a storage offset wrongly (segfaults, torch 2.14)
            self._generator_state = generators[rank].clone() if rank < len(generators) else None  # None: fresh seed
            self.chain = chains[rank].clone() if chains is not None and rank < len(chains) else None
        elif rank > 0:  # a one-process checkpoint resumed by several: rank 0 continues it, the rest start anew
            self.chain, self._generator_state = None, None


def _stage_seed(seed: int, index: int, rank: int) -> int:
    return (seed * 1_000_003 + index * 1_009 + rank) % (2**63 - 1)


class PretrainData(LightningDataModule):
    """A view of a DataModule whose training set is every training image, labelled or not.

    In the label-scarce setting (``num_labels``) pretraining still sees all training images;
    only fine-tuning is restricted to the labelled subset. With ``steps_per_batch`` > 1 each
    loader batch holds that many consecutive mini-batches of ``datamodule.batch_size`` rows
    (the same mini-batches, in the same order, as with 1), for :class:`RBMStage` to split.
    """

    def __init__(self, datamodule: LightningDataModule, steps_per_batch: int = 1) -> None:
        super().__init__()
        self.datamodule = datamodule
        self.steps_per_batch = steps_per_batch

    @property
    def batch_size(self) -> int:
        """Rows per CD mini-batch: the wrapped DataModule's batch size."""
        return self.datamodule.batch_size

    def prepare_data(self) -> None:
        self.datamodule.prepare_data()

    def setup(self, stage: str) -> None:
        self.datamodule.setup(stage)

    def train_dataloader(self):
        self.datamodule.trainer = self.trainer  # so it can put its splits on this fit's device
        if self.steps_per_batch == 1:
            return self.datamodule.pretrain_dataloader()
        if "steps_per_batch" not in inspect.signature(self.datamodule.pretrain_dataloader).parameters:
            raise ValueError(
                f"{type(self.datamodule).__name__}.pretrain_dataloader() takes no steps_per_batch, so it cannot "
                f"serve {self.steps_per_batch} mini-batches per loader batch; give it that parameter (batches of "
                "batch_size * steps_per_batch rows, as ImageDataModule does) or set --model.steps_per_batch 1"
            )
        return self.datamodule.pretrain_dataloader(steps_per_batch=self.steps_per_batch)

    def monitor_subset(self, n: int = 1000) -> Tensor | None:
        """The first ``n`` pretraining images: a fixed training subset, (n, n_visible)."""
        data = getattr(self.datamodule, "pretrain_x", None)
        return None if data is None else data[:n]

    def val_dataloader(self):
        self.datamodule.trainer = self.trainer
        return self.datamodule.val_dataloader()


def default_stage_trainer(stage: int, epochs: int) -> Trainer:
    """A quiet single-device Trainer for a stage, for use from Python."""
    return Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                   enable_model_summary=False)
