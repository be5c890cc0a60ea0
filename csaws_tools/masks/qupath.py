"""QuPath GeoJSON annotations rasterised into one binary mask per class.

QuPath exports annotations as GeoJSON (``File > Export objects as
GeoJSON``): a ``FeatureCollection`` (or a bare list of features), one
feature per annotation, with the class in
``properties.classification.name``. Coordinates are in pixels of the full
image: ``x`` is the column, ``y`` the row, and pixel ``(row, col)`` covers
the square ``[col, col+1) x [row, row+1)``.

A pixel is inside an annotation when its centre ``(col + 0.5, row + 0.5)``
is, which is how QuPath itself fills shapes when it exports label images.
Polygons and multipolygons with holes are supported; annotations of one
class are united with shapely first (so overlapping annotations and
invalid, self-intersecting outlines are handled), then filled with a
vectorised even-odd scanline: the cost grows with the outline length and
the number of rows covered, never with per-pixel Python.

Class names are matched to the CSAW-S tokens case-insensitively with spaces
and hyphens taken as underscores: ``"Pectoral muscle"`` is
``pectoral_muscle``.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from .labels import class_token

#: At most this many polygon vertices in one GeoJSON file (a real export has far fewer).
MAX_VERTICES = 1_000_000
#: Coordinates must lie within +-COORDINATE_LIMIT pixels (and be finite).
COORDINATE_LIMIT = float(2**24)
#: At most this many (edge, row) crossings when filling one class: bounds the work per file.
MAX_CROSSINGS = 2**24
#: Crossings computed at once (bounds temporary memory to tens of MB).
CROSSINGS_PER_BLOCK = 1 << 20


@dataclass
class GeoJSONAnnotations:
    """Geometries of one GeoJSON file grouped by class token."""

    path: str
    geometries: dict[str, list] = field(default_factory=dict)
    #: classification names that are no CSAW-S class, with how many annotations had them
    unknown: dict[str, int] = field(default_factory=dict)
    unclassified: int = 0
    #: geometries that are not areas (points, lines), ignored
    not_areas: int = 0

    def warnings(self) -> list[str]:
        out = []
        if self.unknown:
            out.append("unknown class names in " + os.path.basename(self.path) + ": "
                       + ", ".join(f"{n!r} ({c})" for n, c in sorted(self.unknown.items())) + " (ignored)")
        if self.unclassified:
            out.append(f"{self.unclassified} annotation(s) without a class ignored")
        if self.not_areas:
            out.append(f"{self.not_areas} point or line annotation(s) ignored")
        return out


def _features(doc) -> list:
    if isinstance(doc, list):
        return doc
    if isinstance(doc, dict):
        if doc.get("type") == "FeatureCollection":
            return list(doc.get("features") or [])
        if doc.get("type") == "Feature":
            return [doc]
        if "features" in doc:
            return list(doc["features"] or [])
    raise ValueError("not a GeoJSON FeatureCollection, Feature or list of features")


def _class_name(props: dict) -> str | None:
    cls = props.get("classification")
    if isinstance(cls, dict):
        return cls.get("name")
    if isinstance(cls, str):
        return cls
    return props.get("class") or props.get("label")


def read_geojson(path: str | os.PathLike) -> GeoJSONAnnotations:
    """Read a QuPath GeoJSON export and group its area geometries by class token."""
    import shapely
    from shapely.geometry import shape as to_shape

    path = str(path)
    try:
        with open(path, "rb") as fh:
            doc = json.loads(fh.read().decode("utf-8"))
        features = _features(doc)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read GeoJSON ({' '.join(str(exc).split())})") from None
    result = GeoJSONAnnotations(path=path)
    grouped: dict[str, list] = defaultdict(list)
    unknown: dict[str, int] = defaultdict(int)
    vertices = 0
    for i, feat in enumerate(features):
        if not isinstance(feat, dict) or not isinstance(feat.get("geometry"), dict):
            raise InputError(f"{path}: feature {i} has no geometry")
        name = _class_name(feat.get("properties") or {})
        if not name:
            result.unclassified += 1
            continue
        token = class_token(str(name))
        if token is None or token == "background":
            unknown[str(name)] += 1
            continue
        try:
            geom = to_shape(feat["geometry"])
        except Exception as exc:  # noqa: BLE001 - shapely raises several types for bad geometry
            raise InputError(f"{path}: feature {i} ({name}) has an invalid geometry ({exc})") from None
        coords = shapely.get_coordinates(geom)
        vertices += len(coords)
        if vertices > MAX_VERTICES:
            raise InputError(f"{path}: more than {MAX_VERTICES} vertices (feature {i}); "
                             "not a plausible annotation export")
        if coords.size and not (np.isfinite(coords).all() and np.abs(coords).max() <= COORDINATE_LIMIT):
            bad = coords[~(np.isfinite(coords) & (np.abs(coords) <= COORDINATE_LIMIT))][0]
            raise InputError(f"{path}: feature {i} ({name}) has a coordinate {bad} that is not a finite "
                             f"pixel position within +-{COORDINATE_LIMIT:.0f}")
        areas = [g for g in _flatten(geom) if g.geom_type in ("Polygon", "MultiPolygon")]
        result.not_areas += sum(1 for g in _flatten(geom) if g.geom_type not in ("Polygon", "MultiPolygon"))
        for g in areas:
            if not g.is_valid:
                g = shapely.make_valid(g)
            grouped[token].append(g)
    result.geometries = dict(grouped)
    result.unknown = dict(unknown)
    return result


def _flatten(geom) -> list:
    if geom.geom_type == "GeometryCollection":
        return [g for part in geom.geoms for g in _flatten(part)]
    return [geom]


def _rings(geom) -> list[np.ndarray]:
    """All exterior and interior rings of the polygons in ``geom`` as (N, 2) xy arrays."""
    out = []
    stack = [geom]
    while stack:
        g = stack.pop()
        if g.is_empty:
            continue
        if g.geom_type == "Polygon":
            out.append(np.asarray(g.exterior.coords, dtype=np.float64))
            out.extend(np.asarray(r.coords, dtype=np.float64) for r in g.interiors)
        elif hasattr(g, "geoms"):
            stack.extend(g.geoms)
    return out


def fill_rings(rings: list[np.ndarray], shape: tuple[int, int], out: np.ndarray | None = None) -> np.ndarray:
    """Fill closed rings (x, y pixel coordinates) with the even-odd rule into a bool mask.

    Pixel ``(r, c)`` is inside when its centre ``(c + 0.5, r + 0.5)`` is
    inside. For every edge, the rows whose centre line it crosses are found
    at once (half-open in y, so a vertex on a centre line counts once), the
    crossing columns are toggled in a parity array, and a cumulative sum
    along each row turns the toggles into spans. Rings of disjoint polygons
    and their holes may be passed together.
    """
    height, width = shape
    mask = np.zeros(shape, dtype=bool) if out is None else out
    if not rings:
        return mask
    starts, ends = [], []
    for ring in rings:
        if len(ring) < 3:
            continue
        starts.append(ring)
        ends.append(np.roll(ring, -1, axis=0))
    if not starts:
        return mask
    p0 = np.concatenate(starts)
    p1 = np.concatenate(ends)
    y0, y1 = p0[:, 1], p1[:, 1]
    lo, hi = np.minimum(y0, y1), np.maximum(y0, y1)
    # rows r with lo <= r + 0.5 < hi
    r_start = np.clip(np.ceil(lo - 0.5), 0, height).astype(np.int64)
    r_stop = np.clip(np.ceil(hi - 0.5), 0, height).astype(np.int64)
    counts = np.maximum(r_stop - r_start, 0)
    total = int(counts.sum())
    if total == 0:
        return mask
    if total > MAX_CROSSINGS:
        raise ValueError(f"the outlines cross image rows {total} times, more than the limit of {MAX_CROSSINGS} "
                         "(a polygon with very many long spikes?)")
    used = counts > 0
    r_min, r_max = int(r_start[used].min()), int(r_stop[used].max())
    toggles = np.zeros((r_max - r_min, width + 1), dtype=np.uint8)
    # edges in blocks of at most CROSSINGS_PER_BLOCK row crossings: bounded temporary memory
    ends_cum = np.cumsum(counts)
    first = 0
    while first < len(p0):
        last = int(np.searchsorted(ends_cum, ends_cum[first] - counts[first] + CROSSINGS_PER_BLOCK, side="right"))
        last = max(last, first + 1)
        sl = slice(first, last)
        c = counts[sl]
        n = int(c.sum())
        first = last
        if n == 0:
            continue
        edge = np.repeat(np.arange(sl.start, sl.stop), c)
        offsets = np.arange(n) - np.repeat(np.cumsum(c) - c, c)
        rows = r_start[edge] + offsets
        yc = rows + 0.5
        x0, x1 = p0[edge, 0], p1[edge, 0]
        ya, yb = y0[edge], y1[edge]
        x = x0 + (yc - ya) * (x1 - x0) / (yb - ya)
        # pixel c is right of the crossing when c + 0.5 >= x
        cols = np.clip(np.ceil(x - 0.5), 0, width).astype(np.int64)
        np.add.at(toggles, (rows - r_min, cols), 1)
    inside = np.cumsum(toggles[:, :width], axis=1, dtype=np.uint8) & 1
    mask[r_min:r_max] |= inside.astype(bool)
    return mask


def rasterise_geometries(geometries: list, shape: tuple[int, int]) -> np.ndarray:
    """Rasterise area geometries (united first) into a bool mask of ``shape``."""
    import shapely

    if not geometries:
        return np.zeros(shape, dtype=bool)
    union = geometries[0] if len(geometries) == 1 else shapely.unary_union(geometries)
    return fill_rings(_rings(union), shape)


def rasterise_geojson(path: str | os.PathLike, shape: tuple[int, int]) -> tuple[dict[str, np.ndarray], list[str]]:
    """Read a QuPath GeoJSON file and rasterise it: ({class token: bool mask}, warnings)."""
    ann = read_geojson(path)
    try:
        masks = {token: rasterise_geometries(geoms, shape) for token, geoms in ann.geometries.items()}
    except ValueError as exc:
        raise InputError(f"{path}: {exc}") from None
    return masks, ann.warnings()


__all__ = [
    "COORDINATE_LIMIT",
    "CROSSINGS_PER_BLOCK",
    "fill_rings",
    "GeoJSONAnnotations",
    "MAX_CROSSINGS",
    "MAX_VERTICES",
    "rasterise_geojson",
    "rasterise_geometries",
    "read_geojson",
]
