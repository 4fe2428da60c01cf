"""The comparison runner on digits: files, schema, resume, and a table that matches the runs."""

import json
import re
import shutil
import statistics
from pathlib import Path

import pytest

from dbn_init.compare import build_parser, run

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def _cfg(out, *extra):
    return build_parser().parse_args([
        "--data", "dbn_init.DigitsDataModule", "--data.batch_size", "64",
        "--models", "[dbn, he_uniform]", "--hidden", "[[32, 16]]", "--seeds", "[0, 1]",
        "--max_epochs", "1", "--dbn", "{pretrain_epochs: 1}", "--out", str(out), *extra,
    ])


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare")
    return out, run(_cfg(out))


def test_runner_writes_every_file_with_the_documented_schema(finished):
    out, runs = finished
    for name in ("results.json", "results.md", "curves.png", "filters.png"):
        assert (out / name).stat().st_size > 0, name
    saved = json.loads((out / "results.json").read_text())
    assert saved["runs"] == runs and len(runs) == 4
    assert {(r["model"], r["seed"]) for r in runs} == {("dbn", 0), ("dbn", 1), ("he_uniform", 0), ("he_uniform", 1)}
    for r in runs:
        assert r["hidden"] == [32, 16] and r["labels"] is None
        assert 0.0 <= r["test_acc"] <= 1.0 and r["fit_seconds"] > 0
        assert len(r["val_curve"]) == 1 and r["dataset"] == "digits"
        assert (r["pretrain_seconds"] > 0) == (r["model"] == "dbn")
        assert r["settings"]["options"] == ({"pretrain_epochs": 1} if r["model"] == "dbn" else {})
        assert r["settings"]["max_epochs"] == 1 and r["settings"]["data"]["class_path"] == "dbn_init.DigitsDataModule"
    assert len(list((out / "pretrained").glob("dbn-32-16-seed0-*.safetensors"))) == 1


def test_rerun_resumes_instead_of_overwriting(finished, monkeypatch, tmp_path):
    out, runs = tmp_path / "copy", finished[1]
    shutil.copytree(finished[0], out)  # the stub rows below must not reach the other tests' folder
    import dbn_init.compare as compare

    monkeypatch.setattr(compare, "run_cell", lambda *a: pytest.fail("a finished cell was run again"))
    assert run(_cfg(out)) == runs
    # a new seed runs only the new cells, and the old ones stay as they were
    calls = []
    monkeypatch.setattr(compare, "run_cell", lambda cell, *a: calls.append(cell) or {
        "model": cell.name, "hidden": list(cell.hidden), "seed": cell.seed, "labels": cell.labels, "test_acc": 0.5,
        "val_curve": [0.5], "fit_seconds": 1.0, "pretrain_seconds": 0.0})
    more = run(_cfg(out, "--seeds", "[0, 1, 2]"))
    assert [(c.name, c.seed) for c in calls] == [("dbn", 2), ("he_uniform", 2)]
    assert more[:4] == runs


def test_rerun_with_changed_settings_is_refused_and_nothing_is_touched(finished, monkeypatch):
    out, _ = finished
    import dbn_init.compare as compare

    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    monkeypatch.setattr(compare, "run_cell", lambda *a: pytest.fail("a cell ran despite changed settings"))
    with pytest.raises(ValueError, match=r"run with other settings.*'pretrain_epochs': 1.*'pretrain_epochs': 2"
                                         r".*new --out"):
        run(_cfg(out, "--dbn", "{pretrain_epochs: 2}"))
    with pytest.raises(ValueError, match="other settings"):
        run(_cfg(out, "--max_epochs", "2"))
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_settings_that_change_nothing_are_not_a_change(finished, monkeypatch):
    """A default written out, or a min_steps that adds no epoch, leaves the finished cells valid."""
    out, runs = finished
    import dbn_init.compare as compare

    monkeypatch.setattr(compare, "run_cell", lambda *a: pytest.fail("a finished cell was run again"))
    # 1,293 digits at batch 64: 21 steps an epoch, so min_steps 20 is within the one epoch run
    assert run(_cfg(out, "--dbn", "{pretrain_epochs: 1, rbm_weight_decay: 0.0002}", "--min_steps", "20")) == runs
    with pytest.raises(ValueError, match="other settings"):  # 22 steps need a second epoch
        run(_cfg(out, "--min_steps", "22"))
    with pytest.raises(ValueError, match="other settings"):
        run(_cfg(out, "--dbn", "{pretrain_epochs: 1, rbm_weight_decay: 0.001}"))


