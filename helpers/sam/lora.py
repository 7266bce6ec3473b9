"""LoRA on SAM's image encoder, trained with the decoder (notebook 07).

LoRA adds to each chosen linear layer ``W`` of the ViT a trainable low-rank update,
``W x + (alpha / r) B A x`` (``A`` ``r x in``, ``B`` ``out x r`` starting at zero, so
training starts from the released model), through ``peft``'s ``LoraConfig``; the rest
of the encoder stays frozen. Its output changes at every step, so nothing is cached:
each image is encoded anew, the recipe's rounds back-propagate into a detached leaf,
and one backward pass takes their summed gradient through the encoder. Training is
notebook 03's loop, ``train_decoder(..., images=...)``. :func:`save_adapter` writes the
LoRA weights and the decoder; :func:`merged_state_dict` folds the update in (peft's
``merge_and_unload``), for a stock ``sam_model_registry`` model and ``SamPredictor``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from segment_anything.modeling import Sam

from ..checkpoints import load_weights, save_weights
from ..data.image_files import read_rgb
from .items import SamItem
from .predict import preprocess


def with_lora(sam: Sam, rank: int = 4, alpha: float = 8.0, targets=("qkv",), seed: int = 0) -> Sam:
    """A copy of ``sam`` whose image encoder is wrapped in peft's LoRA on the linear layers
    named in ``targets`` (``qkv``: each block's attention projection; ``proj``: its
    output); ``sam`` is left as it is. Only the LoRA weights of the copy's encoder require
    gradients; ``A`` is drawn from ``seed`` (the global RNG is left as it was), ``B`` is 0.

    Raises:
        ValueError: ``sam``'s encoder has LoRA already."""
    from peft import LoraConfig, PeftModel, get_peft_model

    if isinstance(sam.image_encoder, PeftModel):
        raise ValueError("with_lora: this model's image encoder has LoRA already")
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(targets), lora_dropout=0.0)
    other = copy.deepcopy(sam)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        other.image_encoder = get_peft_model(other.image_encoder, config)
    return other.eval()


def trained_parts(sam: Sam) -> torch.nn.ModuleDict:
    """What LoRA training changes, as one module (for checkpoints): the decoder and the
    encoder's LoRA layers (``lora_A``, ``lora_B`` of each adapted layer)."""
    lora = {
        n.replace(".", "_"): m
        for n, m in sam.image_encoder.named_modules()
        if n.endswith(("lora_A", "lora_B"))
    }
    return torch.nn.ModuleDict({"mask_decoder": sam.mask_decoder, **lora})


def encoding_loss(recipe_loss, images: dict[str, np.ndarray], checkpointing: bool = False):
    """``recipe_loss`` (an image loss of :mod:`helpers.sam.training`) with the image
    encoded first: what ``train_decoder(..., images=...)`` hands
    :func:`helpers.sam.training.optimizer_step`. The item's image
    (``images[item.image_id]``, ``H x W x 3`` uint8) goes through the current encoder, the
    recipe runs on the fresh embedding, and its rounds' summed gradient goes back through
    the encoder once. ``checkpointing``: each ViT block's activations recomputed in the
    backward pass (less memory, one more forward pass)."""

    def image_loss(sam, item, cfg, rng, step_images=None, scaler=None, amp=False):
        x, _ = preprocess(sam, images[item.image_id])
        with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
            features = _encode(sam.image_encoder, x, checkpointing and step_images is not None)
        leaf = features.detach().float().requires_grad_(step_images is not None)
        fresh = replace(item, emb=replace(item.emb, embedding=leaf))
        loss, parts = recipe_loss(sam, fresh, cfg, rng, step_images, scaler, amp)
        if step_images is not None:
            features.backward(leaf.grad.to(features.dtype))  # every round's, through the encoder
        return loss, parts

    return image_loss


def _encode(encoder, x: torch.Tensor, checkpointing: bool) -> torch.Tensor:
    if not checkpointing:
        return encoder(x)
    from torch.utils.checkpoint import checkpoint

    vit = encoder.get_base_model()  # segment-anything's ImageEncoderViT, adapted in place
    x = vit.patch_embed(x)
    if vit.pos_embed is not None:
        x = x + vit.pos_embed
    for block in vit.blocks:
        x = checkpoint(block, x, use_reentrant=False)
    return vit.neck(x.permute(0, 3, 1, 2))


class Photos(Mapping):
    """A reader's photos by image id (``H x W x 3`` uint8 RGB), each read from disk when
    asked: the ``images`` of :func:`encoding_loss` without a data set in memory."""

    def __init__(self, reader):
        self.reader, self.index = reader, {image_id: i for i, image_id in enumerate(reader.ids)}

    def __getitem__(self, image_id: str) -> np.ndarray:
        return read_rgb(self.reader.image_path(self.index[image_id]))

    def __iter__(self):
        return iter(self.index)

    def __len__(self) -> int:
        return len(self.index)


@torch.no_grad()
def reembedded(sam: Sam, items: list[SamItem], images: dict[str, np.ndarray]) -> list[SamItem]:
    """``items`` with embeddings of the current encoder (for validation and evaluation)."""
    out = []
    for item in items:
        x, _ = preprocess(sam, images[item.image_id])
        out.append(replace(item, emb=replace(item.emb, embedding=sam.image_encoder(x).float())))
    return out


def save_adapter(sam: Sam, path: str | Path, meta: dict | None = None) -> Path:
    """The LoRA weights and the decoder (:func:`trained_parts`), written atomically with
    ``meta`` (:func:`helpers.checkpoints.save_weights`): what ships beside the released
    checkpoint."""
    return save_weights(trained_parts(sam), path, meta)


def load_adapter(sam: Sam, path: str | Path) -> dict:
    """Load a :func:`save_adapter` file (or a LoRA run's ``best.pt``) into a model with
    the same LoRA layers (:func:`with_lora`); returns its meta.

    Raises:
        CheckpointError: unreadable, or keys and shapes that do not fit (another rank,
            other target layers, another variant)."""
    return load_weights(trained_parts(sam), path, "this LoRA model")


def merged_state_dict(sam: Sam) -> dict[str, torch.Tensor]:
    """A plain SAM state dict (segment-anything's key layout) with the LoRA update folded
    into the encoder's weights (peft's ``merge_and_unload``, on a copy); ``sam`` is left
    as it is."""
    merged = copy.deepcopy(sam.image_encoder).merge_and_unload()
    state = {f"image_encoder.{k}": v for k, v in merged.state_dict().items()}
    for name in ("prompt_encoder", "mask_decoder"):
        state.update({f"{name}.{k}": v for k, v in getattr(sam, name).state_dict().items()})
    return {k: v.detach().cpu() for k, v in state.items()}
