"""RBM math against hand-computed values and exact enumeration; CD learns on real digits."""

import itertools
import math
import warnings

import pytest
import torch
from sklearn.datasets import load_digits

from dbn_init.rbm import RBM, GaussianRBM, _cd_gradients, bernoulli, check_visible, make_rbm


def _tiny(cls=RBM, n_visible=3, n_hidden=2, seed=0):
    rbm = cls(n_visible, n_hidden)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        rbm.weight.copy_(torch.randn(n_hidden, n_visible, generator=g))
        rbm.visible_bias.copy_(torch.randn(n_visible, generator=g))
        rbm.hidden_bias.copy_(torch.randn(n_hidden, generator=g))
    return rbm.double()


def test_conditionals_and_energy_match_hand_computation():
    rbm = RBM(2, 1).double()
    with torch.no_grad():
        rbm.weight.copy_(torch.tensor([[1.0, -2.0]]))
        rbm.visible_bias.copy_(torch.tensor([0.5, -0.5]))
        rbm.hidden_bias.copy_(torch.tensor([0.25]))
    v = torch.tensor([[1.0, 1.0]], dtype=torch.double)
    # W v + c = 1 - 2 + 0.25 = -0.75
    assert rbm.hidden_probs(v).item() == pytest.approx(1 / (1 + math.exp(0.75)))
    # E(v, h=1) = -(0.5 - 0.5) - 0.25 - (1 - 2) = 0.75
    assert rbm.energy(v, torch.ones(1, 1, dtype=torch.double)).item() == pytest.approx(0.75)
    # F(v) = -b'v - softplus(-0.75) = -log(1 + e^-0.75)
    assert rbm.free_energy(v).item() == pytest.approx(-math.log1p(math.exp(-0.75)))
    # p(v | h=1) = sigmoid(W' h + b) = sigmoid([1.5, -2.5])
    mean = rbm.visible_mean(torch.ones(1, 1, dtype=torch.double))
    torch.testing.assert_close(mean, torch.sigmoid(torch.tensor([[1.5, -2.5]], dtype=torch.double)))


@pytest.mark.parametrize("cls", [RBM, GaussianRBM])
def test_free_energy_is_minus_log_sum_over_hidden_of_exp_minus_energy(cls):
    rbm = _tiny(cls, n_visible=4, n_hidden=3)
    v = torch.bernoulli(torch.full((5, 4), 0.5, dtype=torch.double), generator=torch.Generator().manual_seed(1))
    if cls is GaussianRBM:
        v = v * 3.0 - 1.5  # real values: the ||v - b||^2 / 2 term must be the one in both
    hidden = torch.tensor(list(itertools.product([0.0, 1.0], repeat=3)), dtype=torch.double)
    energies = torch.stack([rbm.energy(v, h.expand(5, 3)) for h in hidden], dim=1)  # (5, 8)
    torch.testing.assert_close(rbm.free_energy(v), -torch.logsumexp(-energies, dim=1))


def test_log_partition_matches_enumeration_of_every_joint_state():
    rbm = _tiny(n_visible=4, n_hidden=3)
    states = [torch.tensor(s, dtype=torch.double) for s in itertools.product([0.0, 1.0], repeat=7)]
    energies = torch.stack([rbm.energy(s[:4][None], s[4:][None])[0] for s in states])
    expected = torch.logsumexp(-energies, dim=0)
    assert rbm.log_partition_exact().item() == pytest.approx(expected.item(), abs=1e-10)
    # and the visible marginal normalises: sum_v exp(-F(v)) = Z
    visible = torch.tensor(list(itertools.product([0.0, 1.0], repeat=4)), dtype=torch.double)
    assert torch.logsumexp(-rbm.free_energy(visible), 0).item() == pytest.approx(expected.item(), abs=1e-10)


def test_gaussian_free_energy_and_log_partition_by_numerical_integration():
    rbm = _tiny(GaussianRBM, n_visible=1, n_hidden=2)
    grid = torch.linspace(-30, 30, 200_001, dtype=torch.double)[:, None]
    log_density = -rbm.free_energy(grid)
    log_z = torch.logsumexp(log_density, 0) + math.log(float(grid[1] - grid[0]))
    assert rbm.log_partition_exact().item() == pytest.approx(log_z.item(), abs=1e-6)
    # p(v | h) = N(b + W'h, 1)
    h = torch.tensor([[1.0, 0.0]], dtype=torch.double)
    assert rbm.visible_mean(h).item() == pytest.approx((rbm.visible_bias + rbm.weight[0]).item())


