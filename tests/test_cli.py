"""The Lightning CLI on the shipped configs: real Trainer runs, real errors."""

import logging
import os
import shutil
import subprocess
import sys
import sysconfig
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from lightning.pytorch import LightningDataModule, Trainer, seed_everything
from sklearn.datasets import load_wine

import dbn_init.cli
from dbn_init import DBN, Baseline, DigitsDataModule
from dbn_init.callbacks import RBMPictures
from dbn_init.cli import DBNCLI, CLIStageTrainers, main
from dbn_init.constraints import UsageError
from dbn_init.entry import command
from dbn_init.models import Classifier

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
# A run of a few batches per stage and epoch: seconds on 2 CPU cores.
TINY = [
    "--config",
    str(CONFIGS / "quickstart.yaml"),
    "--model.pretrain_epochs",
    "1",
    "--trainer.max_epochs",
    "1",
    "--trainer.limit_train_batches",
    "2",
    "--trainer.limit_val_batches",
    "2",
    "--trainer.limit_test_batches",
    "2",
    "--trainer.enable_progress_bar",
    "false",
]


def _snapshot(folder: Path) -> dict:
    """Every file under ``folder``: its bytes and modification time, to show nothing was touched."""
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()}


def test_quickstart_config_runs_pretraining_fine_tuning_and_test_with_fast_dev_run(tmp_path):
    cli = main(
        [
            "fit",
            "--config",
            str(CONFIGS / "quickstart.yaml"),
            "--trainer.fast_dev_run",
            "true",
            "--trainer.default_root_dir",
            str(tmp_path),
        ]
    )
    assert isinstance(cli.model, DBN)
    assert cli.model.pretrained
    assert cli.model.hparams.input_size == 64  # linked from the DataModule
    assert "test_acc" in cli.trainer.callback_metrics


def test_fine_tuning_only_trainer_options_stay_out_of_the_pretraining_stages(tmp_path):
    # The stages step CD themselves (manual optimization), where Lightning refuses gradient
    # clipping and accumulation; the fine-tuning fit still gets them.
    cli = main(
        [
            "fit",
            "--config",
            str(CONFIGS / "quickstart.yaml"),
            "--trainer.fast_dev_run",
            "true",
            "--trainer.gradient_clip_val",
            "1.0",
            "--trainer.accumulate_grad_batches",
            "2",
            "--trainer.default_root_dir",
            str(tmp_path),
        ]
    )
    assert cli.model.pretrained and cli.trainer.gradient_clip_val == 1.0
    assert cli.trainer.accumulate_grad_batches == 2


def test_trainer_options_given_as_classes_reach_each_stage_as_its_own_objects(tmp_path, monkeypatch):
    # A strategy with arguments, a profiler or a plugin is a class_path in the parsed config; each
    # stage needs its own instance (one Trainer each), as the fine-tuning fit gets one.
    stage_trainers = []
    original = dbn_init.cli.stage_trainer
    record = lambda *a: stage_trainers.append(original(*a)) or stage_trainers[-1]  # noqa: E731
    monkeypatch.setattr(dbn_init.cli, "stage_trainer", record)
    cli = main(
        [
            "fit",
            "--config",
            str(CONFIGS / "quickstart.yaml"),
            "--trainer.fast_dev_run",
            "true",
            "--trainer.strategy",
            "lightning.pytorch.strategies.SingleDeviceStrategy",
            "--trainer.strategy.device",
            "cpu",
            "--trainer.profiler",
            "lightning.pytorch.profilers.SimpleProfiler",
            "--trainer.default_root_dir",
            str(tmp_path),
        ]
    )
    assert cli.model.pretrained and "test_acc" in cli.trainer.callback_metrics
    assert len(stage_trainers) == 2
    strategies = [t.strategy for t in (*stage_trainers, cli.trainer)]
    assert all(type(s).__name__ == "SingleDeviceStrategy" and s.root_device.type == "cpu" for s in strategies)
    assert len({id(s) for s in strategies}) == 3
    assert all(type(t.profiler).__name__ == "SimpleProfiler" for t in stage_trainers)


def test_without_a_logger_the_pretraining_stages_log_nowhere_either(tmp_path):
    # A stage Trainer given logger=None would make Lightning's default TensorBoard logger.
    cli = main(
        [
            "fit",
            "--config",
            str(CONFIGS / "quickstart.yaml"),
            "--trainer.logger",
            "false",
            "--trainer.max_epochs",
            "1",
            "--model.pretrain_epochs",
            "1",
            "--trainer.limit_train_batches",
            "2",
            "--trainer.limit_val_batches",
            "2",
            "--trainer.limit_test_batches",
            "2",
            "--trainer.default_root_dir",
            str(tmp_path),
        ]
    )
    assert cli.model.pretrained and cli.trainer.loggers == []
    assert not (tmp_path / "lightning_logs").exists()
    assert (tmp_path / "checkpoints" / "rbm2-last.ckpt").is_file()  # the stages still checkpoint


