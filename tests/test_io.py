"""dbn_init.io and dbn_init.export on real files: safetensors, Lightning checkpoints, .npz, sklearn."""

import copy
import json
import os
import pickle
import signal
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from lightning.pytorch import LightningDataModule, Trainer
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.neural_network import BernoulliRBM
from torch.utils.data import DataLoader, TensorDataset

import dbn_init.io as dio
from dbn_init.constraints import OutputError, UsageError
from dbn_init.export import main as export_main
from dbn_init.io import FORMAT_VERSION, StackFile, from_sklearn, load_stack, save_stack
from dbn_init.mlp import MLP
from dbn_init.models import DBN, Baseline
from dbn_init.pretrain import pretrain
from dbn_init.rbm import RBM, GaussianRBM, make_rbm

KINDS = ("weight", "visible_bias", "hidden_bias")


def random_stack(sizes=(20, 12, 6), first="gaussian", seed=0):
    """An RBM stack with N(0, 1) weights and biases, so that copies are checked on real numbers."""
    g = torch.Generator().manual_seed(seed)
    rbms = []
    for i, (n_vis, n_hid) in enumerate(zip(sizes[:-1], sizes[1:])):
        rbm = make_rbm(n_vis, n_hid, first if i == 0 else "bernoulli")
        with torch.no_grad():
            for kind in KINDS:
                getattr(rbm, kind).copy_(torch.randn(getattr(rbm, kind).shape, generator=g))
        rbms.append(rbm)
    return rbms


def tensors_of(rbms):
    return {f"rbm.{i}.{k}": getattr(r, k).detach().clone().contiguous() for i, r in enumerate(rbms) for k in KINDS}


def our_metadata(units, sizes):
    return {
        "format": "dbn_init.rbm_stack",
        "format_version": "1",
        "visible_units": json.dumps(units),
        "sizes": json.dumps(sizes),
        "scaling": "unit",
    }


def assert_same(a, b):
    assert [type(r) for r in a] == [type(r) for r in b]
    for ra, rb in zip(a, b):
        for kind in KINDS:
            ta, tb = getattr(ra, kind), getattr(rb, kind)
            assert ta.dtype == tb.dtype == torch.float32
            assert torch.equal(ta, tb), kind


# --- round trips ----------------------------------------------------------------------------
def test_a_stack_recording_a_scaling_no_datamodule_knows_is_refused(tmp_path):
    # a hand-edited header: refused at load, not suggested back to the user as --data.scaling
    path = save_stack(random_stack(), tmp_path / "stack.safetensors")
    with safe_open(path, "pt") as f:
        metadata = f.metadata()
    save_file(load_file(path), path, metadata={**metadata, "scaling": "weird"})
    with pytest.raises(
        ValueError, match=r"metadata scaling must be one of \['unit', 'standardize', 'none'\], got 'weird'"
    ):
        load_stack(path)


def test_safetensors_round_trip_is_bit_identical_and_transfers_to_the_same_mlp(tmp_path):
    rbms = random_stack()
    with pytest.raises(ValueError, match=r"extra_metadata must map strings to strings, got \{'epochs': 10\}"):
        save_stack(rbms, tmp_path / "stack.safetensors", extra_metadata={"run": "r1", "epochs": 10})
    path = save_stack(rbms, tmp_path / "stack.safetensors", scaling="standardize", extra_metadata={"run": "r1"})
    loaded = load_stack(path, input_size=20, hidden=[12, 6])
    assert isinstance(loaded, StackFile)
    assert_same(loaded.rbms, rbms)
    assert isinstance(loaded.rbms[0], GaussianRBM) and type(loaded.rbms[1]) is RBM
    assert loaded.metadata == {
        "format": "dbn_init.rbm_stack",
        "format_version": FORMAT_VERSION,
        "visible_units": '["gaussian", "bernoulli"]',
        "hidden_units": '["sigmoid", "sigmoid"]',
        "sizes": "[20, 12, 6]",
        "scaling": "standardize",
        "binarize": "false",
        "image_shape": "null",
        "run": "r1",
    }
    assert FORMAT_VERSION == "2" and loaded.image_shape is None and loaded.stats == {}
    torch.manual_seed(0)
    mlp_a = MLP(20, [12, 6], 3, "sigmoid")
    mlp_b = copy.deepcopy(mlp_a)
    mlp_a.load_rbms(rbms)
    mlp_b.load_rbms(loaded.rbms)
    x = torch.randn(32, 20, generator=torch.Generator().manual_seed(1))
    out_a, out_b = mlp_a(x), mlp_b(x)
    assert torch.equal(out_a, out_b)
    assert out_a.std() > 0.05  # real, input-dependent numbers, not a constant
    # no temporary file is left next to the result
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stack.safetensors"]


