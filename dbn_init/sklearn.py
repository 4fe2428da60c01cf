"""scikit-learn estimators: a DBN's features (:class:`DBNTransformer`), and the whole job, pretraining
then fine-tuning, as a classifier or a regressor (:class:`DBNClassifier`, :class:`DBNRegressor`).

scikit-learn's ``BernoulliRBM`` is one RBM; :class:`DBNTransformer` stacks several, each trained
by :func:`dbn_init.pretrain_stack` (the stage code ``train.py`` runs) on the hidden
activities of the one below, and transforms data to the top RBM's hidden activities::

    Pipeline([("scale", MinMaxScaler(clip=True)), ("dbn", DBNTransformer(hidden=(64, 32))),
              ("clf", LogisticRegression(max_iter=1000))])

The fitted RBMs (``rbms_``) can start a network of one's own: ``dbn_init.load_pretrained_(net,
transformer.rbms_)``, or be exported with its input scaling by ``transformer.save_stack(path)``.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import inspect
from numbers import Integral, Real
from typing import Iterator

import numpy as np
import torch
from sklearn.base import (
    BaseEstimator,
    ClassifierMixin,
    ClassNamePrefixFeaturesOutMixin,
    RegressorMixin,
    TransformerMixin,
    _fit_context,
)
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from .constraints import UsageError
from .data import ArrayDataModule
from .init import INIT_SCHEMES
from .io import save_stack as write_stack
from .models import CLASSIFIER_OPTIONS, DBN, RECIPES, Baseline
from .pretrain import make_trainer, quiet_lightning
from .rbm import up_pass, visible_units_of
from .scaling import Scaling
from .transfer import pretrain_stack

__all__ = ["DBNTransformer", "DBNClassifier", "DBNRegressor"]


class DBNTransformer(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Deep belief network features: a stack of RBMs pretrained greedily, layer by layer.

    RBM 1 models the data; RBM k + 1 models the hidden activities of RBM k (Hinton, Osindero
    & Teh 2006), each trained by contrastive divergence (CD-k, or persistent CD) with momentum
    0.5 then 0.9 and weight decay 2e-4 (Hinton 2010). ``transform`` returns the top RBM's hidden
    activities (max(0, W x + c) for the default NReLU units, p(h_top = 1 | x) for sigmoid
    ones), the features to fit a classifier on, or to start a network
    from and fine-tune (Hinton & Salakhutdinov 2006; :func:`dbn_init.load_pretrained_`).

    Parameters
    ----------
    hidden : int or array-like of int, default=(256,)
        Hidden units of RBM 1, 2, ...: one int per layer (an int alone is one layer).
    recipe : {"relu", "textbook"}, default="relu"
        Where the options left None take their values (:data:`dbn_init.models.RECIPES`, as for
        :class:`dbn_init.DBN`): "relu", the package's default, pretrains noisy rectified linear
        units (Nair & Hinton 2010) at CD rate 0.01 (1e-2 for Gaussian visible units); "textbook"
        sigmoid units at 0.1 (1e-2), as Hinton & Salakhutdinov (2006).
    visible_units : {"bernoulli", "gaussian"} or None, default=None
        RBM 1's visible units: "bernoulli" for X in [0, 1] (put ``MinMaxScaler(clip=True)``
        first), "gaussian" (unit variance) for standardised X (``scaling``). None: "bernoulli" if
        the training X lie in [0, 1], else "gaussian" (``visible_units_``).
    hidden_units : {"sigmoid", "relu"} or None, default=None
        Every RBM's hidden units: Bernoulli, whose features are probabilities, or noisy
        rectified linear units, whose features are max(0, W x + c). None: the recipe's.
    epochs : int or None, default=None
        Passes over X per RBM. CD makes one update per batch, so small data need more epochs.
        None: 10, or on small data the multiple of 10 that makes at least 2,000 CD updates per
        RBM (the DBN's ``pretrain_updates``). With the textbook recipe on digits (1,257 training
        rows, batches of 100), a (64, 32) stack trained 5 epochs gives LogisticRegression 16% test
        accuracy on its features (RBM 2 has barely moved), 20 epochs 93% (``tests/test_sklearn.py``).
    batch_size : int or None, default=None
        Rows per CD update; None: about 50 batches an epoch, of 16 to 100 rows.
    lr : float or None, default=None
        CD learning rate of RBMs with Bernoulli visible units; None: the recipe's.
    gaussian_lr : float or None, default=None
        CD learning rate of a Gaussian RBM 1 (unit-variance Gaussian units diverge at Bernoulli
        rates; Hinton 2010, section 13.2); None: the recipe's. The RBMs above it in a ReLU stack
        learn at the DBN's ``rectified_lr`` (1e-3).
    cd_k : int, default=1
        Gibbs sweeps per CD update.
    persistent : bool, default=False
        Persistent CD (Tieleman 2008): the Gibbs chains carry over between updates; not with NReLU
        hidden units (their chains switch them off): ``hidden_units="sigmoid"``.
    random_state : int, RandomState instance or None, default=0
        Seeds the RBMs' initial weights, the Gibbs sampling noise and the mini-batch order; an
        int is used as the seed itself, so equal ints give equal stacks.
    scaling : {"auto", "standardize", "none"}, default="auto"
        How X is scaled before RBM 1, with the training rows' statistics (``mean_``, ``scale_``):
        "auto" standardises X unless it lies in [0, 1] (kept for Bernoulli visible units) or
        ``visible_units="bernoulli"``; "standardize" always; "none" uses X as given.

    Attributes
    ----------
    visible_units_ : str
        RBM 1's visible units, as given or as chosen for the training X.
    mean_, scale_ : ndarray of shape (n_features_in_,) or None
        The standardisation applied to X (each feature's mean and std, 1 where the std is 0);
        None where X is used as given.
    rbms_ : list of dbn_init.rbm.RBM
        The fitted RBMs, bottom to top, float32; ``rbms_[k].weight`` has shape
        (hidden[k], n_visible_k), like ``nn.Linear``.
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of features seen during fit, when X had string column names.

    See Also
    --------
    sklearn.neural_network.BernoulliRBM : one RBM, trained by persistent CD.
    dbn_init.DBN : the same stack as a Lightning model, fine-tuned as a classifier.

    References
    ----------
    Hinton, Osindero & Teh (2006), "A fast learning algorithm for deep belief nets", Neural Computation.
    Hinton & Salakhutdinov (2006), "Reducing the dimensionality of data with neural networks", Science.
    Hinton (2010), "A practical guide to training restricted Boltzmann machines", UTML TR 2010-003.
    Tieleman (2008), "Training restricted Boltzmann machines using approximations to the likelihood gradient".

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from dbn_init.sklearn import DBNTransformer
    >>> X = load_digits().data / 16
    >>> DBNTransformer(hidden=(64, 32), epochs=5).fit_transform(X).shape  # doctest: +SKIP
    (1797, 32)
    """

    _parameter_constraints: dict = {
        "hidden": ["array-like", Interval(Integral, 1, None, closed="left")],
        "recipe": [StrOptions(set(RECIPES))],
        "visible_units": [StrOptions({"bernoulli", "gaussian"}), None],
        "hidden_units": [StrOptions({"sigmoid", "relu"}), None],
        "epochs": [Interval(Integral, 1, None, closed="left"), None],
        "batch_size": [Interval(Integral, 1, None, closed="left"), None],
        "lr": [Interval(Real, 0, None, closed="neither"), None],
        "gaussian_lr": [Interval(Real, 0, None, closed="neither"), None],
        "cd_k": [Interval(Integral, 1, None, closed="left")],
        "persistent": ["boolean"],
        "random_state": ["random_state"],
        "scaling": [StrOptions({"auto", "standardize", "none"})],
    }

    def __init__(
        self,
        hidden=(256,),
        recipe="relu",
        visible_units=None,
        hidden_units=None,
        epochs=None,
        batch_size=None,
        lr=None,
        gaussian_lr=None,
        cd_k=1,
        persistent=False,
        random_state=0,
        scaling="auto",
    ):
        self.hidden = hidden
        self.recipe = recipe
        self.visible_units = visible_units
        self.hidden_units = hidden_units
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.gaussian_lr = gaussian_lr
        self.cd_k = cd_k
        self.persistent = persistent
        self.random_state = random_state
        self.scaling = scaling

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Pretrain the stack on X, greedily, RBM 1 first.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training rows, of any range (``scaling="auto"`` standardises them unless they lie in [0, 1]).
        y : None
            Ignored; pretraining is unsupervised.

        Returns
        -------
        self : DBNTransformer
        """
        X = validate_data(self, X, dtype=(np.float64, np.float32))
        hidden = _hidden_sizes(self.hidden)
        keep = self.visible_units == "bernoulli" or (X.min() >= 0 and X.max() <= 1)  # what "auto" uses as given
        standardize = self.scaling == "standardize" or (self.scaling == "auto" and not keep)
        std = X.std(0)  # 1 for a constant feature, as scikit-learn's StandardScaler has it
        self.mean_, self.scale_ = (X.mean(0), np.where(std > 0, std, 1.0)) if standardize else (None, None)
        X = self._scaled(X)
        self.visible_units_ = self.visible_units or visible_units_of(torch.tensor(X))  # a copy: X may be read-only
        self._check_range(X)
        # The options pretrain_stack shares by name, with hidden and visible_units as resolved above.
        # pretrain_stack (quiet, on the CPU) seeds the RBMs' start from seed in a forked random state:
        # equal seeds give equal stacks, and the caller's torch random state is left as it was.
        accepted = inspect.signature(pretrain_stack).parameters
        shared = {k: v for k, v in self.get_params().items() if k in accepted}
        shared.update(hidden=hidden, visible_units=self.visible_units_, seed=_seed(self.random_state))
        self.rbms_ = pretrain_stack(np.array(X, dtype=np.float32), **shared)
        self._n_features_out = hidden[-1]
        return self

    def transform(self, X):
        """The top RBM's hidden activities: max(0, W x + c) (NReLU units) or p(h_top = 1 | X) (sigmoid).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Rows like the training rows (scaled as they were, by ``mean_`` and ``scale_``).

        Returns
        -------
        X_new : ndarray of shape (n_samples, hidden[-1]), float64
            Computed in float64 from the float32 weights, so a row's features do not depend on
            which other rows are transformed with it.
        """
        check_is_fitted(self)
        X = self._scaled(validate_data(self, X, dtype=(np.float64, np.float32), reset=False))
        self._check_range(X)
        rbms = [copy.deepcopy(rbm).double() for rbm in self.rbms_]
        with torch.no_grad():
            return up_pass(rbms, torch.tensor(X, dtype=torch.float64)).numpy()

    def save_stack(self, path, overwrite: bool = False):
        """Write the fitted stack as a stack file (:func:`dbn_init.io.save_stack`) that records this
        transformer's input scaling too (``mean_``, ``scale_``), so that ``load_stack(path).scale(X)``
        gives RBM 1 the rows as :meth:`transform` does. Returns the path."""
        check_is_fitted(self)
        if self.mean_ is None:  # X used as given
            return write_stack(self.rbms_, path, scaling="none", overwrite=overwrite)
        stats = Scaling.fit("none", self.n_features_in_).stats()  # the identity, less the standardisation
        stats.update(feature_mean=torch.as_tensor(self.mean_), feature_std=torch.as_tensor(self.scale_))
        return write_stack(self.rbms_, path, scaling="standardize", stats=stats, overwrite=overwrite)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.positive_only = self.visible_units == "bernoulli"  # in fact [0, 1]: no tag says so
        return tags

    def _scaled(self, X: np.ndarray) -> np.ndarray:
        return X if self.mean_ is None else (X - self.mean_) / self.scale_

    # --- validation at the boundary -----------------------------------------------------------
    def _check_range(self, X: np.ndarray) -> None:
        """Bernoulli visible units model probabilities: X must lie in [0, 1]."""
        low, high = float(X.min()), float(X.max())
        if self.visible_units_ == "bernoulli" and (low < 0.0 or high > 1.0):
            negative = "Negative values in data: " if low < 0.0 else ""  # scikit-learn's words for positive_only
            raise ValueError(
                f"{negative}DBNTransformer(visible_units='bernoulli') needs X in [0, 1] (its visible units model "
                f"probabilities), got values in [{low:.4g}, {high:.4g}]; put MinMaxScaler(clip=True) before it in "
                "a Pipeline (clip=True keeps later rows inside [0, 1] too), or use visible_units='gaussian' on "
                "standardised X (StandardScaler)"
            )


def _hidden_sizes(given) -> list[int]:
    """``hidden`` as one positive int per layer (an int alone is one layer)."""
    hidden = [given] if isinstance(given, Integral) else list(np.asarray(given).ravel())
    bad = [h for h in hidden if not isinstance(h, Integral) or isinstance(h, bool) or h < 1]
    if not hidden or bad:
        raise ValueError(f"hidden must list one positive int per layer, e.g. hidden=(256, 64); got {given!r}")
    return [int(h) for h in hidden]


def _seed(random_state) -> int:
    """``random_state`` as one seed: an int as itself, else drawn from the RandomState."""
    if isinstance(random_state, Integral):
        return int(random_state)
    return int(check_random_state(random_state).randint(np.iinfo(np.int32).max))


@contextlib.contextmanager
def _option_names() -> Iterator[None]:
    """A model's refusal in the estimator's words: the models name an option by its place in
    train.py's config (``model.persistent``), an estimator's user by its name (a parameter, or a
    key of ``options``)."""
    try:
        yield
    except UsageError as err:
        from .cli import as_flags  # the CLI's rewording; imported only here, as importing the CLI takes a while

        message = as_flags(str(err), {"model": ""})  # model.lr -> lr; a file model.ckpt stays
        if message == str(err):
            raise
        raise type(err)(message) from err


# The DBN's own options: what its pretraining reads, which a Baseline has no use for.
_PRETRAINING = frozenset(inspect.signature(DBN.__init__).parameters) - CLASSIFIER_OPTIONS - {"self"}
# What ``options`` may not name, and why: the estimator's own parameters and what it and the data decide.
_NOT_OPTIONS = {
    **dict.fromkeys(("hidden", "lr", "init"), "a parameter of the estimator itself"),
    "task": "the estimator's (DBNRegressor fits values)",
    "input_size": "taken from X",
    "num_classes": "taken from y",
}
# What ``options`` may name: an option of either model (a DBN's are left out for a scheme).
_OPTIONS = _PRETRAINING | frozenset(inspect.signature(Baseline.__init__).parameters) - {"self", *_NOT_OPTIONS}


def _why_not_an_option(name: str) -> str:
    """Why ``options`` may not name ``name``: what it is instead, or a close match of the options."""
    if name in _NOT_OPTIONS:
        return f"is {_NOT_OPTIONS[name]}"
    near = difflib.get_close_matches(name, _OPTIONS, n=1)
    return "names no option of dbn_init.DBN or Baseline" + (f" (did you mean {near[0]!r}?)" if near else "")


class _FineTuned(BaseEstimator):
    """What :class:`DBNClassifier` and :class:`DBNRegressor` share: one fit of a :class:`~dbn_init.DBN`
    (``init="dbn"``) or a :class:`~dbn_init.Baseline` (any scheme) on the standardised rows, the
    same fit as ``Trainer(max_epochs=...).fit(model, ArrayDataModule(X, y))``, quiet."""

    _targets = "classes"
    _parameter_constraints: dict = {
        "hidden": ["array-like", Interval(Integral, 1, None, closed="left")],
        "init": [StrOptions({"dbn", *INIT_SCHEMES})],
        "max_epochs": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left"), None],
        "lr": [Interval(Real, 0, None, closed="neither"), None],
        "options": [dict, None],
        "random_state": ["random_state"],
    }

    def __init__(self, hidden=(256, 256), init="dbn", max_epochs=30, batch_size=None, lr=None, options=None,
                 random_state=0):  # fmt: skip
        self.hidden = hidden
        self.init = init
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.options = options
        self.random_state = random_state

    def _fit(self, X, y):
        unknown = sorted(set(self.options or {}) - _OPTIONS)
        if unknown:
            raise ValueError(
                f"options {unknown} of {type(self).__name__} cannot be set there: "
                + "; ".join(f"{name!r} {_why_not_an_option(name)}" for name in unknown)
                + f" (expected some of {sorted(_OPTIONS)})"
            )
        seed, x = _seed(self.random_state), np.asarray(X, dtype=np.float32)
        # Every row trains: no validation split, and one test row spares the module carving a test split.
        data = ArrayDataModule(x, y, x_test=x[:1], y_test=y[:1], targets=self._targets, val_fraction=0.0,
                               batch_size=self.batch_size)  # fmt: skip
        rate = {} if self.lr is None else {"lr": self.lr}  # None: the model's own (3e-3 for the DBN, 1e-3 for a scheme)
        options = dict(hidden=_hidden_sizes(self.hidden), **rate, **(self.options or {}))
        with _option_names(), quiet_lightning(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if self.init == "dbn":
                model = DBN(**{"pretrain_seed": seed, **options})
            else:  # the pretraining options stay with init="dbn", so one grid can search both
                model = Baseline(init=self.init, **{k: v for k, v in options.items() if k not in _PRETRAINING})
            make_trainer(self.max_epochs, dict(accelerator="cpu"), limit_val_batches=0).fit(model, datamodule=data)
        self.scaling_ = data.transform
        self.network_ = copy.deepcopy(model.mlp).double().eval().requires_grad_(False)
        if self._targets == "values":
            self.target_mean_, self.target_std_ = float(model.target_mean), float(model.target_std)
        return self

    def _forward(self, X) -> np.ndarray:
        """The fine-tuned network's output for X, in float64 (a row's output does not depend on
        which other rows it is computed with)."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=(np.float64, np.float32), reset=False)
        with torch.no_grad():
            return self.network_(self.scaling_(np.asarray(X, dtype=np.float32)).double()).numpy()


