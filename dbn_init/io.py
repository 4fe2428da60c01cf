"""Import and export of pretrained RBM stacks, without ever executing code from a weights file.

Formats :func:`load_stack` reads (each checked by one shared validator before anything is
returned; every problem found is reported in one ``ValueError`` that names the file):

* **safetensors** (:func:`save_stack` writes these, format version 2; docs/weights-format.md):
  tensors ``rbm.{i}.weight`` of shape ``(n_hidden, n_visible)``, like ``nn.Linear``,
  ``rbm.{i}.visible_bias`` ``(n_visible,)`` and ``rbm.{i}.hidden_bias`` ``(n_hidden,)``, where it
  is not 1 the scalar ``rbm.{i}.input_scale`` (``RBM.input_scale``: the layer's weight is
  ``weight * input_scale``), and the
  fitted input transform where the DataModule had one, ``scaling.raw_low``, ``scaling.raw_high``,
  ``scaling.feature_mean``, ``scaling.feature_std`` ``(n_visible_0,)`` (model input =
  ``((raw - raw_low) / (raw_high - raw_low) - feature_mean) / feature_std``); string
  metadata ``format`` ("dbn_init.rbm_stack"), ``format_version`` ("2"), ``visible_units`` and
  ``hidden_units`` (JSON lists, one per RBM), ``sizes`` (JSON list ``[n_visible_0, n_hidden_0,
  n_hidden_1, ...]``), ``scaling`` ("unit", "standardize" or "none") and ``image_shape`` (JSON
  list, or null for tabular data). Version 1 files (no hidden_units, statistics or image shape)
  are read with sigmoid hidden units and no statistics or shape; other versions are refused.
* **Lightning checkpoints** of :class:`dbn_init.models.DBN` (``state_dict["rbms.{i}.weight"]``...),
  read with ``torch.load(..., weights_only=True)`` only.
* **.npz** with keys ``weight_{i}`` ``(n_hidden, n_visible)``, ``visible_bias_{i}``,
  ``hidden_bias_{i}`` and optionally ``visible_units`` (string array), read with ``allow_pickle=False``.
* **scikit-learn**: a list of fitted ``BernoulliRBM`` (bottom to top), via :func:`from_sklearn`.

Pickles (plain, joblib, whole pickled modules) are refused: unpickling runs arbitrary code.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import re
import struct
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, NamedTuple, Sequence

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .constraints import FileTakenError, MissingFileError, OutputError, UsageError
from .rbm import HIDDEN_UNITS, RBM, make_rbm, per_rbm, stack_units
from .scaling import SCALINGS, STATS, Scaling

__all__ = ["save_stack", "load_stack", "read_checkpoint", "data_record", "StackFile", "from_sklearn", "FORMAT_VERSION"]

FORMAT = "dbn_init.rbm_stack"
FORMAT_VERSION = "2"
_READABLE_VERSIONS = ("1", "2")  # 1 lacks hidden_units, the scaling statistics and image_shape: safe defaults
_KINDS = ("weight", "visible_bias", "hidden_bias")
_SCALE = "input_scale"  # optional, a positive scalar per RBM (1 where absent): RBM.input_scale
_NAMES = (*_KINDS, _SCALE)  # every tensor of an RBM a stack may hold
_UNITS = ("bernoulli", "gaussian")
_ORIENTATION = "weight is (n_hidden, n_visible), like nn.Linear"
_MAX_HEADER = 100_000_000  # the safetensors library's own header limit
_ACCEPTED = (
    "a dbn_init .safetensors file, a Lightning .ckpt of a DBN, or a .npz with keys weight_{i}, "
    "visible_bias_{i}, hidden_bias_{i}"
)
_PICKLE_HELP = (
    "unpickling can execute arbitrary code, so dbn_init never does it. Convert the file in a trusted "
    "environment: load it there, then call dbn_init.io.save_stack(rbms, 'out.safetensors') (scikit-learn "
    "BernoulliRBMs: save_stack(dbn_init.io.from_sklearn([rbm]), ...)), or write a .npz "
    "with keys weight_{i} (n_hidden, n_visible), visible_bias_{i}, hidden_bias_{i}"
)
# Magic numbers of files that hold pickles: pickle protocol 2+, and the compressors joblib.dump uses.
_PICKLE_MAGIC = {b"\x80": "a pickle"} | {
    magic: f"a {kind}-compressed joblib dump (a pickle)"
    for kind, magics in {
        "zlib": (b"x\x01", b"x^", b"x\x9c", b"x\xda"),
        "gzip": (b"\x1f\x8b",),
        "bz2": (b"BZh",),
        "xz": (b"\xfd7zXZ",),
        "lzma": (b"]\x00\x00",),
        "lz4": (b"\x04\x22\x4d\x18",),
    }.items()
    for magic in magics
}

Label = Callable[[int, str], str]  # (layer index, kind) -> the name the user sees in their file


@dataclass
class StackFile:
    """A loaded RBM stack: float32 RBMs bottom to top, and the file's string metadata."""

    rbms: list[RBM]
    metadata: dict[str, str] = field(default_factory=dict)
    # The fitted input transform, each (n_visible_0,), by name (raw_low, raw_high, feature_mean,
    # feature_std), where the file holds it: model input = ((raw - raw_low) / (raw_high - raw_low) - mean) / std.
    stats: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def feature_mean(self) -> torch.Tensor | None:
        return self.stats.get("feature_mean")

    @property
    def feature_std(self) -> torch.Tensor | None:
        return self.stats.get("feature_std")

    def scale(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw rows (N, n_visible_0) as RBM 1 saw its training data, by the recorded transform, as
        :meth:`dbn_init.data.InMemoryDataModule.scale` applies it (unit: clamped into [0, 1], then
        thresholded at 0.5 if the data were binarised)."""
        if self.scaling != "none" and "raw_low" not in self.stats:
            raise UsageError(
                f"this stack records scaling {self.scaling!r} but not the transform's statistics (a "
                "checkpoint's or a foreign file's stack); scale the rows as its training data were"
            )
        fitted = Scaling.fit("none", self.rbms[0].n_visible).stats() | self.stats  # the identity where unrecorded
        return Scaling(self.scaling, **fitted, binarize=self.binarize)(raw)

    @property
    def binarize(self) -> bool:
        """Whether the training inputs were thresholded at 0.5 after unit scaling, as recorded."""
        return self.metadata.get("binarize") == "true"

    @property
    def image_shape(self) -> tuple[int, ...] | None:
        """Shape of one input image ((H, W) or (C, H, W)) as recorded, None for tabular data or unrecorded."""
        shape = json.loads(self.metadata.get("image_shape") or "null")
        return tuple(shape) if isinstance(shape, list) else None

    @property
    def hidden_units(self) -> list[str]:
        """Hidden unit type of each RBM, as the file records it; else the RBMs' own (a file that
        records none is read with sigmoid, Bernoulli, units)."""
        units = json.loads(self.metadata.get("hidden_units") or "null")
        return units if isinstance(units, list) else [rbm.hidden_units for rbm in self.rbms]

    @property
    def scaling(self) -> str:
        """How RBM 1's inputs were scaled: the file's record, else what its visible units want
        ("standardize" for Gaussian, "unit" for Bernoulli)."""
        return self.metadata.get("scaling") or ("standardize" if self.rbms[0].visible_units == "gaussian" else "unit")


class _Raw(NamedTuple):
    """What a format reader found, before validation."""

    found: dict  # (layer, kind) -> tensor or ndarray, as stored
    label: Label
    units: list | None  # visible unit type per RBM; None: all Bernoulli
    metadata: dict[str, str]
    stats: dict | None = None  # the scaling.* tensors the file holds, by name


# --- writing --------------------------------------------------------------------------------
def data_record(datamodule) -> dict[str, Any]:
    """What a stack file records of the data it was trained on, read from a DataModule's
    attributes where it has them: :func:`save_stack`'s ``scaling``, ``binarize``, ``stats`` and ``image_shape``."""
    stats = {name: getattr(datamodule, name) for name in STATS if getattr(datamodule, name, None) is not None}
    return {
        "scaling": getattr(datamodule, "scaling", None)
        or dict(getattr(datamodule, "hparams", {})).get("scaling")
        or "none",
        "binarize": bool(getattr(datamodule, "binarize", False)),
        "stats": stats,
        "image_shape": getattr(datamodule, "image_shape", None),
    }


