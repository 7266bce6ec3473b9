"""Each recipe's change on the smoke data, held out and trained on, over several seeds.

Notebook 03 measures, in smoke mode, mIoU@1 and box mIoU on ``data_example``'s VOC
**test** split (never trained on) before and after, and asserts that the SAM recipe fits
its training images (box mIoU up). This script measures both changes, over several
training seeds, with notebook 03's own smoke settings (read from the notebook, so the two
cannot drift apart) and smoke mode's pretrained small SAM:

- ``sam``: the SAM recipe, as the notebook trains it;
- ``seed``: the seed's recipe, with the same budget;
- ``sam_without_multimask_loss``: the SAM recipe with the gradient of its multimask mask
  loss cut (the three masks' logits detached in multimask rounds; the IoU head still
  trains).

Prints one JSON object: per run, the change of mIoU@1 and box mIoU between the released
decoder and ``best.pt`` on the test split (``miou@1``, ``box_miou``) and on the training
images (``train_miou@1``, ``train_box_miou``), and per configuration their ranges.

    python benchmarks/recipe_margins.py            # a few minutes on a 2-core CPU
    python benchmarks/recipe_margins.py --seeds 2  # faster
"""

import argparse
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from unittest import mock

import torch
from _results import save

import helpers.sam.training as sam_training
from helpers.course.runtime import DATA_EXAMPLE
from helpers.data.splits import hold_out
from helpers.data.voc import VOCInstanceDataset
from helpers.sam.embeddings import EmbeddingCache
from helpers.sam.evaluation import evaluate
from helpers.sam.items import prepare_items
from helpers.sam.model import load_sam, with_own_decoder
from helpers.sam.training import SamTrainConfig, load_best, train_decoder

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "03_finetune_sam_decoder_voc.py"


def notebook_smoke_config() -> SamTrainConfig:
    """``S.train`` of notebook 03 in smoke mode, from the notebook's own Settings cell."""
    text = NOTEBOOK.read_text()
    start = text.index("@dataclass\nclass Settings:")
    end = text.index("\nS = Settings()", start)
    namespace = dict(dataclass=dataclass, field=field, replace=replace, SMOKE=True)
    namespace["SamTrainConfig"] = SamTrainConfig
    exec(text[start:end], namespace)
    return namespace["Settings"]().train


def without_multimask_loss(real):
    """predict_round with the multimask logits detached: no mask-loss gradient reaches
    the three multimask outputs; everything else unchanged."""

    def cut(*args, **kwargs):
        out = real(*args, **kwargs)
        if out["multimask"]:
            out["low_res"] = out["low_res"].detach()
        return out

    return cut


KEYS = ("miou@1", "box_miou", "train_miou@1", "train_box_miou")


def measured(model, items) -> dict:
    test = evaluate(model, items["test"], max_clicks=1, show_progress=False)
    train = evaluate(model, items["train"], max_clicks=1, show_progress=False)
    return {**{k: test[k] for k in KEYS[:2]}, **{f"train_{k}": train[k] for k in KEYS[:2]}}


def run(name, cfg, sam, items, before, folder) -> dict:
    model = with_own_decoder(sam)
    real = sam_training.predict_round
    patched = without_multimask_loss(real) if name == "sam_without_multimask_loss" else real
    with mock.patch.object(sam_training, "predict_round", patched):
        train_decoder(model, items["train"], items["val"], cfg, folder, show_progress=False)
    load_best(model, folder)
    after = measured(model, items)
    return {k: round(after[k] - before[k], 4) for k in KEYS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    cfg = notebook_smoke_config()
    root = DATA_EXAMPLE / "VOCdevkit"
    sam = load_sam("tiny")
    with tempfile.TemporaryDirectory() as tmp:
        cache = EmbeddingCache(f"{tmp}/emb", sam)
        train, val = hold_out(VOCInstanceDataset(root, "trainval"))
        readers = {"train": train, "val": val, "test": VOCInstanceDataset(root, "test")}
        items = {k: prepare_items(r, cache, show_progress=False)[0] for k, r in readers.items()}
        before = measured(sam, items)
        configs = {
            "sam": cfg,
            "seed": replace(cfg, recipe="seed"),
            "sam_without_multimask_loss": cfg,
        }
        runs = {
            name: [
                run(name, replace(c, seed=s), sam, items, before, f"{tmp}/{name}_{s}")
                for s in range(args.seeds)
            ]
            for name, c in configs.items()
        }
    result = {
        "settings": {k: getattr(cfg, k) for k in ("epochs", "lr", "click_rounds", "refine_rounds")},
        "before": {k: round(before[k], 4) for k in KEYS},
        "runs": runs,
        "ranges": {
            name: {k: [min(r[k] for r in rs), max(r[k] for r in rs)] for k in KEYS}
            for name, rs in runs.items()
        },
    }
    save("recipe_margins", result)


if __name__ == "__main__":
    main()
