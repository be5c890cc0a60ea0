"""Former path of :mod:`csaws_tools.patches.reader`, kept so existing imports work."""

from __future__ import annotations

from .patches.h5format import (
    JSON_ATTRS,
    attr_value,
)
from .patches.reader import (
    CHUNK_CACHE_BYTES,
    PatchReader,
    TorchPatchDataset,
    stitch,
)

__all__ = [
    "JSON_ATTRS",
    "attr_value",
    "CHUNK_CACHE_BYTES",
    "PatchReader",
    "stitch",
    "TorchPatchDataset",
]
