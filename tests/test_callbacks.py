"""RBMPictures on real stage fits (the pictures it writes, the learning curve it plots) and the grid it tiles."""

import csv

import pytest
import torch
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.loggers import CSVLogger

from dbn_init import DBN
from dbn_init.callbacks import RBMPictures
from dbn_init.data import DigitsDataModule
from dbn_init.pretrain import pretrain


@pytest.mark.parametrize("visible_units, scaling", [("bernoulli", "unit"), ("gaussian", "standardize")])
def test_each_stage_writes_its_pictures_and_a_curve_of_every_epochs_errors(tmp_path, visible_units, scaling):
    seed_everything(0)
    data = DigitsDataModule(batch_size=64, scaling=scaling)
    model = DBN(
        recipe="textbook", num_classes=10, input_size=64, hidden=[16, 8], visible_units=visible_units, pretrain_epochs=3
    )
    pictures = RBMPictures((8, 8), n_filters=16, n_samples=8, gibbs_steps=5)
    logger = CSVLogger(tmp_path, name="", version="")

    def trainer(stage, epochs):
        return Trainer(
            max_epochs=epochs,
            accelerator="cpu",
            devices=1,
            logger=logger,
            callbacks=[pictures],
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )

    pretrain(model, data, trainer)
    names = {p.name for p in (tmp_path / "pictures").glob("*.png")}
    for stage in ("rbm1", "rbm2"):
        assert {f"{stage}_{kind}.png" for kind in ("filters", "reconstructions", "samples", "curve")} <= names
    logger.experiment.save()
    with open(tmp_path / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    for stage in ("rbm1", "rbm2"):
        for split in ("train", "val"):
            key = f"{stage}/{split}_recon"
            logged = [float(r[key]) for r in rows if r.get(key)]
            assert len(logged) == 3, key  # one value per epoch (no sanity-check value)
            assert pictures.curves[key] == pytest.approx(logged, rel=1e-6), key  # epoch e plotted at e


def test_image_grid_tiles_images_and_refuses_what_it_cannot_tile():
    from dbn_init.plots import image_grid

    grid = image_grid(torch.arange(8.0).reshape(2, 4) / 7, (2, 2), ncols=2, normalize_each=False, pad=1)
    assert grid.shape == (1 * 3 + 1, 2 * 3 + 1)
    assert grid[1:3, 1:3].ravel().tolist() == pytest.approx([0, 1 / 7, 2 / 7, 3 / 7])  # image 0, row-major
    one = image_grid(torch.rand(1, 4), (2, 2), pad=1)  # one image is padded as many are
    assert one.shape == (4, 4) and one[0].tolist() == [1.0] * 4
    for bad in (torch.zeros(0, 4), torch.tensor(1.0), torch.zeros(3, 5)):
        with pytest.raises(ValueError, match=r"expected images of shape \(n, 4\), n >= 1"):
            image_grid(bad, (2, 2))
