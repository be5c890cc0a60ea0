"""Class-centred training crops and test tiles into one HDF5 file (protocol section 4).

Training crops (paper appendix A.5): for every image and every class present
in its label map, ``per_class`` centres are drawn uniformly among that
class's pixels (independently, with replacement: a class with fewer pixels
than ``per_class`` gives repeated centres), and one ``size`` x ``size`` crop
is cut around each. Near the border the crop is shifted to stay inside the
image (as the original scripts did); along an axis where the image is
smaller than the crop, the image is centred in the crop and padded with
background (0), and ``top``/``left`` are negative.

Test tiles (``tiles=True``): non-overlapping tiles from the top-left corner,
border tiles padded with background, tiles whose image is all black dropped
(``tile_drop="black"``, the protocol's evaluation tiles; ``"background"``
drops tiles whose label map is all background instead, which on consensus
maps keeps only tiles with cancer); ``top``/``left`` say where each goes so
that predictions stitch back (:func:`csaws_tools.reader.stitch`).

Speed: class counts with one ``np.bincount``; centres by rejection sampling
(draw random pixels, keep those of the class) for common classes and
``np.flatnonzero`` for rare ones, never a Python loop over pixels. Each
image gets its own random stream derived from (seed, image id, class), so
the file does not depend on the number of workers or their order.

Workers decode, sample, cut and (for gzip) compress every chunk; the main
process is the only HDF5 writer and appends the ready chunks in image-id
order. The file is written under a temporary name and renamed when complete.
The HDF5 layout is documented in ``docs/patches.md``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .atomic import atomic_path, remove_stale_temporaries
from .batch import (
    BatchResult,
    Task,
    escape_text,
    inputs_hash,
    needs_escape,
    read_manifest,
    run_batch,
    settings_hash,
    write_manifest,
)
from .classes import ALL_CLASSES, class_ids, class_names, labels_json, split_mask_stem
from .errors import DependencyError, InputError, OutputError, SettingsError, one_line

FORMAT = "csaws-patches/1"
DEFAULT_SIZE = 512
DEFAULT_PER_CLASS = 10
LAYOUTS = ("crops", "index")
COMPRESSIONS = ("gzip", "lzf", "zstd", "none")
#: Default levels: gzip 1 writes twice as fast as gzip 4 for a few percent more bytes
#: (benchmarks/bench_patches.py); zstd 3 is the Zstandard default.
DEFAULT_LEVELS = {"gzip": 1, "zstd": 3}
TILE_DROPS = ("background", "black", "none")
NUM_CLASSES = len(ALL_CLASSES)
#: Standard ids -> names (background 0, cancer 1, ..., mammary_gland 11).
STANDARD_NAMES: list[str] = class_names("standard")
INDEX_FIELDS = ("image_id", "patient_id", "class_id", "center_row", "center_col", "top", "left", "source")
#: Results waiting to be written in image-id order are flushed out of order beyond this many bytes.
REORDER_BUFFER_BYTES = 2 << 30


# --------------------------------------------------------------------------- sampling


def class_counts(mask: np.ndarray) -> np.ndarray:
    """Pixels per standard class id (length 12) in one ``np.bincount``.

    A label map holding ids above 11 is not in the standard numbering: error.
    """
    # In blocks of rows: bincount casts to intp, a full-map cast would be 8 copies of the map.
    rows = max(1, (1 << 20) // max(mask.shape[1], 1))
    counts = np.zeros(NUM_CLASSES, dtype=np.int64)
    for start in range(0, mask.shape[0], rows):
        part = np.bincount(mask[start : start + rows].ravel(), minlength=NUM_CLASSES)
        if part.size > counts.size:
            counts = np.concatenate([counts, np.zeros(part.size - counts.size, dtype=np.int64)])
        counts[: part.size] += part
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


# --------------------------------------------------------------------------- inputs


def _index_pngs(folder: Path, what: str) -> tuple[dict[str, Path], list[str]]:
    """id -> path for the PNGs under ``folder`` (class masks and hidden files passed over)."""
    found: dict[str, Path] = {}
    dups: list[str] = []
    for path in sorted(folder.rglob("*.png")):
        if path.name.startswith("."):
            continue
        if split_mask_stem(path.stem)[1] is not None:
            continue
        if needs_escape(str(path)):
            dups.append(f"{escape_text(str(path))} found: its name is not valid UTF-8 and cannot be stored as an "
                        "image id; rename it")
            continue
        if path.stem in found:
            dups.append(f"{what} {path.stem} found twice: {found[path.stem]} and {path}; pass a narrower folder")
            continue
        found[path.stem] = path
    return found, dups


def pair_inputs(images: str | os.PathLike, masks: str | os.PathLike,
                image_ids: Iterable[str] | None = None) -> tuple[list[tuple[str, Path, Path]], list[dict]]:
    """Match images and label maps by image id; return (pairs sorted by id, error rows).

    Every image without a label map, label map without an image, or id of
    ``image_ids`` found nowhere is one error row.
    """
    images, masks = Path(images), Path(masks)
    for folder, what in ((images, "images"), (masks, "masks")):
        if not folder.is_dir():
            raise InputError(f"{folder}: {what} folder not found")
    check_input_folders(images, masks)
    img_map, dup_i = _index_pngs(images, "image")
    mask_map, dup_m = _index_pngs(masks, "label map")
    errors = [{"source": d.split(" found")[0], "status": "error", "error": d} for d in dup_i + dup_m]
    if image_ids is not None:
        wanted = sorted(set(image_ids))
    else:
        wanted = sorted(set(img_map) | set(mask_map))
    pairs = []
    for image_id in wanted:
        ip, mp = img_map.get(image_id), mask_map.get(image_id)
        if ip is not None and mp is not None:
            pairs.append((image_id, ip, mp))
            continue
        if ip is None and mp is None:
            msg = f"image {image_id} (selected by the split) found neither under {images} nor under {masks}"
            src = image_id
        elif mp is None:
            msg, src = f"no label map {image_id}.png under {masks}", str(ip)
        else:
            msg, src = f"no image {image_id}.png under {images} for this label map", str(mp)
        errors.append({"source": src, "status": "error", "error": msg, "image_id": image_id})
    return pairs, errors


def check_input_folders(images: Path, masks: Path) -> None:
    """Stop with one line on the usual mix-ups: a map folder holding both splits, DICOM instead of PNG."""
    if (masks / "trainval").is_dir() and (masks / "test").is_dir():
        raise SettingsError(f"{masks}: holds both trainval and test label maps; pass {masks / 'trainval'} "
                            f"for training crops or {masks / 'test' / 'consensus'} for test tiles")
    if next(_pngs(images), None) is None:
        dicom = next((p for p in images.rglob("*") if p.suffix.lower() in (".dcm", ".dicom")
                      or (p.is_file() and _is_dicom(p))), None)
        if dicom is not None:
            raise SettingsError(f"{images}: holds DICOM files ({dicom.name}), not PNG images; pass the PNG "
                                "folder (the release's CsawS/anonymized_dataset, or the output of dicom2png)")


def _pngs(folder: Path):
    return (p for p in folder.rglob("*.png") if not p.name.startswith("."))


def _is_dicom(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return head[128:132] == b"DICM"


def check_standard_maps(folder: str | os.PathLike) -> None:
    """Refuse label maps that are not in the standard numbering with all 12 classes.

    ``merge-masks`` writes ``labels.json`` beside its outputs; it is looked for
    in ``folder`` and its two parents (``MAPS/trainval``, ``MAPS/test/consensus``).
    Crops store the standard ids (background 0 pads the borders) and label
    schemes are applied on reading, so maps written with ``--numbering release``
    (cancer 0, background 11) or with a ``--labels`` scheme would be silently
    misread. Folders without a ``labels.json`` are taken to be standard.
    """
    from .stats import find_labels_json

    path = find_labels_json(folder, max_up=2)
    if path is None:
        return
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if not isinstance(doc, dict) or "numbering" not in doc:
        return
    if doc.get("numbering") != "standard":
        raise InputError(f"{path}: the label maps use the {doc.get('numbering')!r} numbering; crops need the "
                         "standard one (background 0, cancer 1, ...): rerun merge-masks without --numbering")
    spec = (doc.get("scheme") or {}).get("spec", "all") if isinstance(doc.get("scheme"), dict) else "all"
    if spec != "all":
        raise InputError(f"{path}: the label maps were written with label scheme {spec!r}; crops store all 12 "
                         "classes and apply a scheme on reading: rerun merge-masks without --labels")


def parse_classes(classes: Iterable[str | int] | str | None) -> list[int] | None:
    """Class names or standard ids (``"cancer,skin"``, ``[1, 6]``) to sorted standard ids; None = all."""
    if classes is None:
        return None
    if isinstance(classes, str):
        classes = [c for c in classes.split(",") if c.strip()]
    ids = class_ids("standard")
    out = set()
    for c in classes:
        text = str(c).strip()
        if text.lstrip("-").isdigit():
            value = int(text)
            if not 0 <= value < NUM_CLASSES:
                raise InputError(f"class id {value} out of range 0-11 (standard numbering)")
            out.add(value)
        elif text in ids:
            out.add(ids[text])
        else:
            raise InputError(f"unknown class {text!r}; expected one of {', '.join(ALL_CLASSES)} or ids 0-11")
    if not out:
        raise InputError("no classes given")
    return sorted(out)


def read_pair(image_path: Path, mask_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read an 8-bit image (first channel of RGB) and its label map; check they match."""
    from .limits import check_pixels
    from .png import png_size, read_png

    try:  # headers are checked against the pixel limit before decoding
        check_pixels(png_size(image_path), image_path)
        image = read_png(image_path)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"cannot read image {image_path.name}: {one_line(exc)}") from None
    try:
        check_pixels(png_size(mask_path), mask_path)
        mask = read_png(mask_path)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"cannot read label map {mask_path}: {one_line(exc)}") from None
    if image.ndim == 3:
        image = np.ascontiguousarray(image[:, :, 0])
    if image.dtype != np.uint8:
        raise InputError(f"image {image_path.name} is {image.dtype.itemsize * 8}-bit; patches stores 8-bit images")
    if mask.ndim != 2 or mask.dtype != np.uint8:
        raise InputError(f"label map {mask_path} is not a single-channel 8-bit PNG")
    if image.shape != mask.shape:
        raise InputError(
            f"size mismatch: image {image_path.name} is {image.shape[0]}x{image.shape[1]} but label map "
            f"{mask_path.name} is {mask.shape[0]}x{mask.shape[1]}"
        )
    return image, np.ascontiguousarray(mask)


