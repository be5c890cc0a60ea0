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
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__, defaults
from ..atomic import atomic_path, remove_stale_temporaries
from ..errors import InputError, OutputError, SettingsError, one_line
from ..execution.manifests import read_manifest, write_manifest
from ..execution.options import RunOptions, run_options
from ..execution.runner import BatchResult, inputs_hash, run_batch, settings_hash
from ..execution.tasks import Task
from ..masks.labelset import labels_json
from .h5format import (
    COMPRESSIONS,
    DEFAULT_LEVELS,
    FORMAT,
    LAYOUTS,
    filter_kwargs,
    read_file_attrs,
)
from .inputs import check_standard_maps, pair_inputs, parse_classes
from .sampling import (
    DEFAULT_PER_CLASS,
    DEFAULT_SIZE,
    NUM_CLASSES,
    STANDARD_NAMES,
    TILE_DROPS,
)
from .worker import PatchArgs, PatchConfig, Payload, patch_worker
from .writer import PatchWriter

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


def write_patches(
    images: str | os.PathLike,
    masks: str | os.PathLike,
    out: str | os.PathLike,
    *,
    size: int = DEFAULT_SIZE,
    per_class: int = DEFAULT_PER_CLASS,
    classes: Iterable[str | int] | str | None = None,
    seed: int = defaults.SEED,
    tiles: bool = False,
    tile_drop: str = defaults.TILE_DROP,
    image_ids: Iterable[str] | None = None,
    splits: dict | str | os.PathLike | None = None,
    split: str | None = None,
    repetition: int | None = None,
    layout: str = defaults.LAYOUT,
    compression: str = defaults.COMPRESSION,
    level: int | None = None,
    run: RunOptions | None = None,
    **run_keywords: Any,
) -> PatchesResult:
    """Write class-centred crops (or test tiles) of every image/label-map pair into ``out`` (HDF5).

    ``images``/``masks``: folders searched recursively, matched by image id
    (file stem). ``splits`` + ``split`` (+ ``repetition``) pick the images
    from a splits file (:mod:`csaws_tools.splits`); ``image_ids`` picks them
    directly. A Parquet manifest (one row per image) is written beside
    ``out``. An existing complete file made with the same settings is kept
    unless ``overwrite``.
    """
    run = run_options(run, run_keywords, "write_patches")
    if run.shard is not None:
        raise SettingsError("shard does not apply to write_patches: it writes one file (run it per split instead)")
    out = Path(out)
    if size < 1 or per_class < 1:
        raise SettingsError(f"size={size!r} and per_class={per_class!r} must be positive", param=("size", "per_class"))
    if layout not in LAYOUTS:
        raise SettingsError(f"layout={layout!r}: expected one of {', '.join(LAYOUTS)}", param="layout")
    if compression not in COMPRESSIONS:
        raise SettingsError(f"compression={compression!r}: expected one of {', '.join(COMPRESSIONS)}",
                            param="compression")
    if tile_drop not in TILE_DROPS:
        raise SettingsError(f"tile_drop={tile_drop!r}: expected one of {', '.join(TILE_DROPS)}", param="tile_drop")
    if int(seed) < 0:
        raise SettingsError(f"seed={seed!r} must be a non-negative integer", param="seed")
    if level is None:
        level = DEFAULT_LEVELS.get(compression)
    if compression == "gzip" and not (level is not None and 0 <= level <= 9):
        raise SettingsError(f"level={level!r}: the gzip level must be 0-9", param="level")
    filter_kwargs(compression, level)  # clear error now when hdf5plugin is missing
    class_list = parse_classes(classes)
    check_standard_maps(masks)
    if splits is not None:
        if split is None:
            raise SettingsError("splits= needs split= (train, val, trainval, test or a subset size)",
                                param=("splits", "split"))
        from ..splits import select_images

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
    existing = None if run.overwrite else read_file_attrs(out)
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
                  args=PatchArgs(order=k, image_id=image_id, mask=str(mp)))
             for k, (image_id, ip, mp) in enumerate(pairs)]
    for r in error_rows:
        r.setdefault("output", str(out))

    try:
        with atomic_path(out) as tmp:
            result, stats = _write_file(tmp, out, tasks, config, settings, shash, class_list, split, repetition,
                                        manifest=None, run=run, error_rows=error_rows)
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


def _write_file(tmp: Path, out: Path, tasks: list[Task[PatchArgs]], config: PatchConfig, settings: dict, shash: str,
                class_list: list[int] | None, split: str | None, repetition: int | None, *,
                manifest: Path | None, run: RunOptions, error_rows: list[dict]) -> tuple[BatchResult, dict]:
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
                           settings=settings, run=run,
                           label="cutting tiles" if tiles else "cutting patches", on_result=on_result,
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
            "per_class": None if tiles else config.per_class,
            "classes": class_list if class_list is not None else list(range(NUM_CLASSES)),
            "seed": None if tiles else config.seed,
            "split": split or None,
            "repetition": None if repetition is None else int(repetition),
            "tile_drop": config.tile_drop if tiles else "",
            "compression": config.compression,
            "compression_level": -1 if level is None else int(level),
            "tool_version": __version__,
            "settings_hash": shash,
            "settings": settings,
            "crops_per_class": per_class_crops,
            "pixel_share": share,
            "n_failed": result.failed,
        }
        writer.close(attrs)
    except BaseException:
        writer.abort()
        raise
    return result, {"crops_per_class": per_class_crops, "pixel_share": share, "n_patches": writer.n}


__all__ = [
    "manifest_path_for",
    "PatchesResult",
    "write_patches",
]
