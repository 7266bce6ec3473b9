"""Do the notebooks' own checks catch a broken walkthrough? Bugs made on purpose.

Notebooks 01 to 07 write the code they teach in cells (the raw decoder call, a naive RoI
Align, the seed's loop and each fix, the SAM recipe, the full loop and one evaluation, the
predictor swap and one Mask R-CNN iteration, the ONNX export and int8, the gradient
all-reduce and DDP, LoRA and its step) and assert it equal to the package's tested
version. Each
entry of :data:`BREAKS` is a bug a learner or a maintainer could make in such a cell: an
exact snippet of the notebook's ``.py`` (found exactly once) and its replacement. For
each, the notebook is cut after its check (``stop``: the first line of the cell that
follows it), cells the check does not need are left out (``drop``), and the rest runs in
smoke mode as one script; the bug is **caught** when the script fails.

    python benchmarks/notebook_breaks.py                # all, JSON summary on stdout
    python benchmarks/notebook_breaks.py --only 03      # one notebook (repeatable)

The unbroken notebook must pass first (its baseline), or nothing is counted for it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from _results import save

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Notebook:
    path: str
    stop: str  # the script ends before the first line of this cell
    drop: tuple[str, ...] = ()  # cells (by their first code line) the checks do not need


@dataclass(frozen=True)
class Break:
    notebook: str
    old: str
    new: str
    description: str


NOTEBOOKS = {
    "01": Notebook(
        "notebooks/01_sam_architecture.py",
        stop="# %% [markdown]\n# ## Multimask output: three answers to an ambiguous click",
    ),
    "02": Notebook(
        "notebooks/02_roi_align_internals.py",
        stop="# %% [markdown]\n# ## The from-scratch `roi_align`, and why it is fast",
    ),
    "03": Notebook(  # the seed's loop, the fixes and the full loop by hand
        "notebooks/03_finetune_sam_decoder_voc.py",
        stop="# %% [markdown]\n# `train_decoder` is that loop plus what a long run needs",
        drop=('image = test_ds[0]["image"]\nt0 = time.perf_counter()',),
    ),
    "03e": Notebook(  # one instance's evaluation by hand (after the training it measures)
        "notebooks/03_finetune_sam_decoder_voc.py",
        stop="# %% [markdown]\n# `evaluate` does this for every test image",
    ),
    "04": Notebook(
        "notebooks/04_finetune_maskrcnn_labpics.py",
        stop="# %%\nt0 = time.perf_counter()\nhistory = train_maskrcnn(",
    ),
    "05": Notebook(
        "notebooks/05_using_and_shipping_the_decoder.py",
        stop="# %% [markdown]\n# `python benchmarks/onnx_decoder.py` measures",
    ),
    "06": Notebook(
        "notebooks/06_beyond_one_gpu.py",
        stop="# %% [markdown]\n# Validation is split over the processes",
    ),
    "07": Notebook(
        "notebooks/07_lora_image_encoder.py",
        stop="# %% [markdown]\n# `SamTrainConfig(checkpointing=True)` switches it on",
    ),
}

B = Break
BREAKS: list[Break] = [
    # --- 01: the raw decoder call and postprocess_masks against predict
    B(
        "01",
        "cropped = frame_logits[..., : input_size[0], : input_size[1]]",
        "cropped = frame_logits[..., : input_size[1], : input_size[0]]",
        "the padding crop with height and width swapped",
    ),
    B(
        "01",
        'logits = F.interpolate(cropped, (h, w), mode="bilinear", align_corners=False)',
        'logits = F.interpolate(cropped, (h, w), mode="bilinear", align_corners=True)',
        "upsampled with align_corners=True",
    ),
    B(
        "01",
        '        multimask_output=True,\n    )\nprint("low-res masks"',
        '        multimask_output=False,\n    )\nprint("low-res masks"',
        "the single-mask token read for the three-mask answer",
    ),
    # --- 02: RoI Align from scratch against torchvision.ops.roi_align
    B(
        "02",
        "offset = 0.5 if aligned else 0.0",
        "offset = 0.0",
        "aligned=True's half-cell shift left out",
    ),
    B(
        "02",
        "roi_w, roi_h = max(roi_w, 1.0), max(roi_h, 1.0)",
        "pass",
        "the legacy mode's one-cell minimum left out",
    ),
    B(
        "02",
        "(iy + 0.5) * bin_h / gy",
        "iy * bin_h / gy",
        "samples at the bins' corners, not spread inside",
    ),
    B("02", "total / max(gy * gx, 1)", "total / 4", "the mean over a fixed 4 samples"),
    B("02", "else math.ceil(roi_h / ph_n)", "else 2", "adaptive sampling_ratio as a fixed 2"),
    B(
        "02",
        "if y < -1.0 or y > height",
        "if y < 0.0 or y > height - 1",
        "the edge rule: zero too early",
    ),
    B(
        "02",
        "ly, lx = y - y0, x - x0",
        "ly, lx = x - x0, y - y0",
        "bilinear weights swapped between axes",
    ),
    # --- 03: the fixes and the loop by hand against the package
    B(
        "03",
        "targets, valid = low[:-2] > 0.5, (low[-2] < 0.5) & (low[-1] > 0.5)",
        "targets, valid = low[:-2] > 0.5, low[-1] > 0.5",
        "the low-res weight keeps void cells",
    ),
    B(
        "03",
        "F.pad(resized, (0, frame - w, 0, frame - h))",
        "F.pad(resized, (0, frame - h, 0, frame - w))",
        "padding widths of the low-res target swapped",
    ),
    B(
        "03",
        "2 * (p * t).sum((-2, -1)) + 1",
        "(p * t).sum((-2, -1)) + 1",
        "Dice without the factor 2",
    ),
    B(
        "03",
        "t, v = targets.float().expand_as(logits), valid.float()",
        "t, v = targets.float().expand_as(logits), torch.ones_like(valid).float()",
        "the void/padding weight left out of the loss",
    ),
    B(
        "03",
        ".min(dim=1).values.mean()",
        ".max(dim=1).values.mean()",
        "the highest of the three losses instead of the lowest",
    ),
    B(
        "03",
        'prev = out["chosen_low_res"][:, 0].detach()  # the next',
        'prev = out["chosen_low_res"][:, 0]  # the next',
        "the previous round's logits fed back without detach",
    ),
    B(
        "03",
        "(loss / len(rounds)).backward()",
        "loss.backward()",
        "each round's loss not divided by the round count",
    ),
    B(
        "03",
        "iou_of_logits(logits.detach(), targets[:, None], valid)",
        "iou_of_logits(logits.detach(), targets[:, None], torch.ones_like(valid))",
        "the IoU head's target counts void cells",
    ),
    B(
        "03",
        "        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)\n",
        "",
        "the loop by hand without gradient clipping",
    ),
    B(
        "03",
        "        scheduler.step()\n",
        "",
        "the loop by hand without the schedule",
    ),
    B(
        "03",
        "    order = np.random.default_rng([cfg.seed, epoch]).permutation(len(few))",
        "    order = np.arange(len(few))",
        "the loop by hand in one order every epoch",
    ),
    B(
        "03e",
        "click = next_click(preds[i], it.masks[i], it.void, clicked[i])",
        "click = next_click(preds[i], it.masks[i], it.void, np.zeros_like(clicked[i]))",
        "the clicker may click a pixel twice",
    ),
    B(
        "03e",
        "out = predict_round(sam_model, it.emb, points, labels, mask_input=low)",
        "out = predict_round(sam_model, it.emb, points, labels)",
        "the evaluation by hand without the previous mask",
    ),
    # --- 04: the predictor swap and one iteration against build_maskrcnn / train_one_epoch
    B(
        "04",
        "heads.mask_predictor = MaskRCNNPredictor(mask_channels, 256, 2)",
        "pass",
        "only the box predictor replaced (the seed's way)",
    ),
    B(
        "04",
        "\nheads.box_predictor = FastRCNNPredictor(in_features, 2)",
        "\nheads.box_predictor = FastRCNNPredictor(in_features, 3)",
        "the box predictor for 3 classes",
    ),
    B(
        "04",
        "    loss = sum(losses.values())\n",
        '    loss = losses["loss_mask"]\n',
        "only the mask loss",
    ),
    B(
        "04",
        "torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)",
        "pass",
        "no gradient clipping",
    ),
    B("04", "scheduler.step()  # per iteration", "pass", "the schedule not stepped"),
    B(
        "04",
        "    return warmup_cosine(step, steps_total, cfg.warmup_frac, cfg.min_lr_frac)",
        "    return 1.0",
        "no warm-up: the full lr from step 0",
    ),
    # --- 05: the export, the feed and int8 written out against the package
    B(
        "05",
        "masks.index_select(2, torch.arange(size[0])).index_select(3, torch.arange(size[1]))",
        "masks.index_select(2, torch.arange(size[1])).index_select(3, torch.arange(size[0]))",
        "the traceable crop with height and width swapped",
    ),
    B(
        "05",
        '"point_labels": np.array([[1, -1]], np.float32)',
        '"point_labels": np.array([[1, 0]], np.float32)',
        "the feed's padding point labelled background",
    ),
    B(
        "05",
        "weight_type=QuantType.QInt8)",
        "weight_type=QuantType.QUInt8)",
        "int8 by hand with unsigned weights",
    ),
    # --- 06: shard, the all-reduce and DDP against the package and one process
    B(
        "06",
        "return range(rank, n, world)",
        "return range(rank * n // world, (rank + 1) * n // world)",
        "shares as contiguous blocks",
    ),
    B("06", "    dist.all_reduce(flat)  # the sum", "    pass  # the sum", "no all-reduce"),
    B(
        "06",
        'share = len(mine) if how == "ddp" else n_images',
        "share = len(mine)",
        "each process divides by its own share, then sums",
    ),
    B(
        "06",
        "            with self.ddp.no_sync():  # accumulate; no communication\n",
        "            with contextlib.nullcontext():\n",
        "DDP synchronises every round",
    ),
    # --- 07: LoRA, its step and checkpointing written out against peft and the package
    B(
        "07",
        "self.base, self.scale = base.requires_grad_(False), alpha / rank",
        "self.base, self.scale = base.requires_grad_(False), alpha",
        "the update scaled by alpha, not alpha / r",
    ),
    B(
        "07",
        "return self.base(x) + self.scale * (x @ self.A.T) @ self.B.T",
        "return self.base(x) + self.scale * (x @ self.B) @ self.A",
        "B A applied in the wrong order (A and B transposed)",
    ),
    B(
        "07",
        "features.backward(leaf.grad)  # every round's gradient",
        "features.backward(leaf.grad / 2)  # every round's gradient",
        "the leaf's gradient halved on its way through the encoder",
    ),
    B(
        "07",
        "leaf = features.detach().requires_grad_(True)  # what the rounds read",
        "leaf = features.detach().requires_grad_(True) * 1.0  # what the rounds read",
        "the rounds read a copy of the leaf (its gradient never arrives)",
    ),
    B(
        "07",
        "    h = vit.patch_embed(x) + vit.pos_embed\n",
        "    h = vit.patch_embed(x)\n",
        "the checkpointed encoder without the position embedding",
    ),
]


def script_for(nb: Notebook, brk: Break | None) -> str:
    """The notebook's ``.py`` with the break applied, cut after its check, as a script."""
    text = (REPO / nb.path).read_text()
    if brk is not None:
        n = text.count(brk.old)
        if n != 1:
            raise ValueError(f"{nb.path}: snippet found {n} times: {brk.old!r}")
        text = text.replace(brk.old, brk.new)
    if text.count(nb.stop) != 1:
        raise ValueError(f"{nb.path}: stop marker not found once: {nb.stop!r}")
    text = text[: text.index(nb.stop)]
    cells = text.split("\n# %%")
    kept = [c for c in cells if not any(c.split("\n", 1)[-1].startswith(d) for d in nb.drop)]
    head = "import contextlib\nimport matplotlib\nmatplotlib.use('Agg')\n"
    return head + "\n# %%".join(kept)


