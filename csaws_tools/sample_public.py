"""Tiny synthetic datasets in the Cityscapes and PASCAL VOC 2012 layouts (for tests, docs and dry runs).

The real datasets need registration and are never downloaded by this
package; these stand-ins have exactly the folder and file names the
adapters of :mod:`csaws_tools.train.datasets` read, drawn from a seed:

* ``cityscapes``: street-like scenes (sky, building, road, sidewalk, ego
  vehicle, poles, cars) with pedestrians (``person``) and cyclists
  (``rider`` on a ``bicycle``, the confuser) in ``leftImg8bit/{train,val}`` and
  ``gtFine/{train,val}`` (``*_gtFine_labelIds.png``), plus ``gtCoarse/train``
  (blobby polygons, unlabeled elsewhere). Each city has its own colour cast
  and brightness, so ordering by city is a visible domain shift.
* ``voc``: ``VOCdevkit/VOC2012`` with JPEG images of varied sizes, palette
  PNG label maps whose objects have a void (255) border as in the real
  data, and ``ImageSets/Segmentation/{train,val,trainval}.txt``. Person in
  about half the images; bicycle, car, dog and chair as other classes.

Shapes are drawn with vectorised numpy masks; the same seed and options give
identical files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .atomic import atomic_path
from .errors import OutputError, SettingsError
from .png import write_png

KINDS = ("cityscapes", "voc")
#: (split, city, images) of the synthetic Cityscapes; one city holds a single image.
CITIES: tuple[tuple[str, str, int], ...] = (
    ("train", "aachen", 6), ("train", "bremen", 5), ("train", "jena", 6), ("train", "ulm", 1),
    ("val", "frankfurt", 3), ("val", "lindau", 3),
)
CITYSCAPES_SIZE = (128, 256)


@dataclass
class PublicSample:
    """What :func:`write_public_sample` wrote."""

    kind: str
    root: Path
    counts: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        parts = ", ".join(f"{k} {v}" for k, v in self.counts.items())
        return f"synthetic {self.kind} in {self.root}: {parts} images"


def _ellipse(h: int, w: int, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    y, x = np.ogrid[:h, :w]
    return ((y - cy) / max(ry, 0.5)) ** 2 + ((x - cx) / max(rx, 0.5)) ** 2 <= 1.0


def _rect(h: int, w: int, top: int, left: int, bottom: int, right: int) -> np.ndarray:
    m = np.zeros((h, w), dtype=bool)
    m[max(top, 0):max(bottom, 0), max(left, 0):max(right, 0)] = True
    return m


def _dilate(mask: np.ndarray, iterations: int = 1) -> np.ndarray:
    """Binary dilation by a 3 x 3 square, ``iterations`` times (numpy shifts)."""
    m = mask.copy()
    for _ in range(iterations):
        p = np.pad(m, 1)
        m = p[:-2, :-2] | p[:-2, 1:-1] | p[:-2, 2:] | p[1:-1, :-2] | p[1:-1, 1:-1] | p[1:-1, 2:] | \
            p[2:, :-2] | p[2:, 1:-1] | p[2:, 2:]
    return m


def _erode(mask: np.ndarray, iterations: int = 1) -> np.ndarray:
    return ~_dilate(~mask, iterations)


def _edges(labels: np.ndarray) -> np.ndarray:
    """Pixels with a 4-neighbour of another id."""
    e = np.zeros(labels.shape, dtype=bool)
    d0 = labels[1:, :] != labels[:-1, :]
    d1 = labels[:, 1:] != labels[:, :-1]
    e[1:, :] |= d0
    e[:-1, :] |= d0
    e[:, 1:] |= d1
    e[:, :-1] |= d1
    return e


def _render(labels: np.ndarray, colours: np.ndarray, rng: np.random.Generator, tint: np.ndarray,
            gain: float) -> np.ndarray:
    """Class colours with a per-domain tint and gain, plus noise: (H, W, 3) uint8."""
    img = colours[labels].astype(np.float32) * gain + tint
    img += rng.normal(0.0, 12.0, size=img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def _cityscapes_scene(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """One label map in Cityscapes label ids."""
    lab = np.full((h, w), 23, dtype=np.uint8)  # sky
    horizon = int(h * rng.uniform(0.35, 0.5))
    lab[int(h * 0.15):horizon, :] = 11  # building
    for _ in range(rng.integers(1, 3)):  # vegetation
        cx = rng.uniform(0, w)
        lab[_ellipse(h, w, horizon - h * 0.1, cx, h * 0.12, w * 0.08)] = 21
    lab[horizon:, :] = 7  # road
    side = int(w * rng.uniform(0.1, 0.25))
    lab[horizon:, :side] = 8  # sidewalk
    lab[horizon:horizon + 3, side:] = 6  # ground strip
    for _ in range(rng.integers(1, 4)):  # poles and a traffic sign
        x = int(rng.uniform(0.05, 0.95) * w)
        lab[int(h * 0.2):horizon + int(h * 0.1), x:x + 2] = 17
        lab[int(h * 0.2):int(h * 0.2) + 5, x - 2:x + 4] = 20
    for _ in range(rng.integers(0, 3)):  # cars
        cx = rng.uniform(0.3, 0.9) * w
        cy = horizon + rng.uniform(0.15, 0.3) * h
        cw, ch = rng.uniform(0.08, 0.15) * w, rng.uniform(0.06, 0.1) * h
        lab[_rect(h, w, int(cy - ch), int(cx - cw), int(cy + ch), int(cx + cw))] = 26
    for _ in range(rng.integers(0, 4)):  # pedestrians: head + body
        cx = rng.uniform(0.05, 0.95) * w
        feet = horizon + rng.uniform(0.05, 0.35) * h
        tall = rng.uniform(0.12, 0.25) * h
        lab[_ellipse(h, w, feet - tall / 2, cx, tall / 2, tall / 7)] = 24
        lab[_ellipse(h, w, feet - tall * 1.05, cx, tall / 9, tall / 9)] = 24
    for _ in range(rng.integers(0, 2)):  # cyclists: rider on a bicycle
        cx = rng.uniform(0.1, 0.9) * w
        ground = horizon + rng.uniform(0.1, 0.35) * h
        size = rng.uniform(0.1, 0.18) * h
        lab[_ellipse(h, w, ground - size * 0.35, cx - size * 0.5, size * 0.3, size * 0.3)] = 33
        lab[_ellipse(h, w, ground - size * 0.35, cx + size * 0.5, size * 0.3, size * 0.3)] = 33
        lab[_ellipse(h, w, ground - size * 1.1, cx, size * 0.5, size * 0.18)] = 25
    lab[int(h * 0.9):, :] = 1  # ego vehicle
    lab[:2, :] = 0
    lab[:, :2] = 0  # unlabeled frame
    lab[-2:, :] = 2  # rectification border
    return lab


def _coarse(fine: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A coarse annotation: object blobs grown or shrunk, boundaries and some regions left unlabeled (0)."""
    out = np.zeros_like(fine)
    for cid in np.unique(fine):
        if cid in (0, 2):
            continue
        m = fine == cid
        m = _erode(m, 2) if rng.random() < 0.7 else _dilate(m, 1)
        if rng.random() < 0.1:
            continue  # a region the coarse annotator skipped
        out[m & (out == 0)] = cid
    return out


