"""One memory limit for every reader: the largest image, in pixels, any stage decodes.

Headers are checked against it *before* anything is allocated, so a small
file that claims a huge image (a decompression bomb) is refused with one
line instead of exhausting memory. The default (2**28 pixels, 16 times a
4096 x 4096 mammogram) is generous for real data; :func:`set_max_pixels`,
the ``CSAWS_MAX_PIXELS`` environment variable (inherited by worker
processes) or ``--max-pixels`` on the command line changes it. Messages call
the limit ``max_pixels``.
"""

from __future__ import annotations

import os

from .errors import InputError, SettingsError, one_line

__all__ = ["DEFAULT_MAX_PIXELS", "ENV_VAR", "max_pixels", "set_max_pixels", "check_pixels", "header_shape",
           "checked_shape"]

DEFAULT_MAX_PIXELS = 2**28
ENV_VAR = "CSAWS_MAX_PIXELS"


def max_pixels() -> int:
    """The limit in force: ``CSAWS_MAX_PIXELS`` when set, else :data:`DEFAULT_MAX_PIXELS`."""
    text = os.environ.get(ENV_VAR)
    if not text:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(text)
    except ValueError:
        raise SettingsError(f"{ENV_VAR}={text!r} is not a whole number of pixels") from None
    if value < 1:
        raise SettingsError(f"{ENV_VAR}={text!r} must be at least 1")
    return value


def set_max_pixels(value: int | None) -> None:
    """Set the limit for this process and the workers it starts (``None``: the default)."""
    if value is None:
        os.environ.pop(ENV_VAR, None)
        return
    if int(value) < 1:
        raise SettingsError(f"max_pixels={value!r} must be at least 1", param="max_pixels")
    os.environ[ENV_VAR] = str(int(value))


def check_pixels(shape: tuple[int, ...], what: object, limit: int | None = None) -> None:
    """Raise :class:`InputError` when an image of ``shape`` exceeds the limit.

    ``shape`` is what a header claims (rows, columns[, frames or samples]);
    ``what`` names the file in the message.

    >>> check_pixels((4096, 3328), "a.dcm")
    >>> check_pixels((60000, 60000), "bomb.png")
    Traceback (most recent call last):
    ...
    csaws_tools.errors.InputError: bomb.png: header claims 60000 x 60000 = 3600000000 pixels, more than the limit of 268435456 (max_pixels; CSAWS_MAX_PIXELS)
    """
    limit = max_pixels() if limit is None else limit
    total = 1
    for n in shape:
        if int(n) < 0:
            raise InputError(f"{what}: header claims a negative size {tuple(shape)}")
        total *= int(n)
    if total > limit:
        dims = " x ".join(str(int(n)) for n in shape)
        raise InputError(f"{what}: header claims {dims} = {total} pixels, more than the limit of {limit} "
                         f"(max_pixels; {ENV_VAR})", param="max_pixels")


def header_shape(path: str | os.PathLike) -> tuple[int, ...]:
    """(rows, columns[, samples]) of a PNG, TIFF or other image from its header, without decoding pixels.

    Raises whatever the format's parser raises on an unreadable file.
    """
    path = str(path)
    if path.lower().endswith(".png"):
        from .png import png_size

        return png_size(path)
    if path.lower().endswith((".tif", ".tiff")):
        import tifffile

        with tifffile.TiffFile(path) as tf:
            page = tf.pages[0]
            samples = int(getattr(page, "samplesperpixel", 1) or 1)
            return (int(page.imagelength), int(page.imagewidth)) + ((samples,) if samples > 1 else ())
    from PIL import Image

    with Image.open(path) as im:
        return im.height, im.width


def checked_shape(path: str | os.PathLike, what: str = "image") -> tuple[int, ...]:
    """:func:`header_shape`, as one-line :class:`InputError` when unreadable, checked against the limit."""
    try:
        shape = header_shape(path)
    except Exception as exc:  # noqa: BLE001 - any parser failure is a bad input file
        raise InputError(f"{path}: cannot read {what} ({one_line(exc)})") from None
    check_pixels(shape, path)
    return shape
