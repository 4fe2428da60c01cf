"""The comparison runner on digits: files, schema, resume, refusals, and a table that matches the runs."""

import itertools
import json
import re
import shutil
import stat
import statistics
from pathlib import Path

import pytest

import dbn_init.experiments.compare as compare
from dbn_init.constraints import FileTakenError, UsageError
from dbn_init.experiments.compare import Cell, build_parser, main, run
from dbn_init.experiments.results import ResultsFile

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
FASHION = Path("/usr/share/datasets/fashion-mnist")
needs_fashion = pytest.mark.skipif(
    not (FASHION / "train-images-idx3-ubyte.gz").exists(), reason=f"Fashion-MNIST files not found under {FASHION}"
)


def _args(out, *extra):
    return [
        "--data",
        "dbn_init.DigitsDataModule",
        "--data.batch_size",
        "64",
        "--models",
        "[dbn, he_uniform]",
        "--hidden",
        "[[32, 16]]",
        "--seeds",
        "[0, 1]",
        "--max_epochs",
        "1",
        "--dbn.pretrain_epochs",
        "1",
        "--out",
        str(out),
        *extra,
    ]


def _cfg(out, *extra):
    return build_parser().parse_args(_args(out, *extra))


def _stub(cell, cfg, data, out):
    """A stand-in for run_cell: no training, but the settings the real one records."""
    settings = compare.cell_settings(compare._model(cell, cfg, data), data, compare._epochs(cfg, data), cfg)
    return {
        "model": cell.name,
        "hidden": list(cell.hidden),
        "seed": cell.seed,
        "labels": cell.labels,
        "test_acc": 0.5,
        "val_curve": [0.5],
        "fit_seconds": 1.0,
        "pretrain_seconds": 0.0,
        "settings": settings,
    }


def _no_cell(monkeypatch, why="a cell ran despite a refusal"):
    monkeypatch.setattr(compare, "run_cell", lambda *a: pytest.fail(why))


def _snapshot(out):
    return {p: p.read_bytes() if p.is_file() else None for p in out.rglob("*")} if out.exists() else None


def _copy(finished, tmp_path):
    """A copy of the finished folder, for tests that write to it."""
    out = tmp_path / "copy"
    shutil.copytree(finished[0], out)
    return out


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare")
    return out, run(_cfg(out))


# --- what a run writes ---------------------------------------------------------------------
def test_runner_writes_every_file_with_the_documented_schema(finished):
    out, runs = finished
    for name in ("results.json", "results.md", "curves.png", "filters.png"):
        assert (out / name).stat().st_size > 0, name
    saved = json.loads((out / "results.json").read_text())
    assert saved["runs"] == runs and len(runs) == 4
    assert {(r["model"], r["seed"]) for r in runs} == {("dbn", 0), ("dbn", 1), ("he_uniform", 0), ("he_uniform", 1)}
    for r in runs:
        assert r["hidden"] == [32, 16] and r["labels"] is None and r["epochs"] == 1
        assert 0.0 <= r["test_acc"] <= 1.0 and r["fit_seconds"] > 0
        assert len(r["val_curve"]) == 1 and r["dataset"] == "digits" and r["train_size"] == 1293
        assert (r["pretrain_seconds"] > 0) == (r["model"] == "dbn")
        settings = r["settings"]
        assert set(settings) == {"model", "data", "epochs", "patience", "select"} and settings["epochs"] == 1
        model = settings["model"]
        assert model["hidden"] == [32, 16] and model["input_size"] == 64 and model["num_classes"] == 10
        if r["model"] == "dbn":
            assert model["pretrain_epochs"] == 1 and model["pretrain_seed"] == r["seed"]
        else:
            assert model["init"] == "he_uniform" and "pretrain_epochs" not in model
        assert "steps_per_batch" not in model  # a speed option, not a setting
        assert settings["data"]["batch_size"] == 64 and settings["data"]["num_labels"] is None
        assert "root" not in settings["data"]  # where the files are is no setting either
    assert saved["configs"][0]["models"] == ["dbn", "he_uniform"] and "config" not in saved["configs"][0]
    assert len(list((out / "pretrained").glob("dbn-32-16-seed0-*.safetensors"))) == 1
    assert len(list((out / "pretrained").glob("*.safetensors"))) == 2


