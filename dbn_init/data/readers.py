"""File readers: the one IDX (MNIST format) reader and the array files (``.npz``, ``.npy``, ``.csv``/``.tsv``)."""

from __future__ import annotations

import contextlib
import csv
import gzip
import itertools
import math
import os
import re
import struct
import zlib
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from ..constraints import MissingFileError, UsageError

# IDX type code -> big-endian numpy dtype.
_IDX_DTYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_CHUNK = 1 << 24  # read in chunks so a lying header cannot make us allocate more than the file holds
_FILE_FIX = (
    "re-download it (`data.download true`) or restore it from where it came (Debian's Fashion-MNIST: "
    "`apt-get install --reinstall dataset-fashion-mnist`)"
)
_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _read_at_most(stream, n: int) -> bytes:
    """Up to ``n`` bytes from ``stream``; fewer only at end of file."""
    chunks = []
    while n > 0 and (chunk := stream.read(min(n, _CHUNK))):
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def default_max_bytes() -> int:
    """The largest IDX payload read by default: a quarter of this machine's memory, so a file
    whose header declares more (a decompression bomb: 75 MB of gzip can declare 16 GiB) is
    refused before anything is decompressed."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 4
    except (ValueError, OSError, AttributeError):  # no sysconf (Windows): a fixed 4 GiB
        return 4 << 30


def read_idx(path: str | Path, max_bytes: int | None = None) -> np.ndarray:
    """Read one IDX file, gzipped or not (detected by the magic bytes ``1f 8b``).

    ``max_bytes`` (default :func:`default_max_bytes`) caps the data the header may declare, in
    bytes; a larger declaration is refused before decompressing, and decompression never reads
    past the declared size.

    Layout: two zero bytes, a type code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
    0x0D float32, 0x0E float64), the number of dims (1..4), the dims as big-endian uint32, then
    the big-endian data.

    Returns:
        ndarray of shape ``dims``, in native byte order.

    Raises:
        ValueError: for any malformed content (bad magic, unknown type code, truncated or
            over-long payload, broken gzip stream, more than 2**31 elements), naming the path.
    """
    path = Path(path).expanduser()

    def bad(what: str) -> UsageError:
        return UsageError(f"{path}: {what}; the file is damaged or not an IDX file: {_FILE_FIX}")

    with open(path, "rb") as raw:
        is_gzip = raw.peek(2)[:2] == b"\x1f\x8b"
        stream = gzip.GzipFile(fileobj=raw) if is_gzip else raw
        try:
            dtype, dims = _idx_header(stream, bad)
            expected = math.prod(dims) * dtype.itemsize
            cap = default_max_bytes() if max_bytes is None else max_bytes
            if expected > cap:
                raise UsageError(
                    f"{path}: its header declares {expected:,} bytes of data (dims {dims}, {dtype.name}), more than "
                    f"the {cap:,}-byte limit, so it was not decompressed; if the file is genuine, raise the limit "
                    "with data.max_file_bytes"
                )
            payload = _read_at_most(stream, expected + 1)  # one extra byte detects trailing data
        except (OSError, EOFError, zlib.error) as err:  # gzip.BadGzipFile is an OSError
            raise bad(f"expected a valid {'gzip' if is_gzip else 'IDX'} stream, reading failed ({err})") from err
    if len(payload) != expected:
        found = f"only {len(payload)}" if len(payload) < expected else "more (trailing data)"
        raise bad(f"expected {expected} bytes of data for dims {dims}, found {found}")
    return np.frombuffer(payload, dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="))


def _idx_header(stream, bad) -> tuple[np.dtype, tuple[int, ...]]:
    """The data type and dims of an IDX stream, read from its header; ``bad(what)`` makes the refusal."""
    header = stream.read(4)
    if len(header) < 4 or header[:2] != b"\0\0":
        raise bad(f"expected a 4-byte IDX header starting 00 00, got {header.hex(' ') or 'no bytes'}")
    if header[2] not in _IDX_DTYPES:
        raise bad(f"expected a type code in {[hex(c) for c in _IDX_DTYPES]}, got {header[2]:#04x}")
    ndim = header[3]
    if not 1 <= ndim <= 4:
        raise bad(f"expected 1 to 4 dimensions, got {ndim}")
    dim_bytes = stream.read(4 * ndim)
    if len(dim_bytes) < 4 * ndim:
        raise bad(f"expected {ndim} dims ({4 * ndim} bytes), got {len(dim_bytes)} bytes")
    dims = struct.unpack(f">{ndim}I", dim_bytes)
    if math.prod(dims) > 2**31:
        raise bad(f"expected at most 2**31 elements, the header claims dims {dims} ({math.prod(dims)})")
    return np.dtype(_IDX_DTYPES[header[2]]), dims


def _idx_folders(root: Path, name: str) -> list[Path]:
    """Where the four IDX files may lie: flat in ``root``, or in torchvision's ``root/<name>/raw``."""
    return [root, root / name / "raw"]


