"""Log-likelihood of Bernoulli RBMs: annealed importance sampling (AIS) of log Z, and reverse
annealing (RAISE) of log p(v). The command that reports them for a stack file is
``python -m dbn_init.experiments.evaluate``.

``log p(v) = -F(v) - log Z`` needs the partition function Z, a sum over 2**(n_visible + n_hidden)
states. AIS (Neal 2001) estimates it by annealing chains from a base-rate RBM A (zero weights, so
Z_A is known) to the RBM B through the intermediate distributions of Salakhutdinov & Murray (2008),
eq. 16, with the hidden units summed out::

    log p*_k(v) = (1 - beta_k) b_A'v + beta_k b_B'v + sum_j softplus(beta_k (W v + c)_j)

for 0 = beta_0 < ... < beta_K = 1. At beta = 0 the hidden term is n_hidden * log 2, so
``Z_0 = Z_A = 2**n_hidden * prod_i (1 + exp(b_A,i))``; at beta = 1, ``p*_K = exp(-F_B)``. Each chain
starts with an exact sample of p_0, gathers ``log w += log p*_k(v) - log p*_{k-1}(v)`` and moves by
one Gibbs sweep that leaves p_k invariant (h ~ sigmoid(beta_k (W v + c)), then
v ~ sigmoid((1 - beta_k) b_A + beta_k (W'h + b_B))). Then ``log Z_B = log Z_A + log mean(w)``.

The estimate is unbiased in Z, so log Z tends to be underestimated when the chains mix poorly;
averaged log-probabilities computed with it then come out optimistic (Salakhutdinov & Murray 2008,
section 3.2). Compare it with ``RBM.log_partition_exact`` on a model with few hidden units first.

RAISE (Burda, Grosse & Salakhutdinov 2015) bounds from the other side: :func:`raise_log_prob`
runs the same path backwards from each test vector v, so its estimate of log p(v) is, in
expectation, below the log-probability of v under the annealing model (the forward chain's
output distribution, which tends to the RBM as the betas get more). AIS above and RAISE below
then bracket the test log-likelihood.

References
----------
Neal (2001), "Annealed importance sampling", Statistics and Computing 11(2).
Salakhutdinov & Murray (2008), "On the quantitative analysis of deep belief networks", ICML.
Burda, Grosse & Salakhutdinov (2015), "Accurate and conservative estimates of MRF log-likelihood
using reverse annealing", AISTATS.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .constraints import check_count
from .rbm import RBM, bernoulli, check_visible

__all__ = [
    "AISResult",
    "ais_log_partition",
    "raise_log_prob",
    "beta_schedule",
    "base_rate_bias",
    "mean_log_prob",
]

# Salakhutdinov & Murray (2008), section 4.2: 500 betas in [0, 0.5), 4,000 in [0.5, 0.9), 10,000 in
# [0.9, 1]; most steps go where the distributions change fastest, near the target.
_SCHEDULE = ((0.0, 500), (0.5, 4000), (0.9, 10000))


@dataclass
class AISResult:
    """What :func:`ais_log_partition` estimated, in nats.

    ``log_z_low``/``log_z_high`` are ``log(mean(w) -/+ 3 * std(w) / sqrt(n_chains)) + log Z_A``,
    three standard errors of the mean importance weight, as in Salakhutdinov & Murray (2008);
    ``log_z_low`` is ``-inf`` when that lower bound is not positive (weights too spread out).
    """

    log_z: float
    log_z_low: float
    log_z_high: float
    log_weights: Tensor  # (n_chains,), float64: log w of each chain, so that log_z = log Z_A + logmeanexp


def beta_schedule(n_betas: int = 10000) -> Tensor:
    """Inverse temperatures from 0 to 1, shape (n_betas,), float64, both ends included.

    Three linear pieces, [0, 0.5), [0.5, 0.9) and [0.9, 1], holding the paper's proportions
    500 : 4,000 : 10,000 of the points (Salakhutdinov & Murray 2008, section 4.2).
    """
    check_count(n_betas, "n_betas", 4, "the schedule has three pieces; thousands are typical, e.g. 10000")
    total = sum(n for _, n in _SCHEDULE)
    n1, n2 = (max(1, round(n_betas * n / total)) for _, n in _SCHEDULE[:2])
    n3 = n_betas - n1 - n2  # >= 2 for n_betas >= 4, so the last piece ends at exactly 1
    pieces = [
        torch.linspace(0.0, 0.5, n1 + 1, dtype=torch.float64)[:-1],
        torch.linspace(0.5, 0.9, n2 + 1, dtype=torch.float64)[:-1],
        torch.linspace(0.9, 1.0, n3, dtype=torch.float64),
    ]
    return torch.cat(pieces)


def base_rate_bias(data: Tensor) -> Tensor:
    """Visible biases of the base-rate model: the data's marginal log-odds, shape (n_visible,).

    ``p_i = (sum_n v_ni + 1) / (N + 2)`` (smoothed by a pseudo-count of 1, so that pixels that are
    always off get a finite bias) and ``b_A,i = log(p_i / (1 - p_i))``. A base model that already
    matches the marginals makes AIS far more accurate than a uniform one (Salakhutdinov & Murray
    2008, section 4.2). ``data``: (N, n_visible), values in [0, 1].
    """
    if data.ndim != 2 or len(data) == 0:
        raise ValueError(f"expected data of shape (N, n_visible) with N >= 1, got {tuple(data.shape)}")
    check_visible(data, "bernoulli", "data for the base-rate model")
    p = (data.double().sum(0) + 1) / (len(data) + 2)
    # in the data's float dtype; integer or bool data (binary pixels) get the default float dtype
    return torch.logit(p).to(data.dtype if data.is_floating_point() else torch.get_default_dtype())


def _check_bernoulli(rbm: RBM, what: str) -> None:
    """Refuse RBMs whose free energy is not the Bernoulli-Bernoulli one that AIS and RAISE anneal:
    ValueError for hidden units other than sigmoid, NotImplementedError for Gaussian visible units."""
    rbm.refuse_intractable(what)  # AIS and RAISE sum the hidden units out in closed form
    if rbm.visible_units != "bernoulli":
        raise NotImplementedError(
            f"{what}: AIS here covers Bernoulli RBMs only, got {type(rbm).__name__} with {rbm.visible_units} "
            "visible units; for a Gaussian RBM with few hidden units use rbm.log_partition_exact()"
        )


def _check_betas(betas: Tensor | None, n_betas: int) -> list[float]:
    """The inverse temperatures as floats: ``betas`` if given and valid, else :func:`beta_schedule`."""
    betas = beta_schedule(n_betas) if betas is None else torch.as_tensor(betas, dtype=torch.float64, device="cpu")
    if betas.ndim != 1 or len(betas) < 2 or betas[0] != 0 or betas[-1] != 1 or not bool((betas.diff() >= 0).all()):
        raise ValueError(
            f"expected betas a 1-D non-decreasing tensor from exactly 0 to exactly 1, got shape {tuple(betas.shape)}; "
            "or pass n_betas for the default schedule"
        )
    return betas.tolist()


@dataclass
class _Path:
    """The intermediate distributions between the base-rate model A and the RBM B, hidden units summed out::

        log p*_beta(v) = (1 - beta) b_A'v + beta b_B'v + sum_j softplus(beta (W v + c)_j)

    (Salakhutdinov & Murray 2008, eq. 16). Matmuls run in the RBM's dtype, log-ratios in float64.
    """

    weight: Tensor  # (n_hidden, n_visible), W
    hidden_bias: Tensor  # (n_hidden,), c
    visible_bias: Tensor  # (n_visible,), b_B
    base_bias: Tensor  # (n_visible,), b_A

    @classmethod
    def of(cls, rbm: RBM, base_visible_bias: Tensor | None) -> _Path:
        """The path of a checked Bernoulli ``rbm``; validates ``base_visible_bias`` (None: zeros)."""
        weight, b_b, c = rbm.weight.detach(), rbm.visible_bias.detach(), rbm.hidden_bias.detach()
        base = torch.zeros_like(b_b) if base_visible_bias is None else torch.as_tensor(base_visible_bias).detach()
        if base.shape != b_b.shape or not bool(torch.isfinite(base).all()):
            raise ValueError(
                f"expected base_visible_bias a finite tensor of shape ({rbm.n_visible},), got {tuple(base.shape)}; "
                "build it with base_rate_bias(train_x)"
            )
        return cls(weight, c, b_b, base.to(device=b_b.device, dtype=b_b.dtype))

    @property
    def log_z_base(self) -> float:
        """log Z_A = sum_i log(1 + exp(b_A,i)) + n_hidden log 2: the beta = 0 end, in closed form."""
        return float(F.softplus(self.base_bias.double()).sum()) + len(self.hidden_bias) * math.log(2.0)

    def hidden_logits(self, v: Tensor) -> Tensor:
        """W v + c: (batch, n_visible) -> (batch, n_hidden)."""
        return F.linear(v, self.weight, self.hidden_bias)

    def log_ratio(self, v: Tensor, x: Tensor, beta_to: float, beta_from: float) -> Tensor:
        """``log p*_to(v) - log p*_from(v)``, float64 of shape (batch,), for v (batch, n_visible) and
        ``x = hidden_logits(v)``; formed as a difference term by term, not of two large sums."""
        x64 = x.double()
        visible = (beta_to - beta_from) * (v.double() @ (self.visible_bias - self.base_bias).double())
        return visible + (F.softplus(beta_to * x64) - F.softplus(beta_from * x64)).sum(-1)

    def log_unnormalised(self, v: Tensor, x: Tensor) -> Tensor:
        """``log p*_1(v) = -F_B(v)``, float64 of shape (batch,), with ``x = hidden_logits(v)``."""
        return v.double() @ self.visible_bias.double() + F.softplus(x.double()).sum(-1)

    def sweep(self, x: Tensor, beta: float, generator: torch.Generator | None) -> Tensor:
        """One block Gibbs sweep that leaves p_beta invariant, from ``x = hidden_logits(v)``:
        h ~ sigmoid(beta x), then v' ~ sigmoid((1 - beta) b_A + beta (W'h + b_B)), shape (batch, n_visible).
        Reversible with respect to p_beta(v), so it serves as its own reverse transition in RAISE."""
        h = bernoulli(torch.sigmoid(beta * x), generator)
        v_logits = (1 - beta) * self.base_bias + beta * F.linear(h, self.weight.t(), self.visible_bias)
        return bernoulli(torch.sigmoid(v_logits), generator)


@torch.no_grad()
def ais_log_partition(
    rbm: RBM,
    n_chains: int = 100,
    n_betas: int = 10000,
    betas: Tensor | None = None,
    generator: torch.Generator | None = None,
    base_visible_bias: Tensor | None = None,
) -> AISResult:
    """Estimate log Z of a Bernoulli RBM by AIS from a base-rate RBM (Salakhutdinov & Murray 2008).

    Parameters
    ----------
    rbm : RBM with Bernoulli visible and hidden units (``GaussianRBM`` raises ``NotImplementedError``,
        ``hidden_units="relu"`` a ``ValueError``).
    n_chains : int
        Independent annealing runs, vectorised as one batch; at least 2, for the error bar.
    n_betas : int
        Length of the default :func:`beta_schedule`; ignored when ``betas`` is given.
    betas : Tensor of shape (K + 1,), optional
        Own schedule: non-decreasing, from exactly 0 to exactly 1.
    generator : torch.Generator, optional
        Source of every random draw, on the RBM's device.
    base_visible_bias : Tensor of shape (n_visible,), optional
        Visible biases b_A of the base model (zero weights and hidden biases); default zeros
        (uniform). :func:`base_rate_bias` of the training data is much better.

    Returns
    -------
    AISResult with ``log_z = log Z_A + log mean(w)``, its 3-standard-error interval and the
    per-chain log weights (float64). Matmuls run in the RBM's dtype; the log weights are
    accumulated in float64, because they sum K small differences of large numbers.
    """
    _check_bernoulli(rbm, "ais_log_partition")
    check_count(n_chains, "n_chains", 2, "the error bar needs a spread")
    beta = _check_betas(betas, n_betas)
    path = _Path.of(rbm, base_visible_bias)

    v = bernoulli(torch.sigmoid(path.base_bias).expand(n_chains, -1), generator)  # exact draw of p_0
    log_w = torch.zeros(n_chains, dtype=torch.float64, device=path.weight.device)
    for k in range(1, len(beta)):
        x = path.hidden_logits(v)  # (n_chains, n_hidden)
        log_w += path.log_ratio(v, x, beta[k], beta[k - 1])
        if k < len(beta) - 1:
            v = path.sweep(x, beta[k], generator)

    shift = float(log_w.max())
    w = torch.exp(log_w - shift)  # in (0, 1], the largest is 1
    mean, err = float(w.mean()), 3.0 * float(w.std()) / math.sqrt(n_chains)
    offset = path.log_z_base + shift
    low = offset + math.log(mean - err) if mean > err else -math.inf
    return AISResult(offset + math.log(mean), low, offset + math.log(mean + err), log_w.cpu())


def _check_rows(data: Tensor, rbm: RBM, what: str) -> None:
    """``data`` is (N, n_visible), N >= 1, and valid for the RBM's visible units."""
    if data.ndim != 2 or data.shape[1] != rbm.n_visible or len(data) == 0:
        raise ValueError(f"expected {what} of shape (N, {rbm.n_visible}) with N >= 1, got {tuple(data.shape)}")
    check_visible(data, rbm.visible_units, what)