def test_result_files_are_readable_by_others(finished):
    out, _ = finished
    for name in ("results.json", "results.md"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o644, name


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
        assert "(n=2)" in row
    best = max(("dbn", "he_uniform"), key=lambda m: statistics.fmean(r["test_acc"] for r in runs if r["model"] == m))
    assert re.search(rf"\| {best} \| \*\*", table)


# --- resume, and what counts as the same cell ----------------------------------------------
def test_rerun_resumes_instead_of_overwriting(finished, monkeypatch, tmp_path):
    out, runs = _copy(finished, tmp_path), finished[1]  # the stub rows below must not reach the other tests' folder
    _no_cell(monkeypatch, "a finished cell was run again")
    assert run(_cfg(out)) == runs
    # a new seed runs only the new cells, and the old ones stay as they were
    calls = []
    monkeypatch.setattr(compare, "run_cell", lambda cell, *a: calls.append(cell) or _stub(cell, *a))
    more = run(_cfg(out, "--seeds", "[0, 1, 2]"))
    assert [(c.name, c.seed) for c in calls] == [("dbn", 2), ("he_uniform", 2)]
    assert more[:4] == runs and len(more) == 6
    assert json.loads((out / "results.json").read_text())["runs"] == more


def test_rerun_with_changed_settings_is_refused_and_nothing_is_touched(finished, monkeypatch):
    out, _ = finished
    before = _snapshot(out)
    _no_cell(monkeypatch, "a cell ran despite changed settings")
    with pytest.raises(
        UsageError,
        match=r"already holds 2 of these cells \(e\.g\. dbn \[32, 16\] seed 0 labels None\) "
        r"run with other settings \(model\.pretrain_epochs: 1 in the file, 2 here\)"
        r"\. Nothing was run or overwritten; use a new --out",
    ):
        run(_cfg(out, "--dbn.pretrain_epochs", "2"))
    with pytest.raises(UsageError, match=r"other settings \(fine-tuning epochs: 1 in the file, 2 here\)"):
        run(_cfg(out, "--max_epochs", "2"))
    with pytest.raises(UsageError, match=r"4 of these cells.*data\.batch_size: 64 in the file, 32 here"):
        run(_cfg(out, "--data.batch_size", "32"))
    with pytest.raises(UsageError, match=r"he_uniform .*model\.lr: 0\.001 in the file, 0\.01 here"):
        run(_cfg(out, "--baseline.lr", "0.01"))
    assert _snapshot(out) == before


def test_settings_that_change_nothing_are_not_a_change(finished, monkeypatch):
    """A default written out, a speed option, or a min_steps that adds no epoch, leaves the finished cells valid."""
    out, runs = finished
    _no_cell(monkeypatch, "a finished cell was run again")
    # 1,293 digits at batch 64: 21 steps an epoch, so min_steps 20 is within the one epoch run
    assert (
        run(
            _cfg(
                out,
                "--dbn.rbm_weight_decay",
                "0.0002",
                "--baseline.activation",
                "relu",
                "--dbn.steps_per_batch",
                "1",
                "--min_steps",
                "20",
            )
        )
        == runs
    )
    with pytest.raises(UsageError, match=r"fine-tuning epochs: 1 in the file, 2 here"):  # 22 steps need a 2nd epoch
        run(_cfg(out, "--min_steps", "22"))
    with pytest.raises(UsageError, match=r"model\.rbm_weight_decay: 0\.0002 in the file, 0\.001 here"):
        run(_cfg(out, "--dbn.rbm_weight_decay", "0.001"))


@needs_fashion
def test_cells_finished_on_other_data_are_refused(monkeypatch, tmp_path):
    """A rerun of compare_mnist.yaml by mistake on the --out of compare_fashion_mnist.yaml must not report
    Fashion's accuracies as MNIST's (Fashion's files stand in for MNIST's: same layout and shapes)."""

    def cfg(cls):
        return build_parser().parse_args(
            [
                "--data",
                cls,
                "--data.root",
                str(FASHION),
                "--data.download",
                "false",
                "--models",
                "[he_uniform]",
                "--hidden",
                "[[8]]",
                "--seeds",
                "[0]",
                "--max_epochs",
                "1",
                "--out",
                str(tmp_path),
            ]
        )

    monkeypatch.setattr(compare, "run_cell", _stub)
    assert len(run(cfg("dbn_init.FashionMNISTDataModule"))) == 1
    _no_cell(monkeypatch, "a cell ran despite other data")
    with pytest.raises(UsageError, match="other settings"):
        run(cfg("dbn_init.MNISTDataModule"))


# --- pretrained stacks ---------------------------------------------------------------------
def test_label_budgets_share_one_pretrained_stack(tmp_path):
    runs = run(_cfg(tmp_path, "--models", "[dbn]", "--seeds", "[0]", "--labels", "[50, 100]"))
    assert [(r["labels"], r["pretrained_from_cache"]) for r in runs] == [(50, False), (100, True)]
    assert [r["settings"]["data"]["num_labels"] for r in runs] == [50, 100]
    assert runs[0]["pretrain_seconds"] > 0
    assert len(list((tmp_path / "pretrained").glob("*.safetensors"))) == 1


def _cache(out, *args, labels=None):
    """Where the digits DBN cell (hidden [32, 16], seed 0, ``labels``) keeps its stack under ``args``."""
    cfg, cell = _cfg(out, *args), Cell("dbn", "dbn", (32, 16), 0, labels)
    data = compare._datamodule(cfg, labels)
    return compare._stack_cache(out, cell, compare._model(cell, cfg, data), data)


def test_pretrained_stack_cache_is_keyed_by_what_pretraining_depends_on(tmp_path):
    base = _cache(tmp_path)
    assert base.parent == tmp_path / "pretrained" and base.name.startswith("dbn-32-16-seed0-")
    # fine-tuning options, fine-tuning epochs and the label budget: pretraining reads none of them
    assert base == _cache(tmp_path, "--dbn.lr", "0.01", "--dbn.optimizer", "sgd", "--dbn.weight_decay", "0.1")
    assert base == _cache(tmp_path, "--max_epochs", "5", "--min_steps", "1000")
    assert base == _cache(tmp_path, labels=50)
    # steps_per_batch regroups the same CD updates (tested bit for bit): a speed knob, not a setting
    assert base == _cache(tmp_path, "--dbn.steps_per_batch", "1")
    for args in (
        ["--dbn.pretrain_epochs", "2"],
        ["--dbn.pretrain_lr", "0.05"],
        ["--dbn.cd_k", "2"],
        ["--data.binarize", "true"],
        ["--data.batch_size", "32"],
    ):
        assert base != _cache(tmp_path, *args), args


def test_a_corrupt_cached_stack_names_the_file_and_the_fix(finished, tmp_path):
    out = _copy(finished, tmp_path)
    stack = next((out / "pretrained").glob("dbn-32-16-seed0-*.safetensors"))
    stack.write_bytes(stack.read_bytes()[:100])
    # a new label budget reuses the cached stack of (dbn, seed 0), the first cell to run
    with pytest.raises(
        UsageError,
        match=rf"{stack.name}.*this runner's cached pretrained stack: delete "
        rf".*{stack.name} to pretrain it again",
    ):
        run(_cfg(out, "--labels", "[50]"))


def _stack(path, sizes=(64, 32, 16), visible_units="bernoulli", scaling="unit"):
    """An untrained RBM stack of ``sizes`` (input first) saved with :func:`dbn_init.io.save_stack`; returns its path."""
    from dbn_init.io import save_stack
    from dbn_init.rbm import make_rbm

    rbms = [
        make_rbm(n_vis, n_hid, visible_units if i == 0 else "bernoulli")
        for i, (n_vis, n_hid) in enumerate(itertools.pairwise(sizes))
    ]
    return str(save_stack(rbms, path, scaling=scaling))


def _bad_stack(kind, folder):
    """A ``--dbn.pretrained`` file that the digits DBN with hidden [32, 16] cannot start from; returns its path."""
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
        _stack(
            path,
            **{
                "wide": {"sizes": (64, 40)},
                "mnist": {"sizes": (784, 32)},
                "gauss": {"sizes": (64, 32), "visible_units": "gaussian"},
                "std": {"sizes": (64, 32), "scaling": "standardize"},
            }[kind],
        )
    return path


@pytest.mark.parametrize(
    "kind, error, match",
    [
        ("missing", UsageError, r"--dbn.pretrained, the stack dbn .*no such file: .*missing.safetensors"),
        ("notes", ValueError, r"notes.safetensors is not a recognised weights file"),
        ("cut", ValueError, r"cut.safetensors is a truncated or corrupt safetensors file"),
        ("foreign", ValueError, r"(?s)foreign.safetensors.*unexpected tensor names \['foo'\]"),
        ("wide", ValueError, r"(?s)wide.safetensors.*hidden sizes \[40\] do not match hidden=\[32, 16\]"),
        ("mnist", ValueError, r"(?s)mnist.safetensors.*n_visible=784, expected input_size=64"),
        ("gauss", ValueError, r"imported RBM 1 is gaussian"),
        (
            "std",
            ValueError,
            (
                r"the imported stack .*std.safetensors was pretrained on inputs scaled 'standardize' but "
                r"this data is scaled 'unit'.*pass --data.scaling standardize"
            ),
        ),
    ],
)
def test_a_bad_pretrained_stack_is_refused_before_the_first_cell(kind, error, match, monkeypatch, tmp_path):
    """With the DBN row after a baseline, a bad ``--dbn.pretrained`` once let the baseline cells train and be
    saved before the DBN cell failed on the file."""
    stack = _bad_stack(kind, tmp_path)
    _no_cell(monkeypatch)
    with pytest.raises(error, match=match):
        run(_cfg(tmp_path / "out", "--models", "[he_uniform, dbn]", "--dbn.pretrained", str(stack)))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind", ["missing", "std"])
def test_a_bad_pretrained_stack_is_a_one_line_error_naming_the_option(kind, monkeypatch, tmp_path, capsys):
    stack = _bad_stack(kind, tmp_path)
    _no_cell(monkeypatch)
    assert main(_args(tmp_path / "out", "--models", "[he_uniform, dbn]", "--dbn.pretrained", str(stack))) == 2
    err = capsys.readouterr().err
    assert "error: --dbn.pretrained" in err and "dbn with hidden=[32, 16]" in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


def test_a_good_pretrained_stack_passes_the_check(monkeypatch, tmp_path):
    ran = []
    monkeypatch.setattr(compare, "run_cell", lambda cell, *a: ran.append(cell.name) or _stub(cell, *a))
    # a stack shorter than hidden is the bottom of the DBN: accepted, the RBM above it is pretrained on top
    stack = _stack(tmp_path / "bottom.safetensors", (64, 32))
    runs = run(
        _cfg(tmp_path / "out", "--models", "[he_uniform, dbn]", "--dbn.pretrained", stack, "--dbn.recipe", "textbook")
    )
    assert ran == ["he_uniform", "he_uniform", "dbn", "dbn"]
    assert runs[2]["settings"]["model"]["pretrained"] == stack


# --- options: parse time -------------------------------------------------------------------
def test_dbn_options_parse_as_a_mapping_or_one_by_one(tmp_path):
    """``--dbn '{...}'`` (the YAML form of the configs) and ``--dbn.KEY`` set the same DBN arguments, the
    rest keeping DBN's own defaults."""
    one_by_one = _cfg(tmp_path, "--dbn.pretrain_epochs", "2", "--dbn.cd_k", "3")
    mapping = _cfg(tmp_path, "--dbn", "{pretrain_epochs: 2, cd_k: 3}")
    assert one_by_one.dbn == mapping.dbn
    assert (mapping.dbn.pretrain_epochs, mapping.dbn.cd_k, mapping.dbn.pretrain_lr) == (
        2,
        3,
        None,
    )  # None: the recipe's
    assert "pretrain_seed" not in mapping.dbn and "init" not in mapping.baseline  # the cell sets them


@pytest.mark.parametrize(
    "args, match",
    [
        (["--models", "[dbn, glorot]"], r'Parser key "models".*Got value: glorot'),
        (["--dbn", "{pretrain_epoch: 3}"], r"Group 'dbn' does not accept option 'pretrain_epoch'"),
        (
            ["--dbn.pretrain_epochz", "3"],
            r"unrecognized arguments: --dbn.pretrain_epochz 3; did you mean '--dbn.pretrain_epochs'",
        ),
        # the cell sets init (from --models), sizes (from the data and --hidden) and a DBN's pretrain_seed (--seeds)
        (["--baseline", "{init: he_normal}"], r"Group 'baseline' does not accept option 'init'"),
        (["--dbn", "{hidden: [8]}"], r"Group 'dbn' does not accept option 'hidden'"),
        (["--dbn", "{pretrain_seed: 3}"], r"Group 'dbn' does not accept option 'pretrain_seed'"),
        (["--data.batch_sz", "3"], r"Parser key \"data\".*DigitsDataModule.*Option 'batch_sz' is not accepted"),
        (["--extra", "[{name: x, model: glorot, hidden: [8]}]"], r'Parser key "extra".*glorot'),
        (
            ["--extra", "[{name: x, model: dbn, hidden: [8], option: {cd_k: 2}}]"],
            r"Parser key \"extra\".*Option 'option.cd_k' is not accepted",
        ),
        (["--extra", "[{name: x, model: dbn, hidden: [8], options: [2]}]"], r'Parser key "options".*Got value: \[2\]'),
        (["--extra", "[{name: 3, model: dbn, hidden: [8]}]"], r'Parser key "name"'),
    ],
)
def test_unknown_models_and_option_typos_are_refused_at_parse_time(args, match, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        _cfg(tmp_path / "out", *args)
    err = capsys.readouterr().err
    assert info.value.code == 2 and len(err.splitlines()) == 2, err  # the --help tip and the error: no usage block
    assert re.search(match, err, re.S), match
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "args, match",
    [
        (["--max_epochs", "0"], r'Parser key "max_epochs":\s+Not of type PositiveInt: 0'),
        (["--max_epochs", "-1"], r'Parser key "max_epochs":\s+Not of type PositiveInt: -1'),
        (["--min_steps", "-1"], r'Parser key "min_steps":\s+Not of type NonNegativeInt: -1'),
        (["--seeds", "[0, -1]"], r'Parser key "seeds":\s+Not of type Seed: -1 does not conform to restriction v>=0'),
        (["--devices", "0"], r'Parser key "devices":\s+Not of type PositiveInt: 0'),
        (["--labels", "[null, 0]"], r'Parser key "labels".*PositiveInt.*Given value: 0'),
        (["--hidden", "[[32, 0]]"], r'Parser key "hidden".*PositiveInt: 0'),
        (
            ["--extra", "[{name: dbn_tiny, model: dbn, hidden: [0]}]"],
            r'Parser key "hidden":\s+Not of type PositiveInt: 0',
        ),
    ],
)
def test_out_of_range_numbers_are_refused_at_parse_time(args, match, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        _cfg(tmp_path / "out", *args)
    assert info.value.code == 2
    assert re.search(match, capsys.readouterr().err, re.S), match


# --- options: before the first cell --------------------------------------------------------
def _refused(monkeypatch, out, *args, match, error=UsageError):
    """Run with ``args``, expect an ``error`` matching ``match`` before any cell, and nothing in ``out`` changed."""
    _no_cell(monkeypatch)
    before = _snapshot(out)
    with pytest.raises(error, match=match):
        run(_cfg(out, *args))
    assert _snapshot(out) == before


@pytest.mark.parametrize("models", ["[dbn, he_uniform]", "[he_uniform]"])
def test_a_seed_numpy_refuses_is_refused_at_parse_time(models, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(
            ["--data", "dbn_init.DigitsDataModule", "--models", models, "--seeds", "[0, 4294967296]"]
        )
    assert re.search(
        r'Parser key "seeds":\s+Not of type Seed: 4294967296 does not conform to restriction v>=0 and '
        r"v<=4294967295",
        capsys.readouterr().err,
    )


def test_an_unknown_accelerator_is_refused_before_the_first_cell(monkeypatch, tmp_path):
    _refused(monkeypatch, tmp_path / "out", "--accelerator", "tpuz", match=r"--accelerator tpuz")


@pytest.mark.parametrize(
    "args, match",
    [
        (
            ["--models", "[he_uniform, dbn]", "--dbn.cd_k", "0"],
            r"cannot build dbn with hidden=\[32, 16\] from --dbn and the row's options: .*cd_k: expected an integer "
            r"in \[1, inf\), got 0",
        ),
        (["--baseline.lr", "0"], r"cannot build he_uniform with hidden=\[32, 16\] from --baseline.*lr: .*got 0"),
        (
            ["--models", "[he_uniform, dbn]", "--dbn.pretrain_epochs", "[1]"],
            r"pretrain_epochs: expected one number or one per RBM \(--hidden is \[32, 16\]\), got \[1\]",
        ),
        (["--labels", "[null, 5]"], r"expected num_labels an integer >= num_classes \(10\).*got 5"),
        # more labels than digits' 1,293 training images: found by loading the data, still before any cell
        (["--labels", "[null, 100000]"], r"expected at least .* training rows of class 0 for num_labels=100000"),
    ],
)
def test_bad_model_and_data_values_are_refused_before_the_first_cell(args, match, monkeypatch, tmp_path):
    _refused(monkeypatch, tmp_path / "out", *args, match=match, error=ValueError)


def test_a_wrong_number_of_pretrain_epochs_is_a_one_line_error(monkeypatch, tmp_path, capsys):
    _no_cell(monkeypatch)
    assert main(_args(tmp_path / "out", "--dbn.pretrain_epochs", "[1]")) == 2
    assert "error: cannot build dbn with hidden=[32, 16]" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, match",
    [
        (
            ["--extra", "[{name: dbn_tiny, model: dbn, hidden: [8], options: {cd_kk: 2}}]"],
            r"--extra row 'dbn_tiny' \(a DBN\): Option 'cd_kk' is not accepted",
        ),
        (
            ["--extra", "[{name: wide, model: he_uniform, hidden: [8], options: {pretrain_epochs: 3}}]"],
            r"--extra row 'wide' \(a Baseline\): Option 'pretrain_epochs' is not accepted",
        ),
        (
            ["--extra", "[{name: wide, model: he_uniform, hidden: [8], options: {init: normal}}]"],
            r"--extra row 'wide' \(a Baseline\): Option 'init' is not accepted",
        ),
        (
            ["--extra", "[{name: dbn_tiny, model: dbn, hidden: [8], options: {hidden: [4]}}]"],
            r"--extra row 'dbn_tiny' \(a DBN\): Option 'hidden' is not accepted",
        ),
        (
            ["--extra", "[{name: dbn_tiny, model: dbn, hidden: [8], options: {cd_k: 0}}]"],
            r"cannot build dbn_tiny with hidden=\[8\] from --dbn and the row's options: .*cd_k: .*got 0",
        ),
    ],
)
def test_an_extra_rows_bad_option_is_refused_before_any_cell_naming_the_row(args, match, monkeypatch, tmp_path):
    _refused(monkeypatch, tmp_path / "out", *args, match=match)


def _run_extra(tmp_path, rows):
    """Run only the ``--extra`` rows ``rows`` (YAML), one seed."""
    return run(_cfg(tmp_path, "--models", "[]", "--seeds", "[0]", "--extra", rows))


def test_an_extra_row_with_options_of_its_own_runs_with_them(tmp_path):
    runs = _run_extra(
        tmp_path,
        "[{name: dbn_cd2, model: dbn, hidden: [32, 16], options: {cd_k: 2}}, "
        "{name: he_fast, model: he_uniform, hidden: [16], options: {lr: 0.01}}]",
    )
    assert [(r["model"], r["hidden"]) for r in runs] == [("dbn_cd2", [32, 16]), ("he_fast", [16])]
    dbn, he = (r["settings"]["model"] for r in runs)
    assert dbn["cd_k"] == 2 and dbn["pretrain_epochs"] == 1  # the row's own option over --dbn's
    assert he["lr"] == 0.01 and he["init"] == "he_uniform"
    assert [p.name.split("-seed")[0] for p in (tmp_path / "pretrained").glob("*.safetensors")] == ["dbn-32-16"]


@pytest.mark.parametrize(
    "path", sorted([*CONFIGS.glob("compare_*.yaml"), *CONFIGS.glob("search_*.yaml")]), ids=lambda p: p.name
)
def test_shipped_comparison_configs_parse_and_pass_the_plan_checks(path, tmp_path):
    """Each shipped config parses, and _plan builds every cell's data and model without a refusal
    (MNIST's files are absent here: Fashion-MNIST's, of the same layout and shapes, stand in)."""
    offline = []
    if "mnist" in path.name:
        if not (FASHION / "train-images-idx3-ubyte.gz").exists():
            pytest.skip(f"Fashion-MNIST files not found under {FASHION}")
        offline = ["--data.root", str(FASHION), "--data.download", "false"]
    if "image_folder" in path.name:  # the patches its comment says to write first
        from dbn_init.experiments.make_image_folder import write_image_folder

        write_image_folder(tmp_path / "patches")
        offline = ["--data.init_args.dataset.init_args.root", str(tmp_path / "patches")]
    out = tmp_path / "out"
    cfg = build_parser().parse_args(["--config", str(path), *offline, "--out", str(out)])
    assert cfg.models and cfg.hidden and cfg.seeds
    todo, datamodules = compare._plan(cfg, ResultsFile(out / "results.json"), out)
    assert todo == compare.cells(cfg) and set(datamodules) == set(cfg.labels)
    assert not out.exists()


@pytest.mark.parametrize("name", ["results.md", "curves.png", "filters.png", "pretrained"])
def test_foreign_outputs_without_results_json_are_refused(name, monkeypatch, tmp_path):
    foreign = tmp_path / name
    if name == "pretrained":
        foreign.mkdir()
        (foreign / "mine.safetensors").write_text("my own stack")
    else:
        foreign.write_text("my own notes")
    _refused(
        monkeypatch,
        tmp_path,
        error=FileTakenError,
        match=rf"holds \['{name}'\] but no results.json.*move them away or pick another --out",
    )


@pytest.mark.parametrize(
    "args, match",
    [
        (["--seeds", "[0, 0]"], r"--seeds lists \[0\] more than once"),
        (["--models", "[dbn, he_uniform, dbn]"], r"--models lists \['dbn'\] more than once"),
        (["--labels", "[null, 50, null]"], r"--labels lists \[None\] more than once"),
        (["--hidden", "[[32, 16], [32, 16]]"], r"--hidden lists \[\[32, 16\]\] more than once"),
        (
            ["--extra", "[{name: he_uniform, model: dbn, hidden: [8]}]"],
            r"extra row name.*'he_uniform'.*a name of its own",
        ),
        (
            ["--extra", "[{name: big, model: dbn, hidden: [8]}, {name: big, model: normal, hidden: [9]}]"],
            r"extra row name.*'big'",
        ),
        (
            [
                "--extra",
                "[{name: dbn_x, model: dbn, hidden: [8]}, {name: dbn_x, model: dbn, hidden: [9], options: {cd_k: 2}}]",
            ],
            r"extra row name.*'dbn_x'.*with another model or options",
        ),
        (
            ["--extra", "[{name: large, model: dbn, hidden: [8]}, {name: dbn_he, model: he_uniform, hidden: [9]}]"],
            r"extra row name\(s\) \['large', 'dbn_he'\]: a DBN row's name starts with 'dbn'",
        ),
    ],
)
def test_repeated_cells_and_clashing_row_names_are_refused(args, match, monkeypatch, tmp_path):
    _refused(monkeypatch, tmp_path / "out", *args, match=match)


def test_a_data_num_labels_beside_labels_is_refused_with_the_fix(monkeypatch, tmp_path):
    _refused(
        monkeypatch,
        tmp_path / "out",
        "--data.num_labels",
        "50",
        match=r"--data.num_labels is set.*move the value into --labels \(e\.g\. --labels '\[50\]'\)",
    )


@pytest.mark.parametrize(
    "args, why",
    [
        (["--models", "[]"], "no row"),
        (["--seeds", "[]"], "--seeds is empty"),
        (["--labels", "[]"], "--labels is empty"),
    ],
)
def test_an_empty_table_names_what_is_empty(args, why, monkeypatch, tmp_path, capsys):
    _no_cell(monkeypatch)
    assert main(_args(tmp_path / "out", *args)) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"python -m dbn_init.experiments.compare: error: no cells to run: {why}"), err
    assert err.count("\n") == 1, err
    assert "expected at least one seed, one label budget (null = all) and one row" in err
    assert not (tmp_path / "out").exists()


def test_out_that_is_a_file_is_refused(monkeypatch, tmp_path, capsys):
    (tmp_path / "out").write_text("x")
    _refused(monkeypatch, tmp_path / "out", match=r"--out .*out is a file; expected a folder.*pick another --out")
    assert main(_args(tmp_path / "out")) == 2 and "is a file" in capsys.readouterr().err
    assert (tmp_path / "out").read_text() == "x"


# --- results.json ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    ['{"runs": [{"name": "x"}]}', '{"runs": "abc"}', '{"runs": [1]}', "[]", '{"runs": [], "configs": 3}', "not json"],
)
def test_a_malformed_results_json_is_refused_and_kept(text, monkeypatch, tmp_path):
    (tmp_path / "results.json").write_text(text)
    _refused(monkeypatch, tmp_path, match="is not a results file of this runner.*move it away or pick another --out")
    assert (tmp_path / "results.json").read_text() == text


