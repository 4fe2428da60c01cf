"""What makes two runs the same experiment, and where a run resumes: one home for both.

A run's *settings* are the model's and the data's init arguments, as checkpoints record them
(``hyper_parameters`` and ``datamodule_hyper_parameters``, JSON types), less the options that do
not change the result (:data:`SPEED_OPTIONS`, :data:`LOADING_OPTIONS`). ``train.py`` takes a
checkpoint for ``--ckpt_path`` only when its settings equal the command's; ``compare`` takes a
finished cell, and a cached pretrained stack, only when theirs do (:func:`pretraining_settings`).
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
import json
import shutil
from pathlib import Path
from typing import Any, Iterator, Mapping

from lightning.pytorch import Callback, Trainer
from lightning.pytorch.utilities import rank_zero_warn

from .constraints import FileTakenError, MissingFileError, UsageError
from .io import read_checkpoint
from .models import CLASSIFIER_OPTIONS, FROM_DATA

__all__ = [
    "SPEED_OPTIONS",
    "LOADING_OPTIONS",
    "FINE_TUNING_OPTIONS",
    "run_settings",
    "pretraining_settings",
    "saved_settings",
    "saved_stage",
    "differences",
    "checked_checkpoint",
    "find_last",
    "check_run_folder",
    "claimed_version",
    "RecordRunSettings",
    "ReleaseUnsavedRun",
]

# Model options that change how fast a run goes, not what it computes (tested bit for bit).
SPEED_OPTIONS = frozenset({"steps_per_batch"})
# Model options that only name where other options took their values: the values are recorded and compared.
NAME_ONLY_OPTIONS = frozenset({"recipe"})
# Data options that change where the files are read from or how fast they load, not what a model learns,
# and the rows predict serves: a fitted model predicts on any file of the same columns.
LOADING_OPTIONS = frozenset({"root", "download", "num_workers", "on_device", "max_file_bytes", "predict_path"})
# Model options that only fine-tuning reads: a pretrained stack does not depend on them. They are the
# Classifier's own options, read off its signature, less the sizes, the shape of the MLP and the
# inputs' kind (which RBM 1 models).
FINE_TUNING_OPTIONS = CLASSIFIER_OPTIONS - {"input_size", "num_classes", "hidden", "activation", "visible_units"}
# Data options that only the labelled (fine-tuning) loader reads.
FINE_TUNING_DATA_OPTIONS = frozenset({"num_labels", "min_train_batches"})
# Options at the value that computes what a file recording no such option computed: a
# setting recorded on one side only (the file, or here) and at this value is the same setting.
_NEUTRAL = {
    "task": "classification",
    "targets": "classes",  # the data's
    "min_train_batches": 0,  # each labelled row once an epoch
    "hidden_units": "sigmoid",
    "pretrain_updates": 2000,  # read only with pretrain_epochs None, which no file without it records
    "rectified_lr": 1e-3,  # the upper RBMs of a ReLU stack learned at gaussian_lr, 1e-3 in every such file
    "pcd_chains": None,
    "pt_temperatures": 1,
    "pt_min_beta": 0.9,
    "centring": False,
    "centring_rate": 0.01,
    "pretrain_lr_schedule": "constant",
    "lr_schedule": "constant",
    "dropout": 0.0,
    "input_dropout": 0.0,
    "body_lr_scale": 1.0,
    "warmup_epochs": 0,
    "start_decay": 0.0,
    "centre_inputs": False,
}
# What a run leaves in its folder besides its checkpoints; another run writing there would overwrite them.
RUN_OUTPUTS = ("config.yaml", "pictures", "pretrained.safetensors")


def _without(hparams: Mapping[str, Any] | None, left_out: frozenset[str]) -> dict[str, Any]:
    """``hparams`` in JSON types, less the ``left_out`` options."""
    return {k: v for k, v in json.loads(json.dumps(dict(hparams or {}), default=str)).items() if k not in left_out}


def _settings(model_hparams: Mapping | None, data_hparams: Mapping | None) -> dict[str, dict | None]:
    data = None if data_hparams is None else _without(data_hparams, LOADING_OPTIONS)
    return {"model": _without(model_hparams, SPEED_OPTIONS | NAME_ONLY_OPTIONS), "data": data}


def run_settings(model, datamodule) -> dict[str, dict | None]:
    """The settings of a run of ``model`` on ``datamodule`` (JSON types, ``_class_path`` naming each
    class when the CLI built it); ``data`` is None for a DataModule that records no hyperparameters."""
    settings = _settings(model.hparams, getattr(datamodule, "hparams", None) or None)
    if settings["data"] is not None:  # which data: two classes may share every argument (MNIST, Fashion-MNIST)
        settings["data"].setdefault("_class_path", _public_path(type(datamodule)))
    return settings


def _public_path(cls: type) -> str:
    """``package.Name`` where a package re-exports the class from a module of its own
    (dbn_init.data.ArrayDataModule, not dbn_init.data.arrays.ArrayDataModule), else ``module.Name``."""
    package = cls.__module__.rpartition(".")[0]
    if package and getattr(importlib.import_module(package), cls.__qualname__, None) is cls:
        return f"{package}.{cls.__qualname__}"
    return f"{cls.__module__}.{cls.__qualname__}"


def pretraining_settings(model, datamodule) -> dict[str, dict | None]:
    """What a DBN's pretrained stack depends on: the run's settings less the fine-tuning options
    and the data options only fine-tuning reads (pretraining never sees labels)."""
    ours = run_settings(model, datamodule)
    model_part = _without(ours["model"], FINE_TUNING_OPTIONS)
    return {"model": model_part, "data": _without(ours["data"], FINE_TUNING_DATA_OPTIONS)}


def saved_settings(checkpoint: dict) -> dict[str, dict | None] | None:
    """The settings of the run that wrote a checkpoint: recorded by :class:`RecordRunSettings` in a
    stage checkpoint, kept by Lightning in a fine-tuning one; None if it records none."""
    record, hparams = checkpoint.get("dbn_init_run"), checkpoint.get("hyper_parameters")
    if record is not None or hparams is None:
        return record
    return _settings(hparams, checkpoint.get("datamodule_hyper_parameters"))


def differences(saved: dict, ours: dict) -> list[str]:
    """``"model.hidden: [16] in the file, [32] here"`` for each setting that differs; empty for the same run."""
    out = []
    for part, settings in ours.items():
        theirs = saved.get(part)
        if theirs is None or settings is None:  # not recorded (a data module that saves no hyperparameters)
            continue
        for key in sorted(set(settings) | set(theirs)):
            if key.startswith("_") and key not in theirs:  # _class_path: recorded only by a CLI run
                continue
            if key in SPEED_OPTIONS | NAME_ONLY_OPTIONS | LOADING_OPTIONS:  # left out of ours; a file may hold them
                continue
            if key in FROM_DATA and settings.get(key) is None:  # to be taken from the data, whose settings count
                continue
            one = settings if key not in theirs else theirs if key not in settings else None
            if one is not None and key in _NEUTRAL and one[key] == _NEUTRAL[key]:  # recorded on one side only
                continue
            a, b = theirs.get(key, "(not set)"), settings.get(key, "(not set)")
            same = _class_name(a) == _class_name(b) if key == "_class_path" else a == b  # dbn_init.DBN: models.DBN
            if not same:
                out.append(f"{part}.{key.lstrip('_')}: {a!r} in the file, {b!r} here")
    return out


def _class_name(class_path: str) -> str:
    """The defining module's name for the class a ``class_path`` imports; the path itself if it imports nothing."""
    module, _, name = str(class_path).rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return class_path
    return f"{cls.__module__}.{cls.__qualname__}"


