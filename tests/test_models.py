"""The DBN pipeline with real Trainers on real digits: stages, freezing, transfer, fine-tuning."""

import copy
import logging
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, LightningDataModule, Trainer, seed_everything
from torch.utils.data import DataLoader, TensorDataset

from dbn_init import DBN, ArrayDataModule, Baseline, DatasetDataModule, DigitsDataModule
from dbn_init.constraints import UsageError
from dbn_init.pretrain import PretrainData, pretrain, stage_trainer
from dbn_init.rbm import RBM, up_pass


def textbook_dbn(**options) -> DBN:
    """A DBN for the 64-pixel digits, 10 classes, on the textbook recipe (sigmoid RBMs at CD rate 0.1):
    the recipe the mechanics below are checked on; the ReLU ones ask for it explicitly."""
    return DBN(recipe="textbook", num_classes=10, input_size=64, **options)


def _trainer(epochs, **kw):
    quiet = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    return Trainer(max_epochs=epochs, **{**quiet, **kw})


def test_each_stage_trains_only_its_rbm_and_later_stages_leave_earlier_ones_unchanged(digits):
    seed_everything(0)
    model = textbook_dbn(hidden=[32, 16, 8], pretrain_epochs=2)
    snapshots = []  # state of every RBM after each stage

    def factory(stage, epochs):
        if stage > 0:
            snapshots.append([{k: v.clone() for k, v in r.state_dict().items()} for r in model.rbms])
        return _trainer(epochs)

    initial = [{k: v.clone() for k, v in r.state_dict().items()} for r in model.rbms]
    pretrain(model, digits, factory)
    snapshots.append([{k: v.clone() for k, v in r.state_dict().items()} for r in model.rbms])
    final = snapshots[-1]
    for i in range(3):  # every RBM was trained...
        assert not torch.equal(final[i]["weight"], initial[i]["weight"])
        # ...and never touched again once its stage was over
        for after_stage in snapshots[i:]:
            for key in ("weight", "visible_bias", "hidden_bias"):
                assert torch.equal(after_stage[i][key], final[i][key])
        # ...and not before its stage started
        for before_stage in snapshots[:i]:  # the states after stages 1..i, before stage i + 1
            assert torch.equal(before_stage[i]["weight"], initial[i]["weight"])
    assert int(model.stages_done) == 3
    assert not any(p.requires_grad for p in model.rbms.parameters())


def test_several_cd_steps_per_lightning_step_make_exactly_the_same_updates(digits):
    """steps_per_batch only regroups the mini-batches: the same CD updates, in the same order."""
    runs = {}
    for steps in (1, 5):
        seed_everything(0)
        model = textbook_dbn(
            hidden=[32, 16],
            pretrain_epochs=2,
            persistent=True,
            steps_per_batch=steps,
        )
        initial = model.rbms[1].weight.detach().clone()
        pretrain(model, digits, lambda stage, epochs: _trainer(epochs, limit_val_batches=0))
        runs[steps] = model.rbms.state_dict()
    for key, value in runs[1].items():  # 1293 images, batch 64: 21 updates per epoch, 5 per Lightning step
        assert torch.equal(value, runs[5][key]), key
    assert not torch.equal(runs[1]["1.weight"], initial)  # stage 2 did train


class _StepThroughBackward(Callback):
    """Makes a one-process stage take the loss path (cd_loss + backward), as DDP does."""

    def on_train_start(self, trainer, pl_module) -> None:
        assert pl_module.backprop_cd is False  # one process, fp32: the direct path was chosen
        pl_module.backprop_cd = True


@pytest.mark.parametrize("sparsity_cost", [0.0, 0.1])
def test_one_process_direct_gradient_path_makes_exactly_the_updates_of_the_loss_path(digits, sparsity_cost):
    """cd_grad_ (one process) vs cd_loss + manual_backward (DDP's path): same stack bit for bit,
    over two stages with PCD, a momentum switch, weight decay and, optionally, the sparsity penalty."""
    runs = []
    for callbacks in ([], [_StepThroughBackward()]):
        seed_everything(0)
        model = textbook_dbn(
            hidden=[32, 16],
            pretrain_epochs=2,
            persistent=True,
            momentum_switch_epoch=1,
            sparsity_target=0.1,
            sparsity_cost=sparsity_cost,
        )
        initial = model.rbms[1].weight.detach().clone()
        pretrain(model, digits, lambda stage, epochs: _trainer(epochs, limit_val_batches=0, callbacks=callbacks))
        runs.append(model.rbms.state_dict())
    for key, value in runs[0].items():
        assert torch.equal(value, runs[1][key]), key
    assert not torch.equal(runs[0]["1.weight"], initial)  # stage 2 did train


@pytest.mark.parametrize("precision", ["bf16-mixed", "64-true"])
def test_stages_train_under_other_precisions_as_well_as_in_fp32(digits, precision):
    recon = {}
    for p in ("32-true", precision):
        seed_everything(0)
        model = textbook_dbn(hidden=[32, 16], pretrain_epochs=2)
        trainers = []
        pretrain(model, digits, lambda stage, epochs: trainers.append(_trainer(epochs, precision=p)) or trainers[-1])
        assert model.rbms[0].weight.dtype == (torch.float64 if p == "64-true" else torch.float32)
        recon[p], x = [], digits.val_x.double()
        for rbm in model.rbms.double():  # each RBM's noise-free reconstruction error, in float64
            recon[p].append(float(((x - rbm.visible_mean(rbm.hidden_probs(x))) ** 2).sum(1).mean()))
            x = rbm.hidden_probs(x)
    assert recon[precision] == pytest.approx(recon["32-true"], rel=0.02)


def test_train_and_val_reconstruction_errors_agree_on_the_same_images(digits):
    """train_recon and val_recon share one estimator, so on identical images they differ only by
    the weights' progress within the epoch (here ~5%; a mean-field val_recon was 35% lower)."""
    same = copy.copy(digits)
    same.val_x, same.val_y = digits.pretrain_x, digits.pretrain_y
    seed_everything(0)
    trainers = []
    pretrain(
        textbook_dbn(hidden=[32], pretrain_epochs=8),
        same,
        lambda stage, epochs: trainers.append(_trainer(epochs)) or trainers[-1],
    )
    metrics = trainers[0].callback_metrics
    assert float(metrics["rbm1/val_recon"]) == pytest.approx(float(metrics["rbm1/train_recon"]), rel=0.1)


def test_stage_freezes_lower_rbms_by_construction(digits):
    model = textbook_dbn(hidden=[32, 16, 8])
    stage = model.stage(1)
    trainable = {n for n, p in stage.named_parameters() if p.requires_grad}
    assert trainable == {"rbms.1.weight", "rbms.1.visible_bias", "rbms.1.hidden_bias"}
    optimised = {id(p) for g in stage.configure_optimizers().param_groups for p in g["params"]}
    assert optimised == {id(p) for p in model.rbms[1].parameters()}