@pytest.mark.parametrize(
    "field, value, what",
    [
        ("test_acc", "0.26", "a number"),
        ("fit_seconds", None, "a number"),
        ("val_curve", [0.5, "0.6"], "a list of numbers"),
        ("hidden", "32-16", "a non-empty list of positive integers"),
        ("seed", 0.5, "an integer"),
        ("labels", "all", r"an integer, or null for all labels"),
        ("epochs", True, "a positive integer or null"),
        ("settings", "epochs 1", "an object"),
    ],
)
def test_a_results_row_with_a_wrong_type_is_refused_before_any_cell(
    field, value, what, finished, monkeypatch, tmp_path
):
    """A hand-edited value (``"test_acc": "0.26"``) once passed the read, let the new cells train, then broke
    the table in statistics and left results.md stale."""
    out = _copy(finished, tmp_path)
    saved = json.loads((out / "results.json").read_text())
    saved["runs"][2][field] = value
    (out / "results.json").write_text(json.dumps(saved))
    model = saved["runs"][2]["model"]
    _refused(
        monkeypatch,
        out,
        "--seeds",
        "[0, 1, 2]",
        match=rf"results.json: runs\[2\] \(model \"{model}\", seed .*\) has \"{field}\": "
        rf"{re.escape(json.dumps(value))}, .*; expected {what}.*Nothing was run or overwritten: "
        r"write the value as .* or delete that row so its cell runs again",
    )