def saved_stage(checkpoint: dict) -> int | None:
    """The pretraining stage a checkpoint was saved in (1-based), None for a fine-tuning one."""
    return checkpoint.get("dbn_init", {}).get("stage")


# --- finding the checkpoint to resume or evaluate ------------------------------------------
def checked_checkpoint(path: Path, ours: dict, command: str, fine_tuned: bool = False) -> dict:
    """The contents of ``--ckpt_path PATH``, refused unless it is a dbn_init run with ``ours``
    settings (and, with ``fine_tuned``, saved after pretraining)."""
    if not path.is_file():
        raise MissingFileError(f"--ckpt_path {path} does not exist; pass a .ckpt file or 'last'")
    try:
        checkpoint = read_checkpoint(path)
    except ValueError as err:  # io's refusal, prefixed with the option the path came from
        raise UsageError(f"--ckpt_path: {err}") from err
    saved = saved_settings(checkpoint)
    if saved is None:
        raise UsageError(
            f"--ckpt_path {path} records no settings of a dbn_init run (written by another program?), "
            "so it cannot be checked against this command; to start from its RBM weights, pass it to "
            "model.pretrained"
        )
    found = differences(saved, ours)
    if found:
        config = path.parent.parent / "config.yaml"
        settings = f"--config {config}" if config.is_file() else "the settings of the command that wrote it"
        raise UsageError(
            f"--ckpt_path {path} is from another run; it is taken only with the same model and data "
            "settings, but the file differs from this command in:\n  - "
            + "\n  - ".join(found)
            + f"\nrun with {settings}"
            + (", or drop --ckpt_path (to start afresh)" if command == "fit" else "")
        )
    if fine_tuned and saved_stage(checkpoint) is not None:
        raise UsageError(
            f"--ckpt_path {path} was saved during pretraining (stage {saved_stage(checkpoint)}), before the "
            f"classifier was trained; {command} needs a fine-tuning checkpoint (last.ckpt or the best "
            "one, written once pretraining is done)"
        )
    return checkpoint


