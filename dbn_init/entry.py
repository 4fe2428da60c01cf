"""How the commands end: a usage error as one line (status 2), and a stop on a signal.

A :class:`~dbn_init.constraints.UsageError` (a value the user gave, found wrong) escaping
:func:`command` is printed as one line and ends the process with status 2, and so is an error of
the OS or of PIL about one of the user's paths (:func:`path_problem`); any other error is a bug
and keeps its traceback.

SIGTERM (what SLURM, Kubernetes and ``timeout`` send) and SIGINT (Ctrl-C): the entry points
(``train.py``/``dbn-init``, ``python -m dbn_init.experiments.compare``) install :func:`handlers` before any
work. A signal raises :class:`Stopped` wherever the run is: in a stage, between stages, in
fine-tuning or in compare's loop. Lightning tears each running fit down and passes it on (it turns
only ``KeyboardInterrupt`` into ``sys.exit(1)``, and keeps a SIGTERM handler it finds), and the
entry point prints one line saying how to resume and exits with 128 + the signal's number (143,
130), as shells report a process a signal ended. The resume point is the last checkpoint a
finished epoch wrote, as after SIGKILL.
"""

from __future__ import annotations

import atexit
import contextlib
import difflib
import errno
import os
import re
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Iterator

from jsonargparse import ArgumentParser

from .configs import names as shipped_names
from .constraints import UsageError, error_chain

__all__ = [
    "Stopped",
    "handlers",
    "check",
    "command",
    "path_problem",
    "peer_problem",
    "one_line",
    "OneLineParser",
    "no_lightning_requeue",
    "close_process_group_at_exit",
]

_received: list[int] = []  # the signals received inside handlers(), newest last
_closing = False  # close_process_group_at_exit has registered its exit hook in this process


class Stopped(BaseException):
    """The run was asked to stop by a signal (``signum``). A BaseException, like KeyboardInterrupt,
    so that no ``except Exception`` on the way swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


def _raise(signum: int, frame) -> None:
    _received.append(signum)
    raise Stopped(signum)


def check() -> None:
    """Raise :class:`Stopped` again if a signal came: a raise from a signal handler is lost when it
    lands in a finalizer (Python prints "Exception ignored" and goes on), so the training loops
    call this after every batch, a list lookup."""
    if _received:
        raise Stopped(_received[-1])


def _requeue(job: str) -> str:
    """Requeue this SLURM job (``scontrol requeue``); what happened, in words."""
    done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
    if done.returncode == 0:
        return f"requeued SLURM job {job}: it resumes where its command has --ckpt_path last"
    return f"requeueing SLURM job {job} failed ({done.stderr.strip() or done.returncode}); resubmit it"


@contextlib.contextmanager
def handlers(resume_hint: str) -> Iterator[None]:
    """Within the block, SIGTERM and SIGINT raise :class:`Stopped`; one escaping it is printed as
    one line with ``resume_hint`` and ends the process with status 128 + signum.

    In a SLURM job, SIGUSR1 (what ``sbatch --signal=USR1@SECONDS`` sends before the time limit)
    stops the run the same way and requeues the job through ``scontrol``: the requeued job runs
    the same command, which resumes if it has ``--ckpt_path last``. Lightning's own requeue is
    off (:func:`no_lightning_requeue`): it would load its ``hpc_ckpt`` file into every later fit,
    a stage's into the next stage.
    """
    job = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID")
    job = f"{job}_{os.environ['SLURM_ARRAY_TASK_ID']}" if os.environ.get("SLURM_ARRAY_JOB_ID") else job
    watched = (signal.SIGTERM, signal.SIGINT, *((signal.SIGUSR1,) if job else ()))
    previous = {s: signal.signal(s, _raise) for s in watched}
    _received.clear()
    try:
        yield
    except Stopped as stop:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the message short
        hint = _requeue(job) if stop.signum == signal.SIGUSR1 else resume_hint
        print(f"{stop}; {hint}", file=sys.stderr)
        raise SystemExit(128 + stop.signum) from None
    finally:  # the request is answered: later work in this process (a notebook, a test) goes on
        _received.clear()
        for s, handler in previous.items():
            # SLURM's warning once the work is done (the process shutting down) has nothing left to
            # stop, and its default action would end a finished job as killed: ignored from here on
            signal.signal(s, signal.SIG_IGN if s == signal.SIGUSR1 and handler == signal.SIG_DFL else handler)


def no_lightning_requeue(trainer) -> None:
    """Turn off Lightning's SLURM auto-requeue in ``trainer``: :func:`handlers` requeues instead."""
    from lightning.fabric.plugins.environments import SLURMEnvironment

    environment = trainer._accelerator_connector.cluster_environment  # what Lightning's signal connector reads
    if isinstance(environment, SLURMEnvironment):
        environment.auto_requeue = False


