"""A validation set held out of a training split: every ``every``-th image.

Introduced in notebook 03 and used by both fine-tuning jobs (notebooks 03 and 04, and
their command lines). Both data sets ship a split to train on (VOC2007's ``trainval``,
LabPics' ``Train``) and one to measure on (``test``, ``Test``), but no validation split
to choose the best epoch; it is taken from the training split, the same images whatever
the mode and the number of processes.
"""

from __future__ import annotations

from torch.utils.data import Subset


def hold_out(dataset, every: int = 10) -> tuple[Subset, Subset]:
    """``(train, val)`` views of ``dataset``: ``val`` holds items ``0, every, 2 * every,
    ...`` and ``train`` the others, in their order. Every item is in exactly one of them;
    ``val`` is empty only for an empty ``dataset``.

    Raises:
        ValueError: ``every`` is below 2 (nothing would be left to train on).
    """
    if every < 2:
        raise ValueError(f"hold_out: every must be at least 2, got {every}")
    n = len(dataset)
    val = range(0, n, every)
    train = [i for i in range(n) if i % every]
    return Subset(dataset, train), Subset(dataset, val)
