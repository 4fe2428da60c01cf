"""How far the CD-1 gradient moves from fp32 under bf16 autocast and TF32, and what each costs.

For a 784->512 Bernoulli RBM on Fashion-MNIST batches (random binary images of that shape when
the folder is missing): the same CD-1 steps (same generator seed, same batches, the weights of
an RBM after a few hundred fp32 updates, where the positive and negative statistics are close)
in fp32, in bf16 autocast (as ``--trainer.precision bf16-mixed`` runs them) and, on CUDA, with
TF32 matmuls. Each prints the weight gradient's relative distance from fp32's, summed over
the batches, and the milliseconds per CD step. The reference for the distance is fp32 itself
under a second generator seed (pure sampling noise): a precision is harmless when it stays well
below that. The last line is one JSON object with every figure.

  python benchmarks/cd_precision.py            # CUDA if present, else CPU
  python benchmarks/cd_precision.py --device cpu --batches 20
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from dbn_init.rbm import RBM  # noqa: E402


def load_batches(root: str, n_batches: int, batch: int, device: torch.device) -> tuple[torch.Tensor, str]:
    """(n_batches * batch, 784) images in [0, 1]: Fashion-MNIST's first ones, or random binary."""
    n = n_batches * batch
    if os.path.isdir(root):
        from dbn_init.data import load_idx_dataset

        images = load_idx_dataset(root, "FashionMNIST")[0][:n]
        return torch.tensor(images.reshape(len(images), -1), dtype=torch.float32, device=device) / 255.0, root
    g = torch.Generator().manual_seed(0)
    return (torch.rand(n, 784, generator=g) < 0.3).float().to(device), "random"


def gradients(rbm: RBM, x: torch.Tensor, batch: int, seed: int, mode: str) -> tuple[list[torch.Tensor], float]:
    """The weight gradient of each batch's CD-1 step (weights fixed) and milliseconds per step."""
    device = x.device
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if mode == "bf16" else contextlib.nullcontext()
    torch.backends.cuda.matmul.allow_tf32 = mode == "tf32"
    generator = torch.Generator(device=device).manual_seed(seed)
    grads = []
    with autocast:
        rbm.cd_grad_(x[:batch], generator=torch.Generator(device=device).manual_seed(seed + 1))  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for v in x.split(batch):
            rbm.cd_grad_(v, generator=generator, value=False)
            grads.append(rbm.weight.grad.clone())
        if device.type == "cuda":
            torch.cuda.synchronize()
        ms = (time.perf_counter() - start) / len(grads) * 1e3
    torch.backends.cuda.matmul.allow_tf32 = False
    return grads, ms


def distance(grads: list[torch.Tensor], reference: list[torch.Tensor]) -> float:
    """|sum of gradients - sum of reference| / |sum of reference|: what an epoch's updates see."""
    a, b = torch.stack(grads).sum(0), torch.stack(reference).sum(0)
    return float((a - b).norm() / b.norm())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batches", type=int, default=50, help="CD-1 steps compared")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--warm-steps", type=int, default=300, help="fp32 CD-1 updates before comparing")
    p.add_argument("--data-root", default="/usr/share/datasets/fashion-mnist")
    args = p.parse_args()
    if args.batches < 1 or args.batch_size < 1 or args.warm_steps < 0:
        p.error("expected --batches, --batch-size >= 1 and --warm-steps >= 0")
    device = torch.device(args.device)
    x, data = load_batches(args.data_root, max(args.batches, args.warm_steps), args.batch_size, device)

    torch.manual_seed(0)
    rbm = RBM(784, 512).to(device)
    optimizer = torch.optim.SGD(rbm.parameters(), lr=0.1, momentum=0.5)
    generator = torch.Generator(device=device).manual_seed(1)
    for v in x[: args.warm_steps * args.batch_size].split(args.batch_size):  # plain fp32 CD-1 training
        rbm.cd_grad_(v, generator=generator, value=False)
        optimizer.step()
    x = x[: args.batches * args.batch_size]

    reference, fp32_ms = gradients(rbm, x, args.batch_size, seed=10, mode="fp32")
    noise, _ = gradients(rbm, x, args.batch_size, seed=11, mode="fp32")
    result = {
        "device": str(device),
        "data": data,
        "batches": args.batches,
        "batch_size": args.batch_size,
        "fp32_ms_per_step": fp32_ms,
        "sampling_noise_rel": distance(noise, reference),
    }
    print(
        f"{device}, {data}: {args.batches} CD-1 steps of batch {args.batch_size}, 784->512, after "
        f"{args.warm_steps} fp32 updates"
    )
    print(
        f"fp32             {fp32_ms:8.3f} ms/step   another seed (sampling noise): "
        f"{result['sampling_noise_rel']:.2e} from fp32"
    )
    for mode in ["bf16"] + (["tf32"] if device.type == "cuda" else []):
        grads, ms = gradients(rbm, x, args.batch_size, seed=10, mode=mode)
        result[f"{mode}_ms_per_step"], result[f"{mode}_rel"] = ms, distance(grads, reference)
        print(f"{mode:<16} {ms:8.3f} ms/step   same seed: {result[f'{mode}_rel']:.2e} from fp32")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
