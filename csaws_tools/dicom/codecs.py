"""Which installed packages decode each compressed transfer syntax (PS3.5 A.4), checked before decoding."""

from __future__ import annotations

import functools
import os
import struct

from ..errors import InputError, MissingCodecError
from .header import _ts_name, transfer_syntax

#: Compressed transfer syntaxes: the packages that decode each without GPL code, and
#: the decoding plugin tried first, for memory (it hands back the decoded frame as a
#: writable buffer that becomes the array without a copy). pydicom's default order
#: tries GDCM first, whose Python binding returns the frame as a ``str`` that is
#: re-encoded to bytes, about five transient copies of the image at peak. If the
#: preferred plugin fails, pydicom's default order is tried, then GDCM directly
#: (:func:`_decode_gdcm`, for what pydicom's plugins refuse, e.g. 12-bit JPEG Extended).
_CODECS: dict[str, tuple[str, str | None]] = {
    "1.2.840.10008.1.2.4.90": ("pylibjpeg pylibjpeg-openjpeg", "pylibjpeg"),  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91": ("pylibjpeg pylibjpeg-openjpeg", "pylibjpeg"),  # JPEG 2000
    "1.2.840.10008.1.2.4.201": ("pylibjpeg pylibjpeg-openjpeg", "pylibjpeg"),  # HTJ2K lossless
    "1.2.840.10008.1.2.4.202": ("pylibjpeg pylibjpeg-openjpeg", "pylibjpeg"),  # HTJ2K lossless RPCL
    "1.2.840.10008.1.2.4.203": ("pylibjpeg pylibjpeg-openjpeg", "pylibjpeg"),  # HTJ2K
    "1.2.840.10008.1.2.4.80": ("pyjpegls", "pyjpegls"),  # JPEG-LS lossless
    "1.2.840.10008.1.2.4.81": ("pyjpegls", "pyjpegls"),  # JPEG-LS near-lossless
    "1.2.840.10008.1.2.4.57": ("python-gdcm", None),  # JPEG lossless process 14
    "1.2.840.10008.1.2.4.70": ("python-gdcm", None),  # JPEG lossless process 14 SV1
    "1.2.840.10008.1.2.4.50": ("python-gdcm", None),  # JPEG baseline
    "1.2.840.10008.1.2.4.51": ("python-gdcm", None),  # JPEG extended (12-bit: GDCM directly)
}
_CODEC_PACKAGES: dict[str, str] = {uid: packages for uid, (packages, _) in _CODECS.items()}
_PREFERRED_PLUGINS: dict[str, str] = {uid: plugin for uid, (_, plugin) in _CODECS.items() if plugin}
#: Compressed transfer syntaxes that ``gdcm.ImageReader`` decodes (used directly for what pydicom refuses).
_GDCM_DECODES = frozenset(uid for uid in _CODECS if not uid.startswith("1.2.840.10008.1.2.4.20"))
def _check_codec(ds) -> None:
    """Raise :class:`InputError` / :class:`MissingCodecError` when nothing installed decodes the transfer syntax."""
    from pydicom.pixels import get_decoder

    tsyntax = transfer_syntax(ds)
    if tsyntax is None:
        return
    if not tsyntax.is_transfer_syntax:
        raise InputError(
            f"transfer syntax {_ts_name(tsyntax)} is not supported: it is not a transfer syntax "
            "pydicom knows (a newer or private one)"
        )
    try:
        decoder = get_decoder(tsyntax)
    except NotImplementedError:
        raise MissingCodecError(f"pixel data in {_ts_name(tsyntax)} cannot be decoded: no decoder supports it") from None
    if not decoder.is_available and not (str(tsyntax) in _GDCM_DECODES and _gdcm_available()):
        packages = _CODEC_PACKAGES.get(str(tsyntax), "python-gdcm")
        raise MissingCodecError(f"no decoder installed for {_ts_name(tsyntax)} pixel data: pip install {packages}")


