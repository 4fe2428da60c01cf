"""Tests for dbn_init.data: the IDX reader, file discovery, splits, scaling and loaders.

Real data throughout: sklearn's bundled digits, tiny IDX files written here, and the real
Fashion-MNIST from Debian's ``dataset-fashion-mnist`` when it is installed.
"""

import gzip
import multiprocessing
import os
import pickle
import struct
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch.utilities.data import _update_dataloader
from sklearn.datasets import load_digits, load_sample_images, load_wine
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from dbn_init.constraints import MissingFileError, UsageError
from dbn_init.data import (
    ArrayDataModule,
    DatasetDataModule,
    DigitsDataModule,
    FashionMNISTDataModule,
    ImageDataModule,
    MNISTDataModule,
    TensorBatches,
    load_idx_dataset,
    read_idx,
)
from dbn_init.data.base import _keep_batch
from dbn_init.experiments.make_image_folder import write_image_folder
from dbn_init.plots import image_grid

FASHION_ROOT = Path("/usr/share/datasets/fashion-mnist")
IDX_CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D, np.float64: 0x0E}
NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, IDX_CODES[array.dtype.type], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> Path:
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return path


def write_fake_mnist(folder: Path, n_train: int = 30, n_test: int = 10, gz: bool = False, n_train_labels=None):
    """Four IDX files of random 28x28 uint8 images with labels 0..9 cycling; returns the arrays."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = (
        rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        (np.arange(n_train if n_train_labels is None else n_train_labels) % 10).astype(np.uint8),
        rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        (np.arange(n_test) % 10).astype(np.uint8),
    )
    for name, array in zip(NAMES, arrays):
        write_idx(folder / (name + ".gz" if gz else name), array, gz=gz)
    return arrays


# ---------------------------------------------------------------- digits: splits, seeds, scaling


def test_digits_shapes_and_range(digits):
    assert (DigitsDataModule().input_size, DigitsDataModule.image_shape, digits.num_classes) == (64, (8, 8), 10)
    assert digits.dataset_name == "digits"
    assert len(digits.pretrain_x) + len(digits.val_x) + len(digits.test_x) == 1797
    assert (len(digits.test_x), len(digits.val_x), len(digits.pretrain_x)) == (360, 144, 1293)
    assert digits.train_x is digits.pretrain_x  # no num_labels: every training image is labelled
    for x, y in [(digits.train_x, digits.train_y), (digits.val_x, digits.val_y), (digits.test_x, digits.test_y)]:
        assert x.dtype == torch.float32 and y.dtype == torch.int64 and x.shape == (len(y), 64)
        assert x.min() == 0 and x.max() == 1
    assert torch.equal(digits.test_y.bincount(), torch.tensor([36, 36, 35, 37, 36, 37, 36, 36, 35, 36]))


def test_digits_splits_partition_the_dataset(digits):
    assert not set(digits.val_indices.tolist()) & set(digits.pretrain_indices.tolist())
    assert sorted(digits.val_indices.tolist() + digits.pretrain_indices.tolist()) == list(range(1437))
    # Every image lands in exactly one split: the rows of the three splits are the dataset's rows.
    rows = torch.cat([digits.pretrain_x, digits.val_x, digits.test_x]).mul(16).round().numpy()
    original = load_digits().data.astype(np.float32)
    assert np.array_equal(rows[np.lexsort(rows.T)], original[np.lexsort(original.T)])


def test_split_seed_fixes_validation_but_never_test(digits):
    same, other = DigitsDataModule(split_seed=0), DigitsDataModule(split_seed=1)
    same.setup("fit")
    other.setup("fit")
    assert torch.equal(same.val_indices, digits.val_indices) and torch.equal(same.val_x, digits.val_x)
    assert len(set(other.val_indices.tolist()) & set(digits.val_indices.tolist())) < 40  # ~14 expected by chance
    assert torch.equal(other.test_x, digits.test_x) and torch.equal(other.test_y, digits.test_y)


def test_num_labels_is_class_balanced_and_pretraining_keeps_everything(digits):
    dm = DigitsDataModule(num_labels=50)
    dm.setup("fit")
    assert torch.equal(dm.train_y.bincount(), torch.full((10,), 5))
    assert torch.equal(dm.pretrain_x, digits.pretrain_x) and len(dm.pretrain_x) == 1293
    assert set(dm.train_indices.tolist()) <= set(dm.pretrain_indices.tolist())
    assert torch.equal(dm.train_x, dm.pretrain_x[torch.searchsorted(dm.pretrain_indices, dm.train_indices)])
    uneven = DigitsDataModule(num_labels=53)
    uneven.setup("fit")
    assert uneven.train_y.bincount().tolist() == [6, 6, 6, 5, 5, 5, 5, 5, 5, 5]
    with pytest.raises(ValueError, match="training rows of class 0 for num_labels=1500, got 130"):
        DigitsDataModule(num_labels=1500).setup("fit")


def test_standardize_uses_pretrain_statistics(digits):
    dm = DigitsDataModule(scaling="standardize")
    dm.setup("fit")
    varying = digits.pretrain_x.std(0, unbiased=False) > 0.05
    assert 40 < varying.sum() < 64  # the digits' border pixels are (nearly) constant
    assert dm.pretrain_x.mean(0).abs().max() < 1e-5
    assert torch.allclose(dm.pretrain_x.std(0, unbiased=False)[varying], torch.ones(int(varying.sum())), atol=1e-4)
    assert dm.feature_std.min() >= 0.05 and dm.feature_mean.shape == dm.feature_std.shape == (64,)
    assert torch.allclose(dm.test_x, (digits.test_x - dm.feature_mean) / dm.feature_std)
    assert torch.equal(digits.feature_mean, torch.zeros(64)) and torch.equal(digits.feature_std, torch.ones(64))


def test_binarize():
    dm = DigitsDataModule(binarize=True)
    dm.setup("fit")
    for x in (dm.pretrain_x, dm.val_x, dm.test_x):
        assert set(x.unique().tolist()) == {0.0, 1.0}
    with pytest.raises(ValueError, match="binarize"):
        DigitsDataModule(binarize=True, scaling="standardize")


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(batch_size=0),
        dict(val_fraction=1.0),
        dict(val_fraction=-0.1),
        dict(num_labels=5),
        dict(num_labels=100.0),
        dict(scaling="minmax"),
        dict(num_workers=-1),
    ],
)
def test_bad_arguments_are_refused_at_once(kwargs):
    with pytest.raises(ValueError, match="expected"):
        DigitsDataModule(**kwargs)


def test_hyperparameters_are_saved_including_subclass_arguments():
    dm = MNISTDataModule(root="somewhere", batch_size=7)
    assert dm.hparams["root"] == "somewhere" and dm.hparams["batch_size"] == 7 and dm.hparams["download"] is False
    assert (dm.input_size, dm.dataset_name, FashionMNISTDataModule().dataset_name) == (784, "mnist", "fashion_mnist")
    with pytest.raises(TypeError):
        MNISTDataModule(batchsize=7)  # a YAML typo must fail, not vanish into **kwargs


def test_a_colour_image_datamodule_counts_every_channel_in_its_input_size():
    class Colour(ImageDataModule):  # a user's subclass with (C, H, W) images
        image_shape, pixel_max = (3, 4, 4), 255.0

        def _load(self):
            rng = np.random.default_rng(0)
            return (
                rng.integers(0, 256, (20, 3, 4, 4)),
                np.arange(20) % 10,
                rng.integers(0, 256, (5, 3, 4, 4)),
                np.arange(5),
            )

    dm = Colour(val_fraction=0.0)
    assert dm.input_size == 48  # 3 * 4 * 4, not 3 * 4
    dm.setup("fit")
    assert dm.pretrain_x.shape == (20, 48) and dm.pretrain_x.max() <= 1


# ---------------------------------------------------------------- loaders


def test_batches_are_fancy_indexed_and_cover_the_data_once():
    x, y = torch.randn(250, 5), torch.arange(250)  # y = row index, so each batch says where it came from
    ds = TensorBatches(x, y)
    bx, by = ds.__getitems__([7, 3, 249])
    assert torch.equal(bx, x[[7, 3, 249]]) and torch.equal(by, y[[7, 3, 249]])
    loader = DataLoader(ds, batch_size=32, shuffle=True, collate_fn=_keep_batch)
    seen = []
    for bx, by in loader:
        assert torch.equal(bx, x[by])
        seen.append(by)
    assert [len(b) for b in seen] == [32] * 7 + [26]
    assert torch.equal(torch.cat(seen).sort().values, y) and not torch.equal(torch.cat(seen), y)
    pickle.dumps(loader.collate_fn), pickle.dumps(ds)  # worker processes need both


def test_datamodule_loaders(digits):
    loader = digits.train_dataloader()
    batches = list(loader)
    assert [len(b[0]) for b in batches] == [64] * 20 + [13]
    assert all(
        bx.shape == (len(by), 64) and bx.dtype == torch.float32 and by.dtype == torch.int64 for bx, by in batches
    )
    assert torch.allclose(sum(bx.sum(0) for bx, _ in batches), digits.train_x.sum(0), atol=1e-3)
    assert torch.equal(torch.cat([by for _, by in batches]).bincount(), digits.train_y.bincount())
    test = list(digits.test_dataloader())
    assert torch.equal(torch.cat([bx for bx, _ in test]), digits.test_x)  # unshuffled: in order
    assert len(digits.pretrain_dataloader().dataset) == 1293 and len(digits.val_dataloader().dataset) == 144
    # Lightning rebuilds the loader with a DistributedSampler under DDP; rank 0 of 2 gets half.
    ddp = _update_dataloader(loader, DistributedSampler(loader.dataset, num_replicas=2, rank=0, seed=0))
    assert sum(len(by) for _, by in ddp) == 647


# ---------------------------------------------------------------- IDX reader


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trip(tmp_path, gz):
    rng = np.random.default_rng(0)
    for array in (
        rng.integers(0, 256, (3, 4, 5), dtype=np.uint8),
        rng.standard_normal((6, 2)).astype(np.float32),
        np.array([-3, 0, 1000], dtype=np.int16),
        rng.standard_normal((2, 1, 2, 3)),
    ):
        out = read_idx(write_idx(tmp_path / f"a{array.ndim}.idx", array, gz=gz))
        assert out.dtype == array.dtype and out.dtype.isnative and out.shape == array.shape
        assert np.array_equal(out, array) and out.flags.writeable


def corrupt(path: Path, how: str) -> Path:
    data = bytearray(path.read_bytes())
    if how == "truncated":
        data = data[:-7]
    elif how == "trailing":
        data += b"\0"
    elif how == "magic":
        data[0] = 1
    elif how == "dtype":
        data[2] = 0x0A
    elif how == "ndim":
        data[3] = 0
    elif how == "huge":
        data[3:] = bytes([4]) + struct.pack(">4I", 2**16, 2**16, 2**16, 2**16)
    elif how == "gzip":
        data = bytearray(gzip.compress(bytes(data), mtime=0))
        middle = len(data) // 2
        data[middle : middle + 8] = bytes(b ^ 0xFF for b in data[middle : middle + 8])
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("how", ["truncated", "trailing", "magic", "dtype", "ndim", "huge", "gzip"])
def test_read_idx_refuses_damaged_files(tmp_path, how):
    path = corrupt(write_idx(tmp_path / "x-idx3-ubyte", np.arange(600, dtype=np.uint8).reshape(6, 10, 10)), how)
    with pytest.raises(ValueError, match="expected") as err:
        read_idx(path)
    assert str(path) in str(err.value) and "re-download" in str(err.value)


def test_read_idx_raises_only_value_error_on_random_bytes(tmp_path):
    rng = np.random.default_rng(0)
    valid = idx_bytes(np.arange(60, dtype=np.int32).reshape(3, 20))
    cases = [rng.bytes(int(n)) for n in rng.integers(0, 64, 100)]
    cases += [
        b"\0\0" + bytes([code, ndim]) + rng.bytes(int(n))
        for code, ndim, n in zip(
            rng.choice(list(IDX_CODES.values()), 100), rng.integers(0, 6, 100), rng.integers(0, 40, 100)
        )
    ]
    cases += [valid[:n] for n in range(len(valid))] + [gzip.compress(c, mtime=0)[: len(c)] for c in cases[:50]]
    cases += [b"\x1f\x8b" + rng.bytes(30) for _ in range(50)]
    path = tmp_path / "fuzz"
    for data in cases:
        path.write_bytes(data)
        try:
            read_idx(path)
        except ValueError as err:
            assert str(path) in str(err)


# ---------------------------------------------------------------- file discovery and IDX DataModules


def test_missing_root_names_paths_and_fixes(tmp_path):
    for root in (tmp_path / "nowhere", tmp_path):  # missing, and present but empty
        with pytest.raises(FileNotFoundError) as err:
            load_idx_dataset(root, "MNIST")
        message = str(err.value)
        assert "data.download true" in message and "data.root" in message
        assert "dataset-fashion-mnist" not in message  # Debian's package is Fashion-MNIST, not MNIST
        assert "of MNIST (copied from a machine where a download, data.download true, put them" in message
        assert str(root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz") in message
        assert str(root / "train-images-idx3-ubyte") in message
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_idx_dataset(tmp_path, "FashionMNIST")


def test_a_root_that_is_a_file_or_a_split_without_images_is_named(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(FileNotFoundError, match="is a file, not a folder"):
        load_idx_dataset(tmp_path / "file", "MNIST")
    write_fake_mnist(tmp_path / "empty", n_train=0)
    with pytest.raises(ValueError, match="the train split holds no images"):
        MNISTDataModule(root=tmp_path / "empty", val_fraction=0.0).setup("fit")


@pytest.mark.skipif(not FASHION_ROOT.is_dir(), reason="needs apt-get install dataset-fashion-mnist")
def test_download_true_does_not_go_online_for_files_already_in_root(tmp_path):
    for f in FASHION_ROOT.iterdir():  # the four IDX files, flat: no network is needed (nor any here)
        (tmp_path / f.name).symlink_to(f)
    FashionMNISTDataModule(root=tmp_path, download=True).prepare_data()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in FASHION_ROOT.iterdir())


def test_a_download_that_fails_names_the_offline_fix_and_leaves_nothing_behind(tmp_path, monkeypatch):
    from torchvision.datasets import FashionMNIST

    monkeypatch.setattr(FashionMNIST, "mirrors", ["http://127.0.0.1:9/"])  # nothing listens: refused at once
    with pytest.raises(MissingFileError, match=r"downloading FashionMNIST into .* failed .*data.download false"):
        FashionMNISTDataModule(root=tmp_path / "data", download=True).prepare_data()
    assert not (tmp_path / "data" / "FashionMNIST").exists()


class _LoggedDownload(MNISTDataModule):
    """torchvision's download (offline here) replaced by writing the four files after a pause,
    each call logged: what several ranks starting at once would each do without the lock."""

    def _download(self) -> None:
        with open(Path(self.root) / "calls.log", "a") as log:
            log.write(f"{os.getpid()}\n")
        time.sleep(0.5)
        write_fake_mnist(Path(self.root) / "MNIST" / "raw", gz=True)


def _prepare(root: str) -> None:
    _LoggedDownload(root=root, download=True).prepare_data()


def test_ranks_preparing_the_data_at_once_download_it_once(tmp_path):
    # Under torchrun every rank runs DBN.pretrain, which prepares the data before any Trainer exists.
    processes = [multiprocessing.get_context("fork").Process(target=_prepare, args=(str(tmp_path),)) for _ in range(3)]
    for p in processes:
        p.start()
    for p in processes:
        p.join(60)
    assert [p.exitcode for p in processes] == [0, 0, 0]
    assert len((tmp_path / "calls.log").read_text().split()) == 1
    dm = MNISTDataModule(root=tmp_path, val_fraction=0.0)
    dm.setup("fit")
    assert len(dm.pretrain_x) == 30
    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError, match="is a file; expected the folder to download MNIST into"):
        MNISTDataModule(root=tmp_path / "file", download=True).prepare_data()


def test_image_and_label_counts_must_match(tmp_path):
    write_fake_mnist(tmp_path, n_train=30, n_train_labels=29)
    with pytest.raises(ValueError, match="30 images") as err:
        load_idx_dataset(tmp_path, "MNIST")
    assert str(tmp_path / "train-images-idx3-ubyte") in str(err.value)
    assert str(tmp_path / "train-labels-idx1-ubyte") in str(err.value)


def test_float_images_already_in_unit_range_are_not_divided_by_255_again(tmp_path):
    train, _, _, _ = write_fake_mnist(tmp_path)
    write_idx(tmp_path / "train-images-idx3-ubyte", (train / 255).astype(np.float32))  # a user's pre-scaled copy
    with pytest.raises(ValueError, match=r"look scaled to \[0, 1\] already.*store them as 0..255"):
        MNISTDataModule(root=tmp_path).setup("fit")
    write_idx(tmp_path / "train-images-idx3-ubyte", train.astype(np.float32))  # float, but 0..255: fine
    dm = MNISTDataModule(root=tmp_path, val_fraction=0.0)
    dm.setup("fit")
    assert dm.pretrain_x.max().item() == pytest.approx(train.max() / 255)

    class PrescaledDigits(DigitsDataModule):  # any DataModule's _load: the check is where pixels are scaled
        def _load(self):
            images, labels, test_images, test_labels = super()._load()
            return images / 16, labels, test_images / 16, test_labels

    with pytest.raises(
        ValueError,
        match=r"float64 train images look scaled to \[0, 1\] already \(largest value 1\), "
        r"but PrescaledDigits divides its pixels 0..16 by 16",
    ):
        PrescaledDigits().setup("fit")


@pytest.mark.parametrize("layout", ["flat", "torchvision"])
def test_mnist_datamodule_loads_both_layouts(tmp_path, layout):
    folder = tmp_path if layout == "flat" else tmp_path / "MNIST" / "raw"
    train_images, train_labels, test_images, test_labels = write_fake_mnist(folder, gz=layout == "torchvision")
    dm = MNISTDataModule(root=str(tmp_path), val_fraction=0.2, batch_size=8)
    dm.prepare_data()  # download=False: must not touch the network
    dm.setup("fit")
    assert (len(dm.pretrain_x), len(dm.val_x), len(dm.test_x), dm.input_size) == (24, 6, 10, 784)
    assert torch.equal(dm.test_x, torch.from_numpy(test_images.reshape(10, 784) / np.float32(255)))
    assert torch.equal(dm.val_x, torch.from_numpy(train_images.reshape(30, 784)[dm.val_indices] / np.float32(255)))
    assert torch.equal(dm.val_y, torch.from_numpy(train_labels.astype(np.int64))[dm.val_indices])
    assert dm.test_y.tolist() == test_labels.tolist()


@pytest.mark.skipif(not FASHION_ROOT.is_dir(), reason="needs `apt-get install dataset-fashion-mnist`")
def test_real_fashion_mnist():
    dm = FashionMNISTDataModule(root=str(FASHION_ROOT))
    dm.setup("fit")
    assert (len(dm.pretrain_x) + len(dm.val_x), len(dm.test_x), dm.pretrain_x.shape[1]) == (60000, 10000, 784)
    # Fashion-MNIST is exactly balanced: 6,000 / 1,000 images per class.
    assert torch.equal(torch.cat([dm.pretrain_y, dm.val_y]).bincount(), torch.full((10,), 6000))
    assert torch.equal(dm.test_y.bincount(), torch.full((10,), 1000))
    assert 0.27 < dm.pretrain_x.mean() < 0.30  # mean pixel of Fashion-MNIST is 0.286


import tempfile  # noqa: E402

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_FUZZ = Path(tempfile.mkdtemp()) / "file-idx3-ubyte"


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(
    payload=st.binary(max_size=2048),
    header=st.sampled_from([b"", b"\x00\x00\x08\x03", b"\x00\x00\x08\x01", b"\x1f\x8b\x08\x00"]),
)
def test_read_idx_gives_data_or_our_error_for_any_bytes(payload, header):
    path = _FUZZ
    path.write_bytes(header + payload)
    try:
        array = read_idx(path)
    except ValueError as err:
        assert str(path) in str(err)
    else:
        assert array.ndim >= 1


def test_splits_stay_on_the_host_for_a_cpu_trainer_and_are_copied_once_for_an_accelerator():
    from lightning.pytorch import Trainer

    dm = DigitsDataModule(batch_size=32)
    dm.setup("fit")
    dm.trainer = Trainer(accelerator="cpu", devices=1, logger=False)
    assert dm._device() is None and next(iter(dm.train_dataloader()))[0].device.type == "cpu"
    assert dm._resident(dm.train_x, torch.device("meta")) is dm._resident(dm.train_x, torch.device("meta"))
    dm.on_device = False
    assert dm._device() is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_a_gpu_batches_are_cut_on_the_device():
    from lightning.pytorch import Trainer

    from dbn_init import Baseline

    seen = []

    class Spy(Baseline):
        def training_step(self, batch, batch_idx):
            seen.append(batch[0].device.type)
            return super().training_step(batch, batch_idx)

    dm = DigitsDataModule(batch_size=32)
    trainer = Trainer(
        accelerator="gpu", devices=1, max_steps=3, logger=False, enable_checkpointing=False, enable_progress_bar=False
    )
    trainer.fit(Spy(input_size=64, hidden=[16]), datamodule=dm)
    assert seen == ["cuda"] * 3
    assert all(t.is_cuda for t in dm._device_copies.values()) and len(dm._device_copies) == 4  # train x/y, val x/y


# ---------------------------------------------------------------- ArrayDataModule: arrays, files, loaders


def wine_arrays():
    wine = load_wine()
    return wine.data, wine.target


def test_arrays_are_split_with_a_fixed_test_seed_and_every_row_lands_in_one_split():
    x, y = wine_arrays()  # 178 rows, 13 real-valued features, classes of 59 / 71 / 48
    dm = ArrayDataModule(x, y, batch_size=16, scaling="none")
    assert (dm.input_size, dm.num_classes, dm.classes, dm.image_shape) == (13, 3, [0, 1, 2], None)
    dm.setup("fit")
    assert (len(dm.pretrain_x), len(dm.val_x), len(dm.test_x)) == (128, 14, 36)  # ceil(0.2 * 178) = 36 held out
    assert dm.test_y.bincount().tolist() == [12, 14, 10]  # stratified: 59, 71, 48 times 0.2, rounded
    rows = torch.cat([dm.pretrain_x, dm.val_x, dm.test_x]).double().numpy()
    assert np.array_equal(rows[np.lexsort(rows.T)], x.astype(np.float32)[np.lexsort(x.astype(np.float32).T)])
    assert torch.equal(dm.test_x, torch.as_tensor(x[dm.test_indices.numpy()], dtype=torch.float32))
    other = ArrayDataModule(torch.as_tensor(x), torch.as_tensor(y), split_seed=5, scaling="none")
    other.setup("fit")
    assert torch.equal(other.test_x, dm.test_x) and not torch.equal(other.val_x, dm.val_x)  # test fixed, val seeded
    assert dm.hparams["scaling"] == "none" and "x" not in dm.hparams  # data are not hyperparameters


def test_features_spanning_1e3_are_standardised_on_the_training_split_only():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1e3, 1e3, (400, 5)) * np.array([1, 1e-3, 0.5, 1, 1]) + np.array([0, 0, 0, 500, 0])
    x[:, 4] = 7.0  # a constant feature
    dm = ArrayDataModule(x, (np.arange(400) % 4), scaling="standardize")
    dm.setup("fit")
    raw = torch.as_tensor(x[dm.test_indices.numpy()], dtype=torch.float32)
    train_raw = x[dm.source_indices[dm.pretrain_indices].numpy()]
    assert np.allclose(dm.feature_mean.numpy(), train_raw.mean(0), rtol=1e-5, atol=1e-3)
    assert np.allclose(dm.feature_std[:4].numpy(), train_raw.std(0)[:4], rtol=1e-5)
    assert dm.feature_std[4] == 1 and dm.feature_mean[4] == 7  # a constant feature maps to 0, not to inf
    assert dm.pretrain_x[:, :4].mean(0).abs().max() < 1e-5
    assert torch.allclose(dm.pretrain_x[:, :4].std(0, unbiased=False), torch.ones(4), atol=1e-5)
    assert dm.pretrain_x[:, 4].abs().max() == 0
    assert torch.allclose(dm.test_x, (raw - dm.feature_mean) / dm.feature_std)
    assert torch.allclose(dm.scale(raw), dm.test_x)  # the same transform for new rows
    assert 0.8 < dm.test_x[:, :4].std() < 1.2 and dm.test_x.abs().max() > 1.5  # not clipped, not [0, 1]


def test_unit_scaling_of_arrays_is_the_training_min_max_with_other_splits_clipped():
    x, y = wine_arrays()
    dm = ArrayDataModule(x, y, scaling="unit", binarize=False)
    dm.setup("fit")
    train = torch.as_tensor(x[dm.source_indices[dm.pretrain_indices].numpy()], dtype=torch.float32)
    assert torch.equal(dm.raw_low, train.min(0).values) and torch.equal(dm.raw_high, train.max(0).values)
    assert torch.equal(dm.pretrain_x.min(0).values, torch.zeros(13)) and torch.equal(
        dm.pretrain_x.max(0).values, torch.ones(13)
    )
    raw_test = torch.as_tensor(x[dm.test_indices.numpy()], dtype=torch.float32)
    unclipped = (raw_test - dm.raw_low) / (dm.raw_high - dm.raw_low)
    assert unclipped.min() < 0 or unclipped.max() > 1  # wine's test rows reach outside the training range...
    assert torch.equal(dm.test_x, unclipped.clamp(0, 1))  # ...and are clipped into it
    assert torch.equal(dm.feature_mean, torch.zeros(13)) and torch.equal(dm.feature_std, torch.ones(13))


def write_wine_csv(path: Path, delimiter: str = ",") -> Path:
    x, y = wine_arrays()
    names = np.array(["barolo", "grignolino", "barbera"])[y]  # string labels, not in sorted order
    lines = [delimiter.join([*load_wine().feature_names[:6], "cultivar", *load_wine().feature_names[6:]])]
    lines += [
        delimiter.join([*map(repr, row[:6].tolist()), name, *map(repr, row[6:].tolist())])
        for row, name in zip(x, names)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_files_beside_a_table_are_read_by_column_name_and_refused_when_their_columns_differ(tmp_path):
    """A test, unlabelled or predict file with the training file's columns in another order is
    reordered to them (the same rows, the same scaled features); one with a column missing or
    extra is refused in one line naming them; a .npy beside it is matched by width, as before."""
    path = write_wine_csv(tmp_path / "wine.csv")
    rows = [line.split(",") for line in path.read_text().splitlines()]
    order = list(reversed(range(len(rows[0]))))  # the label first, the features reversed
    (tmp_path / "reversed.csv").write_text("\n".join(",".join(row[i] for i in order) for row in rows) + "\n")
    kept = ArrayDataModule(path=str(path), target="cultivar", test_path=str(path)).arrays  # as read, unscaled
    turned = ArrayDataModule(path=str(path), target="cultivar", test_path=str(tmp_path / "reversed.csv"),
                             predict_path=str(tmp_path / "reversed.csv"),
                             unlabeled_path=str(tmp_path / "reversed.csv")).arrays  # fmt: skip
    for rows_read in (turned.test_x, turned.predict_x, turned.unlabeled_x):
        assert torch.equal(rows_read, kept.test_x)
    assert torch.equal(turned.test_y, kept.test_y)
    dropped = [",".join(row[:3] + row[4:]) for row in rows]  # a feature column missing
    (tmp_path / "dropped.csv").write_text("\n".join(dropped) + "\n")
    renamed = "\n".join([",".join(["odd", *rows[0][1:]]), *(",".join(row) for row in rows[1:])]) + "\n"
    (tmp_path / "renamed.csv").write_text(renamed)  # one column missing, one extra
    with pytest.raises(UsageError, match=rf"test_path .*dropped.csv: expected the training file's feature columns "
                       rf".*got missing \['{rows[0][3]}'\]: give it the same columns"):  # fmt: skip
        ArrayDataModule(path=str(path), target="cultivar", test_path=str(tmp_path / "dropped.csv"))
    with pytest.raises(UsageError, match=rf"missing \['{rows[0][0]}'\]; extra \['odd'\]"):
        ArrayDataModule(path=str(path), target="cultivar", predict_path=str(tmp_path / "renamed.csv"))
    np.save(tmp_path / "rows.npy", kept.test_x.numpy())  # no names: matched by width
    ArrayDataModule(path=str(path), target="cultivar", predict_path=str(tmp_path / "rows.npy"))


@pytest.mark.parametrize("delimiter", [";", "|", "\t"])
def test_a_csv_with_another_delimiter_or_a_byte_order_mark_reads_as_the_plain_one(tmp_path, delimiter):
    plain = ArrayDataModule(path=str(write_wine_csv(tmp_path / "wine.csv")), target="cultivar").arrays
    path = write_wine_csv(tmp_path / "other.csv", delimiter)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())  # a UTF-8 byte-order mark, as spreadsheets write
    other = ArrayDataModule(path=str(path), target="cultivar").arrays
    assert torch.equal(other.x, plain.x) and torch.equal(other.y, plain.y) and other.classes == plain.classes


def test_blank_lines_and_rows_of_bare_delimiters_are_skipped_and_errors_name_the_file_s_own_line(tmp_path):
    plain = ArrayDataModule(path=str(write_wine_csv(tmp_path / "wine.csv")), target="cultivar").arrays
    lines = (tmp_path / "wine.csv").read_text().splitlines()
    width = len(lines[0].split(","))
    excel = [lines[0], lines[1], "", *lines[2:], "," * (width - 1), "," * (width - 1)]  # a blank line, Excel's tail
    (tmp_path / "excel.csv").write_text("\n".join(excel) + "\n")
    read = ArrayDataModule(path=str(tmp_path / "excel.csv"), target="cultivar").arrays
    assert torch.equal(read.x, plain.x) and torch.equal(read.y, plain.y)
    bad = lines[4].split(",")
    bad[2] = "1,25"  # a decimal comma, quoted in a comma-separated file
    excel[5] = ",".join([*bad[:2], '"1,25"', *bad[3:]])  # the file's line 6, its fifth row after a blank line
    (tmp_path / "comma.csv").write_text("\n".join(excel) + "\n")
    with pytest.raises(
        UsageError, match=r"comma.csv line 6, column .*got '1,25'; that is a decimal comma: write decim"
    ):
        ArrayDataModule(path=str(tmp_path / "comma.csv"), target="cultivar")


def test_a_class_with_no_training_row_is_warned_and_the_splits_stay_as_they_are():
    x, y = wine_arrays()
    y_test = y[-20:].copy()
    y_test[-1] = 3  # a fourth class whose only row is a test row: the model never trains on it
    with pytest.warns(UserWarning, match=r"class\(es\) \[3\] have no labelled row in the training split"):
        dm = ArrayDataModule(x[:-20], y[:-20], x_test=x[-20:], y_test=y_test)
        dm.setup("fit")
    assert 3 not in dm.train_y.tolist() and dm.num_classes == 4 and len(dm.test_y) == 20
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ArrayDataModule(*wine_arrays(), split_seed=0).setup("fit")  # every class trains: no warning


def test_integer_quantities_read_as_classes_are_warned_with_the_regression_named():
    from sklearn.datasets import load_diabetes

    x, y = load_diabetes(return_X_y=True)  # targets 25..346, integers: 214 "classes" in 442 rows
    with pytest.warns(UserWarning, match=r"quantities rather than classes \(214 classes in 318 rows\), fit a regr"):
        ArrayDataModule(x, y.astype(int)).setup("fit")
    x, y = wine_arrays()
    y_test = y[-20:].copy()
    y_test[-1] = 3
    with pytest.warns(UserWarning) as warned:  # a few real classes: no such advice
        ArrayDataModule(x[:-20], y[:-20], x_test=x[-20:], y_test=y_test).setup("fit")
    assert not any("quantities" in str(w.message) for w in warned)


def test_labels_that_cannot_make_a_classifier_are_refused_in_one_line_naming_the_fix(tmp_path):
    x, y = wine_arrays()
    with pytest.raises(UsageError, match=r"expected labels of at least two classes, got one \(0\).*target column"):
        ArrayDataModule(x, np.zeros(len(x), dtype=int))
    with pytest.raises(UsageError, match=r"targets of x: expected values that vary, got 3 in every row.*target column"):
        ArrayDataModule(x, np.full(len(x), 3.0), targets="values")  # a regressor would predict noise around 3
    with pytest.raises(
        UsageError, match=r"expected one class label per row, shape \(N,\), got shape \(178, 3\).*argmax"
    ):
        ArrayDataModule(x, np.eye(3)[y])  # one-hot
    lines = write_wine_csv(tmp_path / "wine.csv").read_text().splitlines()
    (tmp_path / "twice.csv").write_text("\n".join([lines[0].replace("ash,", "cultivar,", 1), *lines[1:]]) + "\n")
    with pytest.raises(
        UsageError, match=r"twice.csv: expected each column named once, got \['cultivar'\] more than once"
    ):
        ArrayDataModule(path=str(tmp_path / "twice.csv"), target="cultivar")


@pytest.mark.parametrize("suffix", [".csv", ".tsv"])
def test_a_csv_with_a_string_target_column_gives_the_arrays_rows_and_sorted_classes(tmp_path, suffix):
    x, y = wine_arrays()
    path = write_wine_csv(tmp_path / f"wine{suffix}", "\t" if suffix == ".tsv" else ",")
    dm = ArrayDataModule(path=str(path), target="cultivar", scaling="none")
    assert (dm.input_size, dm.classes) == (13, ["barbera", "barolo", "grignolino"])
    assert np.array_equal(dm.arrays.x.numpy(), x.astype(np.float32))  # the target column is not a feature
    assert dm.arrays.y.tolist() == [[1, 2, 0][c] for c in y]  # barolo (class 0) is code 1, ...
    with pytest.raises(ValueError, match=r"column 'cultivar': expected a number, got 'barolo'; encode the column"):
        ArrayDataModule(path=str(path))  # without target, every column must be a feature


def test_npz_and_npy_files_and_a_loader_function_give_the_same_rows(tmp_path):
    x, y = wine_arrays()
    np.savez(tmp_path / "wine.npz", x=x, y=y)
    np.savez(tmp_path / "named.npz", x=x, cultivar=y)
    np.save(tmp_path / "wine.npy", x)
    modules = [
        ArrayDataModule(path=str(tmp_path / "wine.npz")),
        ArrayDataModule(path=str(tmp_path / "named.npz"), target="cultivar"),
        ArrayDataModule(x, y),
        ArrayDataModule(loader="sklearn.datasets.load_wine"),
    ]
    for dm in modules:
        dm.setup("fit")
        assert torch.equal(dm.test_x, modules[0].test_x) and torch.equal(dm.train_y, modules[0].train_y)
    assert modules[-1].classes == ["class_0", "class_1", "class_2"]  # the Bunch's target_names
    npy = ArrayDataModule(path=str(tmp_path / "wine.npy"))
    npy.setup("fit")
    assert npy.num_classes is None and set(npy.pretrain_y.tolist()) == {-1} and len(npy.pretrain_x) == 128
    with pytest.raises(UsageError, match=r"importing it failed \(sklearn.datasets has no 'load_wines'\)"):
        ArrayDataModule(loader="sklearn.datasets.load_wines").setup("fit")  # a typo: the reason is named


def test_a_test_file_and_extra_unlabelled_rows_for_pretraining_only(tmp_path):
    x, y = wine_arrays()
    np.savez(tmp_path / "train.npz", x=x[:100], y=y[:100])
    np.savez(tmp_path / "test.npz", x=x[100:140], y=y[100:140])
    np.save(tmp_path / "extra.npy", x[140:])
    dm = ArrayDataModule(
        path=str(tmp_path / "train.npz"),
        test_path=str(tmp_path / "test.npz"),
        unlabeled_path=str(tmp_path / "extra.npy"),
        val_fraction=0.1,
    )
    dm.setup("fit")
    assert (len(dm.test_x), len(dm.val_x), len(dm.train_x), len(dm.pretrain_x)) == (40, 10, 90, 90 + 38)
    assert torch.equal(dm.test_y, torch.as_tensor(y[100:140]))
    assert dm.pretrain_y[90:].tolist() == [-1] * 38 and torch.equal(dm.train_y, dm.pretrain_y[:90])
    assert dm.train_x.data_ptr() == dm.pretrain_x.data_ptr()  # a view: labelled rows first
    # the extra rows count in the scaling statistics (they are training rows) ...
    raw = np.concatenate([x[:100][dm.pretrain_indices.numpy()], x[140:]])
    assert np.allclose(dm.feature_mean.numpy(), raw.mean(0), rtol=1e-5)
    # ... and in pretraining batches, not in fine-tuning batches
    assert sum(len(b) for _, b in dm.pretrain_dataloader()) == 128
    assert sum(len(b) for _, b in dm.train_dataloader()) == 90


def test_unlabelled_data_serve_every_training_row_labelled_minus_one():
    x, _ = wine_arrays()
    dm = ArrayDataModule(x)
    dm.setup("fit")
    assert dm.num_classes is None and len(dm.test_x) == 36 and not dm.labelled
    batch_x, batch_y = next(iter(dm.pretrain_dataloader(steps_per_batch=2)))
    assert dm.batch_size == 16  # chosen for 128 pretraining rows: the smallest default batch
    assert batch_x.shape == (32, 13) and set(batch_y.tolist()) == {-1}
    rows = torch.cat([b for b, labels in dm.train_dataloader() if set(labels.tolist()) == {-1}])
    assert len(rows) == len(dm.pretrain_x) == 128  # an autoencoder's fine-tuning (the models refuse to classify them)
    with pytest.raises(ValueError, match="expected labelled data for num_labels=30"):
        ArrayDataModule(x, num_labels=30).setup("fit")


def test_num_labels_is_class_balanced_for_arrays_and_datasets():
    x, y = wine_arrays()
    dm = ArrayDataModule(x, y, num_labels=31)
    dm.setup("fit")
    assert dm.train_y.bincount().tolist() == [11, 10, 10] and len(dm.pretrain_x) == 128
    assert torch.equal(dm.train_x, dm.pretrain_x[torch.searchsorted(dm.pretrain_indices, dm.train_indices)])
    images = torch.as_tensor(load_digits().images, dtype=torch.uint8)
    ds = DatasetDataModule(TensorDataset(images, torch.as_tensor(load_digits().target)), num_labels=40)
    ds.setup("fit")
    assert ds.train_y.bincount().tolist() == [4] * 10 and ds.num_classes == 10
    with pytest.raises(ValueError, match=r"num_labels an integer >= num_classes \(3\)"):
        ArrayDataModule(x, y, num_labels=2).setup("fit")


def test_file_errors_name_the_value_and_the_fix_when_the_module_is_built(tmp_path):
    # Read in __init__, so the CLI, which builds the module to link its sizes, refuses as one usage line.
    path = write_wine_csv(tmp_path / "wine.csv")
    with pytest.raises(
        UsageError,
        match=r"target 'Cultivar' is not a column of .*wine.csv; expected one of "
        r"\['alcohol', .*'cultivar'.*\]: pass data.target with one of them",
    ):
        ArrayDataModule(path=str(path), target="Cultivar")
    with pytest.raises(MissingFileError, match=r"path .*nowhere.csv does not exist; .*fix data.path"):
        ArrayDataModule(path=str(tmp_path / "nowhere.csv"))
    (tmp_path / "header.csv").write_text("alcohol,ash,cultivar\n")  # the header alone: no row to read
    with pytest.raises(UsageError, match=r"header.csv: expected rows of numbers under its header, got the header"):
        ArrayDataModule(path=str(tmp_path / "header.csv"), target="cultivar")
    lines = path.read_text().splitlines()
    (tmp_path / "nan.csv").write_text(
        "\n".join([*lines[:5], lines[5].replace(lines[5].split(",")[2], "nan", 1), *lines[6:]])
    )
    with pytest.raises(
        ValueError,
        match=r"expected finite values in path .*nan.csv, got 1 NaN/Inf \(the first at "
        r"row 4, feature 2.*impute each feature's mean",
    ):
        ArrayDataModule(path=str(tmp_path / "nan.csv"), target="cultivar")
    (tmp_path / "empty.csv").write_text("\n".join([*lines[:3], lines[3].replace(lines[3].split(",")[1], "", 1)]))
    with pytest.raises(
        ValueError,
        match=r"empty.csv line 4, column 'malic_acid': expected a number, got ''; "
        r".*fill the empty",
    ):
        ArrayDataModule(path=str(tmp_path / "empty.csv"), target="cultivar")
    objects = np.full((3, 2), 1.5, dtype=object)  # what np.savez makes of a DataFrame's mixed columns
    np.savez(tmp_path / "objects.npz", x=objects, y=np.arange(3))
    np.save(tmp_path / "objects.npy", objects)
    for name, where in (("objects.npz", "objects.npz: 'x'"), ("objects.npy", "objects.npy")):
        with pytest.raises(UsageError, match=rf"{where} holds an array of Python objects .* save numeric arrays"):
            ArrayDataModule(path=str(tmp_path / name))
    np.savez(tmp_path / "keys.npz", data=np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"expected arrays named 'x' .* found \['data'\]; save them as np.savez"):
        ArrayDataModule(path=str(tmp_path / "keys.npz"))
    np.savez(tmp_path / "xy.npz", x=np.zeros((3, 2)), y=np.arange(3))  # the labels under another name
    with pytest.raises(
        UsageError,
        match=r"'label' \(labels\), found \['x', 'y'\]; name the labels' array in data.target \(here \['y'\]\)",
    ):
        ArrayDataModule(path=str(tmp_path / "xy.npz"), target="label")
    with pytest.raises(ValueError, match="expected exactly one of x, path, loader, got none"):
        ArrayDataModule()
    with pytest.raises(ValueError, match="expected at most one of test_path, x_test"):
        ArrayDataModule(np.zeros((4, 2)), test_path="t.csv", x_test=np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"data.test_fraction: expected a finite number in \(0, 1\)"):
        ArrayDataModule(np.zeros((4, 2)), test_fraction=0)
    with pytest.raises(ValueError, match=r"expected 13 features per row, like the training rows, got 12"):
        ArrayDataModule(*wine_arrays(), x_test=np.zeros((3, 12)), y_test=[0, 1, 2])


# ---------------------------------------------------------------- DatasetDataModule: tensors, PIL, ImageFolder


def test_3x32x32_tensors_become_3072_features_and_keep_their_image_shape():
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (60, 3, 32, 32), generator=gen, dtype=torch.uint8)
    labels = torch.arange(60) % 3
    dm = DatasetDataModule(TensorDataset(images, labels), test_fraction=0.25, val_fraction=0.2)
    assert (dm.input_size, dm.image_shape, dm.num_classes) == (3072, (3, 32, 32), 3)
    dm.setup("fit")
    assert (len(dm.pretrain_x), len(dm.val_x), len(dm.test_x)) == (36, 9, 15)
    flat = images.flatten(1).float() / 255  # channel-first rows, divided by 255 (uint8 pixels)
    assert torch.equal(dm.test_x, flat[dm.test_indices]) and torch.equal(dm.test_y, labels[dm.test_indices])
    floats = ArrayDataModule(images.float(), labels, scaling="none")  # arrays of images keep their shape too
    assert (floats.input_size, floats.image_shape) == (3072, (3, 32, 32))
    grey = DatasetDataModule(TensorDataset(images[:, :1].float() / 255, labels))  # ToTensor-like (1, H, W) in [0, 1]
    grey.setup("fit")
    assert grey.image_shape == (32, 32) and torch.equal(grey.raw_high, torch.ones(1024))


def test_given_test_and_validation_datasets_are_used_as_they_are():
    digits = load_digits()
    images, labels = torch.as_tensor(digits.images), torch.as_tensor(digits.target)  # float64 0..16: no known range
    dm = DatasetDataModule(
        TensorDataset(images[:1000], labels[:1000]),
        test_dataset=TensorDataset(images[1000:1500], labels[1000:1500]),
        val_dataset=TensorDataset(images[1500:], labels[1500:]),
    )
    dm.setup("fit")
    assert (len(dm.pretrain_x), len(dm.val_x), len(dm.test_x)) == (1000, 297, 500)
    assert torch.equal(dm.raw_high, images[:1000].flatten(1).max(0).values.float().clamp_min(1))  # min-max, 0..16
    assert torch.equal(dm.test_y, labels[1000:1500])


class _Stream(torch.utils.data.IterableDataset):
    def __iter__(self):
        rng = np.random.default_rng(0)
        for i in range(50):
            yield rng.normal(100.0, 10.0, 6).astype(np.float32), i % 2


def test_an_iterable_dataset_is_read_in_one_pass():
    dm = DatasetDataModule(_Stream(), scaling="standardize")
    dm.setup("fit")
    assert (dm.input_size, dm.image_shape, dm.num_classes, len(dm.test_x) + len(dm.val_x) + len(dm.pretrain_x)) == (
        6,
        None,
        2,
        50,
    )
    assert dm.pretrain_x.mean(0).abs().max() < 1e-4 and 8 < dm.feature_std.mean() < 12


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("patches") / "folder"
    assert write_image_folder(root) == {"china": 260, "flower": 260}  # 13 x 20 patches of each 427 x 640 photo
    return root


def test_an_image_folder_of_pil_rgb_images_from_make_image_folder(image_folder):
    from PIL import Image
    from torchvision.datasets import ImageFolder

    dm = DatasetDataModule(ImageFolder(str(image_folder)), batch_size=32)
    assert (dm.input_size, dm.image_shape, dm.num_classes) == (3072, (3, 32, 32), 2)
    dm.setup("fit")
    assert (len(dm.test_x), dm.test_y.bincount().tolist(), len(dm.val_x), len(dm.pretrain_x)) == (
        104,
        [52, 52],
        42,
        374,
    )
    first = int(dm.test_indices[0])  # ImageFolder's items are sorted: china 00000..00259, then flower
    name = ("china", first) if first < 260 else ("flower", first - 260)
    pixels = np.asarray(Image.open(image_folder / name[0] / f"{name[1]:05d}.png"))  # (32, 32, 3)
    assert torch.equal(dm.test_x[0], torch.from_numpy(pixels.transpose(2, 0, 1).reshape(-1) / np.float32(255)))
    assert dm.test_y[0] == (first >= 260)
    rows, labels = torch.cat([dm.pretrain_x, dm.val_x, dm.test_x]), torch.cat([dm.pretrain_y, dm.val_y, dm.test_y])
    for c, photo in enumerate(load_sample_images().images):  # channels in RGB order: each photo's mean colour
        expected = photo[: 13 * 32, : 20 * 32].reshape(-1, 3).mean(0) / 255
        assert np.allclose(rows[labels == c].reshape(-1, 3, 1024).mean((0, 2)).numpy(), expected, atol=1e-5)
    assert next(iter(dm.val_dataloader()))[0].shape == (32, 3072)  # no Trainer needed for loaders


def test_a_test_folder_with_fewer_or_other_classes_is_labelled_by_class_name(image_folder, tmp_path):
    """torchvision numbers an ImageFolder's own classes: a test folder holding only flower/ calls it 0."""
    import shutil

    from torchvision.datasets import ImageFolder

    flowers = tmp_path / "flowers"
    shutil.copytree(image_folder / "flower", flowers / "flower")
    dm = DatasetDataModule(ImageFolder(str(image_folder)), test_dataset=ImageFolder(str(flowers)))
    dm.setup("fit")
    assert dm.test_y.tolist() == [1] * 260 and dm.num_classes == 2
    training = torch.utils.data.Subset(ImageFolder(str(image_folder)), range(0, 520, 2))  # random_split's kind
    subset = DatasetDataModule(training, test_dataset=ImageFolder(str(flowers)))
    subset.setup("fit")
    assert subset.test_y.tolist() == [1] * 260
    shutil.copytree(image_folder / "china", flowers / "temple")  # a class training never saw
    with pytest.raises(UsageError, match=r"the test dataset has class\(es\) \['temple'\] that the training dataset"):
        DatasetDataModule(ImageFolder(str(image_folder)), test_dataset=ImageFolder(str(flowers)))


