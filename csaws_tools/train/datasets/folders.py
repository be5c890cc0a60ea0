"""A user's own data: a folder of images, a folder of label maps and a ``labels.json``.

Layout under ROOT (names of the two sub-folders can be changed)::

    images/<sub/path/name>.<png|jpg|jpeg|tif|tiff|bmp>
    labels/<sub/path/name>.png     8-bit grey or palette PNG of class ids
    labels.json                    in ROOT or labels/: {"classes": [{"name": ..., "id": 0}, ...]}

``labels.json`` is the file ``csaws-prepare merge-masks`` writes (read with
the same reader, :func:`csaws_tools.stats.names_from_labels_json`); two
optional keys are understood: ``"void"`` (the id of ignored pixels; default
255 when 255 is not a class) and ``"background"`` (default: the class named
background, else 0). Images and label maps are paired by their path
relative to the two folders, without suffix; the group (for domain-shift
ordering) is the first sub-folder of ``images/``, empty for files at the top.
"""

from __future__ import annotations

import os
from pathlib import Path

from ...errors import InputError
from ...files import files_under
from ...jsonfile import read_json_object
from .base import DatasetAdapter, Item, Problem

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


class FoldersAdapter(DatasetAdapter):
    """Images + label maps + labels.json (see the module docstring)."""

    name = "folders"
    splits = ("all",)
    target_default = "person"

    def __init__(self, root: str | os.PathLike, images: str = "images", labels: str = "labels",
                 channels: int = 3):
        super().__init__(root)
        from ...stats import find_labels_json, names_from_labels_json

        self.images_dir = self.root / images
        self.labels_dir = self.root / labels
        for d, what in ((self.images_dir, "images"), (self.labels_dir, "label maps")):
            if not d.is_dir():
                raise InputError(f"{d}: folder of {what} not found")
        if channels not in (1, 3):
            raise InputError(f"channels must be 1 or 3, not {channels}")
        self.channels = channels
        found = self.labels_dir / "labels.json"
        lj = found if found.is_file() else find_labels_json(self.root, max_up=0)
        if lj is None or not lj.is_file():
            raise InputError(f"{self.root}: no labels.json (in {self.root} or {self.labels_dir}) naming the classes")
        self.labels_json = lj
        self._names = names_from_labels_json(lj)
        doc = read_json_object(lj, "a labels.json")
        n = len(self._names)
        void = doc.get("void", 255 if n <= 255 else None)
        if void is not None and (not isinstance(void, int) or not 0 <= void <= 255 or void < n):
            raise InputError(f"{lj}: void must be an id 0..255 that is not a class (classes are 0..{n - 1})")
        self.void = void
        bg = doc.get("background")
        if bg is None:
            lower = [x.lower() for x in self._names]
            bg = lower.index("background") if "background" in lower else 0
        if not isinstance(bg, int) or not 0 <= bg < n:
            raise InputError(f"{lj}: background must be a class id 0..{n - 1}")
        self.background = bg
        if isinstance(doc.get("target"), str):
            self.target_default = doc["target"]
        self._colours: dict[int, tuple[int, int, int]] = {}
        for row in doc.get("classes", []):
            if isinstance(row, dict) and isinstance(row.get("colour"), list) and len(row["colour"]) == 3:
                r, g, b = (int(v) for v in row["colour"])
                self._colours[int(row["id"])] = (r, g, b)

    @property
    def classes(self) -> dict[int, str]:
        return dict(enumerate(self._names))

    def colours(self) -> list[tuple[int, int, int]]:
        base = super().colours()
        return [self._colours.get(i, base[i]) for i in range(len(self._names))]

    def scan(self, split: str = "all") -> tuple[list[Item], list[Problem]]:
        self._check_split(split)
        labels: dict[str, Path] = {}
        for p in sorted(self.labels_dir.rglob("*.png")):
            if not p.name.startswith("."):
                labels[p.relative_to(self.labels_dir).with_suffix("").as_posix()] = p
        items: list[Item] = []
        problems: list[Problem] = []
        seen: set[str] = set()
        for p in files_under(self.images_dir, IMAGE_SUFFIXES):
            key = p.relative_to(self.images_dir).with_suffix("").as_posix()
            if key in seen:
                problems.append(Problem(str(p), f"a second image with the key {key} (another suffix)"))
                continue
            seen.add(key)
            lab = labels.get(key)
            if lab is None:
                problems.append(Problem(str(p), f"no label map {self.labels_dir.name}/{key}.png"))
                continue
            parts = key.split("/")
            items.append(Item(key=key, image=p, label=lab, group=parts[0] if len(parts) > 1 else ""))
        for key, lab in labels.items():
            if key not in seen:
                problems.append(Problem(str(lab), f"label map without an image {self.images_dir.name}/{key}.*"))
        if not items and not problems:
            problems.append(Problem(str(self.images_dir), "no images"))
        return items, problems
