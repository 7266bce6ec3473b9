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
import subprocess
import time
from pathlib import Path

import torch

import helpers
from helpers.course.runtime import DATA_EXAMPLE, cache_dir, describe, is_smoke
from helpers.data.voc import VOCInstanceDataset
from helpers.sam.model import load_sam, module_sizes, with_own_decoder
from helpers.views.widget import sam_compare_widget

SMOKE = is_smoke()
print(describe())
REPO_ROOT = Path(helpers.__file__).resolve().parent.parent  # where scripts/ lies

# %% [markdown]
# ## Data parallelism for these two jobs
#
# Every process holds a whole copy of the model, takes its own share of the images of a
# step, computes gradients on them, and then the gradients are **summed over the
# processes** (an *all-reduce*) so that every copy takes the very same optimizer step.
# Nothing else crosses between processes during training: no images, no activations.
#
# **SAM's decoder** (`helpers.sam.train`). The frozen image encoder is the expensive part
# (~0.97 TFLOP per image for vit_b) and its output does not change, so it runs **once**
# per image, in parallel: each process encodes its share of the images the embedding
# cache lacks (entries are written to a temporary file and renamed, so no process reads
# half of one), all wait, then each reads every embedding from the cache. Training
# then moves only the decoder's 4,058,340 parameters: a step of `batch_images` images is
# dealt out to the processes (each image's prompts and clicks drawn from a generator
# seeded by its place in the step, so it is drawn the same wherever it is computed), and
# the all-reduce carries the decoder's gradients once per step:

# %%
decoder = module_sizes("vit_b")["mask_decoder"]
print(
    f"vit_b's mask decoder: {decoder['parameters']:,} parameters, "
    f"{decoder['parameters'] * 4 / 1e6:.1f} MB of fp32 gradients per all-reduce; "
    f"a ring all-reduce sends and receives about 2 x that per process and step"
)

# %% [markdown]
# Why not `DistributedDataParallel` here: DDP all-reduces *during* the backward pass and
# expects one forward per backward; the interactive recipe calls the decoder up to 11
# times per image and back-propagates each round as it goes (notebook 03), so the course
# sums the gradients explicitly with `torch.distributed.all_reduce`, once, after all of a
# step's rounds. Each image's loss is divided by the step's image count, so the sum is
# the gradient of the step's mean loss: DDP's arithmetic. Validation is split over the
# processes and its sums reduced; only rank 0 writes `best.pt` and `last.pt`; a
# non-finite loss on any process stops all of them (a flag is all-reduced every step).
#
# **Mask R-CNN** (`helpers.detection.train`) is the textbook case, as in torchvision's detection
# references: the model wrapped in `DistributedDataParallel` (which averages the
# gradients during the backward pass), each process reading every `world`-th sample of the
# epoch's order (`SeededShuffle`, dealt as `DistributedSampler` deals), `--batch-size` per
# process (so the global batch grows with the processes: scale `--lr` with it, as the
# references do), no SyncBatchNorm (with COCO weights the backbone's batch norms are
# frozen), and the validation split over the processes with the detections gathered on
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
# with torchrun's rendezvous instead of `--standalone`
# (`--nnodes 2 --rdzv_backend c10d --rdzv_endpoint HOST:29500 --rdzv_id JOB`). On a
# SLURM cluster, `srun` starts one torchrun per node; the course's example batch script:

# %%
print((REPO_ROOT / "scripts" / "slurm_train_sam_decoder.sbatch").read_text())

# %% [markdown]
# ## Run here: 2 processes on the CPU against 1
#
# Whatever the mode, this runs the smoke configuration (data_example, the tiny model,
# 4 training and 2 validation images, 2 images per step, 2 epochs) on the CPU with the
# gloo backend: once in one process, once with `torchrun --nproc_per_node 2`, stopped
# after epoch 1 and resumed, as a preempted cluster job would be. Then the two decoders
# are compared weight by weight.

# %%
RUNS = cache_dir() / "runs" / "distributed_demo"
common = ["--epochs", "2", "--batch-images", "2", "--click-rounds", "1", "--refine-rounds", "0"]
common += ["--train-images", "4", "--val-images", "2", "--device", "cpu"]
ENV = dict(os.environ, SEGCOURSE_SMOKE="1", TQDM_DISABLE="1", OMP_NUM_THREADS="1")


def run(cmd):
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO_ROOT, env=ENV, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(done.stdout[-2000:] + done.stderr[-2000:])
    summary = json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])
    return summary, time.perf_counter() - t0


torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
one, one_s = run(
    [sys.executable, "-m", "helpers.sam.train", *common, "--no-resume"]
    + ["--out", f"{RUNS}/one", "--embeddings", f"{RUNS}/embeddings_one"]
)
two_args = [*common, "--out", f"{RUNS}/two", "--embeddings", f"{RUNS}/embeddings_two"]
for stale in (RUNS / "two").glob("*.pt"):
    stale.unlink()  # a fresh run each time the notebook runs
for f in (RUNS / "embeddings_two").glob("*.pt"):
    f.unlink()  # so that the parallel fill below fills it
part, part_s = run([*torchrun, "-m", "helpers.sam.train", *two_args, "--until-epoch", "1"])
two, two_s = run([*torchrun, "-m", "helpers.sam.train", *two_args])
print(f"1 process: {one['epochs']} epochs in {one_s:.0f} s")
print(
    f"2 processes: epoch 1 in {part_s:.0f} s (rank 0 encoded {part['encoded_here']} of the "
    f"{len(list((RUNS / 'embeddings_two').glob('*.pt')))} images in the cache), then "
    f"resumed: {two['epochs']} epochs, {two_s:.0f} s"
)

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
assert differ < 1e-5 < moved, (differ, moved)  # equal up to float rounding

# %% [markdown]
# The differences are float rounding: the all-reduce adds the two processes' gradients in
# another order than one process accumulates them. Mask R-CNN under DDP is not equal to
# one process bit for bit, and is not meant to be: its losses are means over the sampled
# regions of the whole batch (DDP averages per-process means) and each process samples
# its own regions; its processes stay in step with each other, which the entry point
# checks after training (a digest of every parameter, gathered on rank 0):

# %%
mask_rcnn, mask_rcnn_s = run(
    [*torchrun, "-m", "helpers.detection.train", "--epochs", "1", "--train-images", "4"]
    + ["--num-workers", "0", "--no-resume", "--out", f"{RUNS}/maskrcnn", "--device", "cpu"]
)
print(
    f"Mask R-CNN, 2 processes, 1 epoch in {mask_rcnn_s:.0f} s: parameters equal on every "
    f"process: {mask_rcnn['ranks_in_sync']}"
)
assert mask_rcnn["ranks_in_sync"]

# %% [markdown]
# ## How far it scales
#
# The README gives an estimate for VOC2007 and for a set 100 times larger on 1, 8 and 64
# GPUs, from the per-image costs and the all-reduce volume above. In short: the
# decoder's step (tens of milliseconds per image on a GPU) dwarfs moving 16 MB of
# gradients (well under a millisecond over NVLink, a few milliseconds between nodes), so
# the SAM job scales almost linearly until a step has fewer images than there are GPUs;
# for VOC2007's ~380 training images 64 GPUs are more than the data can use.
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