def save_stack(
    rbms: Sequence[RBM],
    path: str | os.PathLike,
    *,
    scaling: str | None = None,
    binarize: bool = False,
    stats: dict[str, torch.Tensor] | None = None,
    image_shape: Sequence[int] | None = None,
    extra_metadata: dict[str, str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write an RBM stack (bottom to top) as one safetensors file, atomically; returns the path. A
    fitted DBN in place of ``rbms`` writes its stack and, unless given, the record of the data it was
    fitted on (``dbn.trained_on``), as ``train.py`` exports it.

    ``scaling`` records how RBM 0's inputs were scaled ("unit": in [0, 1]; "standardize": zero
    mean, unit variance; "none": as given; None: what RBM 0's visible units model, "standardize" for
    Gaussian units, else "unit", as :func:`load_stack` assumes of files that record none) and
    ``stats`` the fitted transform (:data:`STATS`, each (n_visible_0,)), so that later inference
    applies the same one; ``image_shape`` the shape of one input image.
    ``save_stack(rbms, path, **data_record(datamodule))`` takes all of it from the DataModule;
    ``extra_metadata``, strings of one's own, is written beside the format's keys, which take
    precedence. The stack is validated like a loaded one, so a diverged
    (NaN) or inconsistent stack is refused before anything is written.
    """
    path = Path(path)
    if hasattr(rbms, "_stack"):  # a DBN: its stack (a warning if untrained), and the data it was fitted on unless given
        recorded = rbms.trained_on or {}
        scaling, stats = scaling or recorded.get("scaling"), stats or recorded.get("stats")
        binarize, image_shape = binarize or recorded.get("binarize", False), image_shape or recorded.get("image_shape")
        rbms = rbms._stack("save_stack")
    if not isinstance(rbms, Iterable) or not rbms or not all(isinstance(r, RBM) for r in rbms):
        got = [type(r).__name__ for r in rbms] if isinstance(rbms, Iterable) else type(rbms).__name__
        raise UsageError(f"cannot save to {path}: expected a sequence of dbn_init RBMs (wrap one as [rbm]), got {got}")
    scaling = scaling or StackFile(list(rbms)).scaling  # what a file without a record is read as
    problems = [] if scaling in SCALINGS else [f"scaling must be one of {list(SCALINGS)}, got {scaling!r}"]
    bad = {k: v for k, v in (extra_metadata or {}).items() if not (isinstance(k, str) and isinstance(v, str))}
    problems += [f"extra_metadata must map strings to strings, got {bad}"] if bad else []
    _refuse(f"cannot save to {path}", problems + stack_problems(rbms))
    if path.is_dir():
        raise UsageError(f"cannot save to {path}: it is a folder; give a file name, e.g. {path / 'dbn.safetensors'}")
    if path.suffix != ".safetensors":  # readers, np.load's among them, go by the name
        raise UsageError(
            f"cannot save to {path}: expected a .safetensors name (the format written), e.g. "
            f"{path.with_suffix('.safetensors')}"
        )
    if path.exists() and not overwrite:
        raise FileTakenError(f"{path} already exists; pass overwrite=True (--overwrite on the command line)")
    if not path.parent.is_dir():
        raise MissingFileError(f"cannot save to {path}: folder {path.parent} does not exist; create it first")
    tensors = {
        f"rbm.{i}.{k}": getattr(r, k).detach().float().cpu().contiguous() for i, r in enumerate(rbms) for k in _KINDS
    }
    tensors |= {f"rbm.{i}.{_SCALE}": r.input_scale.float().cpu() for i, r in enumerate(rbms) if r.input_scale != 1}
    for name, value in (stats or {}).items():
        tensors[f"scaling.{name}"] = torch.as_tensor(value, dtype=torch.float32).cpu().contiguous()
    metadata = {
        **(extra_metadata or {}),
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "visible_units": json.dumps([r.visible_units for r in rbms]),
        "hidden_units": json.dumps([r.hidden_units for r in rbms]),
        "sizes": json.dumps([rbms[0].n_visible] + [r.n_hidden for r in rbms]),
        "scaling": scaling,
        "binarize": json.dumps(bool(binarize)),
        "image_shape": json.dumps(None if image_shape is None else [int(n) for n in image_shape]),
    }
    with replacing(path) as tmp:
        save_file(tensors, tmp, metadata=metadata)
    return path


def stack_problems(rbms: Sequence[RBM]) -> list[str]:
    """What keeps RBMs made in Python (bottom to top) from being a stack, in :func:`load_stack`'s
    words: layers that do not chain, NaN/Inf values (counted in float32, as saved); [] if nothing."""
    problems: list[str] = []
    layers, found = list(range(len(rbms))), {(i, k): getattr(r, k) for i, r in enumerate(rbms) for k in _KINDS}
    _float_values(found, layers, lambda i, k: f"rbms[{i}].{k}", problems)
    _check_chain({i: tuple(r.weight.shape) for i, r in enumerate(rbms)}, layers, None, problems)
    return problems


@contextlib.contextmanager
def replacing(path: Path) -> Iterator[str]:
    """A temporary file to write ``path``'s new contents to; when the block ends without error it
    replaces ``path``, else it is removed. A temp file in the same folder makes ``os.replace`` an
    atomic rename, so a crash mid-write leaves the previous file intact."""
    folder = path.parent
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise OutputError(f"cannot write to folder {folder} ({err.strerror}); choose a writable folder") from err
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        # mkstemp makes files 0600; give the result the mode an ordinary file (or the old one) has
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o644)
        os.replace(tmp, path)
    except OSError as err:  # ENOSPC, EROFS, EDQUOT...: what stopped the write, and where
        raise OutputError(
            f"cannot write {path} ({err.strerror or err}); nothing was replaced: free space on its "
            "disk, or write to another folder"
        ) from err
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# --- reading --------------------------------------------------------------------------------
def load_stack(
    source: str | os.PathLike | Sequence[Any], *, input_size: int | None = None, hidden: Sequence[int] | None = None
) -> StackFile:
    """Load and validate an RBM stack from a file, or from a list of fitted sklearn ``BernoulliRBM``.

    ``input_size`` (n_visible of RBM 0) and ``hidden`` (n_hidden of each RBM; the stack may be a
    prefix of ``hidden`` when more layers will be pretrained on top) are checked when given.
    Raises ``FileNotFoundError`` for a missing file, ``OSError`` for one this user may not read,
    and ``ValueError`` for anything else wrong with the input, listing every problem at once.
    """
    if isinstance(source, (list, tuple)):
        return StackFile(from_sklearn(source, input_size=input_size, hidden=hidden), {"source": "sklearn"})
    path = Path(source)
    if not path.exists():
        raise MissingFileError(f"no such file: {path}; expected {_ACCEPTED}")
    if not path.is_file():
        raise UsageError(f"{path} is not a regular file; expected {_ACCEPTED}")
    problems: list[str] = []  # the readers add what they find; _build adds the rest and raises once
    raw = _sniff(path)(path, problems)
    if raw.metadata.get("scaling") not in (None, *SCALINGS):
        problems.append(f"metadata scaling must be one of {list(SCALINGS)}, got {raw.metadata['scaling']!r}")
    hidden_units = _json_list(raw.metadata, "hidden_units", problems) if raw.metadata.get("hidden_units") else None
    rbms = _build(str(path), raw.found, raw.label, raw.units, problems, input_size, hidden, hidden_units)
    return StackFile(rbms, raw.metadata, raw.stats or {})


def _sniff(path: Path) -> Callable[[Path, list[str]], _Raw]:
    """Pick the reader by content: zip (torch checkpoint or npz), safetensors, or refuse."""
    with open(path, "rb") as f:
        head = f.read(16)
    if not head:
        raise UsageError(f"{path} is empty (0 bytes); expected {_ACCEPTED}")
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except Exception as err:  # BadZipFile, zlib or decoding errors: all mean "corrupt"
            raise UsageError(f"{path} looks like a zip file but is corrupt ({err}); expected {_ACCEPTED}") from err
        if any(n.endswith("data.pkl") for n in names):
            return _read_checkpoint
        if names and all(n.endswith(".npy") for n in names):
            return _read_npz
        raise UsageError(f"{path} is a zip file but neither a torch checkpoint nor an .npz; expected {_ACCEPTED}")
    # safetensors before the magic numbers: a 128-byte header would start with b"\x80" like a
    # pickle, but no pickle has a header length under 100 MB followed by "{".
    if head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] <= _MAX_HEADER:
        return _read_safetensors
    what = next((what for magic, what in _PICKLE_MAGIC.items() if head.startswith(magic)), None)
    if what is not None:
        raise UsageError(f"{path} looks like {what}; refusing to load it: {_PICKLE_HELP}")
    raise UsageError(f"{path} is not a recognised weights file (unknown content); expected {_ACCEPTED}")


def _read_safetensors(path: Path, problems: list[str]) -> _Raw:
    try:  # safetensors checks the header (JSON, string metadata, offsets) against the file's length
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except Exception as err:  # SafetensorError: a truncated or malformed file, whatever the detail
        raise UsageError(f"{path} is a truncated or corrupt safetensors file ({err})") from err
    ours = meta.get("format") == FORMAT  # a foreign file is accepted if its tensor names follow our scheme
    if ours and meta.get("format_version") not in _READABLE_VERSIONS:
        problems.append(
            f"format_version is {meta.get('format_version')!r}, and this dbn_init reads versions "
            f"{', '.join(_READABLE_VERSIONS)}; read it with the dbn_init that wrote it, or upgrade dbn_init"
        )
    stats = {name: tensors.pop(f"scaling.{name}").float() for name in STATS if f"scaling.{name}" in tensors}
    found, label = _match(tensors, "rbm.{i}.{kind}", problems)
    units = _json_list(meta, "visible_units", problems) if ours else None
    return _Raw(found, label, units, dict(meta), stats)


def read_checkpoint(path: str | os.PathLike) -> dict:
    """A Lightning checkpoint's contents, loaded weights-only after a check of the file's content:
    a corrupt, truncated or pickle-bearing file, or a weights-only stack, is refused with one
    ValueError naming it."""
    path = Path(path)
    if _sniff(path) is not _read_checkpoint:
        raise UsageError(
            f"{path} holds RBM weights but no training state, so there is nothing to resume; to start "
            "from those weights, pass it to model.pretrained"
        )
    return _torch_load(path)


def _torch_load(path: Path) -> Any:
    try:  # from a file object: torch.load would read a path named *.safetensors as safetensors
        with open(path, "rb") as f:
            return torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:  # weights_only met a class or function: a pickled object
        culprit = re.search(r"GLOBAL ([\w.]+)", str(err))
        holds = f" (it holds {culprit.group(1)})" if culprit else ""
        raise UsageError(
            f"{path} holds pickled Python objects{holds}, not just weights; refusing to load it: {_PICKLE_HELP}"
        ) from err
    except Exception as err:  # torch raises RuntimeError, EOFError, KeyError... for corrupt archives
        raise UsageError(f"{path} is a truncated or corrupt torch checkpoint ({type(err).__name__}: {err})") from err


def _read_checkpoint(path: Path, problems: list[str]) -> _Raw:
    ckpt = _torch_load(path)
    # A Lightning checkpoint nests the weights in "state_dict"; a bare torch.save(model.state_dict()) does not.
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else ckpt
    if not isinstance(state, dict):
        raise UsageError(f"{path} holds a {type(state).__name__}; expected a Lightning checkpoint with a state_dict")
    rbm_keys = {k: v for k, v in state.items() if isinstance(k, str) and k.startswith("rbms.")}
    if not rbm_keys and any(isinstance(k, str) and k.startswith("mlp.") for k in state):
        raise UsageError(
            f"{path} is the checkpoint of a model without RBMs (a Baseline's MLP), so it holds no stack "
            "to start a DBN from; pass a DBN's checkpoint or an exported .safetensors stack, or resume "
            "that Baseline run with ckpt_path"
        )
    found, label = _match(rbm_keys, "rbms.{i}.{kind}", problems)
    hparams, data_hp = ckpt.get("hyper_parameters"), ckpt.get("datamodule_hyper_parameters")
    units, n = None, len({i for i, _ in found})
    meta = {"source": "lightning_checkpoint"}
    if isinstance(hparams, dict) and "visible_units" in hparams and n:
        hidden_units = hparams.get("hidden_units", "sigmoid")
        visible = hparams["visible_units"] or "bernoulli"  # None: saved before it saw data, RBM 1 built Bernoulli
        units = stack_units(visible, hidden_units, n)  # upper RBMs model the activations below
        meta["hidden_units"] = json.dumps(per_rbm(hidden_units, n))
    record = ckpt.get("dbn_init") if isinstance(ckpt.get("dbn_init"), dict) else {}  # a stage checkpoint's
    stage = record.get("stage")
    if isinstance(stage, int) and stage >= 1:  # rbm{k}-last.ckpt of pretraining stage k
        # It holds the whole stack, but the RBMs above k were not trained yet: the stack is RBMs 1..k.
        found = {(i, kind): t for (i, kind), t in found.items() if i < stage}
        saved_units, saved_hidden = record.get("visible_units"), record.get("hidden_units")
        units = list(saved_units[:stage]) if isinstance(saved_units, list) else None
        if isinstance(saved_hidden, list):
            meta["hidden_units"] = json.dumps(saved_hidden[:stage])
        meta.update(stage=str(stage), stage_epochs_done=str(ckpt.get("epoch", -1) + 1))
    if isinstance(data_hp, dict) and isinstance(data_hp.get("scaling"), str):  # a checkpoint without dbn_init_data
        meta["scaling"] = data_hp["scaling"]
    data = ckpt.get("dbn_init_data") if isinstance(ckpt.get("dbn_init_data"), dict) else {}  # data_record's
    if isinstance(data.get("scaling"), str):
        meta.update(
            scaling=data["scaling"],
            binarize=json.dumps(bool(data.get("binarize"))),
            image_shape=json.dumps(data.get("image_shape") and list(data["image_shape"])),
        )
    stats = {k: v for k, v in (data.get("stats") or {}).items() if k in STATS and isinstance(v, torch.Tensor)}
    return _Raw(found, label, units, meta, stats)


def _read_npz(path: Path, problems: list[str]) -> _Raw:
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception as err:  # object arrays need pickle, so np.load refuses them with ValueError
        raise UsageError(
            f"{path} is a corrupt .npz, or holds object arrays that need pickle ({err}); "
            "expected numeric arrays weight_{i}, visible_bias_{i}, hidden_bias_{i}"
        ) from err
    units = arrays.pop("visible_units", None)
    units = None if units is None else [str(u) for u in np.atleast_1d(units)]  # _build refuses any other names
    found, label = _match(arrays, "{kind}_{i}", problems)
    return _Raw(found, label, units, {"source": "npz"})


def from_sklearn(
    estimators: Sequence[Any], *, input_size: int | None = None, hidden: Sequence[int] | None = None
) -> list[RBM]:
    """Convert fitted ``sklearn.neural_network.BernoulliRBM`` estimators (bottom to top) to RBMs.

    ``components_`` is (n_components, n_features) = (n_hidden, n_visible), our orientation, so it
    is copied as is; ``intercept_hidden_`` and ``intercept_visible_`` become the biases.
    """
    names = {"weight": "components_", "visible_bias": "intercept_visible_", "hidden_bias": "intercept_hidden_"}
    problems, found = [], {}
    for i, est in enumerate(estimators):
        if not hasattr(est, "components_"):
            problems.append(f"estimators[{i}] ({type(est).__name__}) is not a fitted BernoulliRBM; call fit first")
        found.update({(i, k): np.asarray(getattr(est, a)) for k, a in names.items() if hasattr(est, a)})
    _refuse("sklearn estimators", problems)  # an unfitted one leaves a gap in the layers: no more to say
    label = lambda i, k: f"estimators[{i}].{names[k]}"  # noqa: E731
    return _build("sklearn estimators", found, label, None, problems, input_size, hidden)


# --- the one validator ----------------------------------------------------------------------
def _match(tensors: dict[str, Any], scheme: str, problems: list[str]) -> tuple[dict, Label]:
    """Map names like ``rbm.3.weight`` to ``(3, "weight")`` by ``scheme`` (e.g. "rbm.{i}.{kind}"), and
    give the name of a (layer, kind) in the file; names outside the scheme are problems."""
    pattern = scheme.replace(".", r"\.").format(i=r"(?P<i>0|[1-9]\d*)", kind=r"(?P<kind>\w+?)")
    found, unknown = {}, []
    for name, value in tensors.items():
        m = re.fullmatch(pattern, name)
        if m and m["kind"] in _NAMES:
            found[int(m["i"]), m["kind"]] = value
        else:
            unknown.append(name)
    if unknown:
        expected = ", ".join(scheme.format(i="{i}", kind=kind) for kind in _KINDS)
        problems.append(f"unexpected tensor names {_short(sorted(unknown))}; expected the scheme {expected}")
    return found, lambda i, kind: scheme.format(i=i, kind=kind)


def _build(
    name: str,
    found: dict,
    label: Label,
    units: list | None,
    problems: list[str],
    input_size: int | None = None,
    hidden: Sequence[int] | None = None,
    hidden_units: list | None = None,
) -> list[RBM]:
    """Check every tensor of a stack, then build float32 RBMs; one ValueError lists all problems.
    ``units``, ``hidden_units``: the visible and hidden unit type per RBM (None: all Bernoulli, sigmoid)."""
    layers = sorted({i for i, _ in found})
    if not layers and not problems:
        problems.append(f"no RBM tensors found; expected {', '.join(label(0, k) for k in _KINDS)}, ... per layer")
    if layers and layers[-1] != len(layers) - 1:  # indices must be exactly 0..n-1
        gaps = [j for j in range(len(layers) + 1) if j not in set(layers)]
        problems.append(f"layer indices must run 0..n-1 without gaps, found {_short(layers)} (missing {gaps[:10]})")
    values = _float_values(found, layers, label, problems)
    shapes = {i: shape for i in layers if (shape := _layer_shape(found, i, label, problems)) is not None}
    got = _check_chain(shapes, layers, input_size, problems)
    if got is not None and hidden is not None:
        _check_hidden(got, hidden, problems)
    units = _unit_list("visible_units", units, _UNITS, len(layers), problems)
    hidden_units = _unit_list("hidden_units", hidden_units, HIDDEN_UNITS, len(layers), problems)
    _refuse(name, problems)
    rbms = []
    with torch.random.fork_rng(devices=[]), torch.no_grad():  # make_rbm's random init leaves the caller's RNG alone
        for i in layers:
            rbm = make_rbm(shapes[i][1], shapes[i][0], units[i], hidden_units=hidden_units[i])
            for kind in _KINDS:
                getattr(rbm, kind).copy_(values[i, kind])
            rbm.input_scale.fill_(float(found.get((i, _SCALE), 1.0)))  # save_stack writes positive ones only
            rbms.append(rbm)
    return rbms


def _refuse(name: str, problems: list[str]) -> None:
    """One ValueError headed ``name`` that lists every problem, if there are any."""
    if problems:
        raise UsageError(f"{name}: {len(problems)} problem(s) with the RBM stack:\n  - " + "\n  - ".join(problems))


def _unit_list(key: str, units: list | None, allowed: Sequence[str], n: int, problems: list[str]) -> list:
    """The unit type of each of ``n`` RBMs (None: the first allowed one, Bernoulli or sigmoid, for
    all), with a problem if the list is not one allowed name per RBM."""
    units = [allowed[0]] * n if units is None else units
    if len(units) != n or any(u not in allowed for u in units):
        problems.append(f"{key} must list one of {list(allowed)} per RBM ({n}), got {_short(units)}")
    return units


def _float_values(found: dict, layers: list[int], label: Label, problems: list[str]) -> dict:
    """Each (layer, kind) tensor as float32, with a problem for a missing, non-float or non-finite one."""
    values = {}
    for i in layers:
        for kind in _KINDS:
            x, lab = found.get((i, kind)), label(i, kind)
            if x is None:
                problems.append(f"missing {lab}")
            elif not (x.is_floating_point() if isinstance(x, torch.Tensor) else x.dtype.kind == "f"):
                problems.append(f"{lab} has dtype {x.dtype}, expected a floating dtype (float32 or float64)")
            else:  # count after the cast: a float64 1e300 becomes Inf in float32
                t = torch.from_numpy(np.asarray(x, np.float32)) if isinstance(x, np.ndarray) else x.detach().cpu()
                values[i, kind] = t = t.to(torch.float32)
                nan, inf = int(t.isnan().sum()), int(t.isinf().sum())
                if nan or inf:
                    problems.append(
                        f"{lab} holds {nan} NaN and {inf} Inf value(s), expected finite values; "
                        "a diverged RBM cannot be imported: retrain it, e.g. with a lower learning rate"
                    )
    return values


def _layer_shape(found: dict, i: int, label: Label, problems: list[str]) -> tuple[int, int] | None:
    """Layer ``i``'s (n_hidden, n_visible), with a problem for a non-2-D, transposed or mismatched layer."""
    w, vb, hb = (tuple(found[i, k].shape) if hasattr(found.get((i, k)), "shape") else None for k in _KINDS)
    if w is None:  # missing: already reported
        return None
    if len(w) != 2:
        problems.append(f"{label(i, 'weight')} has shape {w}, expected 2-D: {_ORIENTATION}")
        return None
    if vb == (w[0],) and hb == (w[1],) and w[0] != w[1]:
        problems.append(
            f"{label(i, 'weight')} has shape {w} but visible_bias has {w[0]} entries and hidden_bias "
            f"{w[1]}: the weight looks transposed; {_ORIENTATION}, so store its transpose {w[::-1]}"
        )
        return w[::-1]  # the intended shape, so that the checks that follow add no follow-on noise
    for kind, got, want, what in (("visible_bias", vb, w[1], "n_visible"), ("hidden_bias", hb, w[0], "n_hidden")):
        if got is not None and got != (want,):
            problems.append(
                f"{label(i, kind)} has shape {got}, expected ({want},) = ({what},) of "
                f"{label(i, 'weight')} {w}; {_ORIENTATION}"
            )
    return w


def _check_chain(shapes: dict, layers: list[int], input_size: int | None, problems: list[str]) -> list[int] | None:
    """The stack's sizes ``[n_visible_0, n_hidden_0, ...]`` if every layer has a shape, checking
    that each layer's n_hidden is the next one's n_visible and RBM 1's n_visible is ``input_size``."""
    for i in layers:
        if i in shapes and i + 1 in shapes and shapes[i][0] != shapes[i + 1][1]:
            problems.append(
                f"broken layer chain: layer {i} has n_hidden={shapes[i][0]} but layer {i + 1} has "
                f"n_visible={shapes[i + 1][1]}; n_hidden of layer i must equal n_visible of layer i+1"
            )
    if input_size is not None and 0 in shapes and shapes[0][1] != input_size:
        problems.append(
            f"the first RBM has n_visible={shapes[0][1]}, expected input_size={input_size}; use data "
            f"with {shapes[0][1]} features, or a stack trained on {input_size}-feature inputs"
        )
    complete = bool(shapes) and len(shapes) == len(layers) and layers == list(range(len(layers)))
    return [shapes[0][1], *(shapes[i][0] for i in layers)] if complete else None


def _check_hidden(got: list[int], hidden: Sequence[int], problems: list[str]) -> None:
    """Compare the sizes found with the model's ``hidden`` (a prefix will do)."""
    n = len(got) - 1
    if n > len(hidden):
        problems.append(
            f"the stack has {n} RBMs {got[1:]} but hidden={list(hidden)} has only {len(hidden)} layers; "
            "import fewer RBMs or list more hidden sizes"
        )
    elif got[1:] != list(hidden)[:n]:
        problems.append(f"hidden sizes {got[1:]} do not match hidden={list(hidden)}; expected {list(hidden)[:n]}")


def _json_list(meta: dict[str, str], key: str, problems: list[str]) -> list | None:
    try:
        value = json.loads(meta[key])
        if isinstance(value, list):
            return value
    except (KeyError, ValueError, RecursionError):
        pass
    problems.append(f"metadata {key!r} must be a JSON list, got {meta.get(key)!r:.80}")
    return None


def _short(items: list, n: int = 20) -> str:
    return str(items[:n])[:-1] + f", ... ({len(items) - n} more)]" if len(items) > n else str(items)