def test_make_image_folder_refuses_a_folder_with_files_and_writes_the_same_images_again(image_folder, tmp_path):
    with pytest.raises(FileExistsError, match="is not an empty folder.*pass another DIR"):
        write_image_folder(image_folder)
    again = tmp_path / "again"
    write_image_folder(again, size=100)
    assert sorted(p.name for p in (again / "china").iterdir()) == [f"{i:05d}.png" for i in range(24)]  # 4 x 6
    first = np.asarray(__import__("PIL.Image").Image.open(again / "flower" / "00007.png"))
    assert np.array_equal(first, load_sample_images().images[1][100:200, 100:200])  # row 1, column 1


def test_pil_grey_images_are_grey_features():
    from PIL import Image

    digits = load_digits()
    items = [
        (Image.fromarray((image * 15).astype(np.uint8), mode="L"), int(t))
        for image, t in zip(digits.images[:200], digits.target[:200])
    ]
    dm = DatasetDataModule(items)
    dm.setup("fit")
    assert (dm.input_size, dm.image_shape) == (64, (8, 8))
    assert torch.equal(
        dm.test_x,
        torch.as_tensor(digits.images[:200][dm.test_indices.numpy()] * 15 / 255, dtype=torch.float32).flatten(1),
    )


# ---------------------------------------------------------------- colour pictures


