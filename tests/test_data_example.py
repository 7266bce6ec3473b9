"""data_example is what the generator writes: regenerate and compare with the committed copy."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import DATA_EXAMPLE
from helpers.data.data_example import generate


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
    from helpers import LabPicsDataset, VOCInstanceDataset
    from helpers.data.data_example import threshold_baseline_iou

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
    from helpers.data.data_example import threshold_baseline_iou

    img = np.full((20, 20, 3), 40, np.uint8)
    fg = np.zeros((20, 20), bool)
    fg[5:15, 5:15] = True
    img[fg] = (200, 40, 40)
    assert threshold_baseline_iou(img, fg) == 1.0
    assert threshold_baseline_iou(255 - img, fg) == 1.0  # the other polarity
