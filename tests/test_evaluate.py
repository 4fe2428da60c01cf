"""AIS of log Z against exact enumeration and the reference package rbms; RAISE against the exact
annealing model and the exact log-likelihood; pseudo-likelihood against hand values and
scikit-learn; the Gibbs sampler; the ``python -m dbn_init.experiments.evaluate`` command on saved stacks."""

import copy
import json
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import Trainer, seed_everything
from safetensors import safe_open
from safetensors.torch import save_file
from sklearn.datasets import load_digits
from sklearn.neural_network import BernoulliRBM

from dbn_init import DBN
from dbn_init.ais import ais_log_partition, base_rate_bias, beta_schedule, mean_log_prob, raise_log_prob
from dbn_init.data import DigitsDataModule
from dbn_init.experiments.evaluate import main
from dbn_init.io import from_sklearn, save_stack
from dbn_init.pretrain import pretrain
from dbn_init.rbm import RBM, GaussianRBM, bernoulli, up_pass


def _random_rbm(n_visible, n_hidden, std, seed, cls=RBM):
    g = torch.Generator().manual_seed(seed)
    rbm = cls(n_visible, n_hidden)
    with torch.no_grad():
        rbm.weight.copy_(torch.randn(n_hidden, n_visible, generator=g) * std)
        rbm.visible_bias.copy_(torch.randn(n_visible, generator=g) * 0.5)
        rbm.hidden_bias.copy_(torch.randn(n_hidden, generator=g) * 0.5)
    return rbm


def _binary_digits():
    return torch.from_numpy((load_digits().data > 8).astype(np.float32))  # (1797, 64), as binarize=True


def _train_on_digits(n_hidden, epochs, seed=0):
    """CD-1 with SGD on binarised digits, every draw from one generator."""
    x, g = _binary_digits(), torch.Generator().manual_seed(seed)
    rbm = _random_rbm(64, n_hidden, 0.01, seed)
    with torch.no_grad():
        rbm.visible_bias.zero_(), rbm.hidden_bias.zero_()
    opt = torch.optim.SGD(rbm.parameters(), lr=0.1, momentum=0.5)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=g).split(50):
            opt.zero_grad()
            rbm.cd_loss(x[idx], generator=g).loss.backward()
            opt.step()
    return rbm, x


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # These matrices are tiny: with a second busy core, intra-op threads made one AIS run 50x slower.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def trained():
    return _train_on_digits(n_hidden=12, epochs=8)


# --- AIS ------------------------------------------------------------------------------------
def test_beta_schedule_follows_the_papers_proportions():
    betas = beta_schedule(14500)
    assert len(betas) == 14500 and betas[0] == 0.0 and betas[-1] == 1.0
    assert bool((betas.diff() > 0).all())
    assert int((betas < 0.5).sum()) == 500 and int(((betas >= 0.5) & (betas < 0.9)).sum()) == 4000
    assert beta_schedule(4).tolist() == pytest.approx([0.0, 0.5, 0.9, 1.0])


def test_ais_matches_exact_log_partition_of_a_random_rbm():
    # W ~ N(0, 1): strongly coupled, log Z = 39.0. Measured over 5 RBMs x seeds at 3000 betas:
    # |AIS - exact| <= 0.033 (0.011 at 10000 betas), exact value inside [low, high] every time.
    rbm = _random_rbm(20, 10, std=1.0, seed=100)
    exact = copy.deepcopy(rbm).double().log_partition_exact().item()
    result = ais_log_partition(rbm, n_chains=100, n_betas=3000, generator=torch.Generator().manual_seed(0))
    assert exact == pytest.approx(39.0132, abs=1e-3)
    assert abs(result.log_z - exact) < 0.05
    assert result.log_z_low < exact < result.log_z_high
    assert result.log_z_high - result.log_z_low < 0.3
    assert result.log_weights.shape == (100,) and result.log_weights.dtype == torch.float64
    # log_z is log Z_A + logmeanexp(log w) with the uniform base model: log Z_A = (20 + 10) log 2
    base = 30 * math.log(2) + torch.logsumexp(result.log_weights, 0).item() - math.log(100)
    assert result.log_z == pytest.approx(base, abs=1e-9)
    # same generator seed, same estimate
    again = ais_log_partition(rbm, n_chains=100, n_betas=3000, generator=torch.Generator().manual_seed(0))
    assert again.log_z == result.log_z


