"""helpers.data.splits: the held-out validation set, for any data size, and on a stand-in
of the full-mode folder (a VOCdevkit whose trainval lists many images)."""

import shutil

import pytest
from hypothesis import given
from hypothesis import strategies as st
from oracles import FAST

from helpers.course.runtime import DATA_EXAMPLE
from helpers.data.splits import hold_out
from helpers.data.voc import VOCInstanceDataset


@FAST
@given(st.integers(0, 500), st.integers(2, 40))
def test_every_item_is_in_exactly_one_part_and_val_is_every_nth(n, every):
    items = [f"image{i}" for i in range(n)]
    train, val = hold_out(items, every)
    got_train = [train[i] for i in range(len(train))]
    got_val = [val[i] for i in range(len(val))]
    assert not set(got_train) & set(got_val)
    assert sorted(got_train + got_val) == sorted(items)
    assert got_val == items[::every]  # in order, the first one included
    assert got_train == [x for k, x in enumerate(items) if k % every]
    assert (len(got_val) > 0) == (n > 0)


def test_fewer_than_two_is_refused():
    with pytest.raises(ValueError, match="every must be at least 2"):
        hold_out(list(range(5)), 1)


def test_a_full_size_trainval_splits_its_images_apart(tmp_path):
    """VOC2007's trainval (422 ids) stood in by data_example's images listed many times
    under new ids: no image id is both trained on and used to choose the best epoch."""
    voc = tmp_path / "VOCdevkit" / "VOC2007"
    shutil.copytree(DATA_EXAMPLE / "VOCdevkit" / "VOC2007", voc)
    originals = (voc / "ImageSets" / "Segmentation" / "trainval.txt").read_text().split()
    ids = []
    for k in range(422):
        src, new = originals[k % len(originals)], f"9{k:05d}"  # no id of data_example
        for folder, suffix in (("JPEGImages", ".jpg"), ("SegmentationObject", ".png")):
            shutil.copy(voc / folder / f"{src}{suffix}", voc / folder / f"{new}{suffix}")
        shutil.copy(
            voc / "SegmentationClass" / f"{src}.png", voc / "SegmentationClass" / f"{new}.png"
        )
        ids.append(new)
    (voc / "ImageSets" / "Segmentation" / "trainval.txt").write_text("\n".join(ids) + "\n")
    train, val = hold_out(VOCInstanceDataset(tmp_path / "VOCdevkit", "trainval"))
    train_ids = {train.dataset.ids[i] for i in train.indices}
    val_ids = {val.dataset.ids[i] for i in val.indices}
    assert len(val_ids) == 43 and len(train_ids) == 379 and not train_ids & val_ids
