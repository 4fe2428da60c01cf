"""Resume anywhere: a run SIGKILLed mid-stage and resumed with --ckpt_path last ends with exactly
the weights of an uninterrupted run (deterministic mode, the real train.py in a subprocess)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
ARGS = [
    "fit",
    "--config",
    str(ROOT / "configs" / "quickstart.yaml"),
    "--model.hidden",
    "[32, 16]",
    "--model.pretrain_epochs",
    "4",
    "--trainer.max_epochs",
    "1",
    "--trainer.limit_val_batches",
    "2",
    "--trainer.enable_progress_bar",
    "false",
]


def _command(root: Path, *extra: str) -> list[str]:
    return [sys.executable, str(ROOT / "train.py"), *ARGS, "--trainer.default_root_dir", str(root), *extra]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def _final_state(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    """The final weights of the run every interrupted one is compared with, run once for the module."""
    root = tmp_path_factory.mktemp("uninterrupted")
    subprocess.run(_command(root), check=True, env=_env(), capture_output=True, timeout=300)
    return _final_state(root / "lightning_logs" / "version_0")


def test_sigkill_mid_stage_then_resume_matches_an_uninterrupted_run(uninterrupted, tmp_path):

    root = tmp_path / "b"
    stage_checkpoint = root / "lightning_logs" / "version_0" / "checkpoints" / "rbm2-last.ckpt"
    proc = subprocess.Popen(_command(root), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not stage_checkpoint.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # mid-stage 2: its first epoch just ended
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (root / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt").exists()  # no fine-tuning yet
    interrupted = torch.load(stage_checkpoint, weights_only=True)
    assert interrupted["dbn_init"]["stage"] == 2 and interrupted["epoch"] < 4

    resumed = subprocess.run(
        _command(root, "--ckpt_path", "last"), env=_env(), capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    output = resumed.stderr + resumed.stdout
    assert "resuming from" in output
    # the stage fit really restored it (a restarted stage 2 would end the same in deterministic mode)
    assert f"Restored all states from the checkpoint at {stage_checkpoint}" in output
    assert stage_checkpoint.exists()  # the interrupted run's files are kept; the resumed run has its own folder
    expected = uninterrupted
    got = _final_state(root / "lightning_logs" / "version_1")
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key


def test_a_signal_mid_stage_stops_with_its_status_and_the_resume_ends_as_an_uninterrupted_run(uninterrupted, tmp_path):
    """SIGTERM (a scheduler) and SIGINT (Ctrl-C) during stage 2: each run stops within seconds with
    status 128 + signum and one line naming the resume, and each resume ends bit-identical. The two
    runs go side by side (each on one thread), so the test takes the time of one."""
    runs = {signum: tmp_path / signal.Signals(signum).name for signum in (signal.SIGTERM, signal.SIGINT)}
    procs = {signum: subprocess.Popen(_command(root), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                      text=True) for signum, root in runs.items()}  # fmt: skip
    sent = {}
    deadline = time.monotonic() + 240
    while len(sent) < len(procs) and time.monotonic() < deadline:
        for signum, proc in procs.items():
            stage_checkpoint = runs[signum] / "lightning_logs" / "version_0" / "checkpoints" / "rbm2-last.ckpt"
            if signum not in sent and (stage_checkpoint.exists() or proc.poll() is not None):
                proc.send_signal(signum)  # mid-stage 2 (or a run that ended early, which the checks below show)
                sent[signum] = time.monotonic()
        time.sleep(0.02)
    resumes = {}
    for signum, proc in procs.items():
        run, name = runs[signum], signal.Signals(signum).name
        _, err = proc.communicate(timeout=60)
        assert time.monotonic() - sent[signum] < 10, name
        assert proc.returncode == 128 + signum, err[-2000:]
        assert (run / "lightning_logs" / "version_0" / "config.yaml").is_file()  # the record exists from the start
        assert (
            err.strip().splitlines()[-1] == f"stopped by {name}; resume it: run the same command with --ckpt_path last"
        )
        resumes[signum] = subprocess.Popen(_command(run, "--ckpt_path", "last"), env=_env(), stdout=subprocess.DEVNULL,
                                           stderr=subprocess.PIPE, text=True)  # fmt: skip
    for signum, resumed in resumes.items():
        _, err = resumed.communicate(timeout=300)
        assert resumed.returncode == 0, err[-2000:]
        got = _final_state(runs[signum] / "lightning_logs" / "version_1")
        for key in uninterrupted:
            assert torch.equal(uninterrupted[key], got[key]), (signal.Signals(signum).name, key)


def test_a_run_stopped_during_fine_tuning_keeps_its_pretrained_stack(tmp_path):
    """The stack is written as the stages end, before fine-tuning's first step, not at the fit's end."""
    from dbn_init.io import load_stack

    run = tmp_path / "lightning_logs" / "version_0"
    proc = subprocess.Popen(_command(tmp_path, "--trainer.max_epochs", "500"), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 240
    while not (run / "checkpoints" / "last.ckpt").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)  # fine-tuning's first epoch just ended
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGINT, err[-2000:]
    assert [rbm.n_hidden for rbm in load_stack(run / "pretrained.safetensors").rbms] == [32, 16]


@pytest.fixture
def small_disk(tmp_path):
    """A 200 KB tmpfs: room for the run's config, not for its first stage checkpoint."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    yield disk
    subprocess.run(["umount", str(disk)], check=True)