def _raise_log_weights(path: _Path, v: Tensor, beta: list[float], generator: torch.Generator | None) -> Tensor:
    """log w of one reverse chain per row of ``v`` (batch, n_visible), float64 of shape (batch,).

    The chain starts at v_K = v and steps down, v_{k-1} ~ T_k(. | v_k) for k = K, ..., 1 (the
    sweep at beta_k; its first draw is h ~ p(h | v) of the RBM itself), gathering
    ``log w = log p*_K(v) - log Z_0 + sum_{k<K} [log p*_k(v_k) - log p*_{k+1}(v_k)]``, whose
    exponential is unbiased for p_ann(v), the forward chain's probability of ending at v
    (Burda, Grosse & Salakhutdinov 2015; the hidden units summed out, as in forward AIS).
    """
    x = path.hidden_logits(v)  # (batch, n_hidden)
    log_w = path.log_unnormalised(v, x) - path.log_z_base
    for k in range(len(beta) - 1, 0, -1):
        v = path.sweep(x, beta[k], generator)  # v_{k-1}
        x = path.hidden_logits(v)
        log_w += path.log_ratio(v, x, beta[k - 1], beta[k])
    return log_w


@torch.no_grad()
def raise_log_prob(
    rbm: RBM,
    data: Tensor,
    n_betas: int = 10000,
    betas: Tensor | None = None,
    n_chains: int = 1,
    generator: torch.Generator | None = None,
    base_visible_bias: Tensor | None = None,
    batch_size: int = 1000,
) -> Tensor:
    """Conservative estimate of log p(v) for each row of ``data`` by reverse annealing (RAISE).

    RAISE (Burda, Grosse & Salakhutdinov 2015) treats the forward annealing chain of
    :func:`ais_log_partition` (same ``betas``, same base model) as a generative model p_ann:
    v_0 ~ p_0, then one Gibbs sweep at each of beta_1, ..., beta_K. Run backwards from a test
    vector, the sweeps are an importance-sampling proposal for the path that ended at v, so
    ``w`` is unbiased for p_ann(v) and, by Jensen's inequality, ``E[log w] <= log p_ann(v)``: a
    stochastic lower bound, where AIS's ``-F(v) - log Z`` tends to be too high. p_ann tends to the
    RBM as the betas get more; with too few, it fits test data worse than the RBM in practice, so
    the estimate errs low (docs/ais.md).

    Parameters
    ----------
    rbm : RBM with Bernoulli visible and hidden units, as for :func:`ais_log_partition`.
    data : Tensor of shape (N, n_visible), binary (0/1) test vectors.
    n_betas, betas, generator, base_visible_bias
        As for :func:`ais_log_partition`; use the same for both to bracket log p(v).
    n_chains : int
        Reverse chains per row; the estimate is ``log mean_m w_m`` over them (at least 1).
    batch_size : int
        Chains run at once (rows times ``n_chains``); memory is O(batch_size * n_visible).

    Returns
    -------
    Tensor of shape (N,), float64, on the CPU: the estimate of log p(v) per row, in nats.
    Costs K Gibbs sweeps per chain, as many as one AIS chain, for every test vector.
    """
    _check_bernoulli(rbm, "raise_log_prob")
    _check_rows(data, rbm, "data")
    if not bool(((data == 0) | (data == 1)).all()):
        raise ValueError(
            "expected binary data (every value 0 or 1), got values strictly between 0 and 1; RAISE "
            "estimates the probability of binary vectors: binarise the images first (e.g. x > 0.5)"
        )
    check_count(n_chains, "n_chains", 1, "reverse chains per test vector")
    check_count(batch_size, "batch_size", 1, "chains run at once")
    beta = _check_betas(betas, n_betas)
    path = _Path.of(rbm, base_visible_bias)

    out = []
    for chunk in data.split(max(1, batch_size // n_chains)):
        v = chunk.to(device=path.weight.device, dtype=path.weight.dtype).repeat_interleave(n_chains, 0)
        log_w = _raise_log_weights(path, v, beta, generator).view(len(chunk), n_chains)
        out.append((torch.logsumexp(log_w, 1) - math.log(n_chains)).cpu())
    return torch.cat(out)


@torch.no_grad()
def mean_log_prob(rbm: RBM, data: Tensor, log_z: float | Tensor, batch_size: int = 1000) -> float:
    """Average ``log p(v) = -F(v) - log Z`` over ``data`` (N, n_visible), in nats per row.

    ``log_z`` comes from :func:`ais_log_partition` or ``rbm.log_partition_exact()``. Free energies
    are computed in batches of ``batch_size`` rows and summed in float64. For Bernoulli units and
    non-binary rows in [0, 1] this is -F(v) - log Z all the same, but not a normalised probability.
    """
    _check_rows(data, rbm, "data")
    total = sum(float(rbm.free_energy(chunk.to(rbm.weight)).double().sum()) for chunk in data.split(batch_size))
    return -total / len(data) - float(log_z)
