"""Segment Anything models: the official variants, smoke mode's small one, and
decoder-only checkpoints (notebook 01; every later SAM notebook loads its model here).

- :func:`load_sam` builds vit_b / vit_l / vit_h through segment-anything's own registry
  and loads the official checkpoint (downloaded on first use, MD5 checked) strictly: a
  file of another variant or with missing or unexpected keys is an error.
- :func:`save_decoder` / :func:`load_decoder`: only ``mask_decoder.*`` (16.2 MB at fp32
  for vit_b), written atomically; loading checks every key and shape first.
"""

from __future__ import annotations

import copy
import hashlib
from functools import partial
from pathlib import Path

import torch
from segment_anything import sam_model_registry
from segment_anything.modeling import (
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TwoWayTransformer,
)

from ..checkpoints import CheckpointError, atomic_save, check_state_dict, read_checkpoint
from ..course.runtime import SMOKE_ENV, cache_dir
from ..data.downloads import fetch

#: Official checkpoints: file name, URL, MD5 (the name's suffix is the MD5's start).
SAM_CHECKPOINTS = {
    "vit_b": ("sam_vit_b_01ec64.pth", "01ec64d29a2fca3f0661936605ae66f5"),
    "vit_l": ("sam_vit_l_0b3195.pth", "0b3195507c641ddb6910d2bb5adee89c"),
    "vit_h": ("sam_vit_h_4b8939.pth", "4b8939a88964f0f4ff5f5b2642c598a6"),
}
SAM_URL = "https://dl.fbaipublicfiles.com/segment_anything/{name}"
VARIANTS = ("vit_b", "vit_l", "vit_h", "tiny")


def checkpoint_path(variant: str, folder: str | Path | None = None) -> Path:
    """Where the official checkpoint of ``variant`` lives: ``<cache>/sam/<file name>``."""
    name, _ = SAM_CHECKPOINTS[variant]
    return (Path(folder) if folder is not None else cache_dir() / "sam") / name


def download_checkpoint(
    variant: str, dest: str | Path | None = None, url: str | None = None
) -> Path:
    """The official checkpoint of ``variant``, downloaded (progress bar, MD5 check) into
    the cache folder on first use and reused after.

    Raises:
        helpers.data.downloads.DownloadError: no network or wrong bytes; the message says
            where the file is expected, where to get it and how to use smoke mode.
    """
    from ..data.downloads import DownloadError

    name, md5 = SAM_CHECKPOINTS[variant]
    dest = Path(dest) if dest is not None else checkpoint_path(variant)
    url = url or SAM_URL.format(name=name)
    try:
        return fetch(url, dest, md5, what=f"SAM {variant} checkpoint")
    except DownloadError as err:
        raise DownloadError(
            f"{err}\nThe checkpoint is expected at {dest} (download {SAM_URL.format(name=name)} "
            f"there by hand). To run the course without it, set {SMOKE_ENV}=1 (smoke mode: "
            "the built-in data and the course's small SAM)."
        ) from err.__cause__


#: Smoke mode's SAM, "tiny": segment-anything's own classes at a 256-pixel frame, 128
#: channels where vit_b has 256; pretrained on the course's own scenes (:data:`TINY_WEIGHTS`).
TINY = dict(frame=256, patch=16, width=128, depth=6, heads=4, global_blocks=(2, 5), dim=128)
#: The pretrained weights (fp16), made by ``python -m scripts.pretrain_small_sam``, and
#: their SHA-256 (what that command printed and recorded).
TINY_WEIGHTS = Path(__file__).with_name("tiny_sam.pt")
TINY_SHA256 = "21b192713c1adde7bf0f76d8220b70eaa77bf4763884a03414e5406bfb22cb6e"


def build_tiny_sam(seed: int = 0) -> Sam:
    """Smoke mode's SAM (:data:`TINY`), randomly initialised from ``seed`` (the global RNG
    is left as it was): input ``1 x 3 x 256 x 256``, embedding ``1 x 128 x 16 x 16``, masks
    ``64 x 64`` at low resolution. :func:`load_sam` gives it its pretrained weights."""
    c = TINY
    grid = c["frame"] // c["patch"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = ImageEncoderViT(
            img_size=c["frame"],
            patch_size=c["patch"],
            embed_dim=c["width"],
            depth=c["depth"],
            num_heads=c["heads"],
            out_chans=c["dim"],
            qkv_bias=True,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            use_rel_pos=True,
            window_size=grid // 2,
            global_attn_indexes=c["global_blocks"],
        )
        prompt_encoder = PromptEncoder(
            embed_dim=c["dim"],
            image_embedding_size=(grid, grid),
            input_image_size=(c["frame"], c["frame"]),
            mask_in_chans=16,
        )
        transformer = TwoWayTransformer(
            depth=2, embedding_dim=c["dim"], mlp_dim=4 * c["dim"], num_heads=c["heads"]
        )
        decoder = MaskDecoder(
            transformer=transformer, transformer_dim=c["dim"], iou_head_hidden_dim=c["dim"]
        )
    sam = Sam(encoder, prompt_encoder, decoder, [123.675, 116.28, 103.53], [58.395, 57.12, 57.375])
    return sam.eval()


