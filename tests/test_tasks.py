"""Fine-tuning for regression on the one shared step: scikit-learn's diabetes, real Trainer fits."""

import numpy as np
import pytest
import torch
from lightning.pytorch import Trainer, seed_everything
from sklearn.datasets import load_diabetes

from dbn_init import DBN, ArrayDataModule, Baseline
from dbn_init.cli import main
from dbn_init.constraints import UsageError
from dbn_init.models import Classifier


@pytest.fixture(scope="module")
def diabetes():
    return load_diabetes(return_X_y=True)


def quiet_trainer(**options) -> Trainer:
    quiet = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    return Trainer(**{**quiet, "max_epochs": 20, **options})


@pytest.mark.parametrize("make", [lambda: DBN(hidden=[32], pretrain_epochs=5), lambda: Baseline(hidden=[32])])
def test_a_regression_fit_beats_predicting_the_mean_on_held_back_rows(diabetes, make):
    """The task follows the data (ArrayDataModule(targets="values")); the targets are standardised
    for the loss with the training rows' mean and std, and the output and the metrics are in the
    target's units."""
    seed_everything(0, verbose=False)
    x, y = diabetes
    dm = ArrayDataModule(x, y, targets="values")
    model = make()
    trainer = quiet_trainer(max_epochs=30)  # the README's budget, which the default cosine decays over
    trainer.fit(model, datamodule=dm)
    assert model.hparams.task == "regression" and model.mlp.head.out_features == 1
    train_y = dm.train_y.double()
    assert float(model.target_mean) == pytest.approx(float(train_y.mean()), rel=1e-6)
    assert float(model.target_std) == pytest.approx(float(train_y.std(unbiased=False)), rel=1e-6)
    scores = trainer.test(model, datamodule=dm, verbose=False)[0]
    with torch.no_grad():
        predicted = model.eval()(dm.test_x).double()
    test_y = dm.test_y.double()
    rmse = float((predicted - test_y).pow(2).mean().sqrt())
    mean_only = float((train_y.mean() - test_y).pow(2).mean().sqrt())  # predicting the training mean
    r2 = 1 - float((predicted - test_y).pow(2).sum() / (test_y - test_y.mean()).pow(2).sum())
    assert scores["test_rmse"] == pytest.approx(rmse, rel=1e-4)
    assert scores["test_r2"] == pytest.approx(r2, abs=1e-4)
    assert scores["test_mae"] == pytest.approx(float((predicted - test_y).abs().mean()), rel=1e-4)
    # Measured: DBN 0.32 and Baseline 0.16 test R² (a noisy target: a 256-256 Baseline at 60 epochs, -0.05).
    assert rmse < 0.95 * mean_only, (rmse, mean_only)
    assert r2 > 0.1, r2


def test_a_regression_checkpoint_loads_as_a_regression_model_with_its_target_scale(diabetes, tmp_path):
    x, y = diabetes
    dm = ArrayDataModule(x, y, targets="values")
    model = Baseline(hidden=[8])
    trainer = quiet_trainer(max_epochs=2, default_root_dir=tmp_path, enable_checkpointing=True)
    trainer.fit(model, datamodule=dm)
    loaded = Baseline.load_from_checkpoint(trainer.checkpoint_callback.best_model_path)
    assert loaded.regression and float(loaded.target_std) == float(model.target_std)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(dm.test_x), model.eval()(dm.test_x))


def test_regression_data_keep_their_targets_and_split_without_classes(diabetes):
    x, y = diabetes
    dm = ArrayDataModule(x, y, targets="values", num_labels=50)
    dm.setup("fit")
    assert dm.num_classes is None and dm.train_y.dtype == torch.float32 and len(dm.train_y) == 50
    assert set(dm.train_y.tolist()) <= set(y.astype(np.float32).tolist())
    with pytest.raises(UsageError, match="expected at least 1000 training rows for num_labels=1000, got 318"):
        ArrayDataModule(x, y, targets="values", num_labels=1000).setup("fit")
    with pytest.raises(UsageError, match="expected a number as the target of every row"):
        ArrayDataModule(x, np.array(["a"] * len(x)), targets="values")
    with pytest.raises(UsageError, match="fractional"):  # the same targets, read as class labels
        ArrayDataModule(x, y + 0.5)