def _row(model, seed):
    return {
        "model": model,
        "hidden": [8],
        "seed": seed,
        "labels": None,
        "test_acc": 0.5,
        "val_curve": [0.5],
        "fit_seconds": 1.0,
        "pretrain_seconds": 0.0,
        "settings": {},
    }


def test_two_results_files_on_one_path_lose_no_row(tmp_path):
    """Two runners on one --out: each save merges, under the lock, what the other saved meanwhile."""
    path = tmp_path / "results.json"
    first, second = ResultsFile(path), ResultsFile(path)  # both read before either saved
    first.runs.append(_row("dbn", 0))
    first.configs.append({"by": "first"})
    first.save()
    second.runs.append(_row("he_uniform", 0))
    second.configs.append({"by": "second"})
    second.save()
    on_disk = ResultsFile(path)
    assert sorted((r["model"], r["seed"]) for r in on_disk.runs) == [("dbn", 0), ("he_uniform", 0)]
    assert sorted(c["by"] for c in on_disk.configs) == ["first", "second"]
    # the first runner's next save keeps the second's row; a cell both saved stays one row, the saver's
    first.runs += [_row("dbn", 1), {**_row("he_uniform", 0), "test_acc": 0.9}]
    first.save()
    rows = json.loads(path.read_text())["runs"]
    assert sorted((r["model"], r["seed"], r["test_acc"]) for r in rows) == [
        ("dbn", 0, 0.5),
        ("dbn", 1, 0.5),
        ("he_uniform", 0, 0.9),
    ]


