"""Which files the stages look at: image and label-map suffixes, and the one recursive listing.

Hidden files (a leading dot: editor and OS droppings such as ``._x.png``)
are never inputs.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

__all__ = ["IMAGE_SUFFIXES", "MAP_SUFFIXES", "files_under"]

#: Images a stage reads beside masks and label maps (PNG, TIFF, JPEG).
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
#: Label maps (lossless only).
MAP_SUFFIXES: tuple[str, ...] = (".png", ".tif", ".tiff")


def files_under(folder: str | os.PathLike, suffixes: Iterable[str],
                skip: Callable[[Path], bool] | None = None) -> list[Path]:
    """Files under ``folder`` (recursively, sorted) whose suffix, in any case, is one of ``suffixes``.

    Hidden files are left out, and so is every path ``skip`` returns True for.
    """
    wanted = {s.lower() for s in suffixes}
    return sorted(p for p in Path(folder).rglob("*")
                  if p.is_file() and p.suffix.lower() in wanted and not p.name.startswith(".")
                  and (skip is None or not skip(p)))
