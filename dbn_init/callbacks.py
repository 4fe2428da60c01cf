"""Callbacks: the resume point every fit keeps, and what each RBM learned, as pictures."""

from __future__ import annotations

import csv as _csv
import io
import math
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter, ModelCheckpoint, RichProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor

from .entry import no_lightning_requeue
from .io import replacing
from .plots import image_grid, save_curves, save_image_grid
from .rbm import down_pass

if TYPE_CHECKING:
    from .pretrain import RBMStage

__all__ = [
    "AtomicCheckpointIO",
    "StageProgressBar",
    "ResumeCheckpoint",
    "BestEpoch",
    "PredictionWriter",
    "RBMPictures",
    "pixel_filters",
]


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, made atomic where the checkpoint lies: the bytes go to a
    temporary file in the checkpoint's own folder, then an ``os.replace`` (:func:`dbn_init.io.replacing`).
    Lightning's own goes through a temporary file in ``$TMPDIR``, whose move is no atomic rename
    when the two are on different file systems, so a full disk or a kill could leave a truncated
    ``last.ckpt`` that ``--ckpt_path last`` would take. A failed write raises one line naming the file."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        # Serialised in memory first: a full disk then fails in write_bytes, an OSError naming the
        # file, where torch.save's own writer would raise a RuntimeError that names nothing.
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with replacing(path) as tmp:
            Path(tmp).write_bytes(buffer.getbuffer())


def prepare_trainer(trainer: Trainer) -> Trainer:
    """What every Trainer dbn_init runs needs: atomic checkpoints (unless the user chose a
    checkpoint writer of their own) and no Lightning SLURM requeue (:mod:`dbn_init.entry` requeues).
    The modules close the process group at exit themselves (:func:`dbn_init.entry.close_process_group_at_exit`)."""
    if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
        trainer.strategy.checkpoint_io = AtomicCheckpointIO()
    no_lightning_requeue(trainer)
    return trainer


class StageProgressBar(RichProgressBar):
    """A pretraining stage's progress bar: named after its RBM ("RBM 1/2") and counting CD updates,
    not loader batches (one holds ``steps_per_batch`` updates)."""

    def _get_train_description(self, current_epoch: int) -> str:
        stage = self.trainer.lightning_module
        return f"RBM {stage.index + 1}/{len(stage.rbms)} epoch {current_epoch}/{self.trainer.max_epochs - 1}"

    @property
    def total_train_batches(self) -> int | float:
        batches, stage = super().total_train_batches, self.trainer.lightning_module
        per_batch = getattr(self.trainer.datamodule, "steps_per_batch", 1) if stage.mini_batch else 1
        rows = len(getattr(self.trainer.train_dataloader, "dataset", ()))  # of every process: this one's share
        rows = math.ceil(rows / self.trainer.world_size)
        updates = math.ceil(rows / stage.mini_batch) if stage.mini_batch and rows else math.inf
        return min(batches * per_batch, updates)

    def on_train_batch_end(self, trainer: Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, pl_module.updates_in_epoch - 1)  # in updates


class ResumeCheckpoint(ModelCheckpoint):
    """``{dirpath}/{name}.ckpt``, rewritten at the end of every epoch: where a run stopped.

    ``train.py``'s ``--ckpt_path last`` resumes from the newest ``*last.ckpt``, so each fit keeps
    one (``rbm{k}-last`` per pretraining stage, ``last`` for fine-tuning). Lightning's own
    ``save_last`` is no such point beside a monitored checkpoint: Lightning 2.6 rewrites it only
    when it saves a new best, so it holds the best epoch, not the last one. It keeps no state in
    checkpoints.
    """

    def __init__(self, dirpath: str | Path, name: str) -> None:
        # at the end of the training epoch even when validation runs every n epochs or several
        # times an epoch (Lightning would otherwise save after validation, missing epochs)
        super().__init__(
            dirpath=dirpath, filename=name, save_top_k=1, enable_version_counter=False, save_on_train_epoch_end=True
        )

    def state_dict(self) -> dict:
        """Nothing: it rewrites one file whatever it saved before, so a resumed fit needs no state of it,
        and a checkpoint without it does not ask ``test --ckpt_path`` for this callback (Lightning warns
        of every callback state a checkpoint holds that the Trainer lacks)."""
        return {}