def find_last(
    root: Path, ours: dict, command: str, fine_tuned: bool = False, required: bool = False
) -> tuple[Path, dict] | None:
    """``--ckpt_path last``: the newest ``*last.ckpt`` under ``root`` (a logger's version folders,
    or the root itself) of a run with ``ours`` settings, as (file, contents). With ``fine_tuned``
    (validate, test, predict) a stage's is passed over, and the version folders of a logger
    under ``root`` (``lightning_logs/version_N``) are searched too. None, with a warning, if there is none;
    ``required`` makes that an error. Newer files that cannot be read are named, never skipped in
    silence: one of them may have been this run's."""
    folders = ["*/checkpoints", "checkpoints", *(["*/*/checkpoints"] if fine_tuned else [])]
    found = [p for folder in folders for p in root.glob(f"{folder}/*last.ckpt")]
    found.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    stopped, unreadable = None, []  # the newest same-settings run that stopped in pretraining; damaged files
    for path in found:
        try:
            checkpoint = read_checkpoint(path)
        except ValueError as err:
            unreadable.append(str(err))
            continue
        saved = saved_settings(checkpoint)
        if saved is None or differences(saved, ours):
            continue
        if fine_tuned and saved_stage(checkpoint) is not None:
            stopped = stopped or (path, saved_stage(checkpoint))  # a later run, mid-pretraining: look further back
            continue
        if unreadable:
            rank_zero_warn(
                f"--ckpt_path last: taking {path}, passing over newer checkpoints that cannot be read (if "
                "one was this run's, it is damaged and its progress is lost): " + "; ".join(unreadable)
            )
        return path, checkpoint
    _no_last(root, found, unreadable, stopped, command, required)
    return None


def _no_last(
    root: Path, found: list[Path], unreadable: list[str], stopped: tuple | None, command: str, required: bool
) -> None:
    damaged = ""
    if unreadable:
        damaged = "; newer checkpoints cannot be read (if one is this run's, it is damaged): " + "; ".join(unreadable)
    if stopped is not None:
        raise UsageError(
            f"--ckpt_path last: the run of this model with these settings under {root} stopped during "
            f"pretraining (stage {stopped[1]}, {stopped[0]}), before its classifier was trained; finish "
            f"it first (fit with the same settings and --ckpt_path last), then {command} again{damaged}"
        )
    what = "no *last.ckpt"
    if found:
        what = f"{len(found)} *last.ckpt, none from a run of this model with these settings (the newest: {found[0]})"
        what += damaged
    if required:
        raise MissingFileError(
            f"--ckpt_path last: {what} under {root}; pass the run's checkpoint file, or the run's "
            "settings (its config.yaml) so that 'last' finds it"
        )
    rank_zero_warn(
        f"--ckpt_path last: {what} under {root}; starting from scratch (to resume another run, run its "
        "own command again, as its config.yaml records it, with --ckpt_path)"
    )


def check_run_folder(root: Path, run: Path, checkpoints: Path, resume: Path | None, claim: bool = True) -> None:
    """Refuse a ``default_root_dir`` that is a file, and a run folder that already holds an
    earlier run's outputs (without a logger every run writes to the same one), unless this run
    resumes the one whose checkpoints are there; with ``claim``, then take the folder atomically
    (:func:`_claim`), so that of two runs checking at the same moment one refuses."""
    existing = next(p for p in (root, *root.parents) if p.exists())
    if not existing.is_dir():
        raise UsageError(
            f"trainer.default_root_dir {root}: expected a folder, but {existing} is a file; pass a "
            "folder (it is created if missing)"
        )
    if resume is not None and resume.resolve().parent == checkpoints.resolve():
        later = checkpoints / "last.ckpt"  # the run's fine-tuning resume point
        if resume.name != later.name and later.is_file() and later.stat().st_mtime > resume.stat().st_mtime:
            raise FileTakenError(
                f"--ckpt_path {resume} is a pretraining stage of a run that went on to fine-tune ({later}); resuming "
                "from the stage would retrain and overwrite that; resume with --ckpt_path last, or start a new run "
                "from the stage in another trainer.default_root_dir"
            )
        return
    held = [p for p in (*(run / name for name in RUN_OUTPUTS), checkpoints) if p.is_file() or any(p.glob("*"))]
    if held:
        names = ", ".join(str(p.relative_to(run) if p.is_relative_to(run) else p) for p in held)
        raise FileTakenError(
            f"the run folder {run} already holds an earlier run's outputs ({names}), which this run would overwrite; "
            "pass another trainer.default_root_dir, or enable a logger (it gives each run a new version folder), "
            "or resume that run with --ckpt_path"
        )
    if claim:  # one process (under DDP every rank checks the same folder)
        _claim(checkpoints, run)


