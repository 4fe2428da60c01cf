"""The Lightning CLI: YAML -> DataModule + model -> (DBN: pretraining stages) -> fit -> test."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from .callbacks import RBMPictures
from .data import ImageDataModule
from .io import save_stack
from .models import DBN, Classifier

__all__ = ["DBNCLI", "main"]

# Trainer options that belong to the fine-tuning fit only; a pretraining stage sets its own. CD
# steps its update itself (manual optimization), so gradient clipping and accumulation, which
# Lightning applies only to automatic optimization, stay with the fine-tuning too.
_FIT_ONLY = (
    "callbacks", "logger", "max_epochs", "min_epochs", "max_steps", "min_steps", "max_time",
    "enable_checkpointing", "default_root_dir", "check_val_every_n_epoch", "val_check_interval",
    "gradient_clip_val", "gradient_clip_algorithm", "accumulate_grad_batches",
)


class DBNCLI(LightningCLI):
    """LightningCLI whose ``fit`` pretrains a DBN stage by stage first and tests at the end."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # The data decide the input and output sizes; the model must not repeat them.
        parser.link_arguments("data.input_size", "model.init_args.input_size", apply_on="instantiate")
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")

    def checkpoint_dir(self) -> Path:
        """Where this run's checkpoints go: the fine-tuning ModelCheckpoint's folder."""
        callback = self.trainer.checkpoint_callback
        if callback is not None and callback.dirpath:
            return Path(callback.dirpath)
        return Path(self.trainer.log_dir or self.trainer.default_root_dir) / "checkpoints"

    def stage_trainer(self, stage: int, epochs: int) -> Trainer:
        """A Trainer for one pretraining stage: the fit's hardware, precision and logger, a
        checkpoint ``rbm{k}-last.ckpt`` every epoch (for resuming) and the stage's pictures."""
        config = self.config[self.subcommand]["trainer"].clone().as_dict()
        args = {k: v for k, v in config.items() if k not in _FIT_ONLY}
        # One file per stage, rewritten (atomically by Lightning's checkpoint IO) after every epoch.
        checkpoint = ModelCheckpoint(dirpath=self.checkpoint_dir(), filename=f"rbm{stage + 1}-last", save_top_k=1,
                                     enable_version_counter=False)
        callbacks: list = [checkpoint, _RecordRunSettings(self.model)]
        if hasattr(self.datamodule, "image_shape"):
            callbacks.append(RBMPictures(self.datamodule.image_shape))
        return Trainer(
            **args,
            max_epochs=epochs,
            logger=self.trainer.loggers or False,  # the fit's loggers; none if it has none (None would mean a default one)
            callbacks=callbacks,
            default_root_dir=self.trainer.default_root_dir,
        )

    def resolve_resume(self, ckpt_path: str | None) -> Path | None:
        """``--ckpt_path last``: the newest ``*last.ckpt`` (a stage's or the fine-tuning's) under this
        logger's folder from an earlier run of the same model with the same settings, so that runs
        of other experiments sharing the folder are never picked up; a path is taken as given."""
        if not ckpt_path:
            return None
        if ckpt_path != "last":
            path = Path(ckpt_path)
            if not path.is_file():
                raise FileNotFoundError(f"--ckpt_path {ckpt_path} does not exist; pass a .ckpt file or 'last'")
            return path
        logger = self.trainer.logger
        root = Path(logger.root_dir if logger is not None and hasattr(logger, "root_dir") else self.trainer.default_root_dir)
        found = sorted(root.glob("*/checkpoints/*last.ckpt"), key=lambda p: p.stat().st_mtime, reverse=True)
        ours = _run_settings(self.model)
        for path in found:
            try:
                checkpoint = torch.load(path, map_location="cpu", weights_only=True)
            except Exception:  # unreadable: not a run to resume
                continue
            if _saved_run_settings(checkpoint) == ours:
                return path
        what = (f"{len(found)} *last.ckpt, none from a run of this model with these settings (the newest: "
                f"{found[0]})") if found else "no *last.ckpt"
        rank_zero_warn(f"--ckpt_path last: {what} under {root}; starting from scratch (to resume another run "
                       "anyway, pass its file: --ckpt_path PATH)")
        return None

    def before_fit(self) -> None:
        resume = self.resolve_resume(self.config_init[self.subcommand].get("ckpt_path"))
        stage_resume: dict[int, str] = {}
        if resume is not None:
            rank_zero_info(f"resuming from {resume}")
            checkpoint = torch.load(resume, map_location="cpu", weights_only=True)
            stage = checkpoint.get("dbn_init", {}).get("stage")
            if stage is not None:  # interrupted during pretraining: finish that stage, then go on
                self.model.load_stage_checkpoint(checkpoint["state_dict"], stage)
                stage_resume[stage - 1] = str(resume)
                resume = None
        self.config_init[self.subcommand]["ckpt_path"] = str(resume) if resume else None
        if isinstance(self.model, DBN):
            if resume is not None:  # fine-tuning checkpoint: pretraining is done; fit restores the rest
                self.model.load_state_dict(torch.load(resume, map_location="cpu", weights_only=True)["state_dict"])
            self.model.pretrain(self.datamodule, self.stage_trainer, stage_resume)

    def after_fit(self) -> None:
        if self.trainer.interrupted:
            return
        if isinstance(self.model, DBN) and not self.trainer.fast_dev_run:
            self.export_pretrained()
        best = getattr(self.trainer.checkpoint_callback, "best_model_path", "")
        self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path="best" if best else None)

    def export_pretrained(self) -> None:
        """Save the pretrained stack (before fine-tuning changed the MLP) next to the checkpoints."""
        log_dir = self.trainer.log_dir  # on every rank: it is a broadcast under DDP (rank 0 alone would hang)
        if not self.trainer.is_global_zero:
            return
        path = Path(log_dir or self.trainer.default_root_dir) / "pretrained.safetensors"
        try:
            save_stack(self.model.rbms, path, scaling=getattr(self.datamodule, "scaling", "unit"))
            rank_zero_info(f"pretrained RBM stack exported to {path} (reuse it with --model.pretrained {path})")
        except FileExistsError:
            rank_zero_warn(f"{path} exists and was kept; export this run's stack with python -m dbn_init.export")


def _run_settings(model: Classifier) -> dict:
    """The model's init arguments, as checkpoints record them (JSON types). DBN and Baseline take
    different arguments, so equal settings also mean the same kind of model."""
    return _as_json(model.hparams)


def _as_json(hparams) -> dict:
    return json.loads(json.dumps(dict(hparams), default=str))


def _saved_run_settings(checkpoint: dict) -> dict | None:
    """The settings of the run that wrote a checkpoint: recorded by the CLI in a stage checkpoint,
    kept by Lightning (``hyper_parameters``) in a fine-tuning one."""
    if "dbn_init_run" in checkpoint:
        return checkpoint["dbn_init_run"]
    hparams = checkpoint.get("hyper_parameters")
    return _as_json(hparams) if isinstance(hparams, dict) else None


class _RecordRunSettings(Callback):
    """Writes the DBN's settings into its stage checkpoints, for ``--ckpt_path last``."""

    def __init__(self, model: Classifier) -> None:
        self.settings = _run_settings(model)

    def on_save_checkpoint(self, trainer: Trainer, pl_module, checkpoint: dict) -> None:
        checkpoint["dbn_init_run"] = self.settings


def main(args: list[str] | None = None) -> DBNCLI:
    # Frozen RBMs sit in eval mode on purpose during later stages and fine-tuning.
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
    return DBNCLI(
        Classifier,
        ImageDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=args,
    )