def test_loading_does_not_move_the_callers_rng(tmp_path):
    path = save_stack(random_stack(), tmp_path / "s.safetensors")
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    load_stack(path)
    assert torch.equal(torch.rand(3), expected)


def test_npz_with_documented_keys_loads_and_a_shorter_stack_matches_a_hidden_prefix(tmp_path):
    rbms = random_stack()
    arrays = {f"{k}_{i}": getattr(r, k).detach().double().numpy() for i, r in enumerate(rbms) for k in KINDS}
    np.savez(tmp_path / "w.npz", visible_units=np.array(["gaussian", "bernoulli"]), **arrays)
    loaded = load_stack(tmp_path / "w.npz", input_size=20, hidden=[12, 6, 4])  # a third RBM comes later
    assert_same(loaded.rbms, rbms)  # float32 -> float64 -> float32 is exact


def test_foreign_safetensors_with_our_tensor_names_is_accepted_as_bernoulli(tmp_path):
    rbms = random_stack(first="bernoulli")
    save_file(tensors_of(rbms), str(tmp_path / "foreign.safetensors"))
    assert_same(load_stack(tmp_path / "foreign.safetensors").rbms, rbms)


# --- a real DBN checkpoint and the exporter -------------------------------------------------
class TinyData(LightningDataModule):
    def __init__(self, scaling: str = "unit") -> None:
        super().__init__()
        self.save_hyperparameters()

    def train_dataloader(self):
        g = torch.Generator().manual_seed(0)
        x, y = torch.rand(16, 64, generator=g), torch.randint(0, 10, (16,), generator=g)
        return DataLoader(TensorDataset(x, y), batch_size=8)


