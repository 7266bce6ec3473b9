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
# # 07 · When the decoder is not enough: LoRA on SAM's image encoder, measured
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/segcourse/segmentation-finetuning-course/blob/main/notebooks/07_lora_image_encoder.ipynb)
#
# Notebook 03 trained SAM's mask decoder and left the image encoder frozen. That is cheap
# (each image is encoded once, then cached) but it has a limit: the decoder can only
# re-read the embedding the frozen encoder gives it. On images far from SAM's training
# data, such as LabPics Medical's glassware, where a vessel is mostly transparent and its
# liquid, reflections and labels are what stands out, the embedding itself may be what is
# wrong. Notebook 03's seed says as much: the image encoder is usually left frozen, its
# pretraining being good enough, unless the data are unlike anything it was pretrained on
# (its example: medical images), and then it is fine-tuned too. Training the whole ViT is
# expensive in memory and easy to overfit on a few hundred photos; **LoRA** (low-rank
# adaptation, Hu et al. 2021) trains a small update beside a few of its weight matrices
# instead.
#
# We train three arms on the same LabPics split, with the same recipe and budget, and
# measure them on the same interactive protocol:
#
# - **before**: the released model;
# - **decoder-only**: notebook 03's SAM recipe, embeddings cached;
# - **LoRA + decoder**: the same recipe, with LoRA on the ViT blocks' attention.
#
# What you will learn:
# - what LoRA adds to a linear layer, written out in five lines and checked against `peft`;
# - how many parameters each arm trains;
# - why the LoRA arm cannot use the embedding cache, and one training step written out:
#   the encoder's graph kept once, the recipe's rounds back-propagated into a leaf;
# - gradient checkpointing of the ViT blocks: the same gradients for less memory;
# - the two files worth shipping (the adapter, and a merged checkpoint that stock
#   `segment_anything` loads), and a proof that the merged one gives the same masks.

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
import copy
import json
from dataclasses import dataclass, field, replace

import matplotlib.pyplot as plt
import numpy as np
import torch
from segment_anything import SamPredictor
from torch.utils.checkpoint import checkpoint

from helpers.checkpoints import atomic_save
from helpers.course.runtime import (
    DATA_EXAMPLE,
    REPO_ROOT,
    cache_dir,
    default_device,
    describe,
    is_smoke,
)
from helpers.data.labpics import LabPicsDataset, download_labpics
from helpers.data.splits import hold_out
from helpers.metrics import mask_iou
from helpers.sam.clicks import next_click
from helpers.sam.embeddings import EmbeddingCache
from helpers.sam.evaluation import comparison_table, evaluate
from helpers.sam.items import prepare_items
from helpers.sam.lora import (
    Photos,
    encoding_loss,
    load_adapter,
    merged_state_dict,
    reembedded,
    save_adapter,
    trained_parts,
    with_lora,
)
from helpers.sam.model import build_tiny_sam, load_decoder, load_sam, with_own_decoder
from helpers.sam.predict import embed_image, predict, predict_round, preprocess
from helpers.sam.training import (
    SamTrainConfig,
    decoder_parameters,
    run_folder,
    sam_image_loss,
    train_decoder,
)
from helpers.views import plotting
from helpers.views.widget import sam_compare_widget

SMOKE = is_smoke()
print(describe())

# %% [markdown]
# ## Settings
#
# Both trained arms use one `SamTrainConfig`: notebook 03's SAM recipe, the same epochs,
# learning rate and prompts. LoRA's own settings are its rank `r`, its scale `alpha` and
# the layers it adapts.


# %%
@dataclass
class Settings:
    variant: str = "tiny" if SMOKE else "vit_b"
    max_clicks: int = 5 if SMOKE else 20
    rank: int = 4  # r: the update's rank
    alpha: float = 8.0  # the update is scaled by alpha / r
    targets: tuple = ("qkv",)  # each ViT block's attention projection; add "proj" to try more
    checkpointing: bool = False  # recompute each block in the backward pass: less memory
    train: SamTrainConfig = field(
        default_factory=lambda: SamTrainConfig(
            **(
                dict(epochs=6, lr=3e-4, click_rounds=2, refine_rounds=1)
                if SMOKE
                else dict(epochs=6)
            )
        )
    )


S = Settings()
DEVICE = default_device()
print(S)