def test_cd_loss_gradient_is_the_cd_statistic():
    rbm = _tiny(n_visible=4, n_hidden=3)
    v = torch.bernoulli(torch.full((6, 4), 0.5, dtype=torch.double), generator=torch.Generator().manual_seed(2))
    result = rbm.cd_loss(v, k=1, generator=torch.Generator().manual_seed(3))
    result.loss.backward()
    vm = result.v_model
    pos = rbm.hidden_probs(v).detach().T @ v / 6
    neg = rbm.hidden_probs(vm).detach().T @ vm / 6
    torch.testing.assert_close(-rbm.weight.grad, pos - neg)
    torch.testing.assert_close(-rbm.hidden_bias.grad, (rbm.hidden_probs(v) - rbm.hidden_probs(vm)).detach().mean(0))
    torch.testing.assert_close(-rbm.visible_bias.grad, (v - vm).mean(0))


@pytest.mark.parametrize("cls", [RBM, GaussianRBM])
@pytest.mark.parametrize("n_chains", [None, 5])  # None: CD-2 from the data; 5: PCD-2, 5 chains for 6 rows
def test_cd_loss_backward_equals_autograd_of_the_free_energy_surrogate(cls, n_chains):
    rbm = _tiny(cls, n_visible=4, n_hidden=3)
    g = torch.Generator().manual_seed(2)
    v = torch.rand(6, 4, dtype=torch.double, generator=g)
    chain = None if n_chains is None else torch.rand(n_chains, 4, dtype=torch.double, generator=g)
    result = rbm.cd_loss(v, k=2, chain=chain, generator=torch.Generator().manual_seed(3))
    result.loss.backward()
    closed_form = [p.grad.clone() for p in rbm.parameters()]
    rbm.zero_grad()
    reference = rbm.free_energy(v).mean() - rbm.free_energy(result.v_model).mean()  # autograd's way
    reference.backward()
    assert result.loss.item() == pytest.approx(reference.item(), rel=1e-12)
    for mine, theirs in zip(closed_form, (p.grad for p in rbm.parameters())):
        torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=1e-12)
    # value=False skips the value (NaN, so it cannot be mistaken for one), not the gradient
    rbm.zero_grad()
    no_value = rbm.cd_loss(v, k=2, chain=chain, generator=torch.Generator().manual_seed(3), value=False)
    no_value.loss.backward()
    assert math.isnan(no_value.loss.item())
    for mine, theirs in zip(closed_form, (p.grad for p in rbm.parameters())):
        torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cls", [RBM, GaussianRBM])
@pytest.mark.parametrize("n_chains", [None, 40])  # CD-2 from the data; PCD-2 with fewer chains than rows
def test_cd_grad_writes_exactly_the_gradient_that_backward_of_cd_loss_would(cls, n_chains):
    """The one-process fast path: same chain, same value, same .grad bit for bit, stale grads overwritten."""
    x = torch.tensor(load_digits().data[:100], dtype=torch.float32) / 16.0  # 100 rows: 1/100 is inexact
    chain = None if n_chains is None else x[-n_chains:].round()
    start = cls(64, 32, init_std=0.1).state_dict()
    grads, results = [], []
    for method in ("cd_loss", "cd_grad_"):
        rbm = cls(64, 32)
        rbm.load_state_dict(start)
        for p in rbm.parameters():
            p.grad = torch.full_like(p, 7.0)  # stale: backward from zero means zero_grad first
        g = torch.Generator().manual_seed(3)
        if method == "cd_loss":
            rbm.zero_grad()
            result = rbm.cd_loss(x, k=2, chain=chain, generator=g)
            result.loss.backward()
        else:
            result = rbm.cd_grad_(x, k=2, chain=chain, generator=g)
        grads.append([p.grad.clone() for p in rbm.parameters()])
        results.append(result)
    for mine, theirs in zip(grads[1], grads[0]):
        assert torch.equal(mine, theirs)
    assert grads[0][0].abs().max() > 1e-3  # a real gradient, not zeros on both sides
    assert torch.equal(results[1].v_model, results[0].v_model)
    assert results[1].loss.item() == results[0].loss.item()
    assert not results[1].loss.requires_grad


