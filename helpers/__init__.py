"""helpers: the tested package behind the segmentation fine-tuning course.

One module per concept; the names a notebook needs are re-exported here.
"""

from .image_files import DataError, read_binary_mask, read_index_png, read_rgb
from .labpics import LabPicsDataset
from .runtime import DATA_EXAMPLE, cache_dir, default_device, describe, in_colab, is_smoke
from .targets import detection_target, masks_to_boxes_xyxy
from .voc import VOC_CLASSES, VOCInstanceDataset, voc_palette

__all__ = [
    "DATA_EXAMPLE",
    "DataError",
    "LabPicsDataset",
    "VOCInstanceDataset",
    "VOC_CLASSES",
    "cache_dir",
    "default_device",
    "describe",
    "detection_target",
    "in_colab",
    "is_smoke",
    "masks_to_boxes_xyxy",
    "read_binary_mask",
    "read_index_png",
    "read_rgb",
    "voc_palette",
]
