"""data_example is what the generator writes: regenerate and compare with the committed copy."""

from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np
import pytest
from PIL import Image

from helpers.course.runtime import DATA_EXAMPLE
from helpers.data.voc import VOC_CLASSES, VOCInstanceDataset
from scripts.data_example import generate

VOC_ROOT = DATA_EXAMPLE / "VOCdevkit"


@pytest.mark.parametrize("image_set,n", [("train", 8), ("val", 4), ("trainval", 12), ("test", 4)])
def test_data_example_split_sizes(image_set, n):
    assert len(VOCInstanceDataset(VOC_ROOT, image_set)) == n


def test_data_example_voc_covers_sizes_orientations_and_classes():
    ds = VOCInstanceDataset(VOC_ROOT, "trainval")
    shapes = {ds[i]["image"].shape[:2] for i in range(len(ds))}
    assert any(h > w for h, w in shapes) and any(w > h for h, w in shapes)
    assert all(300 <= min(h, w) and max(h, w) <= 500 for h, w in shapes)
    classes = {int(lab) for i in range(len(ds)) for lab in ds[i]["labels"]}
    assert len(classes) >= 3


def test_data_example_annotation_xml_agrees_with_masks():
    ds = VOCInstanceDataset(VOC_ROOT, "trainval")
    for i in range(len(ds)):
        s = ds[i]
        root = ET.parse(ds.voc_dir / "Annotations" / f"{ds.ids[i]}.xml").getroot()
        h, w = s["image"].shape[:2]
        assert int(root.find("size/width").text) == w and int(root.find("size/height").text) == h
        objects = root.findall("object")
        assert len(objects) == len(s["masks"])
        for obj, mask, label in zip(objects, s["masks"], s["labels"]):
            assert obj.find("name").text == VOC_CLASSES[label - 1]
            ys, xs = np.nonzero(mask)
            x0, y0, x1, y1 = (
                int(obj.find(f"bndbox/{t}").text) - 1 for t in ("xmin", "ymin", "xmax", "ymax")
            )
            # the XML box (1-based, inclusive) encloses the instance ...
            assert x0 <= xs.min() and y0 <= ys.min() and xs.max() <= x1 and ys.max() <= y1
            # ... and is tight: each of its four edges runs through the object or the void
            # band around it (a thin sliver of an occluded object can be all void)
            inside = mask | s["void"]
            for edge in (
                inside[y0 : y1 + 1, x0],
                inside[y0 : y1 + 1, x1],
                inside[y0, x0 : x1 + 1],
                inside[y1, x0 : x1 + 1],
            ):
                assert edge.any()


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("regen") / "data_example")


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_generator_writes_exactly_the_committed_files(regenerated):
    assert _files(regenerated) == _files(DATA_EXAMPLE)


def test_generator_is_deterministic_labels_and_xml_byte_for_byte_photos_nearly(regenerated):
    for rel in _files(DATA_EXAMPLE):
        a, b = DATA_EXAMPLE / rel, regenerated / rel
        if rel.endswith(".jpg"):
            # JPEG encoders differ slightly between library versions
            diff = np.abs(np.asarray(Image.open(a), float) - np.asarray(Image.open(b), float))
            assert diff.mean() < 1.0, rel
        elif rel.endswith(".png"):
            assert np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b))), rel
        else:
            assert a.read_text() == b.read_text(), rel


def test_data_example_stays_small():
    total = sum((DATA_EXAMPLE / rel).stat().st_size for rel in _files(DATA_EXAMPLE))
    assert total < 4 * 2**20


def test_no_colour_threshold_solves_data_example():
    """Even a threshold chosen per image with the answer in hand stays far from the masks."""
    from helpers.data.labpics import LabPicsDataset
    from helpers.data.voc import VOCInstanceDataset
    from scripts.data_example import threshold_baseline_iou

    voc = VOCInstanceDataset(DATA_EXAMPLE / "VOCdevkit", "trainval")
    lab = LabPicsDataset(DATA_EXAMPLE / "LabPicsMedical", "Train")
    voc_iou = [
        threshold_baseline_iou(s["image"], s["masks"].any(0), s["void"])
        for s in map(voc.__getitem__, range(len(voc)))
    ]
    lab_iou = [
        threshold_baseline_iou(s["image"], s["masks"].any(0), s["ignore"])
        for s in map(lab.__getitem__, range(len(lab)))
    ]
    assert np.mean(voc_iou) < 0.65 and np.mean(lab_iou) < 0.65


def test_threshold_baseline_finds_a_threshold_that_does_solve_an_easy_image():
    from scripts.data_example import threshold_baseline_iou

    img = np.full((20, 20, 3), 40, np.uint8)
    fg = np.zeros((20, 20), bool)
    fg[5:15, 5:15] = True
    img[fg] = (200, 40, 40)
    assert threshold_baseline_iou(img, fg) == 1.0
    assert threshold_baseline_iou(255 - img, fg) == 1.0  # the other polarity
