"""Former path of :mod:`csaws_tools.sample.phantom`, kept so existing imports work."""

from __future__ import annotations

from .sample.phantom import (
    CALCIUM,
    FAT,
    METAL,
    MUSCLE,
    NIPPLE,
    SKIN,
    TEXT_INK,
    Outline,
    Phantom,
    PhantomSpec,
    make_phantom,
    smooth_noise,
)

__all__ = [
    "FAT",
    "SKIN",
    "MUSCLE",
    "NIPPLE",
    "CALCIUM",
    "METAL",
    "TEXT_INK",
    "PhantomSpec",
    "Phantom",
    "smooth_noise",
    "Outline",
    "make_phantom",
]