def close_process_group_at_exit() -> None:
    """Destroy this process's process group when it exits, as Lightning does for NCCL only. A gloo
    group left to the C++ static destructors aborts a spawned worker at exit now and then
    ("terminate called without an active exception", SIGABRT), which fails the whole run. Every
    dbn_init module calls this in ``setup``, so any Trainer running one gets it, the user's own too
    (a ``ddp_spawn`` test after a fit starts fresh workers). Registered once per process."""
    import torch.distributed as dist

    global _closing
    if not _closing and dist.is_available() and dist.is_initialized():
        _closing = True
        atexit.register(lambda: dist.destroy_process_group() if dist.is_initialized() else None)


def command(run: Callable[[], Any], resume_hint: str, prog: str = "error") -> Any:
    """Run an entry point's work under :func:`handlers`. A UsageError, or an error of the OS or of
    PIL about a path of the user's (:func:`path_problem`), ends it as one line, status 2."""
    try:
        with handlers(resume_hint), _dead_rank_line(f"{prog}: ", resume_hint):
            return run()
    except UsageError as err:
        print(f"{prog}: {' '.join(str(err).split())}", file=sys.stderr)
        raise SystemExit(2) from None
    except Exception as err:
        line = path_problem(err, resume_hint) or peer_problem(err, resume_hint)
        if line is None:  # a bug: it keeps its traceback
            raise
        print(f"{prog}: {line}", file=sys.stderr)
        raise SystemExit(2) from None


# Set by a command for the processes Lightning's launcher starts from it: the launching process's pid.
_LAUNCHER = "DBN_INIT_LAUNCHER_PID"


@contextlib.contextmanager
def _dead_rank_line(prefix: str, resume_hint: str) -> Iterator[None]:
    """Within the block, when a process of a multi-process fit dies, the others stop with the one
    line that says how to resume. A process Lightning launched that dies: that line is printed
    before Lightning's observer SIGKILLs the others. The launching process (rank 0) that dies: the
    processes it launched see it gone (:func:`_follow_launcher`), rather than wait for the process
    group's timeout in a collective or in the rendezvous, 30 minutes by default."""
    from lightning.fabric.strategies.launchers import subprocess_script as launcher

    _follow_launcher(f"{prefix}process 0 of this distributed run ended, so every process stops; {resume_hint}")
    launching = os.environ.get(_LAUNCHER)
    os.environ[_LAUNCHER] = str(os.getpid())  # what the processes launched from here inherit
    observer = launcher._ChildProcessObserver

    class Observer(observer):
        def _terminate_all(self) -> None:
            codes = [proc.returncode for proc in self._child_processes]
            rank = next(i for i, code in enumerate(codes, start=1) if code)
            line = f"process {rank} of this distributed run ended (exit code {codes[rank - 1]}), so every process stops"
            print(f"{prefix}{line}; {resume_hint}", file=sys.stderr, flush=True)
            super()._terminate_all()

    launcher._ChildProcessObserver = Observer
    try:
        yield
    finally:
        launcher._ChildProcessObserver = observer
        del os.environ[_LAUNCHER]
        if launching is not None:
            os.environ[_LAUNCHER] = launching


def _follow_launcher(line: str) -> None:
    """In a process that a command's launcher started (it inherited ``_LAUNCHER``), a daemon thread
    that prints ``line`` and ends this process once the launcher has died (this process is
    re-parented), which may be before this process got here. Processes started any other way (a
    shell, torchrun, srun) are left alone."""
    launcher = os.environ.get(_LAUNCHER)
    if launcher is None:
        return

    def follow() -> None:
        while os.getppid() == int(launcher):
            time.sleep(0.5)
        print(line, file=sys.stderr, flush=True)
        os._exit(1)  # no cleanup to wait for: rank 0 writes every file of the run

    threading.Thread(target=follow, name="follow-launcher", daemon=True).start()


