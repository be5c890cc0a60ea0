"""The per-image worker of the patches stage: decode, sample, cut and compress in the worker process."""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import defaults
from ..errors import one_line
from ..execution.tasks import Task
from .h5format import chunk_shape
from .inputs import read_pair
from .sampling import (
    DEFAULT_PER_CLASS,
    DEFAULT_SIZE,
    NUM_CLASSES,
    STANDARD_NAMES,
    class_counts,
    cut,
    sample_crops,
    tile_grid,
)

# --------------------------------------------------------------------------- workers


@dataclass(frozen=True)
class PatchConfig:
    """Everything a worker needs (picklable)."""

    size: int = DEFAULT_SIZE
    per_class: int = DEFAULT_PER_CLASS
    classes: tuple[int, ...] | None = None
    seed: int = 0
    tiles: bool = False
    tile_drop: str = defaults.TILE_DROP
    layout: str = "crops"
    compression: str = "gzip"
    level: int | None = 1

    @property
    def direct(self) -> bool:
        """Whether workers make the stored chunks themselves (no HDF5 filter work in the writer)."""
        return self.compression in ("gzip", "none")


@dataclass
class Payload:
    """What a worker hands to the writer for one image."""

    order: int
    image_id: str
    index: dict[str, np.ndarray]
    shape: tuple[int, int]
    image_chunks: list[bytes] | None = None
    mask_chunks: list[bytes] | None = None
    image: np.ndarray | None = None
    mask: np.ndarray | None = None
    failure: str | None = None

    @property
    def nbytes(self) -> int:
        n = sum(len(b) for b in (self.image_chunks or [])) + sum(len(b) for b in (self.mask_chunks or []))
        for a in (self.image, self.mask):
            n += 0 if a is None else a.nbytes
        return n


def _encode(chunk: np.ndarray, config: PatchConfig, labels: bool = False) -> bytes:
    """One stored chunk: raw bytes, or a zlib stream as HDF5's deflate filter writes and reads it.

    Label maps use zlib's run-length strategy: as fast, about half the bytes
    (long runs of one id); images the default strategy, which compresses
    real radiographs far better than run-length alone.
    """
    raw = chunk.tobytes()
    if config.compression != "gzip":
        return raw
    comp = zlib.compressobj(-1 if config.level is None else config.level, zlib.DEFLATED, 15, 8, zlib.Z_RLE if labels else zlib.Z_DEFAULT_STRATEGY)
    return comp.compress(raw) + comp.flush()


def process_image(image_id: str, image: np.ndarray, mask: np.ndarray, config: PatchConfig,
                  order: int = 0) -> tuple[dict, Payload]:
    """Sample (or tile) one image and prepare what the writer stores: (manifest row, payload)."""
    t0 = time.perf_counter()
    counts = class_counts(mask)
    if config.tiles:
        index = tile_grid(mask, image, size=config.size, drop=config.tile_drop)
    else:
        index = sample_crops(mask, image_id=image_id, size=config.size, per_class=config.per_class,
                             classes=config.classes, seed=config.seed, counts=counts)
    s = config.size
    n = index["top"].size
    pixel_counts = np.zeros(NUM_CLASSES, dtype=np.int64)
    img_buf = np.empty((s, s), dtype=np.uint8)
    msk_buf = np.empty((s, s), dtype=np.uint8)
    image_chunks: list[bytes] = []
    mask_chunks: list[bytes] = []
    for top, left in zip(index["top"].tolist(), index["left"].tolist()):
        m = cut(mask, top, left, s, msk_buf)
        pixel_counts += np.bincount(m.reshape(-1), minlength=NUM_CLASSES)
        if config.direct and config.layout == "crops":
            mask_chunks.append(_encode(m, config, labels=True))
            image_chunks.append(_encode(cut(image, top, left, s, img_buf), config))
    if config.direct and config.layout == "index":
        ch, cw = chunk_shape(mask.shape, s)
        for top in range(0, mask.shape[0], ch):
            for left in range(0, mask.shape[1], cw):
                image_chunks.append(_encode(cut(image, top, left, (ch, cw), img_buf[:ch, :cw]), config))
                mask_chunks.append(_encode(cut(mask, top, left, (ch, cw), msk_buf[:ch, :cw]), config, labels=True))
    from ..splits import patient_of

    per_class_crops = np.bincount(index["class_id"][index["class_id"] >= 0].astype(np.int64),
                                  minlength=NUM_CLASSES)
    row: dict[str, Any] = {
        "image_id": image_id,
        "patient_id": patient_of(image_id),
        "height": int(mask.shape[0]),
        "width": int(mask.shape[1]),
        "n_crops": int(n),
        "padded": bool(mask.shape[0] < s or mask.shape[1] < s),
    }
    if not config.tiles:
        row.update({f"n_{name}": int(per_class_crops[i]) for i, name in enumerate(STANDARD_NAMES)})
    row["pixels"] = pixel_counts.tolist()
    payload = Payload(order=order, image_id=image_id, index=index, shape=tuple(mask.shape),
                      image_chunks=image_chunks if config.direct else None,
                      mask_chunks=mask_chunks if config.direct else None,
                      image=None if config.direct else image, mask=None if config.direct else mask)
    row["sample_seconds"] = time.perf_counter() - t0
    return row, payload


@dataclass(frozen=True)
class PatchArgs:
    """One image's own settings for the patches stage."""

    #: the image's place in image-id order (the writer keeps that order in the file)
    order: int
    image_id: str
    #: the image's label map
    mask: str


def patch_worker(task: Task[PatchArgs], config: PatchConfig) -> tuple[dict, Payload]:
    """Batch worker: read one image/label-map pair and prepare its crops.

    Failures are handed to the writer as a payload (so that it keeps the
    image-id order), which turns them into the row's error.
    """
    order = int(task.args.order)
    image_id = task.args.image_id
    try:
        image, mask = read_pair(Path(task.source), Path(task.args.mask))
        return process_image(image_id, image, mask, config, order)
    except Exception as exc:  # noqa: BLE001 - recorded as this image's error by the writer
        failure = one_line(exc)
        return ({"image_id": image_id},
                Payload(order=order, image_id=image_id, index={}, shape=(0, 0), failure=failure))


__all__ = [
    "patch_worker",
    "PatchArgs",
    "PatchConfig",
    "Payload",
    "process_image",
]
