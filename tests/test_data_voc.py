"""helpers.data.voc: the VOC2007 instance reader on data_example and on broken copies of it,
and the archives' download, check and extraction against a local server."""

import shutil

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from helpers.course.runtime import DATA_EXAMPLE
from helpers.data.image_files import DataError
from helpers.data.voc import VOCInstanceDataset, voc_palette

VOC_ROOT = DATA_EXAMPLE / "VOCdevkit"


def test_voc_palette_matches_the_colours_voc_documents():
    pal = np.array(voc_palette()).reshape(256, 3)
    # VOC devkit: background black, aeroplane (1) dark red, person (15) (192,128,128),
    # void (255) (224,224,192).
    assert pal[0].tolist() == [0, 0, 0]
    assert pal[1].tolist() == [128, 0, 0]
    assert pal[15].tolist() == [192, 128, 128]
    assert pal[255].tolist() == [224, 224, 192]


def test_voc_reader_accepts_torchvision_style_root_and_voc2007_itself():
    a = VOCInstanceDataset(DATA_EXAMPLE, "train")  # holds VOCdevkit/
    b = VOCInstanceDataset(VOC_ROOT / "VOC2007", "train")
    assert a.ids == b.ids == VOCInstanceDataset(VOC_ROOT, "train").ids


def test_voc_sample_contract_on_every_data_example_image():
    for image_set in ("trainval", "test"):
        ds = VOCInstanceDataset(VOC_ROOT, image_set)
        for i in range(len(ds)):
            s = ds[i]
            h, w, c = s["image"].shape
            assert c == 3 and s["image"].dtype == np.uint8
            assert s["masks"].dtype == bool and s["masks"].shape[1:] == (h, w)
            assert s["labels"].dtype == np.int64 and s["labels"].shape == (len(s["masks"]),)
            assert 2 <= len(s["masks"]) <= 5
            assert ((s["labels"] >= 1) & (s["labels"] <= 20)).all()
            assert s["void"].shape == (h, w) and s["void"].any()
            # instance masks are disjoint and never void
            assert s["masks"].sum(0).max() == 1
            assert not (s["masks"] & s["void"]).any()
            assert s["instance_ids"].tolist() == list(range(1, len(s["masks"]) + 1))


def test_voc_reader_marks_void_border_as_ignore_and_void_separates_every_object():
    ds = VOCInstanceDataset(VOC_ROOT, "trainval")
    for i in range(len(ds)):
        s = ds[i]
        labels = np.zeros(s["void"].shape, np.int64)
        for k, m in enumerate(s["masks"], 1):
            labels[m] = k
        labels[s["void"]] = -1
        # no two different non-void labels are 4-neighbours: a border is always void
        for a, b in ((labels[1:], labels[:-1]), (labels[:, 1:], labels[:, :-1])):
            touching = (a != b) & (a >= 0) & (b >= 0)
            assert not touching.any(), ds.ids[i]
        # the band is about 5 px wide: area / (length of one of its two edges)
        edge = ndimage.binary_dilation(s["void"]) & ~s["void"]
        width = 2 * s["void"].sum() / edge.sum()
        assert 3.5 <= width <= 6.5, (ds.ids[i], width)


def _break(root, filename, array=None, mode=None):
    path = root / "VOCdevkit" / "VOC2007" / filename
    if array is not None:
        Image.fromarray(array, mode=mode).save(path)
    return path


def test_missing_image_of_a_listed_id_is_an_error_naming_the_file(data_copy):
    ds = VOCInstanceDataset(data_copy / "VOCdevkit", "train")
    jpg = ds.image_path(3)
    jpg.unlink()
    with pytest.raises(
        DataError, match=rf"{jpg.name}: listed as '{ds.ids[3]}' in .*train.txt but missing"
    ):
        VOCInstanceDataset(data_copy / "VOCdevkit", "train")