@pytest.mark.parametrize("task, targets", [("classification", "values"), ("regression", "classes")])
def test_a_task_the_data_contradict_is_refused_before_pretraining(diabetes, task, targets):
    x, y = diabetes
    dm = ArrayDataModule(x, y if targets == "values" else (y > 140).astype(int), targets=targets)
    model = DBN(hidden=[4], task=task, pretrain_epochs=1)
    fix = "values" if task == "regression" else "classes"
    with pytest.raises(UsageError, match=rf"task is {task}, and the data's targets are .*set data.targets {fix}"):
        quiet_trainer().fit(model, datamodule=dm)
    assert not model.pretrained


def test_float_targets_from_a_datamodule_that_declares_no_task_make_a_regression_model(diabetes):
    x, y = diabetes
    model = Classifier(hidden=[4])
    dm = ArrayDataModule(x, y, targets="values")
    dm.setup("fit")
    dm.task = None  # as a LightningDataModule of one's own, serving float targets
    model.build_for(dm)
    assert model.regression and model.hparams.num_classes is None


def test_the_cli_fits_a_regression_on_a_csv_and_predicts_new_rows_in_the_target_s_units(diabetes, tmp_path):
    x, y = diabetes
    names = [f"f{i}" for i in range(x.shape[1])]
    rows = [",".join([*names, "y"]), *(",".join(map(repr, [*r, t])) for r, t in zip(x.tolist(), y.tolist()))]
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "new.csv").write_text("\n".join([",".join(names), *(",".join(map(repr, r)) for r in x[:4].tolist())]))
    args = ["--model", "dbn_init.DBN", "--model.hidden", "[16]", "--model.pretrain_epochs", "2",
            "--data", "dbn_init.ArrayDataModule", "--data.path", str(tmp_path / "train.csv"), "--data.target", "y",
            "--data.targets", "values", "--trainer.max_epochs", "3", "--trainer.logger", "false",
            "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp_path / "run")]  # fmt: skip
    main(["fit", *args])
    main(["predict", *args, "--data.predict_path", str(tmp_path / "new.csv"), "--ckpt_path", "last"])
    lines = (tmp_path / "run" / "predictions-new.csv").read_text().splitlines()
    assert lines[0] == "index,prediction" and len(lines) == 5
    predictions = np.array([float(line.split(",")[1]) for line in lines[1:]])
    assert (np.abs(predictions - y.mean()) < 3 * y.std()).all()  # in the target's units, not standardised


# --- reconstruction: the deep autoencoder ----------------------------------------------------
def _autoencoder(hidden_units, **options) -> DBN:
    return DBN(hidden=[24, 12, 4], task="reconstruction", hidden_units=hidden_units, dropout=0.0, **options)


@pytest.mark.parametrize(
    "scaling, hidden_units",
    [("unit", ["sigmoid", "sigmoid", "linear"]), ("standardize", ["relu", "relu", "linear"])],
)
def test_the_unrolled_autoencoder_reproduces_the_stacks_up_pass_and_down_pass(scaling, hidden_units):
    """Before fine-tuning, the encoder is the stack's up-pass and the decoder its down-pass through
    the visible means (Hinton & Salakhutdinov 2006), the input scales of RBMs above NReLU units included."""
    from sklearn.datasets import load_digits

    from dbn_init.rbm import down_pass, up_pass

    x, y = load_digits(return_X_y=True)
    dm = ArrayDataModule(x, y, scaling=scaling, batch_size=64)
    model = _autoencoder(hidden_units, pretrain_epochs=2)
    quiet_trainer(max_epochs=0).fit(model, datamodule=dm)  # pretraining only
    assert model.pretrained and [r.hidden_units for r in model.rbms] == hidden_units
    if scaling == "standardize":  # RBMs above NReLU units may see the activities scaled down: the transfer follows
        model.rbms[1].input_scale.fill_(0.5)
        model.rbms[2].input_scale.fill_(0.25)
        model.transfer()
    x = dm.test_x
    code = up_pass(model.rbms, x)
    reconstruction = down_pass(model.rbms, model.rbms[-1].visible_mean(code))
    torch.testing.assert_close(model.encode(x), code, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model.eval()(x), reconstruction, rtol=1e-5, atol=1e-5)
    assert model.visible_units == ("bernoulli" if scaling == "unit" else "gaussian")


def test_fine_tuning_the_autoencoder_lowers_the_reconstruction_error_on_held_back_rows():
    """The DBN-started and the scheme-started autoencoders of one shape fine-tune on the
    reconstruction's cross-entropy; test_sse is the squared error per row, summed over its features."""
    from sklearn.datasets import load_digits

    seed_everything(0, verbose=False)
    x, y = load_digits(return_X_y=True)
    dm = ArrayDataModule(x, y, scaling="unit", batch_size=64)
    model = _autoencoder(["sigmoid", "sigmoid", "linear"], recipe="textbook", pretrain_epochs=5, lr=1e-2)
    quiet_trainer(max_epochs=0).fit(model, datamodule=dm)
    before = quiet_trainer().test(model, datamodule=dm, verbose=False)[0]["test_sse"]
    trainer = quiet_trainer(max_epochs=15)
    trainer.fit(model, datamodule=dm)
    after = trainer.test(model, datamodule=dm, verbose=False)[0]["test_sse"]
    with torch.no_grad():
        by_hand = float((model.eval()(dm.test_x) - dm.test_x).pow(2).sum(1).mean())
    assert after == pytest.approx(by_hand, rel=1e-4)
    assert after < 0.9 * before, (before, after)  # measured: 4.85 -> 4.17
    assert model.encode(dm.test_x).shape == (len(dm.test_x), 4)
    baseline = Baseline(hidden=[24, 12, 4], task="reconstruction", activation=["sigmoid", "sigmoid", "linear"])
    quiet_trainer(max_epochs=2).fit(baseline, datamodule=dm)
    assert [type(m).__name__ for m in baseline.mlp.head] == ["Linear", "Sigmoid", "Linear", "Sigmoid", "Linear"]
    # A model made with sizes None takes the autoencoder's shape from its weights (as ddp_spawn returns it).
    twin = Baseline(hidden=[24, 12, 4], task="reconstruction", activation=["sigmoid", "sigmoid", "linear"])
    twin.load_state_dict(baseline.state_dict())
    torch.testing.assert_close(twin.eval()(dm.test_x), baseline.eval()(dm.test_x))


@pytest.mark.parametrize("make", [lambda: _autoencoder("sigmoid", pretrain_epochs=1), lambda: Baseline(
    hidden=[24, 12, 4], task="reconstruction", activation=["sigmoid", "sigmoid", "linear"])])  # fmt: skip
def test_an_autoencoder_fits_data_without_labels_and_a_classifier_refuses_them_with_the_fix(make):
    from sklearn.datasets import load_digits

    dm = ArrayDataModule(load_digits().data / 16, scaling="unit", batch_size=64)  # no y
    model = make()
    trainer = quiet_trainer(max_epochs=1)
    trainer.fit(model, datamodule=dm)
    assert np.isfinite(trainer.test(model, datamodule=dm, verbose=False)[0]["test_sse"])
    with pytest.raises(UsageError, match='has no labels.*give it labels.*autoencoder \\(task="reconstruction"\\)'):
        quiet_trainer(max_epochs=1).fit(DBN(hidden=[8], pretrain_epochs=1), datamodule=dm)


def test_the_cli_fits_an_autoencoder_and_predict_writes_reconstructions(tmp_path):
    """--model.task reconstruction on any data (labels unused): the stack's top RBM is linear by
    default, and predict writes each row's reconstruction, in [0, 1] for inputs in [0, 1]."""
    args = ["--model", "dbn_init.DBN", "--model.task", "reconstruction", "--model.hidden", "[16, 4]",
            "--model.pretrain_epochs", "1", "--data", "dbn_init.DigitsDataModule", "--trainer.max_epochs", "1",
            "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
            "--trainer.default_root_dir", str(tmp_path)]  # fmt: skip
    cli = main(["fit", *args])
    assert cli.model.hparams.hidden_units == ["relu", "linear"] and cli.model.mlp.decoder
    main(["predict", *args, "--ckpt_path", "last"])
    lines = (tmp_path / "predictions.csv").read_text().splitlines()
    assert lines[0] == "index,row," + ",".join(f"x_{j}" for j in range(64))  # digits' test split is carved
    values = np.array([[float(v) for v in line.split(",")[2:]] for line in lines[1:]])
    assert values.shape == (len(lines) - 1, 64) and 0 <= values.min() and values.max() <= 1


def test_a_shipped_config_pretrains_alone_with_max_epochs_0_and_exports_its_stack(tmp_path):
    """quickstart.yaml's checkpoint watches val_acc, which an autoencoder never logs: with no
    fine-tuning epoch that is no refusal, and the stack is written at the fit's end."""
    from dbn_init.io import load_stack

    cli = main(["fit", "--config", "quickstart.yaml", "--model.task", "reconstruction", "--model.hidden", "[16, 4]",
                "--model.pretrain_epochs", "1", "--trainer.max_epochs", "0", "--trainer.enable_progress_bar", "false",
                "--trainer.default_root_dir", str(tmp_path)])  # fmt: skip
    assert cli.model.pretrained
    stack = load_stack(tmp_path / "lightning_logs" / "version_0" / "pretrained.safetensors")
    assert all(torch.equal(a.weight, b.weight) for a, b in zip(stack.rbms, cli.model.rbms, strict=True))
    with pytest.raises(UsageError, match=r"ModelCheckpoint monitors val_acc, which a reconstruction never logs"):
        main(["fit", "--config", "quickstart.yaml", "--model.task", "reconstruction", "--model.hidden", "[16, 4]",
              "--trainer.default_root_dir", str(tmp_path)])  # fmt: skip


def test_a_hidden_unit_list_of_the_wrong_length_is_one_line_naming_the_fix():
    with pytest.raises(UsageError, match=r"hidden_units: expected one name or one per RBM"):
        DBN(hidden=[8, 4], hidden_units=["sigmoid"])
    with pytest.raises(UsageError, match=r"activation: expected one name or one per hidden layer"):
        Baseline(hidden=[8, 4], activation=["sigmoid", "linear", "relu"])


@pytest.mark.parametrize("task", [None, "reconstruction"])
def test_a_logged_fit_merges_the_model_s_and_the_data_s_hyperparameters(diabetes, task, tmp_path):
    """Lightning logs the model's and the data's hyperparameters as one dict and refuses a key
    they hold with two values: the model's task (None: the data's) is not the data's option."""
    x, y = diabetes
    model = Baseline(hidden=[4], task=task)
    Trainer(max_epochs=1, default_root_dir=tmp_path, enable_progress_bar=False).fit(
        model, datamodule=ArrayDataModule(x, y, targets="values", scaling="unit")
    )
    assert model.hparams.task == (task or "regression")


def test_runs_recorded_before_or_after_the_data_s_targets_option_are_one_run_unless_the_targets_differ():
    from dbn_init.runs import differences

    before = {"model": {"hidden": [8]}, "data": {"task": "classification"}}  # a data task option, since renamed
    assert differences(before, {"model": {"hidden": [8]}, "data": {"targets": "classes"}}) == []
    assert differences(before, {"model": {"hidden": [8]}, "data": {"targets": "values"}}) == [
        "data.targets: '(not set)' in the file, 'values' here"
    ]