# %% [markdown]
# ## The data and the released model
#
# LabPics Medical's vessels are the instances and its `Ignore.png` regions count nowhere
# (neither as vessel nor as background), as VOC's void border does in notebook 03. We train
# on `Train` with every tenth photo held out to choose the best epoch, and measure on `Test`.
# The decoder-only arm reads its embeddings from the cache, computed once by the frozen
# encoder.

# %%
root = DATA_EXAMPLE / "LabPicsMedical" if SMOKE else download_labpics()
train_all = LabPicsDataset(root, "Train")
train_ds, val_ds = hold_out(train_all)
test_ds = LabPicsDataset(root, "Test")
original = load_sam(S.variant, device=DEVICE)  # the released model: "before"
cache = EmbeddingCache(cache_dir() / "embeddings", original)
train_items, _ = prepare_items(train_ds, cache)
val_items, _ = prepare_items(val_ds, cache)
test_items, _ = prepare_items(test_ds, cache)
photos = {"train": Photos(train_all), "test": Photos(test_ds)}  # read from disk when asked
print(f"{S.variant}: train {len(train_items)}, val {len(val_items)}, test {len(test_items)} photos")
print(
    f"vessels: train {sum(len(it.masks) for it in train_items)}, test {sum(len(it.masks) for it in test_items)}"
)

fig, axes = plt.subplots(1, 3, figsize=(12, 4), layout="constrained")
for ax, i in zip(axes, range(3)):
    plotting.show_sample(ax, train_all[i], labels=False)
fig.suptitle("LabPics vessels: one colour per instance; the ignore region outlined in white")
plt.show()

# %% [markdown]
# ## What the frozen encoder gives the decoder
#
# One click at the centre of the largest error region (the protocol's first click) on
# each vessel of a test photo, answered by the released model. The dashed white line is
# the vessel, the cyan mask what the model returns; a vessel is mostly transparent, and a
# model that never saw glassware is expected to answer with what stands out inside it (a
# liquid, a label, a reflection) rather than the vessel:

# %%
it = test_items[0]
image = test_ds[0]["image"]
fig, axes = plt.subplots(1, len(it.masks), figsize=(4 * len(it.masks), 4), squeeze=False)
for k, ax in enumerate(axes[0]):
    x, y, _ = next_click(np.zeros_like(it.masks[k]), it.masks[k], it.void)
    with torch.no_grad():
        out = predict_round(original, it.emb, np.array([[[x, y]]]), np.array([[1]]))
    mask = out["chosen_masks"][0].numpy()
    iou = mask_iou(mask, it.masks[k], it.void)
    plotting.show_prediction(
        ax, image, mask, it.masks[k], [[x, y]], [1], title=f"vessel {k}: IoU {iou:.2f}"
    )
plt.show()

# %% [markdown]
# The decoder-only arm can learn to read this embedding differently (that is what
# notebook 03 measured on VOC), but it cannot add to it what the encoder did not see.
#
# ## LoRA, written out
#
# A ViT block's attention starts with one linear layer, `qkv`, that maps each token's
# `C` channels to its query, key and value (`3C`). LoRA leaves its weight `W` frozen and
# adds a trainable update of rank `r`:
#
# $$y = W x + b + \frac{\alpha}{r}\, B A x, \qquad A \in \mathbb{R}^{r \times C},\;
# B \in \mathbb{R}^{3C \times r}.$$
#
# `A` starts random and `B` at zero, so training starts exactly from the released model.
# The update has `r (C + 3C)` parameters where `W` has `3C^2`; after training it can be
# folded into the weight, `W + (alpha / r) B A`, at no cost at inference. The whole of it:


# %%
class LoRALinear(torch.nn.Module):
    """``base(x) + (alpha / r) * B A x``: ``base`` frozen, ``A`` ``r x in``, ``B`` ``out x r``."""

    def __init__(self, base: torch.nn.Linear, rank: int, alpha: float):
        super().__init__()
        self.base, self.scale = base.requires_grad_(False), alpha / rank
        self.A = torch.nn.Parameter(torch.randn(rank, base.in_features) / base.in_features**0.5)
        self.B = torch.nn.Parameter(torch.zeros(base.out_features, rank))

    def forward(self, x):
        return self.base(x) + self.scale * (x @ self.A.T) @ self.B.T