# --------------------------------------------------------------------------- workers


@dataclass(frozen=True)
class PatchConfig:
    """Everything a worker needs (picklable)."""

    size: int = DEFAULT_SIZE
    per_class: int = DEFAULT_PER_CLASS
    classes: tuple[int, ...] | None = None
    seed: int = 0
    tiles: bool = False
    tile_drop: str = "black"
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
    comp = zlib.compressobj(config.level, zlib.DEFLATED, 15, 8, zlib.Z_RLE if labels else zlib.Z_DEFAULT_STRATEGY)
    return comp.compress(raw) + comp.flush()


def chunk_shape(shape: tuple[int, int], size: int) -> tuple[int, int]:
    """The chunk shape of a full image in the index layout: crop-sized, at most the image."""
    return (min(size, shape[0]), min(size, shape[1]))


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
    image_chunks: list[bytes] | None = [] if config.direct else None
    mask_chunks: list[bytes] | None = [] if config.direct else None
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
    from .splits import patient_of

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
                      image_chunks=image_chunks, mask_chunks=mask_chunks,
                      image=None if config.direct else image, mask=None if config.direct else mask)
    row["sample_seconds"] = time.perf_counter() - t0
    return row, payload


def patch_worker(task: Task, config: PatchConfig) -> tuple[dict, Payload]:
    """Batch worker: read one image/label-map pair and prepare its crops.

    Failures are handed to the writer as a payload (so that it keeps the
    image-id order), which turns them into the row's error.
    """
    order = int(task.args["order"])
    image_id = task.args["image_id"]
    try:
        image, mask = read_pair(Path(task.source), Path(task.args["mask"]))
        return process_image(image_id, image, mask, config, order)
    except Exception as exc:  # noqa: BLE001 - recorded as this image's error by the writer
        failure = one_line(exc)
        return ({"image_id": image_id},
                Payload(order=order, image_id=image_id, index={}, shape=(0, 0), failure=failure))