def test_ais_with_base_rate_model_on_a_trained_rbm_and_mean_log_prob_by_brute_force(trained):
    rbm, x = trained
    r64, v = copy.deepcopy(rbm).double(), x.double()
    exact = r64.log_partition_exact().item()
    result = ais_log_partition(
        rbm, n_chains=100, n_betas=3000, generator=torch.Generator().manual_seed(0), base_visible_bias=base_rate_bias(x)
    )
    # measured: error 0.003, interval width 0.02, for this run
    assert abs(result.log_z - exact) < 0.03
    assert result.log_z_low < exact < result.log_z_high

    # log p(v) = logsumexp_h -E(v, h) - log Z, summing all 2**12 hidden states explicitly
    hidden = torch.tensor(np.array(np.meshgrid(*[[0.0, 1.0]] * 12)).reshape(12, -1).T)  # (4096, 12)
    minus_energy = (v @ r64.visible_bias)[None] + (hidden @ r64.hidden_bias)[:, None] + hidden @ r64.weight @ v.T
    brute = (torch.logsumexp(minus_energy, 0) - exact).mean().item()  # (4096, 1797) -> scalar
    assert mean_log_prob(r64, v, exact, batch_size=500) == pytest.approx(brute, abs=1e-9)
    assert mean_log_prob(rbm, x, exact) == pytest.approx(brute, abs=1e-4)  # float32 free energies
    # a trained model beats the base-rate (independent pixels) model on its own data, by a margin
    p = x.mean(0).clamp(1e-3, 1 - 1e-3)
    independent = (x * p.log() + (1 - x) * (1 - p).log()).sum(1).mean().item()
    assert brute > independent + 3.0


def test_a_stage_that_validates_less_often_than_every_epoch_still_ends_with_its_ais_figure():
    seed_everything(0)
    data = DigitsDataModule(batch_size=64, binarize=True)
    model = DBN(recipe="textbook", num_classes=10, input_size=64, hidden=[10], pretrain_epochs=3, ais_chains=20)
    trainers = []

    def factory(stage, epochs):
        quiet = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
        trainers.append(Trainer(max_epochs=epochs, accelerator="cpu", check_val_every_n_epoch=2, **quiet))
        return trainers[-1]

    pretrain(model, data, factory)  # 3 epochs, validated after the second only
    assert math.isfinite(trainers[0].callback_metrics["rbm1/ais_log_z"].item())


def test_stages_can_end_with_an_ais_log_likelihood_that_matches_enumeration():
    seed_everything(0)
    data = DigitsDataModule(batch_size=64, binarize=True)
    model = DBN(
        recipe="textbook",
        num_classes=10,
        input_size=64,
        hidden=[10, 6],
        pretrain_epochs=2,
        ais_chains=100,
        ais_betas=3000,
    )
    trainers = []

    def factory(stage, epochs):
        trainers.append(
            Trainer(
                max_epochs=epochs,
                accelerator="cpu",
                logger=False,
                enable_checkpointing=False,
                enable_progress_bar=False,
                enable_model_summary=False,
            )
        )
        return trainers[-1]

    pretrain(model, data, factory)
    for k, (rbm, trainer) in enumerate(zip(model.rbms, trainers), start=1):
        metrics = trainer.callback_metrics
        exact = copy.deepcopy(rbm).double().log_partition_exact().item()
        assert abs(metrics[f"rbm{k}/ais_log_z"].item() - exact) < 0.05, k
        val = up_pass(model.rbms[: k - 1], data.val_x)  # what RBM k sees
        expected = mean_log_prob(copy.deepcopy(rbm).double(), val.double(), exact)
        assert metrics[f"rbm{k}/val_log_prob"].item() == pytest.approx(expected, abs=0.05), k
        assert metrics[f"rbm{k}/val_log_prob_low"] <= metrics[f"rbm{k}/val_log_prob"]
    with pytest.raises(ValueError, match=r"model.ais_chains: expected one of \[0\] or an integer in \[2"):
        DBN(recipe="textbook", num_classes=10, input_size=64, hidden=[10], ais_chains=1)
    with pytest.raises(
        ValueError, match=r"model.ais_betas: expected an integer in \[4, inf\), got 3"
    ):  # refused at once, not after pretraining
        DBN(recipe="textbook", num_classes=10, input_size=64, hidden=[10], ais_chains=100, ais_betas=3)