def load_tiny_weights(sam: Sam, path: str | Path = TINY_WEIGHTS, sha256: str | None = None) -> Sam:
    """Put the pretrained weights (fp16 on disk, fp32 in the model) into ``sam``, a
    :func:`build_tiny_sam` model, after checking their SHA-256 (default
    :data:`TINY_SHA256`), every key and shape and every value.

    Raises:
        CheckpointError: the file is missing, damaged (another SHA-256) or does not fit.
    """
    from ..data.downloads import sha256sum

    path, sha256 = Path(path), sha256 or TINY_SHA256
    if not path.is_file():
        raise CheckpointError(
            f"{path}: the small SAM's weights are missing; they ship with the course (git "
            "checkout), or make them again with python -m scripts.pretrain_small_sam"
        )
    if sha256sum(path) != sha256:
        raise CheckpointError(
            f"{path}: SHA-256 {sha256sum(path)[:12]}..., expected {sha256[:12]}...: a damaged "
            "or changed file; restore it with git checkout, or make it again"
        )
    state = {k: v.float() for k, v in read_checkpoint(path, "small SAM weights").items()}
    check_state_dict(path, state, sam.state_dict(), "the small SAM")
    check_finite(path, state)
    sam.load_state_dict(state)
    return sam


def build_sam(variant: str) -> Sam:
    """An untrained model of ``variant`` (``vit_b``, ``vit_l``, ``vit_h`` through
    segment-anything's registry, or ``tiny``), in eval mode, on the CPU."""
    if variant == "tiny":
        return build_tiny_sam()
    if variant not in SAM_CHECKPOINTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    return sam_model_registry[variant](checkpoint=None)


def module_sizes(variant: str) -> dict[str, dict[str, int]]:
    """Parameters and fp32 checkpoint bytes of SAM's three modules, without allocating
    weights (the model is built on PyTorch's ``meta`` device).

    Returns:
        ``{"image_encoder" | "prompt_encoder" | "mask_decoder": {"parameters": int,
        "state_bytes": int}}``; ``state_bytes`` counts every tensor the module saves in a
        checkpoint (parameters and persistent buffers) at 4 bytes each.
    """
    with torch.device("meta"):
        sam = build_sam(variant)
    sizes = {}
    for name in ("image_encoder", "prompt_encoder", "mask_decoder"):
        module = getattr(sam, name)
        sizes[name] = {
            "parameters": sum(p.numel() for p in module.parameters()),
            "state_bytes": sum(t.numel() * 4 for t in module.state_dict().values()),
        }
    return sizes


def load_sam(
    variant: str,
    checkpoint: str | Path | None = None,
    device: str | torch.device = "cpu",
    download: bool = True,
) -> Sam:
    """SAM of ``variant`` with its weights, in eval mode on ``device``.

    Args:
        variant: ``vit_b``, ``vit_l``, ``vit_h`` (official weights) or ``tiny`` (smoke
            mode's, pretrained on the course's own scenes: :func:`load_tiny_weights`).
        checkpoint: a state-dict file; default: the official checkpoint in the cache
            folder, downloaded if absent (when ``download``), or the tiny one's shipped file.

    Raises:
        CheckpointError: the file is unreadable or does not fit ``variant``.
        helpers.data.downloads.DownloadError: the official file is absent and cannot be fetched.
    """
    sam = build_sam(variant)
    if variant == "tiny" and checkpoint is None:
        return load_tiny_weights(sam).to(device).eval()
    if checkpoint is None:
        checkpoint = download_checkpoint(variant) if download else checkpoint_path(variant)
    path = Path(checkpoint)
    state = read_checkpoint(path, "PyTorch checkpoint")
    check_state_dict(path, state, sam.state_dict(), f"SAM {variant}")
    check_finite(path, state)
    sam.load_state_dict(state, strict=True)
    return sam.to(device).eval()


#: ``(embed_dim, depth)`` of each variant's image encoder, to name a model's variant.
ENCODER_SHAPES = {(768, 12): "vit_b", (1024, 24): "vit_l", (1280, 32): "vit_h", (128, 6): "tiny"}


def variant_of(sam: Sam) -> str:
    """``vit_b``, ``vit_l``, ``vit_h`` or ``tiny``, from the image encoder's width and
    depth (every variant has the same mask decoder, so its shapes cannot tell)."""
    encoder = sam.image_encoder
    shape = (encoder.patch_embed.proj.out_channels, len(encoder.blocks))
    return ENCODER_SHAPES.get(shape, f"unknown (width {shape[0]}, depth {shape[1]})")


