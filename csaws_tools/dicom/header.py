"""Reading DICOM headers: transfer syntax and byte order (PS3.5 10, A), header fields, decoder notes."""

from __future__ import annotations

import contextlib
import os
import struct
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..errors import InputError, one_line

#: Header columns of the manifest: column name -> DICOM keywords tried in order.
HEADER_COLUMNS: dict[str, tuple[str, ...]] = {
    "PatientID": ("PatientID",),
    "StudyInstanceUID": ("StudyInstanceUID",),
    "SOPInstanceUID": ("SOPInstanceUID",),
    "Modality": ("Modality",),
    "laterality": ("ImageLaterality", "Laterality"),
    "ViewPosition": ("ViewPosition",),
    "Rows": ("Rows",),
    "Columns": ("Columns",),
    "BitsStored": ("BitsStored",),
    "PhotometricInterpretation": ("PhotometricInterpretation",),
}

_DEFLATED = "1.2.840.10008.1.2.1.99"
_DICOMDIR_SOP = "1.2.840.10008.1.3.10"  # Media Storage Directory Storage (PS3.10 8.6)
_SR_SOP_PREFIX = "1.2.840.10008.5.1.4.1.1.88."
_PIXEL_TAGS = {(0x7FE0, 0x0010), (0x7FE0, 0x0008), (0x7FE0, 0x0009)}
class NotAnImage(Exception):
    """A DICOM file that is not an image to convert (a DICOMDIR): the row is ``skipped``, not an error."""


# --------------------------------------------------------------------------- messages


_CAPTURE_LIMIT = 1 << 16


@contextlib.contextmanager
def captured(notes: list[str]) -> Iterator[None]:
    """Collect Python warnings and what C libraries write to stderr into ``notes``.

    Decoders (OpenJPEG, libjpeg, CharLS, GDCM) print straight to file
    descriptor 2, and pydicom warns about invalid values; without a file name
    those lines are useless in a batch log. Here file descriptor 2 is pointed
    at a temporary file for the duration and each distinct line becomes a note.
    """
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        redirect = _stderr_to_file()
        try:
            with redirect as text:
                yield
        finally:
            for w in records:
                _add_note(notes, str(w.message))
            for line in text:
                _add_note(notes, line)


class _stderr_to_file:
    """Point file descriptor 2 at a temporary file; the lines written meanwhile are in the list ``__enter__`` returns.

    Safe with threads (a threaded Dask worker): the first thread in redirects,
    the last one out restores, under a lock, so stderr is never left pointing
    at a closed file; lines written while two threads convert at once may be
    attributed to either file.
    """

    _lock = threading.Lock()
    _depth = 0
    _tmp: Any = None
    _saved: int | None = None

    def __enter__(self) -> list[str]:
        self.lines: list[str] = []
        self.start: int | None = None
        cls = type(self)
        with cls._lock:
            if cls._depth == 0:
                try:
                    sys.stderr.flush()
                    tmp = tempfile.TemporaryFile()
                    saved = os.dup(2)
                    try:
                        os.dup2(tmp.fileno(), 2)
                    except OSError:
                        os.close(saved)
                        tmp.close()
                        raise
                except (OSError, ValueError, AttributeError):  # no usable fd 2: leave it alone
                    return self.lines
                cls._tmp, cls._saved = tmp, saved
            cls._depth += 1
            self.start = os.fstat(cls._tmp.fileno()).st_size
        return self.lines

    def __exit__(self, *exc) -> None:
        if self.start is None:
            return
        cls = type(self)
        with cls._lock:
            try:
                sys.stderr.flush()
            except (OSError, ValueError):
                pass
            data = os.pread(cls._tmp.fileno(), _CAPTURE_LIMIT, self.start)
            cls._depth -= 1
            if cls._depth == 0:
                assert cls._saved is not None
                os.dup2(cls._saved, 2)
                os.close(cls._saved)
                cls._tmp.close()
                cls._tmp, cls._saved = None, None
        self.lines.extend(line.strip() for line in data.decode("utf-8", "replace").splitlines() if line.strip())


def _add_note(notes: list[str], text: str) -> None:
    text = " ".join(str(text).split())
    if len(text) > 200:
        text = text[:197] + "..."
    if text and text not in notes and len(notes) < 20:
        notes.append(text)


# --------------------------------------------------------------------------- reading


def _dcmread(src, **kwargs):
    import pydicom

    with warnings.catch_warnings():  # invalid values are reported by what fails, not by pydicom's warnings
        warnings.simplefilter("ignore")
        return pydicom.dcmread(src, force=True, **kwargs)


def read_header(path: str | os.PathLike):
    """The dataset of ``path`` without its pixel data (raises :class:`InputError` when unreadable)."""
    try:
        with open(path, "rb") as fh:
            return _read_header(fh)[0]
    except OSError as exc:
        raise InputError(f"cannot read the file ({exc.strerror or one_line(exc)})") from None