def test_ckpt_path_last_resumes_only_a_run_of_the_same_model_and_settings(tmp_path):
    dbn = [
        "--config",
        str(CONFIGS / "quickstart.yaml"),
        "--model.hidden",
        "[16]",
        "--model.pretrain_epochs",
        "1",
        "--trainer.default_root_dir",
        str(tmp_path),
    ]
    main(
        [
            "fit",
            *dbn,
            "--trainer.max_epochs",
            "1",
            "--trainer.limit_train_batches",
            "2",
            "--trainer.limit_val_batches",
            "2",
            "--trainer.limit_test_batches",
            "2",
        ]
    )
    checkpoints = tmp_path / "lightning_logs" / "version_0" / "checkpoints"  # rbm1-last.ckpt, then last.ckpt

    def resolved(*args):
        cli = DBNCLI(
            Classifier,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            args=list(args),
            run=False,
        )
        cli.config_init["fit"] = {"ckpt_path": "last"}
        cli.subcommand = "fit"
        found = cli._resolve()
        return found and found[0]

    assert resolved(*dbn) == checkpoints / "last.ckpt"
    # experiments sharing the folder are not picked up: another model, or the same one with other settings
    baseline = [dbn[0], dbn[1], "--model", "dbn_init.Baseline", "--model.hidden", "[16]", *dbn[-2:]]
    # data settings that change the experiment count too; how the data are loaded does not
    for other in (
        baseline,
        [*dbn, "--model.pretrain_lr", "0.05"],
        [*dbn, "--data.num_labels", "20"],
        [*dbn, "--data.binarize", "true"],
        [*dbn, "--data.batch_size", "16"],
    ):
        with pytest.warns(UserWarning, match=r"2 \*last.ckpt, none from a run of this model with these settings"):
            assert resolved(*other) is None
    assert resolved(*dbn, "--data.num_workers", "1", "--data.on_device", "false") == checkpoints / "last.ckpt"
    assert resolved(*dbn, "--model.steps_per_batch", "1") == checkpoints / "last.ckpt"  # speed only, as in compare
    # a damaged newest checkpoint is named, not passed over in silence for an older one
    last = checkpoints / "last.ckpt"
    intact = last.read_bytes()
    last.write_bytes(intact[:5000])
    with pytest.warns(
        UserWarning,
        match=r"taking .*rbm1-last.ckpt, passing over newer checkpoints that cannot be "
        r"read .*damaged.*last.ckpt",
    ):
        assert resolved(*dbn) == checkpoints / "rbm1-last.ckpt"
    last.unlink()  # as if the run had stopped after its stage
    assert resolved(*dbn) == checkpoints / "rbm1-last.ckpt"


def test_a_second_run_without_a_logger_in_the_same_folder_is_refused_before_it_overwrites_the_first(tmp_path):
    # Without a logger every run writes to default_root_dir itself: stage checkpoints, pictures...
    args = [
        "fit",
        *TINY,
        "--model.hidden",
        "[16]",
        "--trainer.logger",
        "false",
        "--trainer.default_root_dir",
        str(tmp_path),
    ]
    main(args)
    before = _snapshot(tmp_path)
    assert (
        tmp_path / "checkpoints" / "rbm1-last.ckpt" in before and tmp_path / "pictures" / "rbm1_filters.png" in before
    )
    with pytest.raises(
        FileExistsError,
        match=r"already holds an earlier run's outputs .*config.yaml.*--trainer."
        r"default_root_dir, or enable a logger",
    ):
        main([*args, "--seed_everything", "1"])
    assert _snapshot(tmp_path) == before  # not one byte rewritten
    # nor is the finished run's fine-tuning retrained over from its stage checkpoint
    with pytest.raises(FileExistsError, match=r"is a pretraining stage of a run that went on to fine-tune .*last.ckpt"):
        main([*args, "--ckpt_path", str(tmp_path / "checkpoints" / "rbm1-last.ckpt")])
    assert _snapshot(tmp_path) == before
    # resuming that run into its own folder is still allowed (without a logger, `last` looks there too)
    resumed = main([*args, "--ckpt_path", "last"])
    assert resumed.model.pretrained and "test_acc" in resumed.trainer.callback_metrics


