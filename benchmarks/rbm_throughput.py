"""Seconds per CD-1 epoch of a 784->512 Bernoulli RBM: dbn_init's Lightning pipeline vs its peers.

One epoch of each contender (fp32 on CPU, batch 128, the first ``--n`` pretraining images), from
the arithmetic floor (matmul_only) through dbn_init's math without Lightning (cd_grad_sgd) to the
real pipeline (dbn_init, as train.py runs a stage) and the peers (scikit-learn, learnergy); plus one
fine-tuning epoch in Lightning vs a plain loop. Each contender's function says what it runs.

Method: every timed epoch runs in a fresh subprocess (imports, data loading and a warm-up on two
batches come first and are not timed), in interleaved rounds: each round runs every contender
once, in RUN_ORDER (reversed in odd rounds), which puts each goal's two contenders next to each
other or one apart. torch, OpenMP and BLAS get --threads threads. We report the median and the
minimum over rounds, and each ratio as the median over rounds of that round's ratio: this
machine's speed drifts by tens of percent within minutes, and pairing epochs run back to back
takes out the part of the drift they share (what is left is still large here: the ratios of
medians are in the JSON line too). Memory (Linux): the subprocess resets its resident-set high-water mark
(``/proc/self/clear_refs``) just before the epoch and reads ``VmHWM`` after it, so ``peak RSS`` is
that process's peak during the epoch (interpreter, libraries and data set included) and
``epoch +MB`` is that peak minus the resident size at the epoch's start.

The last line printed is one JSON object with every figure. From the repository root:
  python benchmarks/rbm_throughput.py                      # the real figures, on an idle machine
  python benchmarks/rbm_throughput.py --n 2000 --rounds 1  # smoke test
"""

from __future__ import annotations

import argparse
import copy
import gc
import importlib.util
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from importlib import metadata

CONTENDERS = [
    "matmul_only",
    "naive_torch",
    "cd_grad_sgd",
    "dbn_init",
    "dbn_init_loss",
    "dbn_init_1t",
    "sklearn_f32",
    "sklearn_f64",
    "learnergy",
    "rbms",
    "compiled_cd",
    "compiled_cd_x8",
    "matmul_graph",
    "finetune_dbn_init",
    "finetune_plain",
]
# The order within a round: dbn_init between the floor and learnergy, scikit-learn one further off,
# the fine-tuning pair together, so that the machine's drift hits both sides of a goal alike.
RUN_ORDER = [
    "naive_torch",
    "cd_grad_sgd",
    "sklearn_f32",
    "matmul_only",
    "dbn_init",
    "dbn_init_loss",
    "learnergy",
    "rbms",
    "dbn_init_1t",
    "compiled_cd",
    "compiled_cd_x8",
    "matmul_graph",
    "sklearn_f64",
    "finetune_dbn_init",
    "finetune_plain",
]
assert sorted(RUN_ORDER) == sorted(CONTENDERS)
# The RBM every contender trains: Bernoulli visible and hidden units at CD rate 0.1 (the textbook recipe).
TEXTBOOK_RBM = dict(recipe="textbook", num_classes=10, visible_units="bernoulli")
OPTIONAL = {"learnergy", "rbms", "sklearn_f32", "sklearn_f64"}  # peers: a failure is reported, not fatal
CPU_ONLY = {"sklearn_f32", "sklearn_f64", "dbn_init_1t"}  # scikit-learn has no GPU path; threads are a CPU knob
CUDA_ONLY = {"matmul_graph"}  # the kernel-launch bound: the floor loop replayed as one CUDA graph per step
CD_CONTENDERS = [c for c in CONTENDERS if not c.startswith("finetune")]  # the same CD-1 work: FLOP/s apply
GROUP = 8  # CD updates per compiled call in compiled_cd_x8 (the stage's steps_per_batch default)
FINETUNE_BATCH = 100  # FashionMNISTDataModule's default, the fine-tuning batch of the seed experiment
LR, MOMENTUM, WEIGHT_DECAY = 0.1, 0.5, 2e-4  # dbn_init's CD defaults for the first epochs
# (numerator, denominator, comparison, bound): the goals, as medians of per-round ratios.
CPU_GOALS = [
    ("dbn_init", "matmul_only", "<=", 1.2),
    ("sklearn_f32", "dbn_init", ">=", 2.5),
    ("learnergy", "dbn_init", ">=", 3.0),
    ("rbms", "dbn_init", ">=", 2.5),
    ("finetune_dbn_init", "finetune_plain", "<=", 1.2),
]
CUDA_GOALS = [  # plus the FLOP-limit goal at large batches (report())
    ("dbn_init", "matmul_graph", "<=", 2.0),  # >= 50% of the launch-bound throughput
    ("rbms", "dbn_init", ">=", 1.0),
]
GOAL_ROUNDS = 5  # a goal counts as met only on a median over at least this many rounds
# Dense TF32 tensor-core peaks (TFLOP/s) from the vendors' data sheets, for the share of the limit.
TF32_PEAK_TFLOPS = {"H200": 494.7, "H100": 494.7, "A100": 156.0, "L40S": 183.0, "A10": 62.5}
RATIOS = [
    ("dbn_init", "matmul_only"),
    ("dbn_init", "naive_torch"),
    ("dbn_init", "cd_grad_sgd"),
    ("dbn_init_loss", "dbn_init"),
    ("sklearn_f32", "dbn_init"),
    ("learnergy", "dbn_init"),
    ("rbms", "dbn_init"),
    ("compiled_cd", "cd_grad_sgd"),
    ("compiled_cd_x8", "cd_grad_sgd"),
    ("dbn_init", "matmul_graph"),
    ("finetune_dbn_init", "finetune_plain"),
    ("dbn_init_1t", "dbn_init"),
]


