"""Former path of :mod:`csaws_tools.masks.qupath`, kept so existing imports work."""

from __future__ import annotations

from .masks.qupath import (
    COORDINATE_LIMIT,
    CROSSINGS_PER_BLOCK,
    MAX_CROSSINGS,
    MAX_VERTICES,
    GeoJSONAnnotations,
    fill_rings,
    rasterise_geojson,
    rasterise_geometries,
    read_geojson,
)

__all__ = [
    "MAX_VERTICES",
    "COORDINATE_LIMIT",
    "MAX_CROSSINGS",
    "CROSSINGS_PER_BLOCK",
    "GeoJSONAnnotations",
    "read_geojson",
    "fill_rings",
    "rasterise_geometries",
    "rasterise_geojson",
]