def test_an_interrupted_first_cell_leaves_a_folder_that_resumes(monkeypatch, tmp_path):
    """results.json is written before the first cell, so its files do not look foreign on the rerun."""

    def crash(cell, cfg, data, out):
        (out / "filters.png").write_bytes(b"half a run")
        raise RuntimeError("killed")

    monkeypatch.setattr(compare, "run_cell", crash)
    with pytest.raises(RuntimeError, match="killed"):
        run(_cfg(tmp_path, "--models", "[dbn]", "--seeds", "[0]"))
    assert json.loads((tmp_path / "results.json").read_text())["runs"] == []
    monkeypatch.setattr(compare, "run_cell", _stub)
    assert len(run(_cfg(tmp_path, "--models", "[dbn]", "--seeds", "[0]"))) == 1


def test_an_abbreviated_option_is_refused_not_taken_for_the_option_it_starts(capsys):
    """argparse would read --dbn.cd as --dbn.cd_k: a typo must be an error, never another setting."""
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--data", "dbn_init.DigitsDataModule", "--dbn.cd", "2"])
    assert "unrecognized arguments: --dbn.cd 2" in capsys.readouterr().err


@pytest.mark.slow
def test_under_two_devices_only_rank_zero_writes_and_prints(tmp_path):
    """--devices 2: Lightning re-runs the command in a second process and both run every cell in
    DDP; the table is printed once, each cell is one row, and the budgets share one stack."""
    import subprocess
    import sys

    out = tmp_path / "out"
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, "-m", "dbn_init.experiments.compare", "--data", "dbn_init.DigitsDataModule",
         "--data.batch_size", "64",
         "--models", "[dbn, he_uniform]", "--hidden", "[[16]]", "--seeds", "[0]", "--labels", "[null, 50]",
         "--max_epochs", "1", "--dbn.pretrain_epochs", "1", "--accelerator", "cpu", "--devices", "2",
         "--out", str(out)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("Test accuracy (%)") == 1
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert sorted((r["model"], r["labels"] or 0) for r in runs) == [("dbn", 0), ("dbn", 50), ("he_uniform", 0),
                                                                     ("he_uniform", 50)]  # fmt: skip
    assert len(list((out / "pretrained").glob("*.safetensors"))) == 1


