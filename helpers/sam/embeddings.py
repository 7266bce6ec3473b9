"""The image-embedding cache: encode each image once, reuse it for every epoch, restart and
notebook (notebook 03). A frozen encoder's output for an image never changes, so it is
kept on disk in fp16 (2 MiB per image for the official models), under the SHA-1 of the
encoder's fingerprint, the preprocessing version and the image's pixels: a changed image
or checkpoint is a miss, never a stale hit. An entry that cannot be read or does not match
its key is computed again and rewritten whole.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from pathlib import Path

import numpy as np
import torch
from segment_anything.modeling import Sam

from ..checkpoints import atomic_save
from ..course.runtime import progress
from .model import encoder_fingerprint
from .predict import ImageEmbedding, preprocess

log = logging.getLogger(__name__)

#: Bump when :func:`helpers.sam.predict.preprocess` changes: old entries become misses.
PREPROCESSING_VERSION = "resize-longest-to-the-frame/imagenet-norm/pad-br/v2"


def image_key(image: np.ndarray) -> str:
    """SHA-1 of an image's pixels and shape (``H x W x 3`` uint8)."""
    digest = hashlib.sha1(str(image.shape).encode())
    digest.update(np.ascontiguousarray(image).tobytes())
    return digest.hexdigest()


class EmbeddingCache:
    """Image embeddings of one encoder, on disk.

    Args:
        folder: where the ``.pt`` files go (e.g. ``cache_dir() / "embeddings"``).
        sam: the model whose image encoder is cached (its fingerprint is taken once).

    ``cache.get(image)`` returns an :class:`~helpers.sam.predict.ImageEmbedding` whose
    embedding is fp16 on the CPU; ``cache.hits`` / ``cache.misses`` count lookups.
    """

    def __init__(self, folder: str | Path, sam: Sam):
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise ValueError(f"{self.folder}: the embedding cache must be a folder, this is a file")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.sam = sam
        self.fingerprint = encoder_fingerprint(sam)
        #: an entry's embedding shape: ``1 x C x g x g`` (1 x 256 x 64 x 64 for vit_b)
        self.shape = (1, sam.prompt_encoder.embed_dim, *sam.prompt_encoder.image_embedding_size)
        self.hits = 0
        self.misses = 0

    def path(self, image: np.ndarray) -> Path:
        key = hashlib.sha1(
            f"{self.fingerprint}|{PREPROCESSING_VERSION}|{image_key(image)}".encode()
        ).hexdigest()
        return self.folder / f"{key}.pt"

    def _read(self, path: Path, image: np.ndarray) -> ImageEmbedding | None:
        if not path.is_file():
            return None
        try:
            entry = torch.load(path, map_location="cpu", weights_only=True)
            emb = entry["embedding"]
            ok = (
                entry["key"] == path.stem
                and tuple(emb.shape) == self.shape
                and tuple(entry["original_size"]) == tuple(image.shape[:2])
                and bool(torch.isfinite(emb).all())
            )
        except Exception as err:  # truncated, not a torch file, missing fields
            log.warning("%s: unreadable cache entry (%s); recomputing", path, type(err).__name__)
            return None
        if not ok:
            log.warning("%s: cache entry does not match its key; recomputing", path)
            return None
        return ImageEmbedding(emb, tuple(entry["original_size"]), tuple(entry["input_size"]))

    def _write(self, path: Path, emb: ImageEmbedding) -> None:
        if path.is_dir():
            raise ValueError(
                f"{path}: a folder stands where this image's cache entry goes; remove it"
            )
        entry = {
            "key": path.stem,
            "embedding": emb.embedding.detach().to("cpu", torch.float16),
            "original_size": list(emb.original_size),
            "input_size": list(emb.input_size),
        }
        atomic_save(entry, path)

    def get(self, image: np.ndarray) -> ImageEmbedding:
        """The embedding of ``image`` (``H x W x 3`` uint8 RGB), computed if absent."""
        return self.get_many([image], show_progress=False)[0]

    @torch.no_grad()
    def get_many(
        self, images, batch_size: int | None = None, show_progress: bool = True
    ) -> list[ImageEmbedding]:
        """Embeddings of several images (anything with ``len`` and ``[i]``, such as a lazy view
        of a data set: each image read at most twice, never all held at once); the misses are
        encoded with a progress bar, in batches of ``batch_size``: by default one on a CPU (a ViT's
        attention maps take gigabytes per vit_b image, so peak memory stays that of one), on a
        GPU up to 8 under fp16 autocast, halved whenever a batch does not fit."""
        n = len(images)
        results: list[ImageEmbedding | None] = [None] * n
        todo = []
        for i in range(n):
            image = images[i]
            cached = self._read(self.path(image), image)
            if cached is None:
                todo.append(i)
            else:
                results[i] = cached
        self.hits += n - len(todo)
        self.misses += len(todo)
        device = self.sam.device
        autocast = (
            torch.autocast("cuda", dtype=torch.float16)
            if device.type == "cuda"
            else contextlib.nullcontext()
        )
        bar = progress(
            total=len(todo), desc="encoding images", unit="img", show=show_progress and bool(todo)
        )
        size = batch_size or (8 if device.type == "cuda" else 1)
        s = 0
        while s < len(todo):
            chunk = todo[s : s + size]
            imgs = [images[i] for i in chunk]
            inputs = [preprocess(self.sam, im) for im in imgs]
            try:
                with autocast:
                    feats = self.sam.image_encoder(torch.cat([x for x, _ in inputs]))
            except torch.OutOfMemoryError:
                if batch_size is not None or size == 1:
                    raise
                del inputs
                torch.cuda.empty_cache()
                size //= 2  # what fits: try again with half as many
                log.info("encoding %d images at a time (GPU memory)", size)
                continue
            s += len(chunk)
            for i, im, (_, input_size), feat in zip(chunk, imgs, inputs, feats):
                emb = ImageEmbedding(
                    feat[None].to("cpu", torch.float16), tuple(im.shape[:2]), input_size
                )
                self._write(self.path(im), emb)
                results[i] = emb
            bar.update(len(chunk))
        bar.close()
        return results  # type: ignore[return-value]