def test_ais_and_mean_log_prob_refuse_bad_input():
    with pytest.raises(NotImplementedError, match="Bernoulli RBMs"):
        ais_log_partition(GaussianRBM(4, 3))
    rbm = RBM(4, 3)
    with pytest.raises(ValueError, match="n_chains"):
        ais_log_partition(rbm, n_chains=1)
    with pytest.raises(ValueError, match="from exactly 0 to exactly 1"):
        ais_log_partition(rbm, betas=torch.linspace(0, 0.9, 10))
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        ais_log_partition(rbm, base_visible_bias=torch.zeros(5))
    for wrong in (torch.zeros(3, 5), torch.zeros(0, 4)):
        with pytest.raises(ValueError, match=rf"data of shape \(N, 4\) with N >= 1, got \({len(wrong)}, "):
            mean_log_prob(rbm, wrong, 1.0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        mean_log_prob(rbm, torch.full((3, 4), 2.0), 1.0)


def test_base_rate_bias_is_the_smoothed_log_odds_whatever_the_data_dtype():
    data = torch.tensor([[0, 1], [0, 1], [1, 1]])  # p = (1 + 1) / 5 and (3 + 1) / 5 with pseudo-count 1
    expected = torch.tensor([0.4, 0.8]).logit()
    for dtype in (torch.int64, torch.uint8, torch.bool, torch.float32):
        bias = base_rate_bias(data.to(dtype))
        assert bias.dtype == torch.float32, dtype
        torch.testing.assert_close(bias, expected)


def _all_binary(n):
    """Every binary vector of length n, shape (2**n, n), float64."""
    return ((torch.arange(2**n)[:, None] >> torch.arange(n)) & 1).double()


def _bernoulli_prob(x, logits):
    """prod_i p(x_i) for x (N, D) under independent Bernoulli(sigmoid(logits)), logits (M, D) -> (M, N)."""
    return torch.exp(x @ F.logsigmoid(logits).T + (1 - x) @ F.logsigmoid(-logits).T).T


def _annealing_model(rbm, base_bias, betas):
    """p_ann(v) over all 2**n_visible states, exactly: v_0 ~ p_0, then the Gibbs sweep at each beta_1..K."""
    vs, hs = _all_binary(rbm.n_visible), _all_binary(rbm.n_hidden)
    w, b, c = rbm.weight.detach().double(), rbm.visible_bias.detach().double(), rbm.hidden_bias.detach().double()
    p = _bernoulli_prob(vs, base_bias[None])[0]  # (2**V,)
    for beta in betas[1:].tolist():
        h_given_v = _bernoulli_prob(hs, beta * (vs @ w.T + c))  # (2**V, 2**H)
        v_given_h = _bernoulli_prob(vs, (1 - beta) * base_bias + beta * (hs @ w + b))  # (2**H, 2**V)
        p = p @ h_given_v @ v_given_h
    return vs, p


def test_raise_is_unbiased_for_the_annealing_model_it_reverses():
    # E[w] = p_ann(v), the probability that the forward chain ends at v (Burda et al. 2015), which with
    # two betas is far from the RBM's p(v): a check of the estimator itself, not of its convergence.
    rbm = _random_rbm(6, 3, std=1.5, seed=5).double()
    base = torch.tensor([0.5, -0.5, 0.0, 1.0, -1.0, 0.3], dtype=torch.float64)
    betas = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    vs, p_ann = _annealing_model(rbm, base, betas)
    assert p_ann.sum().item() == pytest.approx(1.0, abs=1e-12)
    p_rbm = torch.exp(-rbm.free_energy(vs) - rbm.log_partition_exact())
    picks = torch.tensor([0, 21, 42, 63])
    v, m = vs[picks], 20000
    gen = torch.Generator().manual_seed(0)
    log_w = raise_log_prob(rbm, v.repeat(m, 1), betas=betas, generator=gen, base_visible_bias=base)
    w = log_w.exp().view(m, len(picks))  # one chain per row: (m, 4)
    mean, sem = w.mean(0), w.std(0) / math.sqrt(m)
    # measured over seeds 0-4: |mean - p_ann| <= 2.2 s.e.; |p - p_ann| >= 8 s.e. (log p / p_ann = -1.6, 0.26,
    # -1.7, -0.65: per vector, p_ann may lie above or below the RBM's p)
    assert bool(((mean - p_ann[picks]).abs() < 4 * sem).all()), (mean, p_ann[picks], sem)
    assert bool(((p_rbm[picks] - p_ann[picks]).abs() > 5 * sem).all())  # this run tells p_ann and p apart
    # Jensen: the log of an unbiased estimate is low in expectation; here by 1.1 to 1.9 nats per chain
    assert bool((log_w.view(m, -1).mean(0) < p_ann[picks].log() - 0.5).all())
    # n_chains reverse chains per vector average their weights: log mean w, batched or not
    for batch_size in (1000, 7):
        pooled = raise_log_prob(
            rbm, v, betas=betas, n_chains=m, batch_size=batch_size, generator=gen, base_visible_bias=base
        )
        assert pooled.shape == (4,) and pooled.dtype == torch.float64
        torch.testing.assert_close(pooled.exp(), p_ann[picks], rtol=0.15, atol=0.0)  # 4 s.e.; measured <= 0.05


def test_raise_is_below_the_exact_log_likelihood_and_ais_above_it(trained):
    rbm, x = trained
    v, base = x[:300], base_rate_bias(x)
    r64 = copy.deepcopy(rbm).double()
    log_z = r64.log_partition_exact().item()
    exact = mean_log_prob(r64, v.double(), log_z)  # -20.666 nats per image

    def raise_mean(n_betas, seed=0):
        gen = torch.Generator().manual_seed(seed)
        return raise_log_prob(rbm, v, n_betas=n_betas, generator=gen, base_visible_bias=base).mean().item()

    # measured over seeds 0-2: -0.19..-0.11 nats at 100 betas, -0.029..+0.001 at 1000
    few, many = raise_mean(100), raise_mean(1000)
    assert -0.4 < few - exact < -0.05  # clearly pessimistic with few betas, never optimistic
    assert -0.1 < many - exact < 0.03  # and close with enough
    assert many > few + 0.05
    # AIS of log Z on the same path: its upper end of log p(v) lies above the exact value
    ais = ais_log_partition(
        rbm, n_chains=100, n_betas=1000, generator=torch.Generator().manual_seed(0), base_visible_bias=base
    )
    ais_high = mean_log_prob(r64, v.double(), ais.log_z_low)
    assert many - 0.03 < exact < ais_high
    assert abs(mean_log_prob(r64, v.double(), ais.log_z) - exact) < 0.05  # measured 0.023


def test_raise_and_ais_refuse_relu_hidden_units_and_bad_input():
    relu = _random_rbm(6, 3, std=0.1, seed=0)
    relu.hidden_units = "relu"  # noisy rectified linear units: no closed-form free energy
    v = torch.zeros(2, 6)
    for call in (lambda: ais_log_partition(relu), lambda: raise_log_prob(relu, v)):
        with pytest.raises(ValueError, match=r"needs the free energy of sigmoid hidden units, and this RBM's are relu"):
            call()
    with pytest.raises(NotImplementedError, match="Bernoulli RBMs"):
        raise_log_prob(GaussianRBM(6, 3), v)
    rbm = RBM(6, 3)
    with pytest.raises(ValueError, match=r"binary data \(every value 0 or 1\)"):
        raise_log_prob(rbm, torch.full((2, 6), 0.5))
    with pytest.raises(ValueError, match=r"data of shape \(N, 6\) with N >= 1, got \(2, 5\)"):
        raise_log_prob(rbm, torch.zeros(2, 5))
    with pytest.raises(ValueError, match=r"n_chains an integer >= 1"):
        raise_log_prob(rbm, v, n_chains=0)
    with pytest.raises(ValueError, match="from exactly 0 to exactly 1"):
        raise_log_prob(rbm, v, betas=torch.linspace(0.1, 1, 5))
    with pytest.raises(ValueError, match=r"shape \(6,\)"):
        raise_log_prob(rbm, v, base_visible_bias=torch.zeros(3))


# --- against the reference package rbms -----------------------------------------------------
def _rbms():
    with warnings.catch_warnings():  # rbms 0.5 decorates with the deprecated torch.jit.script at import
        warnings.simplefilter("ignore", FutureWarning)
        pytest.importorskip("rbms")
        from rbms.bernoulli_bernoulli.classes import BBRBM
        from rbms.partition_function.ais import compute_partition_function_ais
        from rbms.partition_function.exact import compute_partition_function
    return BBRBM, compute_partition_function, compute_partition_function_ais


def _as_bbrbm(rbm, BBRBM):
    """rbms' weight_matrix is (n_visible, n_hidden): the transpose of ours (n_hidden, n_visible)."""
    w, b, c = (t.detach().double() for t in (rbm.weight, rbm.visible_bias, rbm.hidden_bias))
    return BBRBM(weight_matrix=w.T.contiguous(), vbias=b, hbias=c)


def test_exact_log_partition_matches_rbms():
    BBRBM, exact_log_z, _ = _rbms()
    rbm = _random_rbm(784, 14, std=0.1, seed=3).double()  # MNIST-sized, 2**14 hidden states
    ours = rbm.log_partition_exact().item()
    theirs = exact_log_z(_as_bbrbm(rbm, BBRBM), _all_binary(14))  # they enumerate the hidden layer too
    assert ours == pytest.approx(586.93259, abs=1e-4)
    assert ours == pytest.approx(theirs, rel=1e-9)  # measured: identical in float64


def test_ais_log_partition_agrees_with_rbms_ais():
    BBRBM, _, their_ais = _rbms()
    # W ~ N(0, 0.25): log Z = 310.2, 169 nats above the base model, so the annealing has work to do.
    rbm = _random_rbm(100, 100, std=0.5, seed=4)
    base = rbm.visible_bias.detach()  # rbms' base model: these visible biases, zero weights and hidden biases
    ours = ais_log_partition(
        rbm, n_chains=100, n_betas=2000, generator=torch.Generator().manual_seed(0), base_visible_bias=base
    )
    with torch.random.fork_rng(devices=[]):  # rbms draws from torch's global generator
        torch.manual_seed(0)
        theirs = their_ais(num_chains=100, num_beta=1000, params=_as_bbrbm(rbm, BBRBM))
    log_z_base = F.softplus(base.double()).sum().item() + 100 * math.log(2)
    assert ours.log_z - log_z_base > 150
    # measured over seeds 0-2: ours 310.24..310.37 (3-s.e. width 0.6), theirs 310.20..310.25
    assert abs(ours.log_z - theirs) < 0.5
    assert ours.log_z_low - 0.25 < theirs < ours.log_z_high + 0.25


# --- pseudo-likelihood ----------------------------------------------------------------------
def test_pseudo_likelihood_matches_hand_computation():
    rbm = RBM(3, 1).double()
    with torch.no_grad():
        rbm.weight.copy_(torch.tensor([[1.0, -2.0, 0.5]]))
        rbm.visible_bias.copy_(torch.tensor([0.5, -0.5, 0.0]))
        rbm.hidden_bias.copy_(torch.tensor([0.25]))
    v = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]], dtype=torch.double)

    def free_energy(row):  # -b'v - log(1 + exp(w'v + c)), in plain Python
        b, w = [0.5, -0.5, 0.0], [1.0, -2.0, 0.5]
        hidden_logit = sum(wi * vi for wi, vi in zip(w, row)) + 0.25
        return -sum(bi * vi for bi, vi in zip(b, row)) - math.log1p(math.exp(hidden_logit))

    def flip(row, i):
        return [1 - x if j == i else x for j, x in enumerate(row)]

    # v = [1, 1, 0]: F = 0 - log(1 + e^-0.75) = -0.386871; flipping unit 0 gives [0, 1, 0] with
    # F = 0.5 - log(1 + e^-1.75) = 0.339776, so 3 log sigmoid(0.726647) = -1.183268
    assert free_energy([1, 1, 0]) == pytest.approx(-0.386871, abs=1e-6)
    rows = v.tolist()
    hand = {
        (r, i): -3 * math.log1p(math.exp(free_energy(rows[r]) - free_energy(flip(rows[r], i))))
        for r in range(2)
        for i in range(3)
    }
    assert hand[0, 0] == pytest.approx(-1.183268, abs=1e-6)
    for i in range(3):
        got = rbm.pseudo_likelihood(v, index=torch.tensor([i, i]))
        torch.testing.assert_close(got, torch.tensor([hand[0, i], hand[1, i]], dtype=torch.double))
    # with a generator, the flipped unit is torch.randint(3, (2,), generator=...), as documented
    picked = torch.randint(3, (2,), generator=torch.Generator().manual_seed(7)).tolist()
    got = rbm.pseudo_likelihood(v, torch.Generator().manual_seed(7))
    torch.testing.assert_close(got, torch.tensor([hand[0, picked[0]], hand[1, picked[1]]], dtype=torch.double))


