"""Merge the binary class masks of each image into one label map (protocol sections 1 and 3).

Inputs found automatically under ``root``:

* the CSAW-S release layout: ``anonymized_dataset/<pid>/<pid>_<n>_<class>.png``
  (train/val) and ``test_data/annotator_<k>/<pid>/<pid>_<n>_<class>.png``
  (test, per expert), images beside them (``<pid>_<n>.png``, test images in
  ``test_data/anonymized_dataset``); ``root`` may also be the folder that
  holds ``CsawS/``;
* a plain folder (searched recursively) of masks ``<image>_<class>.png|tif|tiff``;
* QuPath GeoJSON exports ``<image>.geojson`` (see :mod:`csaws_tools.qupath`),
  rasterised at the size of the image beside them (``<image>.png|tif|tiff|jpg``)
  or at a size given by the caller.

Where masks overlap, the class with the higher priority wins: masks are
painted from the lowest priority to the highest, each over the map so far,
one mask in memory at a time. Any non-zero mask pixel counts as marked.
For the test set, the expert consensus (protocol section 3) is cancer where
at least two of the three annotators marked cancer, background elsewhere;
it is its own task that reads the three cancer masks.

Outputs: ``OUT/trainval/<pid>_<n>.png``, ``OUT/test/annotator_<k>/<pid>_<n>.png``,
``OUT/test/consensus/<pid>_<n>.png`` (plain folders: ``OUT/<sub folder>/<image>.png``),
``OUT/labels.json`` and ``OUT/manifest.parquet``.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
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
    in_shard,
    run_batch,
    settings_hash,
    task_hash,
)
from ..execution.tasks import Task
from ..files import IMAGE_SUFFIXES, MAP_SUFFIXES, files_by_folder, files_under, subfolders
from ..guards import (
    clashes_with_input,
    input_paths_set,
    refuse_output_in_input,
)
from ..limits import checked_shape
from ..naming import sanitise
from ..png import SETTINGS_KEY, made_with, write_png
from .classes import MAIN_CLASS, MASK_CLASSES, NUMBERINGS, split_mask_stem
from .labels import (
    LabelScheme,
    parse_scheme,
    scheme_ids,
    scheme_names,
    scheme_palette,
)
from .labelset import LabelSet

#: Binary class masks: the lossless image suffixes (:data:`csaws_tools.files.MAP_SUFFIXES`).
MASK_SUFFIXES = MAP_SUFFIXES
TEST_ANNOTATORS = ("1", "2", "3")
#: annotator 3 of the test set gives cancer only (protocol section 1)
CANCER_ONLY_ANNOTATORS = ("3",)


@dataclass
class ImageMasks:
    """The masks of one image (for one annotator) as found on disk."""

    image_id: str
    folder: str
    masks: dict[str, str] = field(default_factory=dict)
    unknown: dict[str, str] = field(default_factory=dict)  # token -> path
    image: str | None = None
    geojson: str | None = None
    patient_id: str | None = None
    split: str | None = None
    annotator: str | None = None
    expected: tuple[str, ...] = MASK_CLASSES
    out_rel: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def source(self) -> str:
        if self.geojson:
            return self.geojson
        return os.path.join(self.folder, f"{self.image_id}_<class>")

    def missing(self) -> list[str]:
        return [c for c in self.expected if c not in self.masks]


#: A file-name-safe version of an id taken from input names (no separators, no dot files).
safe_name = sanitise


#: ``<image>_<class>`` -> (image id, class token); case-insensitive, spaces/hyphens as ``_``.
split_mask_name = split_mask_stem


def _group_folder(folder: Path, files: list[Path]) -> tuple[dict[str, ImageMasks], list[Path]]:
    """Group mask files of one folder by image id; return the groups and files not used."""
    groups: dict[str, ImageMasks] = {}
    rest: list[Path] = []
    for f in sorted(files):
        image_id, token = split_mask_name(f.stem) if f.suffix.lower() in MASK_SUFFIXES else (f.stem, None)
        if token is None:
            rest.append(f)
            continue
        g = groups.setdefault(image_id, ImageMasks(image_id=image_id, folder=str(folder)))
        if token in g.masks:
            g.notes.append(f"two {token} masks: {g.masks[token]} and {f} (using the first)")
            continue
        g.masks[token] = str(f)
    # files named <known image>_<something else> are masks with an unknown class token
    ids = sorted(groups, key=len, reverse=True)
    leftover = []
    for f in rest:
        if f.suffix.lower() in MASK_SUFFIXES:
            for image_id in ids:
                if f.stem.startswith(image_id + "_"):
                    groups[image_id].unknown[f.stem[len(image_id) + 1:]] = str(f)
                    break
            else:
                leftover.append(f)
        else:
            leftover.append(f)
    return groups, leftover


def _files_by_folder(root: Path, loops: list[dict] | None = None) -> dict[Path, list[Path]]:
    """Files of every folder under ``root``, following directory symlinks (:func:`csaws_tools.files.files_by_folder`).

    A symlink back to a folder already being walked (a loop) is not entered;
    it is reported in ``loops`` as one error row.
    """
    def on_loop(dirpath: str) -> None:
        if loops is not None:
            loops.append({"source": dirpath, "output": None, "status": "error", "image_id": None,
                          "error": f"{dirpath}: symbolic link to a folder already searched "
                                   f"({os.path.realpath(dirpath)}); not searched twice"})

    return files_by_folder(root, on_loop)


def find_release_root(root: str | os.PathLike) -> Path | None:
    """The CSAW-S release folder under ``root`` (``root`` itself or ``root/CsawS``), or ``None``."""
    root = Path(root)
    for cand in (root, root / "CsawS", root / "CSAW-S", root / "csaws"):
        if (cand / "anonymized_dataset").is_dir() or (cand / "test_data").is_dir():
            return cand
    return None


def _release_patient_groups(folder: Path, pattern: re.Pattern) -> tuple[dict[str, ImageMasks], dict[str, Path]]:
    """Masks and images in one ``<pid>`` folder of the release."""
    groups, rest = _group_folder(folder, files_under(folder, None, recursive=False))
    images = {p.stem: p for p in rest if pattern.match(p.stem) and p.suffix.lower() in IMAGE_SUFFIXES}
    return groups, images


def discover_release(root: Path) -> tuple[list[ImageMasks], list[dict]]:
    """Find every image's masks in the release layout; images without masks become error rows."""
    items: list[ImageMasks] = []
    problems: list[dict] = []
    image_re = re.compile(r"^[^_]+_\d{1,2}$")

    for pdir in subfolders(root / "anonymized_dataset"):
        groups, images = _release_patient_groups(pdir, image_re)
        for image_id in sorted(set(groups) | set(images)):
            g = groups.get(image_id)
            if g is None:
                problems.append(_no_masks_row(str(images[image_id]), f"trainval/{safe_name(image_id)}.png"))
                continue
            g.image = str(images[image_id]) if image_id in images else None
            g.patient_id, g.split = pdir.name, "trainval"
            g.out_rel = f"trainval/{safe_name(image_id)}.png"
            items.append(g)

    test = root / "test_data"
    test_images: dict[str, Path] = {}
    test_patients: dict[str, str] = {}
    for pdir in subfolders(test / "anonymized_dataset"):
        for p in files_under(pdir, IMAGE_SUFFIXES, recursive=False):
            if image_re.match(p.stem):
                test_images[p.stem] = p
                test_patients[p.stem] = pdir.name
    annotators = [d for d in subfolders(test) if d.name.startswith("annotator_")]
    for adir in annotators:
        k = adir.name[len("annotator_"):]
        seen = set()
        for pdir in subfolders(adir):
            groups, _ = _release_patient_groups(pdir, image_re)
            for image_id, g in sorted(groups.items()):
                seen.add(image_id)
                g.image = str(test_images[image_id]) if image_id in test_images else None
                g.patient_id, g.split, g.annotator = pdir.name, "test", safe_name(k)
                g.expected = (MAIN_CLASS,) if k in CANCER_ONLY_ANNOTATORS else MASK_CLASSES
                g.out_rel = f"test/annotator_{safe_name(k)}/{safe_name(image_id)}.png"
                items.append(g)
        for image_id in sorted(set(test_images) - seen):
            problems.append(_no_masks_row(
                str(test_images[image_id]), f"test/annotator_{safe_name(k)}/{safe_name(image_id)}.png",
                f"no masks of annotator {k} for this test image (looked in {adir / test_patients[image_id]})"))
    return items, problems


