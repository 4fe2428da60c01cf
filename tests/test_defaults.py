"""The defaults: a named recipe, unit types and sizes that follow the data, budgets that scale with
it, and README.md's CSV command reaching the Xavier baseline's accuracy."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch import Callback, LightningDataModule, Trainer, seed_everything
from sklearn.datasets import load_breast_cancer, load_digits, load_wine
from torch.utils.data import DataLoader, TensorDataset

from dbn_init import DBN, ArrayDataModule, pretrain_stack
from dbn_init.constraints import UsageError
from dbn_init.data.base import batch_size_for
from dbn_init.io import load_stack, save_stack
from dbn_init.mlp import MLP
from dbn_init.models import RECIPES, visible_units_for
from dbn_init.pretrain import NORMALISED_STEP, CDSettings, PretrainData, RBMStage, make_trainer, pretrain
from dbn_init.rbm import RBM, GaussianRBM, down_pass, up_pass

ROOT = Path(__file__).resolve().parent.parent


def _quiet(epochs: int, **options) -> Trainer:
    return Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                   enable_model_summary=False, **options)  # fmt: skip


def test_the_recipe_fills_the_options_left_none_and_an_explicit_value_wins():
    assert {k: DBN().hparams[k] for k in RECIPES["relu"]} == RECIPES["relu"]
    textbook = DBN(recipe="textbook", dropout=0.1)
    assert (textbook.hparams.hidden_units, textbook.hparams.pretrain_lr, textbook.hparams.dropout) == (
        "sigmoid",
        0.1,
        0.1,
    )
    assert textbook.mlp is None and textbook.dropout == 0.1 and textbook.activation == "sigmoid"
    with pytest.raises(UsageError, match=r"model.recipe: expected one of .*'relu'.*got 'modern'"):
        DBN(recipe="modern")
    with pytest.raises(
        UsageError, match=r"hidden_units is relu \(the default recipe's is relu\).*set model.hidden_units sigmoid"
    ):
        DBN(centring=True)
    assert DBN(centring=True, hidden_units="sigmoid").hparams.centring  # the fix the message names


def test_a_fitted_checkpoint_records_the_resolved_values_and_rebuilds_the_same_network(tmp_path):
    x, y = load_wine(return_X_y=True)
    seed_everything(0)
    dm = ArrayDataModule(x, y)  # standardised by default
    model = DBN(hidden=[8], pretrain_epochs=1)
    trainer = Trainer(max_epochs=1, default_root_dir=tmp_path, enable_progress_bar=False, logger=False)
    trainer.fit(model, datamodule=dm)
    saved = torch.load(trainer.checkpoint_callback.best_model_path, weights_only=True)["hyper_parameters"]
    assert saved["visible_units"] == "gaussian" and saved["hidden_units"] == "relu" and saved["dropout"] == 0.2
    assert (saved["input_size"], saved["num_classes"]) == (13, 3)
    loaded = DBN.load_from_checkpoint(trainer.checkpoint_callback.best_model_path).eval()
    assert isinstance(loaded.rbms[0], GaussianRBM)
    model.eval()
    with torch.no_grad():
        assert torch.equal(loaded(dm.test_x), model(dm.test_x))


class _Rows(LightningDataModule):
    """A user's own DataModule that declares no scaling: batches of ``x`` (and labels)."""

    def __init__(self, x: torch.Tensor) -> None:
        super().__init__()
        self.x = x

    def train_dataloader(self):
        return DataLoader(TensorDataset(self.x, torch.arange(len(self.x)) % 2), batch_size=16)


def test_visible_units_follow_the_data_s_scaling_or_its_first_batch():
    x, y = load_wine(return_X_y=True)
    for scaling, units in (("standardize", "gaussian"), ("unit", "bernoulli")):
        dm = ArrayDataModule(x, y, scaling=scaling)
        dm.setup("fit")
        assert visible_units_for(dm) == units
    pixels = torch.rand(64, 5)
    assert visible_units_for(_Rows(pixels)) == "bernoulli"
    assert visible_units_for(_Rows(pixels * 4 - 2)) == "gaussian"


