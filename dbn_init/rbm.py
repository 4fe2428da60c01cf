"""Restricted Boltzmann Machines: energies, conditionals, Gibbs sampling and CD-k/PCD as a loss
or as its gradient written directly.

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
Besag (1975), "Statistical analysis of non-lattice data" (pseudo-likelihood).
Nair & Hinton (2010), "Rectified linear units improve restricted Boltzmann machines" (NReLU units).
Desjardins, Courville, Bengio, Vincent & Delalleau (2010), "Tempered Markov chain Monte Carlo for
training of restricted Boltzmann machines" (parallel tempering).
Melchior, Fischer & Wiskott (2016), "How to center deep Boltzmann machines", JMLR 17 (centring).
"""

from __future__ import annotations

import contextlib
import itertools
import math
import warnings
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .constraints import UsageError, check_count

__all__ = [
    "RBM",
    "GaussianRBM",
    "CDResult",
    "HIDDEN_UNITS",
    "bernoulli",
    "make_rbm",
    "make_stack",
    "stack_units",
    "per_rbm",
    "check_visible",
    "up_pass",
    "down_pass",
]

# Bernoulli units, noisy rectified linear units (NReLU), or linear units with unit-variance Gaussian noise
HIDDEN_UNITS = ("sigmoid", "relu", "linear")