def _no_masks_row(source: str, out_rel: str, reason: str | None = None) -> dict:
    return {"source": source, "output": out_rel, "status": "error",
            "error": reason or "image has no class masks (expected <image>_<class>.png beside it)",
            "image_id": Path(source).stem}


def discover_plain(root: Path, exclude: Path | None = None) -> tuple[list[ImageMasks], list[dict]]:
    """Find masks ``<image>_<class>.png|tif|tiff`` and GeoJSON files in a plain folder tree.

    ``exclude`` (an output folder inside ``root``) is not searched.
    """
    items: list[ImageMasks] = []
    problems: list[dict] = []
    skip = exclude.resolve() if exclude is not None else None
    if skip is not None and not _under(skip, root.resolve()):
        skip = None  # an output folder above (or beside) the input folder excludes nothing in it
    loops: list[dict] = []
    by_folder = _files_by_folder(root, loops)
    problems.extend(r for r in loops if skip is None or not _under(Path(r["source"]), skip))
    for folder, files in sorted(by_folder.items()):
        if skip is not None and (folder.resolve() == skip or skip in folder.resolve().parents):
            continue
        groups, rest = _group_folder(folder, files)
        rel = folder.relative_to(root)
        rel_parts = [safe_name(p) for p in rel.parts]
        images = {p.stem: p for p in rest if p.suffix.lower() in IMAGE_SUFFIXES}
        geojsons = {p.stem: p for p in rest if p.suffix.lower() == ".geojson"}
        for image_id, gj in sorted(geojsons.items()):
            if image_id in groups:
                problems.append({"source": str(gj), "output": None, "status": "error", "image_id": image_id,
                                 "error": f"both GeoJSON and mask files found for image {image_id}; keep one"})
                del groups[image_id]
                continue
            groups[image_id] = ImageMasks(image_id=image_id, folder=str(folder), geojson=str(gj))
        for image_id, g in sorted(groups.items()):
            g.image = str(images[image_id]) if image_id in images else None
            g.split = rel_parts[0] if rel_parts else None
            g.out_rel = "/".join(rel_parts + [safe_name(image_id) + ".png"])
            items.append(g)
        if groups:
            # other images in a folder of masks are images whose masks are missing
            for image_id, p in sorted(images.items()):
                if image_id not in groups and not any(image_id.startswith(i + "_") for i in groups):
                    problems.append(_no_masks_row(str(p), "/".join(rel_parts + [safe_name(image_id) + ".png"])))
    return items, problems