def test_a_dbn_built_with_sizes_takes_the_data_s_units_and_keeps_its_start():
    x, y = load_wine(return_X_y=True)
    dm = ArrayDataModule(x, y)
    dm.setup("fit")
    seed_everything(0)
    model = DBN(input_size=13, num_classes=3, hidden=[8], pretrain_epochs=1)
    assert type(model.rbms[0]) is RBM  # Bernoulli until it sees data
    start = model.rbms[0].weight.clone()
    model.build_for(dm)
    assert isinstance(model.rbms[0], GaussianRBM) and model.hparams.visible_units == "gaussian"
    assert torch.equal(model.rbms[0].weight, start) and not model.rbms[0].weight.requires_grad


def test_bernoulli_units_set_explicitly_on_standardised_data_are_refused_in_one_line():
    x, y = load_wine(return_X_y=True)
    model = DBN(hidden=[8], pretrain_epochs=1, visible_units="bernoulli")
    with pytest.raises(UsageError, match=r"Bernoulli visible units expect probabilities in \[0, 1\]"):
        pretrain(model, ArrayDataModule(x, y), lambda stage, epochs: make_trainer(epochs))


def test_the_cli_refuses_bernoulli_units_on_unscaled_data_in_its_own_words(tmp_path):
    """One line in train.py's words; the run refused leaves its folder free for the corrected command."""
    from dbn_init.cli import main

    args = ["fit", "--model", "dbn_init.DBN", "--model.hidden", "[8]", "--model.visible_units", "bernoulli",
            "--model.pretrain_epochs", "1", "--trainer.max_epochs", "1", "--data", "dbn_init.ArrayDataModule",
            "--data.loader", "sklearn.datasets.load_wine", "--trainer.logger", "false",
            "--trainer.default_root_dir", str(tmp_path)]  # fmt: skip
    with pytest.raises(UsageError, match=r"expect probabilities in \[0, 1\].*\(--data.scaling unit\)") as refused:
        main([*args, "--data.scaling", "none"])
    assert "\n" not in str(refused.value)
    assert main([*args, "--data.scaling", "unit"]).model.pretrained


def test_a_refused_run_gives_back_the_version_folder_its_logger_numbered(tmp_path):
    """With a logger, the refused run's ``version_N`` goes, the finished run beside it stays, and
    the corrected command takes the number the refused one had."""
    from dbn_init.cli import main

    args = ["fit", "--model.hidden", "[8]", "--model.visible_units", "bernoulli", "--model.pretrain_epochs", "1",
            "--trainer.max_epochs", "1", "--data", "dbn_init.ArrayDataModule", "--data.loader",
            "sklearn.datasets.load_wine", "--trainer.default_root_dir", str(tmp_path)]  # fmt: skip
    main([*args, "--data.scaling", "unit"])
    finished = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(UsageError, match=r"expect probabilities in \[0, 1\]"):
        main([*args, "--data.scaling", "none"])
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == finished
    assert main([*args, "--data.scaling", "unit"]).trainer.log_dir.endswith("version_1")


