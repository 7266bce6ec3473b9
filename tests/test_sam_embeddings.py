"""helpers.sam.embeddings: the embedding cache computes each image once, serves hits equal to
misses, and recomputes what does not match its key."""

import logging

import pytest
import torch

from helpers.course.runtime import DATA_EXAMPLE
from helpers.data.voc import VOCInstanceDataset
from helpers.sam.embeddings import EmbeddingCache
from helpers.sam.model import build_tiny_sam
from helpers.sam.predict import embed_image


@pytest.fixture(scope="module")
def images():
    ds = VOCInstanceDataset(DATA_EXAMPLE / "VOCdevkit", "train")
    return [ds[i]["image"] for i in range(3)]


@pytest.fixture(scope="module")
def sam():
    return build_tiny_sam()


def test_cache_computes_once_and_then_hits(tmp_path, images, sam):
    cache = EmbeddingCache(tmp_path, sam)
    first = cache.get_many(images, show_progress=False)
    assert (cache.hits, cache.misses) == (0, 3)
    again = EmbeddingCache(tmp_path, sam).get_many(images, show_progress=False)  # a "restart"
    assert all(torch.equal(a.embedding, b.embedding) for a, b in zip(first, again))
    assert len(list(tmp_path.glob("*.pt"))) == 3
    direct = embed_image(sam, images[0])
    assert first[0].embedding.dtype == torch.float16
    assert first[0].embedding.shape == (1, sam.prompt_encoder.embed_dim, 16, 16) == cache.shape
    torch.testing.assert_close(first[0].embedding.float(), direct.embedding, atol=2e-2, rtol=2e-3)
    assert (
        first[0].original_size == direct.original_size and first[0].input_size == direct.input_size
    )


def test_a_changed_image_or_encoder_is_a_miss(tmp_path, images, sam):
    cache = EmbeddingCache(tmp_path, sam)
    cache.get(images[0])
    changed = images[0].copy()
    changed[0, 0, 0] ^= 1  # one pixel, one bit
    cache.get(changed)
    assert cache.misses == 2
    other = EmbeddingCache(tmp_path, build_tiny_sam(seed=1))  # another "checkpoint"
    other.get(images[0])
    assert other.misses == 1 and len(list(tmp_path.glob("*.pt"))) == 3


@pytest.mark.parametrize("damage", ["truncate", "garbage", "wrong_shape", "nan"])
def test_corrupt_cache_file_is_detected_and_recomputed(tmp_path, images, sam, damage, caplog):
    cache = EmbeddingCache(tmp_path, sam)
    good = cache.get(images[1]).embedding
    path = cache.path(images[1])
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:1000])
    elif damage == "garbage":
        path.write_bytes(b"not a tensor file")
    elif damage == "nan":  # a run that diverged, or bad memory: right shape, wrong values
        entry = torch.load(path, weights_only=True)
        entry["embedding"][0, 0, 0, 0] = float("nan")
        torch.save(entry, path)
    else:
        entry = torch.load(path, weights_only=True)
        entry["embedding"] = entry["embedding"][:, : entry["embedding"].shape[1] // 2]
        torch.save(entry, path)
    with caplog.at_level(logging.WARNING, logger="helpers.sam.embeddings"):
        again = cache.get(images[1])
    assert cache.misses == 2 and "recomputing" in caplog.text
    assert torch.equal(again.embedding, good)
    assert torch.equal(cache.get(images[1]).embedding, good) and cache.hits == 1  # rewritten whole
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".pt"]


def test_a_changed_preprocessing_version_is_a_miss(tmp_path, images, sam, monkeypatch):
    """Bumping PREPROCESSING_VERSION (what embeddings.py says to do when preprocess
    changes) makes every stored embedding a miss, never a stale hit."""
    import helpers.sam.embeddings as emb_module

    cache = EmbeddingCache(tmp_path, sam)
    cache.get(images[0])
    cache.get(images[0])
    assert (cache.misses, cache.hits) == (1, 1)
    monkeypatch.setattr(
        emb_module, "PREPROCESSING_VERSION", emb_module.PREPROCESSING_VERSION + "-changed"
    )
    cache.get(images[0])
    assert (cache.misses, cache.hits) == (2, 1)


def test_images_with_the_same_bytes_in_another_shape_have_other_keys(tmp_path, sam):
    from helpers.sam.embeddings import image_key

    a = (torch.arange(2 * 6 * 3) % 256).to(torch.uint8).numpy().reshape(2, 6, 3)
    b = a.reshape(6, 2, 3)  # the same bytes, another image
    assert a.tobytes() == b.tobytes()
    assert image_key(a) != image_key(b)
    cache = EmbeddingCache(tmp_path, sam)
    assert cache.path(a) != cache.path(b)


