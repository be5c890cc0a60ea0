"""Class statistics of merged label maps: the class-imbalance table of protocol section 1.

For every class: the percent of all pixels that carry it and the percent of
images that contain it, sorted by pixel share (largest first) like the
paper's table. Each map is counted with one ``np.bincount``; maps are read
in parallel processes.

The class names come from the ``labels.json`` that ``merge-masks`` writes
next to its maps (found in the folder or a parent), so label schemes and
both numberings are read correctly; without one, ``numbering`` decides.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

from ..errors import InputError, SettingsError, one_line
from ..execution.runner import map_ordered
from ..files import MAP_SUFFIXES, files_under
from ..masks.classes import NUMBERINGS, PAPER_CLASS_TABLE, class_names
from ..masks.counting import count_ids
from ..masks.labelset import find_labels_json, names_from_labels_json
from ..text import counted


def count_map(path: str | os.PathLike, n_classes: int) -> np.ndarray:
    """Pixel count per class id of one label map (``np.bincount``)."""
    from ..limits import checked_shape

    path = str(path)
    checked_shape(path, "label map")  # from the header, before decoding
    try:
        if path.lower().endswith((".tif", ".tiff")):
            import tifffile

            arr = np.asarray(tifffile.imread(path, key=0))
        else:
            from ..png import read_png

            arr = read_png(path)
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a bad input
        raise InputError(f"{path}: cannot read label map ({one_line(exc)})") from None
    if arr.ndim != 2 or arr.dtype.kind not in "ui":
        raise InputError(f"{path}: not a single-channel integer label map (shape {arr.shape}, {arr.dtype})")
    counts = count_ids(arr, n_classes)
    if len(counts) > n_classes:
        bad = int(np.flatnonzero(counts[n_classes:])[0]) + n_classes
        raise InputError(f"{path}: holds value {bad}, but there are only {n_classes} classes (ids 0..{n_classes - 1})")
    return counts


def _count_star(args: tuple[str, int]) -> np.ndarray:
    return count_map(*args)


def _collect(paths_or_dir) -> tuple[list[Path], Path | None]:
    if isinstance(paths_or_dir, (str, os.PathLike)) and Path(paths_or_dir).is_dir():
        base = Path(paths_or_dir)
        paths = files_under(base, MAP_SUFFIXES)
        return paths, base
    if isinstance(paths_or_dir, (str, os.PathLike)):
        raise InputError(f"{paths_or_dir}: not a folder")
    return [Path(p) for p in paths_or_dir], None


def split_of(path: Path, base: Path | None) -> str:
    """The split of a map from the folder structure: its folder relative to ``base`` (``trainval``, ``test/consensus``)."""
    if base is None:
        return path.parent.name or "all"
    rel = path.parent.relative_to(base).as_posix()
    return rel if rel != "." else "all"


def class_table(
    paths_or_dir: str | os.PathLike | Iterable[str | os.PathLike],
    *,
    numbering: str | None = None,
    names: list[str] | None = None,
    by: str | None = None,
    paper: bool = True,
    workers: int | None = None,
) -> pd.DataFrame:
    """The class table: one row per class (per split with ``by="split"``).

    Columns: ``split`` (with ``by``), ``class``, ``id``, ``pixels``,
    ``pixel_percent``, ``images`` (maps containing the class),
    ``image_percent``, and with ``paper`` the study's figures
    ``paper_pixel_percent``, ``paper_image_percent`` where the class is one
    of the 12. Sorted by pixel share, largest first. Class names come from
    ``names``, else a ``labels.json`` next to the maps, else ``numbering``
    (default ``"standard"``).
    """
    import pandas as pd

    if numbering is not None and numbering not in NUMBERINGS:
        raise SettingsError(f"numbering={numbering!r}: expected one of {', '.join(NUMBERINGS)}", param="numbering")
    if by not in (None, "split"):
        raise SettingsError(f"by={by!r}: only by='split' (or None) is supported", param="by")
    paths, base = _collect(paths_or_dir)
    if not paths:
        raise InputError(f"{paths_or_dir}: no label maps (*.png, *.tif) found")
    if names is None:
        if numbering is not None:
            names = class_names(numbering)
        else:
            lj = find_labels_json(base if base is not None else paths[0].parent)
            names = names_from_labels_json(lj) if lj is not None else class_names("standard")
    n = len(names)
    jobs = [(str(p), n) for p in paths]
    counts = map_ordered(_count_star, jobs, workers=1 if len(jobs) <= 4 else workers)
    counts_arr = np.stack(counts)
    groups = {"all": np.arange(len(paths))}
    if by == "split":
        splits = np.array([split_of(p, base) for p in paths])
        groups = {s: np.flatnonzero(splits == s) for s in sorted(set(splits))}
    frames = []
    for split, idx in groups.items():
        c = counts_arr[idx]
        pixels = c.sum(axis=0)
        images = (c > 0).sum(axis=0)
        frame = pd.DataFrame({
            "class": names, "id": np.arange(n), "pixels": pixels.astype(np.int64),
            "pixel_percent": 100.0 * pixels / max(int(pixels.sum()), 1),
            "images": images.astype(np.int64), "image_percent": 100.0 * images / len(idx),
            "n_images": len(idx),
        })
        if paper:
            # the paper's table is of its training set: beside the training-set maps only
            training = by != "split" or split.split("/")[0] in ("trainval", "train", "all")
            table_of = PAPER_CLASS_TABLE if training else {}
            frame["paper_pixel_percent"] = [table_of.get(nm, (np.nan, np.nan))[0] for nm in names]
            frame["paper_image_percent"] = [table_of.get(nm, (np.nan, np.nan))[1] for nm in names]
        frame = frame.sort_values(["pixel_percent", "id"], ascending=[False, True], kind="stable")
        if by == "split":
            frame.insert(0, "split", split)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def _pct(v: float) -> str:
    if v != v:  # NaN
        return "-"
    if v == 0:
        return "0"
    if v >= 10:
        return f"{v:.1f}"
    if v >= 1:
        return f"{v:.2f}"
    return f"{v:.3g}"


def format_table(table: pd.DataFrame) -> str:
    """The table as text, one block per split, with the paper's figures beside ours when present."""
    blocks = []
    splits = table["split"].unique() if "split" in table.columns else [None]
    for split in splits:
        part = table if split is None else table[table["split"] == split]
        # the paper's figures are of its training set: shown beside that table only
        paper = "paper_pixel_percent" in part.columns and bool(part["paper_pixel_percent"].notna().any())
        n_images = int(part["n_images"].iloc[0])
        header = f"{'class':<22}{'id':>4}{'% pixels':>11}{'% images':>11}"
        if paper:
            header += f"{'paper % px':>13}{'paper % img':>13}"
        title = counted(n_images, "label map") + (f" in {split}" if split is not None else "")
        lines = [title, header, "-" * len(header)]
        for r in part.itertuples(index=False):
            line = f"{r[part.columns.get_loc('class')]:<22}{r.id:>4}{_pct(r.pixel_percent):>11}{_pct(r.image_percent):>11}"
            if paper:
                line += f"{_pct(r.paper_pixel_percent):>13}{_pct(r.paper_image_percent):>13}"
            lines.append(line)
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def write_table(table: pd.DataFrame, prefix: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``PREFIX.csv`` and ``PREFIX.parquet`` atomically; return both paths."""
    from ..atomic import atomic_path

    prefix = Path(prefix)
    csv, parquet = Path(f"{prefix}.csv"), Path(f"{prefix}.parquet")
    try:
        with atomic_path(csv) as tmp:
            table.to_csv(tmp, index=False)
        with atomic_path(parquet) as tmp:
            table.to_parquet(tmp, index=False)
    except OSError as exc:
        from ..errors import OutputError

        raise OutputError(f"{prefix}: cannot write the table ({exc.strerror or exc})") from None
    return csv, parquet


__all__ = [
    "class_table",
    "count_map",
    "format_table",
    "split_of",
    "write_table",
]