def test_image_grid_shows_channel_first_rows_as_rgb():
    red, blue = torch.zeros(3, 2, 2), torch.zeros(3, 2, 2)
    red[0], blue[2] = 1.0, 1.0
    grid = image_grid(torch.stack([red, blue]).flatten(1), (3, 2, 2), ncols=2, normalize_each=False, pad=1)
    assert grid.shape == (4, 7, 3)
    assert (
        grid[1:3, 1:3].reshape(-1, 3).tolist() == [[1, 0, 0]] * 4
        and grid[1:3, 4:6].reshape(-1, 3).tolist() == [[0, 0, 1]] * 4
    )
    assert (grid[0] == 1).all()  # white padding
    assert image_grid(torch.rand(3, 4), (1, 2, 2)).shape == (2 * 3 + 1, 2 * 3 + 1)  # one channel: grey
    with pytest.raises(ValueError, match=r"expected image_shape \(H, W\), \(1, H, W\) or \(3, H, W\)"):
        image_grid(torch.rand(3, 8), (2, 2, 2))


def test_a_gzipped_idx_file_declaring_more_than_the_cap_is_refused_before_decompressing(tmp_path):
    """A decompression bomb: a few hundred bytes of gzip whose header declares 2**31 float64 values
    (16 GiB) is refused at once by the default cap, a quarter of this machine's memory; a genuine
    file reads under a cap raised to exactly its size, and is refused one byte below it."""
    import gzip
    import struct
    import time

    from dbn_init.data.readers import default_max_bytes

    bomb = tmp_path / "bomb-idx3-ubyte.gz"
    with gzip.open(bomb, "wb") as f:
        f.write(b"\0\0\x0e\x02" + struct.pack(">2I", 2**16, 2**15) + bytes(1000))  # float64, 2**31 values
    assert bomb.stat().st_size < 1000 and 2**31 * 8 > default_max_bytes()
    start = time.perf_counter()
    with pytest.raises(
        UsageError,
        match=r"declares 17,179,869,184 bytes of data .*float64.*more than the "
        r"[\d,]+-byte limit, so it was not decompressed.*data.max_file_bytes",
    ):
        read_idx(bomb)
    assert time.perf_counter() - start < 1
    good = tmp_path / "good-idx1-ubyte.gz"
    with gzip.open(good, "wb") as f:
        f.write(b"\0\0\x08\x01" + struct.pack(">I", 5) + bytes([0, 1, 2, 3, 4]))
    assert read_idx(good, max_bytes=5).tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(UsageError, match="declares 5 bytes of data"):
        read_idx(good, max_bytes=4)


