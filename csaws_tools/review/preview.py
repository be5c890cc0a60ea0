"""Overlays of label maps on their images, and a contact sheet of a whole folder.

A quick look that masks, images and intensity inversion line up: the image
in grey, each class in its display colour blended over it, a legend with
the class names present, and one sheet of small overlays labelled with
their image ids.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import defaults
from ..atomic import remove_stale_temporaries
from ..errors import InputError, SettingsError, one_line
from ..execution.options import RunOptions, run_options
from ..execution.runner import (
    BatchResult,
    ensure_writable_dir,
    run_batch,
    settings_hash,
    task_hash,
)
from ..execution.tasks import Task
from ..files import IMAGE_SUFFIXES, MAP_SUFFIXES, files_under
from ..guards import (
    clashes_with_input,
    input_paths_set,
    refuse_output_in_input,
)
from ..masks.classes import NUMBERINGS, class_names
from ..masks.labelset import LabelSet
from ..masks.labelset import palette as class_palette
from ..png import SETTINGS_KEY, made_with, write_png

#: Background of the panel beside each overlay that holds its title and legend.
PANEL_COLOUR = (24, 24, 24)


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: bitmap font only
        return ImageFont.load_default()


def to_grey(image: np.ndarray) -> np.ndarray:
    """Any 2-D/RGB(A) image as 8-bit grey, stretched to its own min..max when not 8-bit."""
    image = np.asarray(image)
    if image.ndim == 3:
        image = image[..., :3].mean(axis=2) if image.shape[2] >= 3 else image[..., 0]
    if image.dtype == np.uint8:
        return image
    image = image.astype(np.float32)
    lo, hi = float(image.min()), float(image.max())
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    return np.clip((image - lo) * scale + 0.5, 0, 255).astype(np.uint8)


def _fit(shape: tuple[int, int], max_size: int | None) -> tuple[int, int]:
    h, w = shape
    if not max_size or max(h, w) <= max_size:
        return h, w
    f = max_size / max(h, w)
    return max(1, round(h * f)), max(1, round(w * f))


def _resize_grey(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    if image.shape == shape:
        return image
    return np.asarray(Image.fromarray(image).resize((shape[1], shape[0]), Image.Resampling.BOX))


def _resize_labels(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if labels.shape == shape:
        return labels
    rows = (np.arange(shape[0]) * labels.shape[0] // shape[0])
    cols = (np.arange(shape[1]) * labels.shape[1] // shape[1])
    return labels[rows[:, None], cols[None, :]]


def overlay(
    image: np.ndarray,
    labels: np.ndarray,
    *,
    names: list[str] | None = None,
    colours: list[tuple[int, int, int]] | None = None,
    numbering: str = "standard",
    alpha: float = 0.45,
    max_size: int | None = None,
    legend: bool = True,
    title: str | None = None,
) -> np.ndarray:
    """The image in grey with each class blended in its colour; returns an (H, W, 3) uint8 array.

    ``names``/``colours`` index by label id (default: the 12 classes under
    ``numbering``); the class named ``background`` is left uncoloured.
    ``max_size`` bounds the longer side of the image (box-filtered, labels
    nearest). The title and a legend of the classes present go in a panel to
    the right of the image, so they cover no part of it (the result is then
    wider than the image).
    """
    image, labels = np.asarray(image), np.asarray(labels)
    if image.shape[:2] != labels.shape:
        raise InputError(f"image is {image.shape[0]}x{image.shape[1]} but the label map is "
                         f"{labels.shape[0]}x{labels.shape[1]} (rows x columns)")
    if not 0.0 <= alpha <= 1.0:
        raise SettingsError(f"alpha={alpha!r} must be between 0 and 1", param="alpha")
    names = list(names) if names is not None else class_names(numbering)
    colours = list(colours) if colours is not None else (
        class_palette(numbering) if len(names) == 12 else [(128, 128, 128)] * len(names))
    shape = _fit(labels.shape, max_size)
    grey = _resize_grey(to_grey(image), shape)
    lab = _resize_labels(labels, shape)
    lut = np.zeros((max(len(colours), int(lab.max()) + 1 if lab.size else 1), 3), dtype=np.float32)
    lut[: len(colours)] = np.asarray(colours, dtype=np.float32)
    weight = np.full(len(lut), alpha, dtype=np.float32)
    if "background" in names:
        weight[names.index("background")] = 0.0
    w = weight[lab][..., None]
    out = grey[..., None].astype(np.float32) * (1.0 - w) + lut[lab] * w
    out = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    if legend or title:
        present = [i for i in np.flatnonzero(np.bincount(lab.ravel(), minlength=len(names)))
                   if i < len(names) and names[i] != "background"]
        out = _draw_legend(out, [(names[i], tuple(lut[i].astype(int))) for i in present] if legend else [], title)
    return out


def _draw_legend(rgb: np.ndarray, entries: list[tuple[str, tuple]], title: str | None) -> np.ndarray:
    """The overlay with a panel to its right holding the title and the legend: nothing covers the image.

    The panel is as wide as its longest line; the canvas grows downwards when
    the legend is taller than the image.
    """
    from PIL import Image, ImageDraw

    h, w = rgb.shape[:2]
    size = max(10, min(28, round(min(h, w) / 40)))
    font = _font(size)
    pad, box = size // 2, size
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    widths = [box + pad + measure.textlength(name, font=font) for name, _ in entries]
    if title:
        widths.append(measure.textlength(title, font=font))
    panel_w = int(np.ceil(max(widths, default=0))) + 2 * pad
    rows = (1 if title else 0) + len(entries)
    panel_h = pad + rows * (size + pad) + (pad if title and entries else 0)
    canvas = Image.new("RGB", (w + panel_w, max(h, panel_h)), PANEL_COLOUR)
    canvas.paste(Image.fromarray(rgb), (0, 0))
    draw = ImageDraw.Draw(canvas)
    x, y = w + pad, pad
    if title:
        draw.text((x, y), title, font=font, fill=(255, 255, 255))
        y += size + 2 * pad
    for name, colour in entries:
        draw.rectangle([x, y, x + box, y + box], fill=tuple(int(c) for c in colour), outline=(255, 255, 255))
        draw.text((x + box + pad, y), name, font=font, fill=(255, 255, 255))
        y += size + pad
    return np.asarray(canvas)


def contact_sheet(
    items: list[tuple[str, np.ndarray]],
    *,
    thumb_size: int = 256,
    columns: int | None = None,
    background: tuple[int, int, int] = (24, 24, 24),
) -> np.ndarray:
    """A grid of downscaled RGB images, each captioned with its id; returns (H, W, 3) uint8.

    ``items`` are ``(id, rgb array)``, laid out row by row in the given
    order; each is fitted into a ``thumb_size`` square cell.
    """
    from PIL import Image, ImageDraw

    if not items:
        raise InputError("a contact sheet needs at least one image")
    n = len(items)
    columns = columns or max(1, int(np.ceil(np.sqrt(n * 1.3))))
    rows = int(np.ceil(n / columns))
    font_size = max(10, thumb_size // 16)
    font = _font(font_size)
    caption = font_size + 6
    gap = 6
    cell_w, cell_h = thumb_size + gap, thumb_size + caption + gap
    sheet = Image.new("RGB", (columns * cell_w + gap, rows * cell_h + gap), background)
    draw = ImageDraw.Draw(sheet)
    for k, (name, rgb) in enumerate(items):
        rgb = np.asarray(rgb)
        if rgb.ndim == 2:
            rgb = np.repeat(rgb[..., None], 3, axis=2)
        th, tw = _fit(rgb.shape[:2], thumb_size)
        thumb = Image.fromarray(rgb[..., :3].astype(np.uint8)).resize((tw, th), Image.Resampling.BOX) \
            if (th, tw) != rgb.shape[:2] else Image.fromarray(rgb[..., :3].astype(np.uint8))
        r, c = divmod(k, columns)
        x0, y0 = gap + c * cell_w, gap + r * cell_h
        sheet.paste(thumb, (x0 + (thumb_size - tw) // 2, y0 + (thumb_size - th) // 2))
        label = name
        while label and draw.textlength(label, font=font) > thumb_size:
            label = label[1:]
        if label != name:
            label = "…" + label[1:]
        lw = draw.textlength(label, font=font)
        draw.text((x0 + (thumb_size - lw) / 2, y0 + thumb_size + 2), label, font=font, fill=(235, 235, 235))
    return np.asarray(sheet)


# ---------------------------------------------------------------- folder previews

def _read_any(path: str) -> np.ndarray:
    from ..masks.merge import image_size

    image_size(path)  # the header is checked against the pixel limit before decoding
    try:
        if path.lower().endswith((".tif", ".tiff")):
            import tifffile

            return np.asarray(tifffile.imread(path, key=0))
        from ..png import read_png

        if path.lower().endswith(".png"):
            return read_png(path)
        from PIL import Image

        with Image.open(path) as im:
            return np.asarray(im.convert("L"))
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"{path}: cannot read ({one_line(exc)})") from None


def _thumb(rgb: np.ndarray, thumb_size: int) -> np.ndarray:
    from PIL import Image

    th, tw = _fit(rgb.shape[:2], thumb_size)
    if (th, tw) == rgb.shape[:2]:
        return rgb
    return np.asarray(Image.fromarray(rgb).resize((tw, th), Image.Resampling.BOX))


@dataclass(frozen=True)
class PreviewArgs:
    """One overlay's own settings: its label map, the image paired with it, its title."""

    image_id: str
    mask: str
    #: the image with the map's file stem; None: none found (the task fails with one line)
    image: str | None
    title: str
    #: a problem found while planning, reported as the task's error
    error: str | None = None