_PEAK = """
import sys, tempfile
import numpy as np, torch
torch.set_num_threads(1)
from helpers.sam.embeddings import EmbeddingCache
from helpers.sam.model import build_tiny_sam

def peak_mib():  # this process's peak resident memory: VmHWM, reset by exec (ru_maxrss is not)
    line = next(x for x in open("/proc/self/status") if x.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024

from functools import partial
from segment_anything.modeling import ImageEncoderViT
sam = build_tiny_sam()  # with an encoder at the official 1024 frame (64 x 64 tokens)
sam.image_encoder = ImageEncoderViT(img_size=1024, embed_dim=64, depth=2, num_heads=2,
    out_chans=sam.prompt_encoder.embed_dim, global_attn_indexes=(1,), window_size=14,
    use_rel_pos=True, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6))
sam.prompt_encoder.image_embedding_size = (64, 64)
rng = np.random.default_rng(0)
images = [rng.integers(0, 255, (375, 500, 3), dtype=np.uint8) for _ in range(int(sys.argv[1]))]
before = peak_mib()
with tempfile.TemporaryDirectory() as tmp:
    EmbeddingCache(tmp, sam).get_many(images, show_progress=False)
print(peak_mib() - before)
"""


def _peak_mib_of_encoding(n: int) -> float:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _PEAK, str(n)], capture_output=True, text=True, check=True
    )
    return float(done.stdout.strip().splitlines()[-1])


def test_peak_memory_of_encoding_on_a_cpu_is_that_of_one_image():
    """Each image's attention maps are hundreds of MB at the official 1024 frame, even for
    a 2-block encoder (one global-attention block on 64 x 64 tokens): encoding six images
    on a CPU must peak where encoding one does, not grow with a batch (each run in its own
    process)."""
    one, six = _peak_mib_of_encoding(1), _peak_mib_of_encoding(6)
    assert one > 100, (one, six)  # the measurement sees the encoder's work at all
    assert six < one + 200, (one, six)


def test_a_cache_folder_that_is_a_file_is_refused_by_name(tmp_path, sam):
    path = tmp_path / "embeddings"
    path.write_text("not a folder")
    with pytest.raises(ValueError, match="embeddings: the embedding cache must be a folder"):
        EmbeddingCache(path, sam)


def test_a_folder_where_an_entry_goes_is_named_in_the_error(tmp_path, images, sam):
    cache = EmbeddingCache(tmp_path, sam)
    cache.path(images[0]).mkdir()
    with pytest.raises(ValueError, match="a folder stands where this image's cache entry goes"):
        cache.get(images[0])


def test_a_hit_equals_a_miss_in_every_field_whatever_was_cached_before(tmp_path_factory, sam):
    """Property: images of any shapes (the same bytes in two shapes, duplicates), any of
    them cached before in any order, give, each in its own place, exactly what an empty
    cache computes for it: embedding (bytes and dtype), original and input size."""
    import numpy as np
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=8, deadline=None)
    @given(
        st.lists(st.tuples(st.integers(1, 30), st.integers(1, 30)), min_size=1, max_size=3),
        st.data(),
    )
    def check(shapes, data):
        rng = np.random.default_rng(len(shapes))
        images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in shapes]
        images.append(images[0].reshape(images[0].shape[1], images[0].shape[0], 3))  # same bytes
        images.append(images[-1].copy())  # a duplicate
        warm = data.draw(st.lists(st.sampled_from(range(len(images))), unique=True))
        folder = tmp_path_factory.mktemp("cache")
        EmbeddingCache(folder, sam).get_many([images[i] for i in warm], show_progress=False)
        cache = EmbeddingCache(folder, sam)
        got = cache.get_many(images, show_progress=False)
        assert cache.hits >= len(warm) > 0 or not warm  # what was cached is read back
        fresh = EmbeddingCache(tmp_path_factory.mktemp("fresh"), sam).get_many(
            images, show_progress=False
        )
        for k, (a, b) in enumerate(zip(got, fresh)):
            assert a.embedding.dtype == b.embedding.dtype, k
            assert torch.equal(a.embedding, b.embedding), k
            assert (a.original_size, a.input_size) == (b.original_size, b.input_size), k
            assert a.original_size == images[k].shape[:2]

    check()
