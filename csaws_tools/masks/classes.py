"""The CSAW-S classes: tokens, priority order, numberings and display colours.

Protocol section 1: 11 mask classes in priority order (highest first), plus
background for every pixel no mask covers. Two numberings are supported:

* ``"standard"`` (default): background 0, then the priority order
  (cancer 1, calcifications 2, ..., mammary gland 11), as nnU-Net and MONAI
  expect;
* ``"release"``: the original scripts' numbering (cancer 0, ...,
  mammary gland 10, background 11).

The ``labels.json`` tables and palettes of a numbering are built from the
identity label scheme in :mod:`csaws_tools.masks.labelset`.
"""

from __future__ import annotations

import re
from typing import Literal

from .. import defaults

Numbering = Literal["standard", "release"]
NUMBERINGS: tuple[str, ...] = defaults.NUMBERINGS

#: The 11 mask tokens as they appear in file names, in priority order (highest first).
MASK_CLASSES: tuple[str, ...] = (
    "cancer",
    "calcifications",
    "axillary_lymph_nodes",
    "thick_vessels",
    "foreign_object",
    "skin",
    "nipple",
    "text",
    "non-mammary_tissue",
    "pectoral_muscle",
    "mammary_gland",
)
BACKGROUND = "background"
#: All 12 classes in priority order, background last (lowest priority).
ALL_CLASSES: tuple[str, ...] = MASK_CLASSES + (BACKGROUND,)
#: The expert (main-task) class.
MAIN_CLASS = "cancer"
#: The complementary (non-expert) classes.
COMPLEMENTARY_CLASSES: tuple[str, ...] = MASK_CLASSES[1:]

#: Display colours (RGB), chosen to be distinguishable on a grey mammogram.
COLOURS: dict[str, tuple[int, int, int]] = {
    "background": (0, 0, 0),
    "cancer": (230, 25, 75),
    "calcifications": (255, 225, 25),
    "axillary_lymph_nodes": (245, 130, 48),
    "thick_vessels": (145, 30, 180),
    "foreign_object": (70, 240, 240),
    "skin": (240, 50, 230),
    "nipple": (210, 245, 60),
    "text": (250, 190, 190),
    "non-mammary_tissue": (0, 128, 128),
    "pectoral_muscle": (60, 180, 75),
    "mammary_gland": (0, 130, 200),
}

#: Class imbalance of the released training set (protocol section 1):
#: percent of pixels, percent of images containing the class.
PAPER_CLASS_TABLE: dict[str, tuple[float, float]] = {
    "background": (66.5, 100.0),
    "mammary_gland": (28.5, 100.0),
    "pectoral_muscle": (2.88, 50.0),
    "thick_vessels": (0.616, 77.9),
    "skin": (0.615, 100.0),
    "cancer": (0.292, 100.0),
    "non-mammary_tissue": (0.271, 55.4),
    "foreign_object": (0.124, 18.6),
    "nipple": (0.082, 86.2),
    "axillary_lymph_nodes": (0.063, 21.8),
    "text": (0.031, 80.1),
    "calcifications": (0.003, 52.2),
}


def class_ids(numbering: str = "standard") -> dict[str, int]:
    """Map every class name to its id under ``numbering``."""
    if numbering == "standard":
        ids = {BACKGROUND: 0}
        ids.update({name: i + 1 for i, name in enumerate(MASK_CLASSES)})
        return ids
    if numbering == "release":
        ids = {name: i for i, name in enumerate(MASK_CLASSES)}
        ids[BACKGROUND] = len(MASK_CLASSES)
        return ids
    raise ValueError(f"unknown numbering {numbering!r}; expected one of {', '.join(NUMBERINGS)}")


def class_names(numbering: str = "standard") -> list[str]:
    """Class names indexed by id under ``numbering``."""
    ids = class_ids(numbering)
    names = [""] * len(ids)
    for name, i in ids.items():
        names[i] = name
    return names


def background_id(numbering: str = "standard") -> int:
    """The id of the background class under ``numbering``."""
    return class_ids(numbering)[BACKGROUND]


def priority(name: str) -> int:
    """Priority rank of a class, 1 = highest (cancer), 12 = background."""
    return ALL_CLASSES.index(name) + 1


def normalise_class_name(name: str) -> str:
    """Lower case, spaces and hyphens as underscores: how class names are compared.

    ``"Pectoral muscle"``, ``"pectoral-muscle"`` and ``"pectoral_muscle"`` compare
    equal (QuPath exports use display names).
    """
    return re.sub(r"[\s\-]", "_", name.strip().lower())


_NORMALISED_TOKENS = sorted(((normalise_class_name(t), t) for t in MASK_CLASSES), key=lambda p: -len(p[0]))


def split_mask_stem(stem: str) -> tuple[str, str | None]:
    """Split ``<image>_<class>`` into (image id, class token).

    Returns ``(stem, None)`` when the stem does not end in a known class
    token. Tokens are compared with :func:`normalise_class_name` (so
    ``img_Pectoral muscle`` is a pectoral muscle mask) and matched longest
    first, so that ``non-mammary_tissue`` and ``axillary_lymph_nodes`` are
    recognised whole.
    """
    norm = normalise_class_name(stem)
    for ntoken, token in _NORMALISED_TOKENS:
        if norm.endswith("_" + ntoken) and len(norm) > len(ntoken) + 1:
            return stem[: -len(ntoken) - 1], token
    return stem, None


__all__ = [
    "ALL_CLASSES",
    "BACKGROUND",
    "background_id",
    "class_ids",
    "class_names",
    "COLOURS",
    "COMPLEMENTARY_CLASSES",
    "MAIN_CLASS",
    "MASK_CLASSES",
    "normalise_class_name",
    "Numbering",
    "NUMBERINGS",
    "PAPER_CLASS_TABLE",
    "priority",
    "split_mask_stem",
]