def test_stage_switches_momentum_on_schedule_and_decays_the_weights_only(digits):
    class Record(Callback):  # at the first batch: after the stage's own on_train_epoch_start
        def __init__(self):
            self.seen = []

        def on_train_batch_start(self, trainer, stage, batch, batch_idx):
            if batch_idx == 0:
                groups = stage.optimizers().optimizer.param_groups
                self.seen.append(
                    (
                        [g["momentum"] for g in groups],
                        [g["weight_decay"] for g in groups],
                        [[id(p) for p in g["params"]] for g in groups],
                    )
                )

    record = Record()
    model = textbook_dbn(
        hidden=[16],
        pretrain_epochs=3,
        momentum_switch_epoch=2,
        rbm_weight_decay=1e-3,
    )
    pretrain(model, digits, lambda stage, epochs: _trainer(epochs, limit_val_batches=0, callbacks=[record]))
    rbm = model.rbms[0]
    assert [m for m, _, _ in record.seen] == [[0.5, 0.5], [0.5, 0.5], [0.9, 0.9]]  # Hinton (2010): 0.5, then 0.9
    assert all(d == [1e-3, 0.0] for _, d, _ in record.seen)  # weight cost on W, none on the biases
    assert record.seen[0][2] == [[id(rbm.weight)], [id(rbm.visible_bias), id(rbm.hidden_bias)]]


def test_sparsity_target_pulls_the_mean_hidden_activation_towards_it(digits):
    means = {}
    for cost in (0.0, 1.0):
        seed_everything(0)
        model = textbook_dbn(
            hidden=[32],
            pretrain_epochs=3,
            sparsity_target=0.05,
            sparsity_cost=cost,
        )
        pretrain(model, digits, lambda stage, epochs: _trainer(epochs, limit_val_batches=0))
        means[cost] = model.rbms[0].hidden_probs(digits.pretrain_x).mean().item()
    assert abs(means[1.0] - 0.05) < abs(means[0.0] - 0.05) / 2, means  # here about {0.0: 0.60, 1.0: 0.19}


