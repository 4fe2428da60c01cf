"""The comparison runner on digits: files, schema, resume, and a table that matches the runs."""

import itertools
import json
import re
import shutil
import stat
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


def test_rows_written_before_settings_were_recorded_are_checked_by_their_epochs(finished, monkeypatch, tmp_path):
    """The committed results' older rows record no settings, only the epochs they fine-tuned for:
    a rerun that would fine-tune new seeds for other epochs is refused rather than pooled with them."""
    out = tmp_path / "copy"
    shutil.copytree(finished[0], out)
    saved = json.loads((out / "results.json").read_text())
    for row in saved["runs"]:
        del row["settings"]
    (out / "results.json").write_text(json.dumps(saved))
    import dbn_init.compare as compare

    monkeypatch.setattr(compare, "run_cell", lambda *a: pytest.fail("a cell ran beside rows of other epochs"))
    assert run(_cfg(out)) == saved["runs"]  # the same epochs: nothing to run, nothing refused
    with pytest.raises(ValueError, match=r"other settings: fine-tuning for 1 epochs there, fine-tuning for 2 epochs now"):
        run(_cfg(out, "--max_epochs", "2", "--seeds", "[0, 1, 2]"))


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
    with pytest.raises(ValueError, match=r"--baseline sets \['init'\], which each cell sets itself \(init from --models"):
        run(_cfg(tmp_path, "--baseline", "{init: he_normal}"))
    assert not (tmp_path / "results.json").exists()


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("compare_*.yaml")), ids=lambda p: p.name)
def test_shipped_comparison_configs_parse_and_pass_the_checks(path):
    from dbn_init.compare import _check_options

    cfg = build_parser().parse_args(["--config", str(path)])
    assert cfg.models and cfg.hidden and cfg.seeds
    _check_options(cfg)  # builds every data module and model once, loads no data


def _refused(monkeypatch, out, *args, match, error=ValueError):
    """Run with ``args``, expect an ``error`` matching ``match`` before any cell, and nothing in ``out`` changed."""
    import dbn_init.compare as compare

    monkeypatch.setattr(compare, "run_cell", lambda *a: pytest.fail("a cell ran despite a refused option"))
    before = {p: p.read_bytes() if p.is_file() else None for p in out.rglob("*")} if out.exists() else None
    with pytest.raises(error, match=match):
        run(_cfg(out, *args))
    assert ({p: p.read_bytes() if p.is_file() else None for p in out.rglob("*")} if out.exists() else None) == before


@pytest.mark.parametrize("name", ["results.md", "curves.png", "filters.png", "pretrained"])
def test_foreign_outputs_without_results_json_are_refused(name, monkeypatch, tmp_path):
    foreign = tmp_path / name
    if name == "pretrained":
        foreign.mkdir()
        (foreign / "mine.safetensors").write_text("my own stack")
    else:
        foreign.write_text("my own notes")
    _refused(monkeypatch, tmp_path,
             match=rf"holds \['{name}'\] but no results.json.*move them away or pick another --out")


@pytest.mark.parametrize("args, match", [
    (["--seeds", "[0, 0]"], r"--seeds lists \[0\] more than once"),
    (["--models", "[dbn, he_uniform, dbn]"], r"--models lists \['dbn'\] more than once"),
    (["--labels", "[null, 50, null]"], r"--labels lists \[None\] more than once"),
    (["--hidden", "[[32, 16], [32, 16]]"], r"--hidden lists \[\[32, 16\]\] more than once"),
    (["--extra", "[{name: he_uniform, model: dbn, hidden: [8]}]"], r"extra row name.*'he_uniform'.*a name of its own"),
    (["--extra", "[{name: big, model: dbn, hidden: [8]}, {name: big, model: normal, hidden: [9]}]"],
     r"extra row name.*'big'"),
])
def test_repeated_cells_and_clashing_row_names_are_refused(args, match, monkeypatch, tmp_path):
    _refused(monkeypatch, tmp_path / "out", *args, match=match)


