"""Segment Anything: the model and its checkpoints (:mod:`~helpers.sam.model`), one
prediction path (:mod:`~helpers.sam.predict`), the embedding cache
(:mod:`~helpers.sam.embeddings`), training items (:mod:`~helpers.sam.items`), prompts
and clicks (:mod:`~helpers.sam.prompts`, :mod:`~helpers.sam.clicks`), losses
(:mod:`~helpers.sam.losses`), the decoder's fine-tuning (:mod:`~helpers.sam.training`,
``python -m helpers.sam.train``), the interactive protocol
(:mod:`~helpers.sam.evaluation`), automatic masks (:mod:`~helpers.sam.automatic_masks`)
and ONNX export (:mod:`~helpers.sam.onnx_decoder`). Never imports
:mod:`helpers.detection`."""