def test_a_stage_resumed_with_another_devices_noise_state_warns_and_goes_on(digits, tmp_path):
    """A GPU's generator state (16 bytes) cannot seed a CPU generator: warn and draw fresh noise."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    seed_everything(0)
    pretrain(
        textbook_dbn(hidden=[16], pretrain_epochs=1),
        digits,
        lambda stage, epochs: _trainer(
            epochs,
            limit_val_batches=0,
            enable_checkpointing=True,
            callbacks=[ModelCheckpoint(dirpath=tmp_path, filename="s")],
        ),
    )
    checkpoint = torch.load(tmp_path / "s.ckpt", weights_only=True)
    checkpoint["dbn_init"]["generator"] = torch.zeros(16, dtype=torch.uint8)  # as a CUDA generator's state
    torch.save(checkpoint, tmp_path / "from_gpu.ckpt")
    model = textbook_dbn(hidden=[16], pretrain_epochs=2)
    with pytest.warns(UserWarning, match="noise came from another kind of device"):
        pretrain(
            model,
            digits,
            lambda stage, epochs: _trainer(epochs, limit_val_batches=0),
            resume={0: str(tmp_path / "from_gpu.ckpt")},
        )
    assert int(model.stages_done) == 1 and torch.isfinite(model.rbms[0].weight).all()


def test_transferred_mlp_reproduces_the_dbn_up_pass_exactly(digits):
    seed_everything(0)
    model = textbook_dbn(hidden=[48, 24], pretrain_epochs=1)
    pretrain(model, digits, lambda stage, epochs: _trainer(epochs))
    x = digits.val_x
    with torch.no_grad():
        assert torch.equal(model.mlp.forward_features(x), up_pass(model.rbms, x))
        # layer by layer, too: each Linear+sigmoid is p(h_k | h_{k-1})
        h = x
        for rbm, linear in zip(model.rbms, model.mlp.linears):
            assert torch.equal(torch.sigmoid(linear(h)), rbm.hidden_probs(h))
            h = rbm.hidden_probs(h)


def test_pretraining_teaches_rbm1_to_reconstruct_and_the_dbn_fine_tunes_to_high_accuracy_on_digits(digits):
    # Whether pretraining helps the classifier is the comparison's question (on digits it does not).
    seed_everything(0)
    digits = DigitsDataModule(batch_size=32)
    model = textbook_dbn(hidden=[128, 128], pretrain_epochs=10)
    first = model.rbms[0]

    def recon() -> float:
        with torch.no_grad():
            return float(((digits.val_x - first.visible_mean(first.hidden_probs(digits.val_x))) ** 2).sum(1).mean())

    digits.setup("fit")
    untrained = recon()
    pretrain(model, digits, lambda stage, epochs: _trainer(epochs))
    assert recon() < 3.0 and untrained > 10  # 11.4 at the N(0, 0.01) start
    trainer = _trainer(20)
    trainer.fit(model, datamodule=digits)
    result = trainer.test(model, datamodule=digits, verbose=False)[0]
    assert result["test_acc"] > 0.93


@pytest.mark.parametrize(
    "sizes, name", [(dict(input_size=784), "input_size=64"), (dict(num_classes=5), "num_classes=10")]
)
def test_a_model_built_for_other_data_is_refused_before_its_first_step(digits, sizes, name):
    model = Baseline(hidden=[16], **{"input_size": 64, "num_classes": 10, **sizes})
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=rf"the data \(DigitsDataModule\) have {name} but the model was built with"):
        _trainer(1).fit(model, datamodule=digits)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_an_imported_stack_that_does_not_fit_leaves_the_dbn_unchanged():
    model = textbook_dbn(hidden=[16, 8])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for stack, message in (
        ([RBM(64, 16), RBM(16, 9)], r"imported RBM 2 is bernoulli visible, sigmoid hidden units \(9, 16\) but this"),
        # a ReLU stack into this sigmoid DBN: the hint names the recipe of the stack's units, not the DBN's own
        ([RBM(64, 16, hidden_units="relu")], r"relu hidden units \(16, 64\) but .*units: model.recipe relu\)"),
        ([RBM(64, 16), RBM(16, 8), RBM(8, 4)], "the imported stack has 3 RBMs but this DBN has 2"),
    ):
        with pytest.raises(ValueError, match=message):
            model.load_rbms(stack)
        assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_a_stage_that_makes_no_cd_update_is_refused_rather_than_passed_off_as_pretrained(digits):
    model = textbook_dbn(hidden=[16])
    for limits in (dict(limit_train_batches=0), dict(max_steps=0)):
        with pytest.raises(ValueError, match=r"RBM 1's stage would make no CD update .*model.pretrain_epochs 0"):
            pretrain(model, digits, lambda stage, epochs: _trainer(epochs, **limits))
        assert not model.pretrained


def test_an_untrained_dbn_is_not_evaluated(digits):
    model = textbook_dbn(hidden=[16])
    for run, what in (
        (_trainer(1).validate, "validation"),
        (_trainer(1).test, "the test"),
        (_trainer(1).predict, "prediction"),
    ):
        with pytest.raises(UsageError, match=f"neither pretrained nor loaded from a checkpoint, so {what}") as info:
            run(model, datamodule=digits)
        assert "as ckpt_path (" in str(info.value) and "--" not in str(info.value)  # Trainer's words, not a flag
    model = textbook_dbn(hidden=[16], pretrain_epochs=0)  # asked to start from random RBMs: allowed
    logits = torch.cat(_trainer(1).predict(model, datamodule=digits))
    assert logits.shape == (len(digits.test_x), 10)


def test_one_trainer_fit_pretrains_transfers_and_fine_tunes_as_pretraining_first_does(digits):
    """Trainer.fit(dbn, dm) runs the stages in on_fit_start, on Trainers that follow the fit's:
    the same weights, bit for bit, as the greedy loop run first and the fit after it."""
    seed_everything(0)
    whole = DBN(recipe="textbook", input_size=None, num_classes=None, hidden=[16, 8], pretrain_epochs=2)
    _trainer(2, limit_val_batches=0).fit(whole, datamodule=digits)
    assert whole.pretrained and whole.hparams.input_size == 64 and whole.hparams.num_classes == 10
    seed_everything(0)
    split = textbook_dbn(hidden=[16, 8], pretrain_epochs=2)
    pretrain(split, digits, lambda stage, epochs: _trainer(epochs, limit_val_batches=0))
    after_pretraining = split.rbms[1].weight.clone()
    _trainer(2, limit_val_batches=0).fit(split, datamodule=digits)
    assert torch.equal(after_pretraining, split.rbms[1].weight)  # the fit left the stack alone
    assert not torch.equal(split.mlp.linears[1].weight, after_pretraining)  # and fine-tuned the MLP
    for key, value in split.state_dict().items():
        assert torch.equal(value, whole.state_dict()[key]), key


def test_pretrain_builds_a_dbn_whose_sizes_come_from_the_data():
    """pretrain() on a DBN made with sizes None (the default) takes them from the data, as a fit does:
    it sets the DataModule up once, for the stages too."""
    seed_everything(0)
    model = DBN(recipe="textbook", hidden=[16], pretrain_epochs=1)
    pretrain(model, DigitsDataModule(batch_size=64))
    assert model.pretrained and (model.hparams.input_size, model.hparams.num_classes) == (64, 10)
    assert torch.equal(model.mlp.linears[0].weight, model.rbms[0].weight)  # the trained stack, transferred


def test_the_fit_s_epochs_callbacks_clipping_and_accumulation_belong_to_fine_tuning(digits, tmp_path):
    """max_epochs, EarlyStopping and ModelCheckpoint(monitor="val_acc"), gradient clipping and
    accumulation are the fine-tuning fit's: no val_acc is logged while the stages run (each for
    its pretrain_epochs, on Trainers of its own), and nothing of the fit waits for it."""
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    seed_everything(0)
    model = DBN(recipe="textbook", hidden=[16], pretrain_epochs=3)
    seen = []  # the fit's own epochs, as its callbacks see them
    watch = type("Watch", (Callback,), {"on_train_epoch_end": lambda self, t, m: seen.append(t.current_epoch)})()
    stop = EarlyStopping(monitor="val_acc", mode="max", patience=5, strict=True)  # strict: raises if val_acc is missing
    best = ModelCheckpoint(dirpath=tmp_path, monitor="val_acc", mode="max")
    trainer = _trainer(2, callbacks=[stop, best, watch], enable_checkpointing=True, gradient_clip_val=1.0,
                       accumulate_grad_batches=2)  # fmt: skip
    trainer.fit(model, datamodule=digits)
    assert model.pretrained and seen == [0, 1]  # two fine-tuning epochs, none of them a stage's
    batches = len(digits.train_dataloader())
    assert trainer.global_step == 2 * math.ceil(batches / 2)  # fine-tuning's optimizer steps, accumulated by 2
    assert best.best_model_path and "epoch=" in best.best_model_path and not stop.stopped_epoch


def test_transform_and_sample_before_the_dbn_has_layers_are_refused_and_before_training_warned():
    unbuilt = DBN(recipe="textbook", hidden=[16], num_classes=10)  # input_size None: its sizes come with the data
    for call in (lambda: unbuilt.transform(torch.rand(3, 64)), lambda: unbuilt.sample(3)):
        with pytest.raises(RuntimeError, match=r"no layers yet: made with input_size=None.*fit it first"):
            call()
    untrained = DBN(recipe="textbook", input_size=64, num_classes=10, hidden=[16])
    with pytest.warns(UserWarning, match="not pretrained yet, so this is its random start"):
        assert untrained.transform(torch.rand(3, 64)).shape == (3, 16)
    untrained.stages_done.fill_(1)  # as a fit, an import or a checkpoint leaves it
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert untrained.sample(2, steps=1).shape == (2, 64)
        images = torch.rand(3, 1, 8, 8)  # as an image DataModule serves them: flattened
        assert torch.equal(untrained.transform(images), untrained.transform(images.flatten(1)))
        assert torch.equal(untrained.encode(images), untrained.encode(images.flatten(1)))
        assert torch.equal(untrained(images), untrained(images.flatten(1)))
    for call, what in (
        (untrained.transform, r"DBN\.transform"),
        (untrained.encode, r"DBN\.encode"),
        (untrained, r"DBN\(x\)"),
    ):
        with pytest.raises(ValueError, match=rf"{what}: expected 64 features a row, .* got x of shape \(3, 63\)"):
            call(torch.rand(3, 63))  # a column too few: one line, not a matrix product's shapes


def test_a_model_made_with_sizes_none_loads_a_fitted_state_dict():
    """How ddp_spawn hands a fitted model back to its main process: the state dict of a model
    built in the worker, loaded into one never built (sizes from the weights)."""
    seed_everything(0)
    fitted = DBN(recipe="textbook", input_size=64, num_classes=10, hidden=[16, 8])
    fresh = DBN(recipe="textbook", hidden=[16, 8])
    fresh.load_state_dict(fitted.state_dict())
    assert (fresh.hparams.input_size, fresh.hparams.num_classes) == (64, 10)
    x = torch.rand(5, 64)
    assert torch.equal(fresh(x), fitted(x)) and torch.equal(fresh.transform(x), fitted.transform(x))


def test_baseline_learns_digits(digits):
    seed_everything(0)
    # A constant rate: the default cosine decays to 0 over these 10 epochs, chosen for 30.
    model = Baseline(num_classes=10, input_size=64, hidden=[64, 64], init="he_uniform", lr_schedule="constant")
    trainer = _trainer(10)
    trainer.fit(model, datamodule=digits)
    assert trainer.test(model, datamodule=digits, verbose=False)[0]["test_acc"] > 0.93


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_cd_step_on_the_gpu_never_waits_for_the_host(digits):
    """Between monitored steps (every ``monitor_every``-th measures, checks and syncs once) a CD
    update queues its kernels and returns: no .item(), nonzero or branch on a tensor's value."""
    from dbn_init.pretrain import RBMStage

    class Strict(RBMStage):
        def _cd_step(self, v):
            monitored = self.updates_in_epoch % self.monitor_every == 0
            torch.cuda.set_sync_debug_mode("warn" if monitored else "error")
            try:
                super()._cd_step(v)
            finally:
                torch.cuda.set_sync_debug_mode("default")

    dbn = textbook_dbn(hidden=[32], pretrain_epochs=1, steps_per_batch=8)
    trainer = _trainer(1, accelerator="gpu", devices=1, limit_val_batches=0)
    trainer.fit(Strict(dbn.rbms, 0, dbn.cd), datamodule=PretrainData(digits, 8))
    assert trainer.global_step > 0 and torch.isfinite(dbn.rbms[0].weight).all()