#: Colours the synthetic street scenes are painted with (label id -> RGB); ids not drawn are grey.
_STREET_COLOURS = {0: (20, 20, 20), 1: (40, 30, 60), 2: (0, 0, 0), 6: (81, 0, 81), 7: (128, 64, 128),
                   8: (244, 35, 232), 11: (70, 70, 70), 17: (153, 153, 153), 20: (220, 220, 0),
                   21: (107, 142, 35), 23: (70, 130, 180), 24: (220, 20, 60), 25: (255, 0, 0), 26: (0, 0, 142),
                   33: (119, 11, 32)}


def pascal_palette(n: int = 256) -> list[tuple[int, int, int]]:
    """The PASCAL VOC colour map (class id bits spread over the high bits of R, G and B)."""
    c = np.arange(n)
    rgb = np.zeros((n, 3), dtype=np.int64)
    for shift in range(7, -1, -1):
        for ch in range(3):
            rgb[:, ch] |= ((c >> ch) & 1) << shift
        c = c >> 3
    return [(int(r), int(g), int(b)) for r, g, b in rgb.tolist()]


def write_cityscapes_sample(out: Path, seed: int, size: tuple[int, int]) -> dict[str, int]:
    colours = np.full((256, 3), 128, dtype=np.float32)
    for cid, col in _STREET_COLOURS.items():
        colours[cid] = col
    h, w = size
    counts: dict[str, int] = {}
    for ci, (split, city, n) in enumerate(CITIES):
        crng = np.random.default_rng([seed, ci])
        tint = crng.uniform(-35, 35, size=3).astype(np.float32)
        gain = float(crng.uniform(0.7, 1.15))
        for k in range(n):
            rng = np.random.default_rng([seed, ci, k])
            key = f"{city}_{ci:06d}_{k * 19 + 19:06d}"
            lab = _cityscapes_scene(h, w, rng)
            img = _render(lab, colours, rng, tint, gain)
            write_png(out / "leftImg8bit" / split / city / f"{key}_leftImg8bit.png", img)
            write_png(out / "gtFine" / split / city / f"{key}_gtFine_labelIds.png", lab)
            write_png(out / "gtCoarse" / split / city / f"{key}_gtCoarse_labelIds.png", _coarse(lab, rng))
            counts[split] = counts.get(split, 0) + 1
    return counts