def test_a_stage_checkpoint_imports_only_the_rbms_trained_so_far(tmp_path):
    """rbm{k}-last.ckpt holds the whole stack, but the RBMs above k are still untrained."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    from dbn_init.data import DigitsDataModule

    torch.manual_seed(0)
    model = DBN(
        recipe="textbook", num_classes=10, input_size=64, hidden=[16, 8], visible_units="gaussian", pretrain_epochs=1
    )
    after_stage_1 = []

    def factory(stage, epochs):
        if stage == 1:
            after_stage_1.extend(copy.deepcopy(list(model.rbms[:1])))
        return Trainer(
            max_epochs=epochs,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            accelerator="cpu",
            devices=1,
            limit_val_batches=0,
            callbacks=[ModelCheckpoint(dirpath=tmp_path, filename=f"rbm{stage + 1}-last")],
        )

    pretrain(model, DigitsDataModule(batch_size=64, scaling="standardize"), factory)
    first, both = load_stack(tmp_path / "rbm1-last.ckpt"), load_stack(tmp_path / "rbm2-last.ckpt")
    assert len(first.rbms) == 1 and len(both.rbms) == 2
    assert_same(first.rbms, after_stage_1)
    assert_same(both.rbms, list(model.rbms))
    assert isinstance(first.rbms[0], GaussianRBM) and first.metadata["stage"] == "1"
    assert first.metadata["scaling"] == "standardize"  # recorded, so evaluate scales the data alike
    # a DBN importing stage 1's checkpoint pretrains RBM 2 itself
    stages = []
    dbn = DBN(
        recipe="textbook",
        num_classes=10,
        input_size=64,
        hidden=[16, 8],
        visible_units="gaussian",
        pretrain_epochs=1,
        pretrained=str(tmp_path / "rbm1-last.ckpt"),
    )
    pretrain(
        dbn,
        DigitsDataModule(batch_size=64, scaling="standardize"),
        lambda stage, epochs: (
            stages.append(stage)
            or Trainer(
                max_epochs=epochs,
                logger=False,
                enable_progress_bar=False,
                enable_model_summary=False,
                enable_checkpointing=False,
                accelerator="cpu",
                devices=1,
                limit_val_batches=0,
            )
        ),
    )
    assert stages == [1]
    assert_same(list(dbn.rbms[:1]), first.rbms)


def test_export_of_a_real_lightning_checkpoint(tmp_path, capsys):
    torch.manual_seed(0)
    model = DBN(
        recipe="textbook", num_classes=10, input_size=64, hidden=[16, 8], visible_units="gaussian", pretrain_epochs=0
    )
    trainer = Trainer(
        max_epochs=1,
        limit_train_batches=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        accelerator="cpu",
        devices=1,
    )
    trainer.fit(model, datamodule=TinyData(scaling="standardize"))
    ckpt = tmp_path / "dbn.ckpt"
    trainer.save_checkpoint(ckpt)
    out = tmp_path / "rbms.safetensors"

    assert export_main([str(ckpt), str(out)]) == 0
    exported = load_stack(out, input_size=64, hidden=[16, 8])
    assert_same(exported.rbms, list(model.rbms))
    assert isinstance(exported.rbms[0], GaussianRBM)
    assert exported.metadata["scaling"] == "standardize"
    assert exported.metadata["sizes"] == "[64, 16, 8]"
    assert_same(load_stack(ckpt).rbms, list(model.rbms))  # the checkpoint loads directly, too
    renamed = tmp_path / "misnamed.safetensors"  # read by its content, whatever its name
    renamed.write_bytes(ckpt.read_bytes())
    assert_same(load_stack(renamed).rbms, list(model.rbms))
    assert_same(load_stack(save_stack(model, tmp_path / "the_dbn.safetensors")).rbms, list(model.rbms))  # a DBN's
    # fitted without a data module that records its scaling: the Gaussian units' own (not "unit")
    bare = torch.load(ckpt, weights_only=True)
    del bare["datamodule_hyper_parameters"]
    torch.save(bare, tmp_path / "bare.ckpt")
    assert export_main([str(tmp_path / "bare.ckpt"), str(tmp_path / "bare.safetensors")]) == 0
    assert load_stack(tmp_path / "bare.safetensors").metadata["scaling"] == "standardize"

    before = out.read_bytes()
    assert export_main([str(ckpt), str(out)]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "--overwrite" in err and "Traceback" not in err
    assert out.read_bytes() == before
    assert export_main([str(ckpt), str(out), "--overwrite"]) == 0

    # --overwrite never lets the export replace its own input, nor write under another format's name
    before = ckpt.read_bytes()
    for bad_out, message in (
        (ckpt, "is the checkpoint being exported"),
        (tmp_path / "rbms.npz", "a .safetensors name"),
    ):
        assert export_main([str(ckpt), str(bad_out), "--overwrite"]) == 2
        assert message in capsys.readouterr().err
    assert ckpt.read_bytes() == before and not (tmp_path / "rbms.npz").exists()

    # a Baseline's checkpoint has an MLP but no RBMs: said so, with what to pass instead
    baseline = Baseline(num_classes=10, input_size=64, hidden=[16])
    torch.save(
        {"state_dict": baseline.state_dict(), "hyper_parameters": dict(baseline.hparams)}, tmp_path / "base.ckpt"
    )
    with pytest.raises(ValueError, match=r"base.ckpt is the checkpoint of a model without RBMs \(a Baseline's MLP\)"):
        load_stack(tmp_path / "base.ckpt")

    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint at all")
    assert export_main([str(garbage), str(tmp_path / "x.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "garbage.ckpt" in err and "Traceback" not in err
    assert not (tmp_path / "x.safetensors").exists()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_an_export_stopped_by_a_signal_mid_write_leaves_no_file_and_exits_128_plus_the_signal(
    signum, tmp_path, monkeypatch, capsys
):
    """The signal arrives while the stack is half written: the export stops with 143 or 130 and one
    line, and neither the output nor its temporary file is left for a user to take for whole."""
    ckpt = tmp_path / "dbn.ckpt"
    model = DBN(recipe="textbook", num_classes=10, input_size=64, hidden=[16], pretrain_epochs=0)
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, ckpt)
    real_save = dio.save_file

    def save_then_signal(tensors, filename, metadata=None):
        real_save(tensors, filename, metadata=metadata)
        Path(filename).write_bytes(Path(filename).read_bytes()[:100])  # as a write cut short
        os.kill(os.getpid(), signum)  # a real signal, to the real handler

    monkeypatch.setattr(dio, "save_file", save_then_signal)
    out = tmp_path / "rbms.safetensors"
    assert export_main([str(ckpt), str(out)]) == 128 + signum
    err = capsys.readouterr().err
    assert f"stopped by {signal.Signals(signum).name}" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dbn.ckpt"]
    assert signal.getsignal(signum) in (signal.SIG_DFL, signal.default_int_handler)  # handlers put back


# --- scikit-learn ---------------------------------------------------------------------------
def test_stacked_sklearn_bernoulli_rbms_import_with_identical_hidden_probabilities():
    x = load_digits().data / 16.0  # (1797, 64) in [0, 1]
    est0 = BernoulliRBM(n_components=16, learning_rate=0.05, n_iter=3, random_state=0).fit(x)
    h0 = est0.transform(x)
    est1 = BernoulliRBM(n_components=8, learning_rate=0.05, n_iter=3, random_state=1).fit(h0)
    rbms = load_stack([est0, est1], input_size=64, hidden=[16, 8]).rbms
    assert [(r.n_visible, r.n_hidden) for r in rbms] == [(64, 16), (16, 8)]
    p0 = rbms[0].hidden_probs(torch.tensor(x, dtype=torch.float32)).detach()
    np.testing.assert_allclose(p0.numpy(), h0, atol=2e-6)
    p1 = rbms[1].hidden_probs(p0).detach()
    np.testing.assert_allclose(p1.numpy(), est1.transform(h0), atol=2e-6)
    assert h0.std() > 0.05  # the RBMs learned something input-dependent
    assert_same(from_sklearn([est0, est1]), rbms)
    with pytest.raises(ValueError, match=r"estimators\[1\] \(BernoulliRBM\) is not a fitted BernoulliRBM; call fit"):
        from_sklearn([est0, BernoulliRBM(n_components=8)])


# --- validation errors ----------------------------------------------------------------------
def write_stack(path, tensors, metadata=None):
    save_file(tensors, str(path), metadata=metadata)
    return path


def test_transposed_weight_is_named_with_the_orientation_convention(tmp_path):
    t = tensors_of(random_stack())
    t["rbm.0.weight"] = t["rbm.0.weight"].t().contiguous()  # (20, 12): nn.Linear's transpose
    path = write_stack(tmp_path / "t.safetensors", t, our_metadata(["gaussian", "bernoulli"], [20, 12, 6]))
    with pytest.raises(
        ValueError,
        match=r"t\.safetensors: 1 problem\(s\)[\s\S]*rbm\.0\.weight has shape \(20, 12\)"
        r"[\s\S]*looks transposed; weight is \(n_hidden, n_visible\), like nn\.Linear",
    ):
        load_stack(path, input_size=20, hidden=[12, 6])


def test_bias_length_mismatch_states_the_convention(tmp_path):
    t = tensors_of(random_stack())
    t["rbm.1.hidden_bias"] = torch.zeros(5)
    path = write_stack(tmp_path / "b.safetensors", t)
    with pytest.raises(
        ValueError,
        match=r"rbm\.1\.hidden_bias has shape \(5,\), expected \(6,\) = \(n_hidden,\)"
        r".*like nn\.Linear",
    ):
        load_stack(path)


def test_broken_chain(tmp_path):
    t = {
        **tensors_of(random_stack((20, 12))),
        **{k.replace("rbm.0", "rbm.1"): v for k, v in tensors_of(random_stack((10, 6))).items()},
    }
    path = write_stack(tmp_path / "c.safetensors", t)
    with pytest.raises(ValueError, match=r"broken layer chain: layer 0 has n_hidden=12 but layer 1 has n_visible=10"):
        load_stack(path)


def test_input_size_and_hidden_mismatches(tmp_path):
    path = save_stack(random_stack(), tmp_path / "s.safetensors")
    with pytest.raises(ValueError, match=r"n_visible=20, expected input_size=784"):
        load_stack(path, input_size=784)
    with pytest.raises(
        ValueError,
        match=r"hidden sizes \[12, 6\] do not match hidden=\[12, 7, 3\]; "
        r"expected \[12, 7\]",
    ):
        load_stack(path, hidden=[12, 7, 3])
    with pytest.raises(ValueError, match=r"the stack has 2 RBMs \[12, 6\] but hidden=\[12\] has only 1 layers"):
        load_stack(path, hidden=[12])


def test_every_problem_is_reported_at_once_and_nan_inf_are_counted(tmp_path):
    t = tensors_of(random_stack())
    t["rbm.0.weight"][0, :3] = float("nan")
    t["rbm.0.weight"][1, 0] = float("inf")
    del t["rbm.1.visible_bias"]
    t["rbm.1.hidden_bias"] = t["rbm.1.hidden_bias"].long()
    t["rbm.3.weight"] = torch.zeros(2, 6)
    t["encoder.bias"] = torch.zeros(2)
    path = write_stack(tmp_path / "many.safetensors", t)
    with pytest.raises(ValueError) as info:
        load_stack(path)
    msg = str(info.value)
    assert "many.safetensors: 7 problem(s)" in msg
    assert "rbm.0.weight holds 3 NaN and 1 Inf value(s)" in msg
    assert "missing rbm.1.visible_bias" in msg
    assert "rbm.1.hidden_bias has dtype torch.int64, expected a floating dtype" in msg
    assert "layer indices must run 0..n-1 without gaps, found [0, 1, 3] (missing [2])" in msg
    assert "missing rbm.3.visible_bias" in msg and "missing rbm.3.hidden_bias" in msg
    assert "unexpected tensor names ['encoder.bias']; expected the scheme rbm.{i}.weight" in msg


def test_save_refuses_a_diverged_stack_before_writing(tmp_path):
    rbms = random_stack()
    with torch.no_grad():
        rbms[1].weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"rbms\[1\]\.weight holds 1 NaN and 0 Inf"):
        save_stack(rbms, tmp_path / "s.safetensors")
    with pytest.raises(ValueError, match=r"scaling must be one of \['unit', 'standardize', 'none'\], got 'minmax'"):
        save_stack(random_stack(), tmp_path / "s.safetensors", scaling="minmax")
    assert not list(tmp_path.iterdir())


def test_foreign_names_and_newer_versions_are_explained(tmp_path):
    foreign = {"encoder.weight": torch.zeros(3, 4), "encoder.bias": torch.zeros(3)}
    path = write_stack(tmp_path / "f.safetensors", foreign)
    with pytest.raises(
        ValueError,
        match=r"unexpected tensor names \['encoder.bias', 'encoder.weight'\]; expected "
        r"the scheme rbm\.\{i\}\.weight, rbm\.\{i\}\.visible_bias, rbm\.\{i\}\.hidden_bias",
    ):
        load_stack(path)
    meta = {**our_metadata(["bernoulli", "bernoulli"], [20, 12, 6]), "format_version": "3"}
    path = write_stack(tmp_path / "v3.safetensors", tensors_of(random_stack(first="bernoulli")), meta)
    with pytest.raises(
        ValueError,
        match=r"format_version is '3', and this dbn_init reads versions 1, 2; read it with "
        r"the dbn_init that wrote it, or upgrade dbn_init",
    ):
        load_stack(path)
    meta = our_metadata(["bernoulli", "softmax"], [20, 12, 7])
    path = write_stack(tmp_path / "m.safetensors", tensors_of(random_stack(first="bernoulli")), meta)
    with pytest.raises(ValueError, match=r"visible_units must list one of \['bernoulli', 'gaussian'\] per RBM \(2\)"):
        load_stack(path)


def test_npz_errors_use_the_npz_key_names(tmp_path):
    rbms = random_stack()
    arrays = {f"{k}_{i}": getattr(r, k).detach().numpy() for i, r in enumerate(rbms) for k in KINDS}
    arrays["weight_0"] = arrays["weight_0"].T
    np.savez(tmp_path / "w.npz", **arrays)
    with pytest.raises(ValueError, match=r"weight_0 has shape \(20, 12\).*looks transposed"):
        load_stack(tmp_path / "w.npz")
    one_based = {f"{k}_{i + 1}": v for i, r in enumerate(rbms) for k in KINDS for v in [getattr(r, k).detach().numpy()]}
    np.savez(tmp_path / "one_based.npz", **one_based)
    with pytest.raises(ValueError, match=r"layer indices must run 0..n-1 without gaps, found \[1, 2\]"):
        load_stack(tmp_path / "one_based.npz", input_size=20, hidden=[12, 6])
    np.savez(tmp_path / "obj.npz", weight_0=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match=r"obj\.npz is a corrupt \.npz, or holds object arrays that need pickle"):
        load_stack(tmp_path / "obj.npz")


def test_truncated_garbage_empty_and_missing_files(tmp_path):
    full = save_stack(random_stack(), tmp_path / "s.safetensors").read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(full[: len(full) // 2])
    with pytest.raises(ValueError, match=r"cut\.safetensors is a truncated or corrupt safetensors file"):
        load_stack(cut)
    head_cut = tmp_path / "head.safetensors"
    head_cut.write_bytes(full[:40])
    with pytest.raises(ValueError, match=r"head\.safetensors is a truncated or corrupt safetensors file"):
        load_stack(head_cut)
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"\x00" + np.random.default_rng(0).bytes(4096))
    with pytest.raises(
        ValueError,
        match=r"garbage\.bin is not a recognised weights file.*"
        r"expected a dbn_init \.safetensors",
    ):
        load_stack(garbage)
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.safetensors is empty \(0 bytes\)"):
        load_stack(empty)
    with pytest.raises(FileNotFoundError, match=r"no such file: .*nope\.safetensors"):
        load_stack(tmp_path / "nope.safetensors")
    with pytest.raises(ValueError, match=r"is not a regular file"):
        load_stack(tmp_path)


# --- pickles are never unpickled ------------------------------------------------------------
class Evil:
    """Unpickling this runs a shell command that creates a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_a_malicious_pickle_is_refused_and_never_runs(tmp_path, protocol):
    marker = tmp_path / "pwned"
    path = tmp_path / "weights.ckpt"  # the suffix lies; detection is by content
    path.write_bytes(pickle.dumps(Evil(marker), protocol=protocol))
    with pytest.raises(ValueError, match=r"weights\.ckpt") as info:
        load_stack(path)
    if protocol:
        assert "unpickling can execute arbitrary code, so dbn_init never does it" in str(info.value)
    else:  # protocol 0 is plain text with no magic number: refused as unknown content
        assert "is not a recognised weights file (unknown content)" in str(info.value)
    assert not marker.exists()


