"""DBN training under real DDP: two CPU processes (gloo) launched the way users launch them."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from lightning.pytorch import seed_everything
from sklearn.datasets import load_digits

import dbn_init.rbm
from dbn_init import DBN

WORKER = Path(__file__).with_name("_ddp_worker.py")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable"),
]


def _env() -> dict:
    """A launcher's environment: one thread per process, and no DDP variables of an outer run."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    for var in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    return env


def _run_worker(tmp_path: Path, mode: str, strategy: str, *extra: str) -> None:
    proc = subprocess.run(
        [sys.executable, str(WORKER), str(tmp_path), mode, strategy, *extra],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def _load(path: Path) -> dict:
    return torch.load(path, weights_only=True)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """The whole pipeline under ``ddp`` (the launcher does not change what DDP syncs; what a spawned
    fit hands back to its parent: test_one_plain_python_fit_on_two_processes_ends_with_train_py_s_weights)."""
    out = tmp_path_factory.mktemp("ddp", numbered=False)  # the folder's name is the strategy
    _run_worker(out, "pipeline", "ddp")
    return out


def test_all_ranks_hold_bit_identical_parameters_after_every_stage_and_fine_tuning(pipeline):
    for tag in ("stage1", "stage2", "finetune"):
        rank0, rank1 = _load(pipeline / f"{tag}-rank0.pt"), _load(pipeline / f"{tag}-rank1.pt")
        assert rank0["state"].keys() == rank1["state"].keys()
        for key, value in rank0["state"].items():
            assert torch.equal(value, rank1["state"][key]), (tag, key)
    # and the main process (the launcher) ends with the same model
    final = _load(pipeline / "final-main.pt")
    for key, value in _load(pipeline / "finetune-rank0.pt")["state"].items():
        assert torch.equal(final[key], value), key


def test_several_cd_steps_per_lightning_step_average_every_update_across_ranks(pipeline, tmp_path):
    """The pipeline runs 4 CD updates per Lightning step (steps_per_batch=8, 4 mini-batches a rank);
    Lightning re-arms DDP before each manual_backward, so it equals one update per step exactly."""
    _run_worker(tmp_path, "pipeline", pipeline.name, "1")
    for tag in ("stage1", "stage2"):
        regrouped, one_each = _load(pipeline / f"{tag}-rank0.pt"), _load(tmp_path / f"{tag}-rank0.pt")
        for key, value in one_each["state"].items():
            assert torch.equal(value, regrouped["state"][key]), (tag, key)
        assert torch.equal(one_each["chain"], regrouped["chain"])


def test_frozen_rbm_gets_no_update_on_any_rank_in_later_stages(pipeline):
    for rank in (0, 1):
        after_stage1 = _load(pipeline / f"stage1-rank{rank}.pt")["state"]
        after_stage2 = _load(pipeline / f"stage2-rank{rank}.pt")["state"]
        for key in ("rbms.0.weight", "rbms.0.visible_bias", "rbms.0.hidden_bias"):
            assert torch.equal(after_stage1[key], after_stage2[key]), (rank, key)
        assert not torch.equal(after_stage1["rbms.1.weight"], after_stage2["rbms.1.weight"])


def test_gibbs_noise_and_persistent_chains_are_per_rank(pipeline):
    for tag in ("stage1", "stage2"):
        rank0, rank1 = _load(pipeline / f"{tag}-rank0.pt"), _load(pipeline / f"{tag}-rank1.pt")
        assert rank0["seed"] != rank1["seed"]
        assert rank0["chain"].shape == rank1["chain"].shape
        assert not torch.equal(rank0["chain"], rank1["chain"])


def test_a_resumed_stage_continues_every_ranks_own_noise_and_chains(tmp_path):
    """Stage 1 checkpointed after epoch 1 and resumed ends bit for bit where the straight run ends,
    on both ranks: the checkpoint holds each rank's generator state and PCD chains, not rank 0's."""
    _run_worker(tmp_path, "resume", "ddp")
    for rank in (0, 1):
        straight, resumed = _load(tmp_path / f"straight-rank{rank}.pt"), _load(tmp_path / f"resumed-rank{rank}.pt")
        assert (straight["start_epoch"], resumed["start_epoch"]) == (0, 1)  # the checkpoint was resumed
        for key, value in straight["state"].items():
            assert torch.equal(value, resumed["state"][key]), (rank, key)
        assert torch.equal(straight["chain"], resumed["chain"]), rank
    assert not torch.equal(_load(tmp_path / "resumed-rank0.pt")["chain"], _load(tmp_path / "resumed-rank1.pt")["chain"])
    saved = torch.load(tmp_path / "stage1-epoch1.ckpt", weights_only=True)["dbn_init"]
    assert not torch.equal(saved["rank_generators"][0], saved["rank_generators"][1])  # each rank's own


def test_two_process_cd_update_equals_one_process_with_the_combined_batch(tmp_path, monkeypatch):
    _run_worker(tmp_path, "cd_step", "ddp")
    ddp = _load(tmp_path / "cd_step-rank0.pt")["state"]

    monkeypatch.setattr(dbn_init.rbm, "bernoulli", lambda probs, generator=None: (probs > 0.5).to(probs.dtype))
    seed_everything(0)
    model = DBN(recipe="textbook", num_classes=10, input_size=64, hidden=[8], pretrain_epochs=1)
    initial = model.rbms[0].weight.detach().clone()
    x = torch.tensor(load_digits().data[:64], dtype=torch.float32) / 16.0
    stage = model.stage(0)
    optimizer = stage.configure_optimizers()
    stage.generator = torch.Generator().manual_seed(0)
    stage.rbm.cd_loss(x, generator=stage.generator).loss.backward()
    optimizer.step()

    assert not torch.equal(ddp["rbms.0.weight"], initial)  # the step did something
    for key, value in model.state_dict().items():
        if key.startswith("rbms."):
            torch.testing.assert_close(ddp[key], value, rtol=1e-5, atol=1e-6, msg=key)


@pytest.fixture(scope="module")
def train_py_run(tmp_path_factory) -> Path:
    """train.py fit on 2 processes, under ddp_spawn: the launcher that hands the fit's weights back to
    the main process, whose final test must read this run's config, not one a worker saved; its run folder."""
    root, out = Path(__file__).parents[1], tmp_path_factory.mktemp("train_py")
    config = str(root / "configs" / "quickstart.yaml")
    proc = subprocess.run([sys.executable, str(root / "train.py"), "fit", "--config", config,
                           "--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp_spawn",
                           "--trainer.max_epochs", "1", "--model.pretrain_epochs", "1", "--model.hidden", "[16, 8]",
                           "--trainer.default_root_dir", str(out)],
                          cwd=out, env=_env(), capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "test_acc" in proc.stdout + proc.stderr
    assert "sync_dist" not in proc.stderr  # every stage metric is logged as DDP wants it
    return out / "lightning_logs" / "version_0"


def test_train_py_under_two_process_ddp_writes_pictures_and_the_exported_stack(train_py_run):
    """Rank 0 writes the stage pictures and the exported stack, which read ``trainer.log_dir``, a
    broadcast every rank must join (a rank-0-only call would hang the run)."""
    run = train_py_run
    assert {p.name for p in (run / "pictures").glob("*.png")} >= {"rbm1_filters.png", "rbm2_filters.png"}
    assert (run / "pretrained.safetensors").is_file()
    # the record of the run exists before its first stage ends, as in a one-device run
    config = (run / "config.yaml").stat().st_mtime_ns
    assert config < (run / "checkpoints" / "rbm1-last.ckpt").stat().st_mtime_ns


@pytest.mark.parametrize("strategy", ["ddp", "ddp_spawn", "ddp_fork"])
def test_one_plain_python_fit_on_two_processes_ends_with_train_py_s_weights(strategy, train_py_run, tmp_path):
    """Trainer(devices=2, strategy=...).fit(DBN(...), datamodule) from plain Python, sizes from the
    data, pretrains both stages (joining the fit's processes), fine-tunes and tests; its weights
    are train.py's, bit for bit, under every launcher (a notebook's devices=2 picks ddp_fork)."""
    _run_worker(tmp_path, "fit", strategy)
    got = _load(tmp_path / "fit-main.pt")
    expected = _load(train_py_run / "checkpoints" / "last.ckpt")["state_dict"]
    assert got["state"].keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(got["state"][key], value), key
    assert int(got["state"]["stages_done"]) == 2 and 0 <= got["test_acc"] <= 1  # and the test ran


def _rank_one_of(parent: int) -> int | None:
    """The pid of the process Lightning launched as rank 1 of ``parent``'s run, once it runs."""
    for entry in Path("/proc").iterdir():
        try:
            status, environ = (entry / "status").read_text(), (entry / "environ").read_bytes()
        except (OSError, ValueError):
            continue
        if f"\nPPid:\t{parent}\n" in status and b"LOCAL_RANK=1\x00" in environ:
            return int(entry.name)
    return None


def _quickstart_on_two_processes(folder: Path) -> subprocess.Popen:
    """train.py fit of the quickstart under 2-process DDP in ``folder``, started as users start it; stderr piped."""
    root = Path(__file__).parents[1]
    return subprocess.Popen([sys.executable, str(root / "train.py"), "fit", "--config", "quickstart.yaml",
                             "--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp",
                             "--trainer.default_root_dir", str(folder)],
                            cwd=folder, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the rank's process through /proc")
def test_a_rank_that_dies_ends_the_run_with_the_line_that_resumes_it(tmp_path):
    proc = _quickstart_on_two_processes(tmp_path)
    try:
        stage = tmp_path / "lightning_logs" / "version_0" / "checkpoints" / "rbm1-last.ckpt"
        deadline = time.monotonic() + 240
        while not stage.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        rank_one = _rank_one_of(proc.pid)
        assert rank_one is not None, "rank 1 is not running"
        os.kill(rank_one, signal.SIGKILL)  # mid-stage 1: an out-of-memory kill, say
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    # Lightning's observer of rank 1 stops rank 0, or rank 0's next collective fails first: one line either way
    lines = {"error: process 1 of this distributed run ended (exit code -9), so every process stops",
             "error: another process of this distributed run ended, so this one stops"}  # fmt: skip
    resume = "; resume it: run the same command with --ckpt_path last"
    assert any(f"{line}{resume}" in err.splitlines() for line in lines), err[-2000:]
    assert "Traceback" not in err, err[-2000:]


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the rank's process through /proc")
def _ended(pid: int, seconds: float = 30) -> bool:
    """Whether process ``pid`` is gone (or a zombie) within ``seconds``: having closed its stderr, it
    may still be running its exit on a loaded machine."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        status = Path(f"/proc/{pid}/status")
        try:
            if "zombie" in status.read_text():
                return True
        except FileNotFoundError:
            return True
        time.sleep(0.1)
    return False


def test_rank_zero_killed_before_the_processes_meet_ends_the_others_with_the_line_that_resumes_it(tmp_path):
    """Rank 1 would otherwise wait in the rendezvous for the process group's timeout (30 minutes)."""
    proc = _quickstart_on_two_processes(tmp_path)
    rank_one = None
    try:
        deadline = time.monotonic() + 120
        while rank_one is None and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
            rank_one = _rank_one_of(proc.pid)
        assert rank_one is not None, "rank 1 never started"
        proc.kill()  # rank 0, the launching process, as soon as it has launched rank 1
        proc.wait()
        _, err = proc.communicate(timeout=60)  # rank 1 holds the same stderr until it ends
    finally:
        proc.kill()
    assert _ended(rank_one)
    line = "error: process 0 of this distributed run ended, so every process stops"
    assert f"{line}; resume it: run the same command with --ckpt_path last" in err.splitlines(), err[-2000:]