@pytest.mark.parametrize("folder", ["JPEGImages", "SegmentationObject", "SegmentationClass"])
@pytest.mark.parametrize("split, position", [("train", 0), ("train", -1), ("val", 1), ("test", -1)])
def test_every_file_a_listed_id_names_is_checked_at_construction(
    data_copy, folder, split, position
):
    """The promise: a broken extraction fails when the reader is made, whichever of an
    id's three files is missing, for any id of the list (first, middle, last)."""
    ds = VOCInstanceDataset(data_copy / "VOCdevkit", split)
    image_id = ds.ids[position]
    suffix = ".jpg" if folder == "JPEGImages" else ".png"
    missing = data_copy / "VOCdevkit" / "VOC2007" / folder / f"{image_id}{suffix}"
    missing.unlink()
    with pytest.raises(DataError, match=rf"{folder}/{image_id}\{suffix}: listed as '{image_id}'"):
        VOCInstanceDataset(data_copy / "VOCdevkit", split)


def test_missing_split_file_is_an_error_naming_it(data_copy):
    (data_copy / "VOCdevkit/VOC2007/ImageSets/Segmentation/val.txt").unlink()
    with pytest.raises(DataError, match=r"val\.txt: split file"):
        VOCInstanceDataset(data_copy / "VOCdevkit", "val")


def test_truncated_segmentation_png_is_an_error_naming_the_file(data_copy):
    ds = VOCInstanceDataset(data_copy / "VOCdevkit", "train")
    path = ds.voc_dir / "SegmentationObject" / f"{ds.ids[0]}.png"
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(
        DataError, match=rf"SegmentationObject/{ds.ids[0]}\.png: corrupt or truncated"
    ):
        ds[0]


@pytest.mark.parametrize("folder", ["SegmentationClass", "SegmentationObject"])
def test_mask_of_another_size_than_its_image_is_an_error(data_copy, folder):
    ds = VOCInstanceDataset(data_copy / "VOCdevkit", "train")
    path = ds.voc_dir / folder / f"{ds.ids[1]}.png"
    small = np.asarray(Image.open(path))[:-10]
    _break(data_copy, f"{folder}/{ds.ids[1]}.png", small, "L")
    with pytest.raises(DataError, match=rf"{folder}/{ds.ids[1]}\.png: mask is \d+x\d+"):
        ds[1]


def test_an_instance_of_mixed_classes_takes_the_majority_class(data_copy):
    ds = VOCInstanceDataset(data_copy / "VOCdevkit", "train")
    s = ds[0]
    cls_path = ds.voc_dir / "SegmentationClass" / f"{ds.ids[0]}.png"
    classes = np.asarray(Image.open(cls_path)).copy()
    rows, cols = np.nonzero(s["masks"][0])
    major, minor = (12, 5) if s["labels"][0] != 12 else (13, 5)
    classes[rows, cols] = major
    third = len(rows) // 3  # a third of the instance carries another class
    classes[rows[:third], cols[:third]] = minor
    _break(data_copy, f"SegmentationClass/{ds.ids[0]}.png", classes, "L")
    assert ds[0]["labels"][0] == major
    classes[rows[: 2 * third + 1], cols[: 2 * third + 1]] = minor  # now the minority wins
    _break(data_copy, f"SegmentationClass/{ds.ids[0]}.png", classes, "L")
    assert ds[0]["labels"][0] == minor


def _split(data_copy, text: str, encoding="utf-8"):
    split = data_copy / "VOCdevkit" / "VOC2007" / "ImageSets" / "Segmentation" / "train.txt"
    ids = split.read_text().split()
    split.write_text(text.format(*ids), encoding=encoding)
    return split, ids


def test_an_empty_split_list_is_an_error_naming_it(data_copy):
    split, _ = _split(data_copy, "\n\n")
    with pytest.raises(DataError, match=r"train\.txt: the split file lists no image ids"):
        VOCInstanceDataset(data_copy / "VOCdevkit", "train")


def test_an_id_listed_twice_is_an_error_naming_it(data_copy):
    split, ids = _split(data_copy, "{0}\n{1}\n{0}\n")
    with pytest.raises(
        DataError, match=rf"train\.txt: 1 ids are listed more than once \(e\.g\. '{ids[0]}'\)"
    ):
        VOCInstanceDataset(data_copy / "VOCdevkit", "train")


