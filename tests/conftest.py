import shutil
from pathlib import Path

import matplotlib
import pytest

from helpers.course.runtime import DATA_EXAMPLE

matplotlib.use("Agg")


@pytest.fixture
def data_copy(tmp_path) -> Path:
    """A private, writable copy of data_example (1.5 MB) for tests that break files."""
    dst = tmp_path / "data_example"
    shutil.copytree(DATA_EXAMPLE, dst)
    return dst
