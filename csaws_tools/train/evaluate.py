"""Cancer IoU on whole test images, tiles stitched back (protocol section 5).

The test tiles (``csaws-prepare patches --tiles``) are predicted, the per-tile
class decisions are stitched into a full-image label map
(:func:`csaws_tools.reader.stitch`; pixels of dropped tiles are background),
and the cancer class is compared with every reference folder: each
``annotator_<k>`` (reported as ``expert_<k>``) and ``consensus`` (two of three).

Per reference, ``iou`` is the dataset-level IoU (confusion counts summed over
all test images, then tp / (tp + fp + fn)); ``mean_image_iou`` averages the
per-image IoU over images where cancer is predicted or annotated.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..png import png_size, read_png
from ..reader import stitch
from .augment import MEAN, STD, prepare_eval
from .data import iter_crops, open_patches
from .loop import autocast
from .metrics import CANCER, Confusion, confusion


def reference_cancer_id(test_maps: str | os.PathLike) -> int:
    """The id of cancer in the reference label maps: from the ``labels.json`` merge-masks wrote
    beside them (``MAPS/labels.json`` for ``MAPS/test``), else the standard id 1."""
    from ..masks.labelset import find_labels_json, names_from_labels_json

    path = find_labels_json(test_maps, max_up=2)
    if path is None:
        return CANCER
    names = names_from_labels_json(path)
    if "cancer" not in names:
        raise InputError(f"{path}: no cancer class in the reference label maps")
    return names.index("cancer")


def reference_folders(test_maps: str | os.PathLike) -> dict[str, Path]:
    """``{"expert_1": .../annotator_1, ..., "consensus": .../consensus}`` found under ``test_maps``."""
    root = Path(test_maps)
    if not root.is_dir():
        raise InputError(f"{root}: test label-map folder not found")
    refs: dict[str, Path] = {}
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        if d.name.startswith("annotator_"):
            refs[f"expert_{d.name[len('annotator_'):]}"] = d
        elif d.name == "consensus":
            refs["consensus"] = d
    if not refs:
        raise InputError(f"{root}: no annotator_<k> or consensus folders of test label maps")
    return refs


@torch.no_grad()
def predict_tiles(model: torch.nn.Module, tiles_file: str | os.PathLike, device: torch.device, *,
                  batch_size: int = 16, amp: bool = True, channels_last: bool = False,
                  mean: float = MEAN, std: float = STD) -> tuple[np.ndarray, object]:
    """Argmax class of every tile pixel, uint8 (n, S, S), and the tiles' index table."""
    model.eval()
    with open_patches(tiles_file) as reader:
        index = reader.index.copy()
        n, s = len(reader), reader.size
        preds = np.empty((n, s, s), dtype=np.uint8)
        for i in range(0, n, batch_size):
            img, _ = reader[i:i + batch_size]
            x = prepare_eval(torch.from_numpy(img), mean, std).to(device, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(device, amp):
                logits = model(x)["out"]
            preds[i:i + len(img)] = logits.argmax(1).to(torch.uint8).cpu().numpy()
    return preds, index


def stitch_predictions(preds: np.ndarray, index, shapes: dict[str, tuple[int, int]]) -> dict[str, np.ndarray]:
    """Full-image label maps per image id from tile predictions (``shapes``: image id -> (rows, cols))."""
    out = {}
    groups = index.groupby("image_id", sort=True).indices
    for image_id, shape in shapes.items():
        rows = groups.get(image_id)
        if rows is None:
            out[image_id] = np.zeros(shape, dtype=np.uint8)  # every tile dropped: all background
        else:
            out[image_id] = stitch(preds[rows], index.iloc[rows], shape, fill=0)
    return out


def evaluate_model(model: torch.nn.Module, tiles_file: str | os.PathLike, test_maps: str | os.PathLike,
                   device: torch.device | str = "cpu", *, batch_size: int = 16, amp: bool = True,
                   channels_last: bool = False, return_maps: bool = False) -> list[dict]:
    """One row per reference: evaluated_against, iou, mean_image_iou, tp, fp, fn, n_images.

    Every image of the tiles file (also one whose tiles were all dropped: predicted background)
    that has a label map in a reference folder counts for it.
    """
    device = torch.device(device)
    refs = reference_folders(test_maps)
    ref_cancer = reference_cancer_id(test_maps)
    preds, index = predict_tiles(model, tiles_file, device, batch_size=batch_size, amp=amp,
                                 channels_last=channels_last)
    with open_patches(tiles_file) as reader:
        # images whose tiles were all dropped are predicted background everywhere: they still count
        tiled = set(reader.image_ids)
    rows, maps_cache = [], {}
    for name, folder in refs.items():
        files = {p.stem: p for p in folder.glob("*.png")}
        ids = sorted(tiled & set(files))
        if not ids:
            raise InputError(f"{folder}: none of the tiled test images has a label map here")
        shapes = {}
        for i in ids:
            shapes[i] = png_size(files[i])
        missing = {i: shapes[i] for i in ids if i not in maps_cache}
        maps_cache.update(stitch_predictions(preds, index, missing))
        total, per_image = Confusion(), []
        for i in ids:
            ref = read_png(files[i])
            pred = maps_cache[i]
            if pred.shape != ref.shape:
                raise InputError(f"{files[i]}: size {ref.shape} differs from the tiled image's {pred.shape}")
            c = confusion(pred == CANCER, ref == ref_cancer, True)
            total = total + c
            if c.tp + c.fp + c.fn:
                per_image.append(c.iou)
        rows.append({"evaluated_against": name, "iou": total.iou,
                     "mean_image_iou": float(np.mean(per_image)) if per_image else float("nan"),
                     "tp": total.tp, "fp": total.fp, "fn": total.fn, "n_images": len(ids)})
    if return_maps:
        return rows, maps_cache  # type: ignore[return-value]
    return rows


@torch.no_grad()
def evaluate_image_set(model: torch.nn.Module, test_file: str | os.PathLike, lut: np.ndarray,
                       device: torch.device | str = "cpu", *, batch_size: int = 16, amp: bool = True,
                       channels_last: bool = False, mean: float | tuple[float, ...] = MEAN,
                       std: float | tuple[float, ...] = STD, ignore_index: int | None = None) -> list[dict]:
    """Target IoU on the resized test images of a public dataset (paper section 5.2): one row,
    ``evaluated_against="test"``.

    ``lut`` maps the file's class ids to the run's scheme (target = 1); pixels whose reference is
    ``ignore_index`` (void, 255) are counted neither as false positives nor as false negatives.
    ``iou`` pools the confusion counts over all test images; ``mean_image_iou`` averages the images
    where the target is predicted or annotated.
    """
    device = torch.device(device)
    model.eval()
    total, per_image, n = Confusion(), [], 0
    for _, img, msk in iter_crops(test_file, lut, batch_size):
        x = prepare_eval(torch.from_numpy(img), mean, std).to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp):
            pred = model(x)["out"].argmax(1).cpu().numpy()
        valid = msk != ignore_index if ignore_index is not None else np.ones(msk.shape, dtype=bool)
        for k in range(pred.shape[0]):
            c = confusion(pred[k], msk[k], CANCER, valid=valid[k])
            total = total + c
            n += 1
            if c.tp + c.fp + c.fn:
                per_image.append(c.iou)
    return [{"evaluated_against": "test", "iou": total.iou,
             "mean_image_iou": float(np.mean(per_image)) if per_image else float("nan"),
             "tp": total.tp, "fp": total.fp, "fn": total.fn, "n_images": n}]
