"""helpers: the tested package behind the segmentation fine-tuning course.

Layers (``tests/test_layers.py`` checks every import): ``course/`` at the bottom; ``data/``
and the shared modules above it; ``sam/`` and ``detection/``, which never import each
other; ``views/`` on top. Nothing is re-exported: import from the modules
(``from helpers.sam.predict import predict``), so ``import helpers`` loads nothing.
"""
