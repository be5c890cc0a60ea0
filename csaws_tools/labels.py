"""Former path of :mod:`csaws_tools.masks.labels`, kept so existing imports work."""

from __future__ import annotations

from .masks.labels import (
    SCHEME_KINDS,
    STANDARD_NAMES,
    LabelScheme,
    class_token,
    normalise_name,
    parse_scheme,
    scheme_ids,
    scheme_labels_table,
    scheme_names,
    scheme_palette,
)

__all__ = [
    "STANDARD_NAMES",
    "SCHEME_KINDS",
    "normalise_name",
    "class_token",
    "LabelScheme",
    "parse_scheme",
    "scheme_ids",
    "scheme_names",
    "scheme_palette",
    "scheme_labels_table",
]
