"""The inputs of the patches stage: image and label-map folders paired by image id, classes, checked reads."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..errors import CsawsError, InputError, SettingsError, one_line
from ..execution.manifests import escape_text, needs_escape
from ..files import index_by_stem
from ..masks.classes import (
    ALL_CLASSES,
    class_ids,
    split_mask_stem,
)
from ..masks.labelset import LabelSet
from .sampling import NUM_CLASSES

# --------------------------------------------------------------------------- inputs


def _undecodable_name(path: Path) -> str | None:
    if needs_escape(str(path)):
        return (f"{escape_text(str(path))} found: its name is not valid UTF-8 and cannot be stored as an "
                "image id; rename it")
    return None


def _index_pngs(folder: Path, what: str) -> tuple[dict[str, Path], list[str]]:
    """id -> path for the PNGs under ``folder`` (class masks and hidden files passed over)."""
    paths = (p for p in sorted(folder.rglob("*.png"))
             if not p.name.startswith(".") and split_mask_stem(p.stem)[1] is None)
    return index_by_stem(paths, what, reject=_undecodable_name)


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
    try:
        labels = LabelSet.near(folder, max_up=2)
    except CsawsError:
        return  # not a labels.json merge-masks wrote: nothing it says can be checked
    if labels is None or labels.numbering is None:
        return
    path, spec = labels.path, labels.scheme
    if labels.numbering != "standard":
        raise InputError(f"{path}: the label maps use the {labels.numbering!r} numbering; crops need the "
                         "standard one (background 0, cancer 1, ...): rerun merge_masks without numbering=")
    if spec != "all":
        raise InputError(f"{path}: the label maps were written with label scheme {spec!r}; crops store all 12 "
                         "classes and apply a scheme on reading: rerun merge_masks without labels=")


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


def _read_checked(path: Path, what: str) -> np.ndarray:
    """A PNG whose header passed the pixel limit before decoding; other failures are one line naming ``what``."""
    from ..limits import check_pixels
    from ..png import png_size, read_png

    try:
        check_pixels(png_size(path), path)
        return read_png(path)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"cannot read {what}: {one_line(exc)}") from None


def read_pair(image_path: Path, mask_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read an 8-bit image (first channel of RGB) and its label map; check they match."""
    image = _read_checked(image_path, f"image {image_path.name}")
    mask = _read_checked(mask_path, f"label map {mask_path}")
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


__all__ = [
    "check_input_folders",
    "check_standard_maps",
    "pair_inputs",
    "parse_classes",
    "read_pair",
]