# --- worker side: data, contenders, one timed epoch ----------------------------------------------
def make_datamodule(args: argparse.Namespace, batch_size: int):
    """The set-up FashionMNISTDataModule cut to the first ``n`` images; random binary if no data."""
    import numpy as np

    from dbn_init.data import FashionMNISTDataModule

    class RandomBinaryImages(FashionMNISTDataModule):  # same shapes and dtype, so it runs anywhere
        def _load(self):
            rng = np.random.default_rng(0)
            train, test = ((rng.random((n, 28, 28)) < 0.3).astype(np.uint8) * 255 for n in (60000, 10000))
            return train, rng.integers(0, 10, 60000), test, rng.integers(0, 10, 10000)

    cls = FashionMNISTDataModule if os.path.isdir(args.data_root) else RandomBinaryImages
    dm = cls(root=args.data_root, batch_size=batch_size)
    dm.setup("fit")
    n = len(dm.pretrain_x) if args.n is None else args.n
    if not 1 <= n <= len(dm.pretrain_x):
        raise ValueError(f"expected --n in 1..{len(dm.pretrain_x)} (the pretraining split), got {n}")
    return cut(dm, n)


def cut(dm, n: int):
    """A copy of a set-up DataModule whose pretraining and training splits keep the first n images."""
    small = copy.copy(dm)  # its setup() is a no-op, so its loaders serve the splits set here
    small.pretrain_x, small.pretrain_y = dm.pretrain_x[:n], dm.pretrain_y[:n]
    small.train_x, small.train_y = dm.train_x[:n], dm.train_y[:n]
    return small


def device_of(args: argparse.Namespace):
    import torch

    return torch.device(args.device)


def seconds(epoch, args: argparse.Namespace | None = None) -> float:
    """Wall time of ``epoch()``; on a GPU, from an idle device to the end of its last kernel."""
    import torch

    cuda = args is not None and args.device == "cuda"
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    epoch()
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def quiet_trainer(args: argparse.Namespace):
    from lightning.pytorch import Trainer

    # train.py's per-stage Trainer, on the device asked for ("cpu" is what "auto" picks without a GPU).
    return Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        accelerator="gpu" if args.device == "cuda" else "cpu",
        devices=1,
        precision=args.precision,
    )


def pre_batched(dm, args, generator=None) -> list:
    """The pretraining images, shuffled and cut into batches on the device, before the clock starts."""
    import torch

    x = dm.pretrain_x
    order = torch.randperm(len(x), generator=generator)
    return list(x[order].to(device_of(args)).split(args.batch_size))


def matmul_only(dm, args) -> float:
    """The floor: CD-1's three matmuls and two rank-B updates into preallocated buffers, pre-batched;
    in-place sigmoids keep the values bounded; no sampling, no biases."""
    import torch

    batches, size, hidden, dev = pre_batched(dm, args), args.batch_size, args.hidden, device_of(args)
    n_visible = dm.pretrain_x.shape[1]
    w = torch.randn(hidden, n_visible, device=dev) * 0.01  # (H, V)
    buffers = [torch.empty(size, n, device=dev) for n in (hidden, n_visible, hidden)]

    def step(v, h0, v1, h1):
        torch.mm(v, w.t(), out=h0).sigmoid_()  # v -> h  (B, H)
        torch.mm(h0, w, out=v1).sigmoid_()  # h -> v  (B, V)
        torch.mm(v1, w.t(), out=h1).sigmoid_()  # v -> h  (B, H)
        w.addmm_(h0.t(), v, alpha=LR / len(v))  # + positive statistics (H, V)
        w.addmm_(h1.t(), v1, alpha=-LR / len(v))  # - negative statistics

    def epoch():
        for v in batches:
            step(v, *(b[: len(v)] for b in buffers))

    return seconds(epoch, args)


