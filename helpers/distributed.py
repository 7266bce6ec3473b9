"""Data parallelism with PyTorch's own engine, as launched by ``torchrun`` (notebook 06).

``torchrun --nproc_per_node N`` gives each of N processes its place (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``); :func:`setup` reads it
and joins the process group (NCCL between GPUs, gloo on CPUs). Under plain ``python``:
rank 0 of 1, and every function here does nothing or returns its input. Each process
holds the whole model; gradients of its share of a step are summed before each step.
The group gets an explicit timeout (``SEGCOURSE_DIST_TIMEOUT`` seconds, default 600, or
``setup``'s argument) instead of gloo's or NCCL's 30 or 10 minutes, and a collective that
fails raises :class:`CollectiveError` naming it and the rank.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

TIMEOUT_ENV = "SEGCOURSE_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 600.0


_timeout: float | None = None  # the timeout of the process group setup() made, while it lives


class CollectiveError(RuntimeError):
    """A collective did not complete on this process: another one stalled or died."""


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


def timeout_s() -> float:
    """The process group's timeout in seconds: ``SEGCOURSE_DIST_TIMEOUT`` or 600."""
    raw = os.environ.get(TIMEOUT_ENV, "")
    try:
        value = float(raw) if raw else DEFAULT_TIMEOUT_S
    except ValueError:
        raise ValueError(f"{TIMEOUT_ENV}={raw!r}: expected seconds, a number") from None
    if value <= 0:
        raise ValueError(f"{TIMEOUT_ENV}={raw!r}: expected a positive number of seconds")
    return value


def setup(device: str | None = None, timeout: float | None = None) -> Place:
    """Join the process group that ``torchrun`` describes in the environment, or return
    the single-process place when there is none. ``device``: ``"cpu"`` to stay on the CPU
    even with GPUs; default: this process's GPU (``cuda:LOCAL_RANK``) when there is one.
    ``timeout``: seconds a collective may wait for the other processes (default
    :func:`timeout_s`)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device != "cpu"
    place = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(place)
    if world > 1 and not dist.is_initialized():
        global _timeout
        _timeout = timeout or timeout_s()
        dist.init_process_group(
            backend="nccl" if use_cuda else "gloo", timeout=timedelta(seconds=_timeout)
        )
    return Place(rank, world, local_rank, place)


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


@contextlib.contextmanager
def collective(what: str):
    """Re-raise a failure inside a collective as :class:`CollectiveError` that says which
    collective and which rank; without a process group, errors pass unchanged."""
    try:
        yield
    except CollectiveError:
        raise
    except Exception as err:
        if not active():
            raise
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
        raise CollectiveError(
            f"rank {dist.get_rank()} of {dist.get_world_size()}: {what} did not complete "
            f"(timeout {_timeout or timeout_s():.0f} s): another process stalled or died "
            f"({type(err).__name__}: {first})"
        ) from err


def shard(n: int, place: Place) -> range:
    """This rank's indices of ``0..n-1``: every ``world``-th from ``rank`` (the ranks'
    shares differ by at most one)."""
    return range(place.rank, n, place.world)


def sum_gradients(params: list[torch.nn.Parameter]) -> None:
    """Sum every parameter's gradient over the ranks (in place), in one flat all-reduce.
    With each rank's loss already divided by the number of images in the whole step,
    the sum is the gradient of the step's mean loss, exact however the step's images are
    shared out. A parameter without a gradient on a rank counts as zeros there; one
    without a gradient on every rank keeps ``None``, as with one process (so that AdamW
    skips it instead of applying weight decay to it). Every rank ends with the same
    gradients."""
    if not active() or not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    has = torch.tensor(
        [p.grad is not None for p in params], dtype=grads[0].dtype, device=grads[0].device
    )
    flat = torch.cat([*(g.reshape(-1) for g in grads), has])  # the gradients, then the flags
    with collective("the all-reduce of the gradients"):
        dist.all_reduce(flat)
    ranks_with_grad = flat[-len(params) :].tolist()
    offset = 0
    for p, g, count in zip(params, grads, ranks_with_grad):
        n = g.numel()
        p.grad = None if count == 0 else flat[offset : offset + n].view_as(p).clone()
        offset += n


def sum_over_ranks(values: list[float], device: torch.device | str = "cpu") -> list[float]:
    """Element-wise sum of a list of numbers over the ranks (float64)."""
    values = [float(v) for v in values]  # plain floats: checkpoints load them safely
    if not active():
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    with collective("an all-reduce of numbers (losses, counts, flags)"):
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
    with collective("a gather on rank 0"):
        dist.gather_object(obj, out, dst=0)
    return out


def broadcast_from_main(obj, place: Place):
    """Rank 0's ``obj`` on every rank."""
    if not active():
        return obj
    box = [obj]
    with collective("a broadcast from rank 0"):
        dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    """Wait for every process (a no-op alone)."""
    if active():
        with collective("a barrier"):
            dist.barrier()


def cleanup() -> None:
    """Leave the process group (a no-op alone)."""
    global _timeout
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _timeout = None