qkv = original.image_encoder.blocks[0].attn.qkv  # the released layer, Linear(C, 3C)
mine = LoRALinear(copy.deepcopy(qkv), S.rank, S.alpha)
x = torch.randn(1, 8, 8, qkv.in_features)  # batch x rows x columns x C, as a ViT block holds it
with torch.no_grad():
    assert torch.equal(mine(x), qkv(x))  # B = 0: exactly the released layer
print(f"qkv: W is {tuple(qkv.weight.shape)}; A {tuple(mine.A.shape)}, B {tuple(mine.B.shape)}")

# %% [markdown]
# `peft` does the same to every layer named in `LoraConfig(target_modules=...)`;
# `with_lora` returns a copy of the model with it (the released model is left as it is).
# With a random `B` (as after some training) and the same `A` and `B` in both, our five
# lines and peft's layer agree:

# %%
lora_probe = with_lora(original, S.rank, S.alpha, S.targets)
theirs = lora_probe.image_encoder.get_base_model().blocks[0].attn.qkv  # peft's lora.Linear
with torch.no_grad():
    theirs.lora_B["default"].weight.normal_(std=0.02)
    mine.A.copy_(theirs.lora_A["default"].weight)
    mine.B.copy_(theirs.lora_B["default"].weight)
    torch.testing.assert_close(mine(x), theirs(x))
    moved = (theirs(x) - qkv(x)).abs().max()
print(
    f"peft's layer {type(theirs).__name__} == LoRALinear; the update moves qkv by up to {moved:.3f}"
)
del lora_probe

# %% [markdown]
# ## What each arm trains
#
# Counted from the models: the decoder-only arm trains the mask decoder, the LoRA arm the
# decoder plus every adapted layer's `A` and `B` (`trained_parts`).

# %%
lora_model = with_lora(original, S.rank, S.alpha, S.targets, seed=S.train.seed)
total = sum(p.numel() for p in original.parameters())
decoder_n = sum(p.numel() for p in original.mask_decoder.parameters())
lora_n = sum(p.numel() for n, p in lora_model.image_encoder.named_parameters() if "lora_" in n)
encoder_n = sum(p.numel() for p in original.image_encoder.parameters())
rows = {
    "before": 0,
    "decoder-only": decoder_n,
    "LoRA + decoder": decoder_n + lora_n,
}
print(f"{S.variant}: {total:,} parameters, of which the image encoder {encoder_n:,}")
for name, n in rows.items():
    print(f"  {name:15s} trains {n:>11,d} ({100 * n / total:5.2f} % of the model)")
print(
    f"  LoRA's share: {lora_n:,} = {len(original.image_encoder.blocks)} blocks x r {S.rank} x (C + 3C)"
)

# %% [markdown]
# ## One LoRA step, written out
#
# **Why there is no cache.** The cache of notebook 03 stores what the frozen encoder
# returns for each photo. With LoRA the encoder changes at every optimizer step, so its
# output does too: every photo of every step goes through the encoder forward and
# backward. That is the arm's whole cost.
#
# **The leaf.** The SAM recipe runs several rounds per photo (a click, the model's
# answer, the next click where it is wrong) and back-propagates each round's loss as soon
# as it is computed, so that only one round's decoder graph is held at a time. With the
# encoder in the graph, each of those backward passes would cross the encoder again. So the
# encoder's output is detached into a *leaf* tensor that the rounds read; their gradients
# add up on the leaf, and **one** backward pass takes the sum through the encoder:

# %%
cfg = replace(S.train, click_rounds=1, refine_rounds=0)
item = train_items[0]
rng_seed = 0

hand = with_lora(original, S.rank, S.alpha, S.targets, seed=1)
decoder_parameters(hand)  # everything frozen but the decoder...
for p in trained_parts(hand).parameters():  # ...and the LoRA layers
    p.requires_grad_(True)
x, _ = preprocess(hand, photos["train"][item.image_id])
features = hand.image_encoder(x)  # through the adapted encoder; its graph is kept
leaf = features.detach().requires_grad_(True)  # what the rounds read
fresh = replace(item, emb=replace(item.emb, embedding=leaf))
loss, _ = sam_image_loss(hand, fresh, cfg, np.random.default_rng(rng_seed), step_images=1)
features.backward(leaf.grad)  # every round's gradient, through the encoder once
print(f"loss {loss:.4f}; the leaf's gradient {tuple(leaf.grad.shape)}, norm {leaf.grad.norm():.2e}")

