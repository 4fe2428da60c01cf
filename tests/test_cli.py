"""The Lightning CLI on the shipped configs: real Trainer runs, real errors."""

from pathlib import Path

import pytest
import torch
import yaml

from dbn_init import DBN, Baseline
from dbn_init.cli import DBNCLI, main
from dbn_init.data import ImageDataModule
from dbn_init.models import Classifier

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def test_quickstart_config_runs_pretraining_fine_tuning_and_test_with_fast_dev_run(tmp_path):
    cli = main(["fit", "--config", str(CONFIGS / "quickstart.yaml"), "--trainer.fast_dev_run", "true",
                "--trainer.default_root_dir", str(tmp_path)])
    assert isinstance(cli.model, DBN)
    assert cli.model.pretrained
    assert cli.model.hparams.input_size == 64  # linked from the DataModule
    assert "test_acc" in cli.trainer.callback_metrics


def test_fine_tuning_only_trainer_options_stay_out_of_the_pretraining_stages(tmp_path):
    # The stages step CD themselves (manual optimization), where Lightning refuses gradient
    # clipping and accumulation; the fine-tuning fit still gets them.
    cli = main(["fit", "--config", str(CONFIGS / "quickstart.yaml"), "--trainer.fast_dev_run", "true",
                "--trainer.gradient_clip_val", "1.0", "--trainer.accumulate_grad_batches", "2",
                "--trainer.default_root_dir", str(tmp_path)])
    assert cli.model.pretrained and cli.trainer.gradient_clip_val == 1.0
    assert cli.trainer.accumulate_grad_batches == 2


def test_without_a_logger_the_pretraining_stages_log_nowhere_either(tmp_path):
    # A stage Trainer given logger=None would make Lightning's default TensorBoard logger.
    cli = main(["fit", "--config", str(CONFIGS / "quickstart.yaml"), "--trainer.logger", "false",
                "--trainer.max_epochs", "1", "--model.pretrain_epochs", "1", "--trainer.limit_train_batches", "2",
                "--trainer.limit_val_batches", "2", "--trainer.limit_test_batches", "2",
                "--trainer.default_root_dir", str(tmp_path)])
    assert cli.model.pretrained and cli.trainer.loggers == []
    assert not (tmp_path / "lightning_logs").exists()
    assert (tmp_path / "checkpoints" / "rbm2-last.ckpt").is_file()  # the stages still checkpoint


def test_ckpt_path_last_resumes_only_a_run_of_the_same_model_and_settings(tmp_path):
    dbn = ["--config", str(CONFIGS / "quickstart.yaml"), "--model.hidden", "[16]", "--model.pretrain_epochs", "1",
           "--trainer.default_root_dir", str(tmp_path)]
    main(["fit", *dbn, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2",
          "--trainer.limit_val_batches", "2", "--trainer.limit_test_batches", "2"])
    checkpoints = tmp_path / "lightning_logs" / "version_0" / "checkpoints"  # rbm1-last.ckpt, then last.ckpt

    def resolved(*args):
        cli = DBNCLI(Classifier, ImageDataModule, subclass_mode_model=True, subclass_mode_data=True, args=list(args),
                     run=False)
        return cli.resolve_resume("last")

    assert resolved(*dbn) == checkpoints / "last.ckpt"
    # experiments sharing the folder are not picked up: another model, or the same one with other settings
    baseline = [dbn[0], dbn[1], "--model", "dbn_init.Baseline", "--model.hidden", "[16]", *dbn[-2:]]
    for other in (baseline, [*dbn, "--model.pretrain_lr", "0.05"]):
        with pytest.warns(UserWarning, match=r"2 \*last.ckpt, none from a run of this model with these settings"):
            assert resolved(*other) is None
    (checkpoints / "last.ckpt").unlink()  # as if the run had stopped after its stage
    assert resolved(*dbn) == checkpoints / "rbm1-last.ckpt"


