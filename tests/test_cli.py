"""The Lightning CLI on the shipped configs: real Trainer runs, real errors."""

from pathlib import Path

import pytest
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
