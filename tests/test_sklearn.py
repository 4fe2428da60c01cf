"""DBNTransformer: a greedy RBM stack as a scikit-learn transformer, on sklearn digits_split."""

import logging
import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, MinMaxScaler
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.estimator_checks import check_estimator
from torch import nn

from dbn_init.io import load_stack, save_stack
from dbn_init.rbm import RBM, up_pass
from dbn_init.sklearn import DBNClassifier, DBNRegressor, DBNTransformer
from dbn_init.transfer import load_pretrained_

# Every check that feeds data outside [0, 1] (scikit-learn's generated X spans about [0, 9]),
# which Bernoulli visible units refuse by design; the same checks pass behind MinMaxScaler(clip=True)
# and with Gaussian visible units (below).
OUTSIDE_UNIT_INTERVAL = "feeds X outside [0, 1], which Bernoulli visible units refuse (fix: MinMaxScaler(clip=True))"
BERNOULLI_CANNOT_APPLY = {
    name: OUTSIDE_UNIT_INTERVAL
    for name in [
        "check_dict_unchanged",
        "check_dont_overwrite_parameters",
        "check_estimators_dtypes",
        "check_estimators_fit_returns_self",
        "check_estimators_overwrite_params",
        "check_estimators_pickle",
        "check_f_contiguous_array_estimator",
        "check_fit2d_1feature",
        "check_fit2d_1sample",
        "check_fit2d_predict1d",
        "check_fit_check_is_fitted",
        "check_fit_idempotent",
        "check_methods_sample_order_invariance",
        "check_methods_subset_invariance",
        "check_n_features_in",
        "check_n_features_in_after_fitting",
        "check_pipeline_consistency",
        "check_readonly_memmap_input",
        "check_transformer_data_not_an_array",
        "check_transformer_general",
        "check_transformer_preserve_dtypes",
    ]
}
# Pipeline's own fit rebuilds its `steps` (a Pipeline trait, whatever its steps are).
PIPELINE_CANNOT_APPLY = {
    name: "Pipeline.fit replaces its steps parameter with fitted clones, a Pipeline trait"
    for name in ["check_dont_overwrite_parameters", "check_estimators_overwrite_params"]
}


def tiny(**options) -> DBNTransformer:
    return DBNTransformer(hidden=(4,), epochs=1, **options)


def run_checks(estimator, expected_failed: dict[str, str] | None = None, because: str | None = None) -> list[dict]:
    results = check_estimator(estimator, expected_failed_checks=expected_failed, on_fail=None, on_skip=None)
    failed = {r["check_name"]: repr(r["exception"])[:300] for r in results if r["status"] == "failed"}
    assert not failed, failed
    for r in results:
        if r["status"] == "xfail" and because is not None:  # failed, and for the reason given
            assert because in str(r["exception"]), (r["check_name"], r["exception"])
    passed = {r["check_name"] for r in results if r["status"] == "passed"}
    assert len(passed) >= 20, passed
    return results


def test_check_estimator_gaussian_visible_units():
    """With Gaussian visible units any real X is valid data: every check applies, every check passes."""
    results = run_checks(tiny(visible_units="gaussian"))
    assert not [r for r in results if r["status"] == "xfail"]


def test_check_estimator_defaults_take_any_x_and_pass_every_check():
    """With its defaults the transformer chooses RBM 1's units for the data it is given (Gaussian
    for X outside [0, 1]): every check applies, every check passes."""
    results = run_checks(tiny())
    assert not [r for r in results if r["status"] == "xfail"]


def test_the_defaults_standardise_x_outside_the_unit_interval_and_keep_x_inside_it(digits_split):
    x_train, x_test, _, _ = digits_split  # pixels 0..16
    raw = DBNTransformer(hidden=(8,), epochs=1).fit(x_train)
    np.testing.assert_allclose(raw.mean_, x_train.mean(0))
    assert raw.visible_units_ == "gaussian" and (raw.scale_ > 0).all()
    by_hand = DBNTransformer(hidden=(8,), epochs=1, scaling="none").fit((x_train - raw.mean_) / raw.scale_)
    np.testing.assert_array_equal(raw.transform(x_test), by_hand.transform((x_test - raw.mean_) / raw.scale_))
    unit = DBNTransformer(hidden=(8,), epochs=1).fit(x_train / 16)
    assert unit.mean_ is None and unit.visible_units_ == "bernoulli"