def matmul_graph(dm, args) -> float:
    """The kernel-launch bound on a GPU: matmul_only's step captured once as a CUDA graph and
    replayed per batch, each batch copied into the graph's static input (full batches only)."""
    import torch

    batches, size, hidden = pre_batched(dm, args), args.batch_size, args.hidden
    batches = [v for v in batches if len(v) == size]
    n_visible = dm.pretrain_x.shape[1]
    w = torch.randn(hidden, n_visible, device="cuda") * 0.01
    v_in = torch.empty(size, n_visible, device="cuda")
    h0, v1, h1 = (torch.empty(size, n, device="cuda") for n in (hidden, n_visible, hidden))

    def step():
        torch.mm(v_in, w.t(), out=h0).sigmoid_()
        torch.mm(h0, w, out=v1).sigmoid_()
        torch.mm(v1, w.t(), out=h1).sigmoid_()
        w.addmm_(h0.t(), v_in, alpha=LR / size)
        w.addmm_(h1.t(), v1, alpha=-LR / size)

    side = torch.cuda.Stream()  # warm up on a side stream, as torch.cuda.graphs asks
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        v_in.copy_(batches[0])
        step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()

    def epoch():
        for v in batches:
            v_in.copy_(v)
            graph.replay()

    return seconds(epoch, args)


def naive_torch(dm, args) -> float:
    """Hand-written CD-1: Bernoulli hidden sample, mean reconstruction, in-place momentum SGD with
    weight decay (dbn_init's defaults), pre-batched."""
    import torch

    dev = device_of(args)
    g = torch.Generator(device=dev).manual_seed(0)
    batches = pre_batched(dm, args, torch.Generator().manual_seed(0))
    n_visible = dm.pretrain_x.shape[1]
    w = torch.randn(args.hidden, n_visible, device=dev) * 0.01  # (H, V)
    b, c = torch.zeros(n_visible, device=dev), torch.zeros(args.hidden, device=dev)  # visible, hidden bias
    dw, db, dc = torch.zeros_like(w), torch.zeros_like(b), torch.zeros_like(c)  # momentum buffers

    def epoch():
        for v in batches:
            s = LR / len(v)
            ph0 = torch.sigmoid(torch.addmm(c, v, w.t()))  # p(h | v)  (B, H)
            pv1 = torch.sigmoid(torch.addmm(b, torch.bernoulli(ph0, generator=g), w))  # E[v | h]  (B, V)
            ph1 = torch.sigmoid(torch.addmm(c, pv1, w.t()))  # p(h | v1)  (B, H)
            dw.mul_(MOMENTUM).addmm_(ph0.t(), v, alpha=s).addmm_(ph1.t(), pv1, alpha=-s)
            dw.add_(w, alpha=-LR * WEIGHT_DECAY)
            db.mul_(MOMENTUM).add_(v.sum(0) - pv1.sum(0), alpha=s)
            dc.mul_(MOMENTUM).add_(ph0.sum(0) - ph1.sum(0), alpha=s)
            w.add_(dw)
            b.add_(db)
            c.add_(dc)

    return seconds(epoch, args)


def cd_grad_sgd(dm, args) -> float:
    """dbn_init's math without Lightning, as a one-process stage runs it: RBM.cd_grad_ (the CD
    gradient into .grad; the loss's value on every 50th step) stepped by the stage's own optimizer
    (RBMStage.configure_optimizers), pre-batched."""
    import torch

    from dbn_init.models import DBN

    dev = device_of(args)
    g = torch.Generator(device=dev).manual_seed(0)
    batches = pre_batched(dm, args, torch.Generator().manual_seed(0))
    stage = DBN(**TEXTBOOK_RBM, input_size=dm.input_size, hidden=[args.hidden], pretrain_epochs=1).stage(0).to(dev)
    rbm, optimizer = stage.rbm, stage.configure_optimizers()

    def epoch():
        for i, v in enumerate(batches):
            rbm.cd_grad_(
                v,
                k=stage.cd.cd_k,
                generator=g,
                sample_visible=stage.cd.sample_visible,
                value=i % stage.monitor_every == 0,
            )
            optimizer.step()

    return seconds(epoch, args)


def cd1_chain(weight, visible_bias, hidden_bias, v, uniforms):
    """CD-1's chain as dbn_init's RBM runs it (hidden sample by ``uniforms < p``, mean
    reconstruction), in one function for torch.compile to fuse: p(h | v), v1, p(h | v1)."""
    import torch

    data_probs = torch.sigmoid(torch.addmm(hidden_bias, v, weight.t()))
    hidden = (uniforms < data_probs).to(v.dtype)
    v_model = torch.sigmoid(torch.addmm(visible_bias, hidden, weight))
    return data_probs, v_model, torch.sigmoid(torch.addmm(hidden_bias, v_model, weight.t()))


def compile_mode(args: argparse.Namespace) -> str | None:
    return "reduce-overhead" if args.device == "cuda" else None  # CUDA graphs on a GPU