def test_a_split_list_with_a_byte_order_mark_reads_the_same_ids(data_copy):
    split, ids = _split(data_copy, "{0}\n{1}\n", encoding="utf-8-sig")
    assert split.read_bytes().startswith(b"\xef\xbb\xbf")
    ds = VOCInstanceDataset(data_copy / "VOCdevkit", "train")
    assert ds.ids == ids[:2] and ds[0]["image_id"] == ids[0]


def test_instance_without_class_is_an_error_naming_the_class_png(data_copy):
    ds = VOCInstanceDataset(data_copy / "VOCdevkit", "train")
    s = ds[2]
    cls_path = ds.voc_dir / "SegmentationClass" / f"{ds.ids[2]}.png"
    classes = np.asarray(Image.open(cls_path)).copy()
    classes[s["masks"][1]] = 0  # instance id 2 loses its class
    _break(data_copy, f"SegmentationClass/{ds.ids[2]}.png", classes, "L")
    with pytest.raises(DataError, match=r"instance id 2 .* has no class 1\.\.20"):
        ds[2]


def test_grayscale_label_pngs_read_the_same_as_palette_pngs(data_copy):
    ds = VOCInstanceDataset(data_copy / "VOCdevkit", "train")
    before = ds[0]
    for folder in ("SegmentationObject", "SegmentationClass"):
        path = ds.voc_dir / folder / f"{ds.ids[0]}.png"
        assert Image.open(path).mode == "P"
        _break(data_copy, f"{folder}/{ds.ids[0]}.png", np.asarray(Image.open(path)), "L")
    after = ds[0]
    assert np.array_equal(before["masks"], after["masks"])
    assert np.array_equal(before["labels"], after["labels"])


def test_a_grayscale_photo_is_read_as_rgb_and_one_with_alpha_is_refused(data_copy):
    ds = VOCInstanceDataset(data_copy / "VOCdevkit", "train")
    jpg = ds.image_path(0)
    Image.open(jpg).convert("L").save(jpg)
    assert ds[0]["image"].shape[2] == 3
    # a PNG with alpha saved under the .jpg name is sniffed: not a photo VOC ships
    Image.open(ds.image_path(1)).convert("RGBA").save(ds.image_path(1), format="PNG")
    with pytest.raises(DataError, match=rf"{ds.image_path(1).name}: expected an 8-bit RGB"):
        ds[1]


def test_labels_follow_segmentation_class_not_drawing_order(data_copy):
    """Relabel one instance's class in SegmentationClass: the reader must follow it."""
    ds = VOCInstanceDataset(data_copy / "VOCdevkit", "train")
    s = ds[0]
    cls_path = ds.voc_dir / "SegmentationClass" / f"{ds.ids[0]}.png"
    classes = np.asarray(Image.open(cls_path)).copy()
    new = 12 if s["labels"][0] != 12 else 13
    classes[s["masks"][0]] = new
    _break(data_copy, f"SegmentationClass/{ds.ids[0]}.png", classes, "L")
    assert ds[0]["labels"][0] == new


