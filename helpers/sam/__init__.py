"""Segment Anything: the model and its checkpoints (:mod:`~helpers.sam.model`), one
prediction path (:mod:`~helpers.sam.predict`), the embedding cache
(:mod:`~helpers.sam.embeddings`), training items (:mod:`~helpers.sam.items`), prompts
and clicks (:mod:`~helpers.sam.prompts`, :mod:`~helpers.sam.clicks`), losses
(:mod:`~helpers.sam.losses`), the decoder's fine-tuning (:mod:`~helpers.sam.training`,
``python -m helpers.sam.train``), the interactive protocol
(:mod:`~helpers.sam.evaluation`), automatic masks (:mod:`~helpers.sam.automatic_masks`)
and ONNX export (:mod:`~helpers.sam.onnx_decoder`). Never imports
:mod:`helpers.detection`."""

from .. import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "model": (
            "build_sam",
            "build_tiny_sam",
            "download_checkpoint",
            "encoder_fingerprint",
            "load_decoder",
            "load_sam",
            "module_sizes",
            "save_decoder",
            "with_own_decoder",
        ),
        # not "predict" itself: the name is its module's (``helpers.sam.predict.predict``)
        "predict": ("ImageEmbedding", "embed_image", "predict_round", "preprocess"),
        "embeddings": ("EmbeddingCache",),
        "items": ("SamItem", "lowres_targets", "prepare_items"),
        "prompts": ("PromptConfig", "instance_candidates", "sample_prompts"),
        "clicks": ("error_clicks", "next_click", "noc"),
        "losses": ("bce_dice_loss", "bce_dice_per_mask", "iou_of_logits"),
        "training": (
            "SamTrainConfig",
            "decoder_changes",
            "load_best",
            "sam_step",
            "seed_step",
            "train_decoder",
            "weight_decay_only_change",
        ),
        "evaluation": ("box_ious", "click_ious", "comparison_table", "evaluate"),
        "automatic_masks": ("automatic_table", "best_ious", "measure_automatic_masks"),
        "onnx_decoder": (
            "OnnxDecoder",
            "click_latency",
            "export_decoder",
            "first_click_agreement",
            "quantize_int8",
        ),
    },
)
