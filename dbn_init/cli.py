"""The Lightning CLI: YAML -> DataModule + model -> (DBN: pretraining stages) -> fit -> test."""

from __future__ import annotations

import importlib
import json
import warnings
from pathlib import Path

from lightning.pytorch import Callback, Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from .callbacks import LogitsWriter, RBMPictures, ResumeCheckpoint
from .data import LOADING_OPTIONS, ImageDataModule
from .io import read_checkpoint, save_stack
from .models import DBN, SPEED_OPTIONS, Classifier

__all__ = ["DBNCLI", "CLIParser", "main"]

# Trainer options that belong to the fine-tuning fit only; a pretraining stage sets its own. CD
# steps its update itself (manual optimization), so gradient clipping and accumulation, which
# Lightning applies only to automatic optimization, stay with the fine-tuning too.
_FIT_ONLY = (
    "callbacks", "logger", "max_epochs", "min_epochs", "max_steps", "min_steps", "max_time",
    "enable_checkpointing", "default_root_dir", "check_val_every_n_epoch", "val_check_interval",
    "gradient_clip_val", "gradient_clip_algorithm", "accumulate_grad_batches",
)
# What a run leaves in its folder besides its checkpoints; another run writing there would overwrite them.
_RUN_OUTPUTS = ("config.yaml", "pictures", "pretrained.safetensors")


