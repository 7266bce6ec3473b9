"""What notebook 03's smoke asserts separate: each training recipe, on the smoke data.

Notebook 03 asserts, in smoke mode, that the SAM recipe raises mIoU@1 and box mIoU on its
training images by more than 0.05 each. This script measures, over several training
seeds and with the notebook's smoke settings (4 data_example training images, the tiny
random encoder, 6 epochs, lr 1.5e-3, Dice weight 3, 2 rounds):

- ``sam``: the SAM recipe, as the notebook trains it;
- ``seed``: the seed's recipe, with the same budget;
- ``sam_without_multimask_loss``: the SAM recipe with the gradient of its multimask mask
  loss cut (the three masks' logits detached in multimask rounds; the IoU head still
  trains): the mutation the mIoU@1 assert must catch;
- ``sam_dice_1`` / ``seed_dice_1``: both recipes at BCE + Dice 1:1 (seed 0 only), the
  weight of full mode, to show why smoke mode weights Dice 3.

Prints one JSON object: per run, the change of mIoU@1 and box mIoU on the training images
between the untrained decoder and ``best.pt`` (and the box mIoU reached), and per
configuration the range of the changes.

    python benchmarks/recipe_margins.py            # ~7 minutes on a 2-core CPU
    python benchmarks/recipe_margins.py --seeds 2  # faster
"""

import argparse
import tempfile
from unittest import mock

import torch
from _results import save
from torch.utils.data import Subset

import helpers.sam.training as sam_training
from helpers.course.runtime import DATA_EXAMPLE
from helpers.data.voc import VOCInstanceDataset
from helpers.sam.embeddings import EmbeddingCache
from helpers.sam.evaluation import evaluate
from helpers.sam.items import prepare_items
from helpers.sam.model import build_tiny_sam
from helpers.sam.training import SamTrainConfig, load_best, train_decoder

SMOKE = dict(epochs=6, lr=1.5e-3, dice_weight=3.0)  # notebook 03's smoke settings
SAM_ROUNDS = dict(click_rounds=1, refine_rounds=0)


def without_multimask_loss(real):
    """predict_round with the multimask logits detached: no mask-loss gradient reaches
    the three multimask outputs; everything else unchanged."""

    def cut(*args, **kwargs):
        out = real(*args, **kwargs)
        if out["multimask"]:
            out["low_res"] = out["low_res"].detach()
        return out

    return cut


def run(name: str, cfg: SamTrainConfig, items, val_items, before: dict, folder: str) -> dict:
    sam = build_tiny_sam()
    patch = (
        mock.patch.object(
            sam_training, "predict_round", without_multimask_loss(sam_training.predict_round)
        )
        if name == "sam_without_multimask_loss"
        else mock.patch.object(sam_training, "predict_round", sam_training.predict_round)
    )
    with patch:
        train_decoder(sam, items, val_items, cfg, folder, show_progress=False)
    load_best(sam, folder)
    after = evaluate(sam, items, max_clicks=1, show_progress=False)
    changes = {k: round(after[k] - before[k], 4) for k in ("miou@1", "box_miou")}
    return {**changes, "after_box_miou": round(after["box_miou"], 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    root = DATA_EXAMPLE / "VOCdevkit"
    with tempfile.TemporaryDirectory() as tmp:
        cache = EmbeddingCache(f"{tmp}/emb", build_tiny_sam())
        items, _ = prepare_items(
            Subset(VOCInstanceDataset(root, "train"), range(4)), cache, show_progress=False
        )
        val_items, _ = prepare_items(VOCInstanceDataset(root, "val"), cache, show_progress=False)
        before = evaluate(build_tiny_sam(), items, max_clicks=1, show_progress=False)
        configs = {
            "sam": lambda s: SamTrainConfig(recipe="sam", seed=s, **SMOKE, **SAM_ROUNDS),
            "seed": lambda s: SamTrainConfig(recipe="seed", seed=s, **SMOKE),
            "sam_without_multimask_loss": lambda s: SamTrainConfig(
                recipe="sam", seed=s, **SMOKE, **SAM_ROUNDS
            ),
        }
        runs = {name: [] for name in configs}
        for name, make in configs.items():
            for s in range(args.seeds):
                runs[name].append(run(name, make(s), items, val_items, before, f"{tmp}/{name}_{s}"))
        for name, recipe, rounds in (
            ("sam_dice_1", "sam", SAM_ROUNDS),
            ("seed_dice_1", "seed", {}),
        ):
            cfg = SamTrainConfig(recipe=recipe, seed=0, **{**SMOKE, "dice_weight": 1.0}, **rounds)
            runs[name] = [run(name, cfg, items, val_items, before, f"{tmp}/{name}")]
    result = {
        "before": {k: round(before[k], 4) for k in ("miou@1", "box_miou")},
        "runs": runs,
        "ranges": {
            name: {
                k: [min(r[k] for r in rs), max(r[k] for r in rs)] for k in ("miou@1", "box_miou")
            }
            for name, rs in runs.items()
        },
    }
    save("recipe_margins", result)


if __name__ == "__main__":
    main()
