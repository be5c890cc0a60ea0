"""Former path of :mod:`csaws_tools.masks.merge`, kept so existing imports work."""

from __future__ import annotations

from .masks.merge import (
    ImageMasks,
    consensus,
    discover,
    image_size,
    merge_masks,
    merge_worker,
    paint,
    plan_tasks,
    read_mask,
    split_mask_name,
)

__all__ = [
    "ImageMasks",
    "consensus",
    "discover",
    "image_size",
    "merge_masks",
    "merge_worker",
    "paint",
    "read_mask",
    "split_mask_name",
    "plan_tasks",
]