def test_under_bf16_autocast_the_cd_gradient_stays_float32_and_close_to_fp32():
    """bf16-mixed precision: the Gibbs chain's matmuls run in bfloat16, the CD statistics in the
    parameters' float32 (bf16 products would round the difference of two close statistics)."""
    x = torch.tensor(load_digits().data[:500], dtype=torch.float32) / 16.0
    torch.manual_seed(0)
    rbm = RBM(64, 32, init_std=0.1)
    grads, values = {}, {}
    for name, autocast in (("fp32", False), ("cd_grad_", True), ("cd_loss", True)):
        rbm.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            g = torch.Generator().manual_seed(3)
            if name == "cd_loss":
                loss = rbm.cd_loss(x, generator=g).loss
                loss.backward()
            else:
                loss = rbm.cd_grad_(x, generator=g).loss
        grads[name], values[name] = [p.grad.clone() for p in rbm.parameters()], loss
    # the loss's value, a difference of two free energies of about -23, is taken in float32 too
    assert values["cd_grad_"].dtype == torch.float32
    assert values["cd_grad_"].item() == pytest.approx(values["fp32"].item(), rel=2e-3)
    for mine, theirs in zip(grads["cd_grad_"], grads["cd_loss"]):
        assert mine.dtype == torch.float32 and torch.equal(mine, theirs)
    for mine, fp32 in zip(grads["cd_grad_"], grads["fp32"]):
        # 7e-4, 6e-4, 2e-3 here, from a few hidden samples flipped by bf16-rounded probabilities;
        # the same statistics from bf16 products are off by 4e-3 in the weight gradient.
        assert 0 < (mine - fp32).norm() / fp32.norm() < 3e-3


def test_bernoulli_sampler_has_the_right_law():
    probs = torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0]).expand(40_000, 5)
    sample = bernoulli(probs, torch.Generator().manual_seed(0))
    assert sample.dtype == probs.dtype and set(sample.unique().tolist()) <= {0.0, 1.0}
    # 4 standard errors of a mean over 40,000 draws is at most 0.01
    torch.testing.assert_close(sample.mean(0), probs[0], rtol=0, atol=0.01)
    assert sample[:, 0].sum() == 0 and sample[:, 4].sum() == 40_000  # p = 0 and p = 1 are exact


def test_cd_k_runs_k_gibbs_sweeps_and_sample_visible_samples_the_visible_layer(monkeypatch):
    """The chain end, built by hand with a deterministic sampler (threshold at 0.5): CD-k runs k
    sweeps from the data; sample_visible draws binary visible states instead of their means."""
    import dbn_init.rbm

    monkeypatch.setattr(dbn_init.rbm, "bernoulli", lambda probs, generator=None: (probs > 0.5).to(probs.dtype))
    # seed 28: a chain whose first three sweeps all differ, so a wrong number of sweeps shows
    rbm, v = _tiny(n_visible=6, n_hidden=4, seed=28), torch.tensor([[1.0, 0, 1, 0, 1, 1], [0, 1, 1, 0, 0, 1]]).double()

    def sweep(x, sample):  # v -> h sample -> visible mean (or its sample)
        mean = rbm.visible_mean((rbm.hidden_probs(x) > 0.5).double())
        return (mean > 0.5).double() if sample else mean

    for k in (1, 2, 3):
        expected = v
        for _ in range(k):
            expected = sweep(expected, sample=False)
        torch.testing.assert_close(rbm.cd_loss(v, k=k).v_model, expected, rtol=0, atol=1e-12)
    ends = [rbm.cd_loss(v, k=k).v_model for k in (1, 2, 3)]
    assert not any(torch.equal(a, b) for a, b in itertools.combinations(ends, 2))
    sampled = rbm.cd_loss(v, k=2, sample_visible=True).v_model
    assert torch.equal(sampled, sweep(sweep(v, sample=True), sample=True))
    assert set(sampled.unique().tolist()) <= {0.0, 1.0}


def _digits():
    x = torch.tensor(load_digits().data, dtype=torch.float32) / 16.0
    return x