class DBNCLI(LightningCLI):
    """LightningCLI whose ``fit`` pretrains a DBN stage by stage first and tests at the end."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # The data decide the input and output sizes; the model must not repeat them.
        parser.link_arguments("data.input_size", "model.init_args.input_size", apply_on="instantiate")
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")

    def _config_savers(self) -> list[SaveConfigCallback]:
        """The callbacks that write this command's config.yaml into the run folder."""
        return [c for c in self.trainer.callbacks if isinstance(c, SaveConfigCallback)]

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
        args = {k: v for k, v in _trainer_options(config).items() if k not in _FIT_ONLY}
        # One file per stage, rewritten (atomically by Lightning's checkpoint IO) after every epoch.
        checkpoint = ResumeCheckpoint(self.checkpoint_dir(), f"rbm{stage + 1}-last")
        callbacks: list = [checkpoint, _RecordRunSettings(_run_settings(self.model, self.datamodule))]
        if hasattr(self.datamodule, "image_shape"):
            callbacks.append(RBMPictures(self.datamodule.image_shape))
        return Trainer(
            **args,
            max_epochs=epochs,
            logger=self.trainer.loggers or False,  # the fit's loggers; none if it has none (None would mean a default one)
            callbacks=callbacks,
            default_root_dir=self.trainer.default_root_dir,
        )

    def instantiate_classes(self) -> None:
        """As LightningCLI's, but a model's or data module's own refusal of a value (a ValueError in
        its ``__init__``) ends the command as a one-line usage error, not a traceback through
        jsonargparse ending in its list of union alternatives."""
        try:
            super().instantiate_classes()
        except ValueError as err:
            self.parser.error(_refusal(err))

    def _parse_ckpt_path(self) -> None:
        """Left empty on purpose. Lightning (2.x's LightningCLI) would load ``--ckpt_path`` here, unchecked, and let the model settings it holds
        replace the command line's; instead the command line stays authoritative, and
        :meth:`resolve_resume` reads the file with the checked reader and refuses another run's."""

    def resolve_resume(self, ckpt_path: str | None, required: bool = False,
                       fine_tuned: bool = False) -> tuple[Path, dict] | None:
        """The checkpoint ``--ckpt_path`` stands for, as (file, its checked contents), or None.

        ``--ckpt_path last``: the newest ``*last.ckpt`` (a stage's or the fine-tuning's; with
        ``fine_tuned``, as validate, test and predict need, a stage's is refused) under this
        logger's folder from an earlier run of the same model with the same settings, so that runs
        of other experiments sharing the folder are never picked up; a path must hold such a run.
        Without a match, fit starts afresh (with a warning); ``required`` makes it an error."""
        if not ckpt_path:
            return None
        ours = _run_settings(self.model, self.datamodule)
        if ckpt_path != "last":
            path = Path(ckpt_path)
            if not path.is_file():
                raise FileNotFoundError(f"--ckpt_path {ckpt_path} does not exist; pass a .ckpt file or 'last'")
            checkpoint = _load_checkpoint(path, "--ckpt_path")
            saved = _saved_run_settings(checkpoint)
            if saved is None:
                raise ValueError(f"--ckpt_path {path} records no settings of a dbn_init run (written by another "
                                 "program?), so it cannot be checked against this command; to start from its RBM "
                                 "weights, pass it to --model.pretrained")
            differences = _differences(saved, ours)
            if differences:
                config = path.parent.parent / "config.yaml"
                settings = f"--config {config}" if config.is_file() else "the settings of the command that wrote it"
                raise ValueError(
                    f"--ckpt_path {path} is from another run; it is taken only with the same model and data "
                    "settings, but the file differs from this command in:\n  - " + "\n  - ".join(differences)
                    + f"\nrun with {settings}, or drop --ckpt_path")
            stage = checkpoint.get("dbn_init", {}).get("stage")
            if fine_tuned and stage is not None:
                raise ValueError(f"--ckpt_path {path} was saved during pretraining (stage {stage}), before the "
                                 f"classifier was trained; {self.subcommand} needs a fine-tuning checkpoint "
                                 "(last.ckpt or the best one, written once pretraining is done)")
            return path, checkpoint
        logger = self.trainer.logger
        root = Path(logger.root_dir if logger is not None and hasattr(logger, "root_dir") else self.trainer.default_root_dir)
        # a logger's version folders, or (without a logger) the root itself
        found = sorted([*root.glob("*/checkpoints/*last.ckpt"), *root.glob("checkpoints/*last.ckpt")],
                       key=lambda p: p.stat().st_mtime, reverse=True)
        stopped = None  # with fine_tuned: the newest same-settings run that stopped during pretraining
        unreadable = []  # newer files that may have been this run's: the user must hear of them
        for path in found:
            try:
                checkpoint = _load_checkpoint(path, "--ckpt_path last")
            except ValueError as err:
                unreadable.append(str(err).removeprefix("--ckpt_path last: "))
                continue
            saved = _saved_run_settings(checkpoint)
            if saved is None or _differences(saved, ours):
                continue
            stage = checkpoint.get("dbn_init", {}).get("stage")
            if not (fine_tuned and stage is not None):
                if unreadable:
                    rank_zero_warn(f"--ckpt_path last: taking {path}, passing over newer checkpoints that cannot be "
                                   "read (if one was this run's, it is damaged and its progress is lost): "
                                   + "; ".join(unreadable))
                return path, checkpoint
            stopped = stopped or (path, stage)  # a later run, mid-pretraining: look further back
        damaged = ("; newer checkpoints cannot be read (if one is this run's, it is damaged): " + "; ".join(unreadable)
                   if unreadable else "")
        if stopped is not None:
            raise ValueError(f"--ckpt_path last: the run of this model with these settings under {root} stopped "
                             f"during pretraining (stage {stopped[1]}, {stopped[0]}), before its classifier was "
                             f"trained; finish it first (fit with the same settings and --ckpt_path last), then "
                             f"{self.subcommand} again{damaged}")
        what = (f"{len(found)} *last.ckpt, none from a run of this model with these settings (the "
                f"newest: {found[0]}){damaged}") if found else "no *last.ckpt"
        if required:
            raise FileNotFoundError(f"--ckpt_path last: {what} under {root}; pass the run's checkpoint file, or "
                                    "the run's settings (its config.yaml) so that 'last' finds it")
        rank_zero_warn(f"--ckpt_path last: {what} under {root}; starting from scratch (to resume another run, "
                       "run its own command again, as its config.yaml records it, with --ckpt_path)")
        return None

    def check_run_folder(self, resume: Path | None) -> None:
        """Refuse a ``default_root_dir`` that is a file, and a run folder that already holds an
        earlier run's outputs (without a logger every run writes to the same one), unless this run
        resumes the one whose checkpoints are there."""
        root = Path(self.trainer.default_root_dir)
        existing = next(p for p in (root, *root.parents) if p.exists())
        if not existing.is_dir():
            raise ValueError(f"--trainer.default_root_dir {root}: expected a folder, but {existing} is a file; "
                             "pass a folder (it is created if missing)")
        run, checkpoints = Path(self.trainer.log_dir or root), self.checkpoint_dir()
        if resume is not None and resume.resolve().parent == checkpoints.resolve():
            later = checkpoints / "last.ckpt"  # the run's fine-tuning resume point
            if resume.name != later.name and later.is_file() and later.stat().st_mtime > resume.stat().st_mtime:
                raise FileExistsError(
                    f"--ckpt_path {resume} is a pretraining stage of a run that went on to fine-tune ({later}); "
                    "resuming from the stage would retrain and overwrite that; resume with --ckpt_path last, or "
                    "start a new run from the stage in another --trainer.default_root_dir")
            return
        held = [p for p in (*(run / name for name in _RUN_OUTPUTS), checkpoints)
                if p.is_file() or (p.is_dir() and any(p.iterdir()))]
        if held:
            names = ", ".join(str(p.relative_to(run) if p.is_relative_to(run) else p) for p in held)
            raise FileExistsError(
                f"the run folder {run} already holds an earlier run's outputs ({names}), "
                "which this run would overwrite; pass another --trainer.default_root_dir, or enable a logger "
                "(it gives each run a new version folder), or resume that run with --ckpt_path")

    def before_fit(self) -> None:
        resolved = self.resolve_resume(self.config_init[self.subcommand].get("ckpt_path"))
        resume, checkpoint = resolved or (None, None)
        self.check_run_folder(resume)
        if self.trainer.checkpoint_callback is not None:  # checkpointing on: keep the fine-tuning's resume point too
            self.trainer.callbacks.append(ResumeCheckpoint(self.checkpoint_dir(), "last"))
        stage_resume: dict[int, str] = {}
        if resume is not None:
            rank_zero_info(f"resuming from {resume}")
            for callback in self._config_savers():  # the same run continues: its config.yaml may be rewritten
                callback.overwrite = True
            stage = checkpoint.get("dbn_init", {}).get("stage")
            if stage is not None:  # interrupted during pretraining: finish that stage, then go on
                self.model.load_stage_checkpoint(checkpoint["state_dict"], stage)
                stage_resume[stage - 1] = str(resume)
                resume = None
            elif isinstance(self.model, DBN):  # fine-tuning checkpoint: pretraining is done; fit restores the rest
                self.model.load_state_dict(checkpoint["state_dict"])
        self.config_init[self.subcommand]["ckpt_path"] = str(resume) if resume else None
        if isinstance(self.model, DBN):
            self.model.pretrain(self.datamodule, self.stage_trainer, stage_resume)

    def _checkpoint_to_evaluate(self) -> None:
        """validate / test / predict: ``--ckpt_path`` read as fit reads it (checked; ``last`` and a
        path must be this model's run with these settings); a pretraining stage's is refused."""
        resolved = self.resolve_resume(self.config_init[self.subcommand].get("ckpt_path"), required=True,
                                       fine_tuned=True)
        if resolved is not None:
            self.config_init[self.subcommand]["ckpt_path"] = str(resolved[0])
        elif isinstance(self.model, DBN):  # refused before the Trainer makes a run folder
            self.model.refuse_evaluating_untrained(self.subcommand)
        else:  # a Baseline would be scored at its initialisation: not what the command is for
            raise ValueError(f"{self.subcommand} needs the weights of a trained run, and no --ckpt_path was given "
                             f"({type(self.model).__name__} would be scored at its untrained start); pass the run's "
                             "fine-tuning checkpoint (--ckpt_path PATH/last.ckpt, or --ckpt_path last), or fit first")
        if self.subcommand != "predict" and (Path(self.trainer.log_dir or self.trainer.default_root_dir)
                                             / "config.yaml").is_file():
            # Without a logger every command shares one folder: validate and test write nothing there,
            # so the fit's config.yaml stays as it is rather than being refused as another run's.
            for callback in self._config_savers():
                callback.already_saved = True

    before_validate = before_test = _checkpoint_to_evaluate

    def before_predict(self) -> None:
        """As test, and the logits are saved in the run folder (``predictions.pt``, :class:`LogitsWriter`)."""
        self._checkpoint_to_evaluate()
        if self.trainer.fast_dev_run:  # one batch, no run folder: nothing worth keeping
            return
        path = LogitsWriter.path(self.trainer)
        held = [p.name for p in (path.parent / "config.yaml", path) if p.exists()]
        if held:  # without a logger every run writes to the same folder
            raise FileExistsError(f"{path.parent} already holds an earlier run's {' and '.join(held)}, which this "
                                  "prediction would overwrite; pass another --trainer.default_root_dir, or enable a "
                                  "logger (a new version folder per run)")
        self.trainer.callbacks.append(LogitsWriter())

    def after_fit(self) -> None:
        if self.trainer.interrupted:
            return
        if isinstance(self.model, DBN) and not self.trainer.fast_dev_run:
            self.export_pretrained()
        for callback in self._config_savers():
            # The fit saved config.yaml; under ddp_spawn a worker did, and this process's copy of
            # the callback never heard, so the test would refuse the file as another run's.
            callback.already_saved = True
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


