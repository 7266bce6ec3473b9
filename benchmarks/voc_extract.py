"""VOC2007's extraction after a Colab reconnect, timed on archives of the real size.

In Colab the course keeps the archives on Google Drive and extracts the data set to the
VM's own disk (``helpers.course.runtime.data_dir``); a new runtime re-extracts it. This script
builds the two archives in VOC2007's real layout and size (trainval: 5,011 images,
test: 4,952; Annotations, JPEGImages, 422 + 210 segmentation pairs, the Segmentation
split lists; about 21,000 files and 880 MB of bytes: random, since extraction never
decodes them) and times, with ``helpers.data.voc.download_voc2007`` itself:

- ``first_s``: the first extraction after a download: both MD5s checked, extracted,
  every split checked, moved into place;
- ``reextract_s``: the same after a reconnect (MD5s already stamped): what a learner
  waits for in each new Colab runtime;
- ``tar_only_s``: ``tarfile`` extraction alone of the same archives into another folder
  (the floor: what the checks and the move add is the difference).

Prints one JSON object. Run it with the archives on the disk you want to read from
(``--where``); reading them through Colab's Drive mount adds Drive's read speed, which
cannot be measured here.

    python benchmarks/voc_extract.py [--where /tmp] [--scale 1.0]
"""

import argparse
import hashlib
import io
import shutil
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
from _results import save

from helpers.data.voc import VOC2007_SEGMENTATION_COUNTS, download_voc2007

# (images, segmentation images) per archive, as in the real VOC2007
ARCHIVES = {"VOCtrainval_06-Nov-2007.tar": (5011, 422), "VOCtest_06-Nov-2007.tar": (4952, 210)}
MEAN_JPEG_BYTES = 88_000  # the real archives: ~880 MB of JPEGs over 9,963 images


def _n_train(n_trainval: int) -> int:
    """VOC2007's train/val proportion of its segmentation trainval list (209 of 422)."""
    return round(n_trainval * 209 / 422)


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(f"VOCdevkit/VOC2007/{name}")
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def build(folder: Path, scale: float, rng: np.random.Generator) -> list[dict]:
    """The two archives in ``folder``; returns their sources (url unused, filename, md5)."""
    sources, first_id = [], 0
    for filename, (n_images, n_seg) in ARCHIVES.items():
        n_images, n_seg = max(1, int(n_images * scale)), max(1, int(n_seg * scale))
        ids = [f"{first_id + k:06d}" for k in range(n_images)]
        first_id += n_images
        seg = ids[:n_seg]
        with tarfile.open(folder / filename, "w") as tar:
            for image_id in ids:
                size = int(rng.integers(MEAN_JPEG_BYTES // 2, MEAN_JPEG_BYTES * 3 // 2))
                _add(tar, f"JPEGImages/{image_id}.jpg", rng.bytes(size))
                _add(tar, f"Annotations/{image_id}.xml", rng.bytes(1200))
            for image_id in seg:
                _add(tar, f"SegmentationObject/{image_id}.png", rng.bytes(3000))
                _add(tar, f"SegmentationClass/{image_id}.png", rng.bytes(3000))
            lists = (
                {
                    "train": seg[: _n_train(len(seg))],
                    "val": seg[_n_train(len(seg)) :],
                    "trainval": seg,
                }
                if "trainval" in filename
                else {"test": seg}
            )
            for name, listed in lists.items():
                _add(tar, f"ImageSets/Segmentation/{name}.txt", "\n".join(listed).encode())
        md5 = hashlib.md5((folder / filename).read_bytes()).hexdigest()
        sources.append(
            {"url": "http://unused.invalid/" + filename, "filename": filename, "md5": md5}
        )
    return sources


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--where", default=tempfile.gettempdir(), help="disk to work on")
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of VOC's size")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(dir=args.where) as work:
        work = Path(work)
        archives, local = work / "drive" / "archives", work / "local" / "voc2007"
        archives.mkdir(parents=True)
        t0 = time.perf_counter()
        sources = build(archives, args.scale, rng)
        build_s = time.perf_counter() - t0
        counts = VOC2007_SEGMENTATION_COUNTS
        if args.scale != 1.0:
            n_tv, n_test = (max(1, int(n * args.scale)) for _, n in ARCHIVES.values())
            n_train = _n_train(n_tv)
            counts = {"train": n_train, "val": n_tv - n_train, "trainval": n_tv, "test": n_test}

        # (the stamps that a real download writes are not there yet: the MD5s are checked)
        t0 = time.perf_counter()
        devkit = download_voc2007(local, sources, counts, archive_dir=archives)
        first_s = time.perf_counter() - t0
        n_files = sum(1 for p in devkit.rglob("*") if p.is_file())
        n_bytes = sum(p.stat().st_size for p in archives.glob("*.tar"))

        shutil.rmtree(local)  # a new runtime: local disk empty, archives (stamped) on Drive
        t0 = time.perf_counter()
        download_voc2007(local, sources, counts, archive_dir=archives)
        reextract_s = time.perf_counter() - t0

        plain = work / "plain"
        t0 = time.perf_counter()
        for tar_path in sorted(archives.glob("*.tar")):
            with tarfile.open(tar_path) as tar:
                tar.extractall(plain, filter="data")
        tar_only_s = time.perf_counter() - t0

    save(
        "voc_extract",
        {
            "files": n_files,
            "archive_mb": round(n_bytes / 1e6),
            "build_s": round(build_s, 1),
            "first_s": round(first_s, 1),
            "reextract_s": round(reextract_s, 1),
            "tar_only_s": round(tar_only_s, 1),
            "checks_overhead": round(reextract_s / tar_only_s - 1, 3),
            "where": args.where,
        },
    )


if __name__ == "__main__":
    main()