# --------------------------------------------------------------------------- writer


def _filter_kwargs(compression: str, level: int | None) -> dict:
    if compression == "gzip":
        return {"compression": "gzip", "compression_opts": level}
    if compression == "lzf":
        return {"compression": "lzf"}
    if compression == "zstd":
        try:
            import hdf5plugin
        except ImportError:
            raise DependencyError("--compression zstd needs hdf5plugin: pip install 'csaws-tools[zstd]'") from None
        return dict(hdf5plugin.Zstd(clevel=level))
    if compression == "none":
        return {}
    raise InputError(f"unknown compression {compression!r}; expected one of {', '.join(COMPRESSIONS)}")


class PatchWriter:
    """The single HDF5 writer: appends payloads in image order, then the index and attributes."""

    def __init__(self, path: Path, config: PatchConfig, max_buffer_bytes: int = REORDER_BUFFER_BYTES):
        import h5py

        self.config = config
        self.filters = _filter_kwargs(config.compression, config.level)
        self.h5 = h5py.File(path, "w", libver=("v110", "latest"))
        s = config.size
        if config.layout == "crops":
            for name in ("images", "masks"):
                self.h5.create_dataset(name, shape=(0, s, s), maxshape=(None, s, s), dtype="u1",
                                       chunks=(1, s, s), **self.filters)
        else:
            self.h5.create_group("full/images")
            self.h5.create_group("full/masks")
        self.index: dict[str, list[np.ndarray]] = {f: [] for f in INDEX_FIELDS}
        self.n = 0
        self.sources: list[str] = []
        self.next_order = 0
        self.pending: dict[int, Payload | None] = {}
        self.pending_bytes = 0
        self.max_buffer_bytes = max_buffer_bytes
        self.in_order = True

    # Results arrive in completion order; they are written in task (image id) order.
    def add(self, payload: Payload) -> None:
        """Queue one payload (or a failure) and write everything that is now in order."""
        self.pending[payload.order] = None if payload.failure else payload
        self.pending_bytes += payload.nbytes
        self._drain()
        while self.pending_bytes > self.max_buffer_bytes and self.pending:
            self.in_order = False
            self._write_order(min(self.pending))

    def _drain(self) -> None:
        while self.next_order in self.pending:
            self._write_order(self.next_order)

    def _write_order(self, order: int) -> None:
        payload = self.pending.pop(order)
        self.next_order = max(self.next_order, order + 1)
        if payload is not None:
            self.pending_bytes -= payload.nbytes
            self._write(payload)

    def _write(self, p: Payload) -> None:
        from .splits import patient_of

        s = self.config.size
        k = p.index["top"].size
        source = len(self.sources)
        if self.config.layout == "crops":
            imgs, msks = self.h5["images"], self.h5["masks"]
            imgs.resize(self.n + k, axis=0)
            msks.resize(self.n + k, axis=0)
            if p.image_chunks is not None:
                for j in range(k):
                    imgs.id.write_direct_chunk((self.n + j, 0, 0), p.image_chunks[j])
                    msks.id.write_direct_chunk((self.n + j, 0, 0), p.mask_chunks[j])
            else:
                ib = np.empty((s, s), np.uint8)
                mb = np.empty((s, s), np.uint8)
                for j, (top, left) in enumerate(zip(p.index["top"].tolist(), p.index["left"].tolist())):
                    imgs[self.n + j] = cut(p.image, top, left, s, ib)
                    msks[self.n + j] = cut(p.mask, top, left, s, mb)
        else:
            key = f"{source:06d}"
            cs = chunk_shape(p.shape, s)
            for group, chunks, arr in (("full/images", p.image_chunks, p.image),
                                       ("full/masks", p.mask_chunks, p.mask)):
                ds = self.h5[group].create_dataset(key, shape=p.shape, dtype="u1", chunks=cs, **self.filters)
                ds.attrs["image_id"] = p.image_id
                if chunks is not None:
                    offsets = [(r, c) for r in range(0, p.shape[0], cs[0]) for c in range(0, p.shape[1], cs[1])]
                    for off, data in zip(offsets, chunks):
                        ds.id.write_direct_chunk(off, data)
                else:
                    ds[...] = arr
        self.index["image_id"].append(np.full(k, p.image_id, dtype=object))
        self.index["patient_id"].append(np.full(k, patient_of(p.image_id), dtype=object))
        for f in ("class_id", "center_row", "center_col", "top", "left"):
            self.index[f].append(p.index[f])
        self.index["source"].append(np.full(k, source, dtype=np.int32))
        self.sources.append(p.image_id)
        self.n += k

    def close(self, attrs: dict) -> None:
        """Write what is still queued, the index datasets and the root attributes; close the file."""
        import h5py

        for order in sorted(self.pending):
            self._write_order(order)
        str_t = h5py.string_dtype("utf-8")
        dtypes = {"image_id": str_t, "patient_id": str_t, "class_id": np.int8, "center_row": np.int32,
                  "center_col": np.int32, "top": np.int32, "left": np.int32, "source": np.int32}
        grp = self.h5.create_group("index")
        for f in INDEX_FIELDS:
            parts = self.index[f]
            data = np.concatenate(parts) if parts else np.empty(0, dtype=object if dtypes[f] is str_t else dtypes[f])
            if dtypes[f] is str_t:
                data = data.astype(object)
            grp.create_dataset(f, data=data, dtype=dtypes[f], compression="gzip" if data.size else None)
        self.h5.create_dataset("sources", data=np.asarray(self.sources, dtype=object), dtype=str_t)
        attrs = dict(attrs, n_patches=self.n, n_images=len(self.sources),
                     image_order="sorted" if self.in_order else "arrival")
        for key, value in attrs.items():
            self.h5.attrs[key] = value
        self.h5.attrs["complete"] = True
        self.h5.close()

    def abort(self) -> None:
        try:
            self.h5.close()
        except Exception:  # noqa: BLE001
            pass