package = with_lora(original, S.rank, S.alpha, S.targets, seed=1)
decoder_parameters(package)
for p in trained_parts(package).parameters():
    p.requires_grad_(True)
step_loss = encoding_loss(sam_image_loss, photos["train"])
step_loss(package, item, cfg, np.random.default_rng(rng_seed), step_images=1)
for (name, a), b in zip(hand.named_parameters(), package.parameters()):
    assert (a.grad is None) == (b.grad is None), name
    if a.grad is not None:
        torch.testing.assert_close(a.grad, b.grad, msg=name)
print("by hand == helpers.sam.lora.encoding_loss: the same gradients, parameter by parameter")

# %% [markdown]
# **Gradient checkpointing.** The encoder's graph is the arm's memory: every block's
# activations for a 1024 x 1024 photo. `torch.utils.checkpoint` keeps only each block's
# input and recomputes the block during the backward pass: one more forward pass of
# compute for the activations of one block at a time. Written out, it is the ViT's own
# forward with each block wrapped; the gradients are the same:


# %%
def encode_checkpointed(encoder, x):
    vit = encoder.get_base_model()  # segment-anything's ImageEncoderViT, adapted by peft
    h = vit.patch_embed(x) + vit.pos_embed
    for block in vit.blocks:
        h = checkpoint(block, h, use_reentrant=False)  # only h is kept for the backward
    return vit.neck(h.permute(0, 3, 1, 2))


grads = []
for encode in (
    lambda m, x: m.image_encoder(x),
    lambda m, x: encode_checkpointed(m.image_encoder, x),
):
    m = with_lora(original, S.rank, S.alpha, S.targets, seed=1)
    g = torch.Generator().manual_seed(0)  # the same non-zero B in both, so A gets a gradient
    with torch.no_grad():
        for n, p in m.image_encoder.named_parameters():
            if "lora_B" in n:
                p.copy_(0.02 * torch.randn(p.shape, generator=g))
    encode(m, x).square().mean().backward()
    grads.append({n: p.grad for n, p in m.image_encoder.named_parameters() if p.grad is not None})
for n in grads[0]:
    torch.testing.assert_close(grads[1][n], grads[0][n], msg=n)
print(f"checkpointed blocks: the same gradients for all {len(grads[0])} LoRA tensors")

# %% [markdown]
# `SamTrainConfig(checkpointing=True)` switches it on in training (`S.checkpointing`;
# `benchmarks/lora_encoder.py` measures what it costs and saves, and the last section
# prints its estimate of what vit_b needs on a 16 GB T4 either way). On CUDA the step
# runs under fp16 autocast as in notebook 03.
#
# ## Training the two arms
#
# The same loop as notebook 03, `train_decoder`: given `images`, it trains the LoRA layers
# with the decoder, encodes each photo of each step (`encoding_loss`) and re-encodes the
# validation photos after each epoch. Each arm keeps its best epoch by the validation
# score and can resume from its `last.pt`.

# %%
RUNS = {
    "decoder-only": run_folder(S.variant, "sam", "_labpics"),
    "LoRA + decoder": run_folder(S.variant, "sam", "_labpics_lora"),
}
decoder_only = with_own_decoder(original)  # shares the frozen encoder: cached embeddings
histories = {
    "decoder-only": train_decoder(
        decoder_only, train_items, val_items, S.train, RUNS["decoder-only"]
    ),
    "LoRA + decoder": train_decoder(
        lora_model,
        train_items,
        val_items,
        replace(S.train, checkpointing=S.checkpointing),
        RUNS["LoRA + decoder"],
        images=photos["train"],
    ),
}
for name, history in histories.items():
    last = history[-1]
    print(
        f"{name}: {len(history)} epochs, last train loss {last['train_loss']:.4f}, "
        f"val mIoU@1 {last['val_miou@1']:.3f}, {sum(r['seconds'] for r in history):.1f} s in all"
    )
fig, ax = plt.subplots(figsize=(6, 3.2))
for name, history in histories.items():
    ax.plot([r["epoch"] for r in history], [r["val_score"] for r in history], "o-", label=name)