@pytest.mark.parametrize("val_every, best", [(1, 0), (2, 1)])
def test_last_ckpt_is_where_fine_tuning_stopped_not_its_best_epoch(tmp_path, val_every, best):
    # lr 1e-12 keeps val_acc flat, so the monitored checkpoint's best stays the first validated epoch
    # while fine-tuning goes on; validating every 2nd epoch, the last epoch is not validated at all
    args = [
        "fit",
        *TINY,
        "--model.hidden",
        "[16]",
        "--trainer.max_epochs",
        "3",
        "--model.lr",
        "1e-12",
        "--trainer.check_val_every_n_epoch",
        str(val_every),
        "--trainer.default_root_dir",
        str(tmp_path),
    ]
    first = main(args)
    assert Path(first.trainer.checkpoint_callback.best_model_path).name.startswith(f"epoch={best}-")
    last = torch.load(tmp_path / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 2 and last["global_step"] == first.trainer.global_step == 6
    resumed = main([*args, "--ckpt_path", "last"])  # a finished run: nothing left to train
    assert resumed.trainer.global_step == 6
    assert resumed.trainer.callback_metrics["test_acc"] == first.trainer.callback_metrics["test_acc"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """The checkpoints folder of a finished [16] DBN run: rbm1-last.ckpt and last.ckpt."""
    root = tmp_path_factory.mktemp("finished")
    main(["fit", *TINY, "--model.hidden", "[16]", "--trainer.default_root_dir", str(root)])
    return root / "lightning_logs" / "version_0" / "checkpoints"


@pytest.mark.parametrize(
    "file, extra, message",
    [
        ("text", [], r"text.ckpt is not a recognised weights file"),
        ("truncated", [], r"truncated.ckpt looks like a zip file but is corrupt"),
        ("rbm1-last.ckpt", ["--model.hidden", "[32]"], r"differs .* in:\n  - --model.hidden: \[16\] in the file"),
        (
            "rbm1-last.ckpt",
            ["--model", "dbn_init.Baseline", "--model.hidden", "[16]"],
            r"model.class_path: 'dbn_init.DBN' in the file, 'dbn_init.Baseline' here",
        ),
        ("last.ckpt", ["--model.hidden", "[32]"], r"model.hidden: \[16\] in the file, \[32\] here"),
        (
            "last.ckpt",
            ["--model", "dbn_init.Baseline", "--model.hidden", "[16]"],
            r"model.class_path: 'dbn_init.DBN' in the file, 'dbn_init.Baseline' here",
        ),
        (
            "last.ckpt",
            ["--model.hidden", "[16]", "--data.binarize", "true"],
            r"data.binarize: False in the file, True here",
        ),
        (
            "../pretrained.safetensors",
            ["--model.hidden", "[16]"],
            r"holds RBM weights but no training state.*pass it to --model.pretrained",
        ),
    ],
    ids=[
        "text",
        "truncated",
        "stage-hidden",
        "stage-class",
        "fine-tuning-hidden",
        "fine-tuning-class",
        "data",
        "weights-only",
    ],
)
def test_an_explicit_ckpt_path_is_read_checked_and_must_be_the_same_run(finished_run, tmp_path, file, extra, message):
    (tmp_path / "text.ckpt").write_text("not a checkpoint\n")
    (tmp_path / "truncated.ckpt").write_bytes((finished_run / "last.ckpt").read_bytes()[:5000])
    path = finished_run / file if (finished_run / file).is_file() else tmp_path / f"{file}.ckpt"
    before = _snapshot(finished_run.parent)
    root = tmp_path / "run"
    with pytest.raises(ValueError, match=message) as info:
        main(["fit", *TINY, *extra, "--ckpt_path", str(path), "--trainer.default_root_dir", str(root)])
    assert "--ckpt_path" in str(info.value) and str(path) in str(info.value)
    assert any(fix in str(info.value) for fix in ("drop --ckpt_path", "; expected", "--model.pretrained"))  # a way out
    assert _snapshot(finished_run.parent) == before and not root.exists()  # refused before any training


def test_a_run_is_recognised_across_class_path_spellings_and_the_older_stage_record(finished_run, tmp_path):
    stage = torch.load(finished_run / "rbm1-last.ckpt", weights_only=True)
    stage["dbn_init_run"] = stage["dbn_init_run"]["model"]  # as stage checkpoints recorded it before data settings
    torch.save(stage, tmp_path / "old.ckpt")
    # dbn_init.models.DBN is the config's dbn_init.DBN: the same run
    resumed = main(
        [
            "fit",
            *TINY,
            "--model.hidden",
            "[16]",
            "--model",
            "dbn_init.models.DBN",
            "--ckpt_path",
            str(tmp_path / "old.ckpt"),
            "--trainer.default_root_dir",
            str(tmp_path / "run"),
        ]
    )
    assert resumed.model.pretrained and "test_acc" in resumed.trainer.callback_metrics
    foreign = {k: v for k, v in stage.items() if k != "dbn_init_run"}
    foreign.pop("hyper_parameters", None)
    torch.save(foreign, tmp_path / "foreign.ckpt")
    with pytest.raises(ValueError, match="records no settings of a dbn_init run.*pass it to --model.pretrained"):
        main(
            [
                "fit",
                *TINY,
                "--model.hidden",
                "[16]",
                "--ckpt_path",
                str(tmp_path / "foreign.ckpt"),
                "--trainer.default_root_dir",
                str(tmp_path / "run2"),
            ]
        )


def test_predict_runs_on_new_files_with_the_fit_s_checkpoint_each_into_its_own_file(tmp_path, caplog):
    """After a fit on a CSV, predict with the fit's arguments, a new --data.predict_path and
    --ckpt_path last takes the fit's checkpoint (the file predicted on is no part of the run's
    identity); two inputs predicted in the fit's own folder (no logger) each get their own files,
    and the fit's config.yaml stays as it was."""
    x, y = load_wine(return_X_y=True)
    names = [f"f{i}" for i in range(x.shape[1])]
    table = lambda rows, cols: "\n".join([",".join(cols), *(",".join(map(repr, r)) for r in rows)]) + "\n"  # noqa: E731
    cultivars = ["barolo", "grignolino", "barbera"]  # the classes in sorted order: barbera, barolo, grignolino
    labelled = [",".join([*map(repr, r), cultivars[t]]) for r, t in zip(x.tolist(), y.tolist())]
    (tmp_path / "wine.csv").write_text("\n".join([",".join([*names, "label"]), *labelled]) + "\n")
    (tmp_path / "new1.csv").write_text(table(x[:5].tolist(), names))
    (tmp_path / "new2.csv").write_text(table(x[5:12, ::-1].tolist(), names[::-1]))  # other column order
    (tmp_path / "new3.csv").write_text(table(x[5:12].tolist(), names))  # the same rows in the training order
    args = ["--model", "dbn_init.Baseline", "--model.hidden", "[8]", "--data", "dbn_init.ArrayDataModule",
            "--data.path", str(tmp_path / "wine.csv"), "--data.target", "label", "--data.scaling", "standardize",
            "--trainer.max_epochs", "2", "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
            "--trainer.default_root_dir", str(tmp_path / "run")]  # fmt: skip
    main(["fit", *args])
    config = (tmp_path / "run" / "config.yaml").read_text()
    for new, n in (("new1", 5), ("new2", 7), ("new3", 7)):
        lightning_log = logging.getLogger("lightning.pytorch")  # it does not propagate to pytest's root handler
        lightning_log.addHandler(caplog.handler)
        try:
            main(["predict", *args, "--data.predict_path", str(tmp_path / f"{new}.csv"), "--ckpt_path", "last"])
        finally:
            lightning_log.removeHandler(caplog.handler)
        assert f"predictions written to {tmp_path / 'run' / f'predictions-{new}.csv'}" in caplog.text
        rows = (tmp_path / "run" / f"predictions-{new}.csv").read_text().splitlines()
        assert rows[0] == "index,label,class,p_0,p_1,p_2" and len(rows) == n + 1
        saved = torch.load(tmp_path / "run" / f"predictions-{new}.pt", weights_only=True)
        assert saved["classes"] == ["barbera", "barolo", "grignolino"]
        assert [row.split(",")[2] for row in rows[1:]] == [saved["classes"][k] for k in saved["labels"]]
    assert (tmp_path / "run" / "config.yaml").read_text() == config
    reordered, ordered = (
        torch.load(tmp_path / "run" / f"predictions-{new}.pt", weights_only=True) for new in ("new2", "new3")
    )
    assert torch.equal(reordered["probabilities"], ordered["probabilities"])  # columns matched by name


def test_test_validate_and_predict_take_a_checked_checkpoint_and_refuse_untrained_weights(finished_run, tmp_path):
    root = str(finished_run.parent.parent.parent)  # the default_root_dir of the finished run
    args = [*TINY, "--model.hidden", "[16]", "--trainer.limit_test_batches", "1.0"]
    with pytest.raises(
        UsageError, match="test would score random weights; pass the fine-tuning checkpoint of a run as --ckpt_path"
    ):
        main(["test", *args, "--trainer.default_root_dir", str(tmp_path)])
    assert not (tmp_path / "lightning_logs").exists()  # refused before the Trainer made a run folder
    # 'last' finds the run's fine-tuning checkpoint as fit's 'last' does; the settings decide, not the file;
    # a later run of the same settings stopped during pretraining (a newer stage file) is passed over
    later = finished_run.parent.parent / "version_9" / "checkpoints"
    later.mkdir(parents=True)
    shutil.copy(finished_run / "rbm1-last.ckpt", later / "rbm1-last.ckpt")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tested = main(["test", *args, "--trainer.default_root_dir", root, "--ckpt_path", "last"])
    assert not [w for w in caught if "callbacks used to create the checkpoint" in str(w.message)]  # none to add
    shutil.rmtree(later.parent)
    # a run of these settings that only ever reached pretraining: told so, with the way to finish it
    stopped = tmp_path / "lightning_logs" / "version_0" / "checkpoints"
    stopped.mkdir(parents=True)
    shutil.copy(finished_run / "rbm1-last.ckpt", stopped)
    with pytest.raises(
        ValueError,
        match=r"stopped during pretraining \(stage 1, .*rbm1-last.ckpt\).*finish it first "
        r"\(fit with the same settings and --ckpt_path last\), then test again",
    ):
        main(["test", *args, "--trainer.default_root_dir", str(tmp_path), "--ckpt_path", "last"])
    assert tested.config_init["test"]["ckpt_path"] == str(finished_run / "last.ckpt")
    test_acc = float(tested.trainer.callback_metrics["test_acc"])
    predicted = main(["predict", *args, "--trainer.default_root_dir", root, "--ckpt_path", "last"])
    probabilities = torch.cat(
        predicted.trainer.predict(
            predicted.model, datamodule=predicted.datamodule, ckpt_path=str(finished_run / "last.ckpt")
        )
    )
    labels = predicted.datamodule.test_y
    assert probabilities.shape == (len(labels), 10)
    torch.testing.assert_close(probabilities.sum(1), torch.ones(len(labels)))
    assert (probabilities.argmax(1) == labels).float().mean().item() == pytest.approx(test_acc, abs=1e-6)
    run_dir = Path(predicted.trainer.log_dir)
    saved = torch.load(run_dir / "predictions.pt", weights_only=True)  # what the command kept
    assert torch.equal(saved["indices"], torch.arange(len(labels)))
    assert torch.allclose(saved["probabilities"], probabilities) and torch.equal(
        saved["labels"], probabilities.argmax(1)
    )
    rows = (run_dir / "predictions.csv").read_text().splitlines()
    assert rows[0] == "index,row,label," + ",".join(f"p_{c}" for c in range(10)) and len(rows) == len(labels) + 1
    assert int(rows[1].split(",")[2]) == int(saved["labels"][0])
    # the test split is carved from the digits: each prediction's row among them, as the DataModule holds it
    assert torch.equal(saved["rows"], predicted.datamodule.test_indices[saved["indices"]])
    assert [int(r.split(",")[1]) for r in rows[1:]] == saved["rows"].tolist()
    alone = [
        *args,
        "--trainer.logger",
        "false",
        "--trainer.default_root_dir",
        str(tmp_path / "alone"),
        "--ckpt_path",
        str(finished_run / "last.ckpt"),
    ]
    main(["predict", *alone])
    before = _snapshot(tmp_path / "alone")
    with pytest.raises(
        FileExistsError,
        match=r"already holds predictions.pt and predictions.csv, the predictions of an earlier run on the same input",
    ) as refused:
        main(["predict", *alone])  # without a logger the same folder: refused, not overwritten
    assert _snapshot(tmp_path / "alone") == before
    assert f"--trainer.default_root_dir with --ckpt_path {finished_run / 'last.ckpt'} (a path" in str(refused.value)
    with pytest.raises(ValueError, match=r"(?s)is from another run.*model.hidden") as other:
        main(["predict", *alone, "--model.hidden", "[99]"])
    assert "drop --ckpt_path" not in str(other.value)  # predict needs the weights: no starting afresh
    with pytest.raises(ValueError, match=r"saved during pretraining \(stage 1\).*test needs a fine-tuning checkpoint"):
        main(
            [
                "test",
                *args,
                "--trainer.default_root_dir",
                str(tmp_path),
                "--ckpt_path",
                str(finished_run / "rbm1-last.ckpt"),
            ]
        )
    with pytest.raises(ValueError, match=r"data.scaling: 'unit' in the file, 'standardize' here"):
        main(
            [
                "validate",
                *args,
                "--data.scaling",
                "standardize",
                "--trainer.default_root_dir",
                str(tmp_path),
                "--ckpt_path",
                str(finished_run / "last.ckpt"),
            ]
        )
    with pytest.raises(FileNotFoundError, match=r"--ckpt_path last: no \*last.ckpt under"):
        main(["test", *args, "--trainer.default_root_dir", str(tmp_path / "empty"), "--ckpt_path", "last"])
    # without a logger, test shares the folder with predict's (or fit's) config.yaml and writes nothing there
    for _ in range(2):
        again = main(["test", *alone])
        assert float(again.trainer.callback_metrics["test_acc"]) == pytest.approx(test_acc, abs=1e-6)
    assert _snapshot(tmp_path / "alone") == before
    with pytest.raises(
        ValueError,
        match=r"test needs the weights of a trained run, and no --ckpt_path was given "
        r"\(Baseline would be scored at its untrained start\)",
    ):
        main(["test", *args, "--model", "dbn_init.Baseline", "--trainer.default_root_dir", str(tmp_path / "base")])
    assert not (tmp_path / "base").exists()


@pytest.mark.parametrize("under", ["", "run"])
def test_a_default_root_dir_that_is_a_file_is_refused_before_anything_runs(tmp_path, under):
    (tmp_path / "rootfile").write_text("a file, not a folder\n")
    before = _snapshot(tmp_path)
    with pytest.raises(
        ValueError,
        match=r"--trainer.default_root_dir .*: expected a folder, but .*rootfile is a "
        r"file; pass a folder",
    ):
        main(["fit", *TINY, "--trainer.default_root_dir", str(tmp_path / "rootfile" / under)])
    assert _snapshot(tmp_path) == before


def test_baseline_selected_from_yaml(tmp_path):
    cli = main(
        [
            "fit",
            "--config",
            str(CONFIGS / "quickstart.yaml"),
            "--trainer.fast_dev_run",
            "true",
            "--model",
            "dbn_init.Baseline",
            "--model.init",
            "he_normal",
            "--model.hidden",
            "[32, 32]",
            "--trainer.default_root_dir",
            str(tmp_path),
        ]
    )
    assert isinstance(cli.model, Baseline)
    assert cli.model.hparams.init == "he_normal"
    assert "test_acc" in cli.trainer.callback_metrics


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--model.hiden", "[8]"], "hiden"),  # a typo in a key is refused, not ignored
        (
            ["--model.init_args.pretrain_epochs", "-1"],
            "--model.pretrain_epochs: expected null or an integer in [0, inf)",
        ),
        (["--model.hidden", "[]"], "--model.hidden: expected a list of at least 1 item(s)"),
        (["--model.pretrain_lr", ".inf"], "--model.pretrain_lr: expected a finite number in (0, inf), got inf"),
        (["--model.pretrain_seed", str(2**40)], "--model.pretrain_seed: expected an integer in [0, 4.29497e+09]"),
        # a plain value of the wrong type: jsonargparse's whole report, alternatives and value included
        (["--trainer.limit_train_batches", "abc"], "Expected a <class 'float'>"),
        (["--trainer.limit_train_batches", "abc"], "Given value: abc"),
    ],
)
def test_config_mistakes_are_errors(tmp_path, capsys, extra, message):
    with pytest.raises((SystemExit, ValueError)) as info:
        main(
            [
                "fit",
                "--config",
                str(CONFIGS / "quickstart.yaml"),
                "--trainer.fast_dev_run",
                "true",
                "--trainer.default_root_dir",
                str(tmp_path),
                *extra,
            ]
        )
    assert message in str(info.value) + capsys.readouterr().err


