"""The Lightning CLI: YAML -> DataModule + model -> (DBN: pretraining stages) -> fit -> test."""

from __future__ import annotations

import warnings
from pathlib import Path

from lightning.pytorch import Trainer
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from .data import ImageDataModule
from .io import save_stack
from .models import DBN, Classifier

__all__ = ["DBNCLI", "main"]

# Trainer options that belong to the fine-tuning fit only; a pretraining stage sets its own.
_FIT_ONLY = (
    "callbacks", "logger", "max_epochs", "min_epochs", "max_steps", "min_steps", "max_time",
    "enable_checkpointing", "default_root_dir", "check_val_every_n_epoch", "val_check_interval",
)


class DBNCLI(LightningCLI):
    """LightningCLI whose ``fit`` pretrains a DBN stage by stage first and tests at the end."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # The data decide the input and output sizes; the model must not repeat them.
        parser.link_arguments("data.input_size", "model.init_args.input_size", apply_on="instantiate")
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")

    def stage_trainer(self, stage: int, epochs: int) -> Trainer:
        """A Trainer for one pretraining stage: the fit's hardware, precision and logger."""
        config = self.config[self.subcommand]["trainer"].clone().as_dict()
        args = {k: v for k, v in config.items() if k not in _FIT_ONLY}
        return Trainer(
            **args,
            max_epochs=epochs,
            logger=self.trainer.logger,
            enable_checkpointing=False,
            default_root_dir=self.trainer.default_root_dir,
        )

    def before_fit(self) -> None:
        if isinstance(self.model, DBN):
            self.model.pretrain(self.datamodule, self.stage_trainer)

    def after_fit(self) -> None:
        if self.trainer.interrupted:
            return
        if isinstance(self.model, DBN) and not self.trainer.fast_dev_run:
            self.export_pretrained()
        best = getattr(self.trainer.checkpoint_callback, "best_model_path", "")
        self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path="best" if best else None)

    def export_pretrained(self) -> None:
        """Save the pretrained stack (before fine-tuning changed the MLP) next to the checkpoints."""
        if not self.trainer.is_global_zero:
            return
        path = Path(self.trainer.log_dir or self.trainer.default_root_dir) / "pretrained.safetensors"
        try:
            save_stack(self.model.rbms, path, scaling=getattr(self.datamodule, "scaling", "unit"))
            rank_zero_info(f"pretrained RBM stack exported to {path} (reuse it with --model.pretrained {path})")
        except FileExistsError:
            rank_zero_warn(f"{path} exists and was kept; export this run's stack with python -m dbn_init.export")


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