VOC_OBJECTS = ((2, 0.3), (7, 0.3), (12, 0.25), (9, 0.2), (15, 0.55))  # class id, probability per image (person on top)


def _voc_scene(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    lab = np.zeros((h, w), dtype=np.uint8)
    drawn = np.zeros((h, w), dtype=bool)
    for cid, p in VOC_OBJECTS:
        if rng.random() >= p:
            continue
        for _ in range(rng.integers(1, 3)):
            cy, cx = rng.uniform(0.25, 0.75) * h, rng.uniform(0.15, 0.85) * w
            ry, rx = rng.uniform(0.1, 0.3) * h, rng.uniform(0.06, 0.2) * w
            m = _ellipse(h, w, cy, cx, ry, rx) if cid in (15, 12) else _rect(h, w, int(cy - ry), int(cx - rx),
                                                                           int(cy + ry), int(cx + rx))
            lab[m] = cid
            drawn |= m
    # void (255) band along every object boundary, as in the real annotations
    near = _dilate(drawn, 2)
    border = near & ~_erode(drawn, 1)
    lab[(border | _edges(lab)) & near] = 255
    return lab


def write_voc_sample(out: Path, seed: int, size: tuple[int, int] | None, n_train: int = 12,
                     n_val: int = 10) -> dict[str, int]:
    from PIL import Image

    palette = pascal_palette(256)
    colours = np.asarray(palette, dtype=np.float32)
    colours[0] = (110, 120, 100)
    colours[255] = (128, 128, 128)
    voc = out / "VOCdevkit" / "VOC2012"
    lists: dict[str, list[str]] = {"train": [], "val": []}
    for i in range(n_train + n_val):
        rng = np.random.default_rng([seed, 1000 + i])
        h, w = size if size else (int(rng.integers(90, 140)), int(rng.integers(120, 180)))
        key = f"2008_{i + 1:06d}"
        lab = _voc_scene(h, w, rng)
        img = _render(np.where(lab == 255, 0, lab), colours, rng, rng.uniform(-20, 20, size=3).astype(np.float32), 1.0)
        (voc / "JPEGImages").mkdir(parents=True, exist_ok=True)
        with atomic_path(voc / "JPEGImages" / f"{key}.jpg") as tmp:
            Image.fromarray(img).save(tmp, format="JPEG", quality=92)
        write_png(voc / "SegmentationClass" / f"{key}.png", lab, palette=palette)
        lists["train" if i < n_train else "val"].append(key)
    sets = voc / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True, exist_ok=True)
    for name, keys in (("train", lists["train"]), ("val", lists["val"]), ("trainval", lists["train"] + lists["val"])):
        with atomic_path(sets / f"{name}.txt") as tmp:
            tmp.write_text("".join(k + "\n" for k in keys))
    return {"train": n_train, "val": n_val}


def write_public_sample(kind: str, out: str | os.PathLike, *, seed: int = 0,
                        size: tuple[int, int] | None = None) -> PublicSample:
    """Write a synthetic ``cityscapes`` or ``voc`` dataset into ``out`` (module docstring)."""
    out = Path(out)
    if kind not in KINDS:
        raise OutputError(f"unknown sample kind {kind!r}; expected {' or '.join(KINDS)}")
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out} exists and is not a folder")
    marker = {"cityscapes": "leftImg8bit", "voc": "VOCdevkit"}[kind]
    if out.is_dir() and any(out.iterdir()) and not (out / marker).is_dir():
        raise OutputError(f"{out} is not empty and not a previous {kind} sample; give a new folder")
    if size is not None and (size[0] < 16 or size[1] < 16):
        raise SettingsError(f"size={tuple(size)!r} is too small for a scene; use at least (16, 16)", param="size")
    if kind == "cityscapes":
        counts = write_cityscapes_sample(out, seed, size or CITYSCAPES_SIZE)
    else:
        counts = write_voc_sample(out, seed, size)
    return PublicSample(kind=kind, root=out, counts=counts)
