"""Former path of :mod:`csaws_tools.review.preview`, kept so existing imports work."""

from __future__ import annotations

from .review.preview import (
    IMAGE_SUFFIXES,
    PANEL_COLOUR,
    PreviewResult,
    contact_sheet,
    overlay,
    preview,
    preview_worker,
    to_grey,
)

__all__ = [
    "IMAGE_SUFFIXES",
    "PANEL_COLOUR",
    "to_grey",
    "overlay",
    "contact_sheet",
    "preview_worker",
    "PreviewResult",
    "preview",
]