def encoder_fingerprint(sam: Sam) -> str:
    """SHA-1 over the image encoder's weights (names, shapes, bytes): the identity of
    "this encoder" whatever file it came from. ~1 s for vit_b on a CPU, then remembered on
    the encoder itself until one of its weights changes (any in-place update or reload
    bumps a tensor's version)."""
    encoder = sam.image_encoder
    state = encoder.state_dict()
    key = tuple((t.data_ptr(), t._version) for t in state.values())
    cached = getattr(encoder, "_segcourse_fingerprint", None)  # lives and dies with it
    if cached is not None and cached[0] == key:
        return cached[1]
    digest = hashlib.sha1()
    for name, tensor in state.items():
        t = tensor.detach().cpu().contiguous()
        digest.update(name.encode())
        digest.update(str(tuple(t.shape)).encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    encoder._segcourse_fingerprint = (key, digest.hexdigest())
    return digest.hexdigest()


def check_finite(path: Path, state: dict) -> None:
    """Raise :class:`CheckpointError` naming the first tensor of ``state`` that holds NaN
    or Inf (a damaged file, or one saved from a run that diverged)."""
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise CheckpointError(
                f"{path}: {name} holds {bad} NaN or Inf values (a damaged file, or saved from "
                "a run that diverged); it cannot be used"
            )


def save_decoder(sam: Sam, path: str | Path, extra: dict | None = None) -> Path:
    """Save only ``mask_decoder.*`` (keys keep their prefix) to ``path``, atomically:
    written to a temporary file in the same folder, then renamed over ``path``.

    The meta records what the decoder was trained with, for :func:`load_decoder` to
    check: ``variant`` (:func:`variant_of`) and ``encoder_fingerprint``
    (:func:`encoder_fingerprint`). A decoder reads its encoder's embeddings, so it is only
    meaningful with that encoder.

    Args:
        extra: more metadata stored beside the weights under ``"meta"`` (epoch, metrics
            ...); plain Python values only.
    """
    state = {
        k: v.detach().cpu() for k, v in sam.state_dict().items() if k.startswith("mask_decoder.")
    }
    meta = {**encoder_identity(sam), **(extra or {})}
    return atomic_save({"mask_decoder": state, "meta": meta}, path)


def encoder_identity(sam: Sam) -> dict[str, str]:
    """What a decoder file records of the encoder whose embeddings it reads: ``variant``
    (:func:`variant_of`) and ``encoder_fingerprint`` (:func:`encoder_fingerprint`)."""
    return {"variant": variant_of(sam), "encoder_fingerprint": encoder_fingerprint(sam)}


def check_same_encoder(path: Path, meta: dict, sam: Sam, way_out: str = "") -> None:
    """Raise :class:`CheckpointError` unless the decoder file at ``path``, whose metadata
    is ``meta``, was made with ``sam``'s encoder (:func:`encoder_identity`); the message
    names both values."""
    for key, here in encoder_identity(sam).items():
        there = meta.get(key)
        if there != here:
            raise CheckpointError(
                f"{path}: made with {key} {there!r}, this model's is {here!r}: a decoder reads "
                f"the embeddings of the encoder it was trained with {way_out}".rstrip()
            )


def load_decoder(sam: Sam, path: str | Path, check_encoder: bool = True) -> dict:
    """Merge a :func:`save_decoder` file into ``sam`` (in place), everything checked
    before the model is touched; returns the file's ``meta`` dict.

    Args:
        check_encoder: refuse a decoder trained with another image encoder (variant or
            weights), whose embeddings it never saw; False loads it anyway.

    Raises:
        CheckpointError: unreadable file, keys or shapes that do not fit, NaN or Inf weights,
            or (with ``check_encoder``) a variant or encoder fingerprint missing or unlike
            ``sam``'s; the message says both."""
    path = Path(path)
    payload = read_checkpoint(path, "decoder checkpoint")
    if "mask_decoder" not in payload:
        raise CheckpointError(
            f"{path}: not a decoder checkpoint (no 'mask_decoder' entry); "
            "was it written by save_decoder?"
        )
    expected = {k: v for k, v in sam.state_dict().items() if k.startswith("mask_decoder.")}
    check_state_dict(path, payload["mask_decoder"], expected, "this model's mask decoder")
    check_finite(path, payload["mask_decoder"])
    meta = payload.get("meta", {})
    if check_encoder:
        check_same_encoder(path, meta, sam, "(or pass check_encoder=False to load it anyway)")
    sam.load_state_dict(payload["mask_decoder"], strict=False)
    return meta


def with_own_decoder(sam: Sam, decoder_checkpoint: str | Path | None = None) -> Sam:
    """A model that shares ``sam``'s image and prompt encoders (the same objects: the
    widget computes one embedding for both) with its own copy of the mask decoder, loaded
    from ``decoder_checkpoint`` (a :func:`save_decoder` file) when given: notebook 03's
    "before" and "after" side by side for the price of one encoder."""
    other = Sam(
        image_encoder=sam.image_encoder,
        prompt_encoder=sam.prompt_encoder,
        mask_decoder=copy.deepcopy(sam.mask_decoder),
        pixel_mean=sam.pixel_mean.flatten().tolist(),
        pixel_std=sam.pixel_std.flatten().tolist(),
    ).to(sam.device)
    if decoder_checkpoint is not None:
        load_decoder(other, decoder_checkpoint)
    return other.eval()
