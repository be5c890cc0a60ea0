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

from .atomic import atomic_path
from .batch import (
    LEADING_COLUMNS,
    TRAILING_COLUMNS,
    escape_frame,
    escape_metadata,
    read_manifest,
)
from .errors import CsawsError, InputError

SHARD_NAME = re.compile(r"^(?P<stem>.+)\.shard-(?P<i>\d+)-of-(?P<n>\d+)(?P<suffix>\.parquet)$")


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
            raise CsawsError(f"{p}: not named like a shard manifest; give the merged manifest's name with -o")
        targets.add(p.with_name(m["stem"] + m["suffix"]))
    if len(targets) != 1:
        names = ", ".join(sorted(str(t) for t in targets))
        raise CsawsError(f"the shard manifests belong to different runs ({names}); give them separately")
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
        raise CsawsError(f"{out_path}: the merged manifest would overwrite one of its inputs")

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
    hashes = {}
    for f, meta, frame in zip(files, metas, frames):
        h = meta.get("settings_hash")
        if h is None and "settings_hash" in frame and frame["settings_hash"].notna().any():
            h = str(frame["settings_hash"].dropna().iloc[0])
        hashes.setdefault(h, []).append(f.path.name)
    if len(hashes) > 1:
        detail = "; ".join(f"{h}: {', '.join(names)}" for h, names in hashes.items())
        raise CsawsError(f"the manifests were made with different settings (settings hash {detail})")

    # Shards 1..N, each once.
    shards = [f.shard for f in files]
    missing: list[int] = []
    n_total = None
    if any(s is not None for s in shards):
        plain = [f.path.name for f in files if f.shard is None]
        if plain:
            raise CsawsError(f"cannot mix shard manifests with whole-run manifests ({', '.join(plain)})")
        ns = {n for _, n in shards}
        if len(ns) > 1:
            raise CsawsError(f"the manifests are shards of different splits (N = {', '.join(map(str, sorted(ns)))})")
        n_total = ns.pop()
        by_index: dict[int, str] = {}
        for f in files:
            i = f.shard[0]
            if i in by_index:
                raise CsawsError(f"shard {i}/{n_total} is given twice ({by_index[i]} and {f.path})")
            by_index[i] = str(f.path)
        missing = [i for i in range(1, n_total + 1) if i not in by_index]
        if missing:
            listed = _ranges(missing)
            message = (f"{len(missing)} of {n_total} shards missing (shard {listed}); "
                       "rerun them with --shard I/N, or merge what is there with --allow-missing")
            if not allow_missing:
                raise CsawsError(message)
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
        raise CsawsError(f"{len(clashes)} inputs appear in more than one manifest: {'; '.join(clashes[:3])}{more}")

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
            writer.setdefault(out, f.path.name)
    if overwritten:
        more = f" and {len(overwritten) - 3} more" if len(overwritten) > 3 else ""
        raise CsawsError(f"{len(overwritten)} outputs were written by more than one manifest (one overwrote "
                         f"the other): {'; '.join(overwritten[:3])}{more}")

    merged = pd.concat([f for f in frames if len(f)] or frames[:1], ignore_index=True, sort=False)
    merged = merged[_column_order(frames)]
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
    _write(out_path, merged, meta)
    merged.attrs["csaws_tools"] = meta
    merged.attrs["path"] = str(out_path)
    return merged


def _column_order(frames) -> list[str]:
    seen: dict[str, None] = {}
    for frame in frames:
        for col in frame.columns:
            seen.setdefault(col, None)
    lead = [c for c in LEADING_COLUMNS if c in seen]
    trail = [c for c in TRAILING_COLUMNS if c in seen]
    return lead + [c for c in seen if c not in lead and c not in trail] + trail


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


def _write(path: Path, frame, meta: dict) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(escape_frame(frame), preserve_index=False)
    schema_meta = dict(table.schema.metadata or {})
    schema_meta[b"csaws_tools"] = json.dumps(escape_metadata(meta), default=str, sort_keys=True).encode()
    with atomic_path(path) as tmp:
        pq.write_table(table.replace_schema_metadata(schema_meta), tmp)


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
