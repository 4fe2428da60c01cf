"""Runs DBN pretraining and fine-tuning under real DDP (2 CPU processes, gloo) and saves what
each rank holds, for tests/test_ddp.py to compare. Not a test module itself.

usage: python tests/_ddp_worker.py OUT_DIR {pipeline,cd_step,resume,fit} STRATEGY [STEPS_PER_BATCH]
"""

import os
import sys
from pathlib import Path

import torch
from lightning.pytorch import Callback, LightningDataModule, Trainer, seed_everything
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader, TensorDataset

import dbn_init.rbm
from dbn_init import DBN
from dbn_init.pretrain import pretrain

OUT = Path(sys.argv[1])


class FixedDigits(LightningDataModule):
    """The first `n` digits in a fixed order (no shuffling), so batches are known exactly."""

    def __init__(self, n: int, batch_size: int) -> None:
        super().__init__()
        data = load_digits()
        self.pretrain_x = torch.tensor(data.data[:n], dtype=torch.float32) / 16.0
        self.y = torch.tensor(data.target[:n])
        self.batch_size = batch_size

    def _loader(self, steps_per_batch: int = 1):
        return DataLoader(
            TensorDataset(self.pretrain_x, self.y), batch_size=self.batch_size * steps_per_batch, shuffle=False
        )

    train_dataloader = pretrain_dataloader = val_dataloader = _loader


class SaveRankState(Callback):
    """At the end of each fit, every rank saves its parameters (and its stage's PCD chain)."""

    def __init__(self, tag: str) -> None:
        self.tag, self.start_epoch = tag, None

    def on_train_start(self, trainer, pl_module) -> None:
        self.start_epoch = trainer.current_epoch  # 1 for a fit resumed after epoch 1

    def on_train_end(self, trainer, pl_module) -> None:
        state = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
        extra = {
            "chain": getattr(pl_module, "chain", None),
            "seed": pl_module.generator.initial_seed() if getattr(pl_module, "generator", None) else None,
        }
        torch.save(
            {"state": state, "start_epoch": self.start_epoch, **extra}, OUT / f"{self.tag}-rank{trainer.global_rank}.pt"
        )


def trainer(tag: str, epochs: int, strategy: str, **kw) -> Trainer:
    return Trainer(
        accelerator="cpu",
        devices=2,
        strategy=strategy,
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[SaveRankState(tag)],
        **kw,
    )


def main(mode: str, strategy: str, steps_per_batch: int) -> None:
    if mode == "pipeline":
        seed_everything(0)
        data = FixedDigits(n=256, batch_size=32)  # 128 images a rank: 4 CD updates a rank and epoch
        model = DBN(
            recipe="textbook",
            num_classes=10,
            input_size=64,
            hidden=[16, 8],
            pretrain_epochs=2,
            persistent=True,
            steps_per_batch=steps_per_batch,
        )
        pretrain(model, data, lambda stage, epochs: trainer(f"stage{stage + 1}", epochs, strategy, limit_val_batches=0))
        trainer("finetune", 2, strategy, limit_val_batches=0).fit(model, datamodule=data)
        if strategy == "ddp_spawn" or int(os.environ.get("LOCAL_RANK", 0)) == 0:
            torch.save(model.state_dict(), OUT / "final-main.pt")
    elif mode == "cd_step":
        # Sampling noise made equal: every Bernoulli draw becomes a threshold at 0.5, here and in
        # the single-process reference, so the two runs differ only in how the batch is split.
        dbn_init.rbm.bernoulli = lambda probs, generator=None: (probs > 0.5).to(probs.dtype)
        seed_everything(0)
        data = FixedDigits(n=64, batch_size=32)  # 2 ranks x 32 = the reference's one batch of 64
        model = DBN(recipe="textbook", num_classes=10, input_size=64, hidden=[8], pretrain_epochs=1)
        pretrain(
            model,
            data,
            lambda stage, epochs: trainer("cd_step", 1, strategy, limit_train_batches=1, limit_val_batches=0),
        )
    elif mode == "resume":
        resume(strategy)
    elif mode == "fit":  # one plain-Python fit does it all: sizes from the data, stages, fine-tuning, test
        fit(strategy)


def fit(strategy: str) -> None:
    """configs/quickstart.yaml's run, with tests/test_ddp.py's train.py command's overrides, from Python."""
    from dbn_init import DigitsDataModule

    seed_everything(0)
    model = DBN(hidden=[16, 8], pretrain_epochs=1)  # the defaults: sizes and units from the data
    data = DigitsDataModule()
    fit = Trainer(accelerator="cpu", devices=2, strategy=strategy, max_epochs=1, deterministic=True, logger=False,
                  enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    fit.fit(model, datamodule=data)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    fit.test(model, datamodule=data)
    if int(os.environ.get("LOCAL_RANK", 0)) == 0:  # the launcher (ddp), or the parent of the workers
        torch.save({"state": state, "test_acc": float(fit.callback_metrics["test_acc"])}, OUT / "fit-main.pt")


def resume(strategy: str) -> None:
    """Stage 1 for 2 epochs straight, and for 1 epoch, checkpointed, then resumed for the second."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    data = FixedDigits(n=256, batch_size=32)

    def dbn() -> DBN:
        seed_everything(0)
        return DBN(recipe="textbook", num_classes=10, input_size=64, hidden=[16], pretrain_epochs=2, persistent=True)

    pretrain(dbn(), data, lambda stage, epochs: trainer("straight", 2, strategy, limit_val_batches=0))
    checkpoint = ModelCheckpoint(dirpath=OUT, filename="stage1-epoch1")
    pretrain(
        dbn(),
        data,
        lambda stage, epochs: Trainer(
            accelerator="cpu",
            devices=2,
            strategy=strategy,
            max_epochs=1,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            limit_val_batches=0,
            callbacks=[checkpoint],
        ),
    )
    pretrain(
        dbn(),
        data,
        lambda stage, epochs: trainer("resumed", 2, strategy, limit_val_batches=0),
        resume={0: str(OUT / "stage1-epoch1.ckpt")},
    )


if __name__ == "__main__":  # ddp_spawn re-imports this file in its workers
    main(sys.argv[2], sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4 else 8)