def compiled_cd(dm, args) -> float:
    """cd_grad_sgd with the chain compiled (torch.compile; the uniforms drawn eagerly from the
    same generator, as the eager step draws them); the gradient and the stage's optimizer as there.
    Compilation happens in the warm-up, untimed; full batches only (a last short one would
    recompile for its shape)."""
    import torch

    from dbn_init.models import DBN
    from dbn_init.rbm import _cd_gradients

    dev = device_of(args)
    g = torch.Generator(device=dev).manual_seed(0)
    batches = [v for v in pre_batched(dm, args, torch.Generator().manual_seed(0)) if len(v) == args.batch_size]
    stage = DBN(**TEXTBOOK_RBM, input_size=dm.input_size, hidden=[args.hidden], pretrain_epochs=1).stage(0).to(dev)
    rbm, optimizer = stage.rbm, stage.configure_optimizers()
    chain = torch.compile(cd1_chain, mode=compile_mode(args), dynamic=False, fullgraph=True)
    params = (rbm.weight, rbm.visible_bias, rbm.hidden_bias)
    for p in params:
        p.grad = torch.zeros_like(p)

    def epoch():
        for v in batches:
            uniforms = torch.empty(len(v), args.hidden, device=dev).uniform_(generator=g)
            factors = chain(*(p.detach() for p in params), v, uniforms)
            _cd_gradients(
                v, factors[0], factors[1], factors[2], dtype=rbm.weight.dtype, out=tuple(p.grad for p in params)
            )
            optimizer.step()

    return seconds(epoch, args)


def cd1_updates(
    weight, visible_bias, hidden_bias, velocity, batches, uniforms, lr: float, momentum: float, decay: float
):
    """GROUP CD-1 updates with momentum SGD and weight decay (the stage's optimizer's law) in one
    function, so that torch.compile can fuse across them. ``velocity``: (dW, db, dc)."""

    dw, db, dc = velocity
    for v, u in zip(batches.unbind(0), uniforms.unbind(0)):
        data_probs, v_model, model_probs = cd1_chain(weight, visible_bias, hidden_bias, v, u)
        n = v.shape[0]
        grad_w = (model_probs.t() @ v_model - data_probs.t() @ v) / n + decay * weight
        dw = momentum * dw + grad_w
        db = momentum * db + (v_model.mean(0) - v.mean(0))
        dc = momentum * dc + (model_probs.mean(0) - data_probs.mean(0))
        weight, visible_bias, hidden_bias = weight - lr * dw, visible_bias - lr * db, hidden_bias - lr * dc
    return weight, visible_bias, hidden_bias, (dw, db, dc)


def compiled_cd_x8(dm, args) -> float:
    """GROUP CD-1 updates per compiled call (cd1_updates), on GROUP full batches stacked on the
    device; the last group is filled up with the epoch's first batches (at most 7 more of 422)."""
    import torch

    dev = device_of(args)
    g = torch.Generator(device=dev).manual_seed(0)
    batches = [v for v in pre_batched(dm, args, torch.Generator().manual_seed(0)) if len(v) == args.batch_size]
    batches += batches[: -len(batches) % GROUP]  # the last group filled from the first batches again
    groups = [torch.stack(batches[i : i + GROUP]) for i in range(0, len(batches), GROUP)]
    n_visible = dm.pretrain_x.shape[1]
    weight = torch.randn(args.hidden, n_visible, device=dev) * 0.01
    visible_bias, hidden_bias = torch.zeros(n_visible, device=dev), torch.zeros(args.hidden, device=dev)
    velocity = (torch.zeros_like(weight), torch.zeros_like(visible_bias), torch.zeros_like(hidden_bias))
    updates = torch.compile(cd1_updates, mode=compile_mode(args), dynamic=False)

    def epoch():
        nonlocal weight, visible_bias, hidden_bias, velocity
        for vs in groups:
            uniforms = torch.empty(GROUP, args.batch_size, args.hidden, device=dev).uniform_(generator=g)
            weight, visible_bias, hidden_bias, velocity = updates(
                weight, visible_bias, hidden_bias, velocity, vs, uniforms, LR, MOMENTUM, WEIGHT_DECAY
            )
            if args.device == "cuda":  # CUDA graphs reuse their outputs' memory: keep this step's
                weight, visible_bias, hidden_bias = weight.clone(), visible_bias.clone(), hidden_bias.clone()
                velocity = tuple(t.clone() for t in velocity)

    return seconds(epoch, args)


def dbn_init(dm, args) -> float:
    """What train.py does per stage (DBN.pretrain): a quiet Trainer fits DBN(...).stage(0) on
    PretrainData(dm, steps_per_batch) (8 CD updates per Lightning step, the default)."""
    from dbn_init.models import DBN
    from dbn_init.pretrain import PretrainData

    dbn = DBN(**TEXTBOOK_RBM, input_size=dm.input_size, hidden=[args.hidden], pretrain_epochs=1)
    stage, data, trainer = dbn.stage(0), PretrainData(dm, dbn.hparams.steps_per_batch), quiet_trainer(args)
    return seconds(lambda: trainer.fit(stage, datamodule=data), args)


