"""helpers: the tested package behind the segmentation fine-tuning course.

One module per concept; the names a notebook needs are re-exported here. They are
imported on first use (PEP 562), so that ``import helpers.runtime`` or the Jupyter save
hook (:mod:`helpers.jupyter_save`) do not pull in torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "downloads": ("DownloadError", "fetch"),
    "image_files": ("DataError", "read_binary_mask", "read_index_png", "read_rgb"),
    "labpics": ("LabPicsDataset",),
    "metrics": ("mask_iou",),
    "runtime": ("DATA_EXAMPLE", "cache_dir", "default_device", "describe", "in_colab", "is_smoke"),
    "sam_model": (
        "CheckpointError",
        "build_sam",
        "load_decoder",
        "load_sam",
        "module_sizes",
        "save_decoder",
    ),
    "sam_predict": ("ImageEmbedding", "embed_image", "predict"),
    "targets": ("detection_target", "masks_to_boxes_xyxy"),
    "voc": ("VOC_CLASSES", "VOCInstanceDataset", "voc_palette"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
        globals()[name] = value  # the next lookup is a plain attribute
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