def peer_problem(err: BaseException, resume_hint: str = "") -> str | None:
    """One line for a collective that failed because another process of the run died (gloo's
    "Connection reset by peer", an NCCL timeout), found in ``err``'s chain; None for any other."""
    for seen in error_chain(err):
        if re.search(r"Connection (reset|closed) by peer|NCCL communicator was aborted|collective operation timeout",
                     str(seen)):  # fmt: skip
            return f"another process of this distributed run ended, so this one stops; {resume_hint or 'rerun'}"
    return None


# errno -> what to do about it
_PATH_FIXES = {
    errno.ENOENT: "it does not exist (or was removed during the run): fix the path or create its folder",
    **dict.fromkeys((errno.EACCES, errno.EPERM), "this user may not use it: pass a path this user can read and write"),
    errno.EROFS: "it is on a read-only file system: pass a folder on a writable one",
    errno.ENOSPC: "the disk is full: free space or pass a folder on another disk, then {resume}",
    errno.EDQUOT: "the disk quota is used up: free space or pass a folder on another disk, then {resume}",
    errno.ENOTDIR: "a part of the path is a file, not a folder: fix the path",
    errno.EISDIR: "it is a folder, not a file: pass a file",
}


def path_problem(err: BaseException, resume_hint: str = "") -> str | None:
    """One line for an error about a path the user gave: an ``OSError`` that names its file, or
    PIL's refusal of an image file, found in ``err``'s chain (:func:`~dbn_init.constraints.error_chain`);
    None for any other error."""
    for seen in error_chain(err):
        if type(seen).__name__ == "UnidentifiedImageError":  # PIL's, an OSError without a filename
            quoted = re.search(r"'([^']*)'", str(seen))  # 'path', or a file object's name='path'
            path = quoted[1] if quoted and quoted[1] else seen
            return f"cannot read the image {path}: it is corrupt or not an image file; remove or replace it"
        if isinstance(seen, OSError) and seen.filename is not None:
            fix = _PATH_FIXES.get(seen.errno, "fix the path").format(resume=resume_hint or "rerun")
            return f"{seen.strerror or type(seen).__name__}: {seen.filename}; {fix}"
    return None


# What jsonargparse says around a class's own message about its options: the union of the class
# and None it tried, and the value it was given (a Namespace, which repeats the whole config).
_UNION_REPORT = ("Does not validate against any of the Union", "Subtypes:", "Errors:",
                 "- Expected a <class 'NoneType'>", "Given value type:", "Given value: Namespace(",
                 "Given value: NestedArg(")  # fmt: skip


def one_line(message: str) -> str:
    """A jsonargparse usage error as one line: what the class or option said."""
    lines = (line.strip() for line in message.splitlines())
    return " ".join(line.removeprefix("- ") for line in lines if line and not line.startswith(_UNION_REPORT))


class OneLineParser(ArgumentParser):
    """The commands' parser: a usage error is the ``--help`` tip and one line that names the nearest
    option to a mistyped one, or the nearest shipped config to a missing ``--config`` file; the
    50-line usage block that argparse prints first would bury it."""

    def error(self, message: str, ex: Exception | None = None):
        return super().error(self.explained(one_line(message)), ex)

    def print_usage(self, file=None) -> None:
        pass

    def explained(self, message: str) -> str:
        """``message`` with the nearest known name where it refuses an unknown one."""
        found = self.unknown(message)
        near = found and difflib.get_close_matches(found[0], found[1], n=1)
        return f"{message}; did you mean '{found[2]}{near[0]}'?" if near else message

    def unknown(self, message: str) -> tuple[str, list[str], str] | None:
        """(the unknown name that ``message`` refuses, the names known in its place, their prefix), or None."""
        if m := re.search(r"unrecognized arguments: --([\w.]+)", message):
            return m[1], [s.removeprefix("--") for s in self._option_string_actions if s.startswith("--")], "--"
        if m := re.search(r"\"config\": File does not exist: '(?:[^']*[/\\])?([^'/\\]+)'", message):
            return m[1], shipped_names(), ""  # a shipped config is found by its file name
        return None