def test_a_full_disk_ends_the_run_with_one_line_naming_the_file_and_leaves_no_partial_checkpoint(small_disk):
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "fit", "--config", "quickstart.yaml",
                           "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
                           "--model.pretrain_epochs", "2", "--trainer.default_root_dir", str(small_disk / "run")],
                          env=_env(), capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: cannot write {small_disk / 'run' / 'checkpoints' / 'rbm1-last.ckpt'} (No space left on device); "
        "nothing was replaced: free space on its disk, or write to another folder"
    )
    left = sorted(p.name for p in (small_disk / "run").rglob("*") if p.is_file())
    assert left == []  # no truncated checkpoint, no temporary file; having saved nothing, the run gave its folder back


def test_slurm_s_warning_after_the_work_is_done_leaves_the_finished_process_alone():
    """sbatch --signal=USR1 may land while a finished run's interpreter shuts down; its default
    action would end the job as killed (status -10)."""
    script = "import os, signal\nfrom dbn_init.entry import handlers\nwith handlers('hint'):\n    pass\n" \
             "os.kill(os.getpid(), signal.SIGUSR1)\nprint('finished')"  # fmt: skip
    done = subprocess.run([sys.executable, "-c", script], env={**_env(), "SLURM_JOB_ID": "4242"},
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert (done.returncode, done.stdout.strip()) == (0, "finished"), done.stderr[-2000:]


def test_slurm_preemption_requeues_through_scontrol_and_the_requeued_job_resumes_bit_identical(uninterrupted, tmp_path):
    """SLURM's variables faked and a stand-in scontrol on PATH: SIGUSR1 mid-stage (what
    `sbatch --signal=USR1@90` sends) stops the run, requeues job 4242 and leaves no Lightning
    hpc_ckpt (which every later fit would load, a stage's into the next stage); the same command
    with --ckpt_path last, run again as the requeued job, ends where an uninterrupted run ends."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "scontrol-calls.txt"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (bin_dir / "scontrol").chmod(0o755)
    slurm = {"SLURM_JOB_ID": "4242", "SLURM_NTASKS": "1", "SLURM_NTASKS_PER_NODE": "1", "SLURM_PROCID": "0",
             "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_JOB_NAME": "dbn", "SLURM_NODELIST": "localhost",
             "PATH": f"{bin_dir}:{os.environ['PATH']}"}  # fmt: skip
    root = tmp_path / "b"
    job = _command(root, "--ckpt_path", "last")  # what the batch script runs, first time and requeued
    run_dir = root / "lightning_logs" / "version_4242"  # under SLURM, Lightning's logger names the run by its job
    stage_checkpoint = run_dir / "checkpoints" / "rbm2-last.ckpt"
    proc = subprocess.Popen(job, env={**_env(), **slurm}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not stage_checkpoint.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGUSR1)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGUSR1, err[-2000:]
    assert calls.read_text() == "requeue 4242\n"
    assert err.strip().splitlines()[-1] == (
        "stopped by SIGUSR1; requeued SLURM job 4242: it resumes where its command has --ckpt_path last"
    )
    assert not list(root.rglob("hpc_ckpt*"))
    resumed = subprocess.run(job, env={**_env(), **slurm}, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming from {stage_checkpoint}" in resumed.stderr + resumed.stdout  # the requeued job, same folder
    expected = uninterrupted
    got = _final_state(run_dir)
    for key in expected:
        assert torch.equal(expected[key], got[key]), key


def test_a_fit_resumed_during_fine_tuning_ends_with_the_uninterrupted_fit_s_weights(tmp_path):
    """Dropout's masks (the default recipe drops 0.2) depend only on the run's seed, the epoch, the
    batch and the rank, so a fit resumed from an epoch's checkpoint draws the masks the uninterrupted
    fit drew, whatever Lightning's restart draws from the generator first."""
    from lightning.pytorch import Trainer, seed_everything
    from lightning.pytorch.callbacks import ModelCheckpoint

    from dbn_init import DBN, DigitsDataModule

    def fit(ckpt_path=None) -> dict:
        seed_everything(0)
        model = DBN(hidden=[32], pretrain_epochs=1)
        every_epoch = ModelCheckpoint(tmp_path, save_top_k=-1, every_n_epochs=1)
        trainer = Trainer(max_epochs=3, limit_train_batches=5, limit_val_batches=1, deterministic=True, logger=False,
                          enable_progress_bar=False, enable_model_summary=False, callbacks=[every_epoch])  # fmt: skip
        trainer.fit(model, datamodule=DigitsDataModule(), ckpt_path=ckpt_path)
        assert model.dropout > 0 and trainer.global_step == 15
        return model.state_dict()

    uninterrupted = fit()
    resumed = fit(tmp_path / "epoch=0-step=5.ckpt")
    for key in uninterrupted:
        assert torch.equal(uninterrupted[key], resumed[key]), key
