"""Peak and steady memory of an in-memory DataModule reading a file, over the float32 size of its data.

For each input kind (``.npy``, ``.npz``, ``.csv``) a fresh subprocess imports dbn_init, reads its
resident-set size (the import baseline), builds ``ArrayDataModule(path=...)`` and runs
``setup("fit")``, then reads its peak resident size (``VmHWM``) and its resident size after setup
(``VmRSS``, after a garbage collection). Each figure is printed as (size - baseline) over the
float32 size of the features, ``N x D x 4`` bytes; the source file's own float64 copy alone is 2x.
Linux only (``/proc/self/status``). An ``np.load(mmap_mode=...)`` array would count its mapped pages
in the resident size too; the reader does not map files.

    python benchmarks/data_memory.py                       # 200,000 x 1,000 float64 (1.6 GB .npz)
    python benchmarks/data_memory.py --rows 20000 --rounds 1   # smoke test

Goals: peak at most 3.5x, steady state at most 1.2x.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

CHILD = r"""
import gc, json, sys
def rss(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
import dbn_init, torch, lightning  # the import baseline
gc.collect()
base = rss("VmRSS:")
dm = dbn_init.ArrayDataModule(path=sys.argv[1], target=sys.argv[2] if len(sys.argv) > 2 else None)
dm.setup("fit")
gc.collect()
rows = len(dm.pretrain_x) + len(dm.val_x) + len(dm.test_x)
print(json.dumps({"base": base, "peak": rss("VmHWM:"), "steady": rss("VmRSS:"), "rows": rows}))
"""


def write_inputs(folder: Path, rows: int, cols: int, kinds: list[str]) -> dict[str, tuple[Path, str | None]]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((rows, cols))  # float64, as a user's np.save of a float array
    y = rng.integers(0, 10, rows)
    files = {}
    if "npy" in kinds:
        np.save(folder / "x.npy", x)
        files["npy"] = (folder / "x.npy", None)
    if "npz" in kinds:
        np.savez(folder / "x.npz", x=x, y=y)
        files["npz"] = (folder / "x.npz", None)
    if "csv" in kinds:
        with open(folder / "x.csv", "w") as f:
            f.write(",".join([f"f{i}" for i in range(cols)] + ["label"]) + "\n")
            for start in range(0, rows, 10_000):
                block = np.column_stack([x[start : start + 10_000], y[start : start + 10_000]])
                np.savetxt(f, block, delimiter=",", fmt=["%.6g"] * cols + ["%d"])
        files["csv"] = (folder / "x.csv", "label")
    return files


def measure(path: Path, target: str | None) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(path), *([target] if target else [])],
                         capture_output=True, text=True, check=True)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--cols", type=int, default=1_000)
    parser.add_argument("--csv-rows", type=int, default=20_000, help="rows of the CSV (writing it is slow)")
    parser.add_argument("--kinds", nargs="+", default=["npy", "npz", "csv"])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        files = write_inputs(folder, args.rows, args.cols, [k for k in args.kinds if k != "csv"])
        if "csv" in args.kinds:
            files |= write_inputs(folder, args.csv_rows, args.cols, ["csv"])
        for kind, (path, target) in files.items():
            runs = [measure(path, target) for _ in range(args.rounds)]
            size = runs[0]["rows"] * args.cols * 4
            peak = [(r["peak"] - r["base"]) / size for r in runs]
            steady = [(r["steady"] - r["base"]) / size for r in runs]
            figures[kind] = {"float32 MB": round(size / 2**20), "peak x": round(float(np.median(peak)), 2),
                             "steady x": round(float(np.median(steady)), 2)}  # fmt: skip
            got = figures[kind]
            print(f"{kind}: {got['float32 MB']} MB of float32 features; peak {got['peak x']}x, "
                  f"steady {got['steady x']}x the float32 size (median of {args.rounds})", flush=True)  # fmt: skip
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
