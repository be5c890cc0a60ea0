"""Which files the stages look at: image and label-map suffixes, and the one listing of a folder.

Hidden files (a leading dot: editor and OS droppings such as ``._x.png``)
are never inputs.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

__all__ = ["IMAGE_SUFFIXES", "MAP_SUFFIXES", "files_by_folder", "files_under", "index_by_stem", "is_hidden",
           "subfolders"]

#: Images a stage reads beside masks and label maps (PNG, TIFF, JPEG).
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
#: Label maps and binary class masks (lossless only).
MAP_SUFFIXES: tuple[str, ...] = (".png", ".tif", ".tiff")


def is_hidden(path: str | os.PathLike) -> bool:
    """A name with a leading dot (``.DS_Store``, ``._x.png``): never an input."""
    return os.path.basename(os.fspath(path)).startswith(".")


def files_under(folder: str | os.PathLike, suffixes: Iterable[str] | None,
                skip: Callable[[Path], bool] | None = None, *, recursive: bool = True,
                case_sensitive: bool = False) -> list[Path]:
    """Files under ``folder`` (sorted) whose suffix is one of ``suffixes`` (``None``: any file).

    ``recursive=False`` lists ``folder`` itself only. Suffixes match in any
    case (``.PNG``), or exactly with ``case_sensitive``. Hidden files are left
    out, and so is every path ``skip`` returns True for. Links to files count
    as files; a folder that does not exist has none.
    """
    root = Path(folder)
    wanted = None if suffixes is None else {s if case_sensitive else s.lower() for s in suffixes}
    if recursive:
        candidates: Iterable[Path] = root.rglob("*")
    elif root.is_dir():
        candidates = root.iterdir()
    else:
        candidates = ()
    return sorted(p for p in candidates
                  if (wanted is None or (p.suffix if case_sensitive else p.suffix.lower()) in wanted)
                  and not is_hidden(p) and p.is_file() and (skip is None or not skip(p)))


def subfolders(folder: str | os.PathLike) -> list[Path]:
    """The folders directly in ``folder`` (sorted, hidden ones left out); none when it is not a folder."""
    root = Path(folder)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and not is_hidden(p))


def files_by_folder(root: str | os.PathLike, on_loop: Callable[[str], None] | None = None) -> dict[Path, list[Path]]:
    """The non-hidden files of every folder under ``root`` that has any, following links to folders.

    Folders are walked top-down, sub-folders in sorted order, hidden ones left
    out; a folder reached a second time (a symbolic-link loop, or a second link
    to it) is not walked again and is passed to ``on_loop``. Unreadable folders
    are passed over. Files are in the order the folder lists them.
    """
    out: dict[Path, list[Path]] = {}
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(os.fspath(Path(root)), followlinks=True):
        try:
            st = os.stat(dirpath)
        except OSError:
            dirnames[:] = []
            continue
        key = (st.st_dev, st.st_ino)
        if key in seen:
            dirnames[:] = []
            if on_loop is not None:
                on_loop(dirpath)
            continue
        seen.add(key)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        files = [Path(dirpath) / f for f in filenames if not f.startswith(".")]
        if files:
            out[Path(dirpath)] = files
    return out


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
