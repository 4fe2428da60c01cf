"""The benchmark scripts run end to end (smoke: their figures are printed, never asserted as speed)."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent.parent / "benchmarks"


def test_cd_precision_compares_bf16_with_fp32_and_finds_it_within_sampling_noise():
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPTS / "cd_precision.py"),
            "--device",
            "cpu",
            "--batches",
            "4",
            "--warm-steps",
            "20",
            "--data-root",
            "/nonexistent",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["data"] == "random" and result["batches"] == 4
    # bf16 autocast moves the gradient far less than a different Gibbs seed does (5e-3 vs 4e-2 here)
    assert 0 < result["bf16_rel"] < result["sampling_noise_rel"] / 3


def test_rbm_throughput_times_the_stage_against_the_matmuls_and_reports_flops():
    """A smoke run of two contenders, each in its own process: every figure is in the JSON line, and
    one round never counts as a goal met. (The peers and the compiled step run the same harness.)"""
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPTS / "rbm_throughput.py"),
            "--n",
            "1024",
            "--rounds",
            "1",
            "--data-root",
            "/nonexistent",
            "--peak-size",
            "1024",
            "--skip",
            "naive_torch,cd_grad_sgd,dbn_init_loss,dbn_init_1t,sklearn,learnergy,rbms,compiled_cd,compiled_cd_x8,finetune",
        ],
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["data"] == "random" and result["n"] == 1024 and result["device"]
    for name in ("matmul_only", "dbn_init"):
        assert result[f"{name}_s"] > 0 and result["tflops"][name] > 0
    assert result["rbms_s"] is None and result["compiled_cd_s"] is None  # skipped
    assert result["peak_tflops"]["measured"] > 0 and result["peak_tflops"]["spec"] is None  # a CPU
    assert result["goals_met"]["dbn_init/matmul_only <= 1.2"] is False  # one round: never "met"
    assert "only 1 rounds; 5 needed" in proc.stdout
