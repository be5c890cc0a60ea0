"""Small helpers for the lines users read."""

from __future__ import annotations

__all__ = ["counted"]


def counted(n: int, singular: str, plural: str | None = None) -> str:
    """``"1 image"``, ``"3 images"``: a count with its noun in the right number.

    >>> counted(1, "image"), counted(0, "label map"), counted(2, "patch", "patches")
    ('1 image', '0 label maps', '2 patches')
    """
    return f"{n} {singular if n == 1 else (plural or singular + 's')}"