def _under(path: Path, folder: Path) -> bool:
    p = path.resolve()
    return p == folder or folder in p.parents


def discover(root: str | os.PathLike, exclude: str | os.PathLike | None = None
             ) -> tuple[list[ImageMasks], list[dict], str]:
    """Find the masks under ``root``: (images, planning error rows, layout name).

    ``exclude`` is a folder not to search (the output folder, when it lies inside ``root``).
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: not a folder")
    release = find_release_root(root)
    if release is not None:
        items, problems = discover_release(release)
        layout = "release"
    else:
        items, problems = discover_plain(root, Path(exclude) if exclude is not None else None)
        layout = "plain"
    if not items and not problems:
        raise InputError(f"{root}: no masks found (expected the CSAW-S release layout, "
                         "<image>_<class>.png|tif|tiff files or <image>.geojson files)")
    return items, problems, layout


# ---------------------------------------------------------------- reading masks

def _decode_mask(path: str) -> np.ndarray:
    """Decode a mask file into its raw array (2-D, or colour channels last)."""
    checked_shape(path, "mask")  # from the header, before anything is decoded
    try:
        if path.lower().endswith((".tif", ".tiff")):
            import tifffile

            arr = np.asarray(tifffile.imread(path, key=0))
            if arr.ndim == 3 and arr.shape[0] in (3, 4) and arr.shape[2] not in (3, 4):
                arr = np.moveaxis(arr, 0, -1)
            return arr
        from PIL import Image

        with Image.open(path) as im:
            im.load()
            return np.asarray(im.convert("L") if im.mode == "1" else im)
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a bad input file
        raise InputError(f"{path}: cannot read mask ({one_line(exc)})") from None


def _marked(arr: np.ndarray, path: str, out: np.ndarray | None = None) -> np.ndarray:
    """Bool array of marked (non-zero) pixels; ``out`` (bool, same shape) is reused when given."""
    if arr.ndim == 2:
        if out is not None and out.shape == arr.shape:
            return np.not_equal(arr, 0, out=out)
        return arr != 0
    if arr.ndim == 3 and arr.shape[2] in (2, 4):  # grey+alpha, RGBA: opaque and not black
        return np.any(arr[..., :-1] != 0, axis=2) & (arr[..., -1] != 0)
    if arr.ndim == 3:
        return np.any(arr != 0, axis=2)
    raise InputError(f"{path}: mask has an unexpected shape {arr.shape}")


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a mask file as a bool array: any non-zero pixel is marked.

    PNG (1, 8 or 16 bit, grey, palette, RGB, RGBA) and TIFF (any integer or
    float type; colour channels last). For images with an alpha channel a
    pixel is marked when it is opaque and not black.
    """
    path = str(path)
    return _marked(_decode_mask(path), path)


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(rows, columns) of an image or mask file from its header, without decoding pixels.

    A header claiming more pixels than the limit (:mod:`csaws_tools.limits`) is an error.
    """
    shape = checked_shape(path, "image size")
    return int(shape[0]), int(shape[1])


def _fmt(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


# ---------------------------------------------------------------- the worker

def _written(scheme: LabelScheme, numbering: str) -> tuple[np.ndarray, list[str]]:
    """Lookup table standard id -> written id, and names by written id."""
    return scheme_ids(scheme, numbering), scheme_names(scheme, numbering)


def paint(masks: Mapping[str, np.ndarray | str], shape: tuple[int, int] | None = None, *,
          scheme: str | LabelScheme = "all", numbering: str = "standard",
          size_ref: str | None = None) -> np.ndarray:
    """Merge class masks (arrays or file paths) into a label map by priority.

    Masks are painted from the lowest priority to the highest, so a pixel
    takes the highest-priority class that marks it; ids follow ``scheme``
    and ``numbering``. Paths are read one at a time. ``size_ref`` names the
    image file that ``shape`` came from, for error messages.
    """
    scheme = parse_scheme(scheme)
    lut, _ = _written(scheme, numbering)
    bg = int(lut[0])
    labels = None
    ref_name = size_ref
    # classes whose written id equals background and that no lower-priority kept class
    # follows can be skipped: painting them changes nothing
    order = list(reversed(MASK_CLASSES))
    std_ids = {c: MASK_CLASSES.index(c) + 1 for c in MASK_CLASSES}
    first_needed = next((i for i, c in enumerate(order) if int(lut[std_ids[c]]) != bg), len(order))
    for i, cls in enumerate(order):
        m = masks.get(cls)
        if m is None:
            continue
        if i < first_needed:
            if isinstance(m, (str, os.PathLike)) and shape is not None:
                got = image_size(m)
                if got != tuple(shape):
                    raise InputError(f"{m}: mask is {_fmt(got)} (rows x columns) but "
                                     f"{ref_name or 'the image'} is {_fmt(shape)}")
            continue
        name = str(m) if isinstance(m, (str, os.PathLike)) else f"{cls} mask"
        raw = _decode_mask(name) if isinstance(m, (str, os.PathLike)) else np.asarray(m)
        if shape is None:
            shape, ref_name = raw.shape[:2], name
        if raw.shape[:2] != tuple(shape):
            raise InputError(f"{name}: mask is {_fmt(raw.shape[:2])} (rows x columns) but "
                             f"{ref_name or 'the image'} is {_fmt(shape)}")
        if labels is None:
            labels = np.full(shape, bg, dtype=np.uint8)
            buffer = np.empty(shape, dtype=bool)  # reused for every mask: no fresh pages per mask
        marked = _marked(raw, name, out=buffer)
        del raw
        np.copyto(labels, lut[std_ids[cls]], where=marked)
    if labels is None:
        if shape is None:
            raise InputError("no masks to merge and no image size given")
        labels = np.full(shape, bg, dtype=np.uint8)
    return labels


def consensus(cancer_masks: list[np.ndarray | str], shape: tuple[int, int] | None = None, *,
              scheme: str | LabelScheme = "all", numbering: str = "standard", min_votes: int = 2,
              size_ref: str | None = None) -> np.ndarray:
    """Expert consensus (protocol section 3): cancer where at least ``min_votes`` experts marked it."""
    scheme = parse_scheme(scheme)
    lut, _ = _written(scheme, numbering)
    votes = None
    ref_name = size_ref
    for m in cancer_masks:
        name = str(m) if isinstance(m, (str, os.PathLike)) else "cancer mask"
        arr = read_mask(m) if isinstance(m, (str, os.PathLike)) else np.asarray(m) != 0
        if shape is None:
            shape, ref_name = arr.shape, name
        if arr.shape != tuple(shape):
            raise InputError(f"{name}: mask is {_fmt(arr.shape)} (rows x columns) but "
                             f"{ref_name or 'the image'} is {_fmt(shape)}")
        if votes is None:
            votes = np.zeros(shape, dtype=np.uint8)
        votes += arr
    if votes is None:
        raise InputError("no cancer masks for the consensus")
    return np.where(votes >= min_votes, lut[1], lut[0]).astype(np.uint8)


def _counts(labels: np.ndarray, names: list[str]) -> dict[str, int]:
    from .counting import count_ids

    counts = count_ids(labels, len(names))
    return {f"px_{n}": int(c) for n, c in zip(names, counts[: len(names)])}


@dataclass(frozen=True)
class MergeArgs:
    """One merge task's own settings: the image, its masks and the columns its row keeps.

    ``kind`` is ``"image"`` (paint the class masks, or rasterise the QuPath
    GeoJSON, into one map) or ``"consensus"`` (the test set's expert
    consensus of the cancer masks, protocol section 3). ``error`` is a
    problem found while planning, reported as the task's error row.
    """

    image_id: str
    patient_id: str | None = None
    split: str | None = None
    annotator: str | None = None
    #: the files the map is made from, as the manifest lists them
    source_masks: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    error: str | None = None
    #: class name -> binary mask file
    masks: Mapping[str, str] = field(default_factory=dict)
    image: str | None = None
    geojson: str | None = None
    kind: str = "image"
    #: the annotators' cancer masks, for a consensus task
    cancer_masks: tuple[str, ...] = ()


def merge_worker(task: Task[MergeArgs], *, numbering: str, scheme: str, strict: bool, overwrite: bool,
                 shash: str, size: tuple[int, int] | None = None) -> dict:
    """Merge one image's masks (or make one consensus map); return its manifest row.

    Problems with the inputs give an ``error`` row that keeps the image's
    columns (image id, split, annotator, source masks). File names that are
    not valid UTF-8 are written with ``\\xNN`` escapes in the row.
    """
    row = _merge_one(task, numbering=numbering, scheme=scheme, strict=strict, overwrite=overwrite,
                     shash=shash, size=size)
    row.setdefault("source", task.source)
    return row


def _merge_one(task: Task[MergeArgs], *, numbering: str, scheme: str, strict: bool, overwrite: bool,
               shash: str, size: tuple[int, int] | None = None) -> dict:
    a = task.args
    scheme_obj = parse_scheme(scheme)
    names = scheme_names(scheme_obj, numbering)
    row: dict[str, Any] = {"image_id": a.image_id, "patient_id": a.patient_id, "split": a.split,
                           "annotator": a.annotator}
    row["source_masks"] = list(a.source_masks)
    warnings = list(a.warnings)
    row["warnings"] = "; ".join(warnings) if warnings else None
    try:
        if a.error:
            raise InputError(a.error)
        assert task.output is not None  # planned with one
        out = Path(task.output)
        # the output records the settings and the identity of every input it was made from
        inputs = [a.image, a.geojson, *a.source_masks]
        shash = task_hash(shash, *inputs)
        if not overwrite and made_with(out, shash):
            existing = _read_existing(out)
            if existing is not None:
                row.update(_counts(existing, names))
                row["status"] = "skipped"
                return row
        labels = _make_map(a, scheme_obj, numbering, strict, size, warnings)
        row["warnings"] = "; ".join(warnings) if warnings else None
        write_png(out, labels, palette=scheme_palette(scheme_obj, numbering), text={SETTINGS_KEY: shash})
    except InputError as exc:
        row.update(status="error", error=one_line(exc))
        return row
    row.update(_counts(labels, names))
    return row


def _read_existing(path: Path) -> np.ndarray | None:
    from ..png import read_png

    try:
        return read_png(path)
    except Exception:  # noqa: BLE001 - an unreadable old output is redone
        return None


def _make_map(a: MergeArgs, scheme: LabelScheme, numbering: str, strict: bool,
              size: tuple[int, int] | None, warnings: list[str]) -> np.ndarray:
    image = a.image
    shape = image_size(image) if image else ((int(size[0]), int(size[1])) if size is not None else None)
    if a.kind == "consensus":
        return consensus(list(a.cancer_masks), shape, scheme=scheme, numbering=numbering, size_ref=image)
    if not a.geojson:
        return paint(a.masks, shape, scheme=scheme, numbering=numbering, size_ref=image)
    from .qupath import rasterise_geojson

    path = a.geojson
    if shape is None:
        raise InputError(f"{path}: no image beside it (<image>.png|tif|tiff|jpg) to take the size from; "
                         "give the size explicitly (size=(ROWS, COLS))", param="size")
    masks, gj_warnings = rasterise_geojson(path, shape)
    warnings.extend(gj_warnings)
    if not masks:
        raise InputError(f"{path}: no annotations of any CSAW-S class"
                         + (f" ({'; '.join(gj_warnings)})" if gj_warnings else ""))
    missing = [c for c in MASK_CLASSES if c not in masks]
    if missing and strict:
        raise InputError(f"{path}: no annotations of class(es) {', '.join(missing)} (strict=True)", param="strict")
    if missing:
        warnings.append("no annotations of: " + ", ".join(missing) + " (treated as empty)")
    return paint(masks, shape, scheme=scheme, numbering=numbering, size_ref=image)


# ---------------------------------------------------------------- planning and the API

def plan_tasks(items: list[ImageMasks], out: Path, *,
               strict: bool = False) -> tuple[list[Task[MergeArgs]], list[dict]]:
    """Turn discovered images into merge tasks (plus consensus tasks for the test set)."""
    tasks: list[Task[MergeArgs]] = []
    rows: list[dict] = []
    test_cancer: dict[str, dict[str, str]] = {}
    test_info: dict[str, ImageMasks] = {}
    for g in items:
        warnings = []
        error = None
        warnings.extend(g.notes)
        if g.unknown:
            warnings.append("unknown class tokens: " + ", ".join(sorted(g.unknown)) + " (ignored; valid: "
                            + ", ".join(MASK_CLASSES) + ")")
        missing = g.missing() if not g.geojson else []
        if missing:
            if strict:
                error = f"missing class masks: {', '.join(missing)} in {g.folder} (strict=True)"
            else:
                warnings.append("missing class masks: " + ", ".join(missing) + " (treated as empty)")
        if not g.geojson and not g.masks:
            error = f"no class masks found for image {g.image_id} in {g.folder}"
        ordered = [g.masks[c] for c in MASK_CLASSES if c in g.masks]
        args = MergeArgs(
            image_id=g.image_id, patient_id=g.patient_id, split=g.split, annotator=g.annotator,
            source_masks=(g.geojson,) if g.geojson else tuple(ordered), warnings=tuple(warnings), error=error,
            masks=dict(g.masks), image=g.image, geojson=g.geojson,
        )
        tasks.append(Task(key=g.out_rel, source=g.image or g.source, output=str(out / g.out_rel), args=args))
        if g.split == "test" and g.annotator is not None:
            test_info.setdefault(g.image_id, g)
            if MAIN_CLASS in g.masks:
                test_cancer.setdefault(g.image_id, {})[g.annotator] = g.masks[MAIN_CLASS]
            else:
                test_cancer.setdefault(g.image_id, {})
    for image_id, by_annotator in sorted(test_cancer.items()):
        g = test_info[image_id]
        out_rel = f"test/consensus/{safe_name(image_id)}.png"
        missing = [k for k in TEST_ANNOTATORS if k not in by_annotator]
        error = None
        if missing:
            error = (f"the consensus needs the cancer masks of annotators {', '.join(TEST_ANNOTATORS)}; "
                     f"missing for annotator(s) {', '.join(missing)}")
        masks = [by_annotator[k] for k in TEST_ANNOTATORS if k in by_annotator]
        args = MergeArgs(kind="consensus", image_id=image_id, patient_id=g.patient_id, split="test",
                         annotator="consensus", source_masks=tuple(masks), cancer_masks=tuple(masks), image=g.image,
                         error=error)
        source = g.image or (masks[0] if masks else g.source)
        tasks.append(Task(key=out_rel, source=source, output=str(out / out_rel), args=args))
    return tasks, rows


def merge_masks(
    root: str | os.PathLike,
    out: str | os.PathLike,
    *,
    numbering: str = defaults.NUMBERING,
    labels: str | LabelScheme = defaults.LABEL_SCHEME,
    strict: bool = False,
    size: tuple[int, int] | None = None,
    run: RunOptions | None = None,
    **run_keywords: Any,
) -> BatchResult:
    """Merge every image's class masks under ``root`` into label maps under ``out``.

    ``numbering`` is ``"standard"`` (background 0, cancer 1, ..., mammary
    gland 11) or ``"release"`` (cancer 0, ..., background 11); ``labels`` a
    label scheme (:func:`csaws_tools.labels.parse_scheme`) applied to the
    written maps. ``size`` (rows, columns) is used for GeoJSON files without
    an image beside them. Returns the batch result; the manifest is
    ``out/manifest.parquet``.
    """
    run = run_options(run, run_keywords, "merge_masks")
    if numbering not in NUMBERINGS:
        raise SettingsError(f"numbering={numbering!r}: expected one of {', '.join(NUMBERINGS)}", param="numbering")
    scheme = parse_scheme(labels)
    release = find_release_root(root) if Path(root).is_dir() else None
    refuse_output_in_input(out, [("input", root), ("release", release),
                                 ("anonymized_dataset", release / "anonymized_dataset" if release else None),
                                 ("test_data", release / "test_data" if release else None)],
                           allow_inside=("input", "release"))
    items, problems, layout = discover(root, exclude=out)
    out = ensure_writable_dir(out)
    settings = {"command": "merge-masks", "numbering": numbering, "labels": scheme.spec, "strict": bool(strict),
                "size": list(size) if size else None}
    shash = settings_hash(settings)
    tasks, _ = plan_tasks(items, out, strict=strict)
    inputs = input_paths_set(p for t in tasks for p in [t.args.image, t.args.geojson, *t.args.source_masks])
    safe = []
    for t in tasks:
        if t.output is not None and clashes_with_input(t.output, inputs):
            problems.append({"source": t.source, "output": None, "status": "error",
                             "image_id": t.args.image_id,
                             "error": f"output {t.output} is one of the input files; not overwriting it "
                                      "(choose another output folder)"})
        else:
            safe.append(t)
    tasks = safe
    remove_stale_temporaries(out)
    extra = []
    for r in problems:
        r = dict(r)
        if r.get("output") and not os.path.isabs(r["output"]):
            key = r["output"]
            r["output"] = str(out / r["output"])
        else:
            key = r["source"]
        if in_shard(key, run.shard):
            extra.append(r)
    LabelSet.of(scheme, numbering).write(out)
    worker = functools.partial(merge_worker, numbering=numbering, scheme=scheme.spec, strict=strict,
                               overwrite=run.overwrite, shash=shash,
                               size=(int(size[0]), int(size[1])) if size else None)
    return run_batch(tasks, worker, manifest=out / "manifest.parquet", settings=settings, run=run,
                     label="merging masks", extra_rows=extra)


__all__ = ["ImageMasks", "MergeArgs", "consensus", "discover", "image_size", "merge_masks", "merge_worker", "paint",
           "read_mask", "split_mask_name"]