# --------------------------------------------------------------------------- API


@dataclass
class PatchesResult(BatchResult):
    """A :class:`~csaws_tools.batch.BatchResult` plus the file written and its crop statistics."""

    output: Path | None = None
    crops_per_class: dict[str, int] = field(default_factory=dict)
    pixel_share: dict[str, float] = field(default_factory=dict)
    n_patches: int = 0
    up_to_date: bool = False

    def statistics_table(self) -> str:
        """Crops per centre class and pixel share per class, one line per class."""
        lines = [f"{'class':<22}{'crops':>8}{'pixel share':>14}"]
        for name in STANDARD_NAMES:
            crops = self.crops_per_class.get(name, "-") if self.crops_per_class else "-"
            lines.append(f"{name:<22}{crops:>8}{100 * self.pixel_share.get(name, 0.0):>13.3f}%")
        return "\n".join(lines)


def manifest_path_for(out: str | os.PathLike) -> Path:
    """``patches.h5`` -> ``patches.manifest.parquet`` beside it."""
    out = Path(out)
    return out.with_name(f"{out.stem}.manifest.parquet")


def read_file_attrs(path: str | os.PathLike) -> dict | None:
    """Root attributes of a complete patches file, or None when missing, partial or unreadable."""
    import h5py

    try:
        with h5py.File(path, "r") as h5:
            attrs = dict(h5.attrs)
    except (OSError, ValueError):
        return None
    return attrs if attrs.get("complete") and attrs.get("format") == FORMAT else None


