"""Reading small JSON files that must hold an object (settings, splits, labels), with one-line errors."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .errors import InputError

__all__ = ["read_json_object"]


def read_json_object(path: str | os.PathLike, what: str) -> dict[str, Any]:
    """The JSON object in ``path``; anything else is one :class:`InputError` line naming the file.

    ``what`` says what the file should be ("the run's settings", "the release
    splits"); an unreadable file, invalid JSON and a non-object top level are
    each one line, with the parser's first line when it has one.
    """
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"{path}: cannot read {what} ({exc.strerror or exc})") from None
    except ValueError as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InputError(f"{path}: not {what}: invalid JSON ({first})") from None
    if not isinstance(doc, dict):
        raise InputError(f"{path}: not {what} (expected a JSON object, found {type(doc).__name__})")
    return doc