def test_voc2007_download_fetches_checks_extracts_and_then_reuses(tmp_path):
    """Both archives served from 127.0.0.1 (made from data_example in VOC's tar layout)."""
    import hashlib
    import http.server
    import tarfile
    import threading
    from functools import partial

    from helpers.data.downloads import DownloadError
    from helpers.data.voc import download_voc2007, voc2007_sources

    # torchvision's table is where the real URLs and checksums come from
    real = voc2007_sources()
    assert [s["filename"] for s in real] == [
        "VOCtrainval_06-Nov-2007.tar",
        "VOCtest_06-Nov-2007.tar",
    ]
    assert all(len(s["md5"]) == 32 for s in real)

    served = tmp_path / "served"
    served.mkdir()
    voc = VOC_ROOT / "VOC2007"
    split = {"trainval": ["train", "val", "trainval"], "test": ["test"]}
    sources = []
    for part, sets in split.items():
        tar_path = served / f"{part}.tar"
        with tarfile.open(tar_path, "w") as tar:
            for s in sets:
                tar.add(
                    voc / "ImageSets/Segmentation" / f"{s}.txt",
                    f"VOCdevkit/VOC2007/ImageSets/Segmentation/{s}.txt",
                )
                for image_id in (voc / "ImageSets/Segmentation" / f"{s}.txt").read_text().split():
                    for sub, ext in (
                        ("JPEGImages", "jpg"),
                        ("SegmentationObject", "png"),
                        ("SegmentationClass", "png"),
                    ):
                        tar.add(
                            voc / sub / f"{image_id}.{ext}",
                            f"VOCdevkit/VOC2007/{sub}/{image_id}.{ext}",
                        )
        md5 = hashlib.md5(tar_path.read_bytes()).hexdigest()
        sources.append({"url": None, "filename": tar_path.name, "md5": md5})
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        for s in sources:
            s["url"] = f"http://127.0.0.1:{httpd.server_address[1]}/{s['filename']}"
        counts = {"train": 8, "val": 4, "trainval": 12, "test": 4}
        # wrong expected counts: refused, nothing left in place, the final folder named
        with pytest.raises(DataError, match="train lists 8 images, expected 209") as err:
            download_voc2007(tmp_path / "cache", sources)
        assert str(err.value).startswith(f"{tmp_path / 'cache' / 'VOCdevkit'}: ")
        assert "trainval.tar and test.tar" in str(err.value) and ".extract-" not in str(err.value)
        assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["archives"]
        # a file missing from the archives: named where it would be, not in the temporary folder
        with pytest.raises(DataError, match="as extracted from trainval.tar;") as err:
            download_voc2007(tmp_path / "cache", sources[:1], counts)
        assert str(err.value).startswith(
            f"{tmp_path / 'cache' / 'VOCdevkit' / 'VOC2007' / 'ImageSets'}"
        ), err.value
        # an extraction killed earlier left its temporary folder: the next run removes it
        stale = tmp_path / "cache" / ".extract-killed"
        stale.mkdir()
        (stale / ".owner").write_text("a-colab-vm-gone 1\n")
        devkit = download_voc2007(tmp_path / "cache", sources, counts)
        assert len(VOCInstanceDataset(devkit, "test")) == 4
        assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["VOCdevkit", "archives"]
        # archives on "Drive", extraction on local disk
        drive, local = tmp_path / "drive" / "voc2007", tmp_path / "local" / "voc2007"
        assert download_voc2007(local, sources, counts, archive_dir=drive) == local / "VOCdevkit"
    finally:
        httpd.shutdown()
    # the second call needs no server
    assert download_voc2007(tmp_path / "cache", sources, counts) == devkit
    # a new runtime (local disk empty, archives on Drive) extracts again without a network
    shutil.rmtree(tmp_path / "local")
    again = download_voc2007(local, sources, counts, archive_dir=drive)
    assert len(VOCInstanceDataset(again, "trainval")) == 12
    with pytest.raises(DownloadError, match="SEGCOURSE_SMOKE=1"):
        download_voc2007(
            tmp_path / "other", [dict(sources[0], url="http://127.0.0.1:9/x.tar")], counts
        )


def test_a_process_that_waited_for_the_lock_uses_the_extraction_it_waited_for(
    tmp_path, monkeypatch
):
    """Several ranks ask for VOC2007 at once: one extracts, the others wait on the lock;
    when a waiter gets the lock the data set is there, and it must not fetch or extract
    again."""
    import contextlib

    import helpers.data.downloads as downloads
    from helpers.data.voc import download_voc2007

    folder = tmp_path / "voc"
    marker = folder / "VOCdevkit" / ".complete"

    @contextlib.contextmanager
    def another_process_finished_meanwhile(target, what=None, **kw):
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text("ok\n")  # done by the process this one waited for
        yield

    def no_fetch(*a, **k):
        raise AssertionError("fetched although the data set was there")

    monkeypatch.setattr(downloads, "exclusive", another_process_finished_meanwhile)
    monkeypatch.setattr(downloads, "fetch", no_fetch)
    assert download_voc2007(folder, sources=[]) == folder / "VOCdevkit"
