"""The course's own machinery, below everything else: smoke or full mode, where caches
and data sets go, the device (:mod:`~helpers.course.runtime`); the Colab setup cells and
badges (:mod:`~helpers.course.colab_setup`); what README command 1 sets up locally
(:mod:`~helpers.course.local_setup`) and the Jupyter save hook it names
(:mod:`~helpers.course.jupyter_save`). Imports nothing of the package outside itself,
and no torch."""

from .. import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "runtime": (
            "DATA_EXAMPLE",
            "REPO_ROOT",
            "cache_dir",
            "data_dir",
            "default_device",
            "describe",
            "in_colab",
            "is_smoke",
            "progress",
            "show_messages",
        ),
        "colab_setup": ("course_repository", "out_of_step", "setup_cell", "sync"),
        "local_setup": ("install_git_filter", "install_save_hook"),
        "jupyter_save": ("strip_run", "strip_smoke_outputs"),
    },
)
