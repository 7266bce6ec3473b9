"""Run by tests/test_distributed.py under torchrun (not collected by pytest): a detector
with known answers evaluated with the images split over the processes (the gathered AP),
and a non-finite loss on rank 1 only in each training loop (what each rank raised);
every rank prints one JSON line. Also importable for the single-process reference."""

import json

import numpy as np
import torch


def reader_and_model():
    rng = np.random.default_rng(0)
    reader, answers = [], []
    for i in range(5):  # an odd count: the processes' shares differ
        h, w = 48, 64
        masks = []
        for _ in range(int(rng.integers(1, 4))):
            m = np.zeros((h, w), bool)
            y, x = rng.integers(0, 30), rng.integers(0, 40)
            m[y : y + rng.integers(8, 16), x : x + rng.integers(8, 20)] = True
            masks.append(m)
        ignore = np.zeros((h, w), bool)
        ignore[:6, :6] = True
        image = np.full((h, w, 3), i, np.uint8)  # the model reads the index from the pixels
        reader.append(
            {
                "image": image,
                "masks": np.stack(masks),
                "labels": np.ones(len(masks), np.int64),
                "ignore": ignore,
            }
        )
        found = [np.roll(m, int(rng.integers(-3, 4)), axis=1) for m in masks]  # near misses
        spurious = np.zeros((h, w), bool)
        spurious[40:46, 50:60] = True
        found.append(spurious)
        scores = rng.uniform(0.2, 1.0, len(found)).tolist()
        answers.append((found, scores))

    class Known:
        def eval(self):
            return self

        def to(self, device):
            return self

        def __call__(self, images):
            found, scores = answers[int(round(float(images[0][0, 0, 0]) * 255))]
            boxes = []
            for m in found:
                ys, xs = np.nonzero(m)
                boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
            return [
                {
                    "masks": torch.from_numpy(np.stack(found)).float()[:, None],
                    "scores": torch.tensor(scores),
                    "labels": torch.ones(len(found), dtype=torch.int64),
                    "boxes": torch.tensor(boxes, dtype=torch.float32),
                }
            ]

    return reader, Known()


def nonfinite_stops_every_rank(place, tmp) -> dict:
    """A non-finite loss on rank 1 only, in each training loop: every rank must raise
    (none left waiting in an all-reduce). Returns what each loop raised here."""
    from types import SimpleNamespace

    import helpers.sam.training as sam_training
    from helpers.detection.training import MaskRCNNTrainConfig, train_one_epoch
    from helpers.sam.model import build_tiny_sam
    from helpers.sam.training import SamTrainConfig, train_decoder

    poisoned = float("nan") if place.rank == 1 else 1.0
    raised = {}

    def image_loss(sam, item, cfg, rng, step_images=None, scaler=None, amp=False):
        (sum(p.sum() for p in sam.mask_decoder.parameters()) * 0).backward()
        return poisoned, {}

    sam_training.IMAGE_LOSSES["sam"] = image_loss
    items = [SimpleNamespace(image_id=f"img{i}") for i in range(4)]
    cfg = SamTrainConfig(epochs=1, batch_images=2)
    try:
        train_decoder(
            build_tiny_sam(), items, [], cfg, f"{tmp}/sam", show_progress=False, place=place
        )
    except FloatingPointError as err:
        raised["sam"] = str(err)

    class Fake(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(3))

        def forward(self, images, targets):
            return {"loss_fake": (self.w**2).sum() * poisoned}

    model = Fake()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    batches = [([torch.zeros(3, 4, 4)], [{"boxes": torch.zeros(0, 4)}])] * 2
    try:
        train_one_epoch(model, opt, sched, batches, "cpu", 1, scaler, MaskRCNNTrainConfig(), False)
    except FloatingPointError as err:
        raised["maskrcnn"] = str(err)
    return raised


if __name__ == "__main__":
    import sys

    from helpers.detection.coco_eval import evaluate_detector
    from helpers.distributed import cleanup, setup

    place = setup("cpu")
    reader, model = reader_and_model()
    ap = evaluate_detector(model, reader, show_progress=False, place=place)
    raised = nonfinite_stops_every_rank(place, sys.argv[1])
    print(
        json.dumps(
            {
                "rank": place.rank,
                "segm": ap["segm"]["AP"],
                "bbox": ap["bbox"]["AP"],
                "raised": raised,
            }
        ),
        flush=True,
    )
    cleanup()