def test_pseudo_likelihood_equals_sklearn_score_samples():
    x = (load_digits().data[:300] > 8).astype(np.float64)
    est = BernoulliRBM(n_components=16, learning_rate=0.05, n_iter=5, random_state=0).fit(x)
    rbm = from_sklearn([est])[0].double()
    v = torch.from_numpy(x)
    # score_samples flips unit RandomState(random_state).randint(0, n_features, n_samples) of each row
    sk_index = np.random.RandomState(0).randint(0, 64, len(x))
    # float32 parameters (from_sklearn casts) against float64 ones: agree to ~1e-5 nats
    np.testing.assert_allclose(
        rbm.pseudo_likelihood(v, index=torch.from_numpy(sk_index)).numpy(), est.score_samples(x), rtol=1e-4, atol=1e-4
    )
    # our own draw, against sklearn's formula evaluated with the same flipped units
    ours = rbm.pseudo_likelihood(v, torch.Generator().manual_seed(3)).numpy()
    index = torch.randint(64, (len(x),), generator=torch.Generator().manual_seed(3)).numpy()
    flipped = x.copy()
    flipped[np.arange(len(x)), index] = 1 - flipped[np.arange(len(x)), index]
    expected = -64 * np.logaddexp(0, -(est._free_energy(flipped) - est._free_energy(x)))
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-4)
    assert -30 < ours.mean() < -20  # a 5-epoch sklearn RBM on 300 binary digits: -25.5 nats