def test_after_setup_the_module_holds_one_float32_copy_whose_views_are_the_splits(tmp_path):
    x, y = wine_arrays()
    np.savez(tmp_path / "wine.npz", x=x, y=y)  # float64, as users save them
    dm = ArrayDataModule(path=str(tmp_path / "wine.npz"))
    dm.setup("fit")
    storage = dm.pretrain_x.untyped_storage().data_ptr()
    assert all(t.untyped_storage().data_ptr() == storage for t in (dm.train_x, dm.val_x, dm.test_x))
    assert dm.pretrain_x.untyped_storage().nbytes() == x.size * 4 and dm.arrays.x is None
    rows = torch.as_tensor(x, dtype=torch.float32)
    training = rows[dm.source_indices]  # the rows left after the test split, which the splits index
    assert torch.equal(dm.pretrain_x, dm.scale(training[dm.pretrain_indices]))
    assert torch.equal(dm.val_x, dm.scale(training[dm.val_indices]))
    assert torch.equal(dm.test_x, dm.scale(rows[dm.test_indices]))
    assert dm.pretrain_x.mean(0).abs().max() < 1e-5  # standardised with the pretraining rows' statistics


def test_dataframes_beside_a_dataframe_x_are_matched_by_column_name():
    import pandas as pd

    wine = load_wine(as_frame=True)
    x, y = wine.data, wine.target
    plain = ArrayDataModule(x[:150], y[:150], x_test=x[150:], y_test=y[150:]).arrays
    reordered = ArrayDataModule(x[:150], y[:150], x_test=x[150:][x.columns[::-1]], y_test=y[150:]).arrays
    assert torch.equal(reordered.test_x, plain.test_x)  # the test rows' features, not a scramble of them
    other = x[150:].drop(columns=["proline"]).assign(colour=1.0)
    refused = r"x_test: expected the training frame's feature columns .*missing \['proline'\]; extra \['colour'\]"
    with pytest.raises(UsageError, match=refused):
        ArrayDataModule(x[:150], y[:150], x_test=other, y_test=y[150:])
    unlabeled = ArrayDataModule(x[:150], y[:150], x_unlabeled=pd.DataFrame(x[150:][x.columns[::-1]])).arrays
    assert torch.equal(unlabeled.unlabeled_x, plain.test_x)