def test_check_estimator_bernoulli_alone():
    results = run_checks(tiny(visible_units="bernoulli"), BERNOULLI_CANNOT_APPLY, because="needs X in [0, 1]")
    assert {r["check_name"] for r in results if r["status"] == "xfail"} == set(BERNOULLI_CANNOT_APPLY)
    # among those that apply: the positive_only tag's check, which feeds negative values
    assert {"check_positive_only_tag_during_fit", "check_estimators_nan_inf"} <= {
        r["check_name"] for r in results if r["status"] == "passed"
    }


def test_check_estimator_bernoulli_behind_min_max_scaler():
    """The data checks that Bernoulli units cannot take alone, on [0, 1] data (a two-RBM stack)."""
    pipeline = make_pipeline(MinMaxScaler(clip=True), DBNTransformer(hidden=(4, 3), epochs=1))
    run_checks(pipeline, PIPELINE_CANNOT_APPLY)


def random_sigmoid_features(widths=(64, 32), seed: int = 0) -> FunctionTransformer:
    """The same architecture untrained: sigmoid layers from Xavier-uniform weights, zero biases."""
    rng = np.random.default_rng(seed)
    sizes = [64, *widths]
    weights = [
        rng.uniform(-1, 1, (n_in, n_out)) * np.sqrt(6 / (n_in + n_out))
        for n_in, n_out in zip(sizes, sizes[1:], strict=False)
    ]

    def features(x):
        for w in weights:
            x = 1 / (1 + np.exp(-x @ w))
        return x

    return FunctionTransformer(features)


def test_pipeline_fits_and_scores_on_digits(digits_split):
    x_train, x_test, y_train, y_test = digits_split

    def score(features) -> float:
        steps = [("scale", MinMaxScaler(clip=True)), ("features", features), ("clf", LogisticRegression(max_iter=1000))]
        return Pipeline(steps).fit(x_train, y_train).score(x_test, y_test)

    # The textbook recipe (sigmoid units, rate 0.1), batches of 100.
    # Measured on this split: 0.935, 0.941, 0.930 for random_state 0, 1, 2 (20 epochs of 13 CD
    # updates each; 5 epochs leave RBM 2 nearly untrained, at 0.16). The same 64-64-32 sigmoid
    # stack untrained from Xavier weights: 0.787, 0.730, 0.783 for seeds 0, 1, 2.
    dbn = score(DBNTransformer(hidden=(64, 32), recipe="textbook", epochs=20, batch_size=100))
    untrained = score(random_sigmoid_features())
    assert dbn > 0.9, dbn
    assert dbn >= untrained + 0.1, (dbn, untrained)


def test_transform_shape_dtype_and_feature_names(digits_split):
    x_train, x_test, _, _ = digits_split
    transformer = DBNTransformer(hidden=(16, 8), epochs=2, hidden_units="sigmoid").fit(x_train / 16)
    assert transformer.visible_units_ == "bernoulli"  # chosen for X in [0, 1]
    out = transformer.transform(x_test / 16)
    assert out.shape == (len(x_test), 8) and out.dtype == np.float64
    assert ((out > 0) & (out < 1)).all()
    assert [r.weight.shape for r in transformer.rbms_] == [(16, 64), (8, 16)]
    assert all(isinstance(r, RBM) for r in transformer.rbms_) and transformer.n_features_in_ == 64
    assert list(transformer.get_feature_names_out()) == [f"dbntransformer{i}" for i in range(8)]
    # its rows do not depend on the rows transformed with them
    assert np.array_equal(transformer.transform(x_test[:7] / 16), out[:7])


def test_rbms_start_a_torch_network_that_computes_the_same_features(digits_split):
    x_train, x_test, _, _ = digits_split
    transformer = DBNTransformer(hidden=(16, 8), epochs=2, hidden_units="sigmoid").fit(x_train / 16)
    net = nn.Sequential(nn.Linear(64, 16), nn.Sigmoid(), nn.Linear(16, 8), nn.Sigmoid(), nn.Linear(8, 10))
    load_pretrained_(net, transformer.rbms_)
    with torch.no_grad():
        out = net[:4](torch.tensor(x_test / 16, dtype=torch.float32))
    np.testing.assert_allclose(out.double().numpy(), transformer.transform(x_test / 16), atol=1e-6, rtol=0)