def test_pseudo_likelihood_refuses_gaussian_units_and_an_index_that_is_no_unit_per_row():
    with pytest.raises(NotImplementedError, match="Gaussian"):
        GaussianRBM(3, 2).pseudo_likelihood(torch.zeros(2, 3))
    for index in (torch.tensor([True, False]), torch.tensor([0.0, 1.0]), torch.tensor([0, 1, 2])):
        with pytest.raises(ValueError, match="expected index of 2 integers"):
            RBM(3, 2).pseudo_likelihood(torch.zeros(2, 3), index=index)


# --- the Gibbs sampler ----------------------------------------------------------------------
def test_sample_steps_are_documented_sweeps():
    rbm = _random_rbm(6, 4, std=1.0, seed=1)
    init = torch.bernoulli(torch.full((5, 6), 0.5), generator=torch.Generator().manual_seed(2))
    # steps=0: the start itself, a copy
    out = rbm.sample(5, 0, init=init)
    assert torch.equal(out, init) and out is not init
    noise = rbm.sample(5, 0, torch.Generator().manual_seed(4))
    assert torch.equal(noise, bernoulli(torch.full((5, 6), 0.5), torch.Generator().manual_seed(4)))
    # steps=1 from data: the one-step reconstruction E[v | h], h ~ p(h | init)
    g = torch.Generator().manual_seed(5)
    expected = rbm.visible_mean(rbm.sample_hidden(init, g))
    torch.testing.assert_close(rbm.sample(5, 1, torch.Generator().manual_seed(5), init=init), expected)
    # steps=2: one fully sampled sweep, then the mean of the second
    g = torch.Generator().manual_seed(6)
    v1 = rbm.sample_visible(rbm.sample_hidden(init, g), g)
    expected = rbm.visible_mean(rbm.sample_hidden(v1, g))
    out = rbm.sample(5, 2, torch.Generator().manual_seed(6), init=init)
    torch.testing.assert_close(out, expected)
    assert out.shape == (5, 6) and not out.requires_grad
    assert 0 < float(out.min()) and float(out.max()) < 1  # means, not binary samples


