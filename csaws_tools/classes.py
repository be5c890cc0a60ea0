"""Former path of :mod:`csaws_tools.masks.classes`, kept so existing imports work."""

from __future__ import annotations

from .masks.classes import (
    ALL_CLASSES,
    BACKGROUND,
    COLOURS,
    COMPLEMENTARY_CLASSES,
    MAIN_CLASS,
    MASK_CLASSES,
    NUMBERINGS,
    PAPER_CLASS_TABLE,
    Numbering,
    background_id,
    class_ids,
    class_names,
    normalise_class_name,
    priority,
    split_mask_stem,
)
from .masks.labelset import (
    labels_json,
    labels_table,
    palette,
)

__all__ = [
    "Numbering",
    "NUMBERINGS",
    "MASK_CLASSES",
    "BACKGROUND",
    "ALL_CLASSES",
    "MAIN_CLASS",
    "COMPLEMENTARY_CLASSES",
    "COLOURS",
    "PAPER_CLASS_TABLE",
    "class_ids",
    "class_names",
    "background_id",
    "priority",
    "normalise_class_name",
    "split_mask_stem",
    "labels_table",
    "labels_json",
    "palette",
]
