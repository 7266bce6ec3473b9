"""helpers: the tested package behind the segmentation fine-tuning course.

One module per concept; the names a notebook needs are re-exported here.
"""

from .downloads import DownloadError, fetch
from .image_files import DataError, read_binary_mask, read_index_png, read_rgb
from .labpics import LabPicsDataset
from .metrics import mask_iou
from .runtime import DATA_EXAMPLE, cache_dir, default_device, describe, in_colab, is_smoke
from .sam_model import (
    CheckpointError,
    build_sam,
    load_decoder,
    load_sam,
    module_sizes,
    save_decoder,
)
from .sam_predict import ImageEmbedding, embed_image, predict
from .targets import detection_target, masks_to_boxes_xyxy
from .voc import VOC_CLASSES, VOCInstanceDataset, voc_palette

__all__ = [
    "DATA_EXAMPLE",
    "CheckpointError",
    "DataError",
    "DownloadError",
    "ImageEmbedding",
    "LabPicsDataset",
    "VOCInstanceDataset",
    "VOC_CLASSES",
    "build_sam",
    "cache_dir",
    "default_device",
    "describe",
    "detection_target",
    "embed_image",
    "fetch",
    "in_colab",
    "is_smoke",
    "load_decoder",
    "load_sam",
    "mask_iou",
    "masks_to_boxes_xyxy",
    "module_sizes",
    "predict",
    "read_binary_mask",
    "read_index_png",
    "read_rgb",
    "save_decoder",
    "voc_palette",
]
