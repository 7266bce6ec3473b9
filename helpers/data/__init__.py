"""The data sets on disk: VOC2007 instances (:mod:`~helpers.data.voc`), LabPics Medical
vessels (:mod:`~helpers.data.labpics`), the image and label files they are made of
(:mod:`~helpers.data.image_files`), downloads with checks (:mod:`~helpers.data.downloads`)
and the generator of the built-in miniature copies (:mod:`~helpers.data.data_example`).
Model-agnostic: imports only :mod:`helpers.course`."""

from .. import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "voc": ("VOC_CLASSES", "VOCInstanceDataset", "download_voc2007", "voc_palette"),
        "labpics": ("LabPicsDataset", "download_labpics"),
        "image_files": ("DataError", "read_binary_mask", "read_index_png", "read_rgb"),
        "downloads": ("DownloadError", "fetch", "md5sum", "sha256sum"),
        "data_example": ("generate",),
    },
)