def test_labels_missing_among_names_are_refused_and_a_label_column_is_read_as_labels():
    x, y = wine_arrays()
    names = np.array(["barolo", "grignolino", "barbera"], dtype=object)[y]
    for missing in (None, float("nan"), "NA", " n/a ", "?"):  # pandas' NA markers, and UCI's
        names[7] = missing
        with pytest.raises(UsageError, match=r"expected a label in every row, got none in row 7"):
            ArrayDataModule(x, names)
    numbers = y.astype(np.float64)
    numbers[7] = np.nan
    with pytest.raises(UsageError, match=r"expected a label in every row, got none in row 7 \(from 0: nan\)"):
        ArrayDataModule(x, numbers)
    assert torch.equal(ArrayDataModule(x, y.reshape(-1, 1)).arrays.y, ArrayDataModule(x, y).arrays.y)  # (N, 1)
    assert ArrayDataModule(x, np.array(["none", "mild", "severe"])[y]).arrays.classes == ["mild", "none", "severe"]


def test_csv_headers_as_pandas_writes_them_are_read_and_a_missing_header_is_refused(tmp_path):
    import pandas as pd

    x, y = wine_arrays()
    named = ArrayDataModule(x[:, :2], y).arrays
    pd.DataFrame(np.c_[x[:, :2], y]).to_csv(tmp_path / "unnamed.csv", index=False)  # names 0, 1, 2; labels 0-2
    numbered = ArrayDataModule(path=str(tmp_path / "unnamed.csv"), target="2").arrays
    assert torch.equal(numbered.x, named.x) and torch.equal(numbered.y, named.y)
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(13)]).assign(target=y)
    frame.to_csv(tmp_path / "indexed.csv")  # pandas' index first, under an empty name
    with pytest.raises(UsageError, match=r"indexed.csv: expected a name for every column, got none for column 1 "):
        ArrayDataModule(path=str(tmp_path / "indexed.csv"), target="target")
    names = np.array(["barolo", "grignolino", "barbera"])[y]
    frame.assign(target=names).to_csv(tmp_path / "headless.csv", index=False, header=False)  # as UCI's files
    with pytest.raises(UsageError, match=r"headless.csv: expected a header row .* a row of the data .*'barolo'"):
        ArrayDataModule(path=str(tmp_path / "headless.csv"), target="barolo")