def preview_worker(task: Task[PreviewArgs], *, names: list[str], colours: list, alpha: float, max_size: int | None,
                   thumb_size: int, overwrite: bool, shash: str) -> tuple[dict, np.ndarray | None]:
    """Write one overlay PNG; return its row and a thumbnail for the contact sheet."""
    row, thumb = _preview_one(task, names=names, colours=colours, alpha=alpha, max_size=max_size,
                              thumb_size=thumb_size, overwrite=overwrite, shash=shash)
    row.setdefault("source", task.source)
    row.setdefault("output", task.output)
    return row, thumb


def _preview_one(task: Task[PreviewArgs], *, names: list[str], colours: list, alpha: float, max_size: int | None,
                 thumb_size: int, overwrite: bool, shash: str) -> tuple[dict, np.ndarray | None]:
    a = task.args
    row: dict[str, Any] = {"image_id": a.image_id, "mask": a.mask, "image": a.image}
    assert task.output is not None  # planned with one
    out = Path(task.output)
    # the overlay records the settings and the identity of its image and label map
    shash = task_hash(shash, a.image, a.mask)
    try:
        if a.error:
            raise InputError(a.error)
        if not overwrite and made_with(out, shash):
            try:
                row["status"] = "skipped"
                return row, _thumb(_read_any(str(out)), thumb_size)
            except InputError:
                row.pop("status")
        if not a.image:
            raise InputError(f"no image named {a.image_id}.png|tif|jpg found for this label map")
        labels = _read_any(a.mask)
        if labels.ndim != 2:
            raise InputError(f"{a.mask}: not a single-channel label map")
        top = int(labels.max()) if labels.size else 0
        if top >= len(names):
            raise InputError(f"{a.mask}: label map holds id {top} but the class table has {len(names)} "
                             f"classes (ids 0-{len(names) - 1}); is it a label map of this numbering?")
        image = _read_any(a.image)
        if image.shape[:2] != labels.shape:
            raise InputError(f"label map is {labels.shape[0]}x{labels.shape[1]} but the image {a.image} is "
                             f"{image.shape[0]}x{image.shape[1]} (rows x columns)")
        rgb = overlay(image, labels, names=names, colours=colours, alpha=alpha, max_size=max_size,
                      title=a.title)
        write_png(out, rgb, text={SETTINGS_KEY: shash})
    except InputError as exc:
        row.update(status="error", error=one_line(exc))
        return row, None
    row["width"], row["height"] = int(rgb.shape[1]), int(rgb.shape[0])
    return row, _thumb(rgb, thumb_size)


