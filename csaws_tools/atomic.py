"""Atomic file writes: write to a temporary name beside the target, then rename.

A process killed at any moment (even by SIGKILL) leaves either the old file,
the complete new file, or a stray ``.*.tmp`` file that no reader mistakes
for an output; never a half-written output under its final name.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path

TMP_SUFFIX = ".tmp"
_TEMPORARY_NAME = re.compile(r"^\..+\.\d+\.[0-9a-f]{8}" + re.escape(TMP_SUFFIX) + "$")


def temporary_path(path: str | os.PathLike) -> Path:
    """A unique hidden temporary name in the same folder as ``path``."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{TMP_SUFFIX}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; rename it to ``path`` on success.

    On an exception the temporary file is removed and ``path`` is untouched.
    The parent folder is created when missing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    write_bytes_atomic(path, text.encode("utf-8"))


def remove_stale_temporaries(folder: str | os.PathLike) -> int:
    """Delete temporary files left by killed runs under ``folder``; return how many."""
    n = 0
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    for tmp in folder.rglob(f".*{TMP_SUFFIX}"):
        if not _TEMPORARY_NAME.match(tmp.name):  # only names temporary_path() makes, never a user's file
            continue
        with contextlib.suppress(OSError):
            tmp.unlink()
            n += 1
    return n