@pytest.mark.parametrize("persistent", [False, True])
def test_cd_training_lowers_reconstruction_error_on_real_digits(persistent):
    torch.manual_seed(0)
    x = _digits()
    rbm = RBM(64, 64)
    opt = torch.optim.SGD(rbm.parameters(), lr=0.1, momentum=0.5)
    g = torch.Generator().manual_seed(0)

    def recon_error():
        with torch.no_grad():
            return float(((x - rbm.visible_mean(rbm.hidden_probs(x))) ** 2).sum(1).mean())

    before = recon_error()
    chain = x[:64].clone() if persistent else None
    for _ in range(5):
        for batch in x[torch.randperm(len(x), generator=g)].split(64):
            result = rbm.cd_loss(batch, chain=chain, generator=g)
            if persistent:
                chain = result.v_model
            opt.zero_grad()
            result.loss.backward()
            opt.step()
    after = recon_error()
    assert before > 10.0  # an untrained RBM reconstructs ~0.5 everywhere
    assert after < 0.4 * before, (before, after)


def test_gaussian_rbm_trains_stably_at_its_default_rate_on_standardised_digits():
    torch.manual_seed(0)
    x = _digits()
    x = (x - x.mean(0)) / x.std(0).clamp_min(0.05)
    rbm = GaussianRBM(64, 128)
    opt = torch.optim.SGD(rbm.parameters(), lr=1e-3, momentum=0.9)  # DBN's gaussian_lr default
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        start = float(((x - rbm.visible_mean(rbm.sample_hidden(x, g))) ** 2).sum(1).mean())
    for _ in range(20):
        for batch in x[torch.randperm(len(x), generator=g)].split(32):
            result = rbm.cd_loss(batch, generator=g)
            opt.zero_grad()
            result.loss.backward()
            opt.step()
    assert all(torch.isfinite(p).all() for p in rbm.parameters())
    with torch.no_grad():
        end = float(((x - rbm.visible_mean(rbm.sample_hidden(x, g))) ** 2).sum(1).mean())
    assert end < 0.7 * start, (start, end)


def test_make_rbm_and_check_visible_refuse_bad_input():
    with pytest.raises(ValueError, match="visible_units"):
        make_rbm(4, 2, "poisson")
    with pytest.raises(ValueError, match=r"\[0, 1\].*data.scaling"):
        check_visible(torch.tensor([[0.0, 255.0]]), "bernoulli")
    with pytest.raises(ValueError, match="NaN"):
        check_visible(torch.tensor([[0.0, float("nan")]]), "gaussian")
    check_visible(torch.tensor([[-3.0, 4.0]]), "gaussian")  # real-valued data is fine for Gaussian units


# --- NReLU hidden units, parallel tempering, centring ---------------------------------------
def test_nrelu_samples_have_the_moments_of_a_rectified_gaussian():
    # Nair & Hinton (2010): h = max(0, x + e), e ~ N(0, sigmoid(x)); for X ~ N(mu, s^2),
    # E max(0, X) = mu Phi(mu/s) + s phi(mu/s) and E max(0, X)^2 = (mu^2 + s^2) Phi(mu/s) + mu s phi(mu/s).
    rbm = RBM(3, 4, hidden_units="relu").double()
    with torch.no_grad():
        rbm.weight.zero_()
        rbm.hidden_bias.copy_(torch.tensor([-2.0, -0.5, 0.5, 3.0]))
    v = torch.zeros(200_000, 3, dtype=torch.double)
    with torch.no_grad():
        h = rbm.sample_hidden(v, torch.Generator().manual_seed(0))
    mu = rbm.hidden_bias.detach()
    s = torch.sigmoid(mu).sqrt()
    normal = torch.distributions.Normal(0.0, 1.0)
    cdf, pdf = normal.cdf(mu / s), normal.log_prob(mu / s).exp()
    mean, second = mu * cdf + s * pdf, (mu**2 + s**2) * cdf + mu * s * pdf
    torch.testing.assert_close(h.mean(0), mean, atol=4e-3, rtol=0)
    torch.testing.assert_close((h**2).mean(0), second, atol=2e-2, rtol=0)
    assert float(h.min()) == 0.0 and bool((h[:, 1:] > 0).any(0).all())  # rectified, not binary
    torch.testing.assert_close(rbm.hidden_mean(v[:1]), mu.relu().unsqueeze(0))  # the mean the next layer sees


def test_linear_hidden_units_are_their_input_plus_unit_variance_gaussian_noise():
    """The code layer of Hinton & Salakhutdinov's autoencoder: h = W v + c + N(0, 1), whose mean
    (what the next layer and the transfer use) is W v + c."""
    rbm = RBM(3, 4, hidden_units="linear").double()
    with torch.no_grad():
        rbm.hidden_bias.copy_(torch.tensor([-2.0, -0.5, 0.5, 3.0]))
    v = bernoulli(torch.full((200_000, 3), 0.5, dtype=torch.double), torch.Generator().manual_seed(1))
    with torch.no_grad():
        h = rbm.sample_hidden(v, torch.Generator().manual_seed(0))
        mean = rbm.hidden_mean(v)
    torch.testing.assert_close(mean, rbm.hidden_logits(v))
    torch.testing.assert_close((h - mean).mean(0), torch.zeros(4, dtype=torch.double), atol=1e-2, rtol=0)
    torch.testing.assert_close((h - mean).var(0), torch.ones(4, dtype=torch.double), atol=2e-2, rtol=0)