def test_patience_stops_a_cell_early_and_select_best_scores_the_best_validation_epoch(tmp_path):
    args = ["--models", "[he_uniform]", "--seeds", "[0]", "--max_epochs", "12", "--baseline.lr", "0.02"]
    runs = run(_cfg(tmp_path, *args, "--patience", "2", "--select", "best"))
    (row,) = runs
    curve = row["val_curve"]
    best = curve.index(max(curve))  # the first best check wins ties, as BestEpoch keeps the first
    assert row["epochs"] == 12 and row["epochs_run"] == len(curve) <= 12
    assert row["epochs_run"] == 12 or row["epochs_run"] == best + 1 + 2  # stopped 2 checks after the best
    assert row["selected_epoch"] == best + 1 and row["val_acc"] == max(curve)
    assert row["settings"]["patience"] == 2 and row["settings"]["select"] == "best"
    table = (tmp_path / "results.md").read_text()
    assert f"| he_uniform | {row['epochs_run']} of 12, scored {best + 1:.1f} |" in table


def test_a_search_without_test_reports_validation_only(tmp_path):
    runs = run(_cfg(tmp_path, "--models", "[he_uniform]", "--seeds", "[0]", "--test", "false"))
    assert runs[0]["test_acc"] is None and runs[0]["val_acc"] == runs[0]["val_curve"][-1]
    table = (tmp_path / "results.md").read_text()
    assert "Test accuracy" not in table and table.startswith("Validation accuracy (%) at the tested epoch")
    with pytest.raises(UsageError, match="fine-tuning select: 'last' in the file, 'best' here"):
        run(_cfg(tmp_path, "--models", "[he_uniform]", "--seeds", "[0]", "--test", "false", "--select", "best"))


