"""StreamingDataModule on real data read shard by shard from disk, as data too big for memory are."""

from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch import Trainer, seed_everything
from sklearn.datasets import load_digits, load_wine
from torch.utils.data import IterableDataset, TensorDataset

from dbn_init import DBN, DatasetDataModule, StreamingDataModule
from dbn_init.constraints import UsageError


class Shards(IterableDataset):
    """(input, label) items from .npz shard files, one shard in memory at a time; counts its passes."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths, self.passes = paths, 0

    def __iter__(self):
        self.passes += 1
        for path in self.paths:
            with np.load(path) as shard:
                yield from zip(shard["x"], shard["y"].tolist())


def write_shards(folder: Path, x: np.ndarray, y: np.ndarray, per_shard: int = 200) -> list[Path]:
    paths = []
    for i in range(0, len(x), per_shard):
        paths.append(folder / f"shard{i // per_shard:03d}.npz")
        np.savez(paths[-1], x=x[i : i + per_shard], y=y[i : i + per_shard])
    return paths


@pytest.fixture(scope="module")
def digit_shards(tmp_path_factory):
    x, y = load_digits(return_X_y=True)
    images = (x * 255 / 16).round().astype(np.uint8).reshape(-1, 8, 8)  # 8-bit 8x8 pictures
    return Shards(write_shards(tmp_path_factory.mktemp("digits"), images, y))


def served(loader) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*loader)
    return torch.cat(xs), torch.cat(ys)


def test_the_streaming_pass_fits_the_in_memory_scaling_on_the_same_rows():
    """One pass of float64 moments gives DatasetDataModule's statistics for the same training rows,
    for features spanning [-1e3, 1e3] (wine's, stretched) and for 8-bit pixels."""
    x, y = load_wine(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(x))  # the file is sorted by class
    x, y = (x[order] - x.mean(0)) / x.std(0) * 300.0, y[order]  # real values far outside [0, 1]
    train, val, test = (TensorDataset(torch.tensor(x[s], dtype=torch.float32), torch.tensor(y[s])) for s in
                        (slice(0, 120), slice(120, 150), slice(150, None)))  # fmt: skip
    for scaling in ("standardize", "unit"):
        stream = StreamingDataModule(train, val_dataset=val, test_dataset=test, scaling=scaling)
        memory = DatasetDataModule(train, val_dataset=val, test_dataset=test, scaling=scaling)
        memory.setup("fit")
        for name in ("raw_low", "raw_high", "feature_mean", "feature_std"):
            torch.testing.assert_close(getattr(stream, name), getattr(memory, name), rtol=1e-5, atol=1e-5, msg=name)
        xs, _ = served(stream.pretrain_dataloader())
        torch.testing.assert_close(xs.mean(0), memory.pretrain_x.mean(0), rtol=1e-4, atol=1e-4)
    assert stream.input_size == 13 and stream.num_classes == 3 and stream.image_shape is None


def test_splits_are_disjoint_cover_the_stream_and_hold_their_fractions(digit_shards):
    dm = StreamingDataModule(digit_shards, test_fraction=0.2, val_fraction=0.1, batch_size=64)
    counts = dm.survey.counts
    assert sum(counts.values()) == 1797
    assert abs(counts["test"] / 1797 - 0.2) < 0.01 and abs(counts["val"] / 1797 - 0.1) < 0.01
    seen = {}
    for split, loader in (("pretrain", dm.pretrain_dataloader()), ("val", dm.val_dataloader()),
                          ("test", dm.test_dataloader())):  # fmt: skip
        xs, ys = served(loader)
        seen[split] = {(tuple(row.tolist()), int(label)) for row, label in zip(xs, ys)}
        assert len(xs) == counts["train" if split == "pretrain" else split] == len(loader.dataset)
    assert not seen["pretrain"] & seen["test"] and not seen["pretrain"] & seen["val"]
    assert dm.image_shape == (8, 8) and dm.input_size == 64 and dm.num_classes == 10
    xs, _ = served(dm.test_dataloader())
    assert xs.min() >= 0 and xs.max() <= 1 and (xs * 255).round().eq(xs * 255).all()  # uint8 / 255


def test_the_shuffle_buffer_follows_the_epoch_lightning_sets_and_budgets_keep_balanced_labels(digit_shards):
    dm = StreamingDataModule(digit_shards, batch_size=50, shuffle_buffer=300, num_labels=100)
    loader = dm.pretrain_dataloader()
    first, again = served(loader)[1], served(loader)[1]
    loader.sampler.set_epoch(1)  # what Lightning calls before each epoch
    other = served(loader)[1]
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert sorted(first.tolist()) == sorted(other.tolist())  # the same items, in another order
    _, labels = served(dm.train_dataloader())
    assert len(labels) == 100 and torch.bincount(labels, minlength=10).tolist() == [10] * 10


def test_each_process_reads_an_equal_disjoint_share(digit_shards, monkeypatch):
    """Under DDP every rank must make the same number of steps, each on other items."""
    shares = []
    for rank in (0, 1):
        monkeypatch.setattr(StreamingDataModule, "_rank", staticmethod(lambda r=rank: (r, 2)))
        dm = StreamingDataModule(digit_shards, batch_size=64)
        xs, ys = served(dm.pretrain_dataloader())
        shares.append({(tuple(row.tolist()), int(label)) for row, label in zip(xs, ys)})
        assert len(xs) == dm.survey.counts["train"] // 2
    assert not shares[0] & shares[1]


def test_a_dbn_pretrains_and_fine_tunes_on_a_stream_that_is_read_again_every_epoch(digit_shards, tmp_path):
    seed_everything(0)
    dm = StreamingDataModule(digit_shards, batch_size=32)
    passes = digit_shards.passes
    dbn = DBN(recipe="textbook", input_size=None, num_classes=None, hidden=[64], pretrain_epochs=2, lr=3e-3)
    trainer = Trainer(max_epochs=4, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, enable_checkpointing=False, default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(dbn, datamodule=dm)
    assert dbn.hparams.input_size == 64 and dbn.hparams.num_classes == 10 and dbn.stages_done == 1
    assert digit_shards.passes - passes >= 2 + 4  # every epoch streams the shards again
    assert trainer.test(dbn, datamodule=dm, verbose=False)[0]["test_acc"] > 0.8  # 10 classes: chance is 0.1


def test_items_unlike_the_first_are_refused_in_one_line(tmp_path):
    x, y = load_digits(return_X_y=True)
    paths = write_shards(tmp_path, x[:100], y[:100], per_shard=50)
    np.savez(paths[0], x=x[:50, :60], y=y[:50])  # one shard of another width
    with pytest.raises(UsageError, match=r"item 50 is \(64,\) float64 with a label, item 0 \(60,\) float64"):
        StreamingDataModule(Shards(sorted(tmp_path.glob("*.npz"))))
    with pytest.raises(UsageError, match="test_fraction \\+ val_fraction < 1"):
        StreamingDataModule(Shards(paths), test_fraction=0.6, val_fraction=0.5)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("split", ["train", "test"])
def test_a_stream_holding_nan_or_inf_is_refused_in_one_line_naming_the_item(tmp_path, bad, split):
    x, y = load_digits(return_X_y=True)
    dm = StreamingDataModule(Shards(write_shards(tmp_path, x, y)), test_fraction=0.2, val_fraction=0.1)
    item = max(i for i in range(len(x)) if dm._split_of(i) == split)  # near the end of the stream
    x[item, 7] = bad  # one pixel of one row, in the last shard: a carved test row is checked too
    with pytest.raises(
        UsageError,
        match=rf"^expected finite values in the training dataset's item {item} \(of the {split} split\), got 1 "
        r"NaN/Inf \(the first at feature 7\); fix it",
    ):
        StreamingDataModule(Shards(write_shards(tmp_path, x, y)), test_fraction=0.2, val_fraction=0.1)


def test_every_batch_of_a_split_is_counted_when_workers_batch_their_own_shares(digit_shards):
    """Two workers each batch half the test rows: the loader's length must count every batch they make,
    or Lightning, trusting it, leaves the last rows of the split unscored."""
    dm = StreamingDataModule(digit_shards, batch_size=128, num_workers=2)
    loader = dm.test_dataloader()
    sizes = [len(batch[1]) for batch in loader]
    assert len(sizes) == len(loader) and sum(sizes) == len(loader.dataset) > 128
    assert len(sizes) > -(-len(loader.dataset) // 128)  # more than torch's count for one batching
