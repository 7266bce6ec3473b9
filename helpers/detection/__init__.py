"""torchvision's Mask R-CNN: the model with both predictors replaced
(:mod:`~helpers.detection.model`), its training targets and data
(:mod:`~helpers.detection.targets`, :mod:`~helpers.detection.data`), the training loop
(:mod:`~helpers.detection.training`, ``python -m helpers.detection.train``), COCO AP
(:mod:`~helpers.detection.coco_eval`) and RoI Align from scratch
(:mod:`~helpers.detection.roi_align`). Never imports :mod:`helpers.sam`."""

from .. import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "model": (
            "SMOKE_MODEL_KWARGS",
            "build_coco_maskrcnn",
            "build_maskrcnn",
            "check_input_contract",
            "map_to_vessel",
        ),
        "targets": ("detection_target", "masks_to_boxes_xyxy"),
        "data": ("LabPicsDetection", "SeededShuffle", "collate", "train_transforms"),
        "training": ("MaskRCNNTrainConfig", "load_best", "train_maskrcnn", "train_one_epoch"),
        "coco_eval": ("evaluate_detector",),
        # not "roi_align" itself: the name is its module's
        "roi_align": (
            "fpn_levels",
            "multiscale_roi_align",
            "roi_pool",
            "roundtrip_experiment",
            "sample_points",
        ),
    },
)
