"""Restricted Boltzmann Machines: energies, conditionals, Gibbs sampling and CD-k/PCD as a loss.

Plain tensor math on ``nn.Module`` parameters; no Lightning here. The Lightning recipe that
trains an RBM lives in :mod:`dbn_init.pretrain`.

Orientation follows ``nn.Linear``: ``weight`` has shape ``(n_hidden, n_visible)``, so the
hidden pre-activation is ``F.linear(v, weight, hidden_bias)`` and an RBM's weight can be copied
into a Linear layer unchanged.

References
----------
Hinton, Osindero & Teh (2006), "A fast learning algorithm for deep belief nets".
Hinton (2010), "A practical guide to training restricted Boltzmann machines", UTML TR 2010-003.
Tieleman (2008), "Training restricted Boltzmann machines using approximations to the likelihood
gradient" (persistent contrastive divergence).
Lee, Ekanadham & Ng (2008), "Sparse deep belief net model for visual area V2" (sparsity target).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["RBM", "GaussianRBM", "CDResult", "make_rbm", "check_visible"]


@dataclass
class CDResult:
    """What one CD-k/PCD step produced.

    ``loss`` is the surrogate ``mean F(v_data) - mean F(v_model)``: its gradient is exactly the
    CD estimate of the negative log-likelihood gradient, so an optimizer (and DDP's gradient
    averaging) can step it like any other loss.
    """

    loss: Tensor  # scalar, differentiable w.r.t. the RBM's parameters
    v_model: Tensor  # (batch, n_visible), end of the Gibbs chain, detached
    hidden_probs: Tensor  # (batch, n_hidden), p(h=1 | v_data), detached
    reconstruction: Tensor  # (batch, n_visible), mean of p(v | h0), the one-step reconstruction


class RBM(nn.Module):
    """Bernoulli-Bernoulli RBM with energy ``E(v, h) = -b'v - c'h - h'Wv``.

    Parameters
    ----------
    n_visible, n_hidden : int
        Layer sizes.
    init_std : float
        Weights start as N(0, init_std^2): small and random, never constant, so hidden units
        break symmetry (Hinton 2010, section 8 recommends 0.01).

    Attributes
    ----------
    weight : Parameter of shape (n_hidden, n_visible)
    visible_bias : Parameter of shape (n_visible,)
    hidden_bias : Parameter of shape (n_hidden,)
    """

    visible_units = "bernoulli"

    def __init__(self, n_visible: int, n_hidden: int, init_std: float = 0.01) -> None:
        super().__init__()
        if n_visible < 1 or n_hidden < 1:
            raise ValueError(f"RBM layer sizes must be positive, got n_visible={n_visible}, n_hidden={n_hidden}")
        self.weight = nn.Parameter(torch.randn(n_hidden, n_visible) * init_std)
        self.visible_bias = nn.Parameter(torch.zeros(n_visible))
        self.hidden_bias = nn.Parameter(torch.zeros(n_hidden))

    @property
    def n_visible(self) -> int:
        return self.weight.shape[1]

    @property
    def n_hidden(self) -> int:
        return self.weight.shape[0]

    def extra_repr(self) -> str:
        return f"n_visible={self.n_visible}, n_hidden={self.n_hidden}, visible_units={self.visible_units}"

    # --- conditionals -------------------------------------------------------------------------
    def hidden_logits(self, v: Tensor) -> Tensor:
        """Hidden pre-activation ``W v + c``: (batch, n_visible) -> (batch, n_hidden)."""
        return F.linear(v, self.weight, self.hidden_bias)

    def hidden_probs(self, v: Tensor) -> Tensor:
        """p(h_j = 1 | v) = sigmoid(W v + c): (batch, n_visible) -> (batch, n_hidden)."""
        return torch.sigmoid(self.hidden_logits(v))

    def visible_mean(self, h: Tensor) -> Tensor:
        """E[v | h] = sigmoid(W'h + b): (batch, n_hidden) -> (batch, n_visible)."""
        return torch.sigmoid(F.linear(h, self.weight.t(), self.visible_bias))

    def sample_hidden(self, v: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Binary sample of h ~ p(h | v), shape (batch, n_hidden)."""
        return torch.bernoulli(self.hidden_probs(v), generator=generator)

    def sample_visible(self, h: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Sample of v ~ p(v | h), shape (batch, n_visible)."""
        return self.sample_from_mean(self.visible_mean(h), generator)

    def sample_from_mean(self, mean: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Sample visible units given their conditional mean E[v | h]: Bernoulli draws here."""
        return torch.bernoulli(mean, generator=generator)

    # --- energies -----------------------------------------------------------------------------
    def energy(self, v: Tensor, h: Tensor) -> Tensor:
        """E(v, h) = -b'v - c'h - h'Wv, per sample: (batch,)."""
        return -(v @ self.visible_bias) - (h @ self.hidden_bias) - (F.linear(v, self.weight) * h).sum(-1)

    def visible_term(self, v: Tensor) -> Tensor:
        """The part of the free energy that does not involve h: -b'v, shape (batch,)."""
        return -(v @ self.visible_bias)

    def free_energy(self, v: Tensor, hidden_logits: Tensor | None = None) -> Tensor:
        """F(v) = -log sum_h exp(-E(v, h)) = -b'v - sum_j softplus((W v + c)_j), shape (batch,).

        ``hidden_logits`` may pass a precomputed ``W v + c`` so that CD needs no extra matmul.
        """
        if hidden_logits is None:
            hidden_logits = self.hidden_logits(v)
        return self.visible_term(v) - F.softplus(hidden_logits).sum(-1)

    # --- sampling -----------------------------------------------------------------------------
    def gibbs_step(self, v: Tensor, generator: torch.Generator | None = None, sample_visible: bool = True) -> Tensor:
        """One block Gibbs sweep v -> h -> v'. With ``sample_visible=False`` v' is the mean."""
        h = self.sample_hidden(v, generator)
        return self.sample_visible(h, generator) if sample_visible else self.visible_mean(h)

    def cd_loss(
        self,
        v_data: Tensor,
        k: int = 1,
        chain: Tensor | None = None,
        generator: torch.Generator | None = None,
        sample_visible: bool = False,
    ) -> CDResult:
        """CD-k (Hinton 2002) or, when ``chain`` is given, PCD-k (Tieleman 2008), as a loss.

        Parameters
        ----------
        v_data : Tensor of shape (batch, n_visible)
        k : int
            Gibbs sweeps in the negative phase.
        chain : Tensor of shape (n_chains, n_visible), optional
            Persistent fantasy particles; the negative phase starts there instead of at the data.
        sample_visible : bool
            Sample the visible units in the chain, or use their mean (Hinton 2010, section 3.2:
            the mean reduces sampling noise). PCD chains always sample, so they stay proper
            Markov chains.

        Notes
        -----
        Five matmuls per step for CD-1, the minimum: ``W v`` of the data is computed once and
        shared by the positive statistics and the first hidden sample, and the negative
        statistics come from the backward pass of ``F(v_model)``.
        """
        data_logits = self.hidden_logits(v_data)  # (B, H), keeps grad for the positive phase
        hidden_probs = torch.sigmoid(data_logits.detach())
        with torch.no_grad():
            if chain is None:
                reconstruction = self.visible_mean(torch.bernoulli(hidden_probs, generator=generator))
                v = self.sample_from_mean(reconstruction, generator) if sample_visible else reconstruction
            else:
                reconstruction = self.visible_mean(torch.bernoulli(hidden_probs, generator=generator))
                v = self.gibbs_step(chain, generator, sample_visible=True)
                sample_visible = True
            for _ in range(k - 1):
                v = self.gibbs_step(v, generator, sample_visible)
        v_model = v.detach()
        loss = self.free_energy(v_data, data_logits).mean() - self.free_energy(v_model).mean()
        return CDResult(loss, v_model, hidden_probs, reconstruction)

    # --- exact quantities for tiny models -----------------------------------------------------
    @torch.no_grad()
    def log_partition_exact(self) -> Tensor:
        """log Z by enumerating every hidden configuration, 2**n_hidden terms (n_hidden <= 20).

        Summing over v analytically: log Z = logsumexp_h [c'h + sum_i log(1 + exp(b_i + (W'h)_i))].
        """
        hidden = _all_binary(self.n_hidden, self.weight)  # (2**H, H)
        visible_logits = F.linear(hidden, self.weight.t(), self.visible_bias)  # (2**H, V)
        return torch.logsumexp(hidden @ self.hidden_bias + F.softplus(visible_logits).sum(-1), dim=0)


class GaussianRBM(RBM):
    """Gaussian-Bernoulli RBM with unit-variance visible units, for standardised real data.

    Energy ``E(v, h) = ||v - b||^2 / 2 - c'h - h'Wv``, so p(v | h) = N(b + W'h, I) and
    ``F(v) = ||v - b||^2 / 2 - sum_j softplus((W v + c)_j)``. The data must be standardised
    (zero mean, unit variance per pixel) for the unit-variance assumption to hold; with it,
    learning rates one to two orders of magnitude below the Bernoulli ones are stable
    (Hinton 2010, section 13.2).
    """

    visible_units = "gaussian"

    def visible_mean(self, h: Tensor) -> Tensor:
        return F.linear(h, self.weight.t(), self.visible_bias)

    def sample_from_mean(self, mean: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return mean + torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)

    def visible_term(self, v: Tensor) -> Tensor:
        return 0.5 * ((v - self.visible_bias) ** 2).sum(-1)

    @torch.no_grad()
    def log_partition_exact(self) -> Tensor:
        """log Z by enumerating the hidden units; each visible integral is Gaussian:
        log Z = logsumexp_h [c'h + ||b + W'h||^2/2 - ||b||^2/2] + (n_visible/2) log(2 pi)."""
        hidden = _all_binary(self.n_hidden, self.weight)
        mean = F.linear(hidden, self.weight.t(), self.visible_bias)  # (2**H, V)
        terms = hidden @ self.hidden_bias + 0.5 * (mean**2).sum(-1) - 0.5 * (self.visible_bias**2).sum()
        return torch.logsumexp(terms, dim=0) + 0.5 * self.n_visible * math.log(2 * math.pi)


def _all_binary(n: int, like: Tensor) -> Tensor:
    if n > 20:
        raise ValueError(f"exact enumeration needs n <= 20 units, got {n}; use AIS for larger models")
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=n)), dtype=like.dtype, device=like.device)