def _run_settings(model: Classifier, datamodule) -> dict:
    """What makes two runs the same experiment: the model's and the data's init arguments, as
    checkpoints record them (JSON types, with ``_class_path`` naming each class), less the
    options that do not change the result (where the data load from, how fast the model steps)."""
    return {"model": _model_settings(model.hparams), "data": _data_settings(datamodule.hparams)}


def _as_json(hparams) -> dict:
    return json.loads(json.dumps(dict(hparams), default=str))


def _model_settings(hparams) -> dict:
    return {k: v for k, v in _as_json(hparams).items() if k not in SPEED_OPTIONS}


def _data_settings(hparams) -> dict:
    return {k: v for k, v in _as_json(hparams).items() if k not in LOADING_OPTIONS}


def _saved_run_settings(checkpoint: dict) -> dict | None:
    """The settings of the run that wrote a checkpoint: recorded by the CLI in a stage checkpoint,
    kept by Lightning (``hyper_parameters``, ``datamodule_hyper_parameters``) in a fine-tuning one."""
    record = checkpoint.get("dbn_init_run")
    if isinstance(record, dict):  # before data settings were recorded: the model's alone, flat
        record = record if set(record) == {"model", "data"} else {"model": record, "data": None}
        return {**record, "model": _model_settings(record["model"])}
    hparams, data = checkpoint.get("hyper_parameters"), checkpoint.get("datamodule_hyper_parameters")
    if not isinstance(hparams, dict):
        return None
    return {"model": _model_settings(hparams), "data": _data_settings(data) if isinstance(data, dict) else None}