class DBNClassifier(ClassifierMixin, _FineTuned):
    """A deep belief network classifier: RBMs pretrained greedily, then the MLP fine-tuned with backprop.

    The scikit-learn face of ``Trainer(max_epochs=max_epochs).fit(DBN(hidden), ArrayDataModule(X, y))``:
    X is standardised inside (with the training rows' mean and std), the first RBM has Gaussian
    visible units, and every row of X trains (no validation split). ``init`` picks the start, so
    one grid search compares the DBN with the schemes::

        GridSearchCV(DBNClassifier(), {"init": ["dbn", "xavier_uniform", "he_uniform"]})

    Parameters
    ----------
    hidden : int or array-like of int, default=(256, 256)
        Hidden-layer sizes, bottom to top (RBM 1, 2, ... for ``init="dbn"``).
    init : {"dbn", "xavier_uniform", "xavier_normal", "he_uniform", "he_normal", "normal", "constant"}, default="dbn"
        The start: a pretrained RBM stack (:class:`dbn_init.DBN`) or an initialisation scheme
        (:class:`dbn_init.Baseline`).
    max_epochs : int, default=30
        Fine-tuning epochs (a DBN's pretraining budget is its own: at least 2,000 CD updates per RBM).
    batch_size : int or None, default=None
        Rows per batch; None: about 50 batches an epoch, of 16 to 100 rows.
    lr : float or None, default=None
        Adam's initial fine-tuning rate, decayed along a cosine to 0; None: the model's default
        (3e-3 for a DBN's recipe, 1e-3 for a scheme).
    options : dict or None, default=None
        Any other option of :class:`dbn_init.DBN` or :class:`dbn_init.Baseline`, e.g.
        ``{"dropout": 0.5}`` or ``{"pretrain_updates": 500}``; a DBN's pretraining options are
        left out when ``init`` is a scheme.
    random_state : int, RandomState instance or None, default=0
        Seeds the weights, the sampling noise and the mini-batch order: equal ints, equal models.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The class labels, sorted.
    network_ : dbn_init.mlp.MLP
        The fine-tuned network, float64, in eval mode; it takes standardised rows (``scaling_``).
    n_features_in_, feature_names_in_ :
        As scikit-learn estimators record them.
    """

    def fit(self, X, y):
        """Pretrain (for ``init="dbn"``) and fine-tune on X (n_samples, n_features) and labels y (n_samples,)."""
        self._validate_params()
        X, y = validate_data(self, X, y, dtype=(np.float64, np.float32), ensure_min_samples=2)
        check_classification_targets(y)
        self.classes_, codes = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(
                f"DBNClassifier needs samples of at least 2 classes in y, got 1 class: {self.classes_[0]!r}"
            )
        return self._fit(X, codes)

    def predict_proba(self, X):
        """Class probabilities, ndarray of shape (n_samples, n_classes), columns in ``classes_`` order."""
        return torch.from_numpy(self._forward(X)).softmax(1).numpy()

    def predict(self, X):
        """The most probable class of each row, ndarray of shape (n_samples,)."""
        scores = self._forward(X)  # first: refused before fit
        return self.classes_[scores.argmax(axis=1)]


class DBNRegressor(RegressorMixin, _FineTuned):
    """A deep belief network regressor: RBMs pretrained greedily, then the MLP fine-tuned on the
    mean squared error of the standardised target.

    As :class:`DBNClassifier` (every parameter is the same), with one output: y is standardised
    inside, with the training targets' mean and std, and ``predict`` gives it back in its own units.

    Attributes
    ----------
    target_mean_, target_std_ : float
        The training targets' mean and std (the network predicts ``(y - target_mean_) / target_std_``).
    network_ : dbn_init.mlp.MLP
        The fine-tuned network, float64, in eval mode.
    """

    _targets = "values"

    def fit(self, X, y):
        """Pretrain (for ``init="dbn"``) and fine-tune on X (n_samples, n_features) and targets y (n_samples,)."""
        self._validate_params()
        X, y = validate_data(self, X, y, dtype=(np.float64, np.float32), y_numeric=True, ensure_min_samples=2)
        return self._fit(X, y.astype(np.float32))

    def predict(self, X):
        """The predicted target of each row, ndarray of shape (n_samples,)."""
        return self._forward(X)[:, 0] * self.target_std_ + self.target_mean_