def test_a_saved_stack_carries_the_transformers_scaling_and_reproduces_its_features(digits_split, tmp_path):
    x_train, x_test, _, _ = digits_split  # pixels 0..16: standardised inside
    transformer = DBNTransformer(hidden=(8,), epochs=1).fit(x_train)
    stack = load_stack(transformer.save_stack(tmp_path / "t.safetensors"))
    assert stack.scaling == "standardize" and stack.rbms[0].visible_units == "gaussian"
    with torch.no_grad():
        out = up_pass(stack.rbms, stack.scale(x_test)).double().numpy()
    np.testing.assert_allclose(out, transformer.transform(x_test), atol=1e-4, rtol=1e-4)
    # saved bare, a Gaussian stack records the scaling its units model, not "unit"
    assert load_stack(save_stack(transformer.rbms_, tmp_path / "bare.safetensors")).scaling == "standardize"
    # rows used as given: recorded as "none", and read back as given
    pixels = np.array(x_train / 16)
    pixels.setflags(write=False)  # pandas hands read-only arrays: no torch warning about them
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        unit = DBNTransformer(hidden=(8,), epochs=1).fit(pixels)
    assert not [w for w in caught if "not writable" in str(w.message)]
    stack = load_stack(unit.save_stack(tmp_path / "u.safetensors"))
    assert stack.scaling == "none" and torch.equal(stack.scale(x_test / 16), torch.tensor(x_test / 16).float())


def test_same_random_state_same_stack_and_torch_rng_untouched(digits_split):
    x = digits_split[0] / 16
    state = torch.random.get_rng_state()
    a = DBNTransformer(hidden=(8,), epochs=2, random_state=3).fit_transform(x)
    assert torch.equal(torch.random.get_rng_state(), state)
    torch.manual_seed(12345)  # the caller's torch seed plays no part
    b = DBNTransformer(hidden=(8,), epochs=2, random_state=3).fit_transform(x)
    c = DBNTransformer(hidden=(8,), epochs=2, random_state=4).fit_transform(x)
    assert np.array_equal(a, b)
    assert not np.allclose(a, c, atol=1e-3)
    d = DBNTransformer(hidden=(8,), epochs=2, random_state=np.random.RandomState(0)).fit_transform(x)
    assert d.shape == a.shape


def test_get_params_set_params_clone_round_trip(digits_split):
    transformer = DBNTransformer(
        hidden=(32, 16),
        recipe="textbook",
        visible_units="gaussian",
        hidden_units="sigmoid",
        epochs=3,
        batch_size=50,
        lr=0.05,
        gaussian_lr=1e-3,
        cd_k=2,
        persistent=True,
        random_state=7,
        scaling="none",
    )
    params = transformer.get_params()
    assert params == dict(
        hidden=(32, 16),
        recipe="textbook",
        visible_units="gaussian",
        hidden_units="sigmoid",
        epochs=3,
        batch_size=50,
        lr=0.05,
        gaussian_lr=1e-3,
        cd_k=2,
        persistent=True,
        random_state=7,
        scaling="none",
    )
    copy = clone(transformer)
    assert copy is not transformer and copy.get_params() == params
    assert copy.set_params(hidden=(8,), epochs=1) is copy
    assert copy.get_params()["hidden"] == (8,) and transformer.get_params()["hidden"] == (32, 16)
    pipeline = Pipeline([("dbn", DBNTransformer()), ("clf", LogisticRegression())])
    pipeline.set_params(dbn__hidden=(12,), dbn__epochs=1)
    assert pipeline.get_params()["dbn__hidden"] == (12,)
    fitted = clone(pipeline).fit(digits_split[0] / 16, digits_split[2])
    assert fitted.named_steps["dbn"].rbms_[0].n_hidden == 12
    assert not hasattr(pipeline.named_steps["dbn"], "rbms_")  # clone fitted a copy


def test_bernoulli_refuses_x_outside_unit_interval_naming_min_max_scaler(digits_split):
    x_train, x_test, _, _ = digits_split
    with pytest.raises(
        ValueError,
        match=r"needs X in \[0, 1\] .* got values in \[0, 16\]; put "
        r"MinMaxScaler\(clip=True\) before it",
    ):
        tiny(visible_units="bernoulli").fit(x_train)
    transformer = tiny().fit(x_train / 16)  # Bernoulli, chosen for X in [0, 1]
    with pytest.raises(ValueError, match=r"got values in \[0, 16\]"):
        transformer.transform(x_test)  # not scaled as the training rows were
    mean, std = x_train.mean(0), x_train.std(0) + 1e-9  # Gaussian units take any real X, standardised
    standardised = tiny(visible_units="gaussian").fit((x_train - mean) / std)
    assert standardised.transform((x_test - mean) / std).shape == (len(x_test), 4)


