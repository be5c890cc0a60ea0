"""Which files the stages look at: image and label-map suffixes, and the one recursive listing.

Hidden files (a leading dot: editor and OS droppings such as ``._x.png``)
are never inputs.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

__all__ = ["IMAGE_SUFFIXES", "MAP_SUFFIXES", "files_under", "index_by_stem"]

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


def index_by_stem(paths: Iterable[Path], what: str,
                  reject: Callable[[Path], str | None] | None = None) -> tuple[dict[str, Path], list[str]]:
    """Id (file stem) -> path over ``paths``, in order; (index, problems).

    ``reject(path)`` may return a problem line for a path that cannot be an id;
    an id found twice is a problem naming both paths (``what`` says what the
    files are) and the first path is kept.
    """
    found: dict[str, Path] = {}
    problems: list[str] = []
    for path in paths:
        refused = reject(path) if reject is not None else None
        if refused is not None:
            problems.append(refused)
            continue
        if path.stem in found:
            problems.append(f"{what} {path.stem} found twice: {found[path.stem]} and {path}; pass a narrower folder")
            continue
        found[path.stem] = path
    return found, problems
