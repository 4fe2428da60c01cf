"""How much of dbn_init runs before the first CD update of the quickstart: a measure of orchestration.

Runs ``train.py fit --config configs/quickstart.yaml`` in this process under ``sys.setprofile``
and stops at the first call that forms a CD gradient (``RBM.cd_grad_`` or ``RBM.cd_loss``). It
counts the distinct dbn_init functions that ran before it (module and class bodies, lambdas and
comprehensions left out), their calls and their files, and prints them in the order of first call.

    python benchmarks/first_cd_update.py            # the count, then one line per function
    python benchmarks/first_cd_update.py --summary  # the count only
"""

from __future__ import annotations

import inspect
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = str(ROOT / "dbn_init")


class _FirstUpdate(BaseException):
    """Raised from the profiler at the first CD gradient; a BaseException, so no handler on the way takes it."""


def count() -> tuple[Counter, int]:
    """(calls per function, keyed by (file, qualified name), in first-call order; total calls)."""
    calls: Counter = Counter()

    def profile(frame, event, arg) -> None:
        code = frame.f_code
        if event != "call" or not code.co_filename.startswith(PACKAGE):
            return
        if code.co_name in ("cd_grad_", "cd_loss"):
            sys.setprofile(None)
            raise _FirstUpdate
        if code.co_flags & inspect.CO_OPTIMIZED and not code.co_name.startswith("<"):  # a def, not a body
            calls[(Path(code.co_filename).relative_to(ROOT).as_posix(), code.co_qualname)] += 1

    from dbn_init.cli import main

    with tempfile.TemporaryDirectory() as run:
        args = ["fit", "--config", str(ROOT / "configs" / "quickstart.yaml"), "--trainer.default_root_dir", run,
                "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]  # fmt: skip
        sys.setprofile(profile)
        try:
            main(args)
        except _FirstUpdate:
            pass
        finally:
            sys.setprofile(None)
    return calls, sum(calls.values())


if __name__ == "__main__":
    calls, total = count()
    files = {file for file, _ in calls}
    print(f"{len(calls)} distinct dbn_init functions in {len(files)} files ({total} calls) before the first CD update")
    if "--summary" not in sys.argv:
        for (file, name), n in calls.items():
            print(f"{n:4d}  {file}  {name}")
