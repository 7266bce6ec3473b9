"""How well the unit tests catch realistic bugs: a mutation audit of helpers/.

Each entry of :data:`MUTATIONS` is one bug a developer could plausibly make (an
off-by-one, swapped x/y, a dropped void mask, argmin for argmax, a missing detach, a
forgotten check ...): a module, an exact ``old`` snippet that occurs once in it, its
``new`` replacement, and a one-line description. For each, the unit tests run on a copy
of the module with that one bug in it; the bug is **caught** when they fail (pytest exit
code 1) and **escapes** when they pass (exit code 0). Anything else (timeout, collection
error, exit codes 2-5) is recorded apart with its reason. A mutation whose snippet is not
found exactly once is **invalid** (fix the list), never counted as caught.

Everything runs in a snapshot: the repository's committed HEAD exported into a temporary
folder (``git archive HEAD``), with ``PYTHONPATH`` and the working directory set to it,
so that uncommitted edits in the checkout are neither tested nor touched. The unmutated
snapshot must pass first (the baseline); bytecode is never written, so a mutation of the
same size within the same second cannot be served a stale ``.pyc``.

    python benchmarks/mutation_audit.py                    # all, JSON summary on stdout
    python benchmarks/mutation_audit.py --set new          # round 2's 40 only
    python benchmarks/mutation_audit.py --only clicks      # one module (repeatable)
    python benchmarks/mutation_audit.py --list             # the mutations, checked
    python benchmarks/mutation_audit.py --out audit.json   # the summary also to a file
    python benchmarks/mutation_audit.py --targeted         # only the tests naming the module
    python benchmarks/mutation_audit.py --jobs 2           # two at a time (two cores)

One line per mutation goes to stderr as it finishes. A full run takes about as many
test-suite runs as there are mutations (a caught one stops at the first failure: ``-x``).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from _results import save

REPO = Path(__file__).resolve().parent.parent
#: slow and about other things: the real-browser widget test, the torchrun tests; and the
#: check that the README quotes benchmarks/results, which is out of step while the
#: benchmarks (this audit among them) are being run again (no mutation is in its module)
IGNORED_TEST_FILES = ("test_widget_browser.py", "test_distributed.py", "test_readme_results.py")
PYTEST_ARGS = [
    "-m",
    "pytest",
    "-q",
    "-x",
    "-p",
    "no:cacheprovider",
    "-n",
    "0",  # one process: -x stops at the first failure, and the two cores are the audit's
    "tests",
    *[f"--ignore=tests/{name}" for name in IGNORED_TEST_FILES],
]


@dataclass(frozen=True)
class Mutation:
    module: str  # path relative to the repository root, e.g. "helpers/sam/clicks.py"
    old: str  # must occur exactly once in the module
    new: str
    description: str


M = Mutation
MUTATIONS: list[Mutation] = [
    # --- clicks: the evaluation clicker and the training clicker
    M(
        "helpers/sam/clicks.py",
        "positive = bool(fn_max > fp_max)",
        "positive = bool(fn_max >= fp_max)",
        "tie between missed and spurious regions becomes a positive click",
    ),
    M(
        "helpers/sam/clicks.py",
        "return float(col), float(row), positive",
        "return float(row), float(col), positive",
        "next_click returns (row, col) instead of (x, y)",
    ),
    M(
        "helpers/sam/clicks.py",
        "fp = pred & ~gt & keep",
        "fp = pred & ~gt",
        "void pixels count as spurious (false-positive) region",
    ),
    M(
        "helpers/sam/clicks.py",
        "rows[i], cols[i] = divmod(k, w)",
        "cols[i], rows[i] = divmod(k, w)",
        "training clicker unflattens the error cell as (col, row)",
    ),
    M(
        "helpers/sam/clicks.py",
        "if iou >= threshold:",
        "if iou > threshold:",
        "NoC: an IoU exactly at the threshold does not count as reached",
    ),
    # --- losses
    M(
        "helpers/sam/losses.py",
        "n_valid = weight.flatten(-2).sum(-1).clamp(min=1)",
        "n_valid = torch.ones_like(weight).flatten(-2).sum(-1)",
        "BCE divided by all pixels instead of the valid ones",
    ),
    M(
        "helpers/sam/losses.py",
        "t = targets * weight",
        "t = targets",
        "Dice counts target pixels on void/padding",
    ),
    M(
        "helpers/sam/losses.py",
        "dice = 1 - (2 * inter + eps)",
        "dice = 1 - (inter + eps)",
        "Dice without the factor 2 on the intersection",
    ),
    M(
        "helpers/sam/losses.py",
        "torch.ones_like(union))",
        "torch.zeros_like(union))",
        "IoU target of an empty prediction on an empty target is 0 instead of 1",
    ),
    # --- prompts
    M(
        "helpers/sam/prompts.py",
        "box = np.array([xs.min(), ys.min(), xs.max(), ys.max()], dtype=np.float32)",
        "box = np.array([ys.min(), xs.min(), ys.max(), xs.max()], dtype=np.float32)",
        "instance box built as (y0, x0, y1, x1)",
    ),
    M(
        "helpers/sam/prompts.py",
        "pts.append(np.stack([xs, ys], axis=1))",
        "pts.append(np.stack([ys, xs], axis=1))",
        "point prompts as (row, col) instead of (x, y)",
    ),
    M(
        "helpers/sam/prompts.py",
        "if u < cfg.p_points + cfg.p_box:",
        "if u < cfg.p_box:",
        "prompt kind drawn with non-cumulative thresholds (box probability wrong)",
    ),
    M(
        "helpers/sam/prompts.py",
        "std = np.minimum(cfg.box_noise * np.array([bw, bh, bw, bh]), cap)",
        "std = np.maximum(cfg.box_noise * np.array([bw, bh, bw, bh]), cap)",
        "box-noise cap used as a floor (max instead of min)",
    ),
    # --- sam.predict
    M(
        "helpers/sam/predict.py",
        "pts = transform.apply_coords_torch(pts, emb.original_size)",
        "pts = transform.apply_coords_torch(pts, emb.input_size)",
        "points scaled from the resized size instead of the original size",
    ),
    M(
        "helpers/sam/predict.py",
        'out["iou"].argmax(dim=1)',
        'out["iou"].argmin(dim=1)',
        "ambiguous prompt keeps the mask with the lowest predicted IoU",
    ),
    M(
        "helpers/sam/predict.py",
        "return boxes is None and mask_input is None and points is not None",
        "return mask_input is None and points is not None",
        "one point plus a box treated as ambiguous (three masks)",
    ),
    M(
        "helpers/sam/predict.py",
        "return sam.preprocess(x), tuple(resized.shape[:2])",
        "return sam.preprocess(x), tuple(image.shape[:2])",
        "preprocess reports the original size as the resized input size",
    ),
    # --- sam.evaluation
    M(
        "helpers/sam/evaluation.py",
        "clicked[i, int(y), int(x)] = True",
        "clicked[i, int(x), int(y)] = True",
        "clicked pixel recorded transposed (x as row)",
    ),
    M(
        "helpers/sam/evaluation.py",
        "out = predict_round(sam, item.emb, points, labels, mask_input=low)",
        "out = predict_round(sam, item.emb, points, labels, mask_input=None)",
        "previous round's logits not fed back as the mask prompt",
    ),
    M(
        "helpers/sam/evaluation.py",
        "float(curves[:, k - 1].mean())",
        "float(curves[:, k].mean())",
        "mIoU@k read one click late (0-based column off by one)",
    ),
    M(
        "helpers/sam/evaluation.py",
        "(ious[:, : k + 1].max(axis=1) >= stop_at).all()",
        "(ious[:, : k + 1].max(axis=1) >= stop_at).any()",
        "early stop once any instance (not every one) reached the IoU",
    ),
    # --- sam.training
    M(
        "helpers/sam/training.py",
        "mask_loss = per_mask.min(dim=1).values.mean()",
        "mask_loss = per_mask.mean()",
        "ambiguous round back-propagates the mean of the three losses, not the lowest",
    ),
    M(
        "helpers/sam/training.py",
        'prev = out["chosen_low_res"][:, 0].detach().float()',
        'prev = out["chosen_low_res"][:, 0].float()',
        "previous round's logits fed back without detach",
    ),
    M(
        "helpers/sam/training.py",
        "lab = np.where(has, positive.astype(np.int64), -1)",
        "lab = np.where(has, positive.astype(np.int64), 0)",
        "instance without error gets a background click instead of a padding point",
    ),
    M(
        "helpers/sam/training.py",
        "order = np.random.default_rng([cfg.seed, epoch]).permutation(len(train_items))",
        "order = np.random.default_rng(cfg.seed).permutation(len(train_items))",
        "every epoch draws the same prompts, clicks and image order",
    ),
    M(
        "helpers/sam/training.py",
        'first["low_res"][rows, first["iou"].argmax(dim=1)]',
        'first["low_res"][rows, first["iou"].argmin(dim=1)]',
        "seed recipe feeds back the pass-1 mask with the lowest predicted IoU",
    ),
    # --- sam.items
    M(
        "helpers/sam/items.py",
        "padded = F.pad(resized, (0, FRAME - w, 0, FRAME - h))",
        "padded = F.pad(resized, (0, FRAME - h, 0, FRAME - w))",
        "low-res targets padded with width and height swapped",
    ),
    M(
        "helpers/sam/items.py",
        "return targets, (void_low < 0.5) & (inside > 0.5)",
        "return targets, void_low < 0.5",
        "padding cells count as valid in the low-res frame",
    ),
    M(
        "helpers/sam/items.py",
        "x = np.clip((4 * np.asarray(cols, np.float64) + 1.5)",
        "x = np.clip((4 * np.asarray(cols, np.float64) + 2)",
        "low-res cell to pixel: half pixel added twice on x",
    ),
    # --- checkpoints
    M(
        "helpers/checkpoints.py",
        '    torch.set_rng_state(state["rng"])\n',
        "",
        "resume does not restore torch's random state",
    ),
    M(
        "helpers/checkpoints.py",
        "if missing or unexpected or wrong:",
        "if missing or unexpected:",
        "shape mismatches not reported as CheckpointError",
    ),
    M(
        "helpers/checkpoints.py",
        "except BaseException:",
        "except Exception:",
        "an interrupt (KeyboardInterrupt) during save leaves the temporary file",
    ),
    # --- sam.model
    M(
        "helpers/sam/model.py",
        'mine = {"variant": variant_of(sam), "encoder_fingerprint": encoder_fingerprint(sam)}',
        'mine = {"variant": variant_of(sam)}',
        "decoder trained with other encoder weights of the same variant is accepted",
    ),
    M(
        "helpers/sam/model.py",
        '    check_finite(path, payload["mask_decoder"])\n',
        "",
        "decoder checkpoint with NaN/Inf weights is loaded",
    ),
    M(
        "helpers/sam/model.py",
        "key = tuple((t.data_ptr(), t._version) for t in state.values())",
        "key = tuple(t.data_ptr() for t in state.values())",
        "fingerprint cache ignores in-place weight updates (stale fingerprint)",
    ),
    # --- embeddings
    M(
        "helpers/sam/embeddings.py",
        'f"{self.fingerprint}|{PREPROCESSING_VERSION}|{image_key(image)}"',
        'f"{PREPROCESSING_VERSION}|{image_key(image)}"',
        "cache key without the encoder fingerprint (another encoder's embedding is a hit)",
    ),
    M(
        "helpers/sam/embeddings.py",
        "                and bool(torch.isfinite(emb).all())\n",
        "",
        "cache entry holding NaN/Inf is accepted",
    ),
    M(
        "helpers/sam/embeddings.py",
        "digest = hashlib.sha1(str(image.shape).encode())",
        "digest = hashlib.sha1()",
        "image key ignores the shape (same bytes, other shape collide)",
    ),
    # --- compare (widget controllers)
    M(
        "helpers/views/compare.py",
        "self.box = (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))",
        "self.box = (x0, y0, x1, y1)",
        "box dragged up/left is not normalised to x0 <= x1, y0 <= y1",
    ),
    M(
        "helpers/views/compare.py",
        'x0, y0, x1, y1 = (event[k] - 0.5 for k in ("x0", "y0", "x1", "y1"))',
        'x0, y0, x1, y1 = (event[k] + 0.5 for k in ("x0", "y0", "x1", "y1"))',
        "canvas position to pixel index: half-pixel shift with the wrong sign",
    ),
    M(
        "helpers/views/compare.py",
        "            self.state.undo()\n            self._rounds.pop()\n",
        "            self.state.undo()\n",
        "undo restores the prompts but keeps the undone round's masks and logits",
    ),
    M(
        "helpers/views/compare.py",
        "hit = np.flatnonzero(masks[:, y, x])",
        "hit = np.flatnonzero(masks[:, x, y])",
        "ground-truth instance looked up at the transposed pixel",
    ),
    # --- voc
    M(
        "helpers/data/voc.py",
        "if i not in (0, VOID_INDEX)]",
        "if i != 0]",
        "void (255) becomes an instance",
    ),
    M(
        "helpers/data/voc.py",
        "labels[k] = int(np.argmax(counts))",
        "labels[k] = int(values[0])",
        "instance class from its first pixel instead of the majority",
    ),
    M(
        "helpers/data/voc.py",
        'encoding="utf-8-sig"',
        'encoding="utf-8"',
        "a byte-order mark in a split file becomes part of the first id",
    ),
    # --- labpics
    M(
        "helpers/data/labpics.py",
        "            check_same_size(ignore_path, ignore, hw)\n",
        "",
        "Ignore.png of the wrong size is not detected",
    ),
    M(
        "helpers/data/labpics.py",
        '"labels": np.ones(len(masks), dtype=np.int64)',
        '"labels": np.zeros(len(masks), dtype=np.int64)',
        "vessels labelled 0 (background)",
    ),
    M(
        "helpers/data/labpics.py",
        "if vessels.is_dir():",
        "if vessels.exists():",
        "a Vessels file (not a folder) is accepted as annotations",
    ),
    # --- targets
    M(
        "helpers/detection/targets.py",
        "x1, y1 = w - cols.flip(1).argmax(dim=1), h - rows.flip(1).argmax(dim=1)",
        "x1, y1 = w - 1 - cols.flip(1).argmax(dim=1), h - 1 - rows.flip(1).argmax(dim=1)",
        "boxes end on the last pixel's centre, not its edge (missing +1)",
    ),
    M(
        "helpers/detection/targets.py",
        'np.asarray(sample["labels"] if labels is None else labels)',
        'np.asarray(sample["labels"])',
        "the labels argument is ignored",
    ),
    # --- detection.data
    M(
        "helpers/detection/data.py",
        "return inside > overlap * np.maximum(area, 1)",
        "return inside >= overlap * np.maximum(area, 1)",
        "an instance exactly half inside Ignore counts as ignored",
    ),
    M(
        "helpers/detection/data.py",
        '        target["area"] = pixel_counts(target["masks"]).to(torch.float32)\n',
        "",
        "area not recomputed after the transforms",
    ),
    M(
        "helpers/detection/data.py",
        'keep = ~ignored_instances(s["masks"], s["ignore"], self.ignore_overlap)',
        'keep = ignored_instances(s["masks"], s["ignore"], self.ignore_overlap)',
        "training keeps only the ignored instances (missing ~)",
    ),
    # --- coco_eval
    M(
        "helpers/detection/coco_eval.py",
        '"bbox": [x0, y0, x1 - x0, y1 - y0],',
        '"bbox": [x0, y0, x1, y1],',
        "detection boxes passed to COCO as xyxy instead of xywh",
    ),
    M(
        "helpers/detection/coco_eval.py",
        '"iscrowd": int(is_crowd),',
        '"iscrowd": 0,',
        "ground truth mostly inside Ignore is not marked crowd",
    ),
    M(
        "helpers/detection/coco_eval.py",
        'detections += coco_detections(i, out, s.get("ignore"))',
        "detections += coco_detections(i, out)",
        "evaluate_detector does not drop detections inside Ignore",
    ),
    # --- maskrcnn
    M(
        "helpers/detection/model.py",
        "    model.roi_heads.mask_predictor = MaskRCNNPredictor(mask_channels, 256, num_classes)\n",
        "",
        "only the box predictor replaced (the seed's bug): COCO's 91-class mask head kept",
    ),
    M(
        "helpers/detection/model.py",
        '    out["labels"] = torch.ones_like(out["labels"])\n',
        "",
        "vessel-like COCO detections keep their COCO labels",
    ),
    M(
        "helpers/detection/model.py",
        "if lo < 0 or hi > 1:",
        "if lo < 0 or hi > 255:",
        "0-255 float images pass the input check",
    ),
    # --- detection.training
    M(
        "helpers/detection/training.py",
        "        optimizer.zero_grad(set_to_none=True)\n",
        "",
        "gradients never zeroed (accumulate across iterations)",
    ),
    M(
        "helpers/detection/training.py",
        'record, record["val_segm_ap"], lambda path',
        'record, record["val_bbox_ap"], lambda path',
        "best.pt chosen by comparing box AP with the best mask AP",
    ),
    M(
        "helpers/detection/training.py",
        "steps_per_epoch = math.ceil(len(sampler) / cfg.batch_size)",
        "steps_per_epoch = len(sampler) // cfg.batch_size",
        "schedule length ignores the last partial batch",
    ),
    # --- roi_align
    M(
        "helpers/detection/roi_align.py",
        "+ (i + 0.5) * bin_size / gridf",
        "+ i * bin_size / gridf",
        "RoI Align samples at sub-cell corners instead of centres",
    ),
    M(
        "helpers/detection/roi_align.py",
        "gh = torch.ceil(roi_h / ph).to(torch.int64)",
        "gh = torch.ceil(roi_w / ph).to(torch.int64)",
        "adaptive sampling count of rows taken from the RoI width",
    ),
    M(
        "helpers/detection/roi_align.py",
        "r1 = min(max(math.ceil(t(p + 1) * bin_h) + sy, 0), h)",
        "r1 = min(max(math.floor(t(p + 1) * bin_h) + sy, 0), h)",
        "RoI Pool bin end rounded down instead of up",
    ),
    M(
        "helpers/detection/roi_align.py",
        "    v = float(v)\n"
        "    return int(math.floor(v + 0.5)) if v >= 0 else -int(math.floor(-v + 0.5))",
        "    return round(float(v))",
        "RoI Pool box rounding with Python's round (ties to even), not C's",
    ),
    M(
        "helpers/detection/roi_align.py",
        "torch.log2(area.sqrt() / canonical_size)",
        "torch.log2(area / canonical_size)",
        "FPN level from the area instead of its square root",
    ),
    # --- metrics
    M(
        "helpers/metrics.py",
        "return 1.0 if union == 0 else",
        "return 0.0 if union == 0 else",
        "IoU of two empty masks is 0",
    ),
    M(
        "helpers/metrics.py",
        "pred, target = pred & keep, target & keep",
        "pred = pred & keep",
        "ignored pixels dropped from the prediction only, not the target",
    ),
    # --- schedules
    M(
        "helpers/schedules.py",
        "return (step + 1) / warm",
        "return step / warm",
        "warm-up starts at lr 0 (first step wasted)",
    ),
    M(
        "helpers/schedules.py",
        "t = (step - warm) / max(1, total - warm)",
        "t = step / max(1, total - warm)",
        "cosine phase counted from step 0, not from the end of warm-up",
    ),
    M(
        "helpers/schedules.py",
        "return min_lr_frac + (1 - min_lr_frac) * 0.5 *",
        "return min_lr_frac + 0.5 *",
        "cosine not scaled by (1 - min_lr_frac): starts above 1",
    ),
    # --- downloads
    M(
        "helpers/data/downloads.py",
        "    if md5 is None and sha256_prefix is None:\n        return dest",
        "    if md5 is None:\n        return dest",
        "a file in place with only a SHA-256 prefix is trusted without checking it",
    ),
    M(
        "helpers/data/downloads.py",
        "if have and resp.status == 206:",
        "if have:",
        "resume appends to the partial file even when the server ignored the Range request",
    ),
    M(
        "helpers/data/downloads.py",
        "            if host == host_name():",
        "            if True:",
        "another host's temporary folder judged by a local pid",
    ),
    # --- image_files
    M(
        "helpers/data/image_files.py",
        "        img.load()\n",
        "",
        "lazy open: a truncated file is not detected at read time",
    ),
    M(
        "helpers/data/image_files.py",
        'n_colour = {"RGBA": 3, "LA": 1}.get(img.mode, arr.shape[2])',
        "n_colour = arr.shape[2]",
        "alpha channel counted as colour in binary masks",
    ),
    # --- course.jupyter_save
    M(
        "helpers/course/jupyter_save.py",
        "        if as_committed != recorded:  # its cells changed: a real change",
        "        if False:",
        "the save hook stages a learner's edited cells (git status hides a real change)",
    ),
    M(
        "helpers/course/jupyter_save.py",
        'return path.suffix == ".ipynb" and path.parent == NOTEBOOKS.resolve()',
        'return path.suffix == ".ipynb"',
        "any notebook (not only the course's) is touched by the save hook",
    ),
    # --- course.local_setup
    M(
        "scripts/local_setup.py",
        '    contents["post_save_hook"] = HOOK',
        '    config = {"ContentsManager": {"post_save_hook": HOOK}}',
        "installing the hook overwrites the rest of the Jupyter config",
    ),
    M(
        "scripts/local_setup.py",
        'json.loads(path.read_text() or "{}")',
        "json.loads(path.read_text())",
        "an empty Jupyter config file is an error",
    ),
    # --- course.colab_setup
    M(
        "scripts/colab_setup.py",
        'if not re.fullmatch(r"https://github\\.com/[\\w.-]+/[\\w.-]+", url):',
        'if not re.match(r"https://github\\.com/[\\w.-]+/[\\w.-]+", url):',
        "repository URL with trailing junk accepted (match instead of fullmatch)",
    ),
    M(
        "scripts/colab_setup.py",
        'github = repository.removeprefix("https://github.com/")',
        'github = repository.removeprefix("https://github.com")',
        "badge URL gets a double slash (prefix without its trailing /)",
    ),
    # --- runtime
    M(
        "helpers/course/runtime.py",
        'raw = os.environ.get(SMOKE_ENV, "").strip().lower()',
        'raw = os.environ.get(SMOKE_ENV, "").strip()',
        "SEGCOURSE_SMOKE=TRUE / Yes not understood (case-sensitive)",
    ),
    M(
        "helpers/course/runtime.py",
        "path = Path(os.environ[CACHE_ENV]).expanduser()",
        "path = Path(os.environ[CACHE_ENV])",
        "SEGCOURSE_CACHE=~/... not expanded",
    ),
    # --- plotting (stack_labels)
    M(
        "helpers/views/plotting.py",
        "y += h + gap",
        "y += h",
        "stacked labels placed without the gap",
    ),
    M(
        "helpers/views/plotting.py",
        "x < bx1 and bx0 < x + w and y < by1 and by0 < y + h",
        "y < by1 and by0 < y + h",
        "label overlap tested on y only: labels side by side get stacked",
    ),
]


#: Round 2 of the audit (issue 22): 40 more bugs, written before any test meant to catch
#: them, in the code as it stands after the package moved into layers, most in the parts
#: added since (locks, collectives, the run bookkeeping, remembered results, the command
#: lines' checks, the ONNX input checks). ``--set new`` runs these alone.
NEW_MUTATIONS: list[Mutation] = [
    # --- downloads: the lock, the sweep, the stamps, the offline message
    M(
        "helpers/data/downloads.py",
        "        if host == host_name():\n            return not _process_alive(int(pid))",
        "        if True:\n            return not _process_alive(int(pid))",
        "another host's lock judged by a process number of this host",
    ),
    M(
        "helpers/data/downloads.py",
        "return time.time() - lock.stat().st_mtime > STALE_AFTER_S",
        "return time.time() - lock.stat().st_mtime < STALE_AFTER_S",
        "a freshly refreshed lock of another host is taken over",
    ),
    M(
        "helpers/data/downloads.py",
        "            else:\n                stale = locked",
        "            else:\n                stale = True",
        "another host's temporary folder swept without holding the lock",
    ),
    M(
        "helpers/data/downloads.py",
        "        if stamp.read_text() == _checked(md5, sha256_prefix):",
        "        if stamp.is_file():",
        "a stamp of any check trusted for a newly pinned hash",
    ),
    M(
        "helpers/data/downloads.py",
        "    with exclusive(dest, what):  # one transfer, however many processes ask at once",
        "    with contextlib.nullcontext():",
        "fetch takes no lock: concurrent processes each transfer the file",
    ),
    M(
        "helpers/data/downloads.py",
        "for e in failures]",
        "for e in failures[:1]]",
        "the offline error lists only the first missing file",
    ),
    M(
        "helpers/data/voc.py",
        "            failures.append(err)",
        '            raise missing_files_error("VOC2007", [err]) from None',
        "VOC stops at the first missing archive (the next run finds the next one)",
    ),
    M(
        "helpers/data/voc.py",
        "        if marker.is_file():  # done by another process while this one waited",
        "        if False:",
        "a process that waited for the lock extracts VOC2007 again",
    ),
    # --- distributed
    M(
        "helpers/distributed.py",
        "        p.grad = None if count == 0 else flat[offset : offset + n].view_as(p).clone()",
        "        p.grad = flat[offset : offset + n].view_as(p).clone()",
        "parameters no process has a gradient for get zeros (weight decay then moves them)",
    ),
    M(
        "helpers/distributed.py",
        '            backend="nccl" if use_cuda else "gloo", timeout=timedelta(seconds=_timeout)',
        '            backend="nccl" if use_cuda else "gloo"',
        "the process group without the configured timeout",
    ),
    M(
        "helpers/distributed.py",
        "        if not active():\n            raise\n",
        "",
        "errors outside a process group reported as a collective's",
    ),
    # --- the run bookkeeping
    M(
        "helpers/training_run.py",
        "return math.isnan(score) or score > self.best_score",
        "return math.isnan(score) or score >= self.best_score",
        "a tie with the best score replaces best.pt with the later epoch",
    ),
    M(
        "helpers/training_run.py",
        "        if same_processes and trained_by != self.place.world:",
        "        if False:",
        "a Mask R-CNN run resumed with another process count silently",
    ),
    M(
        "helpers/training_run.py",
        "self.first = len(self.history) + 1",
        "self.first = len(self.history) or 1",
        "a resumed run trains its last finished epoch again",
    ),
    M(
        "helpers/training_run.py",
        '                epoch=record["epoch"],',
        "                epoch=len(self.history) - 1,",
        "last.pt records the epoch before the one it holds",
    ),
    # --- remembered results
    M(
        "helpers/remembered.py",
        '            if entry["key"] == key:',
        "            if True:",
        "a result remembered for other inputs served (the file name's 16 characters only)",
    ),
    M(
        "helpers/remembered.py",
        '            digest.update(f"tensor {t.dtype} {tuple(t.shape)}".encode())',
        '            digest.update(f"tensor {t.dtype}".encode())',
        "the fingerprint blind to a tensor's shape",
    ),
    M(
        "helpers/remembered.py",
        '        code.co_code if code is not None else b"",',
        '        b"",',
        "two lambdas of the same name share a fingerprint",
    ),
    M(
        "helpers/sam/evaluation.py",
        "        encoder_fingerprint(sam),\n        max_clicks,\n",
        "        encoder_fingerprint(sam),\n",
        "an evaluation remembered for another number of clicks served",
    ),
    M(
        "helpers/detection/coco_eval.py",
        "            function_identity(transform),",
        "            None,",
        "the 0-255 evaluation served the [0, 1] one's AP",
    ),
    # --- command lines and settings
    M(
        "helpers/command_line.py",
        "allow_abbrev=False",
        "allow_abbrev=True",
        "--epoch 3 taken as --epochs 3",
    ),
    M(
        "helpers/command_line.py",
        "    if value < 1:",
        "    if value < 0:",
        "zero accepted as a count of images or epochs",
    ),
    M(
        "helpers/command_line.py",
        "not Path(args.data).is_dir()",
        "not Path(args.data).exists()",
        "a file accepted as the data set's folder",
    ),
    M(
        "helpers/sam/train.py",
        'world = int(os.environ.get("WORLD_SIZE", "1"))',
        'world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))',
        "the step checked against the processes of one node only",
    ),
    M(
        "helpers/checkpoints.py",
        "    if there is not None and there != here:",
        "    if there is not None and there == here:",
        "a run of the same model refused as another model's, another's accepted",
    ),
    M(
        "helpers/detection/training.py",
        "params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay",
        "params, lr=cfg.lr, momentum=cfg.momentum",
        "Mask R-CNN trains without weight decay",
    ),
    # --- ONNX prompts
    M(
        "helpers/sam/onnx_decoder.py",
        "if not np.isin(codes, (0.0, 1.0, -1.0)).all():",
        "if not np.isin(codes, (0.0, 1.0, -1.0, 2.0, 3.0)).all():",
        "box-corner labels accepted on plain points",
    ),
    M(
        "helpers/sam/onnx_decoder.py",
        "if box[2] < box[0] or box[3] < box[1]:",
        "if box[2] < box[0]:",
        "a box upside down accepted",
    ),
    M(
        "helpers/sam/onnx_decoder.py",
        "np.array([w - 1, h - 1]) + OUTSIDE_TOLERANCE",
        "np.array([h - 1, w - 1]) + OUTSIDE_TOLERANCE",
        "the image's bounds for prompts with width and height swapped",
    ),
    # --- the embedding cache, jobs
    M(
        "helpers/sam/embeddings.py",
        'size = batch_size or (8 if device.type == "cuda" else 1)',
        'size = batch_size or (8 if device.type == "cuda" else 4)',
        "a CPU encodes four images at a time (peak memory of four)",
    ),
    M(
        "helpers/sam/embeddings.py",
        "        if path.is_dir():\n",
        "        if False:\n",
        "a folder where an entry goes ends in os.replace's IsADirectoryError",
    ),
    M(
        "helpers/course/jobs.py",
        'env = dict(os.environ if env is None else env, PYTHONUNBUFFERED="1")',
        "env = dict(os.environ if env is None else env)",
        "a job's lines arrive only when it ends",
    ),
    # --- numbers the course reports
    M(
        "helpers/sam/automatic_masks.py",
        "iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)",
        "iou = np.where(union > 0, inter / np.maximum(union, 1), 0.0)",
        "an empty instance against an empty mask scores 0, not 1",
    ),
    M(
        "helpers/sam/automatic_masks.py",
        "        if k < keep_examples:",
        "        if i < keep_examples:",
        "examples kept by image index instead of position",
    ),
    M(
        "helpers/sam/prompts.py",
        "cap = cfg.box_noise_max * max(h, w) / 1024",
        "cap = cfg.box_noise_max * min(h, w) / 1024",
        "the box-noise cap scaled by the shorter side",
    ),
    M(
        "helpers/sam/evaluation.py",
        "            and k + 1 >= min_clicks",
        "            and k + 1 >= 1",
        "clicking stops after one click: mIoU@3 and @5 repeat click 1",
    ),
    M(
        "helpers/sam/evaluation.py",
        "click_ious(sam, item, max_clicks, stop_at=max(thresholds), min_clicks=max(ks))",
        "click_ious(sam, item, max_clicks, stop_at=min(thresholds), min_clicks=max(ks))",
        "clicking stops at the lowest threshold: NoC@90 inflated",
    ),
    M(
        "helpers/sam/clicks.py",
        "        fn = gt[i] & ~pred[i] & ok",
        "        fn = gt[i] & ~pred[i]",
        "training clicks drawn on void where the object was missed",
    ),
    M(
        "helpers/metrics.py",
        "pred, target = pred & keep, target & keep",
        "pred = pred & keep",
        "mask IoU counts the target's void pixels",
    ),
    M(
        "helpers/sam/losses.py",
        "+ t.flatten(-2).sum(-1) + eps)",
        "+ t.flatten(-2).sum(-1) + 1e-6)",
        "Dice smoothed differently above and below the fraction",
    ),
]


def module_name(path: str) -> str:
    """``helpers/sam/clicks.py`` -> ``sam.clicks`` (the dotted path under ``helpers``)."""
    return ".".join(Path(path).with_suffix("").parts[1:])


def make_snapshot(dest: Path) -> None:
    """Export the committed HEAD of the repository into ``dest``."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "HEAD"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)