def run(nb: Notebook, brk: Break | None, timeout: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="notebook-break-") as tmp:
        path = Path(tmp) / "nb.py"
        path.write_text(script_for(nb, brk))
        env = dict(
            os.environ,
            SEGCOURSE_SMOKE="1",
            TQDM_DISABLE="1",
            MPLBACKEND="Agg",
            SEGCOURSE_CACHE=str(Path(tmp) / "cache"),
        )
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(
                [sys.executable, str(path)],
                cwd=tmp,
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
            rc, tail = proc.returncode, (proc.stdout + proc.stderr)[-600:]
        except subprocess.TimeoutExpired:
            rc, tail = None, "timeout"
    last = [line for line in tail.splitlines() if line.strip()]
    return {
        "rc": rc,
        "seconds": round(time.perf_counter() - t0, 1),
        "last": last[-1] if last else "",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", help="a notebook number, e.g. 03")
    parser.add_argument("--timeout", type=float, default=900.0)
    args = parser.parse_args()
    chosen = args.only or sorted(NOTEBOOKS)
    results = []
    for key in chosen:
        nb = NOTEBOOKS[key]
        base = run(nb, None, args.timeout)
        print(f"[{key}] baseline: exit code {base['rc']} in {base['seconds']} s", file=sys.stderr)
        if base["rc"] != 0:
            print(f"[{key}] the unbroken notebook fails: {base['last']}", file=sys.stderr)
            results.append({"notebook": key, "baseline": base})
            continue
        for brk in (b for b in BREAKS if b.notebook == key):
            r = run(nb, brk, args.timeout)
            caught = r["rc"] not in (0, None)
            verdict = "CAUGHT " if caught else "ESCAPED"
            print(f"[{key}] {verdict} {brk.description}: {r['last'][:120]}", file=sys.stderr)
            results.append({"notebook": key, "break": brk.description, "caught": caught, **r})
    breaks = [r for r in results if "break" in r]
    summary = {
        "breaks": len(breaks),
        "caught": sum(r["caught"] for r in breaks),
        "escaped": [f"{r['notebook']}: {r['break']}" for r in breaks if not r["caught"]],
        "results": results,
    }
    save("notebook_breaks", summary)


if __name__ == "__main__":
    main()