def test_sample_from_noise_of_a_trained_rbm_looks_like_the_data(trained):
    rbm, x = trained
    samples = rbm.sample(500, 200, torch.Generator().manual_seed(0))
    assert samples.shape == (500, 64) and float(samples.min()) >= 0 and float(samples.max()) <= 1
    data_mean, sample_mean = x.mean(0), samples.mean(0)
    corr = torch.corrcoef(torch.stack([data_mean, sample_mean]))[0, 1].item()
    assert corr > 0.9  # measured 0.98; noise itself has correlation ~0
    assert abs(sample_mean.mean().item() - data_mean.mean().item()) < 0.05


def test_gaussian_sample_starts_from_standard_normal_noise_and_validates():
    rbm = _random_rbm(6, 4, std=0.5, seed=1, cls=GaussianRBM)
    noise = rbm.sample(3, 0, torch.Generator().manual_seed(1))
    assert torch.equal(noise, torch.randn(3, 6, generator=torch.Generator().manual_seed(1)))
    g = torch.Generator().manual_seed(2)
    torch.testing.assert_close(
        rbm.sample(3, 1, torch.Generator().manual_seed(2), init=noise), rbm.visible_mean(rbm.sample_hidden(noise, g))
    )
    with pytest.raises(ValueError, match="n an integer >= 1"):
        rbm.sample(0, 1)
    with pytest.raises(ValueError, match="steps an integer >= 0"):
        rbm.sample(3, -1)
    with pytest.raises(ValueError, match=r"\(3, 6\), got \(4, 6\)"):
        rbm.sample(3, 1, init=torch.zeros(4, 6))


