"""Data parallelism with PyTorch's own engine, as launched by ``torchrun`` (notebook 06).

``torchrun --nproc_per_node N script`` starts N processes and gives each its place in
environment variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``); :func:`setup` reads them and joins the process group (NCCL between
GPUs, gloo on CPUs). Started with plain ``python`` there is no group: one process, rank
0 of 1, and every function here does nothing or returns its input, so the same loop
runs both ways.

What data parallelism does in this course: every process holds the whole model, reads
its own share of the images, computes gradients on it, and the gradients are averaged
across processes before every optimizer step, so that all copies take the same step.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Place:
    """This process's place: ``rank`` of ``world`` processes, ``local_rank`` on its
    machine (which GPU it uses), and its ``device``."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes checkpoints and prints."""
        return self.rank == 0


def setup(device: str | None = None) -> Place:
    """Join the process group that ``torchrun`` describes in the environment, or return
    the single-process place when there is none. ``device``: ``"cpu"`` to stay on the CPU
    even with GPUs; default: this process's GPU (``cuda:LOCAL_RANK``) when there is one."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device != "cpu"
    place = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(place)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return Place(rank, world, local_rank, place)


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def shard(n: int, place: Place) -> range:
    """This rank's indices of ``0..n-1``: every ``world``-th from ``rank`` (the ranks'
    shares differ by at most one)."""
    return range(place.rank, n, place.world)


def sum_gradients(params: list[torch.nn.Parameter]) -> None:
    """Sum every parameter's gradient over the ranks (in place), in one flat all-reduce.
    With each rank's loss already divided by the number of images in the whole step,
    the sum is the gradient of the step's mean loss: what DDP's averaging gives when
    every rank has the same number of images. A parameter without a gradient on a rank
    counts as zeros there, so every rank ends with the same gradients."""
    if not active():
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[offset : offset + n].view_as(p).clone()
        offset += n


def sum_over_ranks(values: list[float], device: torch.device | str = "cpu") -> list[float]:
    """Element-wise sum of a list of numbers over the ranks (float64)."""
    values = [float(v) for v in values]  # plain floats: checkpoints load them safely
    if not active():
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def any_rank(flag: bool, device: torch.device | str = "cpu") -> bool:
    """True on every rank when ``flag`` is True on any (e.g. a non-finite loss, so that
    all ranks stop together instead of the others waiting forever in an all-reduce)."""
    return sum_over_ranks([float(flag)], device)[0] > 0


def gather_to_main(obj, place: Place) -> list | None:
    """Every rank's ``obj`` (any picklable object) in rank order on rank 0, None elsewhere."""
    if not active():
        return [obj]
    out = [None] * place.world if place.main else None
    dist.gather_object(obj, out, dst=0)
    return out


def broadcast_from_main(obj, place: Place):
    """Rank 0's ``obj`` on every rank."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if active():
        dist.barrier()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