def test_baseline_selected_from_yaml(tmp_path):
    cli = main(["fit", "--config", str(CONFIGS / "quickstart.yaml"), "--trainer.fast_dev_run", "true",
                "--model", "dbn_init.Baseline", "--model.init", "he_normal", "--model.hidden", "[32, 32]",
                "--trainer.default_root_dir", str(tmp_path)])
    assert isinstance(cli.model, Baseline)
    assert cli.model.hparams.init == "he_normal"
    assert "test_acc" in cli.trainer.callback_metrics


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--model.hiden", "[8]"], "hiden"),  # a typo in a key is refused, not ignored
        (["--model.init_args.pretrain_epochs", "-1"], "non-negative"),
        (["--model.hidden", "[]"], "at least one hidden"),
    ],
)
def test_config_mistakes_are_errors(tmp_path, capsys, extra, message):
    with pytest.raises((SystemExit, ValueError)) as info:
        main(["fit", "--config", str(CONFIGS / "quickstart.yaml"), "--trainer.fast_dev_run", "true",
              "--trainer.default_root_dir", str(tmp_path), *extra])
    assert message in str(info.value) + capsys.readouterr().err


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_train_config_instantiates(path):
    config = yaml.safe_load(path.read_text())
    if "model" not in config:  # comparison configs are checked in test_compare
        pytest.skip("not a train.py config")
    cli = DBNCLI(Classifier, ImageDataModule, subclass_mode_model=True, subclass_mode_data=True, run=False,
                 args=["--config", str(path)])
    assert cli.model.hparams.hidden == config["model"]["init_args"]["hidden"]


def test_fit_exports_the_pretrained_stack_and_a_second_fit_imports_it(tmp_path):
    quick = ["fit", "--config", str(CONFIGS / "quickstart.yaml"), "--model.pretrain_epochs", "1",
             "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "2",
             "--trainer.limit_test_batches", "2"]
    first = main([*quick, "--trainer.default_root_dir", str(tmp_path / "a")])
    exported = Path(first.trainer.log_dir) / "pretrained.safetensors"
    assert exported.is_file()
    # another seed: pretraining again would give other RBMs, so equal ones were imported
    second = main([*quick, "--trainer.default_root_dir", str(tmp_path / "b"), "--model.pretrained", str(exported),
                   "--seed_everything", "1"])
    for a, b in zip(first.model.rbms, second.model.rbms):  # imported, not pretrained again
        assert torch.equal(a.weight, b.weight) and torch.equal(a.hidden_bias, b.hidden_bias)


def test_importing_a_stack_of_the_wrong_shape_is_refused_before_training(tmp_path):
    from dbn_init.io import save_stack
    from dbn_init.rbm import RBM

    path = save_stack([RBM(64, 100)], tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match=r"hidden sizes \[100\] do not match hidden=\[256, 256\]"):
        main(["fit", "--config", str(CONFIGS / "quickstart.yaml"), "--trainer.fast_dev_run", "true",
              "--trainer.default_root_dir", str(tmp_path), "--model.pretrained", str(path)])
    assert not list(tmp_path.rglob("*.ckpt"))  # refused before any stage trained


FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.slow
@pytest.mark.skipif(not FASHION.is_dir(), reason="needs `apt-get install dataset-fashion-mnist`")
def test_fashion_mnist_dbn_smoke_run_on_the_debian_folder(tmp_path):
    cli = main(["fit", "--config", str(CONFIGS / "fashion_mnist_dbn.yaml"), "--data.root", str(FASHION),
                "--data.download", "false", "--model.hidden", "[128]", "--model.pretrain_epochs", "1",
                "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "100", "--trainer.limit_val_batches", "10",
                "--trainer.limit_test_batches", "20", "--trainer.enable_progress_bar", "false",
                "--trainer.default_root_dir", str(tmp_path)])
    assert cli.model.pretrained
    assert cli.trainer.callback_metrics["test_acc"] > 0.6  # 10 classes: chance is 0.1