def test_the_cli_without_a_model_fits_the_dbn_with_its_defaults(tmp_path):
    from dbn_init.cli import main

    cli = main(["fit", "--model.hidden", "[8]", "--model.pretrain_epochs", "1", "--trainer.max_epochs", "1",
                "--data", "dbn_init.ArrayDataModule", "--data.loader", "sklearn.datasets.load_wine",
                "--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path)])  # fmt: skip
    assert type(cli.model) is DBN and cli.model.pretrained
    assert cli.model.hparams.recipe == DBN().hparams.recipe and cli.model.hparams.visible_units == "gaussian"


def test_two_classes_need_no_num_classes():
    x, y = load_breast_cancer(return_X_y=True)
    seed_everything(0)
    model = DBN(hidden=[16], pretrain_epochs=1)
    _quiet(1).fit(model, datamodule=ArrayDataModule(x, y))
    assert model.mlp.head.out_features == 2 and model.hparams.num_classes == 2


def test_batch_sizes_suit_the_rows_for_pretraining_and_for_the_labelled_rows_apart():
    assert [batch_size_for(n) for n in (10, 115, 1293, 5000, 54000)] == [16, 16, 26, 100, 100]
    x, y = load_wine(return_X_y=True)
    dm = ArrayDataModule(x, y)
    dm.setup("fit")
    assert (len(dm.pretrain_x), dm.batch_size, dm.train_batch_size) == (128, 16, 16)
    assert len(dm.train_dataloader()) == 8
    few = ArrayDataModule(np.tile(x, (10, 1)), np.tile(y, 10), num_labels=30)
    few.setup("fit")
    assert (few.batch_size, few.train_batch_size) == (26, 16)  # 1,282 pretraining rows, 30 labelled
    chosen = ArrayDataModule(x, y, batch_size=50)
    chosen.setup("fit")
    assert (chosen.batch_size, chosen.train_batch_size) == (50, 50)


class _Momenta(Callback):
    """Per stage epoch: the momentum and rate the stage trains with, and whether it validated."""

    def __init__(self) -> None:
        self.momenta, self.validated = [], []

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if batch_idx == 0:
            self.momenta.append(module.optimizers().optimizer.param_groups[0]["momentum"])

    def on_validation_epoch_end(self, trainer, module) -> None:
        if not trainer.sanity_checking:
            self.validated.append(trainer.current_epoch)


def test_small_data_stretch_the_default_epochs_to_the_cd_updates_and_the_schedule_with_them():
    """128 wine rows in batches of 16 make 8 updates an epoch: 200 updates need 3 x 10 epochs, the
    momentum switches after 3 x 5 of them, and the stage validates after every third epoch."""
    x, y = load_wine(return_X_y=True)
    model = DBN(hidden=[8], pretrain_updates=200)
    seen = []

    def trainers(stage, epochs):
        seen.append(epochs)
        seen.append(callback := _Momenta())
        return make_trainer(epochs, callbacks=[callback])

    pretrain(model, ArrayDataModule(x, y), trainers)
    epochs, callback = seen
    assert epochs == 30
    assert callback.momenta == [0.5] * 15 + [0.9] * 15
    assert callback.validated == list(range(2, 30, 3))


def test_large_data_and_explicit_epochs_keep_their_epochs():
    options = dict(DBN().hparams)
    assert CDSettings(options, 2).stretch(0, 540) == 1  # Fashion-MNIST: 10 epochs of 540 updates
    assert CDSettings(options, 2).stretch(0, 8) == 25  # wine: 2,000 updates
    assert CDSettings({**options, "pretrain_epochs": 3}, 2).stretch(0, 8) == 1  # as asked
    assert CDSettings({**options, "pretrain_updates": 0}, 2).stretch(0, 8) == 1


def test_pretrain_stack_takes_the_recipe_and_the_units_that_suit_x():
    x = torch.tensor(load_wine().data, dtype=torch.float32)
    standardised = (x - x.mean(0)) / x.std(0)
    rbms = pretrain_stack(standardised, [8, 4], epochs=1)
    assert isinstance(rbms[0], GaussianRBM) and rbms[0].hidden_units == "relu"
    rbms = pretrain_stack((x - x.min(0).values) / (x.max(0).values - x.min(0).values), [8], epochs=1, recipe="textbook")
    assert type(rbms[0]) is RBM and rbms[0].hidden_units == "sigmoid"
    with pytest.raises(ValueError, match=r"values in \[0, 16\].* Scale x to \[0, 1\] \(x / x.max\(\) for pixels\), or "
                       r"standardise it and pass visible_units='gaussian'\.$"):  # fmt: skip
        pretrain_stack(load_digits().data, [8], visible_units="bernoulli")  # in Python's words, not the CLI's


def _readme_csv_command() -> list[str]:
    """The README's CSV lines: the command that writes wine.csv, and the train.py command."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(python -c .*?wine\.csv.*?)```", text, re.S).group(1)
    return [line.replace("\\\n", " ") for line in block.replace("\\\n", " ").strip().splitlines()]


def _test_acc(output: str) -> float:
    return float(re.search(r"test_acc\s*[│|]\s*([0-9.]+)", output).group(1))


@pytest.mark.slow
def test_the_readme_csv_command_reaches_the_xavier_baseline_on_wine(tmp_path):
    write, fit = _readme_csv_command()
    subprocess.run(write, shell=True, cwd=tmp_path, check=True)
    fit = fit.replace("python train.py", f"{sys.executable} {ROOT / 'train.py'}")
    scores = {}
    for name, model in (("dbn", "dbn_init.DBN"), ("xavier", "dbn_init.Baseline --model.init xavier_uniform")):
        command = fit.replace("--model dbn_init.DBN", f"--model {model}")
        done = subprocess.run(command + f" --trainer.default_root_dir {name} --seed_everything 0", shell=True,
                              cwd=tmp_path, capture_output=True, text=True, timeout=600)  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        scores[name] = _test_acc(done.stdout)
    assert scores["dbn"] >= scores["xavier"] and scores["dbn"] > 0.9, scores


def test_every_rbm_learns_at_the_rate_for_what_its_visible_units_model():
    """Bernoulli units at pretrain_lr; a Gaussian RBM 1 (standardised data) at gaussian_lr; the upper
    RBMs of a ReLU stack (rectified activities, not standardised) at rectified_lr."""
    relu = DBN(input_size=13, num_classes=3, hidden=[8, 4], visible_units="gaussian", gaussian_lr=0.02)
    assert [relu.stage(i).lr for i in range(2)] == [0.02, 1e-3]
    sigmoid = DBN(input_size=13, num_classes=3, hidden=[8, 4], visible_units="gaussian", recipe="textbook")
    assert [sigmoid.stage(i).lr for i in range(2)] == [1e-2, 0.1]
    pixels = DBN(input_size=64, num_classes=10, hidden=[8, 4], visible_units="bernoulli", rectified_lr=5e-4)
    assert [pixels.stage(i).lr for i in range(2)] == [0.01, 5e-4]


class _Rate(Callback):
    def on_train_batch_start(self, trainer, stage, batch, batch_idx) -> None:  # the rate CD steps with
        self.lr = trainer.optimizers[0].param_groups[0]["lr"]


def _digit_stage(index: int, wide: bool, **options) -> tuple[RBMStage, PretrainData, float]:
    """RBM ``index`` of a ReLU stack on the digits' pixels, fitted for one epoch; with ``wide``, RBM 1
    starts with weights 100 times its usual size, so that its NReLU activities are large."""
    x, y = load_digits(return_X_y=True)
    model = DBN(input_size=64, num_classes=10, hidden=[32, 16], visible_units="bernoulli", **options)
    if wide:
        with torch.no_grad():
            model.rbms[0].weight.mul_(100)
    data = PretrainData(ArrayDataModule(x, y, scaling="unit"))
    stage, callback = model.stage(index), _Rate()
    _quiet(1, callbacks=[callback]).fit(stage, datamodule=data)
    return stage, data, callback.lr


def test_an_nrelu_stage_s_rate_is_at_most_one_over_its_input_s_mean_squared_norm():
    stage, data, lr = _digit_stage(0, wide=False, pretrain_lr=1.0)
    energy = data.monitor_subset().pow(2).sum(1).mean().item()  # about 15 for 64 pixels in [0, 1]
    assert lr == pytest.approx(NORMALISED_STEP / energy) and lr < 0.1
    assert _digit_stage(0, wide=False)[2] == 0.01  # the default rate is below the cap on small inputs
    assert _digit_stage(0, wide=False, recipe="textbook", pretrain_lr=1.0)[2] == 1.0  # sigmoid units: no cap


def test_a_gaussian_rbm_1_on_sparse_standardised_features_is_capped_by_its_rare_large_rows():
    """Raw digit pixels standardised as a table: border pixels that are almost always 0 become
    values up to 35, and rows of 20 times the mean squared norm. Under the mean's cap (1/59, above
    gaussian_lr 0.01) a 256-unit RBM 1 diverged within 10 epochs, and under the 99th percentile's
    (about 1/311) on two thirds of the rows; the largest row's cap trains it."""
    x, y = load_digits(return_X_y=True)
    data = ArrayDataModule(x, y)  # scaling="standardize"
    model = DBN(hidden=[256])
    model.build_for(data)
    callback, pretrain_data = _Rate(), PretrainData(data)
    _quiet(40, callbacks=[callback]).fit(model.stage(0), datamodule=pretrain_data)
    norms = pretrain_data.monitor_subset().pow(2).sum(1)
    assert norms.max() > 15 * norms.mean()
    assert callback.lr == pytest.approx(NORMALISED_STEP / norms.max().item(), rel=1e-5)
    assert torch.isfinite(model.rbms[0].weight).all()


def test_a_gaussian_rbm_above_large_nrelu_activities_sees_them_at_unit_mean_square():
    stage, data, lr = _digit_stage(1, wide=True)
    below = up_pass(stage.rbms[:1], data.monitor_subset())
    assert below.pow(2).mean() > 4  # the activities RBM 2 is given
    scale = stage.rbm.input_scale.item()
    assert scale == pytest.approx(below.pow(2).mean().item() ** -0.5, rel=1e-5)
    seen = stage.encode(data.monitor_subset())
    assert seen.pow(2).mean().item() == pytest.approx(1.0, rel=1e-4)
    assert lr == pytest.approx(min(1e-3, NORMALISED_STEP / seen.pow(2).sum(1).max().item()), rel=1e-5)
    assert _digit_stage(1, wide=False)[0].rbm.input_scale.item() == 1.0  # small activities stay as they are


def test_a_scaled_stack_transfers_saves_and_samples_in_the_data_s_units(tmp_path):
    stage, data, _ = _digit_stage(1, wide=True)
    rbms = list(stage.rbms)
    x = data.monitor_subset()[:50]
    mlp = MLP(64, [32, 16], 10, activation="relu")
    mlp.load_rbms(rbms)
    torch.testing.assert_close(mlp.forward_features(x), up_pass(rbms, x))  # the scale is in the first weight
    saved = save_stack(rbms, tmp_path / "stack.safetensors")
    loaded = load_stack(saved).rbms
    assert [r.input_scale.item() for r in loaded] == [r.input_scale.item() for r in rbms]
    torch.testing.assert_close(up_pass(loaded, x), up_pass(rbms, x))
    # what RBM 2 sees of RBM 1's activities maps back down to RBM 1's visible means of them
    h = up_pass(rbms[:1], x)
    torch.testing.assert_close(down_pass(rbms, h * rbms[1].input_scale), rbms[0].visible_mean(h))
    state = {k: v for k, v in rbms[1].state_dict().items() if k != "input_scale"}  # saved before scales existed
    fresh = GaussianRBM(32, 16, hidden_units="relu")
    fresh.input_scale.fill_(0.5)
    fresh.load_state_dict(state)
    assert fresh.input_scale.item() == 1.0


def test_a_small_data_fit_prints_no_hint_that_does_not_apply(tmp_path):
    """Lightning's hints that do not apply here stay out of a user's small-data fit: an epoch shorter
    than log_every_n_steps (the models log per epoch), each stage's "100% of the batches will be used",
    and each stage's repeat of the fit's device lines."""
    script = (
        "from sklearn.datasets import load_wine; from lightning.pytorch import Trainer; "
        "from dbn_init import DBN, ArrayDataModule; x, y = load_wine(return_X_y=True); "
        "Trainer(max_epochs=1, enable_progress_bar=False, enable_checkpointing=False)"
        ".fit(DBN(hidden=[8], pretrain_epochs=1), datamodule=ArrayDataModule(x, y))"
    )
    run = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    output = run.stdout + run.stderr
    assert run.returncode == 0 and "pretraining RBM 1/1" in output, output  # the fit ran, and said so
    assert (tmp_path / "lightning_logs").is_dir()  # with Lightning's default logger, which the hint needs
    for hint in ("logging interval", "100% of the batches"):
        assert hint not in output, output
    assert output.count("GPU available") == output.count("TPU available") == 1, output  # the fit's, not the stage's


def test_evaluating_without_a_logger_finds_a_logged_run_s_last_checkpoint(tmp_path):
    from dbn_init.cli import main

    args = ["--model.hidden", "[8]", "--model.pretrain_epochs", "1", "--trainer.max_epochs", "1", "--data",
            "dbn_init.ArrayDataModule", "--data.loader", "sklearn.datasets.load_wine", "--trainer.default_root_dir",
            str(tmp_path), "--trainer.enable_progress_bar", "false"]  # fmt: skip
    main(["fit", *args])
    tested = main(["test", *args, "--trainer.logger", "false", "--ckpt_path", "last"])
    found = tmp_path / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    assert tested.config_init["test"]["ckpt_path"] == str(found)


def test_a_dataset_class_s_missing_folder_is_one_line_naming_where_it_was_looked_for(tmp_path):
    from dbn_init.cli import main
    from dbn_init.constraints import MissingFileError

    missing = tmp_path / "no_images"
    with pytest.raises(MissingFileError, match=rf"^{re.escape(str(missing))}: no such file or folder .*fix the path"):
        main(["fit", "--data", "dbn_init.DatasetDataModule", "--data.dataset", "torchvision.datasets.ImageFolder",
              "--data.dataset.init_args.root", str(missing), "--trainer.default_root_dir", str(tmp_path)])  # fmt: skip