def test_torch_files_holding_pickled_objects_are_refused(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"state_dict": Evil(marker)}, tmp_path / "evil.ckpt")
    with pytest.raises(ValueError, match=r"holds pickled Python objects \(it holds posix\.system\)"):
        load_stack(tmp_path / "evil.ckpt")
    assert not marker.exists()
    torch.save(
        DBN(recipe="textbook", num_classes=10, input_size=64, hidden=[16, 8], pretrain_epochs=0), tmp_path / "whole.pt"
    )
    with pytest.raises(
        ValueError,
        match=r"whole\.pt holds pickled Python objects \(it holds dbn_init\.models\.DBN\)"
        r"[\s\S]*arbitrary code[\s\S]*save_stack\(rbms, 'out\.safetensors'\)[\s\S]*\.npz",
    ):
        load_stack(tmp_path / "whole.pt")


@pytest.mark.parametrize("compress", [0, 3, ("gzip", 3), ("xz", 3)])
def test_joblib_dumps_are_refused(tmp_path, compress):
    joblib = pytest.importorskip("joblib")
    path = tmp_path / "rbms.bin"
    joblib.dump({"weight_0": np.zeros((2, 3))}, path, compress=compress)
    with pytest.raises(
        ValueError,
        match=r"rbms\.bin looks like a (pickle|.*joblib dump \(a pickle\)); "
        r"refusing.*arbitrary code",
    ):
        load_stack(path)