def test_target_messages_name_the_fix(tmp_path):
    x, _ = wine_arrays()
    with pytest.raises(UsageError, match=r"fractional .* a target of numbers to predict is data.targets 'values'"):
        ArrayDataModule(x, x[:, 0])
    values = x[:, 0].astype(str)
    values[5] = "n/a"
    with pytest.raises(UsageError, match=r"expected a number as the target of every row, got 'n/a' in row 5"):
        ArrayDataModule(x, values, targets="values")
    (tmp_path / "only.csv").write_text("label\n0\n1\n0\n1\n")
    with pytest.raises(UsageError, match=r"only.csv: expected feature columns besides the target 'label', got none"):
        ArrayDataModule(path=str(tmp_path / "only.csv"), target="label")


def test_a_csv_not_in_utf8_is_one_line_and_a_home_path_is_expanded(tmp_path, monkeypatch):
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes("a,b,café,label\n1,2,3,0\n4,5,6,1\n".encode("latin-1"))  # a spreadsheet's export
    with pytest.raises(UsageError, match=r"latin1.csv: expected UTF-8 text, got byte b'\\xe9' .* save it as UTF-8"):
        ArrayDataModule(path=str(latin1), target="label")
    write_wine_csv(tmp_path / "wine.csv")
    with pytest.raises(UsageError, match=r"test_path .*latin1.csv: expected UTF-8 text"):
        ArrayDataModule(path=str(tmp_path / "wine.csv"), target="cultivar", test_path=str(latin1))
    monkeypatch.setenv("HOME", str(tmp_path))
    assert ArrayDataModule(path="~/wine.csv", target="cultivar").input_size == 13


