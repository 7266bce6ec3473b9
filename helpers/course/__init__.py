"""The course's own machinery, below everything else: smoke or full mode, where caches
and data sets go, the device (:mod:`~helpers.course.runtime`); the Jupyter save hook that
README command 1 installs (:mod:`~helpers.course.jupyter_save`); jobs started from a
notebook (:mod:`~helpers.course.jobs`). Imports nothing of the package outside itself,
and no torch at import."""