def _claim(checkpoints: Path, run: Path) -> None:
    """Mark the checkpoint folder as this run's by creating ``.run`` in it exclusively: of two runs
    that passed the check above at the same moment (one folder, no logger), the second refuses."""
    checkpoints.mkdir(parents=True, exist_ok=True)
    try:
        (checkpoints / ".run").open("x").close()
    except FileExistsError:
        raise FileTakenError(
            f"another run started in the run folder {run} at the same moment and took it; pass another "
            "trainer.default_root_dir, or enable a logger (it gives each run a new version folder)"
        ) from None


def _release(checkpoints: Path, run: Path, created: Path | None = None) -> None:
    """Undo :func:`_claim` for a run that ended before it saved anything: its ``.run`` and the
    ``config.yaml`` it wrote go, so that the corrected command can start in the same folder (there
    is nothing to resume); with ``created`` (what :func:`claim_version` made for it, for a run
    refused in its own words), its ``version_N`` goes too (:func:`_unclaim`). A run that saved a
    checkpoint, a picture or a stack keeps everything."""
    saved = [p for p in checkpoints.glob("*") if p.name != ".run"]
    if saved or any((run / name).exists() for name in RUN_OUTPUTS if name != "config.yaml"):
        return
    for path in (checkpoints / ".run", run / "config.yaml"):
        path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # a folder this run made, unless something else is in it
        checkpoints.rmdir()
    if created is not None:
        _unclaim(run, created)


def _unclaim(version: Path, created: Path) -> None:
    """Remove the ``version`` folder a run claimed (the logger's record of it), then the folders
    above it that :func:`claim_version` ``created``, as long as they are empty: another run that
    started beside this one keeps its own."""
    shutil.rmtree(version, ignore_errors=True)
    folder = version.parent
    while folder == created or created in folder.parents:
        try:
            folder.rmdir()
        except OSError:  # not empty: another run's, or the user's
            break
        folder = folder.parent


class ReleaseUnsavedRun(Callback):
    """A fit that fails or is stopped before its first checkpoint gives its run folder back
    (:func:`_release`); refused (a :class:`UsageError`), it also removes the ``version_N`` its
    logger numbered and the empty folders :func:`claimed_version` ``created`` above it: they hold no
    more than the logger's record of the refusal."""

    def __init__(self, checkpoints: Path, run: Path, created: Path | None = None) -> None:
        self.checkpoints, self.run, self.created = checkpoints, run, created

    def on_exception(self, trainer: Trainer, pl_module, exception: BaseException) -> None:
        if trainer.is_global_zero:
            _release(self.checkpoints, self.run, self.created if isinstance(exception, UsageError) else None)


def claim_version(logger) -> Path | None:
    """Give a logger that numbers its runs (``version_N`` folders, as TensorBoard's and CSV's do)
    and has no version yet the first free one, by creating its folder exclusively: two runs started
    at the same moment in one ``default_root_dir`` then never share a folder (the logger alone
    would pick the same number for both, from the folders it sees). Returns the outermost folder
    it created, for the caller to remove if the run is then refused; None if it claimed nothing."""
    if getattr(logger, "_version", 0) is not None or not hasattr(logger, "_get_next_version"):
        return None  # fixed by the user, already resolved, or not a numbering logger
    root = Path(logger.root_dir)
    created = next((p for p in reversed((root, *root.parents)) if not p.exists()), None)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError:  # a file in the way: check_run_folder names it
        return None
    for version in itertools.count(logger._get_next_version()):
        with contextlib.suppress(FileExistsError):  # another run took it between the look and the claim
            (root / f"version_{version}").mkdir()
            break
    logger._version = version
    return created or root / f"version_{version}"


@contextlib.contextmanager
def claimed_version(logger, claim: bool = True) -> Iterator[Path | None]:
    """:func:`claim_version` for the block (if ``claim``), which gets the folder it created; a run
    refused in it leaves no folder behind."""
    created = claim_version(logger) if claim else None
    try:
        yield created
    except UsageError:
        if created is not None:
            _unclaim(Path(logger.root_dir) / f"version_{logger._version}", created)
        raise


class RecordRunSettings(Callback):
    """Writes the run's settings into its stage checkpoints, for ``--ckpt_path``."""

    def __init__(self, settings: dict) -> None:
        self.settings = settings

    def on_save_checkpoint(self, trainer: Trainer, pl_module, checkpoint: dict) -> None:
        checkpoint["dbn_init_run"] = self.settings