def test_a_small_labelled_set_is_served_until_an_epoch_holds_min_train_batches():
    """15 labelled wine rows (batch 16) make one step an epoch, served once by default; with
    min_train_batches=10 they are served ceil(10 * 16 / 15) = 11 times, each copy shuffled, so an
    epoch holds 11 steps and every row is seen equally often. Run identity: a record without the
    option is min_train_batches=0."""
    from dbn_init import DBN
    from dbn_init.runs import differences, pretraining_settings

    x, y = load_wine(return_X_y=True)
    stacks = []
    for floor, passes, steps in ((0, 1, 1), (10, 11, 11)):  # 165 rows in batches of 16: 11 steps
        dm = ArrayDataModule(x, y, num_labels=15, min_train_batches=floor)
        dm.setup("fit")
        batches = list(dm.train_dataloader())
        served, times = torch.cat([b[0] for b in batches]).unique(dim=0, return_counts=True)
        assert len(batches) == steps and len(served) == len(dm.train_x) and set(times.tolist()) == {passes}
        labels = torch.cat([b[1] for b in batches])
        assert torch.equal(labels.bincount(), torch.full((3,), 5 * passes))
        assert len(dm.val_dataloader().dataset) == len(dm.val_x)  # only the fine-tuning loader repeats
        assert len(dm.pretrain_dataloader().dataset) == len(dm.pretrain_x)
        stacks.append(pretraining_settings(DBN(hidden=[8]), dm))
    assert stacks[0] == stacks[1]  # a pretrained stack does not depend on it: the runner shares it
    record, ours = {"model": {}, "data": {"scaling": "standardize"}}, {"scaling": "standardize"}
    assert differences(record, {"model": {}, "data": {**ours, "min_train_batches": 0}}) == []
    assert differences(record, {"model": {}, "data": {**ours, "min_train_batches": 10}}) != []
