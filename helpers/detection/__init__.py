"""torchvision's Mask R-CNN: the model with both predictors replaced
(:mod:`~helpers.detection.model`), its training targets and data
(:mod:`~helpers.detection.targets`, :mod:`~helpers.detection.data`), the training loop
(:mod:`~helpers.detection.training`, ``python -m helpers.detection.train``), COCO AP
(:mod:`~helpers.detection.coco_eval`) and RoI Align from scratch
(:mod:`~helpers.detection.roi_align`). Never imports :mod:`helpers.sam`."""