@pytest.mark.parametrize("units", ["relu", "linear"])
def test_nrelu_and_linear_rbms_refuse_what_needs_their_free_energy(units):
    rbm = RBM(6, 3, hidden_units=units)
    v = bernoulli(torch.full((4, 6), 0.5))
    for call in (
        lambda: rbm.free_energy(v),
        lambda: rbm.pseudo_likelihood(v),
        lambda: rbm.log_partition_exact(),
        lambda: rbm.parallel_tempering(v.expand(2, 4, 6), torch.tensor([0.5, 1.0])),
    ):
        with pytest.raises(
            ValueError, match=rf"needs the free energy of sigmoid hidden units, and this RBM's are {units}; use sigmoid"
        ):
            call()
    result = rbm.cd_loss(v)  # CD itself trains them: the value is NaN, the gradient is there
    assert math.isnan(float(result.loss.detach()))
    result.loss.backward()
    assert torch.isfinite(rbm.weight.grad).all() and rbm.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="hidden_units must be one of"):
        RBM(6, 3, hidden_units="tanh")


@pytest.mark.parametrize("cls", [RBM, GaussianRBM])
def test_parallel_tempering_leaves_every_tempered_distribution_invariant(cls):
    # A 4-3 RBM and 3 temperatures: after burn-in, each temperature's chains are distributed as
    # the RBM with W, b, c scaled by its beta (enumerated), swaps included. Gaussian visible units
    # are judged by their first two moments (v | h is Gaussian), binary ones state by state.
    rbm = _tiny(cls, n_visible=4, n_hidden=3, seed=3)
    betas = torch.tensor([0.3, 0.65, 1.0], dtype=torch.double)
    g = torch.Generator().manual_seed(0)
    chains = bernoulli(torch.full((3, 10_000, 4), 0.5, dtype=torch.double), g)
    swapped = []
    for step in range(40):
        chains, accepted = rbm.parallel_tempering(chains, betas, k=1, generator=g, parity=step % 2)
        swapped.append(accepted)
    rates = torch.stack(swapped)
    assert torch.isnan(rates[0::2, 1]).all() and torch.isnan(rates[1::2, 0]).all()  # even pairs, then odd ones
    assert 0.2 < float(rates[0::2, 0].mean()) < 1 and 0.2 < float(rates[1::2, 1].mean()) < 1
    hidden = torch.tensor(list(itertools.product([0.0, 1.0], repeat=3)), dtype=torch.double)
    for t, beta in enumerate(betas):
        scaled = _tiny(cls, n_visible=4, n_hidden=3, seed=3)
        with torch.no_grad():
            for p in scaled.parameters():
                p.mul_(beta)
        if cls is RBM:
            states = torch.tensor(list(itertools.product([0.0, 1.0], repeat=4)), dtype=torch.double)
            exact = (-scaled.free_energy(states) - scaled.log_partition_exact()).exp()
            empirical = (chains[t].unsqueeze(1) == states).all(-1).double().mean(0)
            assert 0.5 * float((empirical - exact).abs().sum()) < 0.03  # total variation, ~0.015 from 10,000 chains
        else:  # p(h) by enumeration, then E[v] = sum_h p(h) (b + W'h) at the scaled parameters
            log_ph = hidden @ scaled.hidden_bias + 0.5 * (scaled.visible_mean(hidden) ** 2).sum(-1)
            ph = torch.softmax(log_ph.detach(), 0)
            mean = (ph.unsqueeze(1) * scaled.visible_mean(hidden)).sum(0).detach()
            torch.testing.assert_close(chains[t].mean(0), mean, atol=0.05, rtol=0)