class BestEpoch(Callback):
    """Keeps the model's weights at its best validation check (highest ``monitor``, ``val_acc`` by
    default) and puts them back when the fit ends, so that ``test`` and ``predict`` score the
    best validation epoch, not the last. Pair it with Lightning's ``EarlyStopping`` on the same
    metric for a budget that ends when validation stops improving.

    ``best_epoch`` (from 1) and ``best_score`` say which check won; the kept weights travel in
    checkpoints (a resumed fit keeps its best). Every rank sees the same synced metric, so under
    DDP all keep the same epoch.
    """

    def __init__(self, monitor: str = "val_acc", mode: Literal["max", "min"] = "max") -> None:
        self.monitor, self.mode = monitor, mode
        self.best_score: float | None = None
        self.best_epoch: int | None = None
        self._weights: dict[str, Tensor] | None = None

    def on_validation_end(self, trainer: Trainer, pl_module) -> None:
        # on_validation_end: the module logs its metrics in its own epoch-end hook, after the callbacks'
        score = trainer.callback_metrics.get(self.monitor)
        if trainer.sanity_checking or score is None:
            return
        score = float(score)
        if self.best_score is None or (score > self.best_score if self.mode == "max" else score < self.best_score):
            self.best_score, self.best_epoch = score, trainer.current_epoch + 1
            self._weights = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}

    def on_fit_end(self, trainer: Trainer, pl_module) -> None:
        if self._weights is not None:
            pl_module.load_state_dict(self._weights)

    def state_dict(self) -> dict:
        return {"best_score": self.best_score, "best_epoch": self.best_epoch, "weights": self._weights}

    def load_state_dict(self, state_dict: dict) -> None:
        self.best_score, self.best_epoch = state_dict["best_score"], state_dict["best_epoch"]
        self._weights = state_dict["weights"]


class PredictionWriter(BasePredictionWriter):
    """Saves what ``predict`` returns in the run folder: ``predictions.pt``, a dict of
    ``probabilities`` (N, num_classes), ``labels`` (N,) (the most probable class) and ``indices``
    (N,), the rows of the predict split they belong to (and ``rows`` (N,), their rows in the source,
    where the test split was carved from the training rows), and the same as ``predictions.csv``
    (index, [row,] label, [class,] p_0, p_1, ...), with ``classes``, the class names, where the data
    name them; a regression model's ``predictions`` (N,) and ``indices``
    (index, prediction); an autoencoder's ``reconstructions`` (N, input_size) and ``indices``
    (index, x_0, x_1, ...); on a ``predict_path`` file, ``predictions-<its name>.*``. Under
    DDP each rank saves its own rows, ``predictions[-<its name>]-rank{r}.*``."""

    def __init__(self) -> None:
        super().__init__(write_interval="epoch")

    @staticmethod
    def paths(trainer: Trainer) -> tuple[Path, Path]:
        """``predictions[-<input>][-rank<r>].pt`` and ``.csv``: named after the predict file where the
        data have one (``predict_path``), so predictions on several inputs live side by side."""
        source = _predict_path(trainer)
        stem = "predictions" if not source else f"predictions-{Path(source).stem}"
        stem = stem if trainer.world_size == 1 else f"{stem}-rank{trainer.global_rank}"
        folder = Path(trainer.log_dir or trainer.default_root_dir)
        return folder / f"{stem}.pt", folder / f"{stem}.csv"

    def write_on_epoch_end(self, trainer: Trainer, pl_module, predictions: list, batch_indices: list) -> None:
        pt, csv = self.paths(trainer)  # on every rank: log_dir is a broadcast under DDP
        pt.parent.mkdir(parents=True, exist_ok=True)
        # One dataloader: Lightning passes its batches' outputs, and their indices in a list per dataloader.
        (indices,) = batch_indices
        probabilities = torch.cat(predictions).float().cpu()
        rows = torch.tensor(sum(indices, []), dtype=torch.long)
        saved = {"indices": rows}
        # A test split carved from the source's rows (no predict_path): each prediction's row in the source too.
        carved = None if _predict_path(trainer) else getattr(trainer.datamodule, "test_indices", None)
        if carved is not None:
            saved["rows"] = carved[rows]
        keys = (rows[:, None] if carved is None else torch.stack([rows, saved["rows"].long()], 1)).tolist()
        head = ["index"] if carved is None else ["index", "row"]
        table = io.StringIO()
        writer = _csv.writer(table, lineterminator="\n")
        task = getattr(pl_module, "task", "classification")
        if task != "classification":  # a regression's predicted targets (N,), an autoencoder's reconstructions
            values = probabilities[:, None] if task == "regression" else probabilities
            saved["predictions" if task == "regression" else "reconstructions"] = probabilities
            columns = ["prediction"] if task == "regression" else [f"x_{j}" for j in range(values.shape[1])]
            writer.writerow([*head, *columns])
            writer.writerows([*key, *(f"{v:.8g}" for v in vs)] for key, vs in zip(keys, values.tolist()))
        else:
            saved |= {"probabilities": probabilities, "labels": probabilities.argmax(-1)}
            # the data's own class names (a CSV's string labels) where they are not just 0..C-1
            names = [str(c) for c in getattr(trainer.datamodule, "classes", None) or []]
            named = len(names) == probabilities.shape[1] and names != [str(c) for c in range(len(names))]
            saved |= {"classes": names} if named else {}
            classes = [f"p_{c}" for c in range(probabilities.shape[1])]
            writer.writerow([*head, "label", *(["class"] if named else []), *classes])
            for key, y, ps in zip(keys, saved["labels"].tolist(), probabilities.tolist()):
                writer.writerow([*key, y, *([names[y]] if named else []), *(f"{p:.6g}" for p in ps)])
        torch.save(saved, pt)
        csv.write_text(table.getvalue())
        rank_zero_info(f"predictions written to {csv} (and {pt.name})")