def test_fine_tuning_drops_lightnings_nvml_flag_only_where_there_is_no_gpu(digits, monkeypatch):
    """With the flag, every Adam step reloads NVML on a machine without a GPU (0.2-1 ms)."""
    import os

    monkeypatch.setenv("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    gpu = torch.cuda.is_available()
    _trainer(1, limit_train_batches=2, limit_val_batches=0).fit(
        Baseline(num_classes=10, input_size=64, hidden=[8]), datamodule=digits
    )
    assert os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK") == ("1" if gpu else None)


def test_bad_model_arguments_get_clear_errors():
    """The constraints tables refuse each value before any work, naming the option and what it takes."""
    cases = [
        (DBN, dict(hidden=[]), r"model.hidden: expected a list of at least 1 item\(s\), each an integer in \[1"),
        (Baseline, dict(hidden=[32, 0]), r"model.hidden: .*got \[32, 0\]"),
        (DBN, dict(hidden=[32], steps_per_batch=0), r"model.steps_per_batch: expected an integer in \[1, inf\)"),
        (
            DBN,
            dict(hidden=[32], momentum_switch_epoch=-1),
            r"model.momentum_switch_epoch: expected an integer in \[0",
        ),
        (DBN, dict(hidden=[32], lr=-1), r"model.lr: expected a finite number in \(0, inf\), got -1"),
        (DBN, dict(hidden=[32], pretrain_lr=0), r"model.pretrain_lr: expected a finite number in \(0, inf\), got 0"),
        (DBN, dict(hidden=[32], pretrain_lr=float("inf")), r"model.pretrain_lr: .*got inf"),
        (DBN, dict(hidden=[32], gaussian_lr=float("nan")), r"model.gaussian_lr: .*got nan"),
        (DBN, dict(hidden=[32], final_momentum=1.5), r"model.final_momentum: expected a finite number in \[0, 1\)"),
        (DBN, dict(hidden=[32], rbm_weight_decay=-1e-4), r"model.rbm_weight_decay: expected a finite number in \[0"),
        (DBN, dict(hidden=[32], sparsity_cost=-0.1), r"model.sparsity_cost"),
        (
            DBN,
            dict(hidden=[32], pretrain_seed=2**40),
            r"model.pretrain_seed: expected an integer in \[0, 4.29497e\+09\]",
        ),
        (DBN, dict(hidden=[32], ais_chains=1), r"model.ais_chains: expected one of \[0\] or an integer in \[2"),
        (
            Baseline,
            dict(hidden=[32], optimizer="sgd", momentum=1.0),
            r"model.momentum: expected a finite number in \[0, 1\)",
        ),
        (Baseline, dict(hidden=[32], init_std=0.0), r"model.init_std"),
    ]
    for cls, kwargs, message in cases:
        with pytest.raises(UsageError, match=message):
            cls(input_size=64, **kwargs)
    with pytest.raises(UsageError, match=r"model.lr: .*; model.cd_k: .*got 0"):  # every problem at once
        textbook_dbn(hidden=[32], lr=0, cd_k=0)
    with pytest.raises(ValueError, match="one per RBM"):
        textbook_dbn(hidden=[32, 16], pretrain_epochs=[1, 2, 3])


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda x: x * 16, r"has values in \[0, 16\], but Bernoulli visible units"),
        (lambda x: x.index_fill(0, torch.tensor([3]), float("nan")), "holds 64 NaN"),
    ],
)
def test_a_users_own_loader_serving_bad_pixels_is_refused_at_its_first_batch(digits, corrupt, message):
    class OwnLoader(LightningDataModule):  # checked pretrain_x, but a loader of its own that serves something else
        batch_size, pretrain_x = 64, digits.pretrain_x

        def pretrain_dataloader(self, steps_per_batch: int = 1):
            return DataLoader(
                TensorDataset(corrupt(digits.pretrain_x), digits.pretrain_y), batch_size=64 * steps_per_batch
            )

    model = textbook_dbn(hidden=[16], pretrain_epochs=1, visible_units="bernoulli")
    before = model.rbms[0].weight.clone()
    with pytest.raises(ValueError, match=rf"stage 1's first training batch {message}"):
        pretrain(model, OwnLoader(), lambda s, e: _trainer(e, limit_val_batches=0))
    assert torch.equal(model.rbms[0].weight, before)  # refused before the first CD update


def test_a_plain_datamodule_pretrains_one_cd_update_per_batch_of_its_own(digits):
    """A LightningDataModule whose pretrain_dataloader takes no steps_per_batch serves its own
    batches, one CD update each: the updates of steps_per_batch 1 on the same loader, bit for bit."""

    class OneBatchAtATime(LightningDataModule):
        batch_size = 64

        def pretrain_dataloader(self):
            return digits.pretrain_dataloader()

    seed_everything(0)
    theirs = textbook_dbn(hidden=[16], pretrain_epochs=2)  # steps_per_batch 8, which it cannot group
    pretrain(theirs, OneBatchAtATime(), lambda s, e: _trainer(e))
    seed_everything(0)
    ours = textbook_dbn(hidden=[16], pretrain_epochs=2, steps_per_batch=1)
    pretrain(ours, digits, lambda s, e: _trainer(e, limit_val_batches=0))
    assert theirs.pretrained and torch.equal(theirs.rbms[0].weight, ours.rbms[0].weight)


def test_a_batch_of_images_alone_pretrains_flattened(digits):
    """A train_dataloader serving x alone, as (B, 1, 8, 8) images: the stage flattens them."""

    class Images(LightningDataModule):
        def train_dataloader(self):
            return DataLoader(digits.pretrain_x.reshape(-1, 1, 8, 8), batch_size=64)

    model = textbook_dbn(hidden=[16], pretrain_epochs=1)
    start = model.rbms[0].weight.clone()
    pretrain(model, Images(), lambda s, e: _trainer(e))
    assert model.pretrained and not torch.equal(start, model.rbms[0].weight)


def test_bernoulli_dbn_refuses_unscaled_pixels(digits):
    class Unscaled(DigitsDataModule):
        def setup(self, stage):
            super().setup(stage)
            self.pretrain_x = self.pretrain_x * 16  # raw 0..16 pixel values

    with pytest.raises(ValueError, match=r"Bernoulli visible units expect probabilities in \[0, 1\]"):
        pretrain(textbook_dbn(hidden=[16]), Unscaled(), lambda s, e: _trainer(e))
    with pytest.raises(ValueError, match=r"has shape \(64, 64\) but RBM 1 expects \(batch, 784\)"):
        pretrain(DBN(recipe="textbook", num_classes=10, input_size=784, hidden=[16]), digits, lambda s, e: _trainer(e))


@pytest.mark.parametrize(
    "scaling, options, cause",
    [
        ("standardize", dict(visible_units="gaussian", gaussian_lr=5.0), r"Gaussian.*model.gaussian_lr 0.5\b"),
        ("unit", dict(pretrain_lr=1e38), r"model.pretrain_lr 1e\+37\b.*inputs outside \[0, 1\]"),
    ],
)
def test_divergence_stops_the_stage_with_the_cause_named(scaling, options, cause):
    seed_everything(0)
    data = DigitsDataModule(batch_size=32, scaling=scaling)
    model = textbook_dbn(hidden=[32], pretrain_epochs=3, **options)
    with pytest.raises(
        FloatingPointError, match=rf"RBM 1 diverged .* epoch 0.*{cause}.*NaN/Inf inputs.*Last good checkpoint"
    ):
        pretrain(model, data, lambda stage, epochs: _trainer(epochs))


