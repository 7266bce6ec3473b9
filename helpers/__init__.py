"""helpers: the tested package behind the segmentation fine-tuning course.

Layers, each a subpackage of one concern; an import only ever goes down or sideways
within a layer (``tests/test_layers.py`` checks it):

- ``views/`` (pictures, widgets) may import everything below;
- ``sam/`` and ``detection/`` (the two models: loading, data items, training,
  evaluation, export) import the layers below and never each other;
- ``data/`` (readers, downloads) and the shared modules at the top (``checkpoints``,
  ``training_run``, ``schedules``, ``metrics``, ``distributed``, ``command_line``,
  ``remembered``) import only ``course/`` and each other;
- ``course/`` (smoke or full mode, cache folders, the Jupyter save hook, notebook jobs)
  imports nothing of the package but itself.

Nothing is re-exported: notebooks, tests and benchmarks import from the modules
(``from helpers.sam.predict import predict``), so ``import helpers`` loads nothing, and
the Jupyter save hook (:mod:`helpers.course.jupyter_save`) does not pull in torch.
"""