def test_options_a_results_file_does_not_record_count_as_their_neutral_value_only():
    from dbn_init.runs import differences

    saved = {"model": {"hidden": [16], "cd_k": 1}}
    assert differences(saved, {"model": {"hidden": [16], "cd_k": 1, "hidden_units": "sigmoid", "dropout": 0.0}}) == []
    assert differences(saved, {"model": {"hidden": [16], "cd_k": 1, "hidden_units": "relu"}}) == [
        "model.hidden_units: '(not set)' in the file, 'relu' here"
    ]


def test_rows_that_differ_in_fine_tuning_only_share_one_pretrained_stack(tmp_path):
    runs = _run_extra(
        tmp_path,
        "[{name: dbn_a, model: dbn, hidden: [32, 16]}, "
        "{name: dbn_b, model: dbn, hidden: [32, 16], options: {dropout: 0.3, body_lr_scale: 0.5}}]",
    )
    assert [r["pretrained_from_cache"] for r in runs] == [False, True]
    assert len(list((tmp_path / "pretrained").glob("*.safetensors"))) == 1


def test_one_extra_row_name_may_list_several_shapes(tmp_path):
    cfg = _cfg(
        tmp_path,
        "--models",
        "[]",
        "--extra",
        "[{name: dbn_textbook, model: dbn, hidden: [8], options: {cd_k: 2}}, "
        "{name: dbn_textbook, model: dbn, hidden: [9, 4], options: {cd_k: 2}}]",
    )
    compare._check_row_names(cfg.extra)
    assert {(c.name, c.hidden) for c in compare.cells(cfg)} == {("dbn_textbook", (8,)), ("dbn_textbook", (9, 4))}


