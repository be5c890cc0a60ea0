"""Pixels per label id, the one blocked ``np.bincount`` merge, stats and patches use."""

from __future__ import annotations

import numpy as np

__all__ = ["count_ids"]


def count_ids(labels: np.ndarray, n_classes: int, block_pixels: int = 1 << 20) -> np.ndarray:
    """Pixel count per id (``np.bincount``), in blocks so memory stays well under one image copy.

    The result has at least ``n_classes`` entries; more when the map holds
    larger values.
    """
    flat = np.asarray(labels).reshape(-1)
    counts = np.zeros(n_classes, dtype=np.int64)
    for start in range(0, flat.size, block_pixels):
        c = np.bincount(flat[start : start + block_pixels], minlength=n_classes)
        if len(c) > len(counts):
            counts = np.pad(counts, (0, len(c) - len(counts)))
        counts[: len(c)] += c
    return counts