def _differences(saved: dict, ours: dict) -> list[str]:
    """``"model.hidden: [16] in the file, [32] here"`` for each setting that differs; empty for the same run."""
    out = []
    for part, settings in ours.items():
        theirs = saved.get(part)
        if theirs is None:  # not recorded (a data module that saves no hyperparameters)
            continue
        theirs = theirs if isinstance(theirs, dict) else {}
        for key in sorted(set(settings) | set(theirs)):
            if key.startswith("_") and key not in theirs:  # _class_path: recorded only by a CLI run
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


def _union_entries(text: str) -> tuple[str, list[str]] | None:
    """jsonargparse's report for a class-path option, 'Parser key "model": Does not validate against
    any of the Union subtypes ... Errors: - <entry> - Expected a <class 'NoneType'> Given value ...',
    as (the part before "Does not validate", each entry on one line); None for any other message."""
    head, union, rest = text.partition("Does not validate against any of the Union subtypes")
    if not union or "Errors:" not in rest:
        return None
    items: list[list[str]] = []  # each "- " entry of the list, with its more-indented lines
    indent = None
    for line in rest.partition("Errors:")[2].splitlines():
        depth, stripped = len(line) - len(line.lstrip()), line.strip()
        if not stripped:
            continue
        if indent is None and stripped.startswith("- "):
            indent = depth
        if indent is None or depth < indent:  # "Given value ...": the list has ended
            break
        if depth == indent and stripped.startswith("- "):
            items.append([stripped[2:]])
        else:
            items[-1].append(stripped)
    return head.strip(), list(dict.fromkeys(" ".join(item) for item in items))  # once each, in order


def _own_message(text: str) -> str:
    """A usage error as what the class said, where the class refused a key or value: 'Parser key
    "model": Problem with given class_path 'dbn_init.DBN': Option 'hiden' is not accepted'. Other
    messages (a plain value of the wrong type, where the alternatives and the given value are the
    story) stay as jsonargparse wrote them."""
    parsed = _union_entries(text)
    own = [e for e in parsed[1] if e.startswith("Problem with given class_path")] if parsed else []
    return " ".join([parsed[0], "\n  ".join(own)]).strip() if own else text


def _trainer_options(config: dict) -> dict:
    """Trainer keyword arguments from the parsed ``trainer`` config, with the options given as a
    class (``--trainer.strategy``, ``plugins``, ``profiler`` as ``class_path`` + ``init_args``)
    made into objects, as LightningCLI makes them for the fit's own Trainer. Fresh ones for each
    stage: a strategy or profiler object belongs to one Trainer."""
    parser = LightningArgumentParser(exit_on_error=False)
    parser.add_lightning_class_args(Trainer, "trainer")
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes  # renamed in jsonargparse 4.49
    return dict(vars(instantiate(parser.parse_object({"trainer": config})).trainer))


def _refusal(err: ValueError) -> str:
    """The message of a class's own ValueError in its ``__init__``, without the union report that
    jsonargparse wraps it in (whose other entry is 'Expected a <class 'NoneType'>')."""
    parsed = _union_entries(str(err))
    own = [e for e in parsed[1] if not e.startswith("Expected a <class 'NoneType'>")] if parsed else []
    return "; ".join(own) or str(err)


class CLIParser(LightningArgumentParser):
    """Lightning's parser, whose usage errors keep only what the class or option said (see
    :func:`_own_message`), not jsonargparse's list of union alternatives around it; train.py's
    and compare's."""

    def error(self, message: str, ex: Exception | None = None):
        return super().error(_own_message(message), ex)


def _load_checkpoint(path: Path, option: str) -> dict:
    """io's checked reader, its refusal prefixed with the option the path came from."""
    try:
        return read_checkpoint(path)
    except ValueError as err:
        raise ValueError(f"{option}: {err}") from err


class _RecordRunSettings(Callback):
    """Writes the run's settings into its stage checkpoints, for ``--ckpt_path``."""

    def __init__(self, settings: dict) -> None:
        self.settings = settings

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
        parser_class=CLIParser,
    )
