"""Reading small JSON files that must hold an object (settings, splits, labels), with one-line errors.

The files are small by nature (kilobytes; a splits file of a large dataset a
few megabytes), so a file over :data:`MAX_JSON_BYTES` is refused before it is
read: its size is checked with ``stat`` and at most the limit plus one byte
is ever read, so a huge or endless file never fills memory.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .errors import InputError

__all__ = ["MAX_JSON_BYTES", "read_json_object"]

#: The largest JSON file read (64 MiB).
MAX_JSON_BYTES = 64 * 2**20


def _too_large(path: Path, what: str, size: str, limit: int) -> InputError:
    return InputError(f"{path}: too large for {what} ({size} bytes; the limit is {limit} bytes, max_bytes)",
                      param="max_bytes")


def read_json_object(path: str | os.PathLike, what: str, *, max_bytes: int = MAX_JSON_BYTES) -> dict[str, Any]:
    """The JSON object in ``path``; anything else is one :class:`InputError` line naming the file.

    ``what`` says what the file should be ("the run's settings", "the release
    splits"); an unreadable file, a file over ``max_bytes``, invalid JSON and
    a non-object top level are each one line, with the parser's first line
    when it has one.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > max_bytes:
                raise _too_large(path, what, str(size), max_bytes)
            data = f.read(max_bytes + 1)  # a file that grew, or a pipe whose stat size says nothing
    except OSError as exc:
        raise InputError(f"{path}: cannot read {what} ({exc.strerror or exc})") from None
    if len(data) > max_bytes:
        raise _too_large(path, what, f"more than {max_bytes}", max_bytes)
    try:
        doc = json.loads(data.decode("utf-8"))
    except ValueError as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InputError(f"{path}: not {what}: invalid JSON ({first})") from None
    if not isinstance(doc, dict):
        raise InputError(f"{path}: not {what} (expected a JSON object, found {type(doc).__name__})")
    return doc