@functools.lru_cache(maxsize=1)
def _gdcm_available() -> bool:
    try:
        import gdcm  # type: ignore[import-untyped]  # noqa: F401
    except ImportError:
        return False
    return True


def _codestream_size(fh, offset: int) -> tuple[int, int] | None:
    """(rows, columns) that the first compressed frame's own header claims, or None when not found.

    Reads at most 64 KiB of the first fragment (at ``offset``) and parses a
    JPEG 2000 SIZ marker segment (ISO/IEC 15444-1 A.5.1) or a JPEG / JPEG-LS
    start of frame (ISO/IEC 10918-1 B.2.2), so a tiny file that claims a huge
    image is refused before a decoder allocates it.
    """
    pos = fh.tell()
    try:
        fh.seek(offset)
        data = fh.read(1 << 16)
    finally:
        fh.seek(pos)
    i = data.find(b"\xff\x4f\xff\x51")  # SOC + SIZ (a raw codestream, or inside a JP2 box)
    if i >= 0 and (i == 0 or data[4:8] == b"jP  ") and len(data) >= i + 24:
        xsiz, ysiz, xo, yo = struct.unpack(">IIII", data[i + 8 : i + 24])
        return max(ysiz - yo, 0), max(xsiz - xo, 0)
    i = 0 if data[:2] == b"\xff\xd8" else -1  # SOI, then the first SOFn
    while 0 <= i < len(data) - 9:
        j = data.find(b"\xff", i + 2)
        if j < 0 or j + 9 > len(data):
            return None
        marker = data[j + 1]
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7):
            rows, cols = struct.unpack(">HH", data[j + 5 : j + 9])
            return rows, cols
        i = j if marker in (0xFF, 0x00, 0xD8) or 0xD0 <= marker <= 0xD7 else j + 2 + struct.unpack(">H", data[j + 2 : j + 4])[0] - 2
    return None


def _check_fragments(fh, info: dict, frames: int) -> int | None:
    """Walk the items of encapsulated pixel data (PS3.5 A.4) without reading them; return where the first fragment starts.

    Raises :class:`InputError` when the file ends inside the pixel data, an
    item is malformed, or there are fewer fragments than frames. Codecs
    handed a truncated codestream can spend tens of seconds and gigabytes
    before failing; this costs one small read per fragment.
    """
    if info.get("length") != 0xFFFFFFFF or info.get("offset") is None:
        return None  # not the undefined-length sequence of items: left to pydicom
    end = os.fstat(fh.fileno()).st_size
    pos, items = info["offset"], 0
    saved = fh.tell()
    try:
        while True:
            fh.seek(pos)
            head = fh.read(8)
            if len(head) < 8:
                if pos == end and items > 1:  # ends right after the last fragment: no delimiter, nothing lost
                    break
                raise InputError("compressed pixel data is truncated: the file ends before its sequence delimiter")
            group, elem, length = struct.unpack("<HHL", head)
            if (group, elem) == (0xFFFE, 0xE0DD):
                break
            if (group, elem) != (0xFFFE, 0xE000):
                raise InputError(f"compressed pixel data is malformed: item tag ({group:04X},{elem:04X}) where "
                                 "(FFFE,E000) or the sequence delimiter (FFFE,E0DD) belongs")
            if length == 0xFFFFFFFF or pos + 8 + length > end:
                raise InputError(f"compressed pixel data is truncated: item {items} claims {length} bytes but the "
                                 f"file ends {end - pos - 8} bytes later")
            pos += 8 + length
            items += 1
    finally:
        fh.seek(saved)
    fragments = items - 1  # the first item is the Basic Offset Table
    if fragments < frames:
        raise InputError(f"compressed pixel data holds {max(fragments, 0)} fragment(s) for {frames} frame(s)")
    fh.seek(info["offset"] + 4)
    bot = struct.unpack("<L", fh.read(4))[0]
    fh.seek(saved)
    return info["offset"] + 8 + bot + 8


__all__ = [
]
