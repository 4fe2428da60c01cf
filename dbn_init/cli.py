"""The Lightning CLI (``train.py``, ``dbn-init``): YAML -> DataModule + model -> fit (a DBN pretrains
its stages in it, with this run's stage Trainers: :class:`CLIStageTrainers`) -> test. Run identity
and resume: :mod:`dbn_init.runs`. The library's messages reach the user in the command's words
(:func:`as_flags`)."""

from __future__ import annotations

import inspect
import pydoc
import re
import sys
import warnings
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path
from typing import Mapping

from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import Callback, LightningDataModule, LightningModule, Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.utilities import rank_zero_info

from . import data, models
from .callbacks import PredictionWriter, RBMPictures, ResumeCheckpoint, prepare_trainer
from .configs import shipped
from .constraints import FileTakenError, MissingFileError, UsageError, usage_cause
from .entry import OneLineParser, command
from .io import data_record, save_stack
from .models import DBN, Classifier
from .plots import drawable
from .pretrain import FIT_ONLY, stage_trainer, trainer_options
from .runs import (
    RecordRunSettings,
    ReleaseUnsavedRun,
    check_run_folder,
    checked_checkpoint,
    claimed_version,
    find_last,
    run_settings,
    saved_stage,
)

__all__ = ["DBNCLI", "CLIStageTrainers", "ExportPretrained", "as_flags", "main", "entry_point"]