def committed(module: str) -> str | None:
    """``module``'s text at the committed HEAD (what a snapshot holds), or None."""
    show = subprocess.run(
        ["git", "-C", str(REPO), "show", f"HEAD:{module}"], capture_output=True, text=True
    )
    return show.stdout if show.returncode == 0 else None


def tests_for(module: str, snapshot: Path) -> list[str]:
    """The test files that can see ``module``: those naming ``helpers.<sub>.<module>`` or one of
    the module's top-level functions or classes. Running only these (``--targeted``)
    makes the audit minutes instead of hours; a bug caught only by an unrelated test file
    then counts as escaped, so the measured share can only be lower than the whole
    suite's."""
    source = (snapshot / module).read_text()
    names = set(re.findall(r"^(?:def|class) (\w+)", source, re.M))
    names = {n for n in names if not n.startswith("_")}
    pattern = re.compile(
        rf"helpers\.{re.escape(module_name(module))}\b|\b(?:{'|'.join(map(re.escape, names))})\b"
    )
    files = []
    for path in sorted((snapshot / "tests").glob("test_*.py")):
        if path.name in IGNORED_TEST_FILES:
            continue
        if pattern.search(path.read_text()):
            files.append(f"tests/{path.name}")
    # the module's own test file first, then those importing the module by name: -x
    # stops at the first failure, so a bug is caught sooner; the same tests run in all
    # (an escaped bug passes every one of them), so no outcome depends on this order
    stem = Path(module).stem
    direct = re.compile(rf"helpers\.{re.escape(module_name(module))}\b")
    return sorted(
        files,
        key=lambda f: (stem not in Path(f).stem, not direct.search((snapshot / f).read_text())),
    )