def test_label_budgets_share_one_pretrained_stack(tmp_path):
    runs = run(_cfg(tmp_path, "--models", "[dbn]", "--seeds", "[0]", "--labels", "[50, 100]"))
    assert [(r["labels"], r["pretrained_from_cache"]) for r in runs] == [(50, False), (100, True)]
    assert len(list((tmp_path / "pretrained").glob("*.safetensors"))) == 1


def test_pretrained_stack_cache_is_keyed_by_what_pretraining_depends_on(tmp_path):
    from dbn_init.compare import Cell, _stack_cache, cell_settings

    cell = Cell("dbn", "dbn", (32, 16), 0, None)
    base = _stack_cache(tmp_path, cell, cell_settings(_cfg(tmp_path), cell))
    assert base == _stack_cache(tmp_path, cell, cell_settings(_cfg(tmp_path, "--dbn", "{pretrain_epochs: 1, lr: 0.01}"), cell))
    assert base == _stack_cache(tmp_path, cell, cell_settings(_cfg(tmp_path, "--max_epochs", "5"), cell))
    # steps_per_batch regroups the same CD updates (tested bit for bit): a speed knob, not a setting
    fast = _cfg(tmp_path, "--dbn", "{pretrain_epochs: 1, steps_per_batch: 1}")
    assert cell_settings(fast, cell) == cell_settings(_cfg(tmp_path), cell)
    assert base != _stack_cache(tmp_path, cell, cell_settings(_cfg(tmp_path, "--dbn", "{pretrain_epochs: 2}"), cell))
    assert base != _stack_cache(tmp_path, cell, cell_settings(_cfg(tmp_path, "--data.binarize", "true"), cell))


def test_table_means_and_stds_match_results_json(finished):
    out, _ = finished
    runs = json.loads((out / "results.json").read_text())["runs"]
    table = (out / "results.md").read_text()
    for model in ("dbn", "he_uniform"):
        accs = [r["test_acc"] for r in runs if r["model"] == model]
        row = next(line for line in table.splitlines() if line.startswith(f"| {model} |"))
        mean, std = map(float, re.search(r"([\d.]+) ± ([\d.]+)", row).groups())
        assert mean == pytest.approx(100 * statistics.fmean(accs), abs=0.006)
        assert std == pytest.approx(100 * statistics.stdev(accs), abs=0.006)
    best = max(("dbn", "he_uniform"), key=lambda m: statistics.fmean(r["test_acc"] for r in runs if r["model"] == m))
    assert re.search(rf"\| {best} \| \*\*", table)


def test_unknown_models_and_options_are_refused_before_any_run(tmp_path):
    with pytest.raises(ValueError, match="unknown model.*glorot"):
        run(_cfg(tmp_path, "--models", "[dbn, glorot]"))
    with pytest.raises(ValueError, match="unknown dbn option.*pretrain_epoch'"):
        run(_cfg(tmp_path, "--dbn", "{pretrain_epoch: 3}"))
    assert not (tmp_path / "results.json").exists()


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("compare_*.yaml")), ids=lambda p: p.name)
def test_shipped_comparison_configs_parse(path):
    cfg = build_parser().parse_args(["--config", str(path)])
    assert cfg.models and cfg.hidden and cfg.seeds
