"""Former path of :mod:`csaws_tools.review.export`, kept so existing imports work."""

from __future__ import annotations

from .review.export import (
    LABEL_ALIASES,
    NORMALIZATIONS,
    TEST_LABELS,
    DatalistResult,
    ExportResult,
    checked_png_header,
    export_monai,
    export_nnunet,
    export_scheme,
    index_images,
    label_lut,
    make_folds,
    maps_partition,
    place_image,
    plan_cases,
)

__all__ = [
    "LABEL_ALIASES",
    "NORMALIZATIONS",
    "TEST_LABELS",
    "DatalistResult",
    "ExportResult",
    "export_monai",
    "export_nnunet",
    "export_scheme",
    "index_images",
    "label_lut",
    "make_folds",
    "maps_partition",
    "place_image",
    "plan_cases",
    "checked_png_header",
]