def run_tests(
    snapshot: Path,
    python: str,
    timeout: float,
    files: list[str] | None = None,
    one_thread: bool = False,
) -> dict:
    """Run the unit tests in ``snapshot`` (only ``files`` when given). Returns ``rc``
    (None on timeout), ``seconds`` and ``tail`` (the last lines of the output)."""
    env = dict(os.environ, PYTHONPATH=str(snapshot), PYTHONDONTWRITEBYTECODE="1")
    if one_thread:  # runs side by side: one thread each, or their thread pools fight
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    t0 = time.perf_counter()
    args = PYTEST_ARGS if not files else [a for a in PYTEST_ARGS if a != "tests"] + files
    proc = subprocess.Popen(
        [python, *args],
        cwd=snapshot,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: a timeout kills its children too
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        rc = None
    return {"rc": rc, "seconds": round(time.perf_counter() - t0, 1), "tail": out[-3000:]}


def first_failure(tail: str) -> str | None:
    """The first ``FAILED``/``ERROR`` line of pytest's short summary, if any."""
    for line in tail.splitlines():
        if line.startswith(("FAILED ", "ERROR ")):
            return line[:200]
    return None


def check(mutation: Mutation, source: str) -> str | None:
    """Why ``mutation`` cannot be applied to ``source``, or None when it can."""
    if mutation.old == mutation.new:
        return "old and new are the same"
    n = source.count(mutation.old)
    return None if n == 1 else f"old snippet found {n} times (must be exactly once)"


def audit_one(
    mutation: Mutation,
    snapshot: Path,
    python: str,
    timeout: float,
    targeted: bool = False,
    one_thread: bool = False,
) -> dict:
    """Apply ``mutation`` in ``snapshot``, run the tests (with ``targeted``, only
    :func:`tests_for` the module), restore the file."""
    path = snapshot / mutation.module
    record = {"module": mutation.module, "description": mutation.description}
    if not path.is_file():
        return {**record, "outcome": "invalid", "reason": "module not found"}
    original = path.read_text()
    problem = check(mutation, original)
    if problem:
        return {**record, "outcome": "invalid", "reason": problem}
    try:
        files = tests_for(mutation.module, snapshot) if targeted else None
        if files == []:
            return {**record, "outcome": "escaped", "reason": "no test file names it"}
        path.write_text(original.replace(mutation.old, mutation.new))
        result = run_tests(snapshot, python, timeout, files, one_thread)
    finally:
        path.write_text(original)
    rc = result["rc"]
    if rc == 1:
        outcome, reason = "caught", first_failure(result["tail"])
    elif rc == 0:
        outcome, reason = "escaped", None
    elif rc is None:
        outcome, reason = "other", f"timeout after {timeout:.0f} s"
    else:
        last = result["tail"].strip().splitlines()[-1:] or [""]
        outcome, reason = "other", f"pytest exit code {rc}: {last[0][:200]}"
    return {**record, "outcome": outcome, "reason": reason, "seconds": result["seconds"]}


def summarise(records: list[tuple[Mutation, dict]]) -> dict:
    modules: dict[str, dict] = {}
    for mutation, r in records:
        m = modules.setdefault(
            mutation.module,
            {"tried": 0, "caught": 0, "escaped": 0, "invalid": 0, "other": 0, "escaped_list": []},
        )
        if r["outcome"] == "invalid":
            m["invalid"] += 1
            continue
        m["tried"] += 1
        m[r["outcome"]] += 1
        if r["outcome"] == "escaped":
            m["escaped_list"].append(
                {"description": mutation.description, "old": mutation.old, "new": mutation.new}
            )
    totals = {k: sum(m[k] for m in modules.values()) for k in ("tried", "caught", "escaped")}
    totals["invalid"] = sum(m["invalid"] for m in modules.values())
    totals["other"] = sum(m["other"] for m in modules.values())
    return {
        "modules": modules,
        "totals": totals,
        # of the mutations that ran (invalid ones excluded; "other" counts as not caught)
        "caught_share": round(totals["caught"] / totals["tried"], 3) if totals["tried"] else None,
        "invalid_or_other": [
            {"module": r["module"], "description": r["description"], "reason": r["reason"]}
            for _, r in records
            if r["outcome"] in ("other", "invalid")
        ],
        "results": [
            {k: r.get(k) for k in ("module", "description", "outcome", "reason", "seconds")}
            for _, r in records
        ],
    }


def selected(only: list[str] | None, which: str = "all") -> list[Mutation]:
    """The mutations of ``which`` set (``original``: the first 87, ``new``: round 2's,
    ``all``), limited to modules named in ``only`` (``sam.clicks`` or ``clicks``)."""
    pool = {"original": MUTATIONS, "new": NEW_MUTATIONS, "all": MUTATIONS + NEW_MUTATIONS}[which]
    if not only:
        return list(pool)

    def named(m: Mutation, o: str) -> bool:
        name = module_name(m.module)
        return name == o or name.endswith("." + o)

    unknown = [o for o in only if not any(named(m, o) for m in pool)]
    if unknown:
        raise SystemExit(f"no mutations for: {', '.join(sorted(unknown))}")
    return [m for m in pool if any(named(m, o) for o in only)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", metavar="MODULE", help="e.g. clicks")
    parser.add_argument("--list", action="store_true", help="print the mutations and exit")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per test run")
    parser.add_argument("--python", default=sys.executable, help="interpreter running pytest")
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="mutations tried at once, each in its own snapshot on one thread (e.g. the cores)",
    )
    parser.add_argument("--out", type=Path, help="also write the JSON summary here")
    parser.add_argument(
        "--targeted",
        action="store_true",
        help="run only the test files that name the mutated module (tests_for)",
    )
    parser.add_argument(
        "--set",
        dest="which",
        choices=("original", "new", "all"),
        default="all",
        help="the first 87 mutations, round 2's 40, or both (default)",
    )
    args = parser.parse_args()
    mutations = selected(args.only, args.which)

    if args.list:
        for i, m in enumerate(mutations, 1):
            source = committed(m.module)
            problem = "module not found at HEAD" if source is None else check(m, source)
            status = "ok" if problem is None else f"INVALID: {problem}"
            print(f"{i:3d}. {m.module}: {m.description} [{status}]")
            print(f"     - {m.old!r}\n     + {m.new!r}")
        print(f"{len(mutations)} mutations (checked against the committed HEAD)")
        return

    jobs = max(1, args.jobs)
    tmp = Path(tempfile.mkdtemp(prefix="mutation-audit-"))
    try:
        snapshots = [tmp / f"repo{j}" for j in range(jobs)]
        for snapshot in snapshots:
            snapshot.mkdir()
            make_snapshot(snapshot)
        baseline = run_tests(snapshots[0], args.python, args.timeout, one_thread=jobs > 1)
        print(f"baseline: exit code {baseline['rc']} in {baseline['seconds']} s", file=sys.stderr)
        if baseline["rc"] != 0:
            print(baseline["tail"], file=sys.stderr)
            raise SystemExit("the unmutated snapshot does not pass its tests: nothing measured")
        free: queue.Queue = queue.Queue()
        for snapshot in snapshots:
            free.put(snapshot)

        def one(m: Mutation) -> dict:
            snapshot = free.get()  # a snapshot no other mutation is using
            try:
                return audit_one(
                    m, snapshot, args.python, args.timeout, args.targeted, one_thread=jobs > 1
                )
            finally:
                free.put(snapshot)

        records = []
        pool = ThreadPoolExecutor(jobs)
        for i, (m, r) in enumerate(zip(mutations, pool.map(one, mutations)), 1):
            records.append((m, r))
            extra = f" ({r['reason']})" if r.get("reason") else ""
            secs = f" {r['seconds']} s" if "seconds" in r else ""
            print(
                f"[{i}/{len(mutations)}] {r['outcome'].upper():8s}{secs} {m.module}: "
                f"{m.description}{extra}",
                file=sys.stderr,
                flush=True,
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    summary = {
        "baseline_seconds": baseline["seconds"],
        "jobs": jobs,
        "targeted": args.targeted,
        "set": args.which,
        **summarise(records),
    }
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2) + "\n")
    save(f"mutation_audit_{args.which}" + ("_targeted" if args.targeted else ""), summary)


if __name__ == "__main__":
    main()