def test_fine_tuning_divergence_stops_the_run_with_the_fix_named(digits):
    seed_everything(0)
    model = Baseline(
        num_classes=10, input_size=64, hidden=[32], init="normal", init_std=100.0, optimizer="sgd", lr=1e12
    )
    with pytest.raises(
        FloatingPointError, match=r"fine-tuning diverged .* epoch 0.*model.lr.*gradient_clip_val.*NaN/Inf"
    ):
        _trainer(2).fit(model, datamodule=digits)


def test_gaussian_dbn_trains_at_its_default_rate_on_standardised_digits():
    seed_everything(0)
    data = DigitsDataModule(batch_size=32, scaling="standardize")
    model = textbook_dbn(hidden=[64, 32], visible_units="gaussian", pretrain_epochs=3)
    pretrain(model, data, lambda stage, epochs: _trainer(epochs))
    assert all(torch.isfinite(p).all() for p in model.rbms.parameters())


def test_an_imported_stack_is_extended_by_pretraining_new_layers_on_top(digits, tmp_path):
    from dbn_init.io import save_stack

    seed_everything(0)
    bottom = textbook_dbn(hidden=[32], pretrain_epochs=1)
    pretrain(bottom, digits, lambda stage, epochs: _trainer(epochs))
    path = save_stack(list(bottom.rbms), tmp_path / "bottom.safetensors")
    stages = []
    deeper = textbook_dbn(hidden=[32, 16], pretrain_epochs=1, pretrained=str(path))
    pretrain(deeper, digits, lambda stage, epochs: stages.append(stage) or _trainer(epochs))
    assert stages == [1]  # only the new top RBM was trained
    assert torch.equal(deeper.rbms[0].weight, bottom.rbms[0].weight)
    assert int(deeper.stages_done) == 2


def test_an_imported_stack_is_refused_on_data_scaled_otherwise_than_it_was_pretrained(digits, tmp_path):
    from dbn_init.io import save_stack
    from dbn_init.rbm import make_rbm

    path = save_stack([make_rbm(64, 16, "gaussian")], tmp_path / "g.safetensors", scaling="standardize")
    model = textbook_dbn(hidden=[16], visible_units="gaussian", pretrained=str(path))
    with pytest.raises(
        ValueError, match=r"scaled 'standardize' but this data is scaled 'unit'.*data.scaling standardize"
    ):
        pretrain(model, digits, lambda stage, epochs: _trainer(epochs))
    assert int(model.stages_done) == 0  # nothing imported
    pretrain(model, DigitsDataModule(batch_size=64, scaling="standardize"), lambda stage, epochs: _trainer(epochs))
    assert int(model.stages_done) == 1


def test_real_valued_features_spanning_1e3_pretrain_a_gaussian_dbn_under_standardize():
    """Wine's 13 features stretched to [-1e3, 1e3]: standardised on the training split, a Gaussian
    first RBM pretrains on them without diverging and the fine-tuned DBN classifies the test split."""
    from sklearn.datasets import load_wine

    from dbn_init import ArrayDataModule

    x, y = load_wine(return_X_y=True)
    x = (x - x.min(0)) / (x.max(0) - x.min(0)) * 2e3 - 1e3  # every feature spans [-1e3, 1e3]
    data = ArrayDataModule(x, y, scaling="standardize", batch_size=16)
    seed_everything(0)
    model = DBN(
        recipe="textbook", input_size=None, num_classes=None, hidden=[32], visible_units="gaussian", pretrain_epochs=10
    )
    trainer = _trainer(30, limit_val_batches=0)
    trainer.fit(model, datamodule=data)
    assert model.pretrained and torch.isfinite(model.rbms[0].weight).all()
    assert trainer.test(model, datamodule=data, verbose=False)[0]["test_acc"] > 0.85


def test_transform_is_the_stacks_top_hidden_probabilities_and_sample_runs_down_to_the_input(digits):
    seed_everything(0)
    model = textbook_dbn(hidden=[32, 16], pretrain_epochs=2)
    pretrain(model, digits, lambda s, e: _trainer(e, limit_val_batches=0))
    x = digits.test_x[:10]
    features = model.transform(x)
    expected = torch.sigmoid(
        torch.sigmoid(x @ model.rbms[0].weight.T + model.rbms[0].hidden_bias) @ model.rbms[1].weight.T
        + model.rbms[1].hidden_bias
    )
    torch.testing.assert_close(features, expected)
    samples = model.sample(5, steps=20, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (5, 64) and 0 <= samples.min() and samples.max() <= 1  # pixel probabilities
    again = model.sample(5, steps=20, generator=torch.Generator().manual_seed(0))
    assert torch.equal(samples, again)
    # the top RBM's chain mixes towards its model: its pixels are not the uniform noise it starts from
    assert samples.std() > 0.1


def test_pretrain_stack_is_seeded_and_leaves_the_callers_random_state_alone(digits):
    from dbn_init import pretrain_stack

    x = digits.pretrain_x[:300]
    torch.manual_seed(5)
    before = torch.get_rng_state()
    first = pretrain_stack(x, [8], epochs=1, batch_size=64, seed=3)
    assert torch.equal(before, torch.get_rng_state())
    torch.manual_seed(6)  # another global state: the same RBMs
    assert torch.equal(first[0].weight, pretrain_stack(x, [8], epochs=1, batch_size=64, seed=3)[0].weight)
    assert not torch.equal(first[0].weight, pretrain_stack(x, [8], epochs=1, batch_size=64, seed=4)[0].weight)


def test_a_datamodule_from_datasets_gives_the_stages_its_validation_set(digits):
    from lightning.pytorch.callbacks import Callback as _Callback

    class Validated(_Callback):
        ran = 0

        def on_validation_epoch_end(self, trainer, stage):
            Validated.ran += 1

    data = LightningDataModule.from_datasets(train_dataset=TensorDataset(digits.pretrain_x),
                                             val_dataset=TensorDataset(digits.val_x), batch_size=64)  # fmt: skip
    pretrain(textbook_dbn(hidden=[8], pretrain_epochs=1), data,
             lambda s, e: _trainer(e, callbacks=[Validated()], num_sanity_val_steps=0))  # fmt: skip
    assert Validated.ran == 1


# --- the modern RBM recipe: NReLU units, chains, tempering, centring, schedules -------------
def _stage_fit(model, data, epochs=1, **options):
    """Fit RBM 1's stage of ``model`` alone; the stage and its Trainer (pretrain() keeps both to itself)."""
    stage, trainer = model.stage(0), _trainer(epochs, **options)
    trainer.fit(stage, datamodule=PretrainData(data, model.cd.steps_per_batch, prepared=True))
    return stage, trainer


def test_pcd_keeps_the_chosen_number_of_chains_and_resumes_them_from_checkpoints(digits, tmp_path):
    seed_everything(0)
    model = textbook_dbn(hidden=[16], pretrain_epochs=1, persistent=True, pcd_chains=37)
    stage, trainer = _stage_fit(model, digits, limit_val_batches=0)
    assert stage.chain.shape == (37, 64) and set(stage.chain.unique().tolist()) <= {0.0, 1.0}
    trainer.save_checkpoint(tmp_path / "stage.ckpt")
    saved = torch.load(tmp_path / "stage.ckpt", weights_only=True)["dbn_init"]["chain"]
    assert torch.equal(saved, stage.chain)
    resumed = textbook_dbn(hidden=[16], pretrain_epochs=2, persistent=True, pcd_chains=37).stage(0)
    resumed.on_load_checkpoint(torch.load(tmp_path / "stage.ckpt", weights_only=True))
    assert torch.equal(resumed.chain, stage.chain)


def test_parallel_tempering_runs_its_ladder_and_logs_the_swap_rates(digits):
    seed_everything(0)
    model = textbook_dbn(
        hidden=[16],
        pretrain_epochs=1,
        pt_temperatures=4,
        pt_min_beta=0.7,
        pcd_chains=20,
    )
    stage, trainer = _stage_fit(model, digits, limit_val_batches=0)
    assert stage.chain.shape == (4, 20, 64)
    torch.testing.assert_close(stage.betas, torch.tensor([0.7, 0.8, 0.9, 1.0]))
    rate, low = (float(trainer.callback_metrics[f"rbm1/pt_swap_rate{s}"]) for s in ("", "_min"))
    assert 0.0 < low <= rate <= 1.0  # neighbours 0.1 apart in beta do swap on digits
    assert torch.isfinite(model.rbms[0].weight).all()


def test_centring_offsets_track_the_data_and_the_centred_stack_transfers_as_an_ordinary_one(digits):
    seed_everything(0)
    model = textbook_dbn(
        hidden=[16],
        pretrain_epochs=3,
        centring=True,
        centring_rate=0.05,
    )
    stage, _ = _stage_fit(model, digits, epochs=3, limit_val_batches=0)
    visible, hidden = stage.offsets
    torch.testing.assert_close(visible, digits.pretrain_x.mean(0), atol=0.04, rtol=0)  # sliding mean of the batches
    probs = model.rbms[0].hidden_probs(digits.pretrain_x).mean(0)
    torch.testing.assert_close(hidden, probs.detach(), atol=0.05, rtol=0)
    model.transfer()
    x = digits.val_x
    with torch.no_grad():
        assert torch.equal(model.mlp.forward_features(x), up_pass(model.rbms, x))


def test_a_relu_stack_pretrains_and_transfers_into_a_relu_mlp_exactly(digits, tmp_path):
    from dbn_init import load_pretrained_
    from dbn_init.io import load_stack, save_stack
    from dbn_init.rbm import GaussianRBM

    seed_everything(0)
    model = DBN(
        num_classes=10,
        input_size=64,
        hidden=[32, 16],
        pretrain_epochs=2,
        hidden_units="relu",
        pretrain_lr=0.01,
        rectified_lr=0.01,
    )
    pretrain(model, digits, lambda stage, epochs: _trainer(epochs))
    model.eval()  # the recipe's dropout acts in training only
    assert model.mlp.activations == ["relu", "relu"] and isinstance(
        model.rbms[1], GaussianRBM
    )  # RBM 2 models rectified values
    x = digits.val_x
    with torch.no_grad():
        h = up_pass(model.rbms, x)
        assert torch.equal(model.mlp.forward_features(x), h)
        assert 0.1 < float((h > 0).float().mean()) < 0.9 and float(h.max()) > 1  # rectified, not probabilities
        save_stack(model.rbms, tmp_path / "relu.safetensors")
        stack = load_stack(tmp_path / "relu.safetensors")
        assert [r.hidden_units for r in stack.rbms] == ["relu", "relu"]
        net = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 16), torch.nn.ReLU())
        load_pretrained_(net, stack)
        assert torch.equal(net(x), h)


