"""Gradients summed over processes (helpers.distributed) equal one process's, on two real
gloo processes: for the seed recipe, whose IoU head gets no gradient at all, that head
must stay untouched as it does alone (weight decay must not move it); and a process that
never joins a collective makes the other stop with an error naming it, in time."""

import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from helpers import DATA_EXAMPLE, VOCInstanceDataset
from helpers.distributed import CollectiveError, Place, shard, sum_gradients, sum_over_ranks
from helpers.sam.embeddings import EmbeddingCache
from helpers.sam.items import prepare_items
from helpers.sam.model import build_tiny_sam, with_own_decoder
from helpers.sam.training import STEPS, SamTrainConfig

N_IMAGES = 4
STATE = {}  # what the forked processes read: set by the fixture before they start


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    base = build_tiny_sam()
    cache = EmbeddingCache(tmp_path_factory.mktemp("emb"), base)
    ds = VOCInstanceDataset(DATA_EXAMPLE / "VOCdevkit", "train")
    items, _ = prepare_items(torch.utils.data.Subset(ds, range(N_IMAGES)), cache, False)
    STATE.update(base=base, items=items)
    return base, items


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _one_step(rank: int, world: int, recipe: str):
    """A step of N_IMAGES images on this process's share, then an optimizer step with a
    strong weight decay (SGD: linear in the gradient, so float rounding stays rounding;
    Adam's first step divides by the gradient's own size and would amplify it); returns
    the decoder's weights after it."""
    sam = with_own_decoder(STATE["base"])
    params = list(sam.mask_decoder.parameters())
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.SGD(params, lr=0.1, weight_decay=0.5)
    cfg = SamTrainConfig(recipe=recipe, click_rounds=1, refine_rounds=0)
    for slot in shard(N_IMAGES, Place(rank=rank, world=world)):
        rng = np.random.default_rng([0, 1, 0, slot])
        STEPS[recipe](
            sam, STATE["items"][slot], cfg, rng, lambda loss: (loss / N_IMAGES).backward()
        )
    sum_gradients(params)
    optimizer.step()
    return {k: v.detach().clone() for k, v in sam.mask_decoder.state_dict().items()}


def _worker(rank, world, port, out, recipe):
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        weights = _one_step(rank, world, recipe)
        if rank == 0:
            torch.save(weights, out)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("recipe", ["seed", "sam"])
def test_two_processes_take_the_step_of_one_including_parameters_without_gradient(
    prepared, tmp_path, recipe
):
    base, _ = prepared
    alone = _one_step(0, 1, recipe)
    out = tmp_path / "two.pt"
    mp.start_processes(_worker, args=(2, _free_port(), out, recipe), nprocs=2, start_method="fork")
    two = torch.load(out, weights_only=True)
    for k in alone:
        torch.testing.assert_close(two[k], alone[k], atol=1e-6, rtol=0, msg=k)
    start = base.mask_decoder.state_dict()
    iou_head = [k for k in start if k.startswith("iou_prediction_head.")]
    moved = {k for k in iou_head if not torch.equal(two[k], start[k])}
    if recipe == "seed":  # no loss on the IoU head: the optimizer skips it, on 2 processes too
        assert moved == set()
    else:
        assert moved == set(iou_head)


def _stalled_worker(rank, world, port, out):
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        timeout=__import__("datetime").timedelta(seconds=3),
    )
    try:
        if rank == 1:
            import time

            time.sleep(8)  # stalled: never joins the all-reduce in time
            return
        try:
            sum_over_ranks([1.0])
        except CollectiveError as err:
            out.write_text(str(err))
    finally:
        dist.destroy_process_group()


def test_a_process_that_never_joins_a_collective_makes_the_other_stop_naming_it(tmp_path):
    out = tmp_path / "message.txt"
    mp.start_processes(_stalled_worker, args=(2, _free_port(), out), nprocs=2, start_method="fork")
    message = out.read_text()
    assert message.startswith("rank 0 of 2: an all-reduce of numbers")
    assert "did not complete" in message and "another process stalled or died" in message


def test_without_a_process_group_errors_pass_unchanged():
    from helpers.distributed import collective

    with pytest.raises(KeyError):
        with collective("anything"):
            raise KeyError("mine")


def test_the_process_group_gets_the_configured_timeout(monkeypatch):
    """setup() passes an explicit timeout to init_process_group: its argument, else
    SEGCOURSE_DIST_TIMEOUT, else 600 s (gloo's default would be 30 minutes)."""
    from datetime import timedelta

    import helpers.distributed as distributed

    calls = []
    monkeypatch.setattr(distributed, "_timeout", None)  # restored afterwards
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda **kw: calls.append(kw))
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    distributed.setup("cpu", timeout=7)
    monkeypatch.setenv("SEGCOURSE_DIST_TIMEOUT", "42")
    distributed.setup("cpu")
    monkeypatch.delenv("SEGCOURSE_DIST_TIMEOUT")
    place = distributed.setup("cpu")
    assert [c["timeout"] for c in calls] == [
        timedelta(seconds=7),
        timedelta(seconds=42),
        timedelta(seconds=600),
    ]
    assert all(c["backend"] == "gloo" for c in calls) and (place.rank, place.world) == (1, 2)
    monkeypatch.setenv("SEGCOURSE_DIST_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="SEGCOURSE_DIST_TIMEOUT='soon'"):
        distributed.setup("cpu")
