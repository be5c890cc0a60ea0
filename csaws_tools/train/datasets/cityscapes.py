"""Cityscapes in its published layout (Cordts et al. 2016; paper section 5.1).

Expected folders under ROOT (the names of the ``leftImg8bit_trainvaltest.zip``,
``gtFine_trainvaltest.zip`` and, for the coarse study, ``gtCoarse.zip``
downloads, unpacked side by side)::

    leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    gtFine/{train,val}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png
    gtCoarse/{train,train_extra}/<city>/<city>_<seq>_<frame>_gtCoarse_labelIds.png   (optional)

All 34 label ids 0..33 of ``*_labelIds.png`` are classes (the paper uses
all of them, not the usual 19 training ids); id 0 ``unlabeled`` plays the
background (what the baseline merges the other classes into, as the
authors' code does), and there is no void. The city is read from the file
name. Other files of the download (``_color``, ``_instanceIds``,
``_polygons.json``) are ignored.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .base import DatasetAdapter, Item, Problem

#: The official label names, ids 0..33 (cityscapesScripts labels.py); license plate (-1) is never drawn.
CITYSCAPES_CLASSES: tuple[str, ...] = (
    "unlabeled", "ego vehicle", "rectification border", "out of roi", "static", "dynamic", "ground", "road",
    "sidewalk", "parking", "rail track", "building", "wall", "fence", "guard rail", "bridge", "tunnel", "pole",
    "polegroup", "traffic light", "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car",
    "truck", "bus", "caravan", "trailer", "train", "motorcycle", "bicycle",
)
#: The official display colours, ids 0..33.
CITYSCAPES_COLOURS: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0), (0, 0, 0), (0, 0, 0), (0, 0, 0), (0, 0, 0), (111, 74, 0), (81, 0, 81), (128, 64, 128),
    (244, 35, 232), (250, 170, 160), (230, 150, 140), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (180, 165, 180), (150, 100, 100), (150, 120, 90), (153, 153, 153), (153, 153, 153), (250, 170, 30),
    (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142),
    (0, 0, 70), (0, 60, 100), (0, 0, 90), (0, 0, 110), (0, 80, 100), (0, 0, 230), (119, 11, 32),
)
PERSON, RIDER = 24, 25
IMAGE_SUFFIX = "_leftImg8bit.png"
_NAME = re.compile(r"^(?P<city>[^_/]+)_(?P<seq>\d+)_(?P<frame>\d+)_leftImg8bit\.png$")


class CityscapesAdapter(DatasetAdapter):
    """``leftImg8bit`` + ``gtFine`` (+ optional ``gtCoarse``) of one Cityscapes root."""

    name = "cityscapes"
    splits = ("train", "val")
    channels = 3
    background = 0
    void = None
    target_default = "person"

    def __init__(self, root: str | os.PathLike):
        super().__init__(root)
        from ...errors import InputError

        if not (self.root / "leftImg8bit").is_dir():
            hint = next((p for p in self.root.rglob("leftImg8bit") if p.is_dir()), None) if self.root.is_dir() else None
            extra = f" (found {hint}; pass {hint.parent})" if hint else ""
            raise InputError(f"{self.root}: no leftImg8bit/ folder; expected a Cityscapes root with "
                             f"leftImg8bit/ and gtFine/{extra}")

    @property
    def classes(self) -> dict[int, str]:
        return dict(enumerate(CITYSCAPES_CLASSES))

    def colours(self) -> list[tuple[int, int, int]]:
        return list(CITYSCAPES_COLOURS)

    def scan(self, split: str) -> tuple[list[Item], list[Problem]]:
        self._check_split(split)
        img_dir = self.root / "leftImg8bit" / split
        gt_dir = self.root / "gtFine" / split
        items: list[Item] = []
        problems: list[Problem] = []
        if not img_dir.is_dir():
            return [], [Problem(str(img_dir), "folder not found (Cityscapes leftImg8bit split)")]
        for path in sorted(img_dir.rglob(f"*{IMAGE_SUFFIX}")):
            if path.name.startswith("."):
                continue
            m = _NAME.match(path.name)
            if m is None:
                problems.append(Problem(str(path), "file name is not <city>_<seq>_<frame>_leftImg8bit.png"))
                continue
            key = path.name[: -len(IMAGE_SUFFIX)]
            city = m.group("city")
            label = gt_dir / path.parent.name / f"{key}_gtFine_labelIds.png"
            if not label.is_file():
                label = gt_dir / city / f"{key}_gtFine_labelIds.png"
            if not label.is_file():
                problems.append(Problem(str(path), f"no fine label map {label.relative_to(self.root)}"))
                continue
            items.append(Item(key=key, image=path, label=label, group=city))
        if not items and not problems:
            problems.append(Problem(str(img_dir), f"no *{IMAGE_SUFFIX} images"))
        return items, problems

    def coarse_label(self, item: Item) -> Path | None:
        """The ``gtCoarse`` label map of an item (train or train_extra), or None."""
        for sub in ("train", "train_extra", "val"):
            p = self.root / "gtCoarse" / sub / item.group / f"{item.key}_gtCoarse_labelIds.png"
            if p.is_file():
                return p
        return None

    def has_coarse(self) -> bool:
        return (self.root / "gtCoarse").is_dir()