@pytest.mark.parametrize(
    "schedule, factors",
    [("constant", [1, 1, 1, 1]), ("linear", [1, 0.75, 0.5, 0.25]), ("cosine", [1, 0.853553, 0.5, 0.146447])],
)
def test_each_stage_follows_its_learning_rate_schedule_over_its_own_epochs(digits, schedule, factors):
    class Record(Callback):
        def __init__(self):
            self.lrs = []

        def on_train_batch_start(self, trainer, stage, batch, batch_idx):
            if batch_idx == 0:
                self.lrs.append([g["lr"] for g in stage.optimizers().optimizer.param_groups])

    record = Record()
    model = textbook_dbn(
        hidden=[16, 8],
        pretrain_epochs=[4, 2],
        pretrain_lr_schedule=schedule,
        pretrain_lr=0.2,
    )
    pretrain(model, digits, lambda stage, epochs: _trainer(epochs, limit_val_batches=0, callbacks=[record]))
    stage2 = {"constant": [1, 1], "linear": [1, 0.5], "cosine": [1, 0.5]}[schedule]
    expected = [0.2 * f for f in [*factors, *stage2] for _ in range(2)]  # both parameter groups alike
    assert [lr for lrs in record.lrs for lr in lrs] == pytest.approx(expected, abs=1e-6)


def test_a_head_only_warm_up_leaves_the_body_unchanged_then_trains_it_at_its_own_rate(digits):
    seed_everything(0)
    options = dict(warmup_epochs=2, body_lr_scale=0.5, lr=0.01, lr_schedule="constant", centre_inputs=False)
    model = Baseline(input_size=64, num_classes=10, hidden=[32], **options)  # centring would move the first bias
    body, head = (copy.deepcopy(m.state_dict()) for m in (model.mlp.features, model.mlp.head))
    trainer = _trainer(2, limit_val_batches=0)
    trainer.fit(model, datamodule=digits)
    assert all(torch.equal(v, model.mlp.features.state_dict()[k]) for k, v in body.items())  # rate 0: untouched
    assert not torch.equal(head["weight"], model.mlp.head.weight)
    groups = trainer.optimizers[0].param_groups
    assert [g["lr"] for g in groups] == [0.005, 0.01]  # after the warm-up: the body at 0.5 x the head's rate
    assert all(p.requires_grad for p in model.parameters())  # nothing switched off, so DDP syncs every gradient


def test_a_cosine_schedule_takes_the_rate_from_lr_to_zero_over_the_fit_s_steps_after_the_warm_up(digits):
    class Record(Callback):
        def __init__(self):
            self.lrs = []

        def on_train_batch_start(self, trainer, model, batch, batch_idx):  # the rates this step takes
            self.lrs.append([g["lr"] for g in trainer.optimizers[0].param_groups])

    record = Record()
    seed_everything(0)
    model = Baseline(input_size=64, num_classes=10, hidden=[32], lr=0.01, lr_schedule="cosine", warmup_epochs=1)
    _trainer(2, limit_val_batches=0, limit_train_batches=4, callbacks=[record]).fit(model, datamodule=digits)
    head = [0.005 * (1 + math.cos(math.pi * step / 8)) for step in range(8)]  # 2 epochs of 4 steps
    expected = [[0.0 if step < 4 else rate, rate] for step, rate in enumerate(head)]  # [body, head] per step
    assert [lr for lrs in record.lrs for lr in lrs] == pytest.approx([lr for lrs in expected for lr in lrs])
    endless = _trainer(-1, max_steps=-1, limit_val_batches=0)
    with pytest.raises(ValueError, match="this fit has no end: set max_epochs or max_steps, or lr_schedule 'constant'"):
        endless.fit(Baseline(input_size=64, num_classes=10, hidden=[32], lr_schedule="cosine"), datamodule=digits)