@dataclass
class PreviewResult(BatchResult):
    """A :class:`~csaws_tools.batch.BatchResult` plus the contact sheet written (``None``: none was)."""

    contact_sheet: Path | None = None


def _looks_like_images(path: Path, n_classes: int) -> str | None:
    """Why the map at ``path`` looks like an image rather than a label map, or ``None``."""
    try:
        arr = _read_any(str(path))
    except InputError:
        return None
    if arr.ndim == 3 and arr.shape[2] >= 3:
        return "it is a colour image"
    values = np.unique(arr)
    if values.size and int(values[-1]) >= n_classes and values.size > n_classes:
        return f"it has {values.size} grey levels up to {int(values[-1])}, not class ids 0-{n_classes - 1}"
    return None


def preview(
    images: str | os.PathLike,
    masks: str | os.PathLike,
    out: str | os.PathLike,
    *,
    alpha: float = defaults.PREVIEW_ALPHA,
    max_size: int | None = defaults.PREVIEW_MAX_SIZE,
    thumb_size: int = defaults.PREVIEW_THUMB_SIZE,
    numbering: str | None = None,
    run: RunOptions | None = None,
    **run_keywords: Any,
) -> PreviewResult:
    """Overlay every label map under ``masks`` on its image under ``images``; write a contact sheet.

    Maps and images are paired by file stem (``<image id>``), wherever they
    are in their folders. Overlays go to ``out`` mirroring the maps'
    sub-folders; the sheet is ``out/contact_sheet.png``; the manifest
    ``out/manifest.parquet``.
    """
    run = run_options(run, run_keywords, "preview")
    images, masks = Path(images), Path(masks)
    for p, what in ((images, "images"), (masks, "masks")):
        if not p.is_dir():
            raise InputError(f"{what}={str(p)!r} is not a folder", param=what)
    if numbering is not None:
        if numbering not in NUMBERINGS:
            raise SettingsError(f"numbering={numbering!r}: expected one of {', '.join(NUMBERINGS)}",
                                param="numbering")
        names, colours = class_names(numbering), class_palette(numbering)
    else:
        labels = LabelSet.near(masks)
        if labels is not None:
            names, colours = list(labels.names), list(labels.colours)
        else:
            names, colours = class_names("standard"), class_palette("standard")
    # overlays are never written over an input: not into the image folder, not onto the map folder
    refuse_output_in_input(out, [("images", images), ("masks", masks)], allow_inside=("masks",),
                           params=("images", "masks"))
    out = ensure_writable_dir(out)
    remove_stale_temporaries(out)
    by_stem: dict[str, str] = {}
    twice: dict[str, list[str]] = {}
    for p in files_under(images, IMAGE_SUFFIXES, skip=lambda p: _inside(p, out)):
        if p.stem in by_stem:
            twice.setdefault(p.stem, [by_stem[p.stem]]).append(str(p))
        else:
            by_stem[p.stem] = str(p)
    maps = files_under(masks, MAP_SUFFIXES, skip=lambda p: _inside(p, out))
    if not maps:
        raise InputError(f"{masks}: no label maps (*.png, *.tif) found")
    why = _looks_like_images(maps[0], len(names))
    if why is not None:
        raise SettingsError(f"{maps[0]}: masks= should hold label maps (merge-masks output) but {why}; "
                            "were images= and masks= swapped?", param=("masks", "images"))
    inputs = input_paths_set([*by_stem.values(), *(str(p) for p in maps)])
    tasks = []
    for p in maps:
        rel = p.relative_to(masks).with_suffix(".png")
        error = None
        if p.stem in twice:
            error = f"image id {p.stem} found more than once under {images}: {' and '.join(twice[p.stem])}; " \
                    "pass a narrower images= folder"
        elif clashes_with_input(out / rel, inputs):
            error = f"output {out / rel} is one of the input files; not overwriting it"
        tasks.append(Task(key=rel.as_posix(), source=str(p), output=str(out / rel),
                          args=PreviewArgs(image_id=p.stem, mask=str(p), image=by_stem.get(p.stem),
                                           title=rel.with_suffix("").as_posix(), error=error)))
    settings = {"command": "preview", "alpha": alpha, "max_size": max_size, "names": names,
                "colours": [list(c) for c in colours]}
    shash = settings_hash(settings)
    thumbs: dict[str, np.ndarray] = {}

    def keep(row: dict, thumb: np.ndarray) -> None:
        thumbs[row["output"]] = thumb

    worker = functools.partial(preview_worker, names=names, colours=colours, alpha=alpha, max_size=max_size,
                               thumb_size=thumb_size, overwrite=run.overwrite, shash=shash)
    result = run_batch(tasks, worker, manifest=out / "manifest.parquet", settings=settings, run=run, label="previews", on_result=keep)
    for row in result.rows:  # up-to-date overlays: thumbnails from the files on disk
        if row.get("status") == "skipped" and row.get("output") not in thumbs:
            try:
                thumbs[row["output"]] = _thumb(_read_any(row["output"]), thumb_size)
            except InputError:
                pass
    items = [(t.key[:-4], thumbs[t.output]) for t in tasks if t.output in thumbs]
    sheet_path = None
    if items:
        sheet = contact_sheet(items, thumb_size=thumb_size)
        shard = run.shard
        name = "contact_sheet.png" if shard is None else f"contact_sheet.shard-{shard[0]:04d}-of-{shard[1]:04d}.png"
        sheet_path = out / name
        write_png(sheet_path, sheet)
    return PreviewResult(rows=result.rows, manifest=result.manifest, interrupted=result.interrupted,
                         seconds=result.seconds, contact_sheet=sheet_path)


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


__all__ = [
    "contact_sheet",
    "overlay",
    "PANEL_COLOUR",
    "preview",
    "PreviewArgs",
    "preview_worker",
    "PreviewResult",
    "to_grey",
]
