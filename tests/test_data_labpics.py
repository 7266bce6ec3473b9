"""helpers.data.labpics: the LabPics Medical reader on data_example and on broken copies of
it, and the archive's download, check and extraction against a local server."""

import logging
import shutil

import numpy as np
import pytest
from PIL import Image

from helpers.course.runtime import DATA_EXAMPLE
from helpers.data.image_files import DataError
from helpers.data.labpics import LabPicsDataset

LABPICS_ROOT = DATA_EXAMPLE / "LabPicsMedical"


@pytest.mark.parametrize("split,n", [("Train", 8), ("Test", 4), ("train", 8)])
def test_data_example_split_sizes(split, n):
    assert len(LabPicsDataset(LABPICS_ROOT, split)) == n


def test_labpics_sample_contract_on_every_data_example_sample():
    overlapping = 0
    for split in ("Train", "Test"):
        ds = LabPicsDataset(LABPICS_ROOT, split)
        for i in range(len(ds)):
            s = ds[i]
            h, w, _ = s["image"].shape
            assert s["image"].dtype == np.uint8
            assert s["masks"].dtype == bool and s["masks"].shape[1:] == (h, w)
            assert len(s["masks"]) >= 1 and (s["labels"] == 1).all()
            assert s["masks"].reshape(len(s["masks"]), -1).any(1).all()
            assert s["ignore"].shape == (h, w) and s["ignore"].dtype == bool
            overlapping += int(s["masks"].sum(0).max() > 1)
            semantic = (
                np.asarray(Image.open(ds.samples[i] / "SemanticMaps/FullImage/Vessel.png")) > 0
            )
            assert np.array_equal(semantic, s["masks"].any(0))
    assert overlapping >= 2  # glass in front of glass keeps both outlines


def test_labpics_reader_accepts_the_folder_above_the_archive_root():
    assert len(LabPicsDataset(DATA_EXAMPLE, "Test")) == 4


def test_sample_without_vessels_folder_is_skipped_counted_and_reported(data_copy, caplog):
    root = data_copy / "LabPicsMedical"
    shutil.rmtree(root / "Train" / "train_002" / "Vessels")
    with caplog.at_level(logging.WARNING, logger="helpers.data.labpics"):
        ds = LabPicsDataset(root, "Train")
    assert len(ds) == 7 and [p.name for p in ds.skipped] == ["train_002"]
    assert "skipped 1 of 8 samples without a Vessels/ folder" in caplog.text


def test_empty_vessels_folder_is_an_image_with_zero_vessels(data_copy):
    root = data_copy / "LabPicsMedical"
    for p in (root / "Test" / "test_001" / "Vessels").iterdir():
        p.unlink()
    ds = LabPicsDataset(root, "Test")
    s = ds[1]
    assert s["masks"].shape == (0, *s["image"].shape[:2]) and len(s["labels"]) == 0


def test_vessel_mask_of_wrong_size_is_an_error_naming_it(data_copy):
    root = data_copy / "LabPicsMedical"
    path = root / "Test" / "test_000" / "Vessels" / "0.png"
    Image.fromarray(np.asarray(Image.open(path))[:, :-3]).save(path)
    with pytest.raises(DataError, match=r"test_000/Vessels/0\.png: mask is"):
        LabPicsDataset(root, "Test")[0]


@pytest.mark.parametrize(
    "split, position", [("Train", 0), ("Train", -1), ("Test", 0), ("Test", -1)]
)
def test_a_sample_without_its_photo_is_an_error_at_construction(data_copy, split, position):
    """Checked when the reader is made, for every sample folder (first and last here)."""
    root = data_copy / "LabPicsMedical"
    sample = sorted(p for p in (root / split).iterdir() if p.is_dir())[position]
    (sample / "Image.jpg").unlink()
    with pytest.raises(DataError, match=rf"{sample.name}/Image\.jpg: sample folder has no Image"):
        LabPicsDataset(root, split)


def test_truncated_photo_is_an_error_naming_it(data_copy):
    root = data_copy / "LabPicsMedical"
    path = root / "Train" / "train_001" / "Image.jpg"
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(DataError, match=r"train_001/Image\.jpg: corrupt or truncated"):
        LabPicsDataset(root, "Train")[1]


def test_an_rgb_vessel_mask_is_refused_naming_the_file(data_copy):
    """LabPics ships one-channel vessel masks; a three-channel one is not guessed at."""
    root = data_copy / "LabPicsMedical"
    ds = LabPicsDataset(root, "Test")
    path = ds.mask_paths(2)[0]
    m = np.asarray(Image.open(path))
    Image.fromarray(np.stack([m, np.zeros_like(m), np.zeros_like(m)], -1)).save(path)
    with pytest.raises(DataError, match=rf"{path.name}: expected a one-channel mask"):
        ds[2]


def test_wrong_root_is_an_error_that_says_what_to_pass(tmp_path):
    with pytest.raises(DataError, match="no Train/ and Test/ folders"):
        LabPicsDataset(tmp_path, "Train")