def test_a_cosine_fit_resumed_after_its_first_epoch_ends_with_the_uninterrupted_fit_s_weights(digits, tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    class StopAfterFirstEpoch(Callback):
        def on_train_epoch_end(self, trainer, model):
            trainer.should_stop = True

    def fit(folder, callbacks=(), ckpt_path=None):
        seed_everything(0)
        model = Baseline(input_size=64, num_classes=10, hidden=[32], lr=0.01, lr_schedule="cosine")
        checkpoints = ModelCheckpoint(dirpath=tmp_path / folder, save_last=True)
        trainer = _trainer(3, limit_val_batches=0, limit_train_batches=4, enable_checkpointing=True,
                           callbacks=[checkpoints, *callbacks])  # fmt: skip
        trainer.fit(model, datamodule=digits, ckpt_path=ckpt_path)
        return model, trainer

    uninterrupted, _ = fit("whole")
    fit("stopped", callbacks=[StopAfterFirstEpoch()])  # its last.ckpt: after 4 of the 12 steps
    resumed, trainer = fit("resumed", ckpt_path=tmp_path / "stopped" / "last.ckpt")
    assert trainer.global_step == 12 and trainer.lr_scheduler_configs[0].scheduler.last_epoch == 12
    for key, value in uninterrupted.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key


def test_start_decay_pulls_the_body_toward_its_start_and_a_resumed_fit_keeps_that_start(digits, tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    plain = dict(centre_inputs=False)  # the start as drawn (centring would move the first bias when the fit sets up)

    def fit(start_decay, epochs=2, **kw):
        seed_everything(0)
        model = Baseline(input_size=64, num_classes=10, hidden=[32], lr=0.01, start_decay=start_decay, **plain)
        start = [p.detach().clone() for p in model.mlp.features.parameters()]
        _trainer(epochs, limit_val_batches=0, **kw).fit(model, datamodule=digits)
        drift = sum(float((p - p0).pow(2).sum()) for p, p0 in zip(model.mlp.features.parameters(), start))
        return model, start, drift

    free, _, free_drift = fit(0.0)
    pulled, start, drift = fit(0.5, enable_checkpointing=True, callbacks=[ModelCheckpoint(dirpath=tmp_path)])
    assert free._start is None and drift < 0.5 * free_drift
    assert all(torch.equal(a, b) for a, b in zip(pulled._start, start))
    x, y = digits.val_x[:64], digits.val_y[:64]  # the loss is cross-entropy + start_decay / 2 * squared drift
    pulled.on_train_epoch_start()
    with torch.no_grad():
        penalty = pulled.training_step((x, y), 0) - F.cross_entropy(pulled(x), y)
    assert float(penalty) == pytest.approx(0.25 * drift, rel=1e-4)

    resumed = Baseline(input_size=64, num_classes=10, hidden=[32], lr=0.01, start_decay=0.5, **plain)
    (ckpt,) = tmp_path.glob("*.ckpt")
    _trainer(3, limit_val_batches=0).fit(resumed, datamodule=digits, ckpt_path=ckpt)
    assert all(torch.equal(a, b) for a, b in zip(resumed._start, start))  # not the checkpoint's weights


def test_dropout_acts_in_training_only_and_leaves_the_transfer_exact(digits):
    seed_everything(0)
    model = textbook_dbn(hidden=[32], pretrain_epochs=1, dropout=0.5)
    pretrain(model, digits, lambda stage, epochs: _trainer(epochs))
    x = digits.val_x
    with torch.no_grad():
        model.eval()
        assert torch.equal(model.mlp.forward_features(x), up_pass(model.rbms, x))
        model.train()
        dropped = model.mlp.forward_features(x)
        assert 0.4 < float((dropped == 0).float().mean()) < 0.6  # sigmoid units are never 0 but where dropped


def test_input_dropout_drops_input_features_in_training_only(digits):
    seed_everything(0)
    model = Baseline(input_size=64, num_classes=10, hidden=[32], input_dropout=0.5)
    x = digits.val_x
    with torch.no_grad():
        model.train()
        torch.manual_seed(1)
        dropped = model.mlp.forward_features(x)
        torch.manual_seed(1)
        mask = F.dropout(torch.ones_like(x), 0.5)  # the same draw: kept inputs scaled by 1 / (1 - p)
        assert torch.equal(dropped, model.mlp.features(x * mask))
        assert not torch.equal(dropped, model.mlp.features(x))
        model.eval()
        assert torch.equal(model.mlp.forward_features(x), model.mlp.features(x))
    assert [name for name, _ in model.mlp.named_parameters()][0] == "features.0.weight"  # names as without it


def test_cross_option_rules_are_refused_with_the_fix():
    with pytest.raises(
        UsageError, match=r"hidden_units is relu \(the default recipe.s is relu\): parallel tempering and centring need"
    ):
        DBN(hidden_units="relu", pt_temperatures=3)
    # both leave the transferred ReLUs off for nearly every row: chance accuracy on digits (PCD) and crabs (sparsity)
    with pytest.raises(
        UsageError, match=r"model.persistent: persistent chains turn NReLU units off .*model.persistent false"
    ):
        DBN(persistent=True)
    with pytest.raises(UsageError, match=r"model.sparsity_cost: the sparsity penalty pulls the mean of sigmoid"):
        DBN(sparsity_target=0.1, sparsity_cost=0.1)
    for options in (dict(persistent=True), dict(sparsity_target=0.1, sparsity_cost=0.1)):
        assert DBN(**options, recipe="textbook").hparams.hidden_units == "sigmoid"  # the fix the messages name
    assert DBN(sparsity_target=0.1).hparams.sparsity_target == 0.1  # no cost: no penalty
    # an autoencoder's linear code layer: its chains may persist, its units have no sigmoid mean to pull
    autoencoder = dict(task="reconstruction", recipe="textbook", hidden=[16, 2])
    assert DBN(**autoencoder, persistent=True).hparams.hidden_units == ["sigmoid", "linear"]
    with pytest.raises(UsageError, match=r"hidden_units is \['sigmoid', 'linear'\]"):
        DBN(**autoencoder, sparsity_target=0.1, sparsity_cost=0.1)
    with pytest.raises(UsageError, match=r"ais_chains: AIS needs the free energy"):
        DBN(hidden_units="relu", ais_chains=10)
    with pytest.raises(UsageError, match=r"pcd_chains is set but no chains persist; add model.persistent true"):
        DBN(recipe="textbook", pcd_chains=100)
    with pytest.raises(UsageError, match=r"dropout: expected a finite number in \[0, 1\), got 1.0"):
        Baseline(dropout=1.0)


def test_a_stage_trainer_keeps_the_fits_batch_limits_and_announces_no_default_one(caplog):
    """A stage runs the batches its fit runs; the default (every batch) passes on unannounced, where
    an explicit 1.0 would print "100% of the batches will be used" for every stage."""
    lightning_log = logging.getLogger("lightning.pytorch")  # it does not propagate to pytest's root handler
    lightning_log.addHandler(caplog.handler)
    try:
        for given, expected in ((None, 1.0), (1, 1), (1.0, 1.0), (0.5, 0.5), (3, 3)):
            fit = Trainer(limit_train_batches=given, limit_val_batches=given, logger=False, enable_progress_bar=False)
            caplog.clear()
            stage = stage_trainer(fit, 0, 1)
            assert (stage.limit_train_batches, stage.limit_val_batches) == (expected, expected), given
            assert type(stage.limit_train_batches) is type(expected)  # 1 batch stays 1 batch, not 100% of them
            assert "100% of the batches" not in caplog.text, given
    finally:
        lightning_log.removeHandler(caplog.handler)


def test_a_failure_s_last_good_checkpoint_may_be_the_one_the_fit_resumed_from(tmp_path):
    """A resumed stage that fails before its first save names the checkpoint it resumed from."""
    from types import SimpleNamespace

    from dbn_init.monitor import newest_checkpoint

    resumed = tmp_path / "rbm1-last.ckpt"
    resumed.write_bytes(b"")
    trainer = SimpleNamespace(checkpoint_callbacks=[], ckpt_path=str(resumed))
    assert newest_checkpoint(trainer) == str(resumed)
    assert newest_checkpoint(SimpleNamespace(checkpoint_callbacks=[], ckpt_path=None)) == "none saved yet"


def test_centred_inputs_keep_the_start_s_function_and_travel_in_checkpoints(digits, tmp_path):
    """centre_inputs reparametrises the first layer, W (x - mu) + b + W mu: the transferred DBN still
    computes the stack's up-pass and a scheme's start is unchanged; the fit measures mu on the
    pretraining rows, and a checkpoint restores it with the weights."""
    x = digits.test_x
    seed_everything(0)
    dbn = DBN(hidden=[32, 16], pretrain_epochs=1, centre_inputs=True)
    _trainer(0).fit(dbn, datamodule=digits)
    torch.testing.assert_close(dbn.mlp.input_mean, digits.pretrain_x.double().mean(0).float())
    torch.testing.assert_close(dbn.eval().mlp.forward_features(x), up_pass(dbn.rbms, x), rtol=1e-5, atol=1e-5)
    starts = []
    for centred in (False, True):
        seed_everything(1)
        baseline = Baseline(hidden=[32], centre_inputs=centred)
        _trainer(0).fit(baseline, datamodule=digits)
        starts.append(baseline.eval()(x))
    torch.testing.assert_close(starts[1], starts[0], rtol=1e-5, atol=1e-5)
    trainer = _trainer(1)
    trainer.fit(dbn, datamodule=digits)
    trainer.save_checkpoint(tmp_path / "centred.ckpt")
    again = DBN.load_from_checkpoint(tmp_path / "centred.ckpt", weights_only=False)
    assert torch.equal(again.mlp.input_mean, dbn.mlp.input_mean)
    assert torch.equal(again.eval()(x), dbn.eval()(x))

    class Plain(LightningDataModule):  # a DataModule of one's own: the mean of the rows its loader serves
        def train_dataloader(self):
            return DataLoader(TensorDataset(digits.pretrain_x, digits.pretrain_y), batch_size=64)

    baseline = Baseline(hidden=[8], centre_inputs=True)
    _trainer(1, limit_val_batches=0).fit(baseline, datamodule=Plain())
    torch.testing.assert_close(baseline.mlp.input_mean, digits.pretrain_x.double().mean(0).float())


@pytest.mark.parametrize("task", ["regression", "reconstruction"])
def test_a_checkpoint_watching_another_tasks_metric_is_refused_before_pretraining(task):
    """A classification config's ModelCheckpoint(monitor="val_acc") on a regression or an
    autoencoder would fail after pretraining, at the first fine-tuning epoch's end."""
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
    from sklearn.datasets import load_diabetes

    x, y = load_diabetes(return_X_y=True)
    data = ArrayDataModule(x, y if task == "regression" else None, targets="values")
    model = DBN(hidden=[8], task=task, pretrain_epochs=1)
    trainer = _trainer(1, callbacks=[ModelCheckpoint(monitor="val_acc", mode="max")], enable_checkpointing=True)
    with pytest.raises(UsageError, match=rf"ModelCheckpoint monitors val_acc, which a {task} never logs"):
        trainer.fit(model, datamodule=data)
    assert not model.pretrained
    _trainer(1, callbacks=[EarlyStopping(monitor="val_loss")]).fit(model, datamodule=data)  # one it logs
    assert model.pretrained


def test_fit_on_plain_dataloaders_names_the_datamodule_where_the_model_reads_one(digits_split):
    """Lightning's fit(model, train_dataloaders=...) form: one line naming the DataModule form where
    the model needs one (sizes from the data, the input mean, pretraining); a model that needs
    none fits the loaders."""
    x, y = digits_split[0][:200] / 16, digits_split[2][:200]
    loader = DataLoader(TensorDataset(torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y)), batch_size=50)
    for model in (DBN(hidden=[8], pretrain_epochs=1), Baseline(hidden=[8], input_size=64, num_classes=10)):
        with pytest.raises(UsageError, match=r"given dataloaders; .*DatasetDataModule\(loader.dataset, scaling="):
            _trainer(1).fit(model, train_dataloaders=loader)
    sized = Baseline(hidden=[8], input_size=64, num_classes=10, centre_inputs=False)
    before = sized.mlp.head.weight.clone()
    _trainer(1).fit(sized, train_dataloaders=loader)
    assert not torch.equal(before, sized.mlp.head.weight)
    model = DBN(hidden=[8], pretrain_epochs=1)
    _trainer(1).fit(model, datamodule=DatasetDataModule(loader.dataset, scaling="none"))
    assert model.pretrained


def test_max_steps_alone_sets_the_cosine_s_length_and_the_warm_up_s_epoch():
    """A fit bounded by max_steps only: Lightning sizes no epoch before configure_optimizers."""
    for warmup in (0, 1):
        model = Baseline(hidden=[8], warmup_epochs=warmup)
        trainer = _trainer(-1, max_steps=12, limit_val_batches=0)
        trainer.fit(model, datamodule=DigitsDataModule(batch_size=64))
        assert trainer.global_step == 12 and trainer.optimizers[0].param_groups[1]["lr"] == pytest.approx(0.0)


def test_sampling_a_chain_that_runs_off_says_so_instead_of_returning_nans():
    dbn = DBN(input_size=4, num_classes=2, hidden=[4], visible_units="gaussian", pretrain_epochs=0)
    with torch.no_grad():  # NReLU hidden, Gaussian visible: a sweep multiplies the chain by about 3**2
        dbn.rbms[0].weight.copy_(3 * torch.eye(4))
    with pytest.raises(FloatingPointError, match=r"DBN.sample: the top RBM's Gibbs chain diverged .*recipe textbook"):
        dbn.sample(8, steps=200, generator=torch.Generator().manual_seed(0))
    dbn.rbms[0].weight.data.mul_(0.1)  # a contracting chain samples as before
    assert dbn.sample(8, steps=200, generator=torch.Generator().manual_seed(0)).isfinite().all()


def test_a_datamodule_serving_inputs_alone_is_refused_with_the_sizes_advice_not_an_index_error():
    from torch.utils.data import DataLoader, TensorDataset

    class InputsOnly(LightningDataModule):
        def train_dataloader(self):
            return DataLoader(TensorDataset(torch.rand(64, 8)), batch_size=16)  # batches are [x]

    trainer = Trainer(max_epochs=1, logger=False, enable_progress_bar=False, enable_checkpointing=False)
    with pytest.raises(UsageError, match=r"declare neither nor serve labels; pass them to the model"):
        trainer.fit(DBN(hidden=[4], pretrain_epochs=1), datamodule=InputsOnly())