def test_parameters_validated_at_fit(digits_split):
    x = digits_split[0][:50] / 16
    with pytest.raises(InvalidParameterError, match="'visible_units' parameter of DBNTransformer must be"):
        tiny(visible_units="binary").fit(x)
    with pytest.raises(InvalidParameterError, match="'cd_k' parameter"):
        tiny(cd_k=0).fit(x)
    with pytest.raises(ValueError, match=r"hidden must list one positive int per layer, e.g. hidden=\(256, 64\); got"):
        DBNTransformer(hidden=(8, 0), epochs=1).fit(x)
    assert DBNTransformer(hidden=5, epochs=1).fit(x).transform(x).shape == (50, 5)


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_fit_is_quiet_and_restores_lightning_loggers(digits_split):
    # Lightning's loggers print through their own stderr handlers and do not propagate: listen there.
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    original = [logger.level for logger in loggers]
    collect = Collect()
    for logger in loggers:  # INFO, as a fresh process has it (another test's compare.main may have raised it)
        logger.addHandler(collect)
        logger.setLevel(logging.INFO)
    levels = [logger.level for logger in loggers]
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            tiny().fit(digits_split[0][:100] / 16)
            logging.getLogger("lightning.pytorch").info("after the fit")
            after = [logger.level for logger in loggers]
    finally:
        for logger, level in zip(loggers, original):
            logger.removeHandler(collect)
            logger.setLevel(level)
    assert collect.messages == ["after the fit"]  # nothing from the fit; the level is back to INFO
    assert after == levels
    assert [str(w.message) for w in caught] == []


# Small enough for the checks to run in seconds: the checks test the estimator's contract, not the recipe
# (the defaults score 0.94 on the 300 standardised blobs that check_classifiers_train fits, in 6 s).
SMALL = dict(hidden=(16,), max_epochs=4, lr=1e-2, options={"pretrain_updates": 40})


@pytest.mark.parametrize("estimator", [DBNClassifier(**SMALL), DBNRegressor(**SMALL)])
def test_check_estimator_passes_for_the_fine_tuned_estimators(estimator):
    results = check_estimator(estimator, on_fail=None, on_skip=None)
    failed = {r["check_name"]: repr(r["exception"])[:300] for r in results if r["status"] == "failed"}
    skipped = {r["check_name"] for r in results if r["status"] == "skipped"}
    assert not failed, failed
    assert skipped <= {"check_array_api_input"}, skipped  # needs SCIPY_ARRAY_API set
    assert sum(r["status"] == "passed" for r in results) >= 50


def test_classifier_keeps_any_labels_and_a_grid_search_compares_starts(digits_split):
    x_train, x_test, y_train, y_test = digits_split
    names = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])
    search = GridSearchCV(DBNClassifier(**SMALL), {"init": ["dbn", "xavier_uniform"]}, cv=2)
    search.fit(x_train, names[y_train])
    assert list(search.best_estimator_.classes_) == sorted(names)
    assert search.score(x_test, names[y_test]) > 0.9
    p = search.predict_proba(x_test[:5])
    np.testing.assert_allclose(p.sum(1), 1.0, rtol=1e-12)
    assert (search.classes_[p.argmax(1)] == search.predict(x_test[:5])).all()


def test_a_model_s_refusal_names_the_estimator_s_options_plainly(digits_split, tmp_path):
    x, y = digits_split[0][:50], digits_split[2][:50]
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors"):  # a file's name is not an option's
        DBNClassifier(**{**SMALL, "options": {"pretrained": str(tmp_path / "model.safetensors")}}).fit(x, y)
    with pytest.raises(ValueError, match=r"^DBN: persistent: persistent chains .*; set hidden_units sigmoid") as err:
        DBNClassifier(**{**SMALL, "options": {"persistent": True}}).fit(x, y)
    assert "model." not in str(err.value)
    with pytest.raises(ValueError, match=r"^pretrain_stack: persistent: .*, or persistent false$"):
        DBNTransformer(hidden=(8,), persistent=True, epochs=1).fit(x / 16)
    for init in ("dbn", "he_uniform"):  # a misspelt key, whichever model would take it
        with pytest.raises(ValueError, match=r"options \['dropuot'\] of DBNClassifier .*did you mean 'dropout'"):
            DBNClassifier(**{**SMALL, "init": init, "options": {"dropuot": 0.5}}).fit(x, y)
    refusal = (r"options \['hidden', 'task'\] of DBNClassifier cannot be set there: 'hidden' is a parameter of the "
               r"estimator itself; 'task' is the estimator's \(DBNRegressor fits values")  # fmt: skip
    with pytest.raises(ValueError, match=refusal):
        DBNClassifier(**{**SMALL, "options": {"hidden": [4], "task": "regression"}}).fit(x, y)
