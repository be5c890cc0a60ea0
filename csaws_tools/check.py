"""Former path of :mod:`csaws_tools.review.check`, kept so existing imports work."""

from __future__ import annotations

from .review.check import (
    KINDS,
    CheckReport,
    Finding,
    check_dataset,
    find_layout,
    header_size,
    printable,
)

__all__ = [
    "KINDS",
    "CheckReport",
    "Finding",
    "check_dataset",
    "find_layout",
    "header_size",
    "printable",
]
