"""One interface for every dataset the studies read (paper section 5, protocol section 6).

An adapter reads a dataset in its own published layout, with no conversion
by hand, and tells the rest of the package four things:

* its classes (id -> name), which id is background and which (if any) is void;
* the default expert (target) class;
* the items of each official split: ``(key, image_path, label_path, group)``,
  where ``group`` is the unit of domain shift (the city for Cityscapes, the
  patient for CSAW-S, a sub-folder for ``folders``; empty when there is none);
* how to read a label map into a 2-D ``uint8`` array of class ids.

Missing or unpaired files are *problems*: :meth:`DatasetAdapter.scan`
returns them as one-line messages next to the usable items, so one bad file
never hides the rest; :meth:`DatasetAdapter.items` raises the first one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, NamedTuple

import numpy as np

from ...errors import InputError, one_line
from ...limits import check_pixels


class Item(NamedTuple):
    """One image of a dataset and its label map: ``key, image, label, group = item``."""

    key: str
    image: Path
    label: Path
    group: str = ""


@dataclass(frozen=True)
class Problem:
    """A file of a split that cannot be used, with the reason in one line."""

    source: str
    error: str


class DatasetAdapter:
    """Base class of the dataset adapters (see the module docstring).

    Subclasses set the class attributes and implement :meth:`scan`.
    """

    #: registry name (``cityscapes``, ``voc``, ``csaws``, ``folders``)
    name: ClassVar[str] = ""
    #: the official splits this layout has, in order
    splits: ClassVar[tuple[str, ...]] = ()
    #: image channels stored by ``prepare_dataset`` (3: colour, 1: grey)
    channels: int = 3

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        if not self.root.is_dir():
            raise InputError(f"{self.root}: dataset folder not found")

    # ------------------------------------------------------------ class table
    @property
    def classes(self) -> dict[int, str]:
        """Class id -> name (ids 0..K-1)."""
        raise NotImplementedError

    @property
    def class_names(self) -> list[str]:
        """Class names indexed by id."""
        c = self.classes
        return [c[i] for i in range(len(c))]

    background: int = 0
    #: id of pixels that are ignored (not a class), or None when every id is a class
    void: int | None = None
    #: the expert class of the paper's study on this dataset
    target_default: str = "person"

    def colours(self) -> list[tuple[int, int, int]]:
        """Display colour per class id (grey levels when the dataset has no convention)."""
        n = len(self.classes)
        return [(int(v), int(v), int(v)) for v in np.linspace(0, 255, max(n, 2))[:n]]

    # ------------------------------------------------------------ items
    def scan(self, split: str) -> tuple[list[Item], list[Problem]]:
        """Usable items of ``split`` in a stable order, and the problems found."""
        raise NotImplementedError

    def items(self, split: str) -> Iterator[Item]:
        """Items of ``split``; raises :class:`InputError` at the first problem."""
        found, problems = self.scan(split)
        if problems:
            p = problems[0]
            more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
            raise InputError(f"{p.source}: {p.error}{more}")
        yield from found

    def _check_split(self, split: str) -> None:
        if split not in self.splits:
            raise InputError(f"{self.name}: unknown split {split!r}; this layout has {', '.join(self.splits)}")

    # ------------------------------------------------------------ reading
    def read_image(self, path: str | os.PathLike) -> np.ndarray:
        """The image as uint8 (H, W, channels)."""
        return read_image(path, self.channels)

    def read_label(self, path: str | os.PathLike) -> np.ndarray:
        """The label map as a 2-D uint8 array of class ids; ids outside the class table (and not void) are an error."""
        labels = read_label_map(path)
        check_ids(labels, len(self.classes), self.void, path)
        return labels

    def coarse_label(self, item: Item) -> Path | None:
        """A coarse label map of ``item`` (Cityscapes ``gtCoarse``), or None; other layouts have none."""
        return None

    def has_coarse(self) -> bool:
        """Whether the layout has coarse label maps."""
        return False

    def describe(self) -> dict:
        """JSON-able record of the class table (written to splits.json and the HDF5 attributes)."""
        return {"dataset": self.name, "classes": self.class_names, "background": self.background,
                "void": self.void, "target_default": self.target_default, "channels": self.channels}


# --------------------------------------------------------------------------- readers


def _open(path: str | os.PathLike):
    from PIL import Image

    try:
        im = Image.open(path)
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure is this file's problem
        raise InputError(f"{path}: cannot read as an image ({one_line(exc)})") from None
    check_pixels((im.height, im.width), path)
    return im


def read_image(path: str | os.PathLike, channels: int = 3) -> np.ndarray:
    """Decode an 8-bit image into (H, W, channels) uint8.

    Grey images are repeated into 3 channels when ``channels`` is 3; an alpha
    channel is dropped; a colour image where 1 channel is wanted is an error.
    """
    with _open(path) as im:
        try:
            im.load()
        except Exception as exc:  # noqa: BLE001
            raise InputError(f"{path}: cannot decode ({one_line(exc)})") from None
        mode = im.mode
        if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            raise InputError(f"{path}: {mode} image; expected 8-bit grey or colour")
        if channels == 3:
            arr = np.asarray(im.convert("RGB"))
        elif mode in ("L", "P") or (mode == "LA"):
            arr = np.asarray(im.convert("L"))[:, :, None]
        else:
            raise InputError(f"{path}: colour image ({mode}) in a grey dataset")
    return np.ascontiguousarray(arr, dtype=np.uint8)


def read_label_map(path: str | os.PathLike) -> np.ndarray:
    """Decode a label map: a palette PNG gives its indices, a grey PNG its values (uint8, 2-D)."""
    with _open(path) as im:
        try:
            im.load()
        except Exception as exc:  # noqa: BLE001
            raise InputError(f"{path}: cannot decode ({one_line(exc)})") from None
        if im.mode not in ("P", "L"):
            raise InputError(f"{path}: label map is {im.mode}; expected a palette or 8-bit grey PNG of class ids")
        arr = np.asarray(im)
    return np.ascontiguousarray(arr, dtype=np.uint8)


def check_ids(labels: np.ndarray, n_classes: int, void: int | None, path: object) -> np.ndarray:
    """Raise when ``labels`` holds ids that are neither a class (0..n-1) nor void; return the counts per id."""
    counts = np.bincount(labels.reshape(-1), minlength=256)
    bad = np.flatnonzero(counts[n_classes:]) + n_classes
    if void is not None:
        bad = bad[bad != void]
    if bad.size:
        shown = ", ".join(str(int(b)) for b in bad[:6])
        void_txt = f" or void {void}" if void is not None else ""
        raise InputError(f"{path}: label map holds id(s) {shown} outside the classes 0..{n_classes - 1}{void_txt}")
    return counts


def seeded_take(keys: Sequence[str], k: int, seed: int, *stream: int) -> list[str]:
    """``k`` of ``keys`` picked at random (deterministic for ``seed`` and ``stream``), in ``keys`` order."""
    rng = np.random.default_rng([int(seed), *stream])
    picked = set(rng.choice(len(keys), size=k, replace=False).tolist()) if k else set()
    return [key for i, key in enumerate(keys) if i in picked]
