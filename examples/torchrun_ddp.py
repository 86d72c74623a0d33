"""kexue under ``torchrun``: contrastive training with DDP and FlatNCE on negatives gathered from every rank.

Your DDP set-up stays as it is (process group, ``DistributedDataParallel``, one data shard per rank). kexue adds
``flat_nce(..., gather=True)``: every rank scores its anchors against the keys of *all* ranks, with gradients that
flow back to the rank that produced each key, so two ranks of batch B train like one process with batch 2B.
FlatNCE (kexue.fm/archives/8586) is InfoNCE without its float-error collapse at small batches; ``info_nce`` takes
the same arguments.

The data is synthetic (noisy views of random points), so it runs anywhere; gloo on CPU, NCCL on GPUs:

    torchrun --nproc_per_node=2 examples/torchrun_ddp.py --steps 100
    python examples/torchrun_ddp.py                  # one process works too
"""

from __future__ import annotations

import argparse
import gc
import os

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from kexue.losses import flat_nce


def views(x: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Two noisy views of each row of ``x``: the positive pair of contrastive learning."""
    noise = torch.randn((2, *x.shape), generator=generator)
    return x + 0.3 * noise[0], x + 0.3 * noise[1]


def train(args: argparse.Namespace, rank: int, world: int, device: torch.device) -> float:
    """Train the encoder on this rank's shard; return the retrieval top-1 accuracy of the trained encoder."""
    distributed = world > 1
    torch.manual_seed(0)  # the same initial weights on every rank
    encoder: nn.Module = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 16)).to(device)
    if distributed:
        encoder = DistributedDataParallel(encoder)
    opt = torch.optim.Adam(encoder.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(1 + rank)  # each rank draws its own shard

    for step in range(args.steps):
        x = torch.randn(args.batch_size, 32, generator=gen)
        q, k = (v.to(device) for v in views(x, gen))
        loss, info = flat_nce(encoder(q), encoder(k), temperature=0.1, gather=distributed, return_info_nce=True)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if rank == 0 and (step % 25 == 0 or step == args.steps - 1):
            print(f"step {step:4d}  InfoNCE {info.item():.4f}  (batch {args.batch_size} x {world} ranks)")

    if distributed:  # DDP keeps the replicas identical
        weights = torch.cat([p.detach().reshape(-1) for p in encoder.parameters()])
        gathered = [torch.empty_like(weights) for _ in range(world)]
        dist.all_gather(gathered, weights)
        assert all(torch.equal(gathered[0], w) for w in gathered), "DDP replicas diverged"

    # Retrieval on fresh data: how often is a view's nearest neighbour among the other views its own positive?
    x = torch.randn(256, 32, generator=torch.Generator().manual_seed(99))
    q, k = (v.to(device) for v in views(x, torch.Generator().manual_seed(100)))
    with torch.no_grad():
        zq, zk = (nn.functional.normalize(encoder(v), dim=1) for v in (q, k))
    return float(((zq @ zk.T).argmax(1) == torch.arange(256, device=device)).float().mean())


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=32, help="per rank")
    args = parser.parse_args(argv)

    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu")
    top1 = train(args, rank, world, device)
    if distributed:
        # Only now, with the DDP model and the last autograd graph released (they hold gloo work), is the group
        # destroyed: destroying it while they live made some runs abort at exit.
        gc.collect()
        dist.destroy_process_group()
    if rank == 0:
        print(f"retrieval top-1 {top1:.3f} (chance {1 / 256:.3f}) with {world} rank(s)")
    return top1


if __name__ == "__main__":
    main()
