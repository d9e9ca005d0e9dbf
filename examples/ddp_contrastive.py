"""CLIP-style contrastive training with DistributedDataParallel and fastmi's ``group=``.

Two small encoders map the two views of a synthetic paired dataset to embeddings; the loss is the
symmetric InfoNCE of the cosine critic with a learned temperature (CLIP), computed by
``fastmi.nn.InfoNCESeparable(..., group="world")``: every rank passes only its shard of the batch and
gets the loss of the whole global batch (negatives from every rank), with gradients such that DDP's
averaging gives exactly the single-process update. So

    torchrun --nproc_per_node=2 examples/ddp_contrastive.py --steps 5 --out ddp.pt
    python examples/ddp_contrastive.py --steps 5 --out single.pt

train the same model: the two runs end with the same parameters (float tolerance). The global batch
(--batch) is the same in both; under torchrun each rank takes its contiguous slice of it, as
DistributedSampler would. gloo on CPUs; with CUDA GPUs (one per process) the same script uses NCCL.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.distributed as dist
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout
import fastmi.nn  # noqa: E402


class CLIP(nn.Module):
    """Two encoders and the loss; the learned temperature lives here so DDP averages its gradient too."""

    def __init__(self, dim_a: int, dim_b: int, embed: int, group):
        super().__init__()
        self.encode_a = nn.Sequential(nn.Linear(dim_a, 64), nn.GELU(), nn.Linear(64, embed))
        self.encode_b = nn.Sequential(nn.Linear(dim_b, 64), nn.GELU(), nn.Linear(64, embed))
        self.loss = fastmi.nn.InfoNCESeparable(symmetric=True, normalize=True, learn_temperature=True,
                                               temperature=0.1, group=group)

    def forward(self, a, b):
        return self.loss(self.encode_a(a), self.encode_b(b))


def batch(step: int, size: int, dim_a: int, dim_b: int, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The global batch of one step: two noisy views of shared latent factors (the same on every rank)."""
    g = torch.Generator().manual_seed(1000 + step)
    z = torch.randn(size, 8, generator=g, dtype=dtype)
    mix_a = torch.randn(8, dim_a, generator=torch.Generator().manual_seed(1), dtype=dtype)
    mix_b = torch.randn(8, dim_b, generator=torch.Generator().manual_seed(2), dtype=dtype)
    a = z @ mix_a + 0.3 * torch.randn(size, dim_a, generator=g, dtype=dtype)
    b = z @ mix_b + 0.3 * torch.randn(size, dim_b, generator=g, dtype=dtype)
    return a, b


def shard_of(n: int, rank: int, world_size: int) -> slice:
    """This rank's contiguous rows of n (the first n % world_size ranks take one more)."""
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (rank < extra))


def train(steps: int = 5, batch_size: int = 64, lr: float = 0.05, dtype=torch.float64, device="cpu", log=None):
    """Train from a fixed seed; distributed when a process group is initialised. Returns the final
    parameters (a state_dict on the CPU) and the per-step (loss, mi)."""
    distributed = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    torch.manual_seed(0)  # the same initial parameters on every rank (DDP also broadcasts rank 0's)
    model = CLIP(12, 10, 16, "world" if distributed else None).to(dtype=dtype, device=device)
    net = nn.parallel.DistributedDataParallel(model) if distributed else model
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    history = []
    for step in range(steps):
        a, b = batch(step, batch_size, 12, 10, dtype)
        rows = shard_of(batch_size, rank, world)
        out = net(a[rows].to(device), b[rows].to(device))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        history.append((float(out.loss.detach()), float(out.mi)))
        if log and rank == 0:
            log(f"step {step}: loss {history[-1][0]:.6f}  mi {float(out.mi):.4f} nats  "
                f"temperature {float(model.loss.temperature):.4f}  ({world} process{'es' if world > 1 else ''})")
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}, history


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64, help="global batch size (split over the processes)")
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float64")
    parser.add_argument("--out", help="save the final parameters here (rank 0); refuses to overwrite a file")
    args = parser.parse_args(argv)
    if args.out and os.path.exists(args.out):
        print(f"ddp_contrastive: {args.out} exists; choose another --out", file=sys.stderr)
        return 2
    device = "cpu"
    if "RANK" in os.environ:  # started by torchrun
        cuda = torch.cuda.is_available()
        if cuda:
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if cuda else "gloo")
    try:
        params, _ = train(args.steps, args.batch, args.lr, getattr(torch, args.dtype), device, log=print)
        if args.out and (not dist.is_initialized() or dist.get_rank() == 0):
            torch.save(params, args.out)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
