"""The data sets on disk: VOC2007 instances (:mod:`~helpers.data.voc`), LabPics Medical
vessels (:mod:`~helpers.data.labpics`), the image and label files they are made of
(:mod:`~helpers.data.image_files`) and downloads with checks
(:mod:`~helpers.data.downloads`). Model-agnostic: imports only :mod:`helpers.course`.
The built-in miniature copies in ``data_example/`` are made by ``python -m
scripts.data_example`` (repository tooling, not part of the package)."""