def _find_idx_files(folder: Path) -> list[Path] | None:
    """The four IDX files in ``folder`` (uncompressed preferred), or None if any is missing."""
    found = [next((p for p in (folder / s, folder / f"{s}.gz") if p.is_file()), None) for s in _IDX_FILES]
    return None if None in found else found


def offline_hint(name: str, root_option: str = "data.root") -> str:
    """Where this dataset's files can come from without torchvision's download, for error messages
    (``root_option``: the command's option for the data folder)."""
    if name == "FashionMNIST":
        return f", e.g. `apt-get install dataset-fashion-mnist` then `{root_option} /usr/share/datasets/fashion-mnist`"
    return f" of {name} (copied from a machine where a download, data.download true, put them in DIR/{name}/raw)"


def load_idx_dataset(
    root: str | Path, name: str, max_bytes: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Load the four standard IDX files from ``root/`` (flat) or ``root/<name>/raw/`` (torchvision).

    ``name`` is torchvision's folder name, ``"MNIST"`` or ``"FashionMNIST"``.

    Returns:
        ``(train_x, train_y, test_x, test_y)``: images ``(N, H, W)`` as stored (uint8 for the
        standard files), labels ``(N,)`` int64 in 0..9.

    Raises:
        FileNotFoundError: if ``root`` is missing or no folder holds all four files; the message
            lists every path looked at and how to get the files.
        ValueError: if a file is malformed, or images and labels disagree.
    """
    root = Path(root)
    folders = _idx_folders(root, name)
    files = next(filter(None, map(_find_idx_files, folders)), None) if root.is_dir() else None
    if files is None:
        looked = "\n  ".join(str(d / f"{s}{gz}") for d in folders for s in _IDX_FILES for gz in ("", ".gz"))
        problem = "no folder holds all four files"
        if not root.is_dir():
            problem = f"data root {root} {'is a file, not a folder' if root.exists() else 'does not exist'}"
        raise MissingFileError(
            f"{problem}; expected the {name} IDX files {', '.join(_IDX_FILES)} (each optionally .gz) in one "
            f"folder, flat in {root} or in torchvision's {root / name / 'raw'}. Looked at:\n  {looked}\n"
            "Fix: pass `data.download true` (needs internet; uses torchvision), or `data.root DIR` "
            f"pointing at a folder holding the four IDX files{offline_hint(name)}."
        )
    arrays = [read_idx(f, max_bytes) for f in files]
    for i in (0, 2):
        (img_path, lab_path), (images, labels) = files[i : i + 2], arrays[i : i + 2]
        if images.ndim != 3 or labels.shape != images.shape[:1]:
            raise UsageError(
                f"expected images (N, H, W) in {img_path} and as many labels (N,) in {lab_path}, got "
                f"{len(images)} images {images.shape} and labels {labels.shape}; {_FILE_FIX}"
            )
        if not np.issubdtype(labels.dtype, np.integer) or not np.isin(labels, np.arange(10)).all():
            raise UsageError(
                f"expected integer labels in 0..9 in {lab_path}, got {labels.dtype} values "
                f"{np.unique(labels)[:10].tolist()}...; {_FILE_FIX}"
            )
    return arrays[0], arrays[1].astype(np.int64), arrays[2], arrays[3].astype(np.int64)


# ---------------------------------------------------------------- array files (.npz, .npy, .csv, .tsv)

_ARRAY_SUFFIXES = (".npz", ".npy", ".csv", ".tsv")


def read_array_file(
    path: str | Path,
    target: str | None = None,
    option: str = "path",
    target_optional: bool = False,
    columns: list[str] | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Features and labels from one file, as stored (no scaling).

    - ``.npz``: the array ``x`` (features) and, if present, ``y`` (labels; ``target`` names
      another key);
    - ``.npy``: one array of features, no labels;
    - ``.csv`` / ``.tsv``: a header row naming the columns, then rows of numbers; the column
      named ``target`` holds the labels (numbers or strings), every other column is a feature.

    ``option`` is how the user named the file (``"path"``, ``"test_path"``...), for messages.
    ``target_optional``: a file without the ``target`` column or key has no labels (y None)
    instead of being refused (files of extra unlabelled rows). ``columns``: the feature columns a
    table must hold, by name (another file's, :func:`table_columns`); its features come back in
    that order, and a column missing or extra is refused. Files without names (``.npz``,
    ``.npy``) are matched by width where they are used.

    Returns:
        ``(x, y)``: x ``(N, D)`` or as stored, y ``(N,)`` or None.

    Raises:
        FileNotFoundError: the file is missing.
        ValueError: an unknown suffix, a missing key or column, a cell that is not a number.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        state = "is a folder" if path.is_dir() else "does not exist"
        raise MissingFileError(
            f"{option} {path} {state}; expected a {'/'.join(_ARRAY_SUFFIXES)} file: fix data.{option}"
        )
    suffix = path.suffix.lower()
    if suffix not in _ARRAY_SUFFIXES:
        raise UsageError(
            f"{option} {path}: expected a file ending in {', '.join(_ARRAY_SUFFIXES)}, got {suffix!r}; "
            "convert it, e.g. np.savez(path, x=features, y=labels)"
        )
    if suffix == ".npz":
        return _read_npz(path, target, option, target_optional)
    if suffix == ".npy":
        if target is not None and not target_optional:
            raise UsageError(
                f"{option} {path}: a .npy file holds one array, so it has no column {target!r}; "
                "save features and labels together with np.savez(path, x=features, y=labels)"
            )
        return _numeric(lambda: np.load(path, allow_pickle=False), f"{option} {path}"), None
    return _read_table(path, target, option, target_optional, columns)


def _numeric(read: Callable[[], np.ndarray], where: str) -> np.ndarray:
    """``read()``, with numpy's refusal of an object array (it would unpickle) as one line."""
    try:
        return read()
    except ValueError as err:
        if "allow_pickle" not in str(err):
            raise
        raise UsageError(
            f"{where} holds an array of Python objects (dtype object), which is not read because "
            "loading it would run code from the file; save numeric arrays, e.g. "
            "np.savez(path, x=x.astype(np.float32), y=y)"
        ) from None


def table_columns(path: str | Path, target: str | None = None, option: str = "path") -> list[str] | None:
    """The feature columns of a ``.csv``/``.tsv`` file, by name, in order (its header less the
    ``target`` column); None for a file without names (``.npz``, ``.npy``) or one that is not there."""
    path = Path(path).expanduser()
    if path.suffix.lower() not in (".csv", ".tsv") or not path.is_file():
        return None
    with _table_rows(path, f"{option} {path}") as rows:
        header = next(rows, (1, []))[1]
    return [name.strip() for name in header if name.strip() != target]


_DELIMITERS = (",", "\t", ";", "|")


@contextlib.contextmanager
def _table_rows(path: Path, where: str) -> Iterator[Iterator[tuple[int, list[str]]]]:
    """The rows of a table with a cell filled (UTF-8, a byte-order mark allowed), split at its delimiter
    and each with its line number: the
    first of the suffix's own (tab for ``.tsv``, else comma) and ``;``, tab, ``|`` that splits its
    first 20 rows into one same number of cells, more than one (``csv.Sniffer`` guesses wrong on
    numeric tables); the suffix's own where none does. Text in another encoding is refused in one line."""
    own = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            head = list(itertools.islice(f, 20))
            filled = [line for line in head if line.strip()]
            widths = {d: {len(row) for row in csv.reader(filled, delimiter=d)} for d in (own, *_DELIMITERS)}
            delimiter = next((d for d, found in widths.items() if len(found) == 1 and min(found) > 1), own)
            rows = csv.reader(itertools.chain(head, f), delimiter=delimiter)
            yield ((rows.line_num, row) for row in rows if any(cell.strip() for cell in row))  # not Excel's ,,,
    except UnicodeDecodeError as err:  # while reading the head, or the rows in the caller's block
        raise UsageError(
            f"{where}: expected UTF-8 text, got byte {err.object[err.start : err.start + 1]!r} at "
            f"{err.start} (another encoding, or a compressed file?); save it as UTF-8 CSV"
        ) from None


def _read_npz(
    path: Path, target: str | None, option: str, target_optional: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    with np.load(path, allow_pickle=False) as arrays:
        keys = list(arrays.keys())
        label_key = target or "y"
        label_key = None if label_key not in keys and (target_optional or target is None) else label_key
        if "x" not in keys or (label_key is not None and label_key not in keys):
            fix = (
                f"name the labels' array in data.target (here {[k for k in keys if k != 'x']})"
                if "x" in keys and target
                else "save them as np.savez(path, x=features, y=labels)"
            )
            raise UsageError(
                f"{option} {path}: expected arrays named 'x' (features) and {label_key or 'y'!r} "
                f"(labels{'' if target and not target_optional else ', optional'}), found {keys}; {fix}"
            )
        where = f"{option} {path}"
        x = _numeric(lambda: arrays["x"], f"{where}: 'x'")
        return x, None if label_key is None else _numeric(lambda: arrays[label_key], f"{where}: {label_key!r}")


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _read_table(
    path: Path, target: str | None, option: str, target_optional: bool, columns: list[str] | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """A CSV/TSV with a header row (read by :func:`_table_rows`): the features as float32, read a
    block of rows at a time (never every cell as a string at once), and the ``target`` column's cells
    as strings."""
    where = f"{option} {path}"
    with _table_rows(path, where) as rows:
        header = _checked_header(next(rows, (1, None))[1], where)
        if target_optional and target not in header:
            target = None
        if target is not None and target not in header:
            raise UsageError(
                f"target {target!r} is not a column of {path}; expected one of {header}: pass "
                "data.target with one of them, or leave it out for unlabelled data"
            )
        label_col = header.index(target) if target is not None else None
        features = [i for i in range(len(header)) if i != label_col]
        if not features:
            raise UsageError(f"{where}: expected feature columns besides the target {target!r}, got none: add them")
        if columns is not None:  # another file's columns, by name: reordered to them
            features = _by_name(header, features, columns, where)
        blocks, labels = [], []
        while numbered := list(itertools.islice(rows, max(1, (1 << 18) // len(header)))):  # ~20 MB of cells
            lines, block = zip(*numbered)
            blocks.append(_numbers(block, header, features, where, lines))
            if label_col is not None:
                labels += [row[label_col].strip() for row in block]
    if not blocks:
        raise UsageError(f"{where}: expected rows of numbers under its header, got the header alone: add the rows")
    if target in labels and all(_is_number(header[i]) for i in features) and not _pandas_names(header):
        raise UsageError(  # the first row is one of the data's
            f"{where}: expected a header row naming the columns, got {header}, a row of the data (its "
            f"target cell {target!r} is a label of other rows too): add a header row"
        )
    x = blocks[0] if len(blocks) == 1 else np.concatenate(blocks)
    return x, None if label_col is None else np.array(labels)


def _checked_header(first: list[str] | None, where: str) -> list[str]:
    """A table's header, each column named once. A first row of numbers is data, unless they are
    0, 1, ..., n - 1: the names pandas gives the columns of a frame without any."""
    header = [] if first is None else [name.strip() for name in first]
    if not header or (all(map(_is_number, header)) and not _pandas_names(header)):
        raise UsageError(
            f"{where}: expected a header row naming the columns, then rows of numbers; "
            f"got {'an empty file' if not header else 'a first row of numbers'}: add a header row"
        )
    if "" in header:
        raise UsageError(
            f"{where}: expected a name for every column, got none for column {header.index('') + 1} (an index "
            "that pandas wrote? to_csv(path, index=False) leaves it out); drop that column or name it"
        )
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise UsageError(f"{where}: expected each column named once, got {repeated} more than once; rename them")
    return header


def _pandas_names(header: list[str]) -> bool:
    return header == [str(i) for i in range(len(header))]


def _numbers(
    block: Sequence[list[str]], header: list[str], features: list[int], where: str, lines: Sequence[int]
) -> np.ndarray:
    """The ``features`` cells of the rows ``block`` (on ``lines`` of the file) as float32 (rows, features)."""
    for at, row in zip(lines, block):
        if len(row) != len(header):
            raise UsageError(
                f"{where} line {at}: expected {len(header)} cells like the header, got "
                f"{len(row)}; fix that row (a stray delimiter or a missing cell)"
            )
    try:
        cells = [[float(row[i]) for i in features] for row in block]
    except ValueError:
        bad = ((at, i, row[i]) for at, row in zip(lines, block) for i in features if not _is_number(row[i]))
        at, col, got = next(bad)
        fix = "encode the column as numbers, fill the empty cell or drop the column"
        if re.fullmatch(r"\s*[-+]?\d*,\d+\s*", got):
            fix = "that is a decimal comma: write decimal points (pandas reads the file with decimal=',')"
        raise UsageError(f"{where} line {at}, column {header[col]!r}: expected a number, got {got!r}; {fix}") from None
    return np.array(cells, dtype=np.float32)


def _by_name(header: list[str], features: list[int], columns: list[str], where: str, of: str = "file") -> list[int]:
    """The indices of ``columns`` (the training ``of``'s feature columns) among this table's ``features``."""
    names = [header[i] for i in features]
    missing, extra = [c for c in columns if c not in names], [c for c in names if c not in columns]
    if missing or extra:
        raise UsageError(
            f"{where}: expected the training {of}'s feature columns {columns}, got "
            + "; ".join(f"{what} {cols}" for what, cols in (("missing", missing), ("extra", extra)) if cols)
            + ": give it the same columns (their order may differ)"
        )
    return [features[names.index(c)] for c in columns]


# What a missing label reads as: pandas' default NA markers (case counts: "none" may be a class), and UCI's "?".
_MISSING = frozenset(
    {"", "NA", "N/A", "n/a", "#N/A", "#NA", "<NA>", "NaN", "nan", "-NaN", "-nan", "NULL", "null", "None", "?"}
)


def _label_array(values: Any, where: str) -> np.ndarray:
    """Class labels as int64 (numbers, integral floats) or str; refuses missing and fractional ones."""
    y = np.asarray(values)
    if y.ndim != 1:
        raise UsageError(
            f"{where}: expected one class label per row, shape (N,), got shape {y.shape}; for one-hot "
            "labels pass y.argmax(1)"
        )
    text = y.dtype.kind in "USO"
    missing = [v is None or str(v).strip() in _MISSING for v in y.tolist()] if text else ~np.isfinite(y)
    if np.any(missing):  # an empty cell, NA, None or NaN
        row = int(np.argmax(missing))
        raise UsageError(
            f"{where}: expected a label in every row, got none in row {row} (from 0: {y.tolist()[row]!r}); fill it, or "
            "move unlabelled rows to unlabeled_path"
        )
    if text:
        y = y.astype(str)
        if not (y.size and all(map(_is_number, y.tolist()))):
            return y  # names
        y = y.astype(np.float64)
    if y.dtype.kind == "f" and not np.equal(np.mod(y, 1), 0).all():
        raise UsageError(
            f"{where}: expected class labels (integers or names), got fractional values such as "
            f"{y[np.mod(y, 1) != 0][:3].tolist()}; a classifier needs a class column as target, and "
            "a target of numbers to predict is data.targets 'values' (regression)"
        )
    return y.astype(np.int64)


def _target_values(values: Any, where: str) -> np.ndarray:
    """Regression targets as float32 ``(N,)``: numbers (or numbers written as text), every one finite."""
    y = np.asarray(values)
    try:
        y = y.astype(np.float64)
    except (TypeError, ValueError) as err:
        row = next((i for i, v in enumerate(y.ravel().tolist()) if not _is_number(str(v))), 0)
        raise UsageError(
            f"{where}: expected a number as the target of every row, got '{y.ravel()[row]}' in row {row} "
            "(from 0); fill or drop that row"
        ) from err
    if y.ndim != 1 or not np.isfinite(y).all():
        problem = f"shape {y.shape}" if y.ndim != 1 else f"{int((~np.isfinite(y)).sum())} NaN/Inf"
        raise UsageError(
            f"{where}: expected one finite target per row, shape (N,), got {problem}; drop or fill "
            "those rows (one target per model: fit one model per column)"
        )
    return y.astype(np.float32)


def encode_labels(*label_arrays: np.ndarray | None) -> tuple[list[np.ndarray | None], list]:
    """Map labels (several arrays, e.g. train and test, of one kind) to 0..C-1 by sorted class.

    Returns:
        ``(codes, classes)``: each array as int64 codes (None stays None), and the C sorted
        classes (ints or strings), so ``classes[code]`` is the original label.
    """
    present = [y for y in label_arrays if y is not None]
    kinds = {y.dtype.kind == "U" for y in present}
    if len(kinds) > 1:
        raise UsageError(
            "expected labels of one kind, got numbers in one file and names in another; "
            "write the labels alike in every file"
        )
    classes = np.unique(np.concatenate(present)) if present else np.array([])
    codes = [None if y is None else np.searchsorted(classes, y).astype(np.int64) for y in label_arrays]
    return codes, classes.tolist()