# --- the command ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_stack(tmp_path_factory):
    rbm, _ = _train_on_digits(n_hidden=10, epochs=3, seed=1)
    path = tmp_path_factory.mktemp("stack") / "tiny.safetensors"
    save_stack([rbm], path)
    return path, rbm


def _last_json(capsys):
    out = capsys.readouterr().out.strip().splitlines()
    return out, json.loads(out[-1])


def test_cli_reports_log_z_and_log_probabilities(tiny_stack, capsys):
    path, rbm = tiny_stack
    assert main([str(path), "--binarize", "--chains", "50", "--betas", "2000", "--seed", "0"]) == 0
    lines, summary = _last_json(capsys)
    numbers = [summary[k] for k in ("log_z", "log_z_low", "log_z_high", "mean_log_prob", "train_mean_log_prob")]
    assert all(math.isfinite(n) for n in numbers)
    exact = copy.deepcopy(rbm).double().log_partition_exact().item()
    assert abs(summary["log_z"] - exact) < 0.05 and summary["log_z_low"] < exact < summary["log_z_high"]
    dm = DigitsDataModule(binarize=True)
    dm.setup("fit")
    expected = -rbm.free_energy(dm.test_x).double().mean().item() - summary["log_z"]
    assert summary["mean_log_prob"] == pytest.approx(expected, abs=1e-4)
    assert summary["n_images"] == 360 and summary["visible"] == "images"
    assert -64 * math.log(2) < summary["mean_log_prob"] < 0  # better than uniform pixels
    assert any("test split (360 images)" in line for line in lines)
    assert summary["raise_images"] == 0 and summary["raise_mean_log_prob"] is None  # RAISE is opt-in


def test_cli_binarizes_as_the_stack_file_records(tiny_stack, tmp_path, capsys):
    path, rbm = tiny_stack
    recorded = save_stack([rbm], tmp_path / "binarized.safetensors", binarize=True)
    assert main([str(recorded), "--chains", "20", "--betas", "200"]) == 0
    lines, summary = _last_json(capsys)
    assert summary["binarize"] is True and not any("pass --binarize" in line for line in lines)