def _centred_reference(steps, seed=0, rate=0.3, lr=0.1):
    """Melchior, Fischer & Wiskott (2016), Algorithm 1, literally: centred parameters (W, b, c),
    offsets (mu, lam), gradients of the centred energy, offsets moved by sliding means and the
    biases reparametrised so that the model is unchanged by the move. Samples are fixed tensors."""
    g = torch.Generator().manual_seed(seed)
    V, H, B = 7, 5, 16
    W, b, c = 0.1 * torch.randn(H, V, generator=g, dtype=torch.double), torch.zeros(V).double(), torch.zeros(H).double()
    data = [bernoulli(torch.full((B, V), 0.4, dtype=torch.double), g) for _ in range(steps)]
    model = [bernoulli(torch.full((B + 3, V), 0.6, dtype=torch.double), g) for _ in range(steps)]
    mu, lam = data[0].mean(0), torch.full((H,), 0.5, dtype=torch.double)
    history = []
    for v_d, v_m in zip(data, model):
        h_d, h_m = torch.sigmoid((v_d - mu) @ W.t() + c), torch.sigmoid((v_m - mu) @ W.t() + c)
        grad_w = ((h_d - lam).t() @ (v_d - mu)) / B - ((h_m - lam).t() @ (v_m - mu)) / len(v_m)
        W, b, c = W + lr * grad_w, b + lr * (v_d.mean(0) - v_m.mean(0)), c + lr * (h_d.mean(0) - h_m.mean(0))
        new_mu, new_lam = (1 - rate) * mu + rate * v_d.mean(0), (1 - rate) * lam + rate * h_d.mean(0)
        b, c = b + W.t() @ (new_lam - lam), c + W @ (new_mu - mu)  # the same model at the new offsets
        mu, lam = new_mu, new_lam
        history.append((W.clone(), b.clone(), c.clone(), mu.clone(), lam.clone()))
    return data, model, history


def test_a_centred_rbm_folds_its_offsets_into_ordinary_biases_exactly():
    data, model, history = _centred_reference(steps=6)
    g = torch.Generator().manual_seed(0)
    rbm = RBM(7, 5).double()
    with torch.no_grad():  # the reference's start, folded: b_u = b - W'lam, c_u = c - W mu
        rbm.weight.copy_(0.1 * torch.randn(5, 7, generator=g, dtype=torch.double))
        mu, lam = data[0].mean(0), torch.full((5,), 0.5, dtype=torch.double)
        rbm.visible_bias.copy_(-rbm.weight.t() @ lam)
        rbm.hidden_bias.copy_(-rbm.weight @ mu)
    optimizer = torch.optim.SGD(rbm.parameters(), lr=0.1)
    for v_d, v_m, (W, b, c, new_mu, new_lam) in zip(data, model, history):
        phases = (v_d, rbm.hidden_probs(v_d).detach(), v_m, rbm.hidden_probs(v_m).detach())
        grads = tuple(torch.empty_like(p) for p in rbm.parameters())
        _cd_gradients(*phases, dtype=torch.double, out=grads, offsets=(mu, lam))
        for p, grad in zip(rbm.parameters(), grads):
            p.grad = grad
        optimizer.step()
        mu, lam = mu.lerp(v_d.mean(0), 0.3), lam.lerp(phases[1].mean(0), 0.3)
        torch.testing.assert_close(mu, new_mu)
        torch.testing.assert_close(lam, new_lam)
        torch.testing.assert_close(rbm.weight.detach(), W)
        # the folded biases, and so an ordinary Linear layer, compute the centred conditionals
        torch.testing.assert_close(rbm.hidden_bias.detach(), c - W @ mu)
        torch.testing.assert_close(rbm.visible_bias.detach(), b - W.t() @ lam)
    linear = torch.nn.Linear(7, 5).double()
    with torch.no_grad():
        linear.weight.copy_(rbm.weight)
        linear.bias.copy_(rbm.hidden_bias)
    v = data[-1]
    torch.testing.assert_close(torch.sigmoid(linear(v)), torch.sigmoid((v - mu) @ W.t() + c))


def test_gaussian_visible_units_on_unstandardised_inputs_are_warned_where_the_data_enter():
    pixels = torch.tensor(load_digits().data[:200], dtype=torch.float32)  # 0..16, as stored
    with pytest.warns(
        UserWarning, match=r"x has mean 4.\d+ and std 6.\d+, but Gaussian visible units model standardised"
    ):
        check_visible(pixels, "gaussian", where="x")
    standardised = (pixels - pixels.mean(0)) / pixels.std(0).clamp_min(1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_visible(standardised, "gaussian", where="x")
        check_visible(pixels / 16, "bernoulli", where="x")