def test_errors_of_the_os_and_of_pil_about_the_user_s_paths_end_the_command_in_one_line(tmp_path, capsys):
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (tmp_path / "images" / label).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(
                tmp_path / "images" / label / f"{i}.png"
            )
    bad = tmp_path / "images" / "b" / "2.png"
    bad.write_bytes(b"not a png")  # a truncated download, say
    runs = tmp_path / "runs"
    cases = [
        (["--config", str(CONFIGS / "image_folder_dbn.yaml"), "--data.init_args.dataset.init_args.root",
          str(tmp_path / "images"), "--trainer.default_root_dir", str(runs)],
         f"error: cannot read the image {bad}: it is corrupt or not an image file; remove or replace it"),
        (["--config", str(CONFIGS / "quickstart.yaml"), "--trainer.default_root_dir", "/proc/dbn_init_runs"],
         "error: No such file or directory: /proc/dbn_init_runs; it does not exist"),  # /proc takes no folders
    ]  # fmt: skip
    for args, message in cases:
        with pytest.raises(SystemExit) as info:
            command(lambda: main(["fit", *args]), "resume it")  # noqa: B023
        assert info.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith(message) and "Traceback" not in "\n".join(err), err[-3:]
    assert not runs.exists()
    with pytest.raises(ZeroDivisionError):  # any other error is a bug, and keeps its traceback
        command(lambda: 1 / 0, "resume it")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_a_device_this_machine_lacks_ends_the_command_with_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", str(CONFIGS / "quickstart.yaml"), "--trainer.accelerator", "gpu",
              "--trainer.default_root_dir", str(tmp_path)])  # fmt: skip
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(err)
    assert err[-1].startswith("error: the Trainer cannot run as configured: ") and "--trainer.accelerator" in err[-1]
    assert not (tmp_path / "lightning_logs").exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (
            ["--data.val_fraction", "1"],
            "DigitsDataModule: --data.val_fraction: expected a finite number in [0, 1), got 1.0",
        ),
        (["--model.cd_k", "0"], "DBN: --model.cd_k: expected an integer in [1, inf), got 0"),
        (["--model.lr", "-1"], "DBN: --model.lr: expected a finite number in (0, inf), got -1.0"),
        # typos and values outside a class's choice: what the class's parser found, without the union report
        (
            ["--model.hiden", "[8]"],
            """Parser key "model": Problem with given class_path 'dbn_init.DBN': Option 'hiden' is """
            "not accepted",
        ),
        (
            ["--data.batch_sz", "3"],
            """Parser key "data": Problem with given class_path 'dbn_init.DigitsDataModule': """
            "Option 'batch_sz' is not accepted",
        ),
        (
            ["--model", "dbn_init.Baseline", "--model.init", "xavier"],
            """Parser key "model": Problem with given class_path 'dbn_init.Baseline': Parser key "init": Expected a """
            "typing.Literal['xavier_uniform', ",
        ),
    ],
)
def test_a_usage_error_ends_the_command_with_the_class_or_options_own_message(tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", str(CONFIGS / "quickstart.yaml"), "--trainer.default_root_dir", str(tmp_path), *extra])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"error: {message}" in err and "Union" not in err and "NoneType" not in err, err


@pytest.mark.parametrize(
    "config, extra, hint",
    [
        (
            "model:\n  hiden: [8]\n",
            [],
            "Option 'hiden' is not accepted Given value: {'hiden': [8]}; did you mean 'hidden'?",
        ),
        ("trainr:\n  max_epochs: 2\n", [], "option 'trainr.max_epochs'; did you mean 'trainer.max_epochs'?"),
        ("", ["--trainer.max_epochz", "2"], "--trainer.max_epochz 2; did you mean '--trainer.max_epochs'?"),
    ],
)
def test_a_typo_in_a_config_file_or_a_flag_is_one_line_naming_the_nearest_option(tmp_path, capsys, config, extra, hint):
    (tmp_path / "typo.yaml").write_text(config or "{}\n")
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", str(CONFIGS / "quickstart.yaml"), "--config", str(tmp_path / "typo.yaml"), *extra])
    err = capsys.readouterr().err
    assert info.value.code == 2 and hint in err, err
    assert err.splitlines()[-1].startswith("error: ") and len(err.splitlines()) == 2, err  # the tip, then the error


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_train_config_instantiates(path, tmp_path):
    config = yaml.safe_load(path.read_text())
    if "model" not in config:  # comparison configs are checked in test_compare
        pytest.skip("not a train.py config")
    extra = []
    if "image_folder" in path.name:  # the patches its comment says to write first
        from dbn_init.experiments.make_image_folder import write_image_folder

        write_image_folder(tmp_path / "patches")
        extra = ["--data.init_args.dataset.init_args.root", str(tmp_path / "patches")]
    cli = DBNCLI(
        Classifier,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        run=False,
        args=["--config", str(path), *extra],
    )
    assert cli.model.hparams.hidden == config["model"]["init_args"]["hidden"]


def test_fit_exports_the_pretrained_stack_and_a_second_fit_imports_it(tmp_path):
    quick = [
        "fit",
        "--config",
        str(CONFIGS / "quickstart.yaml"),
        "--model.pretrain_epochs",
        "1",
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_train_batches",
        "3",
        "--trainer.limit_val_batches",
        "2",
        "--trainer.limit_test_batches",
        "2",
    ]
    first = main([*quick, "--trainer.default_root_dir", str(tmp_path / "a")])
    exported = Path(first.trainer.log_dir) / "pretrained.safetensors"
    assert exported.is_file()
    # another seed: pretraining again would give other RBMs, so equal ones were imported
    second = main(
        [
            *quick,
            "--trainer.default_root_dir",
            str(tmp_path / "b"),
            "--model.pretrained",
            str(exported),
            "--seed_everything",
            "1",
        ]
    )
    for a, b in zip(first.model.rbms, second.model.rbms):  # imported, not pretrained again
        assert torch.equal(a.weight, b.weight) and torch.equal(a.hidden_bias, b.hidden_bias)


def test_importing_a_stack_of_the_wrong_shape_is_refused_before_training(tmp_path):
    from dbn_init.io import save_stack
    from dbn_init.rbm import RBM

    path = save_stack([RBM(64, 100)], tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match=r"hidden sizes \[100\] do not match hidden=\[256, 256\]"):
        main(
            [
                "fit",
                "--config",
                str(CONFIGS / "quickstart.yaml"),
                "--trainer.fast_dev_run",
                "true",
                "--trainer.default_root_dir",
                str(tmp_path),
                "--model.pretrained",
                str(path),
            ]
        )
    assert not list(tmp_path.rglob("*.ckpt"))  # refused before any stage trained


FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.slow
@pytest.mark.skipif(not FASHION.is_dir(), reason="needs `apt-get install dataset-fashion-mnist`")
def test_fashion_mnist_dbn_smoke_run_on_the_debian_folder(tmp_path):
    cli = main(
        [
            "fit",
            "--config",
            str(CONFIGS / "fashion_mnist_dbn.yaml"),
            "--data.root",
            str(FASHION),
            "--data.download",
            "false",
            "--model.hidden",
            "[128]",
            "--model.pretrain_epochs",
            "1",
            "--trainer.max_epochs",
            "1",
            "--trainer.limit_train_batches",
            "100",
            "--trainer.limit_val_batches",
            "10",
            "--trainer.limit_test_batches",
            "20",
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.default_root_dir",
            str(tmp_path),
        ]
    )
    assert cli.model.pretrained
    assert cli.trainer.callback_metrics["test_acc"] > 0.6  # 10 classes: chance is 0.1


def test_a_usage_error_found_at_run_time_is_one_line_and_exit_status_2(tmp_path):
    """train.py's entry point: a --ckpt_path that does not exist is found after parsing, when the
    run looks for it; the user sees one line naming it, no traceback."""
    proc = subprocess.run(
        [
            sys.executable,
            str(CONFIGS.parent / "train.py"),
            "fit",
            "--config",
            "quickstart.yaml",
            "--trainer.default_root_dir",
            str(tmp_path),
            "--ckpt_path",
            str(tmp_path / "nope.ckpt"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert (
        proc.stderr.strip().splitlines()[-1] == f"error: --ckpt_path {tmp_path / 'nope.ckpt'} does not exist; pass a "
        ".ckpt file or 'last'"
    )


@pytest.mark.slow
def test_the_console_script_from_a_built_wheel_runs_a_shipped_config_from_another_folder(tmp_path):
    """An editable install hides packaging mistakes: build the wheel, install it in a fresh
    environment (dependencies from this one), and run `dbn-init fit --config quickstart.yaml`
    where no configs/ folder exists."""
    # from a copy of the sources: a build/ folder left in the checkout could carry stale modules into the wheel
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(CONFIGS.parent / name, source)
    for name in ("dbn_init", "configs"):
        shutil.copytree(CONFIGS.parent / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    wheel_command = [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-q", "-w"]
    subprocess.run([*wheel_command, str(tmp_path / "dist")], check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("dbn_init-*.whl")
    env_dir = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True, timeout=120)
    # This interpreter's packages (torch, lightning...) for the new one: a path file, since
    # --system-site-packages made from inside a virtual environment would see the base interpreter's.
    ours = {sysconfig.get_paths()[kind] for kind in ("purelib", "platlib")}
    (theirs,) = (env_dir / "lib").glob("python*/site-packages")
    (theirs / "outer.pth").write_text("\n".join(sorted(ours)) + "\n")
    subprocess.run(
        [str(env_dir / "bin" / "pip"), "install", "--no-deps", "-q", str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    work = tmp_path / "elsewhere"
    work.mkdir()
    proc = subprocess.run(
        [
            str(env_dir / "bin" / "dbn-init"),
            "fit",
            "--config",
            "quickstart.yaml",
            "--trainer.fast_dev_run",
            "true",
            "--model.hidden",
            "[16]",
        ],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "test_acc" in proc.stdout + proc.stderr
    where = subprocess.run(
        [str(env_dir / "bin" / "python"), "-c", "import dbn_init; print(dbn_init.__file__)"],
        cwd=work,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert str(env_dir) in where  # the wheel's copy ran, not the repository's


def test_a_plain_lightning_datamodule_trains_a_dbn_through_the_cli(tmp_path, monkeypatch):
    """No input_size or num_classes declared: the DBN takes them from the data (the first batch's
    width, the largest label), pretrains on the train loader, fine-tunes and tests."""
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    cli = main(
        [
            "fit",
            "--seed_everything",
            "0",
            "--model",
            "dbn_init.DBN",
            "--model.hidden",
            "[32]",
            "--model.pretrain_epochs",
            "5",
            "--data",
            "_plain_datamodule.PlainDigits",
            "--trainer.max_epochs",
            "10",
            "--trainer.default_root_dir",
            str(tmp_path),
            "--trainer.logger",
            "false",
        ]
    )
    assert cli.model.pretrained and (cli.model.hparams.input_size, cli.model.hparams.num_classes) == (64, 10)
    assert cli.trainer.callback_metrics["test_acc"] > 0.6  # chance is 0.1; 10 epochs of Adam 1e-3 on a sigmoid net
    assert (tmp_path / "checkpoints" / "rbm1-last.ckpt").is_file()


def test_trainer_fit_from_python_ends_where_train_py_ends_for_the_same_seed(tmp_path):
    """The same DBN, data and Trainer settings: train.py's fit (stage Trainers with checkpoints
    and pictures) and a plain Trainer(...).fit(dbn, datamodule=dm) give the same weights, bit for bit."""
    config = tmp_path / "small.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "seed_everything": 0,
                "trainer": {"max_epochs": 2, "deterministic": True, "logger": False},
                "model": {"class_path": "dbn_init.DBN", "init_args": {"hidden": [32, 16], "pretrain_epochs": 2}},
                "data": {"class_path": "dbn_init.DigitsDataModule", "init_args": {"batch_size": 32}},
            }
        )
    )
    cli = main(["fit", "--config", str(config), "--trainer.default_root_dir", str(tmp_path / "cli")])
    final = cli.trainer.checkpoint_callback  # the default ModelCheckpoint: its file is the last epoch's
    cli_state = torch.load(final.best_model_path, weights_only=True)["state_dict"]

    seed_everything(0)
    model = DBN(input_size=None, num_classes=None, hidden=[32, 16], pretrain_epochs=2)
    trainer = Trainer(max_epochs=2, deterministic=True, logger=False, default_root_dir=tmp_path / "py")
    trainer.fit(model, datamodule=DigitsDataModule(batch_size=32))
    assert model.pretrained
    for key, value in model.state_dict().items():
        assert torch.equal(value, cli_state[key]), key


@pytest.mark.slow
def test_two_runs_started_together_in_one_folder_each_get_their_own_version(tmp_path):
    """Two train.py fits at the same moment, same default_root_dir, a logger: each claims its own
    version folder before it writes anything, so neither overwrites the other, and both end."""
    command = [sys.executable, str(CONFIGS.parent / "train.py"), "fit", "--config", "quickstart.yaml",
               "--model.hidden", "[16]", "--model.pretrain_epochs", "1", "--trainer.max_epochs", "1",
               "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp_path)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    runs = [subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True) for _ in range(2)]  # fmt: skip
    errors = [run.communicate(timeout=300)[1] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [e[-2000:] for e in errors]
    versions = sorted(p.name for p in (tmp_path / "lightning_logs").iterdir())
    assert versions == ["version_0", "version_1"]
    for version in versions:
        folder = tmp_path / "lightning_logs" / version
        assert (folder / "config.yaml").is_file() and (folder / "pretrained.safetensors").is_file()
        assert {p.name for p in (folder / "checkpoints").glob("*last.ckpt")} == {"rbm1-last.ckpt", "last.ckpt"}


def test_a_version_is_claimed_by_creating_its_folder_so_a_run_that_looked_at_the_same_time_takes_the_next(tmp_path):
    from lightning.pytorch.loggers import TensorBoardLogger

    from dbn_init.runs import claim_version

    first, second = TensorBoardLogger(tmp_path), TensorBoardLogger(tmp_path)
    looked = second._get_next_version()  # both look before either claims: both see version 0 free
    claim_version(first)
    second._get_next_version = lambda: looked
    claim_version(second)
    assert (first.version, second.version) == (0, 1)
    assert sorted(p.name for p in (tmp_path / "lightning_logs").iterdir()) == ["version_0", "version_1"]
    fixed = TensorBoardLogger(tmp_path, version=7)
    claim_version(fixed)  # a version the user chose is left as it is
    assert fixed.version == 7


def test_a_refused_run_gives_back_only_its_own_version_and_the_empty_folders_it_made(tmp_path):
    """Two runs start in a fresh root: the first makes the root, the second takes version_1; the
    first, refused, removes its version_0 and its .run, and keeps the root the second lives in."""
    from lightning.pytorch.loggers import TensorBoardLogger

    from dbn_init.runs import _release, claim_version

    root = tmp_path / "fresh"
    first, second = TensorBoardLogger(root), TensorBoardLogger(root)
    created = claim_version(first)
    claim_version(second)
    assert created == root and (first.version, second.version) == (0, 1)
    (root / "lightning_logs" / "version_1" / "events").write_text("the second run's")
    elsewhere = tmp_path / "checkpoints"  # a ModelCheckpoint(dirpath=...) outside the version folder
    elsewhere.mkdir()
    (elsewhere / ".run").touch()
    _release(elsewhere, Path(first.log_dir), created)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        "fresh",
        "fresh/lightning_logs",
        "fresh/lightning_logs/version_1",
        "fresh/lightning_logs/version_1/events",
    ]
    alone = TensorBoardLogger(tmp_path / "alone")
    _release(tmp_path / "none", Path(alone.log_dir) if claim_version(alone) else None, tmp_path / "alone")
    assert not (tmp_path / "alone").exists()  # a run alone gives back every folder it made


def test_a_run_whose_sizes_come_from_the_data_resumes_and_is_tested_by_its_checkpoint(tmp_path, monkeypatch):
    """The model is built with sizes None (a plain DataModule declares none): --ckpt_path last
    still finds the run (the sizes follow from the data), builds the model as the run was built,
    and test reads the same checkpoint."""
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    args = ["--seed_everything", "0", "--model", "dbn_init.DBN", "--model.hidden", "[16]",
            "--model.pretrain_epochs", "1", "--data", "_plain_datamodule.PlainDigits",
            "--trainer.default_root_dir", str(tmp_path), "--trainer.logger", "false"]  # fmt: skip
    first = main(["fit", *args, "--trainer.max_epochs", "1"])
    resumed = main(["fit", *args, "--trainer.max_epochs", "2", "--ckpt_path", "last"])
    assert resumed.trainer.current_epoch == 2 and resumed.model.hparams.input_size == 64
    assert not torch.equal(first.model.mlp.head.weight, resumed.model.mlp.head.weight)  # it went on training
    tested = main(["test", *args, "--ckpt_path", "last"])
    assert tested.trainer.callback_metrics["test_acc"] == pytest.approx(
        float(resumed.trainer.callback_metrics["test_acc"]), abs=1e-6)  # fmt: skip


def test_shipped_configs_are_found_by_name_in_each_spelling(tmp_path, monkeypatch):
    from dbn_init.configs import shipped

    monkeypatch.chdir(tmp_path)
    spellings = (["--config", "quickstart.yaml"], ["--config=quickstart.yaml"], ["-c", "quickstart.yaml"])
    for spelling in (*spellings, ["--config", "quickstart"]):
        resolved = shipped(["fit", *spelling])
        assert resolved != ["fit", *spelling] and resolved[-1].endswith("quickstart.yaml")
        assert Path(resolved[-1].removeprefix("--config=")).is_file()
    (tmp_path / "quickstart.yaml").write_text("seed_everything: 1\n")  # a file of the user's own wins
    assert shipped(["fit", "--config", "quickstart.yaml"]) == ["fit", "--config", "quickstart.yaml"]


def test_a_mistyped_config_name_is_one_line_naming_the_nearest_shipped_config(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", "configs/quickstrt.yaml"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and len(err.splitlines()) == 2, err
    assert "File does not exist" in err and err.rstrip().endswith("did you mean 'quickstart.yaml'?"), err


def test_of_two_runs_that_pass_the_folder_check_together_the_second_refuses(tmp_path):
    """Without a logger two runs share one folder: the check and the claim are one step, an
    exclusive creation, so a second run that looked at the same moment refuses instead of
    overwriting the first's checkpoints."""
    from dbn_init.runs import check_run_folder

    run, checkpoints = tmp_path / "run", tmp_path / "run" / "checkpoints"
    check_run_folder(tmp_path, run, checkpoints, None, claim=False)  # both look: the folder is free
    check_run_folder(tmp_path, run, checkpoints, None)  # the first claims it
    with pytest.raises(FileExistsError, match=r"another run started in the run folder .* at the same moment"):
        from dbn_init.runs import _claim

        _claim(checkpoints, run)  # the second, having passed the look, claims after
    with pytest.raises(FileExistsError, match=r"already holds an earlier run's outputs \(checkpoints\)"):
        check_run_folder(tmp_path, run, checkpoints, None)  # a later run sees the first's claim


def test_a_missing_pretrained_stack_is_one_line_and_exit_status_2(tmp_path):
    """--model.pretrained is read when the fit starts pretraining: still a usage error, not a traceback."""
    proc = subprocess.run([sys.executable, str(CONFIGS.parent / "train.py"), "fit", "--config", "quickstart.yaml",
                           "--trainer.default_root_dir", str(tmp_path), "--trainer.fast_dev_run", "true",
                           "--model.pretrained", str(tmp_path / "nope.safetensors")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: --model.pretrained: no such file: {tmp_path}")


def test_a_stage_draws_pictures_only_of_images_it_can_draw(tmp_path):
    """Inputs of 2 or 4 channels (a dataset of numpy arrays) have an image_shape but no picture: the
    run pretrains without RBMPictures rather than failing at the end of stage 1."""
    fit = Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, max_epochs=1)
    for shape, drawn in (((8, 8), True), ((1, 8, 8), True), ((3, 8, 8), True), ((4, 8, 8), False), ((2, 8, 8), False)):
        stage = CLIStageTrainers({}, tmp_path, {}, shape)(fit, 0, 1)
        assert any(isinstance(c, RBMPictures) for c in stage.callbacks) == drawn, shape