# --- writing safely -------------------------------------------------------------------------
def test_a_folder_given_as_the_output_gets_a_file_name_suggested(tmp_path):
    (tmp_path / "out").mkdir()  # even with overwrite: replacing a folder by a file is never meant
    with pytest.raises(UsageError, match=r"out: it is a folder; give a file name, e\.g\. .*out/dbn\.safetensors"):
        save_stack(random_stack(seed=1), tmp_path / "out", overwrite=True)
    assert (tmp_path / "out").is_dir() and not any((tmp_path / "out").iterdir())
    with pytest.raises(UsageError, match=r"s\.npz: expected a \.safetensors name .*, e\.g\. .*s\.safetensors"):
        save_stack(random_stack(seed=1), tmp_path / "s.npz")  # np.load could not read what it would hold
    assert not (tmp_path / "s.npz").exists()


def test_overwrite_is_refused_unless_asked_and_a_crash_keeps_the_old_file(tmp_path, monkeypatch):
    path = save_stack(random_stack(seed=0), tmp_path / "s.safetensors")
    old = path.read_bytes()
    with pytest.raises(FileExistsError, match=r"s\.safetensors already exists; pass overwrite=True \(--overwrite"):
        save_stack(random_stack(seed=1), path)
    assert path.read_bytes() == old

    def crash(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(dio, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        save_stack(random_stack(seed=1), path, overwrite=True)
    assert path.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.safetensors"]
    monkeypatch.undo()

    save_stack(random_stack(seed=1), path, overwrite=True)
    assert_same(load_stack(path).rbms, random_stack(seed=1))


def test_unwritable_or_missing_folder_is_named(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match=r"folder .*no_such_dir does not exist"):
        save_stack(random_stack(), tmp_path / "no_such_dir" / "s.safetensors")

    def denied(**kwargs):
        raise PermissionError(13, "Permission denied")

    # chmod cannot make a folder unwritable for root (CI runs as root), so simulate the OS refusal
    monkeypatch.setattr(dio.tempfile, "mkstemp", denied)
    with pytest.raises(OutputError, match=rf"cannot write to folder {tmp_path} \(Permission denied\)"):
        save_stack(random_stack(), tmp_path / "s.safetensors")


# --- arbitrary bytes never escape as another exception type ---------------------------------
_VALID = None


def _valid_bytes():
    global _VALID
    if _VALID is None:
        import tempfile

        with tempfile.TemporaryDirectory() as d:
            _VALID = save_stack(random_stack((5, 3, 2)), os.path.join(d, "v.safetensors")).read_bytes()
    return _VALID


@st.composite
def weights_files(draw):
    kind = draw(st.sampled_from(["raw", "prefix", "header", "mutated"]))
    data = draw(st.binary(max_size=512))
    if kind == "prefix":  # a plausible safetensors length, then "{" and anything
        return struct.pack("<Q", draw(st.integers(0, len(data) + 16))) + b"{" + data
    if kind == "header":  # a well-formed start of a real header, then anything
        head = b'{"rbm.0.weight":{"dtype":"F32","shape":[3,5],"data_offsets":[0,' + data
        return struct.pack("<Q", len(head)) + head + draw(st.binary(max_size=128))
    if kind == "mutated":  # a valid file with bytes overwritten or cut off
        raw = bytearray(_valid_bytes())
        for pos, value in draw(st.lists(st.tuples(st.integers(0, len(raw) - 1), st.integers(0, 255)), max_size=6)):
            raw[pos] = value
        return bytes(raw[: draw(st.integers(0, len(raw)))])
    return data


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz") / "f.safetensors"


@settings(max_examples=200, deadline=None, derandomize=True, database=None)  # deterministic
@given(content=weights_files())
def test_arbitrary_bytes_load_or_raise_value_error(scratch, content):
    scratch.write_bytes(content)
    try:
        result = load_stack(scratch)
    except ValueError:
        return
    assert isinstance(result, StackFile) and result.rbms


def test_a_version_1_file_is_read_with_the_defaults_of_the_fields_version_2_added(tmp_path):
    rbms = random_stack(first="bernoulli")
    path = write_stack(
        tmp_path / "v1.safetensors", tensors_of(rbms), our_metadata(["bernoulli", "bernoulli"], [20, 12, 6])
    )
    loaded = load_stack(path)
    assert_same(loaded.rbms, rbms)
    assert loaded.hidden_units == ["sigmoid", "sigmoid"] and loaded.image_shape is None and loaded.stats == {}


def test_the_stack_records_the_data_transform_and_image_shape_and_applies_them(tmp_path):
    from dbn_init.data import DigitsDataModule
    from dbn_init.io import data_record

    data = DigitsDataModule(scaling="standardize")
    data.setup("fit")
    rbms = [make_rbm(64, 8, "gaussian")]
    loaded = load_stack(save_stack(rbms, tmp_path / "s.safetensors", **data_record(data)))
    assert loaded.image_shape == (8, 8) and loaded.scaling == "standardize"
    assert set(loaded.stats) == {"raw_low", "raw_high", "feature_mean", "feature_std"}
    digits = load_digits()
    train, _ = train_test_split(np.arange(len(digits.target)), test_size=0.2, stratify=digits.target, random_state=0)
    raw = torch.from_numpy(digits.images[train].reshape(-1, 64)).float()  # DigitsDataModule's training split
    # the recorded transform maps raw 0..16 pixels to what RBM 1 was trained on
    torch.testing.assert_close(loaded.scale(raw[data.pretrain_indices]), data.pretrain_x)


def test_an_exported_checkpoint_keeps_the_data_transform_and_scale_applies_it_as_the_datamodule_does(tmp_path, capsys):
    """unit scaling: new rows outside the training range are clamped, binarised data thresholded;
    standardize: the DBN checkpoint records the fitted statistics, so `export` keeps them."""
    from dbn_init.data import ArrayDataModule, DigitsDataModule

    digits = DigitsDataModule(scaling="unit", binarize=True)
    digits.setup("fit")
    stack = load_stack(save_stack([make_rbm(64, 8)], tmp_path / "b.safetensors", **dio.data_record(digits)))
    raw = torch.randint(0, 17, (20, 64)).float() * 1.5  # beyond the pixels' 0..16
    assert torch.equal(stack.scale(raw), digits.scale(raw)) and set(stack.scale(raw).unique().tolist()) <= {0.0, 1.0}

    x, y = load_wine_xy()
    wine = ArrayDataModule(x, y, scaling="standardize", batch_size=16)
    model = DBN(
        recipe="textbook", input_size=None, num_classes=None, hidden=[8], visible_units="gaussian", pretrain_epochs=1
    )
    trainer = Trainer(max_epochs=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                      enable_checkpointing=False, default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(model, datamodule=wine)
    trainer.save_checkpoint(tmp_path / "wine.ckpt")
    assert export_main([str(tmp_path / "wine.ckpt"), str(tmp_path / "wine.safetensors")]) == 0
    assert capsys.readouterr().out.startswith(
        f"wrote {tmp_path / 'wine.safetensors'}: 1 RBM(s) 13-8, scaling standardize"
    )
    exported = load_stack(tmp_path / "wine.safetensors")
    rows = torch.as_tensor(x[:5], dtype=torch.float32)
    torch.testing.assert_close(exported.scale(rows), wine.scale(rows))
    bare = load_stack(save_stack([make_rbm(13, 8, "gaussian")], tmp_path / "bare.safetensors", scaling="standardize"))
    with pytest.raises(ValueError, match="records scaling 'standardize' but not the transform's statistics"):
        bare.scale(rows)


def load_wine_xy():
    from sklearn.datasets import load_wine

    return load_wine(return_X_y=True)


def test_a_checkpoint_of_a_stack_with_one_unit_type_per_rbm_loads_with_those_types(tmp_path):
    dbn = DBN(input_size=6, num_classes=2, hidden=[5, 4, 3], hidden_units=["relu", "sigmoid", "linear"])
    torch.save({"state_dict": dbn.state_dict(), "hyper_parameters": dict(dbn.hparams)}, tmp_path / "dbn.ckpt")
    stack = load_stack(tmp_path / "dbn.ckpt")
    assert [r.hidden_units for r in stack.rbms] == ["relu", "sigmoid", "linear"]
    assert [r.visible_units for r in stack.rbms] == [r.visible_units for r in dbn.rbms]
    assert_same(stack.rbms, list(dbn.rbms))