class DBNCLI(LightningCLI):
    """LightningCLI whose ``fit`` resumes by run identity, pretrains a DBN's stages with
    checkpoints and pictures, tests at the end and exports the pretrained stack."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # The data decide the sizes where they declare them, else the model takes them from the first
        # batch (None). No lambdas: under ddp_spawn the parser is pickled with the config callback.
        for size in ("input_size", "num_classes"):
            parser.link_arguments("data", f"model.init_args.{size}", partial(_declared, size), apply_on="instantiate")
        parser.set_defaults(model={"class_path": "dbn_init.DBN"})  # without --model: the DBN, its defaults

    def instantiate_classes(self) -> None:  # a class's refusal of a value ends the command as one usage line
        try:
            super().instantiate_classes()
        except MisconfigurationException as err:  # the Trainer's refusal of its options (a device this machine lacks)
            self.parser.error(
                f"the Trainer cannot run as configured: {err} Check --trainer.accelerator, --trainer.devices and "
                "--trainer.strategy (accelerator auto takes what this machine has)"
            )
        except (ValueError, TypeError) as err:  # jsonargparse wraps the class's refusal (or a missing file): find it
            if (cause := usage_cause(err)) is None:
                raise
            if not isinstance(cause, UsageError):  # a class's own missing file (a torchvision dataset's root)
                raise MissingFileError(
                    f"{cause.filename or cause}: no such file or folder (a relative path is read from "
                    f"{Path.cwd()}); fix the path in the config or on the command line"
                ) from err
            self.parser.error(as_flags(str(cause)))

    def _parse_ckpt_path(self) -> None:  # empty: Lightning would load --ckpt_path unchecked; _resolve checks it
        pass

    # --- where this run's files go -------------------------------------------------------------
    def _config_savers(self) -> list[SaveConfigCallback]:
        return [c for c in self.trainer.callbacks if isinstance(c, SaveConfigCallback)]

    def run_dir(self) -> Path:  # on every rank: log_dir is a broadcast under DDP
        return Path(self.trainer.log_dir or self.trainer.default_root_dir)

    def checkpoint_dir(self) -> Path:
        """Where this run's checkpoints go: the fine-tuning ModelCheckpoint's folder."""
        callback = self.trainer.checkpoint_callback
        return Path(callback.dirpath) if callback is not None and callback.dirpath else self.run_dir() / "checkpoints"

    def _resolve(self, required: bool = False, fine_tuned: bool = False) -> tuple[Path, dict] | None:
        """The checkpoint ``--ckpt_path`` stands for, as (file, contents), checked to be this run's."""
        ckpt_path = self.config_init[self.subcommand].get("ckpt_path")
        if not ckpt_path:
            return None
        ours = run_settings(self.model, self.datamodule)
        if ckpt_path != "last":
            return Path(ckpt_path), checked_checkpoint(Path(ckpt_path), ours, self.subcommand, fine_tuned)
        root = Path(getattr(self.trainer.logger, "root_dir", None) or self.trainer.default_root_dir)
        return find_last(root, ours, self.subcommand, fine_tuned, required)

    # --- the subcommands -----------------------------------------------------------------------
    def before_fit(self) -> None:
        prepare_trainer(self.trainer)
        resume, checkpoint = self._resolve() or (None, None)
        one = self.trainer.world_size == 1  # under DDP every rank runs this: the logger's rank 0 numbers the run
        with claimed_version(self.trainer.logger, one) as created:
            check_run_folder(Path(self.trainer.default_root_dir), self.run_dir(), self.checkpoint_dir(), resume, one)
        self.trainer.callbacks.append(ReleaseUnsavedRun(self.checkpoint_dir(), self.run_dir(), created))
        if self.trainer.checkpoint_callback is not None:  # checkpointing on: keep the fine-tuning's resume point too
            self.trainer.callbacks.append(ResumeCheckpoint(self.checkpoint_dir(), "last"))
        stage_resume: dict[int, str] = {}
        if resume is not None:
            rank_zero_info(f"resuming from {resume}")
            for callback in self._config_savers():  # the same run continues: its config.yaml may be rewritten
                callback.overwrite = True
            self.model.build_like(checkpoint)  # a model whose sizes come from the data: as that run's were
            stage = saved_stage(checkpoint)
            if stage is not None:  # interrupted during pretraining: finish that stage, then go on
                self.model.load_stage_checkpoint(checkpoint["state_dict"], stage)
                stage_resume, resume = {stage - 1: str(resume)}, None
            elif isinstance(self.model, DBN):  # pretraining is done; the fit restores the rest
                self.model.load_state_dict(checkpoint["state_dict"])
        self.config_init[self.subcommand]["ckpt_path"] = str(resume) if resume else None
        if isinstance(self.model, DBN):  # the fit pretrains in on_fit_start, with this run's stage Trainers:
            # its trainer options, a checkpoint rbm{k}-last.ckpt every epoch (to resume) and the stage's pictures
            config = self.config[self.subcommand]["trainer"].clone().as_dict()
            image_shape = getattr(self.datamodule, "image_shape", None)
            settings = run_settings(self.model, self.datamodule)
            self.model.stage_trainers = CLIStageTrainers(config, self.checkpoint_dir(), settings, image_shape)
            self.model.stage_resume = stage_resume
            if not self.trainer.fast_dev_run:
                stack = self.run_dir() / "pretrained.safetensors"
                self.trainer.callbacks.append(ExportPretrained(stack, checkpoint is not None))

    def _checkpoint_to_evaluate(self) -> None:
        """validate / test / predict: ``--ckpt_path`` read as fit reads it; a stage's is refused."""
        # Each evaluation logs into a version of its own, and Lightning says for every one that the fit's
        # checkpoint callback cannot take up its bookkeeping there, which evaluating never needs.
        warnings.filterwarnings("ignore", message=r"The dirpath has changed from")
        resolved = self._resolve(required=True, fine_tuned=True)
        if resolved is not None:
            self.config_init[self.subcommand]["ckpt_path"] = str(resolved[0])
        elif isinstance(self.model, DBN):  # refused before the Trainer makes a run folder
            self.model.refuse_evaluating_untrained(self.subcommand)
        else:  # a Baseline would be scored at its initialisation: not what the command is for
            raise UsageError(
                f"{self.subcommand} needs the weights of a trained run, and no --ckpt_path was given "
                f"({type(self.model).__name__} would be scored at its untrained start); pass the run's "
                "fine-tuning checkpoint (--ckpt_path PATH/last.ckpt, or --ckpt_path last), or fit first"
            )
        if (self.run_dir() / "config.yaml").is_file():
            # Without a logger every command shares one folder: validate, test and predict keep the fit's
            # config.yaml as it is rather than refusing it as another run's (predict's files are named by input).
            for callback in self._config_savers():
                callback.already_saved = True

    before_validate = before_test = _checkpoint_to_evaluate

    def before_predict(self) -> None:
        """As test, and the class probabilities and labels are saved in the run folder (:class:`PredictionWriter`)."""
        self._checkpoint_to_evaluate()
        if self.trainer.fast_dev_run:  # one batch, no run folder: nothing worth keeping
            return
        held = [p.name for p in PredictionWriter.paths(self.trainer) if p.exists()]
        if held:  # without a logger every run writes to the same folder
            raise FileTakenError(
                f"{self.run_dir()} already holds {' and '.join(held)}, the predictions of an earlier run on "
                "the same input, which this one would overwrite; pass another --trainer.default_root_dir "
                f"with --ckpt_path {self.config_init[self.subcommand]['ckpt_path']} (a path: 'last' is looked "
                "up under the new folder)"
            )
        self.trainer.callbacks.append(PredictionWriter())

    def after_fit(self) -> None:
        if self.trainer.interrupted:
            return
        for callback in self._config_savers():  # the fit saved config.yaml (under ddp_spawn a worker did, unheard here)
            callback.already_saved = True
        best = getattr(self.trainer.checkpoint_callback, "best_model_path", "")
        self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best or None)