ax.set(xlabel="epoch", ylabel="(mIoU@1 + box mIoU) / 2", title="validation score: chooses best.pt")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# ## Measured: before, decoder-only, LoRA
#
# Each arm's best epoch, on the test photos, with the protocol of notebook 03: mIoU after
# k clicks, NoC@85/90 (clicks to reach IoU 0.85/0.90; the maximum when never reached) and
# the tight box's mIoU. The LoRA arm's test photos are encoded by its own encoder.

# %%
meta = load_decoder(decoder_only, RUNS["decoder-only"] / "best.pt")
print(f"decoder-only: best epoch {meta['epoch']} of {S.train.epochs}")
meta = load_adapter(lora_model, RUNS["LoRA + decoder"] / "best.pt")
print(f"LoRA + decoder: best epoch {meta['epoch']} of {S.train.epochs}")
lora_test_items = reembedded(lora_model, test_items, photos["test"])
EVALUATIONS = cache_dir() / "evaluations"
kw = dict(max_clicks=S.max_clicks, class_names=("vessel",), cache=EVALUATIONS)
results = {
    "before": evaluate(original, test_items, **kw),
    "decoder-only": evaluate(decoder_only, test_items, **kw),
    "LoRA + decoder": evaluate(lora_model, lora_test_items, **kw),
}
print(f"test split, {results['before']['instances']} vessels (mIoU: higher is better; NoC: lower)")
print(comparison_table(results))

# %% [markdown]
# Read the table for what it measures: one split, one seed, the same budget for both
# trained arms. Where the LoRA column and the decoder-only column differ by less than the
# spread between seeds (not measured here), the encoder's adaptation has not bought
# anything on this data; where the embedding itself was wrong, it is where it shows.

# %% [markdown]
# ## Side by side
#
# The first click on each test vessel, answered by the three arms:

# %%
shown = [(i, k) for i in range(len(test_items)) for k in range(len(test_items[i].masks))][:4]
names = list(results)
fig, axes = plt.subplots(
    len(shown), 3, figsize=(11, 3.4 * len(shown)), squeeze=False, layout="constrained"
)
for row, (i, k) in enumerate(shown):
    it, image = test_items[i], test_ds[test_ds.ids.index(test_items[i].image_id)]["image"]
    x, y, _ = next_click(np.zeros_like(it.masks[k]), it.masks[k], it.void)
    for col, (name, model, emb) in enumerate(
        [
            ("before", original, it.emb),
            ("decoder-only", decoder_only, it.emb),
            ("LoRA + decoder", lora_model, lora_test_items[i].emb),
        ]
    ):
        with torch.no_grad():
            out = predict_round(model, emb, np.array([[[x, y]]]), np.array([[1]]))
        mask = out["chosen_masks"][0].numpy()
        plotting.show_prediction(
            axes[row, col],
            image,
            mask,
            it.masks[k],
            [[x, y]],
            [1],
            title=f"{it.image_id} · {name}: IoU {mask_iou(mask, it.masks[k], it.void):.2f}",
        )
plt.show()

# %% [markdown]
# ## Your turn: click and compare
#
# Left click on a vessel: each arm answers. Right click or shift+click: "not this". Box
# mode: drag a box. The LoRA panel encodes each photo with its own encoder.

# %%
widget, controller = sam_compare_widget(
    {"before": original, "decoder-only": decoder_only, "LoRA + decoder": lora_model}, test_ds
)
widget

# %% [markdown]
# ## Shipping it
#
# Two files are worth writing. The **adapter** holds only what training changed, the LoRA
# layers and the decoder (`save_adapter`, read back by `load_adapter`): small, but it needs
# the course (or peft) and the released checkpoint beside it. The **merged** checkpoint
# folds `W + (alpha / r) B A` into each adapted weight (peft's `merge_and_unload`) and is a
# plain SAM state dict of segment-anything's own layout:

# %%
SHIP = cache_dir() / "runs" / f"sam_lora_{S.variant}"
adapter_file = save_adapter(lora_model, SHIP / "adapter.pt", {"rank": S.rank, "alpha": S.alpha})
merged_file = atomic_save(merged_state_dict(lora_model), SHIP / "sam_lora_merged.pth")
for f in (adapter_file, merged_file):
    print(f"{f.name}: {f.stat().st_size / 2**20:.1f} MiB")

