# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     notebook_metadata_filter: -jupytext.text_representation.jupytext_version,-jupytext.text_representation.format_version
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 06 · Beyond one GPU: both fine-tuning jobs under `torchrun`, equal to one process
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/segcourse/segmentation-finetuning-course/blob/main/notebooks/06_beyond_one_gpu.ipynb)
#
# A bigger data set, vit_h, a box with 8 GPUs or a cluster: the loops of notebooks 03 and
# 04 run unchanged under PyTorch's own distributed engine. Both jobs are command-line entry
# points of the course's package, built on the same helpers and settings:
#
# - `python -m helpers.sam.train` (notebook 03's job; `--help` lists every setting)
# - `python -m helpers.detection.train` (notebook 04's job)
#
# each runnable as `python -m ...` on one device and as `torchrun --nproc_per_node N -m ...`
# on N. What you will learn: what data parallelism splits and what it averages for these
# two jobs, why SAM's frozen encoder makes its case easy, how to launch on one machine and
# on a SLURM cluster, and, run here on 2 CPU processes, that the result equals one
# process's.

# %% Setup on Colab: fetch the course, install its package (elsewhere: nothing)
# Setup on Colab: fetches the course and installs its package; does nothing elsewhere.
import os
import sys

IN_COLAB = "google.colab" in sys.modules
USE_DRIVE = IN_COLAB  # archives, checkpoints, embeddings, runs on Drive; data sets on local disk
# os.environ["SEGCOURSE_SMOKE"] = "1"  # smoke mode: built-in data, tiny models, minutes
if IN_COLAB:
    import subprocess

    REPO, BRANCH = "https://github.com/segcourse/segmentation-finetuning-course", "main"
    DEST = "/content/segcourse"
    if os.path.isdir(f"{DEST}/.git"):  # run again in this runtime: update the clone
        subprocess.run(["git", "-C", DEST, "pull", "-q", "--ff-only"], check=True)
    else:
        clone = ["git", "clone", "-q", "--depth", "1", "--branch", BRANCH, REPO, DEST]
        subprocess.run(clone, check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", DEST], check=True)
    sys.path.insert(0, DEST)  # an editable install is seen after a restart only
    if USE_DRIVE:
        from google.colab import drive

        drive.mount("/content/drive")
    from google.colab import output

    output.enable_custom_widget_manager()  # the click-to-prompt widgets are custom ones

# %%
import json
import socket
import subprocess

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel
from torch.utils.flop_counter import FlopCounterMode

from helpers.course.jobs import run_job
from helpers.course.runtime import DATA_EXAMPLE, REPO_ROOT, cache_dir, describe, is_smoke
from helpers.data.voc import VOCInstanceDataset
from helpers.distributed import Place, shard, sum_gradients
from helpers.sam.embeddings import EmbeddingCache
from helpers.sam.items import prepare_items
from helpers.sam.model import build_sam, load_sam, module_sizes, with_own_decoder
from helpers.sam.training import SamTrainConfig, sam_image_loss
from helpers.views.widget import sam_compare_widget

SMOKE = is_smoke()
print(describe())
RUNS = cache_dir() / "runs" / "distributed_demo"  # everything this notebook writes

# %% [markdown]
# ## Data parallelism for these two jobs
#
# Every process holds a whole copy of the model, takes its own share of the images of a
# step (processes are numbered 0 to `world` - 1: that number is the process's **rank**),
# computes gradients on them, and then the gradients are **summed over the processes**
# (an *all-reduce*) so that every copy takes the very same optimizer step. No images and
# no activations cross between processes; what does: the gradients every step, a flag
# every step (so that a non-finite loss on one process stops all of them), the
# validation's sums every epoch, and under DDP (below) the model's buffers, which DDP
# broadcasts from rank 0 at every forward pass by default.
#
# **SAM's decoder** (`helpers.sam.train`). The frozen image encoder is the expensive part
# and its output does not change, so it runs **once** per image, in parallel: each
# process encodes its share of the images the embedding cache lacks (entries are written
# whole), all wait, then each reads every embedding from the cache. Training then moves
# only the decoder's parameters: a step of `batch_images` images is dealt out to the
# processes (each image's prompts and clicks drawn from a generator seeded by its place in
# the step, so it is drawn the same wherever it is computed), and the all-reduce carries
# the decoder's gradients once per step. The sizes, computed (the encoder's floating-point
# operations counted by PyTorch's `FlopCounterMode` on the `meta` device, no weights):

# %%
decoder = module_sizes("vit_b")["mask_decoder"]
with torch.device("meta"):
    vit_b = build_sam("vit_b")
    with FlopCounterMode(display=False) as flops:
        vit_b.image_encoder(torch.empty(1, 3, 1024, 1024))
print(
    f"vit_b's image encoder: {flops.get_total_flops() / 1e12:.2f} TFLOP per 1024 x 1024 image, once per image"
)
print(
    f"vit_b's mask decoder: {decoder['parameters']:,} parameters, "
    f"{decoder['parameters'] * 4 / 1e6:.1f} MB of fp32 gradients per all-reduce"
)

# %% [markdown]
# A **ring all-reduce**, the way NCCL and gloo sum large tensors: the processes sit on a
# ring and each tensor is cut into `world` chunks. In `world - 1` steps each process
# passes one chunk to its neighbour, which adds its own (*reduce-scatter*: afterwards each
# process holds one chunk fully summed); in `world - 1` more steps the summed chunks go
# round (*all-gather*). Each process sends and receives about `2 (world - 1) / world`
# times the tensor's size, whatever the number of processes. Drawn for 4 processes, the
# first step of each phase (red: the chunk each process sends):

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
world = 4
angles = np.pi / 2 - 2 * np.pi * np.arange(world) / world
xy = np.stack([np.cos(angles), np.sin(angles)], 1) * 1.4
for ax, (phase, shift, note) in zip(
    axes,
    (
        ("reduce-scatter", 0, "the neighbour adds it to its own"),
        ("all-gather", 1, "the neighbour keeps the summed chunk"),
    ),
):
    for r, (x, y) in enumerate(xy):
        nx, ny = xy[(r + 1) % world]
        ax.add_patch(plt.Circle((x, y), 0.45, fc="#c7e9c0", ec="0.3"))
        ax.text(x, y + 0.1, f"rank {r}", ha="center", fontsize=9)
        ax.text(x, y - 0.17, " ".join(f"c{c}" for c in range(world)), ha="center", fontsize=7)
        ax.annotate(
            "",
            xy=(x + 0.7 * (nx - x), y + 0.7 * (ny - y)),
            xytext=(x + 0.3 * (nx - x), y + 0.3 * (ny - y)),
            arrowprops=dict(arrowstyle="->", lw=1.5),
        )
        ax.text(
            (x + nx) / 2 * 1.2,
            (y + ny) / 2 * 1.2,
            f"c{(r + shift) % world}",
            fontsize=9,
            color="tab:red",
            ha="center",
            va="center",
        )
    ax.set(xlim=(-2.2, 2.2), ylim=(-2.2, 2.2), aspect="equal")
    ax.set_title(f"{phase}, step 1: each rank sends one chunk;\n{note}", fontsize=9)
    ax.axis("off")
plt.show()

# %% [markdown]
# ## One step of SAM's job on two processes, in code
#
# Run here on two CPU processes that talk through **gloo**, PyTorch's communication
# backend for CPUs (on GPUs, NCCL). Two small functions carry the whole lesson. `shard` deals a step's images out: every
# `world`-th image, starting at the process's rank, so the shares differ by at most one
# image and together cover the step once:


# %%
def shard_by_hand(n, rank, world):
    """This process's images of a step of n: every world-th, from its rank."""
    return range(rank, n, world)


for world in (1, 2, 3):
    shares = [list(shard_by_hand(5, rank, world)) for rank in range(world)]
    print(f"5 images on {world} process(es): {shares}")
    for rank in range(world):  # the package's version deals the same
        assert shard_by_hand(5, rank, world) == shard(5, Place(rank=rank, world=world))


# %% [markdown]
# Each process then runs the recipe of notebook 03 on its images (`sam_image_loss`, the rounds
# back-propagated one by one), with each image's loss divided by the number of images in
# the **whole** step, and `sum_gradients` adds up the processes' gradients with one
# all-reduce: afterwards every process holds the gradient of the step's mean loss and
# takes the same optimizer step. Written plainly:


# %%
def sum_gradients_by_hand(params):
    """Add up every process's gradients, in place, with one flat all-reduce."""
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    has = torch.tensor([float(p.grad is not None) for p in params])  # who has a gradient
    flat = torch.cat([*(g.reshape(-1) for g in grads), has])  # one message, not one per tensor
    dist.all_reduce(flat)  # the sum over processes, the same result on every process
    offset = 0
    for p, g, count in zip(params, grads, flat[-len(params) :].tolist()):
        p.grad = None if count == 0 else flat[offset : offset + g.numel()].view_as(p).clone()
        offset += g.numel()  # a parameter no process has a gradient for keeps None


# %% [markdown]
# PyTorch's own engine for this is `DistributedDataParallel` (**DDP**): it wraps the
# model, and during the backward pass it all-reduces the gradients bucket by bucket
# while the rest of the backward pass still runs, then divides them by the number of
# processes (an average, not a sum). The recipe calls the decoder once per round and
# back-propagates each round as it goes; DDP handles that with its gradient-accumulation
# pattern: the forward passes of all rounds but the step's last run inside
# `ddp.no_sync()`, so their backward passes only accumulate, and the last round's
# backward pass all-reduces the accumulated sum. Since DDP averages over processes, each
# process divides its images' losses by its **own** number of images.


# %%
class SyncOnLastRound(torch.nn.Module):
    """SAM's mask decoder under DDP: every forward pass of a step but the last runs inside
    no_sync(), so only the last round's backward pass all-reduces the gradients."""

    def __init__(self, ddp):
        super().__init__()
        self.ddp, self.rounds_left = ddp, 0

    def forward(self, **kwargs):
        self.rounds_left -= 1
        if self.rounds_left > 0:
            with self.ddp.no_sync():  # accumulate; no communication
                return self.ddp(**kwargs)
        return self.ddp(**kwargs)  # the step's last round: all-reduce in its backward


CFG = SamTrainConfig(click_rounds=1, refine_rounds=1)  # 3 rounds per image
ROUNDS = 1 + CFG.click_rounds + CFG.refine_rounds


def one_step(rank, world, how, n_images):
    """In each process: one optimizer step's gradients of n_images images, summed by DDP
    (how="ddp") or explicitly (how="explicit": the same local gradients summed once by
    hand and once by the package)."""
    sam = with_own_decoder(base)  # the same starting decoder in every process
    names, params = zip(*sam.mask_decoder.named_parameters())
    for p in params:
        p.requires_grad_(True)
    mine = shard(n_images, Place(rank=rank, world=world))
    if how == "ddp":
        sam.mask_decoder = SyncOnLastRound(DistributedDataParallel(sam.mask_decoder))
        sam.mask_decoder.rounds_left = len(mine) * ROUNDS
    share = len(mine) if how == "ddp" else n_images  # DDP averages; the others sum
    for slot in mine:  # each image drawn as train_decoder draws it: (seed, epoch, step, slot)
        rng = np.random.default_rng([CFG.seed, 1, 0, slot])
        sam_image_loss(sam, items[slot], CFG, rng, share)
    grads = lambda: {n: p.grad for n, p in zip(names, params)}  # noqa: E731
    if how == "ddp":
        return {"ddp": grads()}
    local = [p.grad for p in params]  # this process's own gradients
    sum_gradients_by_hand(params)
    summed = {"by hand": grads()}
    for p, g in zip(params, local):  # the same local gradients, summed again
        p.grad = g
    sum_gradients(params)
    return {**summed, "package": grads()}


def on_one_process(n_images):
    sam = with_own_decoder(base)
    for p in sam.mask_decoder.parameters():
        p.requires_grad_(True)
    for slot in range(n_images):
        rng = np.random.default_rng([CFG.seed, 1, 0, slot])
        sam_image_loss(sam, items[slot], CFG, rng, n_images)
    return {n: p.grad for n, p in sam.mask_decoder.named_parameters()}


def largest_difference(a, b):
    return max(float((a[k] - b[k]).abs().max()) for k in a)


# %% [markdown]
# The plumbing that starts two processes and lets them meet (a free port, the `fork` start
# method so that both see this notebook's functions, a file for rank 0's answer) is in
# the next cell, collapsed: it is not the lesson.


# %% jupyter={"source_hidden": true}
def on_two_processes(how, n_images):
    """one_step(rank, 2, how, n_images) in two processes that meet through gloo; rank 0's
    result."""
    with socket.socket() as s:  # a free port for the processes to meet at
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = RUNS / f"step_{how}_{n_images}.pt"

    def process(rank):
        torch.set_num_threads(1)
        dist.init_process_group(
            "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2
        )
        try:
            result = one_step(rank, 2, how, n_images)
            if rank == 0:
                torch.save(result, out)
        finally:
            dist.destroy_process_group()

    mp.start_processes(process, nprocs=2, start_method="fork")
    return torch.load(out, weights_only=True)


# %% [markdown]
# Four images in the step, two per process, summed three ways, against one process
# that computes all four (by hand and by the package from the same local gradients):

# %%
base = load_sam("tiny")  # every process starts from these weights
cache = EmbeddingCache(RUNS / "embeddings_step", base)
items, _ = prepare_items(VOCInstanceDataset(DATA_EXAMPLE / "VOCdevkit", "train"), cache)
one = on_one_process(4)
explicit, ddp = on_two_processes("explicit", 4), on_two_processes("ddp", 4)["ddp"]
by_hand, package = explicit["by hand"], explicit["package"]
print(
    f"largest gradient entry:                        {max(float(g.abs().max()) for g in one.values()):.1e}"
)
for name, grads in (("by hand", by_hand), ("package", package), ("DDP + no_sync()", ddp)):
    print(f"2 processes, {name:16s} vs one process:   {largest_difference(grads, one):.1e}")
print(f"2 processes, DDP vs the explicit all-reduce:   {largest_difference(ddp, package):.1e}")
for grads in (by_hand, package, ddp):  # equal up to the order of float additions
    assert largest_difference(grads, one) < 1e-6
assert largest_difference(by_hand, package) == 0

# %% [markdown]
# All three agree with one process. Now a step of three images, as the last step of an
# epoch often is: one process gets two images, the other one. The explicit sum still
# divides by the step's three images; DDP's average weighs the lone image's process as
# much as the other, so its lone image counts twice as much:

# %%
one3 = on_one_process(3)
package3, ddp3 = on_two_processes("explicit", 3)["package"], on_two_processes("ddp", 3)["ddp"]
print(f"3 images, explicit all-reduce vs one process: {largest_difference(package3, one3):.1e}")
print(f"3 images, DDP vs one process:                 {largest_difference(ddp3, one3):.1e}")
assert largest_difference(package3, one3) < 1e-6 < largest_difference(ddp3, one3)

# %% [markdown]
# So both engines run this recipe, and with even shares they give the same gradients.
# The course's training loop keeps the explicit all-reduce for three reasons. It stays
# exact when the shares are uneven (above), where DDP would need each process to weigh
# its loss by its share of the step, and `join()` for a process left with no image at
# all, which would otherwise wait forever in the all-reduce. DDP's speed-up, sending
# gradients while the backward pass still runs, applies here only to the last of up to
# 11 rounds, and the decoder's 16 MB of gradients take milliseconds (below). And the
# sum is plain to read, as above. For Mask R-CNN, one forward and one backward pass per
# step with equal batches, DDP is the natural choice, and the course uses it.

# %% [markdown]
# Validation is split over the processes and its sums reduced; only rank 0 writes
# `best.pt` and `last.pt`; a non-finite loss on any process stops all of them (a flag is
# all-reduced every step).
#
# **Mask R-CNN** (`helpers.detection.train`) is the textbook case, as in torchvision's detection
# references: the model wrapped in `DistributedDataParallel` (which averages the
# gradients during the backward pass), each process reading every `world`-th sample of the
# epoch's order (`SeededShuffle`, dealt as `DistributedSampler` deals), `--batch-size` per
# process (so the global batch grows with the processes: scale `--lr` with it, as the
# references do), no SyncBatchNorm (batch norm whose batch statistics are computed over
# all processes' images together; with COCO weights the backbone's batch norms are
# frozen, so there are none to share), and the validation split over the processes with the detections gathered on
# rank 0 for pycocotools.
#
# ## Launching
#
# One machine with 8 GPUs (`torchrun` starts 8 processes and tells each its rank):
#
# ```bash
# torchrun --standalone --nproc_per_node 8 -m helpers.sam.train --batch-images 8
# torchrun --standalone --nproc_per_node 8 -m helpers.detection.train --lr 0.04
# ```
#
# With `--batch-images 8` each step sees 8 images, 1 per GPU; one process with
# `--batch-images 8` takes the same steps. Several machines: the same command on each,
# with torchrun's **rendezvous** instead of `--standalone`: the meeting point where the
# processes of all machines find each other and agree on their ranks before training
# starts (`--nnodes 2 --rdzv_backend c10d --rdzv_endpoint HOST:29500 --rdzv_id JOB`: one
# machine's address and a port, and a name for the job). On a
# SLURM cluster, `srun` starts one torchrun per node; the course's example batch script:

# %%
print((REPO_ROOT / "scripts" / "slurm_train_sam_decoder.sbatch").read_text())

# %% [markdown]
# ## Run here: 2 processes on the CPU against 1
#
# Whatever the mode, this runs the smoke configuration (data_example, the small model,
# 2 training images and 1 validation image, 2 images per step, 2 epochs: the least that
# shows a step split over two processes and a resume) on the CPU with the gloo backend:
# once in one process, once with `torchrun --nproc_per_node 2`, stopped after epoch 1 and
# resumed, as a preempted cluster job would be. Then the two decoders are compared weight
# by weight.

# %%
TRAIN, VAL = 2, 1
common = ["--epochs", "2", "--batch-images", "2", "--click-rounds", "1", "--refine-rounds", "0"]
common += ["--train-images", str(TRAIN), "--val-images", str(VAL), "--device", "cpu"]
ENV = dict(os.environ, SEGCOURSE_SMOKE="1", TQDM_DISABLE="1", OMP_NUM_THREADS="1")


def show(line):
    if not line.split("] ", 1)[-1].startswith("{"):  # a job's JSON summary: read, not shown
        print(line, flush=True)


def run(cmd, name):
    """Run a job, its lines shown as they come; return its JSON summary and seconds."""
    lines, seconds = run_job(cmd, name=name, cwd=REPO_ROOT, env=ENV, echo=show)
    return json.loads([line for line in lines if line.startswith("{")][-1]), seconds


torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
one, one_s = run(
    [sys.executable, "-m", "helpers.sam.train", *common, "--no-resume"]
    + ["--out", f"{RUNS}/one", "--embeddings", f"{RUNS}/embeddings_one"],
    "1 process",
)
two_args = [*common, "--out", f"{RUNS}/two", "--embeddings", f"{RUNS}/embeddings_two"]
for stale in (RUNS / "two").glob("*.pt"):
    stale.unlink()  # a fresh run each time the notebook runs
for f in (RUNS / "embeddings_two").glob("*.pt"):
    f.unlink()  # so that the parallel fill below fills it
part, part_s = run(
    [*torchrun, "-m", "helpers.sam.train", *two_args, "--until-epoch", "1"],
    "2 processes, until epoch 1",
)
two, two_s = run([*torchrun, "-m", "helpers.sam.train", *two_args], "2 processes, resumed")
cached = len(list((RUNS / "embeddings_two").glob("*.pt")))
print(f"1 process: {one['epochs']} epochs in {one_s:.0f} s")
print(
    f"2 processes: epoch 1 in {part_s:.0f} s (rank 0 encoded {part['encoded_here']} of the "
    f"{cached} images in the cache, rank 1 the others), then resumed: {two['epochs']} epochs, "
    f"{two_s:.0f} s, {two['encoded_here']} images encoded again"
)
# the cache was filled in parallel, each image once, and read back on the resume
assert part["world"] == 2 and part["epochs"] == 1 and two["epochs"] == 2
rank_0 = Place(rank=0, world=2)
assert cached == TRAIN + VAL and two["encoded_here"] == 0
assert part["encoded_here"] == len(shard(TRAIN, rank_0)) + len(shard(VAL, rank_0))

# %%
a = torch.load(RUNS / "one" / "last.pt", weights_only=True)["model"]
b = torch.load(RUNS / "two" / "last.pt", weights_only=True)["model"]
start = load_sam("tiny").mask_decoder.state_dict()
moved = max(float((a[k] - start[k]).abs().max()) for k in a)
differ = max(float((a[k] - b[k]).abs().max()) for k in a)
print(f"largest change of a weight in training:            {moved:.1e}")
print(f"largest difference between 1 and 2 processes:      {differ:.1e}")
print(
    f"validation mIoU@1: 1 process {one['last']['val_miou@1']:.4f}, "
    f"2 processes {two['last']['val_miou@1']:.4f}"
)
assert differ < 1e-5 < moved, (differ, moved)  # equal up to float rounding (short runs)
assert abs(one["last"]["val_miou@1"] - two["last"]["val_miou@1"]) < 1e-6

# %% [markdown]
# The differences are float rounding: the all-reduce adds the two processes' gradients in
# another order than one process accumulates them. Mask R-CNN under DDP is not equal to
# one process bit for bit, and is not meant to be: its losses are means over the sampled
# regions of the whole batch (DDP averages per-process means) and each process samples
# its own regions; its processes stay in step with each other, which the entry point
# checks after training (a digest of every parameter, gathered on rank 0):

# %%
mask_rcnn, mask_rcnn_s = run(
    [*torchrun, "-m", "helpers.detection.train", "--epochs", "1", "--train-images", "2"]
    + ["--num-workers", "0", "--no-resume", "--out", f"{RUNS}/maskrcnn", "--device", "cpu"],
    "Mask R-CNN, 2 processes",
)
print(
    f"Mask R-CNN, 2 processes, 1 epoch in {mask_rcnn_s:.0f} s: parameters equal on every "
    f"process: {mask_rcnn['ranks_in_sync']}"
)
assert mask_rcnn["ranks_in_sync"] and mask_rcnn["world"] == 2
assert (RUNS / "maskrcnn" / "last.pt").is_file()

# %% [markdown]
# ## How far it scales
#
# The README gives an estimate for VOC2007 and for a set 100 times larger on 1, 8 and 64
# GPUs, from the per-image costs and the all-reduce volume above. In short (expected, not
# measured here): the decoder's step (an estimated 50-150 ms per image of the
# interactive recipe on a T4) dwarfs moving 16 MB of gradients (milliseconds between the
# PCIe cards of one machine, T4s having no NVLink, and a few more between machines), so
# the SAM job scales almost linearly until a step has fewer images than there are GPUs;
# for VOC2007's ~380 training images 64 GPUs are more than the data can use.
#
# Mind what scaling changes. With `--batch-images` equal to the number of GPUs, 8 GPUs
# take steps of 8 images where 1 GPU takes steps of 1: 8 times fewer optimizer steps per
# epoch, each the mean gradient of 8 images. That is a different training, not the same
# one done faster. The learning rate that suited batch 1 is a starting point only: the
# common rules are to scale it with the batch (linear, used with a warm-up, which the
# course's schedule has) or with its square root (often preferred for Adam-style
# optimisers); either way, check on the validation numbers. One process with the same
# `--batch-images` takes exactly the same steps as N processes (the run above checks it),
# so a learning rate can be tried at the target batch on one GPU first.
#
# ## Your turn: click and compare
#
# The decoders trained by one process and by two, side by side: they answer alike.

# %%
base = load_sam("tiny")
models = {
    "1 process": with_own_decoder(base, RUNS / "one" / "best.pt"),
    "2 processes": with_own_decoder(base, RUNS / "two" / "best.pt"),
}
widget, controller = sam_compare_widget(
    models, VOCInstanceDataset(DATA_EXAMPLE / "VOCdevkit", "val")
)
widget
