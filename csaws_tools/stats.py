"""Former path of :mod:`csaws_tools.review.stats`, kept so existing imports work."""

from __future__ import annotations

from .masks.labelset import (
    find_labels_json,
    names_from_labels_json,
)
from .review.stats import (
    MAP_SUFFIXES,
    class_table,
    count_ids,
    count_map,
    format_table,
    split_of,
    write_table,
)

__all__ = [
    "MAP_SUFFIXES",
    "count_ids",
    "count_map",
    "split_of",
    "class_table",
    "format_table",
    "write_table",
    "find_labels_json",
    "names_from_labels_json",
]