# %% [markdown]
# The merged file in a stock model and `SamPredictor`, with nothing from the course (in
# smoke mode the "registry" is the tiny model's builder, segment-anything's own classes):

# %%
if SMOKE:
    stock = build_tiny_sam()
    stock.load_state_dict(torch.load(merged_file, map_location="cpu", weights_only=True))
else:
    from segment_anything import sam_model_registry

    stock = sam_model_registry[S.variant](checkpoint=str(merged_file))
predictor = SamPredictor(stock.to(DEVICE).eval())
sample = test_ds[0]
predictor.set_image(sample["image"])
x, y, _ = next_click(np.zeros_like(sample["masks"][0]), sample["masks"][0], sample["ignore"])
masks, scores, _ = predictor.predict(
    point_coords=np.array([[x, y]]), point_labels=np.array([1]), multimask_output=True
)
with torch.no_grad():
    ours = predict(
        lora_model, embed_image(lora_model, sample["image"]), np.array([[[x, y]]]), np.array([[1]])
    )
logits = ours["logits"][0].cpu().numpy()
differ = masks != ours["masks"][0].cpu().numpy()
print(
    f"stock SamPredictor vs the course's LoRA model: {differ.sum()} of {differ.size} mask "
    f"pixels differ, scores differ by up to {np.abs(scores - ours['iou'][0].cpu().numpy()).max():.1e}"
)
# merging rounds W + (alpha / r) B A once: a pixel may flip only where a logit is ~0
assert np.abs(logits[differ]).max(initial=0) < 1e-2

# %% [markdown]
# ## Running this for real
#
# **Smoke mode** (`SEGCOURSE_SMOKE=1`, what the tests run) adapts smoke mode's own small
# SAM, pretrained on the course's synthetic scenes (`scripts/pretrain_small_sam.py`),
# which never saw a vessel, on `data_example`'s synthetic LabPics photos: a handful of
# photos, so the table above measures synthetic learning on a few vessels. It says nothing
# about SAM on LabPics.
#
# **Full mode** adapts vit_b on LabPics Medical (~281 MB, downloaded once). The LoRA arm
# costs an encoder forward and backward pass per photo per step: use a GPU runtime.
# `benchmarks/lora_encoder.py` measured each arm's cost on vit_b on a CPU and estimates a
# T4 from it (estimates, not measurements):

# %%
bench_file = REPO_ROOT / "benchmarks" / "results" / "lora_encoder.json"
if bench_file.is_file():
    bench = json.loads(bench_file.read_text())["results"]
    for name, arm in bench["arms"].items():
        print(
            f"{name:20s} trains {arm['trainable_parameters']:>10,d}; {arm['s_per_image']:5.1f} s "
            f"per photo on that CPU; peak memory +{arm['peak_rise_mib']:,} MiB"
        )
    t4 = bench["t4_estimate"]
    print(f"T4 estimate ({t4['assumed']}):")
    for name in ("lora", "lora_checkpointing"):
        e = t4[name]
        print(
            f"  {name}: ~{e['encoder_s_per_image']} s of encoder per photo, peak ~"
            f"{e['peak_gib_batch_1']} GiB at one photo per step, "
            f"~{e['photos_per_step_in_15_gib']} photos per step in 15 GiB"
        )
else:
    print(f"{bench_file}: not measured yet (python -m benchmarks.lora_encoder)")
for name, folder in RUNS.items():
    print(f"{name}: run folder {folder} (resumes from last.pt; delete it to start over)")
rise = {k: results["LoRA + decoder"][k] - results["before"][k] for k in ("miou@1", "box_miou")}
print(
    f"LoRA + decoder against before: mIoU@1 {rise['miou@1']:+.3f}, box mIoU {rise['box_miou']:+.3f}"
)
over = {k: results["LoRA + decoder"][k] - results["decoder-only"][k] for k in rise}
print(
    f"LoRA + decoder against decoder-only: mIoU@1 {over['miou@1']:+.3f}, box mIoU {over['box_miou']:+.3f}"
)
if SMOKE:  # the arm learned on held-out photos
    assert rise["miou@1"] > 0.05 and rise["box_miou"] > 0, rise