class ExportPretrained(Callback):
    """Write a DBN's pretrained stack to ``path`` once its stages are done: at the first hook of
    fine-tuning (its sanity check, its first epoch, or the fit's end without any), so that a run
    stopped or failing during fine-tuning keeps it (the RBMs stay as they are; fine-tuning trains
    the MLP). ``overwrite``: only a run resumed in its own folder finds its own there
    (:func:`~dbn_init.runs.check_run_folder` refuses any other)."""

    def __init__(self, path: Path, overwrite: bool) -> None:
        self.path, self.overwrite, self.written = path, overwrite, False

    def _write_once(self, trainer: Trainer, pl_module: DBN) -> None:
        if trainer.is_global_zero and not self.written:
            save_stack(pl_module.rbms, self.path, **data_record(trainer.datamodule), overwrite=self.overwrite)
            rank_zero_info(f"pretrained RBM stack exported to {self.path} (reuse: --model.pretrained {self.path})")
        self.written = True

    on_sanity_check_start = on_train_start = on_fit_end = _write_once


@dataclass(frozen=True)
class CLIStageTrainers:
    """train.py's ``(fit, stage, epochs) -> Trainer`` for a DBN's stages (:attr:`DBN.stage_trainers`):
    :func:`~dbn_init.pretrain.stage_trainer` with the run's trainer options (less those that belong
    to fine-tuning), its resume checkpoints and its pictures. Plain data, so that it travels with
    the model into ``ddp_spawn``'s workers; the options given as classes (a strategy, a profiler)
    are made there, fresh for each stage."""

    config: dict
    checkpoint_dir: Path
    settings: dict
    image_shape: tuple[int, ...] | None

    def __call__(self, fit: Trainer, stage: int, epochs: int) -> Trainer:
        _quiet_warnings()  # in ddp_spawn's workers too, which never run main
        options = {k: v for k, v in trainer_options(self.config).items() if k not in FIT_ONLY}
        callbacks = [ResumeCheckpoint(self.checkpoint_dir, f"rbm{stage + 1}-last"), RecordRunSettings(self.settings)]
        if self.image_shape and drawable(self.image_shape):  # other channel counts (4, 2, ...) go undrawn
            callbacks.append(RBMPictures(self.image_shape))
        return stage_trainer(fit, stage, epochs, options, callbacks)