def _read_header(fh) -> tuple[Any, dict]:
    """Read the header from an open file; return (dataset, pixel element info).

    ``info["present"]`` is True/False when the Pixel Data element is (not)
    right after the header, and None for a deflated dataset, whose bytes
    after the header are compressed (PS3.5 A.5): presence is then known only
    after inflating it.
    """
    try:
        ds = _dcmread(fh, stop_before_pixels=True)
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types for a corrupt header
        raise InputError(f"cannot parse the DICOM header ({one_line(exc)})") from None
    if not len(ds):
        raise InputError("not a DICOM file (no data elements)")
    tsyntax = transfer_syntax(ds)
    if tsyntax is not None and str(tsyntax) == _DEFLATED:
        return ds, {"present": None}
    info: dict = {"present": False}
    known = tsyntax is None or tsyntax.is_transfer_syntax
    pos = fh.tell()
    head = fh.read(12)
    fh.seek(pos)
    if len(head) >= 8:
        # the encoding pydicom actually found (a file may say explicit VR and be implicit)
        implicit, little = getattr(ds, "original_encoding", (None, None))
        if little is None:
            little = not known or tsyntax is None or tsyntax.is_little_endian
        if implicit is None:
            implicit = known and tsyntax is not None and tsyntax.is_implicit_VR
        end = "<" if little else ">"
        group, elem = struct.unpack(f"{end}HH", head[:4])
        if (group, elem) in _PIXEL_TAGS:
            explicit = not implicit
            mixed = explicit and not head[4:6].isalpha()  # an implicit VR element inside explicit VR data
            explicit = explicit and not mixed
            if explicit and len(head) >= 12:
                length, header_len = struct.unpack(f"{end}L", head[8:12])[0], 12
            else:
                length, header_len = struct.unpack(f"{end}L", head[4:8])[0], 8
            size = os.fstat(fh.fileno()).st_size
            info = {"present": True, "length": length, "available": size - pos - header_len,
                    "offset": pos + header_len, "mixed": mixed}
    return ds, info


def transfer_syntax(ds):
    """The transfer syntax from the file meta, or, for files without one, from how the dataset was encoded."""
    from pydicom import uid

    meta = getattr(ds, "file_meta", None)
    value = meta.get("TransferSyntaxUID") if meta is not None else None
    if value:
        return uid.UID(str(value).strip("\0 "))
    implicit, little = getattr(ds, "original_encoding", (None, None))
    if implicit is None or little is None:
        return None
    if implicit:
        return uid.ImplicitVRLittleEndian
    return uid.ExplicitVRLittleEndian if little else uid.ExplicitVRBigEndian


def little_endian(ds) -> bool:
    """Whether the dataset's values are little endian (PS3.5 7.3): from the transfer syntax, else as it was read."""
    tsyntax = transfer_syntax(ds)
    if tsyntax is not None:
        return bool(tsyntax.is_little_endian)
    return getattr(ds, "original_encoding", (None, True))[1] is not False


def _ts_name(tsyntax) -> str:
    name = getattr(tsyntax, "name", None)
    return f"{name} ({tsyntax})" if name and name != str(tsyntax) else str(tsyntax)


def header_fields(ds) -> dict:
    """The manifest's header columns for a dataset (missing values are None)."""
    row: dict[str, Any] = {}
    for column, keywords in HEADER_COLUMNS.items():
        value = None
        for kw in keywords:
            v = ds.get(kw)
            if v is not None and v != "":
                value = v
                break
        if column in ("Rows", "Columns", "BitsStored"):
            try:
                row[column] = int(value) if value is not None else None
            except (TypeError, ValueError):
                row[column] = None
        else:
            row[column] = str(value) if value is not None else None
    ts = transfer_syntax(ds)
    row["TransferSyntaxUID"] = str(ts) if ts else None
    return row


def _sop_class_name(ds) -> str:
    uid = ds.get("SOPClassUID")
    if uid is None or uid == "":
        return "unknown SOP class"
    name = " ".join(str(getattr(uid, "name", uid)).split()).encode("ascii", "backslashreplace").decode()
    return name if len(name) <= 80 else name[:77] + "..."


def _int(ds, keyword: str, default: int | None = None) -> int | None:
    """An integer attribute, ``default`` when absent; :class:`InputError` naming it when not a number."""
    value = ds.get(keyword)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise InputError(f"{keyword} {str(value)[:40]!r} is not a whole number") from None


def is_dicomdir(ds) -> bool:
    """Whether a dataset is a DICOMDIR (Media Storage Directory, PS3.10 8.6): a file index, not an image."""
    meta = getattr(ds, "file_meta", None)
    sop = str(meta.get("MediaStorageSOPClassUID", "") if meta is not None else "").strip("\0 ")
    return sop == _DICOMDIR_SOP or str(ds.get("SOPClassUID") or "") == _DICOMDIR_SOP or "DirectoryRecordSequence" in ds


@dataclass(frozen=True)
class ImageInfo:
    """What the header says about the pixels, checked: frames, samples, photometric interpretation."""

    frames: int
    samples: int
    photometric: str
    colour: bool


__all__ = [
    "captured",
    "HEADER_COLUMNS",
    "header_fields",
    "ImageInfo",
    "is_dicomdir",
    "little_endian",
    "NotAnImage",
    "read_header",
    "transfer_syntax",
]
