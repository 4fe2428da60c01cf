"""DataModules: the bundled image datasets, your own arrays or files, any torch ``Dataset``; the readers.

One module each: :mod:`.base` (:class:`InMemoryDataModule`: splits, scaling, loaders),
:mod:`.images` (digits, MNIST, Fashion-MNIST), :mod:`.arrays` (:class:`ArrayDataModule`),
:mod:`.datasets` (:class:`DatasetDataModule`), :mod:`.streaming` (:class:`StreamingDataModule`,
for data that do not fit in memory) and :mod:`.readers` (IDX and array files).

Every DataModule here but the streaming one holds its data in memory and yields ``(x, y)`` batches, ``x`` float32
``(B, D)`` (flattened inputs) and ``y`` int64 ``(B,)`` (-1 for a row without a label), from four
splits made in ``setup`` by one base class, :class:`InMemoryDataModule`:

- ``test_x``: the source's own test set, else a fraction carved with the constant seed 0 (never
  ``split_seed``, so test scores compare across seeds);
- ``val_x``: carved from the training rows with ``split_seed`` (or a source's own validation set);
- ``pretrain_x``: every other training row, plus any unlabelled extra rows (RBM pretraining);
- ``train_x``: its labelled rows, or a class-balanced ``num_labels`` of them (fine-tuning).

Scaling (``scaling``) is fitted on the pretraining rows only and applied to every split by
:meth:`InMemoryDataModule.scale`. The subclasses only read their source: :class:`ImageDataModule`
(pixels of a known range: :class:`DigitsDataModule`, :class:`MNISTDataModule`,
:class:`FashionMNISTDataModule`), :class:`ArrayDataModule` (arrays, ``.npz``/``.npy``/``.csv``
files, a loader function such as ``sklearn.datasets.load_wine``) and :class:`DatasetDataModule`
(any map-style or iterable torch ``Dataset``: ``torchvision.datasets.ImageFolder``, ``CIFAR10``...).
Each checks its own files (shape, NaN, the format's value range) with one line naming the fix;
whether values suit the first RBM's units (Bernoulli: [0, 1]) is checked by the model, not here.

IDX files are looked for in a flat folder (Debian's ``dataset-fashion-mnist`` installs the four
files in ``/usr/share/datasets/fashion-mnist/``) and in torchvision's ``ROOT/<Name>/raw/``.
The IDX format: http://yann.lecun.com/exdb/mnist/ (section "FILE FORMATS FOR THE MNIST DATABASE").
"""

from .arrays import ArrayDataModule
from .base import EpochShuffle, InMemoryDataModule, TensorBatches
from .datasets import DatasetDataModule
from .images import DigitsDataModule, FashionMNISTDataModule, ImageDataModule, MNISTDataModule, offline_hint
from .readers import load_idx_dataset, read_array_file, read_idx
from .streaming import StreamingDataModule

__all__ = [
    "InMemoryDataModule",
    "ImageDataModule",
    "DigitsDataModule",
    "MNISTDataModule",
    "FashionMNISTDataModule",
    "ArrayDataModule",
    "DatasetDataModule",
    "StreamingDataModule",
    "read_idx",
    "load_idx_dataset",
    "read_array_file",
    "offline_hint",
    "TensorBatches",
    "EpochShuffle",
]