def _predict_path(trainer: Trainer) -> str | None:
    """The ``predict_path`` file the data predict on, if they have one (else their test split)."""
    return dict(getattr(getattr(trainer, "datamodule", None), "hparams", None) or {}).get("predict_path")


def pixel_filters(rbms, index: int) -> Tensor:
    """RBM ``index``'s filters in pixel space: W_index @ ... @ W_1, shape (n_hidden, n_pixels).

    For index 0 these are the weights themselves; higher layers' filters are the linear
    combinations of the lower filters that their weights select (Lee et al. 2009 visualise them so).
    """
    filters = rbms[index].linear_weight
    for rbm in reversed(list(rbms)[:index]):
        filters = filters @ rbm.linear_weight
    return filters


class RBMPictures(Callback):
    """At the end of each pretraining stage, write PNGs to ``{log_dir}/pictures/`` and, under a
    TensorBoard logger, log them as images: the filters (first layer; higher layers projected to
    pixels), reconstructions next to their inputs, samples from long Gibbs chains, and the
    stage's learning curve (reconstruction error per epoch).

    Parameters
    ----------
    image_shape : (H, W) or (C, H, W)
        Shape of one input image (colour images are shown in colour).
    n_filters, n_samples : int
        How many filters and samples to draw.
    gibbs_steps : int
        Sweeps of each sampling chain (started from noise).
    """

    def __init__(
        self, image_shape: tuple[int, int], n_filters: int = 100, n_samples: int = 64, gibbs_steps: int = 1000
    ) -> None:
        self.image_shape = tuple(image_shape)
        self.n_filters, self.n_samples, self.gibbs_steps = n_filters, n_samples, gibbs_steps
        self.curves: dict[str, list[float]] = {}
        self._first_epoch = 0

    def on_train_start(self, trainer: Trainer, stage: RBMStage) -> None:
        self._first_epoch = trainer.current_epoch  # not 0 when the stage resumed

    def on_train_epoch_start(self, trainer: Trainer, stage: RBMStage) -> None:
        # The previous epoch's errors: Lightning runs callbacks' on_train_epoch_end before the
        # module's, where the stage logs train_recon, so an epoch's values are readable only now.
        if trainer.current_epoch > self._first_epoch:
            self._record(trainer, stage)

    def _record(self, trainer: Trainer, stage: RBMStage) -> None:
        for key in (f"{stage.name}/train_recon", f"{stage.name}/val_recon"):
            if key in trainer.callback_metrics:
                self.curves.setdefault(key, []).append(float(trainer.callback_metrics[key]))

    @torch.no_grad()
    def on_train_end(self, trainer: Trainer, stage: RBMStage) -> None:
        self._record(trainer, stage)  # the last epoch's
        if trainer.fast_dev_run:
            return
        log_dir = trainer.log_dir  # on every rank: it is a broadcast under DDP (rank 0 alone would hang)
        if not trainer.is_global_zero:
            return
        folder = Path(log_dir or trainer.default_root_dir) / "pictures"
        folder.mkdir(parents=True, exist_ok=True)
        rbms, up_to = stage.rbms, list(stage.rbms[: stage.index + 1])
        gaussian = rbms[0].visible_units == "gaussian"  # standardised pixels, not in [0, 1]: scale each tile
        pictures = {"filters": image_grid(pixel_filters(rbms, stage.index)[: self.n_filters], self.image_shape)}
        if stage.monitor_x is not None:
            x = stage.monitor_x[:32].to(stage.device)
            v = stage.encode(x)
            recon = down_pass(up_to, stage.rbm.visible_mean(stage.rbm.hidden_mean(v)))
            pairs = torch.stack([x, recon], 1).reshape(-1, x.shape[1])  # input, reconstruction, ...
            pictures["reconstructions"] = image_grid(pairs, self.image_shape, ncols=16, normalize_each=gaussian)
        generator = torch.Generator(device=stage.device).manual_seed(stage.cd.pretrain_seed)
        samples = down_pass(up_to, stage.rbm.sample(self.n_samples, self.gibbs_steps, generator=generator))
        if bool(samples.isfinite().all()):  # an unbounded chain (Gaussian visible, NReLU hidden) may run off
            pictures["samples"] = image_grid(samples, self.image_shape, normalize_each=gaussian)
        else:
            rank_zero_warn(f"{stage.name}'s Gibbs chain diverged (non-finite samples); its samples picture is left out")
        for kind, grid in pictures.items():
            save_image_grid(grid, folder / f"{stage.name}_{kind}.png", f"{stage.name} {kind}")
            if isinstance(trainer.logger, TensorBoardLogger):
                layout = "HWC" if grid.ndim == 3 else "HW"
                trainer.logger.experiment.add_image(f"{stage.name}/{kind}", grid, stage.index, dataformats=layout)
        curves = {k: v for k, v in self.curves.items() if k.startswith(f"{stage.name}/")}
        if curves:
            save_curves({stage.name: curves}, folder / f"{stage.name}_curve.png", ylabel="reconstruction error")