def test_labpics_download_extracts_checks_layout_and_reuses(tmp_path, caplog):
    import hashlib
    import http.server
    import threading
    import zipfile
    from functools import partial

    from helpers.data.labpics import download_labpics

    served = tmp_path / "served"
    served.mkdir()
    archive = served / "LabPicsMedical.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in LABPICS_ROOT.rglob("*"):
            if path.is_file():
                zf.write(path, "LabPics Medical/" + str(path.relative_to(LABPICS_ROOT)))
    (served / "broken.zip").write_bytes(archive.read_bytes()[:5000])
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        # a zip that is no zip (no checksum to catch it): deleted so that a rerun downloads
        bad = tmp_path / "bad" / "LabPicsMedical.zip"
        with pytest.raises(DataError, match="not a readable zip archive .*deleted, run again"):
            download_labpics(tmp_path / "bad", f"{base}/broken.zip")
        assert not bad.exists()
        assert sorted(p.name for p in (tmp_path / "bad").iterdir()) == []
        # a killed extraction's temporary folder is removed by the next run
        (tmp_path / "cache" / ".extract-killed").mkdir(parents=True)
        (tmp_path / "cache" / ".extract-killed" / ".owner").write_text("gone-vm 1\n")
        with caplog.at_level(logging.WARNING, logger="helpers.data.downloads"):
            root = download_labpics(tmp_path / "cache", f"{base}/LabPicsMedical.zip")
        assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [
            "LabPicsMedical",
            "LabPicsMedical.zip",
        ]
        # the archive on "Drive", extracted on local disk
        drive, local = tmp_path / "drive" / "labpics", tmp_path / "local" / "labpics"
        url = f"{base}/LabPicsMedical.zip"
        assert download_labpics(local, url, archive_dir=drive) == local / "LabPicsMedical"
    finally:
        httpd.shutdown()
    assert (
        hashlib.md5(archive.read_bytes()).hexdigest() in caplog.text
    )  # printed so it can be pinned
    assert len(LabPicsDataset(root, "Train")) == 8 and len(LabPicsDataset(root, "Test")) == 4
    assert (
        download_labpics(tmp_path / "cache", "http://127.0.0.1:9/unused") == root
    )  # no network needed now
    shutil.rmtree(tmp_path / "local")  # a new Colab runtime: extracted again from Drive
    again = download_labpics(local, "http://127.0.0.1:9/unused", archive_dir=drive)
    assert len(LabPicsDataset(again, "Test")) == 4


def _first_sample(data_copy):
    ds = LabPicsDataset(data_copy / "LabPicsMedical", "Train")
    return ds, ds.samples[0]


def test_a_vessels_file_instead_of_a_folder_is_an_error_naming_it(data_copy):
    _, sample = _first_sample(data_copy)
    shutil.rmtree(sample / "Vessels")
    (sample / "Vessels").write_text("not a folder")
    with pytest.raises(DataError, match=r"Vessels: is a file, not a folder of vessel masks"):
        LabPicsDataset(data_copy / "LabPicsMedical", "Train")


def test_hidden_files_among_the_vessel_masks_are_not_data(data_copy):
    ds, sample = _first_sample(data_copy)
    before = ds[0]["masks"]
    (sample / "Vessels" / ".DS_Store").write_bytes(b"\0")  # an OS's folder metadata
    after = ds[0]["masks"]
    assert after.shape == before.shape and np.array_equal(after, before)


@pytest.mark.parametrize("name", ["9.jpg", "9.bmp", "notes.txt", "9.PNG.txt"])
def test_anything_but_a_png_among_the_vessel_masks_is_an_error_naming_it(data_copy, name):
    """LabPics ships one PNG per vessel; another format (even a lossless one) is refused,
    not silently read or skipped."""
    ds, sample = _first_sample(data_copy)
    first = sorted((sample / "Vessels").glob("*.png"))[0]
    Image.open(first).save(sample / "Vessels" / name, format="PNG")
    with pytest.raises(DataError, match=rf"Vessels/{name}: not a vessel mask: .* PNG"):
        ds[0]


def test_a_folder_among_the_vessel_masks_is_an_error_naming_it(data_copy):
    ds, sample = _first_sample(data_copy)
    (sample / "Vessels" / "extra.png").mkdir()
    with pytest.raises(DataError, match=r"Vessels/extra.png: not a vessel mask"):
        ds[0]


def test_an_ignore_map_of_another_size_than_its_image_is_an_error(data_copy):
    ds, sample = _first_sample(data_copy)
    ignore = np.asarray(Image.open(sample / "Ignore.png"))
    Image.fromarray(ignore[:-7]).save(sample / "Ignore.png")
    with pytest.raises(
        DataError, match=r"Ignore\.png: mask is \d+x\d+ \(width x height\) but its image is"
    ):
        ds[0]
