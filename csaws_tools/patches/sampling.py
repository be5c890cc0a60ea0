"""Where crops and tiles go: class counts, centres drawn per class (paper appendix A.5), crop origins, tile grids."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from .. import defaults
from ..errors import InputError
from ..masks.classes import (
    ALL_CLASSES,
    class_names,
)
from ..masks.counting import count_ids

DEFAULT_SIZE = defaults.PATCH_SIZE
DEFAULT_PER_CLASS = defaults.PER_CLASS
TILE_DROPS = defaults.TILE_DROPS
NUM_CLASSES = len(ALL_CLASSES)
#: Standard ids -> names (background 0, cancer 1, ..., mammary_gland 11).
STANDARD_NAMES: list[str] = class_names("standard")
# --------------------------------------------------------------------------- sampling


def class_counts(mask: np.ndarray) -> np.ndarray:
    """Pixels per standard class id (length 12), :func:`~csaws_tools.masks.counting.count_ids`.

    A label map holding ids above 11 is not in the standard numbering: error.
    """
    counts = count_ids(mask, NUM_CLASSES)
    if counts.size > NUM_CLASSES:
        bad = int(np.flatnonzero(counts[NUM_CLASSES:])[0]) + NUM_CLASSES
        raise InputError(f"label map holds id {bad}; expected standard ids 0-11 (merge-masks output)")
    return counts


def image_rng(seed: int, image_id: str, class_id: int) -> np.random.Generator:
    """The random stream of one (seed, image, class): independent of worker count and order."""
    digest = hashlib.sha256(image_id.encode("utf-8")).digest()[:16]
    words = np.frombuffer(digest, dtype="<u4").tolist()
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(class_id), *words]))


def draw_centres(mask: np.ndarray, class_id: int, k: int, rng: np.random.Generator,
                 count: int | None = None) -> np.ndarray:
    """``k`` flat pixel indices drawn uniformly (with replacement) among the pixels equal to ``class_id``.

    Common classes: rejection sampling (expected ``k * size / count`` lookups).
    Rare classes (where that would cost more than a pass over the map, or
    rejection did not finish in a few rounds): ``np.flatnonzero`` then a choice.
    """
    flat = mask.reshape(-1)
    n = flat.size
    if count is None:
        count = int(np.count_nonzero(flat == class_id))
    if count == 0 or k <= 0:
        return np.empty(0, dtype=np.int64)
    expected = k * n / count
    if expected <= n / 32:
        hits: list[np.ndarray] = []
        got = 0
        for _ in range(8):
            draw = rng.integers(0, n, size=int(expected * 1.5) + 32)
            h = draw[flat[draw] == class_id]
            hits.append(h)
            got += h.size
            if got >= k:
                return np.concatenate(hits)[:k]
    where = np.flatnonzero(flat == class_id)
    return where[rng.integers(0, where.size, size=k)]


def crop_origin(centre: np.ndarray | int, length: int, size: int) -> np.ndarray:
    """First row (or column) of the crop around ``centre`` along an axis of ``length`` pixels.

    ``centre - size // 2`` shifted into ``[0, length - size]``; where
    ``length < size`` the image is centred in the crop: ``(length - size) // 2`` (negative).
    """
    centre = np.asarray(centre, dtype=np.int64)
    if length >= size:
        return np.clip(centre - size // 2, 0, length - size)
    return np.full(centre.shape, (length - size) // 2, dtype=np.int64)


def cut(arr: np.ndarray, top: int, left: int, size: int | tuple[int, int],
        out: np.ndarray | None = None) -> np.ndarray:
    """The ``size`` window of ``arr`` at (top, left); outside the array it is 0 (background)."""
    sh, sw = (size, size) if isinstance(size, (int, np.integer)) else size
    h, w = arr.shape
    if out is None:
        out = np.empty((sh, sw), dtype=arr.dtype)
    r0, r1 = max(top, 0), min(top + sh, h)
    c0, c1 = max(left, 0), min(left + sw, w)
    if r1 <= r0 or c1 <= c0:
        out.fill(0)
        return out
    if r0 - top or c0 - left or r1 - top < sh or c1 - left < sw:
        out.fill(0)
    out[r0 - top : r1 - top, c0 - left : c1 - left] = arr[r0:r1, c0:c1]
    return out


def sample_crops(mask: np.ndarray, *, image_id: str, size: int = DEFAULT_SIZE,
                 per_class: int = DEFAULT_PER_CLASS, classes: Sequence[int] | None = None,
                 seed: int = 0, counts: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Centres and crop origins for one label map: the index rows of its crops.

    Returns arrays ``class_id`` (int8), ``center_row``, ``center_col``,
    ``top``, ``left`` (int32), ``per_class`` rows per present class in
    increasing class id.
    """
    h, w = mask.shape
    if counts is None:
        counts = class_counts(mask)
    wanted = range(NUM_CLASSES) if classes is None else sorted(set(int(c) for c in classes))
    cls, flat = [], []
    for c in wanted:
        if counts[c]:
            idx = draw_centres(mask, c, per_class, image_rng(seed, image_id, c), int(counts[c]))
            cls.append(np.full(idx.size, c, dtype=np.int8))
            flat.append(idx)
    flat_all = np.concatenate(flat) if flat else np.empty(0, dtype=np.int64)
    rows, cols = np.divmod(flat_all, w)
    return {
        "class_id": np.concatenate(cls) if cls else np.empty(0, dtype=np.int8),
        "center_row": rows.astype(np.int32),
        "center_col": cols.astype(np.int32),
        "top": crop_origin(rows, h, size).astype(np.int32),
        "left": crop_origin(cols, w, size).astype(np.int32),
    }


def tile_grid(mask: np.ndarray, image: np.ndarray | None = None, *, size: int = DEFAULT_SIZE,
              drop: str = "background") -> dict[str, np.ndarray]:
    """Non-overlapping tiles from (0, 0), border tiles padded; index rows with ``class_id`` -1.

    ``drop``: ``"background"`` drops tiles whose label map is all background
    (the protocol), ``"black"`` those whose image is all 0, ``"none"`` keeps all.
    """
    if drop not in TILE_DROPS:
        raise ValueError(f"tile_drop must be one of {', '.join(TILE_DROPS)}, not {drop!r}")
    h, w = mask.shape
    tops, lefts = [], []
    for top in range(0, h, size):
        for left in range(0, w, size):
            if drop == "background" and not mask[top : top + size, left : left + size].any():
                continue
            if drop == "black" and image is not None and not image[top : top + size, left : left + size].any():
                continue
            tops.append(top)
            lefts.append(left)
    top_a = np.asarray(tops, dtype=np.int32)
    left_a = np.asarray(lefts, dtype=np.int32)
    return {
        "class_id": np.full(top_a.size, -1, dtype=np.int8),
        "center_row": top_a + size // 2,
        "center_col": left_a + size // 2,
        "top": top_a,
        "left": left_a,
    }


__all__ = [
    "class_counts",
    "crop_origin",
    "cut",
    "DEFAULT_PER_CLASS",
    "DEFAULT_SIZE",
    "draw_centres",
    "image_rng",
    "NUM_CLASSES",
    "sample_crops",
    "STANDARD_NAMES",
    "TILE_DROPS",
    "tile_grid",
]