def test_cli_raise_images_bracket_the_exact_log_likelihood(tiny_stack, capsys):
    path, rbm = tiny_stack
    argv = [str(path), "--binarize", "--chains", "50", "--betas", "2000", "--raise-images", "1000"]
    assert main(argv) == 0
    lines, summary = _last_json(capsys)
    assert summary["raise_images"] == 360  # the whole test split: it has fewer than 1000 images
    dm = DigitsDataModule(binarize=True)
    dm.setup("fit")
    r64 = copy.deepcopy(rbm).double()
    exact = mean_log_prob(r64, dm.test_x.double(), r64.log_partition_exact().item())
    assert summary["raise_ais_mean_log_prob"] == pytest.approx(summary["mean_log_prob"], abs=1e-9)
    # measured over --seed 0-2, from the exact value: RAISE -0.0004..+0.004 nats, AIS -0.005..+0.004
    assert exact - 0.1 < summary["raise_mean_log_prob"] < exact + 0.03
    assert summary["raise_mean_log_prob"] < summary["raise_ais_mean_log_prob"] + 0.03
    assert any(line.startswith("RAISE (Burda et al. 2015): 2000 betas") and "first 360 test" in line for line in lines)


def _with_metadata(path, **changes):
    """Rewrite a safetensors file with some string metadata changed, as another writer might have."""
    with safe_open(str(path), "pt") as f:
        tensors, metadata = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    save_file(tensors, str(path), metadata={**metadata, **changes})
    return path


def test_cli_upper_layer_says_what_it_measures(tmp_path, capsys):
    bottom, top = _random_rbm(64, 10, 0.3, seed=2), _random_rbm(10, 6, 1.0, seed=3)
    path = save_stack([bottom, top], tmp_path / "two.safetensors")
    assert main([str(path), "--layer", "2", "--binarize", "--chains", "20", "--betas", "2000"]) == 0
    lines, summary = _last_json(capsys)
    assert summary["visible"] == "hidden probabilities of RBM 1"
    assert any("not of the images" in line for line in lines)
    exact = copy.deepcopy(top).double().log_partition_exact().item()
    assert abs(summary["log_z"] - exact) < 0.05  # measured 0.018
    assert summary["log_z_low"] < exact < summary["log_z_high"]


def test_cli_errors_are_one_line_with_exit_code_2(tmp_path, capsys):
    gauss = save_stack([GaussianRBM(64, 4)], tmp_path / "gauss.safetensors", scaling="standardize")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a weights file at all")
    wide = save_stack([RBM(784, 3)], tmp_path / "wide.safetensors")
    binary = save_stack([RBM(64, 4)], tmp_path / "binary.safetensors")
    relu = _with_metadata(save_stack([RBM(64, 4)], tmp_path / "relu.safetensors"), hidden_units='["relu"]')
    cases = [
        ([str(gauss)], "Bernoulli RBMs only"),
        ([str(tmp_path / "missing.safetensors")], "no such file"),
        ([str(garbage)], "not a recognised weights file"),
        ([str(wide)], "784"),  # a 784-pixel stack against the 64-pixel digits
        ([str(wide), "--dataset", "mnist", "--root", str(tmp_path / "nowhere")], "nowhere"),
        ([str(wide), "--dataset", "mnist", "--root", str(tmp_path / "nowhere")], "Fix: pass --root DIR"),
        ([str(wide), "--dataset", "mnist", "--root", str(tmp_path / "nowhere")], "IDX files of MNIST (copied"),
        (
            [str(wide), "--dataset", "fashion_mnist", "--root", str(tmp_path / "nowhere")],
            "then `--root /usr/share/datasets/fashion-mnist`",
        ),
        (
            [str(save_stack([RBM(64, 4)], tmp_path / "b.safetensors")), "--scaling", "standardize"],
            "Bernoulli visible units, which model pixels in [0, 1], but --scaling is 'standardize'; "
            "pass --scaling unit",
        ),
        ([str(gauss), "--layer", "3"], "--layer in 1..1"),
        ([str(relu)], "needs the free energy of sigmoid hidden units, and this RBM's are relu"),
        ([str(binary), "--raise-images", "10"], "--raise-images needs binary visible vectors"),
        ([str(binary), "--raise-images", "-1"], "expected --raise-images N >= 0"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        captured = capsys.readouterr()
        assert captured.out == ""
        err = captured.err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("python -m dbn_init.experiments.evaluate: error:"), captured.err
        assert message in err[0], (argv, err[0])
        assert "--data." not in err[0].replace("train.py's --data.download", ""), err[0]  # train.py's options