def dbn_init_loss(dm, args) -> float:
    """As dbn_init, with the CD update stepped as a loss through autograd (RBM.cd_loss + backward),
    the path DDP and 16-bit mixed precision take, instead of RBM.cd_grad_ into .grad."""
    from dbn_init.models import DBN
    from dbn_init.pretrain import PretrainData, RBMStage

    class LossPath(RBMStage):
        def on_fit_start(self) -> None:
            super().on_fit_start()
            self.backprop_cd = True

    dbn = DBN(**TEXTBOOK_RBM, input_size=dm.input_size, hidden=[args.hidden], pretrain_epochs=1)
    stage = LossPath(dbn.rbms, 0, dbn.cd)
    data, trainer = PretrainData(dm, dbn.hparams.steps_per_batch), quiet_trainer(args)
    return seconds(lambda: trainer.fit(stage, datamodule=data), args)


def sklearn_rbm(dtype: str):
    def run(dm, args) -> float:
        """sklearn's BernoulliRBM, n_iter=1. Persistent CD (Tieleman 2008), same five matmuls."""
        from sklearn.neural_network import BernoulliRBM

        x = dm.pretrain_x.numpy().astype(dtype)
        rbm = BernoulliRBM(
            n_components=args.hidden, batch_size=args.batch_size, n_iter=1, learning_rate=LR, random_state=0
        )
        return seconds(lambda: rbm.fit(x))

    return run


def learnergy(dm, args) -> float:
    """learnergy's Bernoulli RBM; its fit also computes a pseudo-likelihood per batch."""
    from learnergy.models.bernoulli import RBM
    from torch.utils.data import TensorDataset

    rbm = RBM(
        n_visible=dm.input_size,
        n_hidden=args.hidden,
        steps=1,
        learning_rate=LR,
        momentum=0,
        decay=0,
        temperature=1,
        use_gpu=args.device == "cuda",
    )
    data = TensorDataset(dm.pretrain_x, dm.pretrain_y)
    return seconds(lambda: rbm.fit(data, batch_size=args.batch_size, epochs=1), args)


def rbms(dm, args) -> float:
    """The rbms package's own training step, as its ``train`` loop runs it for training type "cd"
    (chains started at the batch): rbms.training.pcd.fit_batch_pcd with its defaults (centred
    gradient, then normalised) and its SGD (maximize=True), over the same shuffled batches."""
    import torch
    from rbms.bernoulli_bernoulli.classes import BBRBM
    from rbms.training.pcd import fit_batch_pcd

    dev = device_of(args)
    batches = pre_batched(dm, args, torch.Generator().manual_seed(0))
    n_visible = dm.pretrain_x.shape[1]
    params = BBRBM(
        weight_matrix=torch.randn(n_visible, args.hidden, device=dev) * 0.01,  # (V, H) in rbms
        vbias=torch.zeros(n_visible, device=dev),
        hbias=torch.zeros(args.hidden, device=dev),
    )
    params.init_grad()
    optimizer = torch.optim.SGD(params.parameters(), lr=LR, maximize=True)
    weights = torch.ones(args.batch_size, device=dev)

    def epoch():
        with torch.no_grad():
            for v in batches:
                w = weights[: len(v)]
                chains = params.init_chains(len(v), weights=w, start_v=v)
                optimizer.zero_grad(set_to_none=False)
                fit_batch_pcd((v, w), chains, params, gibbs_steps=1, beta=1.0)
                optimizer.step()

    return seconds(epoch, args)


def finetune_dbn_init(dm, args) -> float:
    """One fine-tuning epoch of Baseline(hidden=[256, 256]) in the same quiet Trainer, batch 100, at a
    constant rate (the plain loop steps no scheduler)."""
    from dbn_init.models import Baseline

    model = Baseline(input_size=dm.input_size, num_classes=10, hidden=[256, 256], lr_schedule="constant")
    trainer = quiet_trainer(args)
    return seconds(lambda: trainer.fit(model, datamodule=dm), args)


def finetune_plain(dm, args) -> float:
    """The same model, optimizer (its own configure_optimizers: fused Adam, lr 1e-3) and batch size in a
    plain loop over shuffled indices."""
    import torch
    import torch.nn.functional as F

    from dbn_init.models import Baseline

    dev = device_of(args)
    model = Baseline(input_size=dm.input_size, num_classes=10, hidden=[256, 256], lr_schedule="constant").to(dev)
    optimizer = model.configure_optimizers()
    x, y = dm.train_x.to(dev), dm.train_y.to(dev)

    def epoch():
        for idx in torch.randperm(len(x), device=dev).split(dm.batch_size):
            loss = F.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    return seconds(epoch, args)


def matmul_peak(args: argparse.Namespace) -> float:
    """The device's measured matmul rate (TFLOP/s): --peak-size^3 fp32 products (TF32 where the
    --matmul-precision allows it), best of 3 timings of 10."""
    import torch

    dev = device_of(args)
    size = args.peak_size
    a, b = torch.randn(size, size, device=dev), torch.randn(size, size, device=dev)
    reps = 10 if args.device == "cuda" else 2
    a @ b  # warm-up
    best = min(seconds(lambda: [a @ b for _ in range(reps)], args) for _ in range(3))
    return 2 * size**3 * reps / best / 1e12