@pytest.mark.parametrize("args, match", [
    (["--max_epochs", "0"], r"expected --max_epochs >= 1.*got 0"),
    (["--max_epochs", "-1"], r"expected --max_epochs >= 1.*got -1"),
    (["--min_steps", "-1"], r"expected --min_steps >= 0.*got -1"),
    (["--seeds", "[0, -1]"], r"expected --seeds in 0\.\.4294967295.*got \[-1\]"),
    (["--devices", "0"], r"expected --devices >= 1.*got 0"),
    (["--accelerator", "tpuz"], r"--accelerator tpuz --devices 1: .*invalid accelerator name"),
])
def test_out_of_range_numbers_are_refused(args, match, monkeypatch, tmp_path):
    _refused(monkeypatch, tmp_path / "out", *args, match=match)


@pytest.mark.parametrize("args, match", [
    (["--models", "[he_uniform, dbn]", "--dbn", "{pretrain_epochs: 1, cd_k: 0}"],
     r"cannot build dbn with hidden=\[32, 16\].*cd_k must be >= 1, got 0.*fix --dbn"),
    (["--baseline", "{lr: 0}"], r"cannot build he_uniform.*lr.* must be > 0, got 0.*fix --baseline"),
    (["--extra", "[{name: tiny, model: dbn, hidden: [0]}]"], r"cannot build tiny with hidden=\[0\].*positive"),
    (["--labels", "[null, 5]"], r"expected num_labels an integer >= num_classes \(10\).*got 5"),
    # more labels than digits' 1,293 training images: found by loading the data, still before any cell
    (["--labels", "[null, 100000]"], r"expected at least .* training images of class 0 for num_labels=100000"),
])
def test_bad_model_and_data_values_are_refused_before_the_first_cell(args, match, monkeypatch, tmp_path):
    _refused(monkeypatch, tmp_path / "out", *args, match=match)


@pytest.mark.parametrize("args, why", [(["--models", "[]"], "no row"), (["--seeds", "[]"], "--seeds is empty"),
                                       (["--labels", "[]"], "--labels is empty")])
def test_an_empty_table_is_refused_with_the_fix(args, why, tmp_path, capsys):
    from dbn_init.compare import main

    cfg = ["--data", "dbn_init.DigitsDataModule", "--hidden", "[[8]]", "--out", str(tmp_path / "out"), *args]
    assert main(cfg) == 2
    err = capsys.readouterr().err
    assert f"error: no cells to run: {why}" in err and "expected at least one seed" in err
    assert not (tmp_path / "out").exists()


