"""CSAW-S as the rest of the package prepares it, read only (protocol sections 1-3).

ROOT is the output of ``csaws-prepare merge-masks`` (``trainval/<id>.png``,
``test/consensus/<id>.png``, ``labels.json``) and ``images`` the folder of
8-bit images (``dicom2png`` output or the release PNGs), searched
recursively and matched by image id exactly as ``csaws-prepare patches``
does. Classes are the standard numbering (background 0, cancer 1, ...,
mammary gland 11), target cancer, no void; the group is the patient.
This adapter only lists and reads; the CSAW-S experiment itself keeps using
class-centred patches (``csaws-train prepare``).
"""

from __future__ import annotations

import os
from pathlib import Path

from ...classes import COLOURS, class_names
from ...errors import InputError
from .base import DatasetAdapter, Item, Problem


class CsawsAdapter(DatasetAdapter):
    """merge-masks label maps + 8-bit images of CSAW-S."""

    name = "csaws"
    splits = ("trainval", "test")
    channels = 1
    background = 0
    void = None
    target_default = "cancer"

    def __init__(self, root: str | os.PathLike, images: str | os.PathLike | None = None):
        super().__init__(root)
        from ...patches import check_standard_maps

        if images is None:
            raise InputError("the csaws dataset needs the image folder too (images=), beside the label maps root",
                             param="images")
        self.images_dir = Path(images)
        if not self.images_dir.is_dir():
            raise InputError(f"{self.images_dir}: image folder not found")
        if not (self.root / "trainval").is_dir():
            raise InputError(f"{self.root}: no trainval/ folder (expected the output of merge-masks)")
        check_standard_maps(self.root / "trainval")

    @property
    def classes(self) -> dict[int, str]:
        return dict(enumerate(class_names("standard")))

    def colours(self) -> list[tuple[int, int, int]]:
        return [COLOURS[n] for n in class_names("standard")]

    def scan(self, split: str) -> tuple[list[Item], list[Problem]]:
        from ...patches import pair_inputs
        from ...splits import patient_of

        self._check_split(split)
        maps = self.root / ("trainval" if split == "trainval" else "test/consensus")
        if not maps.is_dir():
            return [], [Problem(str(maps), "folder not found")]
        ids = sorted(p.stem for p in maps.glob("*.png") if not p.name.startswith("."))
        if not ids:
            return [], [Problem(str(maps), "no label maps")]
        pairs, errors = pair_inputs(self.images_dir, maps, ids)
        items = [Item(key=i, image=Path(ip), label=Path(mp), group=patient_of(i)) for i, ip, mp in pairs]
        problems = [Problem(str(r.get("source")), str(r.get("error"))) for r in errors]
        return items, problems