RUNNERS = {
    "matmul_only": matmul_only,
    "matmul_graph": matmul_graph,
    "naive_torch": naive_torch,
    "cd_grad_sgd": cd_grad_sgd,
    "compiled_cd": compiled_cd,
    "compiled_cd_x8": compiled_cd_x8,
    "dbn_init_loss": dbn_init_loss,
    "dbn_init": dbn_init,
    "dbn_init_1t": dbn_init,
    "sklearn_f32": sklearn_rbm("float32"),
    "sklearn_f64": sklearn_rbm("float64"),
    "learnergy": learnergy,
    "rbms": rbms,
    "finetune_dbn_init": finetune_dbn_init,
    "finetune_plain": finetune_plain,
}


def batch_size_of(name: str, args: argparse.Namespace) -> int:
    return FINETUNE_BATCH if name.startswith("finetune") else args.batch_size


def threads_of(name: str, args: argparse.Namespace) -> int:
    return 1 if name.endswith("_1t") else args.threads


def device_name(args: argparse.Namespace) -> str:
    import torch

    return torch.cuda.get_device_name(0) if args.device == "cuda" else platform.processor() or platform.machine()


def status_mb(key: str) -> float:
    """A ``Vm*`` line of /proc/self/status, in MB."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":")) / 1024


def worker(args: argparse.Namespace) -> None:
    """Time one epoch of one contender in this (fresh) process and print a JSON line."""
    import logging
    import warnings

    import torch
    from threadpoolctl import threadpool_limits

    name = args.worker
    torch.set_num_threads(threads_of(name, args))
    threadpool_limits(threads_of(name, args))  # numpy's BLAS too, for sklearn
    torch.set_float32_matmul_precision(args.matmul_precision)  # "high": TF32 on a GPU that has it
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")  # Lightning's "few workers" hints; stderr shows only on failure
    if name == "matmul_peak":
        print(json.dumps({"tflops": matmul_peak(args), "device": device_name(args)}))
        return
    dm = make_datamodule(args, batch_size_of(name, args))
    warm = GROUP if name == "compiled_cd_x8" else 2  # batches; compiling happens here too
    RUNNERS[name](cut(dm, warm * batch_size_of(name, args)), args)  # warm-up: lazy imports, BLAS, allocator
    if not name.startswith(("dbn_init", "finetune_dbn_init")):
        # Importing dbn_init imported Lightning, which sets this; a program without Lightning has
        # it unset, and with it torch.optim.Adam reloads NVML on every step where there is no GPU.
        os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS (Linux >= 4.0)
        start = status_mb("VmRSS")
    except OSError:  # no /proc: whole-process peak instead
        start = None
    sec = RUNNERS[name](dm, args)
    peak = status_mb("VmHWM") if start is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "seconds": sec,
                "n": len(dm.pretrain_x),
                "peak_rss_mb": round(peak, 1),
                "epoch_rss_mb": None if start is None else round(peak - start, 1),
                "data": "fashion-mnist" if os.path.isdir(args.data_root) else "random",
                "device": device_name(args),
            }
        )
    )


# --- driver: interleaved rounds of subprocesses, then the table and the JSON line -----------------
def run_worker(name: str, args: argparse.Namespace) -> dict:
    threads = str(threads_of(name, args))
    env = dict(os.environ, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, OPENBLAS_NUM_THREADS=threads)
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--worker",
        name,
        "--threads",
        str(args.threads),
        "--batch-size",
        str(args.batch_size),
        "--hidden",
        str(args.hidden),
        "--data-root",
        args.data_root,
        "--device",
        args.device,
        "--precision",
        args.precision,
        "--matmul-precision",
        args.matmul_precision,
        "--peak-size",
        str(args.peak_size),
    ]
    cmd += [] if args.n is None else ["--n", str(args.n)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"]
        return {"error": lines[-1], "stderr": "\n".join(lines[-15:])}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(names: list[str], unavailable: dict, args: argparse.Namespace) -> dict[str, list[dict]]:
    """Each round runs each contender once, in RUN_ORDER, reversed in odd rounds (so neither side of
    a pair always goes first); failures go to ``unavailable``. Each run records its round."""
    runs: dict[str, list[dict]] = {c: [] for c in names}
    order = [c for c in RUN_ORDER if c in names]
    for r in range(args.rounds):
        for name in order if r % 2 == 0 else order[::-1]:
            if name in unavailable:
                continue
            res = run_worker(name, args)
            if "error" in res:
                unavailable[name] = res["error"]
                print(
                    f"round {r + 1}/{args.rounds}  {name:<18} FAILED: {res['error']}\n{res['stderr']}", file=sys.stderr
                )
            else:
                runs[name].append({**res, "round": r})
                print(f"round {r + 1}/{args.rounds}  {name:<18} {res['seconds']:8.3f} s", flush=True)
    return runs


def report(runs: dict[str, list[dict]], unavailable: dict, args: argparse.Namespace, peak_tflops: dict) -> dict:
    """Print the table and the goals; return every figure for the JSON line."""
    done = {c: v for c, v in runs.items() if v}
    med = {c: statistics.median(x["seconds"] for x in v) for c, v in done.items()}
    low = {c: min(x["seconds"] for x in v) for c, v in done.items()}
    peak = {c: max(x["peak_rss_mb"] for x in v) for c, v in done.items()}
    extra = {
        c: max((x["epoch_rss_mb"] for x in v if x["epoch_rss_mb"] is not None), default=None) for c, v in done.items()
    }

    def per_round(a: str, b: str) -> list[float]:
        """a's epoch over b's epoch in the same round, for every round both ran."""
        b_in = {x["round"]: x["seconds"] for x in done.get(b, [])}
        return [x["seconds"] / b_in[x["round"]] for x in done.get(a, []) if x["round"] in b_in]

    def ratio(a: str, b: str) -> float | None:
        pairs = per_round(a, b)
        return statistics.median(pairs) if pairs else None

    def ratio_of_medians(a: str, b: str) -> float | None:
        return med[a] / med[b] if a in med and b in med else None

    n = next((x["n"] for v in done.values() for x in v), args.n)
    flops = n * 10 * 784 * args.hidden  # per CD-1 epoch: 5 products of 2 x batch x 784 x hidden per step
    tflops = {c: flops / med[c] / 1e12 for c in done if c in CD_CONTENDERS}
    limit = peak_tflops.get("spec") or peak_tflops.get("measured")
    device = next((x["device"] for v in done.values() for x in v), args.device)
    print(
        f"\nOne epoch on {device} ({args.device}), n={n}, batch {args.batch_size} (fine-tuning {FINETUNE_BATCH}), "
        f"784->{args.hidden}, {args.threads} threads, matmul precision {args.matmul_precision}, stage precision "
        f"{args.precision}, {args.rounds} rounds; ratio (median of per-round ratios) to matmul_only (fine-tuning: to "
        f"finetune_plain); TFLOP/s of the CD work (and its share of {limit and f'{limit:.1f}'} TFLOP/s, "
        f"{'the data sheet' if peak_tflops.get('spec') else f'a measured {args.peak_size}^3 matmul'})"
    )
    print(
        f"{'contender':<18} {'median s':>9} {'min s':>8} {'ratio':>7} {'samples/s':>11} {'TFLOP/s':>8} "
        f"{'of limit':>8} {'peak RSS MB':>12} {'epoch +MB':>10}"
    )
    for c in runs:
        if c not in done:
            print(f"{c:<18} unavailable: {unavailable.get(c, '?')}")
            continue
        rt = ratio(c, "finetune_plain" if c.startswith("finetune") else "matmul_only")
        rate = f"{tflops[c]:8.3f} {tflops[c] / limit:8.1%}" if c in tflops and limit else f"{'-':>8} {'-':>8}"
        print(
            f"{c:<18} {med[c]:9.3f} {low[c]:8.3f} {'-' if rt is None else f'{rt:.2f}x':>7} {n / med[c]:11,.0f} "
            f"{rate} {peak[c]:12.0f} {'-' if extra[c] is None else f'{extra[c]:.0f}':>10}"
        )
    goals = {}
    for a, b, op, bound in CUDA_GOALS if args.device == "cuda" else CPU_GOALS:
        pairs, key = per_round(a, b), f"{a}/{b} {op} {bound}"
        goals[key] = goal_line(key, pairs, op, bound)
    if args.device == "cuda" and args.batch_size >= 2000 and "dbn_init" in tflops and limit:
        share, key = tflops["dbn_init"] / limit, "dbn_init TFLOP/s >= 30% of the TF32 limit"
        goals[key] = share >= 0.3 and args.rounds >= GOAL_ROUNDS
        print(f"goal {key}: {share:.1%} {'met' if goals[key] else 'NOT met'}")
    return {
        **{f"{c}_s": med.get(c) for c in CONTENDERS},
        **{f"{a}_over_{b}": ratio(a, b) for a, b in RATIOS},
        "goals_met": goals,
        "ratio_method": "median over rounds of the two contenders' ratio within a round",
        "ratio_spread": {f"{a}_over_{b}": spread(per_round(a, b)) for a, b in RATIOS},
        "ratios_of_medians": {f"{a}_over_{b}": ratio_of_medians(a, b) for a, b in RATIOS},
        "min_s": low,
        "all_s": {c: [round(x["seconds"], 4) for x in v] for c, v in done.items()},  # in round order
        "tflops": tflops,
        "samples_per_s": {c: n / med[c] for c in done},
        "peak_tflops": peak_tflops,
        "peak_rss_mb": peak,
        "epoch_rss_mb": extra,
        "rss_method": "own subprocess per run; VmHWM reset (/proc/self/clear_refs) before the epoch, read after",
        "unavailable": unavailable,
        "rounds": args.rounds,
        "threads": args.threads,
        "n": n,
        "batch_size": args.batch_size,
        "finetune_batch_size": FINETUNE_BATCH,
        "hidden": args.hidden,
        "device": device,
        "precision": args.precision,
        "matmul_precision": args.matmul_precision,
        "data": next((x["data"] for v in done.values() for x in v), None),
        "versions": {
            "python": platform.python_version(),
            **{k: version(k) for k in ("dbn_init", "torch", "lightning", "scikit-learn", "numpy", "learnergy", "rbms")},
        },
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def spread(pairs: list[float]) -> list[float] | None:
    """The lowest and highest per-round ratio."""
    return [round(min(pairs), 3), round(max(pairs), 3)] if pairs else None


def goal_line(key: str, pairs: list[float], op: str, bound: float) -> bool | None:
    """Print one goal: met only when the median over at least GOAL_ROUNDS rounds meets it."""
    if not pairs:
        print(f"goal {key}: n/a")
        return None
    value = statistics.median(pairs)
    met = (value <= bound if op == "<=" else value >= bound) and len(pairs) >= GOAL_ROUNDS
    short = f" (only {len(pairs)} rounds; {GOAL_ROUNDS} needed)" if len(pairs) < GOAL_ROUNDS else ""
    low, high = spread(pairs)
    print(f"goal {key}: {value:.2f} (rounds {low:.2f}-{high:.2f}) {'met' if met else 'NOT met'}{short}")
    return met


def version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def measured_peak(args: argparse.Namespace) -> dict:
    """The device's FLOP limit: a measured large matmul and, for a known GPU, its data sheet's
    dense TF32 figure (what the GPU goal is stated against)."""
    res = run_worker("matmul_peak", args)
    if "error" in res:
        return {"measured": None, "spec": None, "error": res["error"]}
    spec = next((v for k, v in TF32_PEAK_TFLOPS.items() if k in res["device"]), None) if args.device == "cuda" else None
    return {"measured": res["tflops"], "spec": spec, "device": res["device"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=None, help="images from the pretraining split (default: all 54000)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians over them")
    p.add_argument("--batch-size", type=int, default=128, help="RBM batch size (fine-tuning uses 100)")
    p.add_argument("--hidden", type=int, default=512, help="RBM hidden units")
    p.add_argument("--threads", type=int, default=2, help="torch/OpenMP/BLAS threads per contender")
    p.add_argument(
        "--data-root",
        default="/usr/share/datasets/fashion-mnist",
        help="Fashion-MNIST IDX folder; random binary images of the same shape if it is missing",
    )
    p.add_argument(
        "--skip",
        default="",
        help=f"comma list of contenders or prefixes (e.g. learnergy,sklearn) from {', '.join(CONTENDERS)}",
    )
    p.add_argument("--sklearn-f64", action="store_true", help="also time sklearn in float64")
    p.add_argument("--peak-size", type=int, default=4096, help="side of the square matmul that measures the peak")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where every contender runs")
    p.add_argument(
        "--precision",
        default="32-true",
        help="the dbn_init stages' Trainer precision, e.g. bf16-mixed (the other contenders stay fp32)",
    )
    p.add_argument(
        "--matmul-precision",
        choices=["highest", "high", "medium"],
        default="highest",
        help="torch.set_float32_matmul_precision for every contender: high allows TF32 on a GPU",
    )
    p.add_argument(
        "--worker", choices=[*CONTENDERS, "matmul_peak"], help=argparse.SUPPRESS
    )  # internal: one timed epoch
    args = p.parse_args()
    if args.worker:
        worker(args)
        return 0
    if args.rounds < 1 or args.threads < 1 or args.batch_size < 1 or args.hidden < 1:
        p.error("expected --rounds, --threads, --batch-size and --hidden >= 1")

    skip = [s for s in args.skip.split(",") if s]

    def skipped(c: str) -> bool:
        return any(c == s or c.startswith(s + "_") for s in skip)

    if unknown := [s for s in skip if not any(c == s or c.startswith(s + "_") for c in CONTENDERS)]:
        p.error(f"expected --skip names or prefixes of {', '.join(CONTENDERS)}, got {', '.join(unknown)}")
    elsewhere = CPU_ONLY if args.device == "cuda" else CUDA_ONLY
    names = [
        c for c in CONTENDERS if not skipped(c) and c not in elsewhere and (c != "sklearn_f64" or args.sklearn_f64)
    ]
    if not os.path.isdir(args.data_root):
        print(f"note: {args.data_root} is missing; timing random binary images of Fashion-MNIST's shape")
    unavailable = {}
    for peer in ("learnergy", "rbms"):
        if peer in names and importlib.util.find_spec(peer) is None:
            unavailable[peer] = f"not installed (pip install {peer})"
    peak_tflops = measured_peak(args)
    runs = measure(names, unavailable, args)
    print(json.dumps(report(runs, unavailable, args, peak_tflops)))
    return 1 if any(c not in OPTIONAL for c in unavailable) else 0


if __name__ == "__main__":
    sys.exit(main())
