"""Test scenes built with the package: an edge scene of :func:`oracles.edge_scenes` made
into a :class:`helpers.sam.items.SamItem` on a random photo."""

import numpy as np
import torch

from helpers.sam.items import SamItem, lowres_targets
from helpers.sam.predict import embed_image
from helpers.sam.prompts import instance_candidates


def edge_item(sam, scene, seed):
    """A SamItem of an edge scene on a random photo, embedded by ``sam``."""
    masks, void = scene
    image = np.random.default_rng(seed).integers(0, 256, (*void.shape, 3), dtype=np.uint8)
    with torch.no_grad():
        emb = embed_image(sam, image)
    targets, valid = lowres_targets(masks, void, emb)
    cands = [instance_candidates(m, void) for m in masks]
    labels = np.ones(len(masks), np.int64)
    return SamItem("edge", emb, masks, labels, void, cands, targets, valid)