def write_patches(
    images: str | os.PathLike,
    masks: str | os.PathLike,
    out: str | os.PathLike,
    *,
    size: int = DEFAULT_SIZE,
    per_class: int = DEFAULT_PER_CLASS,
    classes: Iterable[str | int] | str | None = None,
    seed: int = 0,
    tiles: bool = False,
    tile_drop: str = "black",
    image_ids: Iterable[str] | None = None,
    splits: dict | str | os.PathLike | None = None,
    split: str | None = None,
    repetition: int | None = None,
    layout: str = "crops",
    compression: str = "gzip",
    level: int | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    fail_fast: bool = False,
    progress: bool = True,
    scheduler: str | None = None,
    batch_size: int | None = None,
) -> PatchesResult:
    """Write class-centred crops (or test tiles) of every image/label-map pair into ``out`` (HDF5).

    ``images``/``masks``: folders searched recursively, matched by image id
    (file stem). ``splits`` + ``split`` (+ ``repetition``) pick the images
    from a splits file (:mod:`csaws_tools.splits`); ``image_ids`` picks them
    directly. A Parquet manifest (one row per image) is written beside
    ``out``. An existing complete file made with the same settings is kept
    unless ``overwrite``.
    """
    out = Path(out)
    if size < 1 or per_class < 1:
        raise InputError("--size and --per-class must be positive")
    if layout not in LAYOUTS:
        raise InputError(f"unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
    if compression not in COMPRESSIONS:
        raise InputError(f"unknown compression {compression!r}; expected one of {', '.join(COMPRESSIONS)}")
    if tile_drop not in TILE_DROPS:
        raise InputError(f"unknown tile drop rule {tile_drop!r}; expected one of {', '.join(TILE_DROPS)}")
    if int(seed) < 0:
        raise InputError(f"seed must be a non-negative integer, not {seed}")
    if level is None:
        level = DEFAULT_LEVELS.get(compression)
    if compression == "gzip" and not 0 <= level <= 9:
        raise InputError(f"gzip level must be 0-9, not {level}")
    _filter_kwargs(compression, level)  # clear error now when hdf5plugin is missing
    class_list = parse_classes(classes)
    check_standard_maps(masks)
    if splits is not None:
        if split is None:
            raise InputError("a splits file needs --split (train, val, trainval, test or a subset size)")
        from .splits import select_images

        selected = select_images(splits, split, repetition)
        image_ids = selected if image_ids is None else sorted(set(selected) & set(image_ids))
    if image_ids is not None:
        image_ids = list(image_ids)
        if not image_ids:
            raise InputError("no images selected (empty split or id list)")
    pairs, error_rows = pair_inputs(images, masks, image_ids)
    if not pairs and not error_rows:
        raise InputError(f"no images found under {images} (PNG files that are not class masks)")
    if out.suffix.lower() not in (".h5", ".hdf5"):
        raise OutputError(f"{out}: the output should be an .h5 or .hdf5 file")
    if out.exists() and out.is_dir():
        raise OutputError(f"{out} is a folder; give a file name such as patches.h5")

    config = PatchConfig(size=int(size), per_class=int(per_class),
                         classes=None if class_list is None else tuple(class_list), seed=int(seed),
                         tiles=bool(tiles), tile_drop=tile_drop, layout=layout, compression=compression,
                         level=level)
    ids_digest = hashlib.sha256("\n".join(p[0] for p in pairs).encode("utf-8", "surrogateescape")).hexdigest()[:16]
    # the file covers every input's identity: an edited image or label map makes it stale
    inputs = inputs_hash([p for _, ip, mp in pairs for p in (ip, mp)])
    settings = {
        "kind": "tiles" if tiles else "crops", "size": config.size,
        "per_class": None if tiles else config.per_class,
        "classes": None if tiles else class_list, "seed": None if tiles else config.seed,
        "tile_drop": tile_drop if tiles else None, "layout": layout, "compression": compression,
        "level": level, "split": split, "repetition": repetition, "images": len(pairs), "image_ids_sha256": ids_digest,
        "inputs_identity": inputs,
    }
    shash = settings_hash(settings)
    manifest = manifest_path_for(out)

    remove_stale_temporaries(out.parent, name=out.name, recursive=False)
    remove_stale_temporaries(out.parent, name=manifest.name, recursive=False)
    meta = {"settings": settings, "settings_hash": shash, "tool_version": __version__, "shard": None}
    existing = None if overwrite else read_file_attrs(out)
    if existing is not None and existing.get("settings_hash") == shash and int(existing.get("n_failed", 1)) == 0 \
            and not error_rows:
        rows = [{"source": str(ip), "output": str(out), "status": "skipped", "error": None, "image_id": i}
                for i, ip, _ in pairs]
        if _manifest_hash(manifest) != shash:  # a run killed between the file and its manifest
            for r in rows:
                r.update(settings_hash=shash, tool_version=__version__)
            _write_manifest(manifest, rows, meta)
        return PatchesResult(rows=rows, manifest=manifest, output=out,
                             crops_per_class=json.loads(existing.get("crops_per_class", "{}")),
                             pixel_share=json.loads(existing.get("pixel_share", "{}")),
                             n_patches=int(existing.get("n_patches", 0)), up_to_date=True)

    tasks = [Task(key=image_id, source=str(ip), output=None,
                  args={"order": k, "image_id": image_id, "mask": str(mp)})
             for k, (image_id, ip, mp) in enumerate(pairs)]
    for r in error_rows:
        r.setdefault("output", str(out))

    try:
        with atomic_path(out) as tmp:
            result, stats = _write_file(tmp, out, tasks, config, settings, shash, class_list, split, repetition,
                                        manifest=None, workers=workers, fail_fast=fail_fast, progress=progress,
                                        scheduler=scheduler, batch_size=batch_size, error_rows=error_rows)
    except _Stopped as stop:  # interrupted: the temporary file is removed, nothing looks complete
        return PatchesResult(rows=stop.result.rows, manifest=None, interrupted=True, output=None,
                             seconds=stop.result.seconds)
    except OSError as exc:
        raise OutputError(f"{out}: cannot write the patches file ({exc.strerror or one_line(exc)})") from None
    # the manifest describes the file: written only once the file is in place
    _write_manifest(manifest, result.rows, meta)
    return PatchesResult(rows=result.rows, manifest=manifest, output=out, seconds=result.seconds, **stats)


def _manifest_hash(path: Path) -> str | None:
    """The settings hash recorded in a manifest's metadata, or None when missing or unreadable."""
    if not path.is_file():
        return None
    try:
        return read_manifest(path).attrs.get("csaws_tools", {}).get("settings_hash")
    except Exception:  # noqa: BLE001 - an unreadable manifest is rewritten
        return None


def _write_manifest(path: Path, rows: list[dict], meta: dict) -> None:
    try:
        write_manifest(path, rows, meta)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write the manifest ({exc.strerror or one_line(exc)})") from None


class _Stopped(Exception):
    def __init__(self, result: BatchResult):
        super().__init__("interrupted")
        self.result = result


def _write_file(tmp: Path, out: Path, tasks: list[Task], config: PatchConfig, settings: dict, shash: str,
                class_list: list[int] | None, split: str | None, repetition: int | None, *,
                manifest: Path | None, workers: int | None, fail_fast: bool, progress: bool,
                scheduler: str | None, batch_size: int | None, error_rows: list[dict]) -> tuple[BatchResult, dict]:
    """Run the workers and write the HDF5 file at ``tmp``; return the batch result and crop statistics."""
    pixels = np.zeros(NUM_CLASSES, dtype=np.int64)
    crops = np.zeros(NUM_CLASSES, dtype=np.int64)
    tiles = config.tiles
    writer = PatchWriter(tmp, config)
    try:
        def on_result(row: dict, payload: Payload) -> None:
            row["output"] = str(out)
            writer.add(payload)
            if payload.failure:
                raise InputError(payload.failure)
            pixels[:] += np.asarray(row.pop("pixels"), dtype=np.int64)
            if not tiles:
                crops[:] += [row[f"n_{name}"] for name in STANDARD_NAMES]

        result = run_batch(tasks, functools.partial(patch_worker, config=config), manifest=manifest,
                           settings=settings, workers=workers, fail_fast=fail_fast, progress=progress,
                           label="cutting tiles" if tiles else "cutting patches",
                           scheduler=scheduler, batch_size=batch_size, on_result=on_result,
                           extra_rows=error_rows)
        if result.interrupted:
            raise _Stopped(result)
        for row in result.rows:
            row.pop("pixels", None)
        total = int(pixels.sum())
        share = {name: (float(pixels[i]) / total if total else 0.0) for i, name in enumerate(STANDARD_NAMES)}
        per_class_crops = {} if tiles else {name: int(crops[i]) for i, name in enumerate(STANDARD_NAMES)}
        level = config.level
        attrs = {
            "format": FORMAT,
            "kind": "tiles" if tiles else "crops",
            "layout": config.layout,
            "labels": labels_json("standard"),
            "numbering": "standard",
            "patch_size": config.size,
            "per_class": -1 if tiles else config.per_class,
            "classes": json.dumps(class_list if class_list is not None else list(range(NUM_CLASSES))),
            "seed": -1 if tiles else config.seed,
            "split": split or "",
            "repetition": -1 if repetition is None else int(repetition),
            "tile_drop": config.tile_drop if tiles else "",
            "compression": config.compression,
            "compression_level": -1 if level is None else int(level),
            "tool_version": __version__,
            "settings_hash": shash,
            "settings": json.dumps(settings, sort_keys=True),
            "crops_per_class": json.dumps(per_class_crops),
            "pixel_share": json.dumps(share),
            "n_failed": result.failed,
        }
        writer.close(attrs)
    except BaseException:
        writer.abort()
        raise
    return result, {"crops_per_class": per_class_crops, "pixel_share": share, "n_patches": writer.n}