def test_a_data_option_typo_is_a_one_line_usage_error(tmp_path, capsys):
    from dbn_init.compare import main

    with pytest.raises(SystemExit) as info:
        main(["--data", "dbn_init.DigitsDataModule", "--data.batch_sz", "3", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "Union" not in err and "NoneType" not in err, err
    assert "error: Parser key \"data\": Problem with given class_path 'dbn_init.DigitsDataModule': Option 'batch_sz' " \
           "is not accepted" in err


@pytest.mark.parametrize("text", ['{"runs": [{"name": "x"}]}', '{"runs": "abc"}', '{"runs": [1]}', "[]",
                                  '{"runs": [], "configs": 3}', "not json"])
def test_a_malformed_results_json_is_refused_and_kept(text, monkeypatch, tmp_path):
    (tmp_path / "results.json").write_text(text)
    _refused(monkeypatch, tmp_path, match="is not a results file of this runner.*move it away or pick another --out")


@pytest.mark.parametrize("field, value, what", [
    ("test_acc", "0.26", "a number"),
    ("fit_seconds", None, "a number"),
    ("val_curve", [0.5, "0.6"], "a list of numbers"),
    ("hidden", "32-16", "a non-empty list of positive integers"),
    ("seed", 0.5, "an integer"),
    ("labels", "all", r"an integer, or null for all labels"),
    ("epochs", True, "a positive integer or null"),
    ("settings", {"options": {}}, "null or an object with data"),
])
def test_a_results_row_with_a_wrong_type_is_refused_before_any_cell(field, value, what, finished, monkeypatch, tmp_path):
    """A hand-edited value (``"test_acc": "0.26"``) once passed the read, let the new cells train, then broke
    the table in statistics and left results.md stale."""
    out = tmp_path / "copy"
    shutil.copytree(finished[0], out)
    saved = json.loads((out / "results.json").read_text())
    saved["runs"][2][field] = value
    (out / "results.json").write_text(json.dumps(saved))
    model = saved["runs"][2]["model"]
    _refused(monkeypatch, out, "--seeds", "[0, 1, 2]",
             match=rf"results.json: runs\[2\] \(model \"{model}\", seed .*\) has \"{field}\": "
                   rf"{re.escape(json.dumps(value))}, .*; expected {what}.*Nothing was run or overwritten: "
                   r"write the value as .* or delete that row so its cell runs again")


def _stack(path, sizes=(64, 32, 16), visible_units="bernoulli", scaling="unit"):
    """An untrained RBM stack of ``sizes`` (input first) saved with :func:`dbn_init.io.save_stack`; returns its path."""
    from dbn_init.io import save_stack
    from dbn_init.rbm import make_rbm

    rbms = [make_rbm(n_vis, n_hid, visible_units if i == 0 else "bernoulli")
            for i, (n_vis, n_hid) in enumerate(itertools.pairwise(sizes))]
    return str(save_stack(rbms, path, scaling=scaling))


def _bad_stack(kind, folder):
    """A ``--dbn pretrained`` file that the digits DBN with hidden [32, 16] cannot start from; returns its path."""
    import torch
    from safetensors.torch import save_file

    path = folder / f"{kind}.safetensors"
    if kind == "notes":
        path.write_text("my notes")
    elif kind == "cut":
        path.write_bytes(Path(_stack(path)).read_bytes()[:200])
    elif kind == "foreign":
        save_file({"foo": torch.zeros(3)}, str(path))
    elif kind != "missing":
        _stack(path, **{"wide": {"sizes": (64, 40)}, "mnist": {"sizes": (784, 32)},
                        "gauss": {"sizes": (64, 32), "visible_units": "gaussian"},
                        "std": {"sizes": (64, 32), "scaling": "standardize"}}[kind])
    return path


@pytest.mark.parametrize("kind, error, match", [
    ("missing", FileNotFoundError, r"--dbn pretrained.*no such file: .*missing.safetensors"),
    ("notes", ValueError, r"--dbn pretrained.*notes.safetensors is not a recognised weights file"),
    ("cut", ValueError, r"--dbn pretrained.*cut.safetensors is a truncated or corrupt safetensors file"),
    ("foreign", ValueError, r"(?s)--dbn pretrained.*foreign.safetensors.*unexpected tensor names \['foo'\]"),
    ("wide", ValueError, r"--dbn pretrained, the stack dbn with hidden=\[32, 16\] starts from: .*wide.safetensors"),
    ("mnist", ValueError, r"(?s)--dbn pretrained.*n_visible=784, expected input_size=64"),
    ("gauss", ValueError, r"--dbn pretrained.*imported RBM 1 is gaussian"),
    ("std", ValueError, (r"--dbn pretrained.*the imported stack .*std.safetensors was pretrained on inputs scaled "
                         r"'standardize' but this data is scaled 'unit'.*pass --data.scaling standardize")),
])
def test_a_bad_pretrained_stack_is_refused_before_the_first_cell(kind, error, match, monkeypatch, tmp_path):
    """With the DBN row after a baseline, a bad ``--dbn pretrained`` once let the baseline cells train and be
    saved before the DBN cell failed on the file."""
    stack = _bad_stack(kind, tmp_path)
    _refused(monkeypatch, tmp_path / "out", "--models", "[he_uniform, dbn]",
             "--dbn", f"{{pretrain_epochs: 1, pretrained: {stack}}}", error=error, match=match)
    assert not (tmp_path / "out").exists()


def test_a_good_pretrained_stack_passes_the_check_and_a_missing_one_is_a_one_line_error(monkeypatch, tmp_path, capsys):
    from dbn_init import compare
    from dbn_init.compare import main

    ran = []
    monkeypatch.setattr(compare, "run_cell", lambda cell, *a: ran.append(cell.name) or {
        "model": cell.name, "hidden": list(cell.hidden), "seed": cell.seed, "labels": cell.labels, "test_acc": 0.5,
        "val_curve": [0.5], "fit_seconds": 1.0, "pretrain_seconds": 0.0})
    # a stack shorter than hidden is the bottom of the DBN: accepted, the RBM above it is pretrained on top
    stack = _stack(tmp_path / "bottom.safetensors", (64, 32))
    run(_cfg(tmp_path / "out", "--models", "[he_uniform, dbn]", "--dbn", f"{{pretrain_epochs: 1, pretrained: {stack}}}"))
    assert ran == ["he_uniform", "he_uniform", "dbn", "dbn"]
    argv = ["--data", "dbn_init.DigitsDataModule", "--models", "[he_uniform, dbn]", "--hidden", "[[32, 16]]",
            "--seeds", "[0]", "--max_epochs", "1", "--out", str(tmp_path / "out2"),
            "--dbn", f"{{pretrain_epochs: 1, pretrained: {tmp_path / 'gone.safetensors'}}}"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "error: --dbn pretrained, the stack dbn with hidden=[32, 16] starts from: no such file: " in err, err
    assert ran == ["he_uniform", "he_uniform", "dbn", "dbn"] and not (tmp_path / "out2").exists()


def test_out_that_is_a_file_is_refused(monkeypatch, tmp_path):
    (tmp_path / "out").write_text("x")
    _refused(monkeypatch, tmp_path / "out", match=r"--out .*out is a file; expected a folder.*pick another --out")
    assert (tmp_path / "out").read_text() == "x"


def test_an_interrupted_first_cell_leaves_a_folder_that_resumes(monkeypatch, tmp_path):
    """results.json is written before the first cell, so its files do not look foreign on the rerun."""
    import dbn_init.compare as compare

    def crash(cell, cfg, data, out):
        (out / "filters.png").write_bytes(b"half a run")
        raise RuntimeError("killed")

    monkeypatch.setattr(compare, "run_cell", crash)
    with pytest.raises(RuntimeError, match="killed"):
        run(_cfg(tmp_path, "--models", "[dbn]", "--seeds", "[0]"))
    assert json.loads((tmp_path / "results.json").read_text())["runs"] == []
    monkeypatch.setattr(compare, "run_cell", lambda cell, *a: {
        "model": cell.name, "hidden": list(cell.hidden), "seed": cell.seed, "labels": cell.labels, "test_acc": 0.5,
        "val_curve": [0.5], "fit_seconds": 1.0, "pretrain_seconds": 0.0})
    assert len(run(_cfg(tmp_path, "--models", "[dbn]", "--seeds", "[0]"))) == 1


def test_result_files_are_readable_by_others(finished):
    out, _ = finished
    for name in ("results.json", "results.md"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o644, name


def test_a_corrupt_cached_stack_names_the_file_and_the_fix(finished, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(finished[0], out)
    stack = next((out / "pretrained").glob("dbn-32-16-seed0-*.safetensors"))
    stack.write_bytes(stack.read_bytes()[:100])
    # a new label budget reuses the cached stack of (dbn, seed 0), the first cell to run
    with pytest.raises(ValueError, match=rf"{stack.name}.*delete .*{stack.name} to pretrain it again"):
        run(_cfg(out, "--labels", "[50]"))