def make_rbm(n_visible: int, n_hidden: int, visible_units: str = "bernoulli", init_std: float = 0.01) -> RBM:
    """Build an RBM by visible unit type name: "bernoulli" or "gaussian"."""
    classes = {"bernoulli": RBM, "gaussian": GaussianRBM}
    if visible_units not in classes:
        raise ValueError(f"visible_units must be one of {sorted(classes)}, got {visible_units!r}")
    return classes[visible_units](n_visible, n_hidden, init_std)


def check_visible(x: Tensor, visible_units: str, where: str = "data") -> None:
    """Validate a data tensor for an RBM's visible layer once, at the boundary.

    Raises ValueError for non-finite values, and for Bernoulli units, values outside [0, 1].
    """
    finite = torch.isfinite(x)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise ValueError(
            f"{where} holds {bad} NaN/Inf value(s); RBM training needs finite inputs. "
            "Clean or impute the data before training."
        )
    if visible_units == "bernoulli" and x.numel():
        lo, hi = float(x.min()), float(x.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(
                f"{where} has values in [{lo:.4g}, {hi:.4g}], but Bernoulli visible units expect "
                "probabilities in [0, 1]. Scale pixels to [0, 1] (--data.scaling unit), or use "
                "Gaussian visible units on standardised data (--model.visible_units gaussian "
                "--data.scaling standardize)."
            )
