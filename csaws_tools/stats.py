"""Former path of :mod:`csaws_tools.review.stats`, kept so existing imports work."""

from __future__ import annotations

from .files import (
    MAP_SUFFIXES,
)
from .masks.counting import (
    count_ids,
)
from .masks.labelset import (
    find_labels_json,
    names_from_labels_json,
)
from .review.stats import (
    class_table,
    count_map,
    format_table,
    split_of,
    write_table,
)

__all__ = [
    "MAP_SUFFIXES",
    "find_labels_json",
    "names_from_labels_json",
    "count_ids",
    "count_map",
    "split_of",
    "class_table",
    "format_table",
    "write_table",
]