def _declared(name: str, datamodule: LightningDataModule) -> int | str | None:
    return getattr(datamodule, name, None)


@cache
def _options() -> dict[str, frozenset[str]]:
    """The options of each section of train.py's config, read off the signatures of its classes."""

    def names(classes) -> frozenset[str]:
        return frozenset(p for c in classes for p in inspect.signature(c.__init__).parameters if p != "self")

    members = [*vars(models).values(), *vars(data).values()]
    return {
        "model": names(c for c in members if isinstance(c, type) and issubclass(c, LightningModule)),
        "data": names(c for c in members if isinstance(c, type) and issubclass(c, LightningDataModule)),
        "trainer": names([Trainer]),
    }


_CLI_FLAGS = {"model": "--model.", "data": "--data.", "trainer": "--trainer.", "ckpt_path": "--ckpt_path"}  # train.py's


def as_flags(message: str, flags: Mapping[str, str] | None = None) -> str:
    """A library message in the command's words: the library names an option by its place in the
    config (``model.lr``, ``data.scaling``, ``trainer.gradient_clip_val``), the command line by its
    flag (``--model.lr``). ``flags`` maps a section to its flags' prefix where a command spells it
    otherwise (the comparison runner's ``{"model": "--dbn."}``, the estimators' ``{"model": ""}``),
    and an option to a flag of its own (the runner's ``{"model.hidden": "--hidden"}``); a section it
    leaves out keeps its words. Only the options of those sections are rewritten, so a file named
    ``data.csv`` stays as it is. ``Trainer.fit``'s ``ckpt_path`` becomes ``flags["ckpt_path"]``
    (train.py's ``--ckpt_path``) where ``flags`` has one."""
    options = _options()
    flags = _CLI_FLAGS if flags is None else flags

    def flag(m: re.Match) -> str:
        if m[0] in flags:
            return flags[m[0]]
        return f"{flags[m[1]]}{m[2]}" if m[1] in flags and m[2] in options[m[1]] else m[0]

    message = re.sub(r"(?<![\w./-])(model|data|trainer)\.(\w+)", flag, message)
    return re.sub(r"(?<![\w./-])ckpt_path\b", flags["ckpt_path"], message) if "ckpt_path" in flags else message


class _Parser(LightningArgumentParser, OneLineParser):
    def explained(self, message: str) -> str:
        return super().explained(as_flags(message))  # in the command's words

    def unknown(self, message: str) -> tuple[str, list[str], str] | None:  # a class's options, and the sections'
        if m := re.search(r"class_path '([\w.]+)': Option '(\w+)' is not accepted", message):
            return m[2], list(inspect.signature(pydoc.locate(m[1]) or (lambda: None)).parameters), ""
        if m := re.search(r"(does not accept option '|unrecognized arguments: (--))([\w.]+)", message):
            known = [f"{section}.{option}" for section, options in _options().items() for option in options]
            return m[3], known, m[2] or ""
        return super().unknown(message)


def _quiet_warnings() -> None:
    """Silence Lightning's warning that the run's checkpoint folder is not empty: each stage's
    ``rbm{k}-last.ckpt`` goes beside the earlier stages'."""
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")


def main(args: list[str] | None = None) -> DBNCLI:
    """Run the CLI on ``args`` (default: the command line); a usage error raises :class:`UsageError`."""
    _quiet_warnings()
    if args is None:  # LightningCLI reads sys.argv itself, and warns when given both
        sys.argv[1:] = shipped(sys.argv[1:])
    try:
        return DBNCLI(Classifier, LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                      parser_class=_Parser, args=None if args is None else shipped(args))  # fmt: skip
    except (UsageError, FloatingPointError) as err:  # the library's refusal or advice, in the command's words
        raise type(err)(as_flags(str(err))) from err


def entry_point() -> None:
    """``train.py`` and ``dbn-init``: :func:`main` under :func:`dbn_init.entry.command`."""
    command(main, "resume it: run the same command with --ckpt_path last")
