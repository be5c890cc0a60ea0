"""PASCAL VOC 2012 segmentation in its published layout (Everingham et al. 2015; paper section 5.1).

Expected under ROOT (``VOCtrainval_11-May-2012.tar`` unpacked; ROOT may be
the folder holding ``VOCdevkit``, ``VOCdevkit`` itself, or ``VOC2012``)::

    VOC2012/JPEGImages/<id>.jpg
    VOC2012/SegmentationClass/<id>.png          palette PNG: the index is the class id, 255 void
    VOC2012/ImageSets/Segmentation/{train,val}.txt

21 classes (background 0 ... tvmonitor 20), target person (15); 255 marks
object borders and difficult regions and is ignored (void).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ...errors import InputError
from .base import DatasetAdapter, Item, Problem

VOC_CLASSES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
PERSON = 15
VOID = 255


def voc_palette(n: int = 256) -> list[tuple[int, int, int]]:
    """The VOC colour map: class id bits spread over the high bits of R, G and B."""
    ids = np.arange(n)
    rgb = np.zeros((n, 3), dtype=np.int64)
    c = ids.copy()
    for shift in range(7, -1, -1):  # 8 rounds of 3 bits, most significant first
        for ch in range(3):
            rgb[:, ch] |= ((c >> ch) & 1) << shift
        c >>= 3
    return [(int(r), int(g), int(b)) for r, g, b in rgb.tolist()]


def find_voc_root(root: Path) -> Path:
    """The ``VOC2012`` folder under ``root`` (``root`` itself, ``root/VOC2012`` or ``root/VOCdevkit/VOC2012``)."""
    for cand in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (cand / "JPEGImages").is_dir() and (cand / "ImageSets" / "Segmentation").is_dir():
            return cand
    raise InputError(f"{root}: not a PASCAL VOC 2012 folder; expected VOC2012/JPEGImages and "
                     "VOC2012/ImageSets/Segmentation under it (VOCdevkit/VOC2012 also works)")


class VOCAdapter(DatasetAdapter):
    """JPEGImages + SegmentationClass + ImageSets/Segmentation lists of VOC 2012."""

    name = "voc"
    splits = ("train", "val")
    channels = 3
    background = 0
    void = VOID
    target_default = "person"

    def __init__(self, root: str | os.PathLike):
        super().__init__(root)
        self.voc = find_voc_root(self.root)

    @property
    def classes(self) -> dict[int, str]:
        return dict(enumerate(VOC_CLASSES))

    def colours(self) -> list[tuple[int, int, int]]:
        return voc_palette(len(VOC_CLASSES))

    def scan(self, split: str) -> tuple[list[Item], list[Problem]]:
        self._check_split(split)
        lst = self.voc / "ImageSets" / "Segmentation" / f"{split}.txt"
        try:
            lines = lst.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            return [], [Problem(str(lst), f"cannot read the image list ({exc.strerror or exc})")]
        items: list[Item] = []
        problems: list[Problem] = []
        seen: set[str] = set()
        for n, line in enumerate(lines, 1):
            key = line.strip().split()[0] if line.strip() else ""
            if not key or key in seen:
                continue
            seen.add(key)
            if "/" in key or "\\" in key or key.startswith("."):
                problems.append(Problem(f"{lst}:{n}", f"{key!r} is not an image id"))
                continue
            image = self.voc / "JPEGImages" / f"{key}.jpg"
            label = self.voc / "SegmentationClass" / f"{key}.png"
            if not image.is_file():
                problems.append(Problem(f"{lst}:{n}", f"lists {key} but JPEGImages/{key}.jpg is missing"))
                continue
            if not label.is_file():
                problems.append(Problem(f"{lst}:{n}", f"lists {key} but SegmentationClass/{key}.png is missing"))
                continue
            items.append(Item(key=key, image=image, label=label, group=""))
        if not items and not problems:
            problems.append(Problem(str(lst), "the image list is empty"))
        return items, problems