def bernoulli(probs: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Binary sample with P(1) = ``probs``, same shape and dtype: a uniform draw u and ``u < probs``.

    The law of ``torch.bernoulli``, at about half its cost on CPU (one vectorised uniform fill
    and an in-place comparison; 0.55 ms vs 1.1 ms for a 128 x 512 batch here). The uniforms are
    float32 at least, so half-precision probabilities (from autocast) are not compared against
    uniforms of 8 or 11 bits, which would round the law to steps of 1/256 or 1/2048.
    """
    u = torch.empty(probs.shape, dtype=torch.promote_types(probs.dtype, torch.float32), device=probs.device)
    return u.uniform_(generator=generator).lt_(probs).to(probs.dtype)


@dataclass
class CDResult:
    """What one CD-k/PCD step produced.

    ``loss`` is the surrogate ``mean F(v_data) - mean F(v_model)``: its gradient is exactly the
    CD estimate of the negative log-likelihood gradient, so an optimizer (and DDP's gradient
    averaging) can step it like any other loss.
    """

    loss: Tensor  # scalar, differentiable w.r.t. the RBM's parameters
    v_model: Tensor  # (batch, n_visible) or, for PCD, (n_chains, n_visible): end of the Gibbs chain, detached
    hidden_probs: Tensor  # (batch, n_hidden), p(h=1 | v_data), detached
    reconstruction: Tensor  # (batch, n_visible), mean of p(v | h0), the one-step reconstruction


@dataclass
class _CDPhases:
    """The positive and negative phase of one CD/PCD step, before any gradient is formed."""

    gap: Tensor  # scalar: mean F(v_data) - mean F(v_model), or NaN when not asked for
    v_data: Tensor  # (batch, n_visible)
    hidden_probs: Tensor  # (batch, n_hidden), p(h | v_data)
    v_model: Tensor  # (n_chains, n_visible), end of the Gibbs chain
    model_probs: Tensor  # (n_chains, n_hidden), p(h | v_model)
    reconstruction: Tensor  # (batch, n_visible)

    @property
    def factors(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """What the CD gradient is formed from (:func:`_cd_gradients`)."""
        return self.v_data, self.hidden_probs, self.v_model, self.model_probs


class RBM(nn.Module):
    """Bernoulli-Bernoulli RBM with energy ``E(v, h) = -b'v - c'h - h'Wv``.

    Parameters
    ----------
    n_visible, n_hidden : int
        Layer sizes, positive (checked where a model's options are).
    init_std : float
        Weights start as N(0, init_std^2): small and random, never constant, so hidden units
        break symmetry (Hinton 2010, section 8 recommends 0.01).
    hidden_units : "sigmoid", "relu" or "linear"
        Bernoulli hidden units, p(h_j = 1 | v) = sigmoid(x_j) with ``x = W v + c``; noisy
        rectified linear units (Nair & Hinton 2010): h_j = max(0, x_j + e), e ~ N(0, sigmoid(x_j)),
        whose mean is taken as max(0, x_j), so the stack transfers into a ReLU network; or linear
        units h_j = x_j + e, e ~ N(0, 1), the code layer of Hinton & Salakhutdinov's (2006) deep
        autoencoder. The free energy, log Z, pseudo-likelihood, AIS and parallel tempering are
        defined here for sigmoid units only and refuse the others.

    Attributes
    ----------
    weight : Parameter of shape (n_hidden, n_visible)
    visible_bias : Parameter of shape (n_visible,)
    hidden_bias : Parameter of shape (n_hidden,)
    input_scale : buffer, a scalar (1 unless set)
        What a stack multiplies this RBM's input by (:func:`up_pass`): the
        unit-variance visible units of an RBM above NReLU units see those activities scaled to
        at most unit mean square. A layer started from the RBM takes ``weight * input_scale``
        (:attr:`linear_weight`); a stack's down pass divides by it.
    """

    visible_units = "bernoulli"

    def __init__(self, n_visible: int, n_hidden: int, init_std: float = 0.01, hidden_units: str = "sigmoid") -> None:
        super().__init__()
        if hidden_units not in HIDDEN_UNITS:
            raise ValueError(f"hidden_units must be one of {list(HIDDEN_UNITS)}, got {hidden_units!r}")
        self.hidden_units = hidden_units
        self.weight = nn.Parameter(torch.randn(n_hidden, n_visible) * init_std)
        self.visible_bias = nn.Parameter(torch.zeros(n_visible))
        self.hidden_bias = nn.Parameter(torch.zeros(n_hidden))
        self.register_buffer("input_scale", torch.ones(()))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        state_dict.setdefault(prefix + "input_scale", torch.ones(()))  # a stack saved without scales
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def linear_weight(self) -> Tensor:
        """The weight of the ``nn.Linear`` that maps this RBM's unscaled input to its hidden
        pre-activation: ``weight * input_scale``, (n_hidden, n_visible)."""
        return self.weight * self.input_scale

    @property
    def n_visible(self) -> int:
        return self.weight.shape[1]

    @property
    def n_hidden(self) -> int:
        return self.weight.shape[0]

    @property
    def tractable(self) -> bool:
        """Whether the free energy is known in closed form (sigmoid hidden units), and with it
        log Z, pseudo-likelihood, AIS and parallel tempering."""
        return self.hidden_units == "sigmoid"

    def extra_repr(self) -> str:
        return (
            f"n_visible={self.n_visible}, n_hidden={self.n_hidden}, visible_units={self.visible_units}, "
            f"hidden_units={self.hidden_units}"
        )

    def refuse_intractable(self, what: str) -> None:
        """Raise ValueError naming ``what`` if this RBM's hidden units have no tractable free energy."""
        if not self.tractable:
            raise ValueError(
                f"{what} needs the free energy of sigmoid hidden units, and this RBM's are {self.hidden_units}; "
                "use sigmoid hidden units (model.hidden_units sigmoid), or judge this RBM by its reconstruction "
                "error and by fine-tuning"
            )

    # --- conditionals -------------------------------------------------------------------------
    def hidden_logits(self, v: Tensor) -> Tensor:
        """Hidden pre-activation ``W v + c``: (batch, n_visible) -> (batch, n_hidden)."""
        return F.linear(v, self.weight, self.hidden_bias)

    def hidden_probs(self, v: Tensor) -> Tensor:
        """p(h_j = 1 | v) = sigmoid(W v + c) of Bernoulli hidden units: (batch, n_visible) -> (batch, n_hidden)."""
        return self.hidden_logits(v).sigmoid_()  # in place: one (batch, n_hidden) tensor, not two

    def hidden_mean(self, v: Tensor) -> Tensor:
        """The hidden units' mean activation given v, what the next layer of a DBN sees:
        p(h = 1 | v) for sigmoid units, max(0, W v + c) for NReLU units. (batch, n_hidden)."""
        return self._activate_(self.hidden_logits(v))

    def _activate_(self, logits: Tensor) -> Tensor:
        """The hidden mean from the pre-activation, in place."""
        if self.hidden_units == "sigmoid":
            return logits.sigmoid_()
        return logits.relu_() if self.hidden_units == "relu" else logits  # linear units: the pre-activation

    def _sample_hidden_from(self, logits: Tensor, mean: Tensor | None, generator: torch.Generator | None) -> Tensor:
        """h ~ p(h | v) given the pre-activation ``logits`` and, for sigmoid units, the mean
        (both (batch, n_hidden)); NReLU and linear samples need the pre-activation only."""
        if self.hidden_units == "sigmoid":
            return bernoulli(mean, generator)
        noise = torch.randn(logits.shape, generator=generator, device=logits.device, dtype=logits.dtype)
        if self.hidden_units == "linear":
            return noise.add_(logits)  # x + N(0, 1)
        return noise.mul_(torch.sigmoid(logits).sqrt_()).add_(logits).relu_()  # max(0, x + N(0, sigmoid(x)))

    def visible_mean(self, h: Tensor) -> Tensor:
        """E[v | h] = sigmoid(W'h + b): (batch, n_hidden) -> (batch, n_visible)."""
        return self._visible_mean_of(F.linear(h, self.weight.t(), self.visible_bias))

    def _visible_mean_of(self, logits: Tensor) -> Tensor:
        """E[v | h] from the visible pre-activation ``W'h + b``, in place: the sigmoid here."""
        return logits.sigmoid_()

    def sample_hidden(self, v: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """h ~ p(h | v), (batch, n_hidden): binary, rectified for NReLU units, or real for linear ones."""
        logits = self.hidden_logits(v)
        mean = logits.sigmoid_() if self.hidden_units == "sigmoid" else None
        return self._sample_hidden_from(logits, mean, generator)

    def sample_visible(self, h: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Sample of v ~ p(v | h), shape (batch, n_visible)."""
        return self.sample_from_mean(self.visible_mean(h), generator)

    def sample_from_mean(self, mean: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Sample visible units given their conditional mean E[v | h]: Bernoulli draws here."""
        return bernoulli(mean, generator)

    # --- energies -----------------------------------------------------------------------------
    def energy(self, v: Tensor, h: Tensor) -> Tensor:
        """E(v, h) = visible_term(v) - c'h - h'Wv per sample, shape (batch,); for binary visible
        units the visible term is -b'v."""
        return self.visible_term(v) - (h @ self.hidden_bias) - (F.linear(v, self.weight) * h).sum(-1)

    def visible_term(self, v: Tensor) -> Tensor:
        """The part of the free energy that does not involve h: -b'v, shape (batch,)."""
        return -(v @ self.visible_bias)

    def _visible_quadratic(self, v: Tensor) -> Tensor | float:
        """The part of the visible term that tempering leaves alone (none for binary units)."""
        return 0.0

    def free_energy(self, v: Tensor, hidden_logits: Tensor | None = None) -> Tensor:
        """F(v) = -log sum_h exp(-E(v, h)) = -b'v - sum_j softplus((W v + c)_j), shape (batch,).

        ``hidden_logits`` may pass a precomputed ``W v + c`` so that CD needs no extra matmul.
        Sigmoid hidden units only (:meth:`refuse_intractable`).
        """
        self.refuse_intractable("free_energy")
        hidden_logits = self.hidden_logits(v) if hidden_logits is None else hidden_logits
        return self.visible_term(v) - F.softplus(hidden_logits).sum(-1)

    def tempered_free_energy(self, v: Tensor, beta: Tensor, hidden_logits: Tensor | None = None) -> Tensor:
        """F_beta(v) of the RBM with W, b and c scaled by the inverse temperature ``beta``:
        ``quadratic(v) - beta b'v - sum_j softplus(beta (W v + c)_j)`` (the Gaussian visible units'
        ||v||^2 / 2 is not tempered, so beta = 0 is N(0, I) there and uniform for binary units).

        ``v``: (..., n, n_visible); ``beta``: broadcastable to (..., n). Returns (..., n).
        """
        hidden_logits = self.hidden_logits(v) if hidden_logits is None else hidden_logits
        hidden_term = F.softplus(hidden_logits * beta.unsqueeze(-1)).sum(-1)
        return self._visible_quadratic(v) - beta * (v @ self.visible_bias) - hidden_term

    # --- sampling -----------------------------------------------------------------------------
    def gibbs_step(self, v: Tensor, generator: torch.Generator | None = None, sample_visible: bool = True) -> Tensor:
        """One block Gibbs sweep v -> h -> v'. With ``sample_visible=False`` v' is the mean."""
        h = self.sample_hidden(v, generator)
        return self.sample_visible(h, generator) if sample_visible else self.visible_mean(h)

    @torch.no_grad()
    def sample(
        self, n: int, steps: int, generator: torch.Generator | None = None, init: Tensor | None = None
    ) -> Tensor:
        """Draw ``n`` visible vectors by block Gibbs sampling: (n, n_visible), detached.

        The chains start at ``init`` (e.g. data rows, shape (n, n_visible)) or, without it, at
        noise: Bernoulli(0.5) pixels here, N(0, 1) for :class:`GaussianRBM`. Each of the ``steps``
        sweeps is v -> h ~ p(h | v) -> v' ~ p(v | h), all sampled, except that the last sweep
        returns E[v' | h] instead of a sample: the mean is the usual thing to look at (smooth
        images, no pixel noise), and it is a deterministic function of the last hidden sample.

        ``steps=0`` runs no sweep and returns the start itself: a copy of ``init`` (in the
        RBM's dtype), or the noise. ``steps=1`` from data is the one-step reconstruction
        E[v | h ~ p(h | init)].
        """
        check_count(n, "n", 1, "number of samples")
        check_count(steps, "steps", 0, "Gibbs sweeps")
        like = self.weight
        if init is None:
            # the visible units with no input (W'h + b = 0): Bernoulli(0.5), or N(0, 1), standardised data's scale
            v = self.sample_from_mean(self._visible_mean_of(like.new_zeros(n, self.n_visible)), generator)
        else:
            if not isinstance(init, Tensor) or tuple(init.shape) != (n, self.n_visible):
                got = tuple(init.shape) if isinstance(init, Tensor) else type(init).__name__
                raise ValueError(
                    f"expected init of shape (n, n_visible) = ({n}, {self.n_visible}), got {got}; "
                    "pass init[:n], or n=len(init)"
                )
            check_visible(init, self.visible_units, "init")
            v = init.detach().to(device=like.device, dtype=like.dtype).clone()
        for step in range(steps):
            v = self.gibbs_step(v, generator, sample_visible=step < steps - 1)
        return v

    def cd_loss(
        self,
        v_data: Tensor,
        k: int = 1,
        chain: Tensor | None = None,
        generator: torch.Generator | None = None,
        sample_visible: bool = False,
        value: bool = True,
        offsets: tuple[Tensor, Tensor] | None = None,
    ) -> CDResult:
        """CD-k (Hinton 2002) or, when ``chain`` is given, PCD-k (Tieleman 2008), as a loss.

        Parameters
        ----------
        v_data : Tensor of shape (batch, n_visible)
        k : int
            Gibbs sweeps in the negative phase. With a ``chain``, 0 takes the chain as it is for
            the negative phase (its sweeps were run elsewhere, e.g. by :meth:`parallel_tempering`).
        chain : Tensor of shape (n_chains, n_visible), optional
            Persistent fantasy particles; the negative phase starts there instead of at the data.
            ``n_chains`` need not be the batch size.
        sample_visible : bool
            Sample the visible units in the chain, or use their mean (Hinton 2010, section 3.2:
            the mean reduces sampling noise). PCD chains always sample, so they stay proper
            Markov chains.
        value : bool
            Compute the loss's value (two softplus passes, only ever logged); without it the
            value is NaN and the gradient the same. NReLU RBMs have no closed-form free energy:
            their value is always NaN.
        offsets : (visible_offset (n_visible,), hidden_offset (n_hidden,)), optional
            Centring (Melchior et al. 2016): the gradient of the centred RBM, whose energy is
            ``-(v - mu)'b - c'(h - lam) - (h - lam)'W(v - mu)``, mapped onto this RBM's own
            (uncentred) parameters, see :func:`_cd_gradients`.

        Notes
        -----
        Five matmuls per step for CD-1, the minimum: three in the Gibbs chain (``W v`` of the data
        serves both the positive statistics and the first hidden sample), two in the backward
        pass, which forms the CD statistics in closed form (:class:`_FreeEnergyGap`) instead of
        differentiating a softplus graph.
        """
        phases = self._cd_phases(v_data, k, chain, generator, sample_visible, value)
        loss = _FreeEnergyGap.apply(
            phases.gap, self.weight, self.visible_bias, self.hidden_bias, *phases.factors, offsets
        )
        return CDResult(loss, phases.v_model, phases.hidden_probs, phases.reconstruction)

    @torch.no_grad()
    def cd_grad_(
        self,
        v_data: Tensor,
        k: int = 1,
        chain: Tensor | None = None,
        generator: torch.Generator | None = None,
        sample_visible: bool = False,
        value: bool = True,
        offsets: tuple[Tensor, Tensor] | None = None,
    ) -> CDResult:
        """:meth:`cd_loss` and its backward in one call, without autograd: the gradient is written
        into the parameters' ``.grad`` (overwritten, allocated on first use), bit for bit what
        ``cd_loss(...).loss.backward()`` would put there from zero. ``loss`` is the value only.

        For one process: the same five matmuls, minus autograd's engine and a fresh weight-sized
        gradient each step (~0.6 ms of a ~10 ms CD-1 step on CPU). Under DDP use :meth:`cd_loss`,
        whose backward is where DDP averages the gradient across processes.
        """
        phases = self._cd_phases(v_data, k, chain, generator, sample_visible, value)
        params = (self.weight, self.visible_bias, self.hidden_bias)
        for p in params:
            if p.grad is None:
                p.grad = torch.empty_like(p, memory_format=torch.contiguous_format)
        _cd_gradients(*phases.factors, dtype=self.weight.dtype, out=tuple(p.grad for p in params), offsets=offsets)
        return CDResult(phases.gap, phases.v_model, phases.hidden_probs, phases.reconstruction)

    @torch.no_grad()
    def _cd_phases(
        self,
        v_data: Tensor,
        k: int,
        chain: Tensor | None,
        generator: torch.Generator | None,
        sample_visible: bool,
        value: bool,
    ) -> _CDPhases:
        """The positive phase at ``v_data`` and the negative phase after k Gibbs sweeps."""
        value = value and self.tractable
        data_logits = self.hidden_logits(v_data)  # (B, H)
        # The logits are kept for the free-energy gap, and for NReLU sampling; else the activation overwrites them.
        if value or not self.tractable:
            hidden_mean = self._activate_(data_logits.clone())
        else:
            hidden_mean = data_logits.sigmoid_()
        reconstruction = self.visible_mean(self._sample_hidden_from(data_logits, hidden_mean, generator))
        if chain is None:
            v = self.sample_from_mean(reconstruction, generator) if sample_visible else reconstruction
            sweeps = k - 1
        else:
            v, sample_visible, sweeps = chain, True, k
        for _ in range(sweeps):
            v = self.gibbs_step(v, generator, sample_visible)
        model_logits = self.hidden_logits(v)  # (n_chains, H)
        if value:
            gap = self._free_energy_gap(v_data, data_logits, v, model_logits)
        else:
            gap = torch.full((), math.nan, device=v.device, dtype=self.weight.dtype)
        return _CDPhases(gap, v_data.detach(), hidden_mean, v, self._activate_(model_logits), reconstruction)

    @torch.no_grad()
    def parallel_tempering(
        self, chains: Tensor, betas: Tensor, k: int = 1, generator: torch.Generator | None = None, parity: int = 0
    ) -> tuple[Tensor, Tensor]:
        """k Gibbs sweeps of tempered chains, then one round of swaps between neighbours
        (Desjardins et al. 2010): the negative phase of parallel tempering.

        Parameters
        ----------
        chains : Tensor of shape (n_temperatures, n_chains, n_visible)
            One set of persistent chains per inverse temperature; the last set is at beta = 1,
            the model itself, whose samples :meth:`cd_loss` takes (``k=0``).
        betas : Tensor of shape (n_temperatures,)
            Inverse temperatures, increasing, the last 1. At beta the RBM's W, b and c are scaled
            by beta (:meth:`tempered_free_energy`).
        parity : 0 or 1
            Which neighbour pairs try to swap: (0, 1), (2, 3), ... or (1, 2), (3, 4), ...;
            alternate it from one update to the next (deterministic even-odd swaps).

        Returns
        -------
        chains : Tensor of the same shape, after the sweeps and swaps
        accepted : Tensor of shape (n_temperatures - 1,): the fraction of chains that swapped
            between temperatures i and i + 1 (NaN for the pairs not tried this round)
        """
        self.refuse_intractable("parallel tempering")
        scale = betas.view(-1, 1, 1).to(chains.dtype)
        v = chains
        for _ in range(k):
            h = bernoulli(torch.sigmoid(self.hidden_logits(v) * scale), generator)  # (T, n, H)
            visible_logits = F.linear(h, self.weight.t(), self.visible_bias) * scale
            v = self.sample_from_mean(self._visible_mean_of(visible_logits), generator)
        accepted = torch.full((len(betas) - 1,), math.nan, device=v.device, dtype=torch.float32)
        low = torch.arange(parity, len(betas) - 1, 2, device=v.device)
        if not len(low):
            return v, accepted
        high = low + 1
        logits = self.hidden_logits(v)  # (T, n, H), once for both temperatures of each pair
        beta_low, beta_high = betas[low].view(-1, 1).to(v.dtype), betas[high].view(-1, 1).to(v.dtype)
        tempered = self.tempered_free_energy
        own = tempered(v[low], beta_low, logits[low]) + tempered(v[high], beta_high, logits[high])
        crossed = tempered(v[high], beta_low, logits[high]) + tempered(v[low], beta_high, logits[low])
        # Metropolis: accept with probability min(1, p_low(v_high) p_high(v_low) / (p_low(v_low) p_high(v_high))).
        uniform = torch.empty(own.shape, device=v.device, dtype=v.dtype).uniform_(generator=generator)
        swap = uniform.log_() < own - crossed  # (pairs, n)
        v = v.clone()
        v_low, v_high = v[low], v[high]
        v[low] = torch.where(swap.unsqueeze(-1), v_high, v_low)
        v[high] = torch.where(swap.unsqueeze(-1), v_low, v_high)
        accepted[low] = swap.float().mean(-1)
        return v, accepted

    def _free_energy_gap(self, v_data: Tensor, data_logits: Tensor, v_model: Tensor, model_logits: Tensor) -> Tensor:
        """``mean F(v_data) - mean F(v_model)`` in the parameters' precision: a small difference of
        two large numbers, which bfloat16 logits (from autocast) would round to noise."""
        dtype = self.weight.dtype
        with torch.autocast(v_data.device.type, enabled=False):
            v_data, v_model = v_data.to(dtype), v_model.to(dtype)
            if data_logits.dtype != dtype:
                data_logits, model_logits = self.hidden_logits(v_data), self.hidden_logits(v_model)
            return self.free_energy(v_data, data_logits).mean() - self.free_energy(v_model, model_logits).mean()

    # --- evaluation ---------------------------------------------------------------------------
    @torch.no_grad()
    def pseudo_likelihood(
        self, v: Tensor, generator: torch.Generator | None = None, *, index: Tensor | None = None
    ) -> Tensor:
        """Stochastic log pseudo-likelihood per sample, as scikit-learn's ``BernoulliRBM.score_samples``.

        For each row one visible unit i is flipped (v_i -> 1 - v_i, giving v~) and the estimate is
        ``n_visible * log sigmoid(F(v~) - F(v))``: ``log sigmoid(F(v~) - F(v)) = log p(v_i | v_-i)``,
        so this is an unbiased one-term estimate of the log pseudo-likelihood
        ``sum_i log p(v_i | v_-i)`` (Besag 1975, "Statistical analysis of non-lattice data").

        Parameters
        ----------
        v : Tensor of shape (batch, n_visible)
            Binary data (values in [0, 1] are accepted, as by scikit-learn; the flip is 1 - v_i).
        generator : torch.Generator, optional
            Draws the flipped units: ``torch.randint(n_visible, (batch,), generator=generator)``.
        index : Tensor of shape (batch,), optional
            Flip these units (integers in [0, n_visible)) instead of random ones, for a
            reproducible estimate or to match another implementation's draw.

        Returns
        -------
        Tensor of shape (batch,), in nats.

        Notes
        -----
        Stochastic: one random unit per sample, so repeated calls differ; average over many rows
        (or calls) before comparing models. It is a proxy for the likelihood, cheap because it
        needs no partition function, but it scores only single-unit conditionals; for the
        likelihood itself use AIS (:mod:`dbn_init.ais`). Meaningful for binary (Bernoulli)
        data only; :class:`GaussianRBM` raises ``NotImplementedError``. ``v`` is not validated here
        (this runs on every validation batch): check data once where they enter (:func:`check_visible`).
        """
        self.refuse_intractable("pseudo_likelihood")
        v = v.to(device=self.weight.device, dtype=self.weight.dtype)
        rows = torch.arange(v.shape[0], device=v.device)
        if index is None:
            index = torch.randint(self.n_visible, (v.shape[0],), generator=generator, device=v.device)
        elif tuple(index.shape) != (v.shape[0],) or index.is_floating_point() or index.dtype == torch.bool:
            raise ValueError(
                f"expected index of {v.shape[0]} integers (one unit per row), got {index.dtype} {tuple(index.shape)}"
            )
        flipped = v.clone()
        flipped[rows, index] = 1 - flipped[rows, index]
        return self.n_visible * F.logsigmoid(self.free_energy(flipped) - self.free_energy(v))

    # --- exact quantities for tiny models -----------------------------------------------------
    @torch.no_grad()
    def log_partition_exact(self) -> Tensor:
        """log Z by enumerating every hidden configuration, 2**n_hidden terms (n_hidden <= 20).

        Summing over v analytically: log Z = logsumexp_h [c'h + sum_i log(1 + exp(b_i + (W'h)_i))].
        """
        self.refuse_intractable("log_partition_exact")
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

    def _visible_mean_of(self, logits: Tensor) -> Tensor:
        return logits  # E[v | h] = W'h + b

    def sample_from_mean(self, mean: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return mean + torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)

    def visible_term(self, v: Tensor) -> Tensor:
        return 0.5 * ((v - self.visible_bias) ** 2).sum(-1)

    def _visible_quadratic(self, v: Tensor) -> Tensor:
        return 0.5 * (v**2).sum(-1)

    def pseudo_likelihood(
        self, v: Tensor, generator: torch.Generator | None = None, *, index: Tensor | None = None
    ) -> Tensor:
        """Not defined here: the flip v_i -> 1 - v_i needs binary units (see :meth:`RBM.pseudo_likelihood`)."""
        raise NotImplementedError(
            "pseudo_likelihood flips one binary visible unit (v_i -> 1 - v_i), which has no meaning for "
            "Gaussian (continuous) visible units; compare Gaussian RBMs by reconstruction error, or by "
            "-free_energy(v) - log_partition_exact() for models with few hidden units"
        )

    @torch.no_grad()
    def log_partition_exact(self) -> Tensor:
        """log Z by enumerating the hidden units; each visible integral is Gaussian:
        log Z = logsumexp_h [c'h + ||b + W'h||^2/2 - ||b||^2/2] + (n_visible/2) log(2 pi)."""
        self.refuse_intractable("log_partition_exact")
        hidden = _all_binary(self.n_hidden, self.weight)
        mean = F.linear(hidden, self.weight.t(), self.visible_bias)  # (2**H, V)
        terms = hidden @ self.hidden_bias + 0.5 * (mean**2).sum(-1) - 0.5 * (self.visible_bias**2).sum()
        return torch.logsumexp(terms, dim=0) + 0.5 * self.n_visible * math.log(2 * math.pi)


class _FreeEnergyGap(torch.autograd.Function):
    """``mean F(v_data) - mean F(v_model)`` whose backward is the CD statistics in closed form.

    For either visible type, dF(v)/dW = -p(h|v) v' (per sample), dF/dc = -p(h|v) and, as the
    visible term's bias dependence cancels in the difference, the bias gradient is
    -(mean v_data - mean v_model). Autograd would rebuild exactly this through softplus and
    linear backward nodes; here it is two matmuls and no graph. The value is computed by the
    caller (it is only logged); DDP averages the gradients like any other.
    """

    @staticmethod
    def forward(
        ctx,
        gap: Tensor,
        weight: Tensor,
        visible_bias: Tensor,
        hidden_bias: Tensor,
        v_data: Tensor,
        data_probs: Tensor,
        v_model: Tensor,
        model_probs: Tensor,
        offsets: tuple[Tensor, Tensor] | None,
    ) -> Tensor:
        # v_*: (batch, n_visible), *_probs: (batch, n_hidden); the two batches may differ (PCD).
        ctx.save_for_backward(v_data, data_probs, v_model, model_probs)
        ctx.dtype = weight.dtype
        ctx.offsets = offsets
        return gap.clone()

    @staticmethod
    def backward(ctx, grad: Tensor):
        grads = _cd_gradients(*ctx.saved_tensors, dtype=ctx.dtype, scale=grad, offsets=ctx.offsets)
        return None, *grads, None, None, None, None, None


def _cd_gradients(
    v_data: Tensor,
    data_probs: Tensor,
    v_model: Tensor,
    model_probs: Tensor,
    dtype: torch.dtype,
    scale: Tensor | float = 1.0,
    out: tuple[Tensor, Tensor, Tensor] | None = None,
    offsets: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """``scale`` times the CD gradient for (weight, visible_bias, hidden_bias), into ``out`` if given.

    With ``offsets`` (mu (n_visible,), lam (n_hidden,)) it is the centred gradient (Melchior et
    al. 2016) of the same model in its centred parameters W, b_c = b + W'lam, c_c = c + W mu:
    ``g_W = <(h - lam)(v - mu)'>_model - <...>_data`` and the bias gradients as without centring,
    mapped back onto these (uncentred) parameters: ``g_b - g_W' lam`` and ``g_c - g_W mu``. A step
    on them is exactly the centred step; the offsets stay outside the RBM, folded into its biases,
    so a centred RBM is an ordinary one (its ``F.linear(v, weight, hidden_bias)`` is the centred
    ``W (v - mu) + c_c``) and moving the offsets needs no reparametrisation.

    v_*: (batch, n_visible), *_probs: (batch, n_hidden); the two batches may differ (PCD). Computed
    in ``dtype`` (the parameters') with autocast off: the gradient is the difference of two close
    statistics, which products rounded to bfloat16 (8 bits) would mostly cancel into noise; the
    Gibbs chain's matmuls may run in half precision, these two do not.
    """
    grad_w, grad_b, grad_c = (None, None, None) if out is None else out
    factors = (v_data, data_probs, v_model, model_probs)
    # At batch 128 each op here costs as much in dispatch as in arithmetic on CPU: skip the ones
    # with nothing to do (no autocast to switch off, no dtype to convert, no scale to apply).
    autocast = torch.is_autocast_enabled(v_data.device.type)
    with torch.autocast(v_data.device.type, enabled=False) if autocast else contextlib.nullcontext():
        if any(t.dtype != dtype for t in factors):
            v_data, data_probs, v_model, model_probs = (t.to(dtype) for t in factors)
        # The scale goes on the (batch, H) factors, not on the (H, V) result: one pass over the
        # weight-sized gradient (the second matmul accumulates into it) instead of three.
        model_probs = model_probs * (scale / len(v_model))
        data_probs = data_probs * (scale / len(v_data))
        grad_w = torch.mm(model_probs.t(), v_model, out=grad_w).addmm_(data_probs.t(), v_data, alpha=-1.0)  # (H, V)
        # sum(0).div_(n) is mean(0) bit for bit (torch's CPU mean is that), with half the dispatch.
        grad_b = torch.sub(v_model.sum(0).div_(len(v_model)), v_data.sum(0).div_(len(v_data)), out=grad_b)  # (V,)
        if not (isinstance(scale, float) and scale == 1.0):
            grad_b.mul_(scale)
        grad_c = torch.sub(model_probs.sum(0), data_probs.sum(0), out=grad_c)  # (H,), already scaled
        if offsets is not None:
            visible_offset, hidden_offset = (t.to(dtype) for t in offsets)
            # mean (h - lam)(v - mu)' = mean hv' - lam (mean v)' - (mean h) mu' + lam mu'; in the difference of
            # the two phases lam mu' cancels, and the differences of the means are the bias gradients.
            grad_w.sub_(torch.outer(hidden_offset, grad_b)).sub_(torch.outer(grad_c, visible_offset))
            grad_b.sub_(grad_w.t() @ hidden_offset)
            grad_c.sub_(grad_w @ visible_offset)
    return grad_w, grad_b, grad_c


def _all_binary(n: int, like: Tensor) -> Tensor:
    if n > 20:
        raise ValueError(f"exact enumeration needs n <= 20 units, got {n}; use AIS for larger models")
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=n)), dtype=like.dtype, device=like.device)


def make_rbm(
    n_visible: int,
    n_hidden: int,
    visible_units: str = "bernoulli",
    init_std: float = 0.01,
    hidden_units: str = "sigmoid",
) -> RBM:
    """Build an RBM by unit type names: visible "bernoulli" or "gaussian", hidden "sigmoid" or "relu"."""
    classes = {"bernoulli": RBM, "gaussian": GaussianRBM}
    if visible_units not in classes:
        raise ValueError(f"visible_units must be one of {sorted(classes)}, got {visible_units!r}")
    return classes[visible_units](n_visible, n_hidden, init_std, hidden_units)


def per_rbm(hidden_units: str | Sequence[str], depth: int) -> list[str]:
    """The hidden units of each RBM of a ``depth``-RBM stack: one name for all, or one per RBM."""
    return [hidden_units] * depth if isinstance(hidden_units, str) else list(hidden_units)


def stack_units(visible_units: str, hidden_units: str | Sequence[str], depth: int) -> list[str]:
    """The visible unit type of each RBM of a ``depth``-RBM stack: RBM 1's is ``visible_units``;
    each RBM above models the mean activations of the one below, with Bernoulli visible units above
    sigmoid units (probabilities in [0, 1]) and unit-variance Gaussian ones above NReLU units
    (non-negative, unbounded: Nair & Hinton 2010) or linear ones."""
    below = per_rbm(hidden_units, depth)[:-1]
    return [visible_units] + ["bernoulli" if units == "sigmoid" else "gaussian" for units in below]


def make_stack(sizes: Sequence[int], visible_units: str, hidden_units: str | Sequence[str]) -> nn.ModuleList:
    """A stack of fresh RBMs for layer ``sizes`` ``[n_visible, n_hidden_1, ..., n_hidden_k]``, bottom
    to top: RBM 1 with ``visible_units``, the ones above as :func:`stack_units` says, with
    ``hidden_units`` (one name for all, or one per RBM)."""
    depth = len(sizes) - 1
    units = zip(stack_units(visible_units, hidden_units, depth), per_rbm(hidden_units, depth))
    return nn.ModuleList(
        make_rbm(n_vis, n_hid, visible, hidden_units=hidden)
        for (visible, hidden), n_vis, n_hid in zip(units, sizes[:-1], sizes[1:])
    )


def visible_units_of(x: Tensor) -> str:
    """The visible units that suit data ``x``: "bernoulli" for values all in [0, 1], else "gaussian"
    (for standardised values)."""
    return "bernoulli" if bool(((x >= 0) & (x <= 1)).all()) else "gaussian"


def check_visible(x: Tensor, units: RBM | str, where: str = "data", fix: str | None = None) -> None:
    """Validate data for an RBM's visible layer once, where they enter (``units``: the RBM, whose
    size is checked too, or its visible unit type name). ``fix``: what to do about values outside
    the units' range, in the caller's words (default: the DataModule's and the model's options).

    Raises :class:`~dbn_init.constraints.UsageError` (a ValueError) for a wrong width, non-finite
    values and, for Bernoulli units, values outside [0, 1].
    """
    visible_units = units if isinstance(units, str) else units.visible_units
    if isinstance(units, RBM) and (x.ndim != 2 or x.shape[1] != units.n_visible):
        raise UsageError(
            f"{where} has shape {tuple(x.shape)} but RBM 1 expects (batch, {units.n_visible}) (input_size); "
            "build the model with the data's input_size (train.py links data.input_size; from Python pass "
            "input_size=None to take it from the data)"
        )
    finite = torch.isfinite(x)
    if not bool(finite.all()):
        raise UsageError(
            f"{where} holds {int((~finite).sum())} NaN/Inf value(s); RBM training needs finite inputs. "
            "Clean or impute the data before training."
        )
    if visible_units == "gaussian" and x.numel() > 1:
        mean, std = float(x.mean()), float(x.std())
        if abs(mean) > 2 or not 0.2 < std < 5:  # far from the unit-variance units' standardised scale
            warnings.warn(
                f"{where} has mean {mean:.3g} and std {std:.3g}, but Gaussian visible units model "
                "standardised inputs (mean 0 and std 1 per feature); standardise them"
                + (" (data.scaling standardize)" if fix is None else ""),
                stacklevel=2,
            )
    if visible_units == "bernoulli" and x.numel():
        lo, hi = float(x.min()), float(x.max())
        if lo < 0.0 or hi > 1.0:
            raise UsageError(
                f"{where} has values in [{lo:.4g}, {hi:.4g}], but Bernoulli visible units expect "
                "probabilities in [0, 1]. "
                + (
                    fix
                    or "Scale the inputs to [0, 1] (data.scaling unit), or use Gaussian visible units on "
                    "standardised data (model.visible_units gaussian data.scaling standardize)."
                )
            )


def up_pass(rbms: Sequence[RBM], x: Tensor) -> Tensor:
    """Mean hidden activations of the top RBM given data (probabilities for sigmoid units):
    (batch, n_visible_0) -> (batch, n_hidden_top). Each RBM sees its input times its ``input_scale``."""
    for rbm in rbms:
        x = rbm.hidden_mean(x * rbm.input_scale)
    return x


def down_pass(rbms: Sequence[RBM], v: Tensor) -> Tensor:
    """The inverse of :func:`up_pass` through visible means: a state of the top RBM's visible
    layer, as that RBM sees it, to the data space of the bottom RBM."""
    v = v / rbms[-1].input_scale if len(rbms) else v
    for rbm in reversed(list(rbms)[:-1]):
        v = rbm.visible_mean(v) / rbm.input_scale
    return v
