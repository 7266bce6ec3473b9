"""One default per setting: notebooks 03 and 04 in full mode, the command lines and the
README use the config classes' defaults, not copies of them."""

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pytest

from helpers.command_line import config_from_args
from helpers.course.runtime import cache_dir
from helpers.detection import train as maskrcnn_cli
from helpers.detection.model import SMOKE_MODEL_KWARGS
from helpers.detection.training import MaskRCNNTrainConfig
from helpers.sam import train as sam_cli
from helpers.sam.training import SamTrainConfig

ROOT = Path(__file__).resolve().parent.parent


def _settings(notebook: str, smoke: bool):
    """The notebook's Settings dataclass, defined as its cell defines it, for a mode."""
    text = (ROOT / "notebooks" / notebook).read_text()
    start = text.index("@dataclass\nclass Settings:")
    end = text.index("\nS = Settings()", start)
    namespace = dict(
        dataclass=dataclass,
        field=field,
        SMOKE=smoke,
        SamTrainConfig=SamTrainConfig,
        MaskRCNNTrainConfig=MaskRCNNTrainConfig,
        SMOKE_MODEL_KWARGS=SMOKE_MODEL_KWARGS,
        cache_dir=cache_dir,
    )
    exec(text[start:end], namespace)
    return namespace["Settings"]()


@pytest.mark.parametrize(
    "notebook, config",
    [
        ("03_finetune_sam_decoder_voc.py", SamTrainConfig),
        ("04_finetune_maskrcnn_labpics.py", MaskRCNNTrainConfig),
    ],
)
def test_full_mode_notebooks_train_with_the_config_defaults(notebook, config):
    assert asdict(_settings(notebook, smoke=False).train) == asdict(config())
    assert asdict(_settings(notebook, smoke=True).train) != asdict(config())  # smoke differs


def test_the_command_lines_default_to_the_config_defaults():
    sam_args = sam_cli.parser().parse_args([])
    assert config_from_args(SamTrainConfig, sam_args, sam_cli.SKIP) == SamTrainConfig()
    maskrcnn_args = maskrcnn_cli.parser().parse_args([])
    assert config_from_args(MaskRCNNTrainConfig, maskrcnn_args) == MaskRCNNTrainConfig()


def _number_after(text: str, words: str) -> float:
    """The number written right after ``words`` (1e-4, 0.005, 20 ...)."""
    found = re.search(re.escape(words) + r"\s*([0-9.]+(?:e-?[0-9]+)?)", text)
    assert found, f"{words!r} not followed by a number in {text!r}"
    return float(found.group(1))


def test_the_readme_quotes_the_config_defaults():
    readme = (ROOT / "README.md").read_text()
    sam, maskrcnn = SamTrainConfig(), MaskRCNNTrainConfig()
    sam_text = readme[readme.index("### Fine-tuning SAM's decoder") :]
    sam_text = sam_text[: sam_text.index("\n- ")]
    assert f"; {sam.epochs} epochs" in sam_text
    assert _number_after(sam_text, "AdamW (lr") == sam.lr
    assert _number_after(sam_text, "weight decay") == sam.weight_decay
    assert f"{sam.click_rounds} clicks" in sam_text and f"{sam.refine_rounds} rounds" in sam_text
    assert f"{round(sam.warmup_frac * 100)}% warm-up" in sam_text
    mr_text = readme[readme.index("### Fine-tuning Mask R-CNN") :]
    mr_text = mr_text[: mr_text.index("\n\n", mr_text.index("Full-mode"))]
    assert f"batch {maskrcnn.batch_size}," in mr_text and f"{maskrcnn.epochs} epochs" in mr_text
    assert _number_after(mr_text, "SGD (lr") == maskrcnn.lr
    assert _number_after(mr_text, "momentum") == maskrcnn.momentum
    assert _number_after(mr_text, "weight decay") == maskrcnn.weight_decay
    assert f"{round(maskrcnn.warmup_frac * 100)}% warm-up" in mr_text