def test_a_regression_comparison_stops_selects_and_reports_by_r2(tmp_path):
    """On regression data the runner monitors val_r2 (EarlyStopping, BestEpoch) and its rows and
    tables hold test R² and RMSE instead of accuracy."""
    args = ["--data", "dbn_init.ArrayDataModule", "--data.loader", "sklearn.datasets.load_diabetes",
            "--data.targets", "values", "--models", "[dbn, xavier_uniform]", "--hidden", "[[16]]",
            "--seeds", "[0]", "--max_epochs", "4", "--patience", "2", "--select", "best",
            "--dbn.pretrain_epochs", "1", "--out", str(tmp_path)]  # fmt: skip
    rows = run(build_parser().parse_args(args))
    for row in rows:
        assert "test_acc" not in row and row["test_r2"] < 1 and row["test_rmse"] > 0  # R² < 0: worse than the mean
        assert len(row["val_curve"]) == row["epochs_run"] and row["val_r2"] == max(row["val_curve"])
    table = (tmp_path / "results.md").read_text()
    assert "Test R²" in table and "accuracy" not in table
    assert ResultsFile(tmp_path / "results.json").runs == rows  # and it reads back


def test_a_reconstruction_comparison_stops_selects_and_reports_by_the_lowest_squared_error(tmp_path):
    """With task reconstruction the runner monitors val_sse, lower being better (EarlyStopping,
    BestEpoch, the bold cell), and its rows hold test_sse."""
    args = ["--data", "dbn_init.DigitsDataModule", "--models", "[dbn, xavier_uniform]", "--hidden", "[[16, 4]]",
            "--seeds", "[0]", "--max_epochs", "3", "--patience", "2", "--select", "best",
            "--dbn.task", "reconstruction", "--dbn.hidden_units", "[sigmoid, linear]", "--dbn.pretrain_epochs", "1",
            "--baseline.task", "reconstruction", "--baseline.activation", "[sigmoid, linear]",
            "--out", str(tmp_path)]  # fmt: skip
    rows = run(build_parser().parse_args(args))
    for row in rows:
        assert "test_acc" not in row and 0 < row["test_sse"] < 64
        assert len(row["val_curve"]) == row["epochs_run"] and row["val_sse"] == min(row["val_curve"])
    table = (tmp_path / "results.md").read_text()
    best = min(rows, key=lambda r: r["test_sse"])
    assert f"| {best['model']} | **{best['test_sse']:.3f}" in table and "accuracy" not in table


def test_the_runner_names_its_own_shapes_option_and_the_dbn_s_others():
    from dbn_init.experiments.compare import _flags

    message = _flags(ValueError("match model.hidden, model.visible_units and model.hidden_units"), "dbn")
    assert message == "match --hidden, --dbn.visible_units and --dbn.hidden_units"
