"""dbn_init: greedy RBM pretraining (deep belief networks) versus modern initialisation schemes.

Data flow: YAML -> CLI (``train.py``) -> DataModule + model -> pretraining stage 1..k (RBM k on
the frozen RBMs 1..k-1, :func:`pretrain`) -> transfer into the MLP -> fine-tune -> test.
"""

from . import sklearn as sklearn  # dbn_init.sklearn.DBNClassifier after "import dbn_init" (2 ms)
from .data import (
    ArrayDataModule,
    DatasetDataModule,
    DigitsDataModule,
    FashionMNISTDataModule,
    ImageDataModule,
    InMemoryDataModule,
    MNISTDataModule,
    StreamingDataModule,
)
from .init import INIT_SCHEMES, init_weight
from .io import load_stack, save_stack
from .mlp import MLP
from .models import DBN, Baseline, Classifier
from .pretrain import CDSettings, make_trainer, pretrain
from .rbm import RBM, GaussianRBM, make_rbm
from .transfer import load_pretrained_, pretrain_stack

__all__ = [
    "DBN",
    "Baseline",
    "Classifier",
    "MLP",
    "RBM",
    "GaussianRBM",
    "make_rbm",
    "INIT_SCHEMES",
    "init_weight",
    "InMemoryDataModule",
    "ArrayDataModule",
    "DatasetDataModule",
    "StreamingDataModule",
    "ImageDataModule",
    "DigitsDataModule",
    "MNISTDataModule",
    "FashionMNISTDataModule",
    "CDSettings",
    "make_trainer",
    "pretrain",
    "pretrain_stack",
    "load_stack",
    "save_stack",
    "load_pretrained_",
]
