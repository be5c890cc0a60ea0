"""Safe file names from values found in inputs (DICOM attributes, mask file names).

Nothing derived from file metadata may leave the output folder: every value
that becomes part of an output name goes through :func:`sanitise` first.
"""

from __future__ import annotations

import re

_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def sanitise(value: str, max_len: int = 120) -> str:
    """Make ``value`` safe as one file-name component.

    Runs of anything but letters, digits and ``. _ + -`` become one ``_``
    (so no path separators); a leading dot becomes ``_`` (no hidden files,
    no ``..``); at most ``max_len`` characters; never empty.
    """
    text = _UNSAFE.sub("_", value.strip())[:max_len]
    if text.startswith("."):
        text = "_" + text[1:]
    return text or "_"
