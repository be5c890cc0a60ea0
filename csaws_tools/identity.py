"""The identity of an input file, for deciding whether an output is up to date.

Every stage folds the identity of each input it reads into the settings hash
of the output it makes, so an edited input (new size or modification time;
optionally new content) makes the output stale and a rerun redoes it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

__all__ = ["file_identity", "CONTENT_HASH_ENV"]

#: Set to 1 to also hash each input's content (slower; catches edits that keep size and mtime).
CONTENT_HASH_ENV = "CSAWS_HASH_INPUTS"


def file_identity(path: str | os.PathLike, content: bool | None = None) -> list:
    """``[size, mtime_ns]`` of ``path``, plus its SHA-256 when ``content`` is true.

    ``content=None`` follows the ``CSAWS_HASH_INPUTS`` environment variable.
    A missing file has the identity ``[None, None]``.
    """
    if content is None:
        content = os.environ.get(CONTENT_HASH_ENV, "") not in ("", "0")
    try:
        st = os.stat(path)
    except OSError:
        return [None, None]
    ident: list = [st.st_size, st.st_mtime_ns]
    if content:
        h = hashlib.sha256()
        with open(Path(path), "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        ident.append(h.hexdigest())
    return ident
