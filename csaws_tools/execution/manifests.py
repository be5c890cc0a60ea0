"""Joining and summarising the Parquet manifests that every batch command writes.

A command run with ``--shard I/N`` writes ``manifest.shard-000I-of-000N.parquet``
beside its outputs (see :func:`csaws_tools.batch.shard_manifest_path`). Once
every shard of a job array has finished, :func:`merge_manifests` joins them
into one ``manifest.parquet`` equal to what a single run would have written:
it checks that the shards were made with the same settings (same settings
hash), that no input appears in two shards, and that shards 1..N are all
there.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_path
from ..errors import InputError, SettingsError, one_line

STATUSES = ("ok", "skipped", "error")
#: Columns every manifest starts with, in this order.
LEADING_COLUMNS = ("source", "output", "status", "error")
#: Columns every manifest ends with.
TRAILING_COLUMNS = ("settings_hash", "tool_version", "seconds")
#: Manifest column naming the columns of a row whose text is escaped (see :func:`escape_text`).
ESCAPED_COLUMN = "escaped"

#: Shard manifests: ``manifest.shard-0003-of-0010.parquet`` (built by :func:`shard_manifest_path`).
SHARD_NAME = re.compile(r"^(?P<stem>.+)\.shard-(?P<i>\d+)-of-(?P<n>\d+)(?P<suffix>\.parquet)$")


def shard_manifest_path(manifest: Path, shard: tuple[int, int] | None) -> Path:
    """``manifest.parquet`` becomes ``manifest.shard-0003-of-0010.parquet`` for a shard."""
    if shard is None:
        return manifest
    i, n = shard
    return manifest.with_name(f"{manifest.stem}.shard-{i:04d}-of-{n:04d}{manifest.suffix}")


class MissingShardWarning(UserWarning):
    """Some shards of a job array are missing from a merge that was allowed to go on."""


@dataclass(frozen=True)
class ShardFile:
    """One manifest to merge, with its shard ``(I, N)`` when it is a shard manifest."""

    path: Path
    shard: tuple[int, int] | None


def find_shard_manifests(folder: str | os.PathLike) -> list[Path]:
    """The shard manifests (``*.shard-I-of-N.parquet``) directly in ``folder``, sorted by name."""
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if p.is_file() and SHARD_NAME.match(p.name))


def _expand(sources: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    paths: list[Path] = []
    for src in sources:
        src = Path(src)
        if src.is_dir():
            found = find_shard_manifests(src)
            if not found:
                raise InputError(f"{src}: no shard manifests (*.shard-I-of-N.parquet) in this folder")
            paths.extend(found)
        elif src.is_file():
            paths.append(src)
        else:
            raise InputError(f"{src}: no such file or folder")
    seen: set[Path] = set()
    unique = []
    for p in paths:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def default_merged_path(paths: Sequence[Path]) -> Path:
    """``OUT/manifest.shard-0001-of-0004.parquet`` ... -> ``OUT/manifest.parquet``."""
    targets = set()
    for p in paths:
        m = SHARD_NAME.match(p.name)
        if m is None:
            raise SettingsError(f"{p}: not named like a shard manifest; give the merged manifest's name (out=)",
                                param="out")
        targets.add(p.with_name(m["stem"] + m["suffix"]))
    if len(targets) != 1:
        names = ", ".join(sorted(str(t) for t in targets))
        raise InputError(f"the shard manifests belong to different runs ({names}); give them separately")
    return targets.pop()


def _shard_of(path: Path, meta: dict) -> tuple[int, int] | None:
    shard = meta.get("shard")
    if shard:
        return int(shard[0]), int(shard[1])
    m = SHARD_NAME.match(path.name)
    return (int(m["i"]), int(m["n"])) if m else None


def merge_manifests(
    sources: str | os.PathLike | Iterable[str | os.PathLike],
    out: str | os.PathLike | None = None,
    *,
    allow_missing: bool = False,
):
    """Join shard manifests into one manifest and write it atomically.

    ``sources``: manifest files and/or folders (a folder stands for the shard
    manifests directly in it). ``out``: the merged manifest; by default the
    shards' common name without the shard part (``OUT/manifest.parquet``).

    Checks, each an error naming the files concerned:

    * every manifest was made with the same settings (same settings hash);
    * all are shards of the same ``N``, each shard at most once;
    * no input (``source``) appears in two manifests;
    * no output is written (status ``ok``) by two manifests;
    * shards 1..N are all present; with ``allow_missing`` a
      :class:`MissingShardWarning` is issued instead and the merged
      manifest's metadata lists the missing shards.

    Rows are sorted by ``source``. Returns the merged DataFrame, whose
    ``attrs['csaws_tools']`` is the run metadata written with it.
    """
    import pandas as pd

    paths = _expand(sources)
    if not paths:
        raise InputError("no manifests to merge")
    out_path = Path(out) if out is not None else default_merged_path(paths)
    if any(out_path.resolve() == p.resolve() for p in paths):
        raise SettingsError(f"{out_path}: the merged manifest would overwrite one of its inputs (out=)",
                            param="out")

    frames, metas, files = [], [], []
    for p in paths:
        try:
            frame = read_manifest(p)
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - any unreadable file gets one clear line
            raise InputError(f"{p}: not a readable Parquet manifest ({type(exc).__name__}: {exc})") from None
        meta = frame.attrs.get("csaws_tools", {})
        frames.append(frame)
        metas.append(meta)
        files.append(ShardFile(p, _shard_of(p, meta)))

    # Same settings.
    hashes: dict[str | None, list[str]] = {}
    for f, meta, frame in zip(files, metas, frames):
        h = meta.get("settings_hash")
        if h is None and "settings_hash" in frame and frame["settings_hash"].notna().any():
            h = str(frame["settings_hash"].dropna().iloc[0])
        hashes.setdefault(h, []).append(f.path.name)
    if len(hashes) > 1:
        detail = "; ".join(f"{h}: {', '.join(names)}" for h, names in hashes.items())
        raise InputError(f"the manifests were made with different settings (settings hash {detail})")

    # Shards 1..N, each once.
    shards = [f.shard for f in files]
    missing: list[int] = []
    n_total = None
    if any(s is not None for s in shards):
        plain = [f.path.name for f in files if f.shard is None]
        if plain:
            raise InputError(f"cannot mix shard manifests with whole-run manifests ({', '.join(plain)})")
        ns = {s[1] for s in shards if s is not None}
        if len(ns) > 1:
            raise InputError(f"the manifests are shards of different splits (N = {', '.join(map(str, sorted(ns)))})")
        n_total = ns.pop()
        by_index: dict[int, str] = {}
        for f in files:
            assert f.shard is not None  # checked above: no whole-run manifest among shards
            i = f.shard[0]
            if i in by_index:
                raise InputError(f"shard {i}/{n_total} is given twice ({by_index[i]} and {f.path})")
            by_index[i] = str(f.path)
        missing = [i for i in range(1, n_total + 1) if i not in by_index]
        if missing:
            listed = _ranges(missing)
            message = (f"{len(missing)} of {n_total} shards missing (shard {listed}); "
                       "rerun them with shard=I/N, or merge what is there with allow_missing=True")
            if not allow_missing:
                raise InputError(message, param="allow_missing")
            warnings.warn(message.split(";")[0] + "; the merged manifest is incomplete",
                          MissingShardWarning, stacklevel=2)

    # No input in two manifests.
    owner: dict[str, str] = {}
    clashes: list[str] = []
    for f, frame in zip(files, frames):
        if "source" not in frame:
            raise InputError(f"{f.path}: not a csaws-tools manifest (no 'source' column)")
        for src in frame["source"].dropna().unique():
            if src in owner and owner[src] != f.path.name:
                clashes.append(f"{src} ({owner[src]} and {f.path.name})")
            owner.setdefault(src, f.path.name)
    if clashes:
        more = f" and {len(clashes) - 3} more" if len(clashes) > 3 else ""
        raise InputError(f"{len(clashes)} inputs appear in more than one manifest: {'; '.join(clashes[:3])}{more}")

    # No output written by two manifests: two inputs of different shards that a
    # --name template maps to one file would otherwise overwrite each other unseen.
    writer: dict[str, str] = {}
    overwritten: list[str] = []
    for f, frame in zip(files, frames):
        if "output" not in frame or "status" not in frame:
            continue
        for out in frame.loc[frame["status"] == "ok", "output"].dropna().unique():
            if out in writer and writer[out] != f.path.name:
                overwritten.append(f"{out} ({writer[out]} and {f.path.name})")
            writer.setdefault(str(out), f.path.name)
    if overwritten:
        more = f" and {len(overwritten) - 3} more" if len(overwritten) > 3 else ""
        raise InputError(f"{len(overwritten)} outputs were written by more than one manifest (one overwrote "
                         f"the other): {'; '.join(overwritten[:3])}{more}")

    merged = pd.concat([f for f in frames if len(f)] or frames[:1], ignore_index=True, sort=False)
    merged = merged[_frames_column_order(frames)]
    merged = merged.sort_values("source", kind="stable", na_position="last").reset_index(drop=True)

    first = metas[0]
    meta = {
        "settings": first.get("settings"),
        "settings_hash": next(iter(hashes)),
        "tool_version": first.get("tool_version"),
        "shard": None,
        "merged_from": [f.path.name for f in files],
    }
    versions = sorted({str(m.get("tool_version")) for m in metas})
    if len(versions) > 1:
        meta["tool_versions"] = versions
    if n_total is not None:
        meta["shards"] = n_total
        if missing:
            meta["missing_shards"] = missing
    import pyarrow as pa

    _write_table(out_path, pa.Table.from_pandas(escape_frame(merged), preserve_index=False), meta)
    merged.attrs["csaws_tools"] = meta
    merged.attrs["path"] = str(out_path)
    return merged


def _ranges(numbers: list[int]) -> str:
    """[1, 2, 3, 7] -> '1-3, 7'."""
    parts, start, prev = [], numbers[0], numbers[0]
    for n in numbers[1:] + [None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        parts.append(f"{start}-{prev}" if prev > start else str(start))
        if n is not None:
            start = prev = n
    return ", ".join(parts)


def summarize_manifest(path: str | os.PathLike, top_errors: int = 10) -> dict:
    """What a manifest says: row count, counts by status, the commonest errors, the run metadata."""
    frame = read_manifest(path)
    meta = frame.attrs.get("csaws_tools", {})
    status = frame["status"].value_counts().to_dict() if "status" in frame else {}
    errors: list[tuple[str, int]] = []
    if "error" in frame and "status" in frame:
        failed = frame.loc[frame["status"] == "error", "error"].fillna("(no message)")
        errors = [(str(msg), int(n)) for msg, n in failed.value_counts().head(top_errors).items()]
    seconds = float(frame["seconds"].sum()) if "seconds" in frame else None
    return {
        "path": str(path),
        "rows": len(frame),
        "status": {s: int(status.get(s, 0)) for s in ("ok", "skipped", "error")},
        "errors": errors,
        "seconds": seconds,
        "settings_hash": meta.get("settings_hash"),
        "tool_version": meta.get("tool_version"),
        "shard": meta.get("shard"),
        "shards": meta.get("shards"),
        "missing_shards": meta.get("missing_shards", []),
        "settings": meta.get("settings"),
    }


def _frames_column_order(frames) -> list[str]:
    return column_order((c for frame in frames for c in frame.columns), complete=False)


def column_order(names: Iterable[str], complete: bool = True) -> list[str]:
    """Manifest column order: leading columns, the others as first seen, trailing columns.

    ``complete``: every leading and trailing column, present or not (a new
    manifest); otherwise only those among ``names`` (merging manifests).
    """
    seen = dict.fromkeys(names)
    fixed = set(LEADING_COLUMNS) | set(TRAILING_COLUMNS)
    lead = [c for c in LEADING_COLUMNS if complete or c in seen]
    trail = [c for c in TRAILING_COLUMNS if complete or c in seen]
    return lead + [c for c in seen if c not in fixed] + trail


def order_columns(rows: list[dict]) -> list[str]:
    """The column order of a new manifest holding ``rows``."""
    return column_order(k for row in rows for k in row)


def _typed_column(column):
    """Give a column of Python values one Parquet-friendly type.

    Integers with gaps stay integers (nullable Int64); mixed values (lists,
    dicts) become JSON text.
    """
    values = column.dropna()
    if len(values) == 0 or all(isinstance(v, str) for v in values):
        return column
    if all(isinstance(v, bool) for v in values):
        return column.astype("boolean")
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        return column.astype("Int64")
    if all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in values):
        return column.astype("float64")
    return column.map(lambda v: v if v is None or isinstance(v, str) else json.dumps(v, default=str))


_ESCAPE = re.compile(r"\\(\\|x[0-9a-f]{2}|u[0-9a-f]{4})")


def needs_escape(text: str) -> bool:
    """Whether ``text`` holds lone surrogates (a file name that is not valid UTF-8, via ``os.fsdecode``)."""
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def escape_text(text: str) -> str:
    """Valid UTF-8 text standing for ``text`` losslessly; :func:`unescape_text` reverses it.

    A file name that is not valid UTF-8 (Linux allows any bytes) reaches
    Python as a string with surrogate escapes (``os.fsdecode``), which
    Parquet cannot store. Each undecodable byte ``0xNN`` becomes ``\\xNN``,
    any other lone surrogate ``\\uNNNN``, and a backslash ``\\\\``:
    ``b"bad\\xff.dcm"`` is stored as the text ``bad\\xff.dcm``. Manifests
    escape only the cells that need it and list their columns in the row's
    ``escaped`` column, so every other cell is stored as it is.
    """
    out = []
    for ch in text:
        code = ord(ch)
        if ch == "\\":
            out.append("\\\\")
        elif 0xDC80 <= code <= 0xDCFF:
            out.append(f"\\x{code - 0xDC00:02x}")
        elif 0xD800 <= code <= 0xDFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


def unescape_text(text: str) -> str:
    """The inverse of :func:`escape_text`: ``os.fsencode(unescape_text(s))`` gives the original bytes."""

    def back(m: re.Match) -> str:
        code = m.group(1)
        if code == "\\":
            return "\\"
        if code[0] == "x":
            return chr(0xDC00 + int(code[1:], 16))
        return chr(int(code[1:], 16))

    return _ESCAPE.sub(back, text)


def escape_rows(rows: list[dict]) -> list[dict]:
    """Rows ready for Parquet: text cells that are not valid UTF-8 escaped, listed in ``escaped``."""
    out = []
    for row in rows:
        bad = [k for k, v in row.items() if isinstance(v, str) and k != ESCAPED_COLUMN and needs_escape(v)]
        if bad:
            row = dict(row)
            for k in bad:
                row[k] = escape_text(row[k])
            row[ESCAPED_COLUMN] = ",".join(bad)
        out.append(row)
    return out


def escape_frame(frame):
    """:func:`escape_rows` for a DataFrame (returns a copy when anything needed escaping)."""
    flagged: dict = {}
    for col in frame.columns:
        if col == ESCAPED_COLUMN or frame[col].dtype != object:
            continue
        for idx, value in frame[col].items():
            if isinstance(value, str) and needs_escape(value):
                flagged.setdefault(idx, []).append(col)
    if not flagged:
        return frame
    frame = frame.copy()
    for idx, cols in flagged.items():
        for col in cols:
            frame.at[idx, col] = escape_text(frame.at[idx, col])
    frame[ESCAPED_COLUMN] = [",".join(flagged[i]) if i in flagged else None for i in frame.index]
    return frame


def unescape_frame(frame):
    """Undo :func:`escape_rows` on a manifest DataFrame (in place; returns it)."""
    if ESCAPED_COLUMN not in frame:
        return frame
    flagged = {idx: cols.split(",") for idx, cols in frame[ESCAPED_COLUMN].items() if isinstance(cols, str) and cols}
    for col in {c for cols in flagged.values() for c in cols if c in frame}:
        frame[col] = frame[col].astype(object)  # pandas' Arrow-backed strings cannot hold surrogates
    for idx, cols in flagged.items():
        for col in cols:
            if col in frame and isinstance(frame.at[idx, col], str):
                frame.at[idx, col] = unescape_text(frame.at[idx, col])
    return frame.drop(columns=[ESCAPED_COLUMN])


def write_manifest(path: str | os.PathLike, rows: list[dict], metadata: dict | None = None) -> Path:
    """Write manifest rows to Parquet atomically; ``metadata`` goes in the file's key-value metadata.

    Text that is not valid UTF-8 is stored escaped (:func:`escape_text`);
    :func:`read_manifest` gives it back unchanged. A failure to write (disk
    full, read-only folder) is an :class:`~csaws_tools.errors.OutputWriteError`
    naming ``path``.
    """
    import pandas as pd
    import pyarrow as pa

    path = Path(path)
    rows = escape_rows(rows)
    columns = order_columns(rows) if rows else list(LEADING_COLUMNS) + list(TRAILING_COLUMNS)
    frame = pd.DataFrame(rows, columns=columns, dtype=object)
    for col in frame.columns:
        frame[col] = _typed_column(frame[col])
    _write_table(path, pa.Table.from_pandas(frame, preserve_index=False), metadata)
    return path


def _write_table(path: Path, table, metadata: dict | None) -> None:
    """Write an Arrow table atomically with the run metadata under the ``csaws_tools`` key."""
    import pyarrow.parquet as pq

    meta = dict(table.schema.metadata or {})
    meta[b"csaws_tools"] = json.dumps(escape_metadata(metadata or {}), default=str, sort_keys=True).encode()
    with atomic_path(path) as tmp:
        pq.write_table(table.replace_schema_metadata(meta), tmp)


def escape_metadata(value: Any) -> Any:
    """Run metadata with every string that is not valid UTF-8 escaped (settings may hold paths)."""
    if isinstance(value, str):
        return escape_text(value) if needs_escape(value) else value
    if isinstance(value, dict):
        return {k: escape_metadata(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [escape_metadata(v) for v in value]
    return value


def read_manifest(path: str | os.PathLike, *, raw: bool = False):
    """Read a manifest into a DataFrame; its run metadata is in ``frame.attrs['csaws_tools']``.

    Escaped cells (file names that are not valid UTF-8) come back as the
    original ``os.fsdecode`` strings, unless ``raw`` is true. A file that is
    not a readable Parquet manifest is an :class:`~csaws_tools.errors.InputError`
    naming it.
    """
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
        frame = table.to_pandas()
    except (OSError, ValueError, TypeError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise InputError(f"{path}: not a readable Parquet manifest ({one_line(exc)})") from None
    if not raw:
        frame = unescape_frame(frame)
    meta = (table.schema.metadata or {}).get(b"csaws_tools")
    try:
        frame.attrs["csaws_tools"] = json.loads(meta) if meta else {}
    except ValueError:
        raise InputError(f"{path}: the manifest's csaws_tools metadata is not valid JSON") from None
    return frame


__all__ = [
    "column_order",
    "default_merged_path",
    "escape_frame",
    "escape_metadata",
    "escape_rows",
    "escape_text",
    "ESCAPED_COLUMN",
    "find_shard_manifests",
    "LEADING_COLUMNS",
    "merge_manifests",
    "MissingShardWarning",
    "needs_escape",
    "order_columns",
    "read_manifest",
    "shard_manifest_path",
    "SHARD_NAME",
    "ShardFile",
    "STATUSES",
    "summarize_manifest",
    "TRAILING_COLUMNS",
    "unescape_frame",
    "unescape_text",
    "write_manifest",
]
