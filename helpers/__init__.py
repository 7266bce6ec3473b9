"""helpers: the tested package behind the segmentation fine-tuning course.

Layers, each a subpackage of one concern; an import only ever goes down or sideways
within a layer (``tests/test_layers.py`` checks it):

- ``views/`` (pictures, widgets) may import everything below;
- ``sam/`` and ``detection/`` (the two models: loading, data items, training,
  evaluation, export) import the layers below and never each other;
- ``data/`` (readers, downloads, the built-in data generator) and the shared modules
  at the top (``checkpoints``, ``training_run``, ``schedules``, ``metrics``,
  ``distributed``, ``command_line``) import only ``course/`` and each other;
- ``course/`` (smoke or full mode, cache folders, Colab and local set-up, the Jupyter
  save hook) imports nothing of the package but itself.

The names a notebook needs are re-exported here (and each subpackage re-exports its
own). They are imported on first use (PEP 562), so that ``import helpers.course.runtime``
or the Jupyter save hook (:mod:`helpers.course.jupyter_save`) do not pull in torch.
"""

from __future__ import annotations

import importlib


def lazy_exports(package: str, table: dict[str, tuple[str, ...]]):
    """``(__getattr__, __dir__, __all__)`` of a package that re-exports
    ``{submodule path: names}`` and imports each submodule on first use. A name equal to
    its submodule's last component with no such attribute there is the submodule itself
    (``plotting`` at the top: ``from helpers import plotting`` gives ``helpers.views.plotting``)."""
    where = {name: module for module, names in table.items() for name in names}

    def __getattr__(name: str):
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(f".{where[name]}", package)
        value = getattr(module, name, module)
        importlib.import_module(package).__dict__[name] = value  # next time: plain lookup
        return value

    def __dir__():
        return sorted(set(importlib.import_module(package).__dict__) | set(where))

    return __getattr__, __dir__, sorted(where)


__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "checkpoints": ("CheckpointError",),
        "metrics": ("mask_iou",),
        "course.runtime": (
            "DATA_EXAMPLE",
            "cache_dir",
            "default_device",
            "describe",
            "in_colab",
            "is_smoke",
        ),
        "data.downloads": ("DownloadError", "fetch"),
        "data.image_files": ("DataError", "read_binary_mask", "read_index_png", "read_rgb"),
        "data.labpics": ("LabPicsDataset", "download_labpics"),
        "data.voc": ("VOC_CLASSES", "VOCInstanceDataset", "download_voc2007", "voc_palette"),
        "sam.automatic_masks": ("automatic_table", "measure_automatic_masks"),
        "sam.clicks": ("next_click",),
        "sam.embeddings": ("EmbeddingCache",),
        "sam.evaluation": ("comparison_table", "evaluate"),
        "sam.items": ("prepare_items",),
        "sam.model": (
            "build_sam",
            "build_tiny_sam",
            "download_checkpoint",
            "load_decoder",
            "load_sam",
            "module_sizes",
            "save_decoder",
            "with_own_decoder",
        ),
        "sam.onnx_decoder": (
            "OnnxDecoder",
            "click_latency",
            "export_decoder",
            "first_click_agreement",
            "quantize_int8",
        ),
        "sam.predict": ("ImageEmbedding", "embed_image", "predict", "predict_round", "preprocess"),
        "sam.prompts": ("PromptConfig", "sample_prompts"),
        "sam.training": (
            "SamTrainConfig",
            "decoder_changes",
            "train_decoder",
            "weight_decay_only_change",
        ),
        "detection.coco_eval": ("evaluate_detector",),
        "detection.data": ("LabPicsDetection", "train_transforms"),
        "detection.model": (
            "SMOKE_MODEL_KWARGS",
            "build_coco_maskrcnn",
            "build_maskrcnn",
            "check_input_contract",
            "map_to_vessel",
        ),
        "detection.roi_align": (
            "fpn_levels",
            "roi_align",
            "roi_pool",
            "roundtrip_experiment",
            "sample_points",
        ),
        "detection.targets": ("detection_target", "masks_to_boxes_xyxy"),
        "detection.training": ("MaskRCNNTrainConfig", "train_maskrcnn"),
        "views.plotting": ("plotting",),
        "views.widget": ("detection_compare_widget", "sam_compare_widget"),
    },
)
