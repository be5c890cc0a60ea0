"""DICOM to 8/16-bit PNG, the way the CSAW-S study prepared its images (protocol section 2).

Python API:

* :func:`convert` - a batch: files and folders in, PNGs and ``manifest.parquet`` out
  (what ``csaws-prepare dicom2png`` runs);
* :func:`convert_file` - one DICOM file (or one frame of it) to one PNG, returning its manifest row;
* :func:`to_array` - one DICOM file to a rendered numpy array and what was applied,
  for training code that wants pixels without files;
* :func:`load_image` - the checked, decoded stored values and the header;
* :func:`find_inputs`, :func:`is_dicom`, :class:`NameTemplate` - input discovery and output naming.

The pixel steps themselves (Modality LUT, VOI window or LUT, output range,
MONOCHROME1 inversion) are in :mod:`csaws_tools.voi`. Greyscale images
follow PS3.3 C.11; colour images (RGB, YBR, PALETTE COLOR) become 8-bit RGB
PNGs with no VOI step.

Example::

    from csaws_tools.dicom2png import convert, to_array
    result = convert(["raw/"], "png/", voi="auto", bits=8, workers=4)
    print(result.summary())                     # "120 converted, 3 skipped, 1 failed"
    image, info = to_array("raw/p1/img.dcm")    # uint8 array, {"voi_kind": "window", ...}
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import string
import struct
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from . import voi as voi_mod
from .batch import BatchResult, Task, in_shard, run_batch, settings_hash
from .errors import CsawsError, InputError, MissingCodecError, OutputError, one_line
from .identity import file_identity
from .limits import check_pixels
from .naming import sanitise
from .png import SETTINGS_KEY, read_text, write_png

#: File name suffixes that are dropped when naming outputs (``a.dcm`` -> ``a.png``).
DICOM_SUFFIXES = frozenset({".dcm", ".dicom", ".dic", ".ima"})
#: tEXt keys written into every PNG.
VOI_KEY = "csaws:voi"
MANIFEST_NAME = "manifest.parquet"
#: Bumped when the pixel pipeline changes so that reruns redo old outputs.
PIPELINE_VERSION = 2
#: Values of ``frame`` besides a 0-based index.
FRAME_ALL = "all"
#: Values of ``colour``.
COLOUR_MODES = ("convert", "refuse")

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
_DEFLATED = "1.2.840.10008.1.2.1.99"
_DICOMDIR_SOP = "1.2.840.10008.1.3.10"  # Media Storage Directory Storage (PS3.10 8.6)
_SR_SOP_PREFIX = "1.2.840.10008.5.1.4.1.1.88."
_PIXEL_TAGS = {(0x7FE0, 0x0010), (0x7FE0, 0x0008), (0x7FE0, 0x0009)}
_GREY = ("MONOCHROME1", "MONOCHROME2")
_COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "PALETTE COLOR")


class NotAnImage(Exception):
    """A DICOM file that is not an image to convert (a DICOMDIR): the row is ``skipped``, not an error."""


# --------------------------------------------------------------------------- discovery


def is_dicom(path: str | os.PathLike) -> bool:
    """Whether a file is DICOM, judged by content, not by name.

    True for the ``DICM`` prefix at byte 128 (PS3.10 7.1), or for a file
    without preamble whose first element is in group 0002 or 0008 and whose
    header pydicom parses. Raises :class:`InputError` for an empty or
    unreadable file.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        if path.is_dir():
            raise InputError("is a folder, not a file")
        if size == 0:
            raise InputError("empty file (0 bytes)")
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError as exc:
        raise InputError(f"cannot read the file ({exc.strerror or one_line(exc)})") from None
    if len(head) >= 132 and head[128:132] == b"DICM":
        return True
    if len(head) < 8:
        return False
    group_le, group_be = struct.unpack("<H", head[:2])[0], struct.unpack(">H", head[:2])[0]
    if group_le not in (0x0002, 0x0008) and group_be not in (0x0002, 0x0008):
        return False
    try:
        ds = _dcmread(path, stop_before_pixels=True)
    except Exception:  # noqa: BLE001 - anything that does not parse is not DICOM
        return False
    return any(k in ds for k in ("SOPClassUID", "Rows", "Modality", "StudyInstanceUID"))


@dataclass(frozen=True)
class Found:
    """A file found under the inputs: its path and its path relative to its input folder.

    ``note`` is set instead for a folder that was not searched again (a
    symbolic link back to a folder already searched: a loop).
    """

    path: Path
    relative: PurePosixPath
    from_folder: bool
    note: str | None = None


def find_inputs(inputs: Sequence[str | os.PathLike], exclude: str | os.PathLike | None = None) -> list[Found]:
    """Every file under ``inputs`` (files, and folders searched recursively), in a stable order.

    Symbolic links to folders are followed; a link to a folder already being
    searched (a loop) or already searched gives one :class:`Found` with a
    ``note`` instead of being searched again. Hidden files and folders
    (``.name``) are left out, and so is ``exclude`` (the output folder, when
    it lies inside an input folder).
    """
    excluded = Path(exclude).resolve() if exclude is not None else None
    found: list[Found] = []
    seen_dirs: dict[tuple[int, int], Path] = {}
    for item in inputs:
        item = Path(item)
        if not item.exists():
            raise CsawsError(f"{item}: input does not exist")
        if not item.is_dir():
            found.append(Found(item, PurePosixPath(item.name), False))
            continue
        found.extend(_walk(item, item, excluded, seen_dirs))
    return found


def _walk(top: Path, base: Path, excluded: Path | None, seen: dict[tuple[int, int], Path]) -> Iterator[Found]:
    """Depth-first, sorted walk of ``top`` that follows folder links once each (loop protection)."""
    try:
        st = top.stat()
    except OSError:
        return
    key = (st.st_dev, st.st_ino)
    if key in seen:
        rel = PurePosixPath(top.relative_to(base).as_posix()) if top != base else PurePosixPath(top.name)
        yield Found(top, rel, True, note=f"folder link to {seen[key]}, which is already searched (a loop or a second link)")
        return
    seen[key] = top
    try:
        entries = sorted(os.scandir(top), key=lambda e: e.name)
    except OSError as exc:
        rel = PurePosixPath(top.relative_to(base).as_posix())
        yield Found(top, rel, True, note=f"cannot list the folder ({exc.strerror or one_line(exc)})")
        return
    files: list[Path] = []
    dirs: list[Path] = []
    for entry in entries:
        if entry.name.startswith("."):
            continue
        try:
            is_dir = entry.is_dir(follow_symlinks=True)
        except OSError:
            is_dir = False
        (dirs if is_dir else files).append(Path(entry.path))
    for path in files:
        yield Found(path, PurePosixPath(path.relative_to(base).as_posix()), True)
    for path in dirs:
        if excluded is not None and path.resolve() == excluded:
            continue
        yield from _walk(path, base, excluded, seen)


def _safe_part(part: str) -> str:
    """A path component as it may be used in an output name: names that are not valid UTF-8 are sanitised."""
    try:
        part.encode("utf-8")
        return part
    except UnicodeEncodeError:
        return sanitise(part.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace"), max_len=200)


def _printable(text: str) -> str:
    """``text`` with undecodable bytes written as ``\\xNN`` (for keys and messages)."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def default_output_name(relative: PurePosixPath, frame: int | None = None, frames: int = 1) -> PurePosixPath:
    """``p1/a.dcm`` -> ``p1/a.png``; names without a DICOM suffix keep it (``1.2.3`` -> ``1.2.3.png``).

    Frame ``k`` of a multi-frame file is ``p1/a_f<k>.png`` (``k`` zero-padded
    to the width of the last frame number). Components that are not valid
    UTF-8 are sanitised (:func:`csaws_tools.naming.sanitise`).
    """
    relative = PurePosixPath(*[_safe_part(p) for p in relative.parts])
    if relative.suffix.lower() in DICOM_SUFFIXES:
        relative = relative.with_suffix("")
    name = relative.name + (frame_suffix(frame, frames) if frame is not None and frames > 1 else "")
    return relative.with_name(name + ".png")


def frame_suffix(frame: int, frames: int) -> str:
    """``_f<k>`` with ``k`` zero-padded to the width of ``frames - 1`` (``_f07`` of 0..59)."""
    return f"_f{frame:0{len(str(max(frames - 1, 0)))}d}"


class NameTemplate:
    """Output names from DICOM keywords, e.g. ``{PatientID}/{PatientID}_{InstanceNumber:04d}``.

    Fields are DICOM keywords, ``stem`` (the input file's name without
    suffix) or ``frame`` (the 0-based frame number; 0 for single-frame
    files); a format spec applies to the value (Integer String values are
    ints, Decimal String values floats). Values are sanitised with
    :func:`sanitise`, so no name leaves the output folder; ``/`` in the
    template's own text makes sub-folders. ``.png`` is appended; frames of a
    multi-frame file get ``_f<k>`` when the template has no ``{frame}``.
    """

    SPECIAL = ("stem", "frame")

    def __init__(self, template: str):
        from pydicom.datadict import tag_for_keyword

        self.template = template
        self.pieces: list[tuple[str, str | None, str]] = []
        try:
            parsed = list(string.Formatter().parse(template))
        except ValueError as exc:
            raise CsawsError(f"--name {template!r}: {exc}") from None
        tags = []
        for literal, fieldname, spec, conv in parsed:
            if "\\" in literal or "\0" in literal:
                raise CsawsError(f"--name {template!r}: backslashes and NUL are not allowed")
            if fieldname is not None:
                if conv:
                    raise CsawsError(f"--name {template!r}: conversions like !r are not supported")
                if fieldname not in self.SPECIAL:
                    tag = tag_for_keyword(fieldname)
                    if tag is None:
                        raise CsawsError(
                            f"--name {template!r}: {{{fieldname}}} is not a DICOM keyword "
                            f"(for example PatientID, SOPInstanceUID, InstanceNumber) or one of {self.SPECIAL}"
                        )
                    tags.append(tag)
            self.pieces.append((literal, fieldname, spec or ""))
        if not any(f for _, f, _ in self.pieces):
            raise CsawsError(f"--name {template!r}: the template has no {{field}}, so every output would collide")
        if template.startswith("/"):
            raise CsawsError(f"--name {template!r}: must be a relative name")
        for part in template.split("/"):
            if part in ("", ".", ".."):
                raise CsawsError(f"--name {template!r}: empty, '.' or '..' path parts are not allowed")
        self.tags = tags
        self.has_frame = any(f == "frame" for _, f, _ in self.pieces)

    def render(self, ds, stem: str, frame: int | None = None, frames: int = 1) -> PurePosixPath:
        """The output name (relative, ending ``.png``) for a dataset (and frame ``frame`` of ``frames``)."""
        out = []
        for literal, fieldname, spec in self.pieces:
            out.append(literal)
            if fieldname is None:
                continue
            if fieldname == "stem":
                value: Any = _printable(stem)
            elif fieldname == "frame":
                value = frame or 0
            else:
                value = _template_value(ds, fieldname)
            try:
                text = format(value, spec)
            except (ValueError, TypeError) as exc:
                raise InputError(f"--name field {{{fieldname}:{spec}}} cannot format {value!r}: {exc}") from None
            out.append(sanitise(text))
        if frame is not None and frames > 1 and not self.has_frame:
            out.append(frame_suffix(frame, frames))
        rel = PurePosixPath("".join(out) + ".png")
        if rel.is_absolute() or any(p in ("", ".", "..") for p in rel.parts):
            raise InputError(f"--name gives an unsafe output name {str(rel)!r}")
        return rel


def _template_value(ds, keyword: str) -> Any:
    elem = ds.data_element(keyword) if keyword in ds else None
    if elem is None or elem.value is None or elem.value == "":
        raise InputError(f"--name field {{{keyword}}}: the file has no {keyword} value")
    value = elem.value
    if elem.VR == "IS":
        return int(value) if elem.VM == 1 else "-".join(str(int(v)) for v in value)
    if elem.VR == "DS":
        return float(value) if elem.VM == 1 else "-".join(str(v) for v in value)
    if elem.VM > 1:
        return "-".join(str(v) for v in value)
    return str(value)


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
    tsyntax = _transfer_syntax(ds)
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


def _transfer_syntax(ds):
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
    ts = _transfer_syntax(ds)
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


def _check_image(ds, info: dict, frame: int | None, colour: str = "convert",
                 notes: list[str] | None = None) -> ImageInfo:
    """Raise :class:`InputError` for anything that cannot be converted; return what the header says.

    Checks, before anything is decoded: SOP class, presence of Pixel Data,
    the Image Pixel module (PS3.3 C.7.6.3), the frame, the size against the
    max-pixels limit (:func:`csaws_tools.limits.check_pixels`) and, for
    native pixel data, the bytes actually present.
    """
    notes = notes if notes is not None else []
    sop = str(ds.get("SOPClassUID") or "")
    if sop.startswith(_SR_SOP_PREFIX) or str(ds.get("Modality") or "") == "SR":
        raise InputError(f"is a structured report ({_sop_class_name(ds)}), not an image")
    if info.get("present") is False:
        raise InputError(f"has no pixel data ({_sop_class_name(ds)})")
    for kw in ("Rows", "Columns", "BitsAllocated"):
        if ds.get(kw) in (None, ""):
            raise InputError(f"has pixel data but no {kw}")
    rows, cols, alloc = _int(ds, "Rows"), _int(ds, "Columns"), _int(ds, "BitsAllocated")
    assert rows is not None and cols is not None and alloc is not None
    if rows < 1 or cols < 1:
        raise InputError(f"Rows {rows} x Columns {cols} is an empty image")
    if alloc not in (1, 8, 16, 32, 64):
        raise InputError(f"Bits Allocated {alloc} is not supported (1, 8, 16, 32 or 64)")
    stored = _int(ds, "BitsStored", alloc)
    assert stored is not None
    if not 1 <= stored <= alloc:
        raise InputError(f"Bits Stored {stored} does not fit Bits Allocated {alloc} (PS3.3 C.7.6.3.1)")
    if _int(ds, "PixelRepresentation", 0) not in (0, 1):
        raise InputError(f"Pixel Representation {ds.get('PixelRepresentation')} is neither 0 (unsigned) nor 1 (signed)")
    tsyntax = _transfer_syntax(ds)
    if tsyntax is not None and tsyntax.is_transfer_syntax and tsyntax.is_encapsulated:
        # Compressed pixel data: Bits Allocated 8 or 16 (RLE also 32), PS3.5 8.2 and G. Codecs given
        # anything else have been seen to abort the process instead of raising.
        allowed = (8, 16, 32) if str(tsyntax) == "1.2.840.10008.1.2.5" else (8, 16)
        if alloc not in allowed:
            raise InputError(f"Bits Allocated {alloc} is not valid for {tsyntax.name} pixel data "
                             f"({' or '.join(map(str, allowed))})")
    spp = _int(ds, "SamplesPerPixel", 1)
    assert spp is not None
    pi = str(ds.get("PhotometricInterpretation") or "").strip().upper()
    if not pi and spp == 1:
        # ACR-NEMA and some old files leave it out; one sample per pixel is greyscale (PS3.3 C.7.6.3.1.2)
        pi = "MONOCHROME2"
        ds.PhotometricInterpretation = pi
        _add_note(notes, "Photometric Interpretation (0028,0004) is missing; assumed MONOCHROME2 (1 sample per pixel)")
    is_colour = pi in _COLOUR
    if pi in _GREY and spp == 1 or is_colour and colour == "convert" and ((pi == "PALETTE COLOR" and spp == 1) or (pi != "PALETTE COLOR" and spp == 3)):
        pass
    elif is_colour and colour == "refuse":
        raise InputError(
            f"Photometric Interpretation {pi} with {spp} sample(s) per pixel: only greyscale images "
            "(MONOCHROME1/MONOCHROME2) are converted with --colour refuse"
        )
    else:
        raise InputError(
            f"Photometric Interpretation {pi or 'missing'} with {spp} sample(s) per pixel is not supported "
            "(greyscale MONOCHROME1/2 with 1 sample, or colour RGB/YBR with 3 or PALETTE COLOR with 1)"
        )
    frames = _int(ds, "NumberOfFrames", 1)
    assert frames is not None
    if frames < 1:
        raise InputError(f"Number of Frames is {frames}; at least 1 is needed")
    if frames > 1 and frame is None:
        raise InputError(
            f"multi-frame image ({frames} frames): choose one with --frame N (0..{frames - 1}) or every one with --frame all"
        )
    if frame is not None and frames > 1 and not 0 <= frame < frames:
        raise InputError(f"frame {frame} does not exist: the file has {frames} frame(s) (0..{frames - 1})")
    check_pixels((rows, cols), "the file")  # one frame is decoded at a time
    if info.get("present") and (tsyntax is None or (tsyntax.is_transfer_syntax and not tsyntax.is_encapsulated)):
        # native YBR_FULL_422 stores two samples per pixel (PS3.3 C.7.6.3.1.2)
        samples = 2 if pi == "YBR_FULL_422" and spp == 3 else spp
        bits = rows * cols * frames * samples * alloc
        expected = (bits + 7) // 8
        length = info["length"] if info["length"] != 0xFFFFFFFF else expected
        available = min(length, info["available"])
        if available < expected:
            raise InputError(
                f"pixel data is truncated: the file holds {available} bytes where {rows} rows x {cols} columns "
                f"x {frames} frame(s) x {samples} sample(s) x {alloc} bits need {expected}"
            )
    return ImageInfo(frames=frames, samples=spp, photometric=pi, colour=is_colour)


def _check_codec(ds) -> None:
    """Raise :class:`InputError` / :class:`MissingCodecError` when nothing installed decodes the transfer syntax."""
    from pydicom.pixels import get_decoder

    tsyntax = _transfer_syntax(ds)
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


def _apply_frame_voi(ds, frame: int | None) -> None:
    """Copy the per-frame or shared functional-group VOI and rescale of enhanced multi-frame files to the top level."""
    groups = []
    per = ds.get("PerFrameFunctionalGroupsSequence")
    if per and frame is not None and frame < len(per):
        groups.append(per[frame])
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared:
        groups.append(shared[0])
    for group in groups:
        for seq_kw, keywords in (
            ("FrameVOILUTSequence", ("WindowCenter", "WindowWidth", "VOILUTFunction", "WindowCenterWidthExplanation")),
            ("PixelValueTransformationSequence", ("RescaleSlope", "RescaleIntercept")),
        ):
            seq = group.get(seq_kw)
            if seq:
                for kw in keywords:
                    if kw not in ds and kw in seq[0]:
                        setattr(ds, kw, seq[0].get(kw))


def load_image(
    path: str | os.PathLike,
    *,
    frame: int | None = None,
    on_header: Callable[[Any], None] | None = None,
    colour: str = "refuse",
    notes: list[str] | None = None,
) -> tuple[np.ndarray, Any]:
    """Read, check and decode one frame of a DICOM file.

    Returns ``(stored values, header dataset)``: for greyscale a 2-D array
    of the stored values (before any LUT), for colour (``colour="convert"``)
    an (rows, columns, 3) RGB array or, for PALETTE COLOR, the 2-D indices;
    and the dataset without pixel data. ``frame`` selects the frame of a
    multi-frame file and is ignored for single-frame files. Raises
    :class:`InputError` (or :class:`MissingCodecError`) with a one-line
    reason for anything else, and :class:`NotAnImage` for a DICOMDIR.
    ``on_header(ds)`` is called as soon as the header is read, before any
    check; ``notes`` collects warnings (assumptions made about the file).
    """
    notes = notes if notes is not None else []
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed by the with below
    except OSError as exc:
        raise InputError(f"cannot read the file ({exc.strerror or one_line(exc)})") from None
    with fh:
        ds, info = _read_header(fh)
        if on_header is not None:
            on_header(ds)
        if is_dicomdir(ds):
            raise NotAnImage("DICOMDIR")
        image = _check_image(ds, info, frame, colour, notes)
        _check_codec(ds)
        index = frame if image.frames > 1 else None
        tsyntax = _transfer_syntax(ds)
        if tsyntax is not None and tsyntax.is_encapsulated and info.get("present"):
            first = _check_fragments(fh, info, image.frames)
            size = _codestream_size(fh, first) if first is not None else None
            if size is not None:
                check_pixels(size, "the compressed frame")
                if size != (int(ds.Rows), int(ds.Columns)):
                    # decoders (GDCM) have been seen to abort the process on such a mismatch
                    raise InputError(f"the compressed frame is {size[0]} x {size[1]} but the header says "
                                     f"{int(ds.Rows)} x {int(ds.Columns)} (Rows x Columns)")
        _apply_frame_voi(ds, index)
        arr = _decode(fh, path, ds, tsyntax, index, image, whole=bool(info.get("mixed")))
    if image.colour and image.photometric != "PALETTE COLOR":
        if arr.ndim != 3 or arr.shape[-1] != 3:
            raise InputError(f"decoded colour pixel data has shape {arr.shape}, expected (rows, columns, 3)")
    elif arr.ndim != 2:
        raise InputError(f"decoded pixel data has shape {arr.shape}, expected one 2-D greyscale frame")
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr, ds


def _decode(fh, path, ds, tsyntax, index: int | None, image: ImageInfo, whole: bool = False) -> np.ndarray:
    """Decode with pydicom; for what its plugins refuse, GDCM directly; one short message when all fail.

    ``whole``: decode through the dataset pydicom reads (the file's encoding is mixed).
    """
    kwargs: dict[str, Any] = {"photometric_interpretation": image.photometric}
    if whole or (tsyntax is not None and (str(tsyntax) == _DEFLATED or _encoding_differs(ds, tsyntax))):
        return _decode_deflated(fh, ds, index, kwargs)
    try:
        return _decode_pixels(fh, tsyntax, index, **kwargs)
    except Exception as exc:  # noqa: BLE001 - decoders raise many types
        first = _first_reason(exc)
        refused = "does not support" in str(exc)
    # GDCM directly only for what pydicom's plugins refuse to try (12-bit JPEG Extended), not for
    # data they tried and found corrupt: GDCM then takes far longer and more memory to fail.
    if tsyntax is not None and tsyntax.is_encapsulated and refused and _gdcm_available():
        try:
            return _decode_gdcm(path, ds, index, image)
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001
            first = first or _first_reason(exc)
    name = tsyntax.name if tsyntax is not None else "the"
    raise InputError(f"cannot decode {name} pixel data ({first}); the data may be corrupt or truncated")


def _first_reason(exc: BaseException) -> str:
    """The first plugin's reason from pydicom's multi-plugin message, at most 160 characters."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    if len(lines) > 1 and lines[0].startswith("Unable to decode"):
        lines = lines[1:]
    useful = [ln for ln in lines if "'NoneType' object" not in ln] or lines  # GDCM's binding says nothing useful
    text = _clean(useful[0]) if useful else type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


_OBJECT_REPR = __import__("re").compile(r"<[^<>]* at 0x[0-9a-fA-F]+>")


def _clean(text: str) -> str:
    """Drop object addresses (``<_io.BytesIO object at 0x7f..>``) so messages are the same on every run."""
    return _OBJECT_REPR.sub("the data", text)


def _decode_pixels(fh, tsyntax, index: int | None, **kwargs: Any) -> np.ndarray:
    """Decode frame ``index`` (``None``: the only frame) of the open file ``fh`` with pydicom.

    Compressed single-frame data go through :func:`pydicom.pixels.iter_pixels`,
    which wraps the decoder's output buffer as the array instead of copying it
    into a second, preallocated one (as :func:`pydicom.pixels.pixel_array`
    does); the plugin in :data:`_PREFERRED_PLUGINS` is tried first. The peak
    is then the compressed frame plus about one decoded image.
    """
    from pydicom.pixels import get_decoder, iter_pixels, pixel_array

    if tsyntax is not None:
        kwargs["transfer_syntax_uid"] = tsyntax
    if tsyntax is None or not tsyntax.is_encapsulated:
        fh.seek(0)
        return pixel_array(fh, index=index, **kwargs)
    available = list(get_decoder(tsyntax).available_plugins)
    preferred = _PREFERRED_PLUGINS.get(str(tsyntax))
    if preferred in available:  # tried first; every plugin is tried once
        available.remove(preferred)
        available.insert(0, preferred)
    plugins = available or [""]
    first: Exception | None = None
    for plugin in plugins:
        fh.seek(0)
        try:
            if index is not None:
                return pixel_array(fh, index=index, decoding_plugin=plugin, **kwargs)
            frames = iter_pixels(fh, decoding_plugin=plugin, **kwargs)
            try:
                return next(frames)
            finally:
                frames.close()
        except Exception as exc:  # noqa: BLE001 - retried with every plugin; the first failure is reported
            first = first or exc
    assert first is not None
    raise first


def _encoding_differs(ds, tsyntax) -> bool:
    """Whether the dataset is encoded otherwise than its transfer syntax says (pydicom read it anyway)."""
    implicit, little = getattr(ds, "original_encoding", (None, None))
    if implicit is None or not tsyntax.is_transfer_syntax or tsyntax.is_deflated:
        return False
    return bool(implicit) != bool(tsyntax.is_implicit_VR) or bool(little) != bool(tsyntax.is_little_endian)


def _decode_deflated(fh, ds, index: int | None, kwargs: dict) -> np.ndarray:
    """Decode through the whole dataset read by pydicom.

    For Deflated Explicit VR Little Endian (PS3.5 A.5), whose bytes must be
    inflated first, and for files encoded otherwise than their transfer
    syntax says (pydicom's reader copes; decoding from the file does not).
    """
    from pydicom.pixels import pixel_array

    fh.seek(0)
    try:
        full = _dcmread(fh)
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"cannot inflate the deflated dataset ({one_line(exc)})") from None
    if "PixelData" not in full and "FloatPixelData" not in full and "DoubleFloatPixelData" not in full:
        raise InputError(f"has no pixel data ({_sop_class_name(ds)})")
    if "PhotometricInterpretation" not in full:
        full.PhotometricInterpretation = kwargs["photometric_interpretation"]
    try:
        return pixel_array(full, index=index)
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"cannot decode the inflated pixel data ({_first_reason(exc)})") from None


_GDCM_DTYPES = {"UINT8": "u1", "INT8": "i1", "UINT12": "<u2", "INT12": "<i2", "UINT16": "<u2", "INT16": "<i2",
                "UINT32": "<u4", "INT32": "<i4", "FLOAT32": "<f4", "FLOAT64": "<f8"}


def _decode_gdcm(path, ds, index: int | None, image: ImageInfo) -> np.ndarray:
    """Decode with ``gdcm.ImageReader`` directly (python-gdcm), for what pydicom's plugins refuse.

    pydicom's GDCM plugin refuses 12-bit JPEG Extended (process 4), which
    GDCM decodes. GDCM decodes every frame at once, so the whole volume is
    checked against the max-pixels limit first.
    """
    import gdcm  # type: ignore[import-untyped]

    rows, cols = int(ds.Rows), int(ds.Columns)
    check_pixels((image.frames, rows, cols, image.samples), "the file (every frame, decoded at once by GDCM)")
    reader = gdcm.ImageReader()
    reader.SetFileName(os.fsdecode(path))
    if not reader.Read():
        raise RuntimeError("GDCM cannot read the file")
    img = reader.GetImage()
    fmt = img.GetPixelFormat()
    dtype = _GDCM_DTYPES.get(fmt.GetScalarTypeAsString())
    if dtype is None:
        raise RuntimeError(f"GDCM gives pixels of type {fmt.GetScalarTypeAsString()}")
    spp = int(fmt.GetSamplesPerPixel())
    g_cols, g_rows = int(img.GetDimension(0)), int(img.GetDimension(1))
    frames = int(img.GetDimension(2)) if img.GetNumberOfDimensions() > 2 else 1
    if (g_rows, g_cols) != (rows, cols):
        raise RuntimeError(f"GDCM decodes {g_rows} x {g_cols} where the header says {rows} x {cols}")
    buf = img.GetBuffer().encode("utf-8", "surrogateescape")
    arr = np.frombuffer(buf, dtype=dtype)
    need = frames * rows * cols * spp
    if arr.size < need:
        raise RuntimeError(f"GDCM gives {arr.size} values where {need} are expected")
    arr = arr[:need].reshape(frames, rows, cols, spp)[index or 0]
    if spp == 1:
        arr = arr[..., 0]
    bits = int(ds.get("BitsStored") or 0)
    if arr.dtype.kind == "u" and 0 < bits < 8 * arr.dtype.itemsize:
        arr = arr & np.array((1 << bits) - 1, dtype=arr.dtype)
    return arr.copy()


# --------------------------------------------------------------------------- rendering


def _frame_setting(value: int | str | None) -> int | str | None:
    if value is None or value == FRAME_ALL:
        return value
    if isinstance(value, str):
        if not value.isdigit():
            raise CsawsError(f"frame must be a 0-based number or 'all', not {value!r}")
        value = int(value)
    if int(value) < 0:
        raise CsawsError(f"frame must be 0 or more, not {value}")
    return int(value)


@dataclass(frozen=True)
class Options:
    """How pixels are rendered; every field is part of the settings hash.

    ``frame``: the frame of multi-frame files (0-based), ``"all"`` for one
    PNG per frame, or None (multi-frame files fail); single-frame files
    ignore it. ``colour``: ``"convert"`` colour images to 8-bit RGB, or
    ``"refuse"`` them.
    """

    voi: str = "auto"
    voi_index: int | None = None
    bits: int = 8
    fallback: str = "error"
    frame: int | str | None = None
    percentiles: tuple[float, float] = voi_mod.DEFAULT_PERCENTILES
    colour: str = "convert"

    def __post_init__(self) -> None:
        if self.voi not in voi_mod.VOI_MODES:
            raise CsawsError(f"voi must be one of {', '.join(voi_mod.VOI_MODES)}, not {self.voi!r}")
        if self.fallback not in voi_mod.FALLBACKS:
            raise CsawsError(f"fallback must be one of {', '.join(voi_mod.FALLBACKS)}, not {self.fallback!r}")
        if self.bits not in (8, 16):
            raise CsawsError(f"bits must be 8 or 16, not {self.bits}")
        if self.voi == "none" and self.voi_index is not None:
            raise CsawsError("a VOI index was given but voi is 'none' (no VOI step to choose a preset of)")
        if self.voi_index is not None and self.voi_index < 0:
            raise CsawsError(f"voi_index must be 0 or more, not {self.voi_index}")
        object.__setattr__(self, "frame", _frame_setting(self.frame))
        if self.colour not in COLOUR_MODES:
            raise CsawsError(f"colour must be one of {', '.join(COLOUR_MODES)}, not {self.colour!r}")
        lo, hi = self.percentiles
        if not 0 <= lo < hi <= 100:
            raise CsawsError(f"percentiles must satisfy 0 <= low < high <= 100, not {self.percentiles}")

    def settings(self) -> dict:
        return {
            "voi": self.voi,
            "voi_index": self.voi_index,
            "bits": self.bits,
            "fallback": self.fallback,
            "frame": self.frame,
            "percentiles": list(self.percentiles),
            "colour": self.colour,
        }


def render_dataset(image: np.ndarray, ds, options: Options) -> tuple[np.ndarray, dict]:
    """Apply Modality LUT, VOI (or the fallback), output mapping and inversion; return (image, info).

    Pixel padding (Pixel Padding Value / Range Limit, PS3.3 C.7.5.1.1.2) is
    left out of the fallback's statistics and written as 0 (black). Colour
    images are converted to 8-bit RGB (:func:`render_colour`).
    """
    pi = str(ds.get("PhotometricInterpretation") or "").strip().upper()
    if pi in _COLOUR:
        return render_colour(image, ds)
    modality = voi_mod.modality_from_dataset(ds)
    padding = voi_mod.padding_range(ds)
    chosen = voi_mod.select_voi(ds, mode=options.voi, index=options.voi_index)
    if chosen.kind == "fallback":
        if options.fallback == "error":
            raise InputError(f"{chosen.reason}; choose a fallback (--fallback minmax or percentile) to convert anyway")
        chosen = voi_mod.fallback_voi(image, modality, options.fallback, chosen.reason or "", options.percentiles,
                                      exclude=padding)
    invert = voi_mod.inverted(ds)
    out = voi_mod.render(image, modality, chosen, bits=options.bits, invert=invert)
    padded = voi_mod.blank_padding(image, out, padding) if padding is not None else 0
    info = chosen.describe()
    info.update(modality_kind=modality.kind, inverted=invert, bits=options.bits, padding_pixels=padded)
    return out, info


def render_colour(image: np.ndarray, ds) -> tuple[np.ndarray, dict]:
    """A colour image as 8-bit RGB: palette applied (PS3.3 C.7.6.3.1.5), no VOI; samples scaled from Bits Stored."""
    pi = str(ds.get("PhotometricInterpretation") or "").strip().upper()
    if pi == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        try:
            rgb = apply_color_lut(image, ds)
        except Exception as exc:  # noqa: BLE001
            raise InputError(f"cannot apply the PALETTE COLOR lookup tables ({one_line(exc)})") from None
        desc = ds.get("RedPaletteColorLookupTableDescriptor")
        bits = int(desc[2]) if desc is not None and len(desc) == 3 and int(desc[2]) in (8, 16) else 8 * rgb.dtype.itemsize
    else:
        rgb = image
        bits = int(ds.get("BitsStored") or 8 * image.dtype.itemsize)
    if rgb.dtype == np.uint8 and bits <= 8 and bits == 8:
        out = np.ascontiguousarray(rgb)
    else:
        top = float(2 ** min(max(bits, 1), 32) - 1)
        out = np.empty(rgb.shape, dtype=np.uint8)
        n_rows = int(rgb.shape[0])
        flat_in, flat_out = rgb.reshape(n_rows, -1), out.reshape(n_rows, -1)
        step = max(1, (1 << 20) // max(1, int(flat_in.shape[-1]) * 4))
        for start in range(0, flat_in.shape[0], step):
            block = flat_in[start : start + step].astype(np.float32)
            block *= np.float32(255.0 / top)
            block += np.float32(0.5)
            np.clip(block, 0, 255.499, out=block)
            flat_out[start : start + step] = block
    info = {"voi_kind": "colour", "voi_index": None, "window_center": None, "window_width": None,
            "voi_function": None, "voi_explanation": None, "fallback_reason": None,
            "modality_kind": None, "inverted": False, "bits": 8, "padding_pixels": 0}
    return out, info


def to_array(
    path: str | os.PathLike,
    *,
    voi: str = "auto",
    voi_index: int | None = None,
    bits: int = 8,
    fallback: str = "error",
    frame: int | None = None,
    percentiles: tuple[float, float] = voi_mod.DEFAULT_PERCENTILES,
    colour: str = "convert",
) -> tuple[np.ndarray, dict]:
    """One DICOM file (one frame) as the array :func:`convert` would write, plus the VOI used and header fields.

    Greyscale gives a 2-D uint8/uint16 array, colour an (rows, columns, 3) uint8 RGB array.
    """
    options = Options(voi=voi, voi_index=voi_index, bits=bits, fallback=fallback, frame=frame,
                      percentiles=percentiles, colour=colour)
    notes: list[str] = []
    with captured(notes):
        image, ds = load_image(path, frame=frame, colour=options.colour, notes=notes)
        out, info = render_dataset(image, ds, options)
    info.update(header_fields(ds))
    info["frame"] = frame if int(ds.get("NumberOfFrames") or 1) > 1 else None
    info["warnings"] = "; ".join(notes) or None
    return out, info


# --------------------------------------------------------------------------- one file


_VOI_FIELDS = ("voi_kind", "voi_index", "window_center", "window_width", "voi_function", "voi_explanation",
               "fallback_reason", "modality_kind", "inverted", "frame", "bits", "padding_pixels")


def _empty_row() -> dict:
    row: dict[str, Any] = {"reason": None, "warnings": None}
    row.update({c: None for c in HEADER_COLUMNS})
    row["TransferSyntaxUID"] = None
    row.update({c: None for c in _VOI_FIELDS})
    return row


def is_own_output(text: dict[str, str]) -> bool:
    """Whether PNG text chunks (:func:`csaws_tools.png.read_text`) are those of a dicom2png output."""
    return SETTINGS_KEY in text and VOI_KEY in text


def file_digest(run_digest: str, source: str | os.PathLike, frame: int | None) -> str:
    """The settings hash one output records: the run's settings, the input's identity and the frame.

    An edited input (new size or modification time, or content with
    ``CSAWS_HASH_INPUTS=1``) gets a new hash, so a rerun redoes its PNG.
    """
    return settings_hash({"run": run_digest, "input": file_identity(source), "frame": frame})


def convert_file(
    source: str | os.PathLike,
    output: str | os.PathLike,
    options: Options | None = None,
    *,
    settings_digest: str | None = None,
    overwrite: bool = False,
    frame: int | None = None,
) -> dict:
    """Convert one DICOM file (frame ``frame`` of a multi-frame file) to a PNG at ``output``; return its manifest row.

    ``frame`` defaults to ``options.frame`` when that is a number. The PNG
    is written atomically and records a hash of ``settings_digest``, the
    input's identity and the frame (tEXt ``csaws:settings``) and the VOI used
    (``csaws:voi``). When ``output`` already records the same hash, nothing
    is done and the row says ``skipped`` (unless ``overwrite``). An existing
    file at ``output`` that this tool did not write is never replaced (the
    row is an error). A bad input gives a row with ``status="error"`` and a
    one-line ``error``; a DICOMDIR a ``skipped`` row. Warnings of pydicom
    and of the codecs are collected into the row's ``warnings``.
    """
    options = options or Options()
    if frame is None and isinstance(options.frame, int):
        frame = options.frame
    run_digest = settings_digest or settings_hash(options.settings())
    start = time.perf_counter()
    row = _empty_row()
    row.update(source=str(source), output=str(output), status="ok", error=None)
    notes: list[str] = []
    try:
        with captured(notes):
            _convert(source, output, options, run_digest, overwrite, frame, row, notes)
    except NotAnImage as exc:
        row.update(status="skipped", reason=str(exc), output=None)
    except CsawsError as exc:
        row.update(status="error", error=one_line(exc))
    except MemoryError:
        row.update(status="error", error="out of memory while decoding (lower --max-pixels or --workers)")
    except Exception as exc:  # noqa: BLE001 - one bad file never stops a batch
        row.update(status="error", error=_clean(f"cannot read the file ({one_line(exc)})")[:500])
    row["warnings"] = "; ".join(notes) or None
    row["seconds"] = time.perf_counter() - start
    return row


def _convert(source, output, options: Options, run_digest: str, overwrite: bool, frame: int | None,
             row: dict, notes: list[str]) -> None:
    digest = file_digest(run_digest, source, frame)
    text = read_text(output)
    if os.path.lexists(output) and not is_own_output(text):
        raise OutputError(f"{output} exists and was not written by dicom2png; not overwriting it (remove it, "
                          "or choose another output folder)")
    if not overwrite and text.get(SETTINGS_KEY) == digest:
        row.update(status="skipped", reason="output exists with the same settings")
        try:
            row.update(json.loads(text.get(VOI_KEY, "{}")))
        except ValueError:
            pass
        row.update(header_fields(read_header(source)))
        return
    image, ds = load_image(source, frame=frame, on_header=lambda d: row.update(header_fields(d)),
                           colour=options.colour, notes=notes)
    out, info = render_dataset(image, ds, options)
    del image
    info["frame"] = frame if int(ds.get("NumberOfFrames") or 1) > 1 else None
    row.update(info)
    voi_text = json.dumps({k: info.get(k) for k in _VOI_FIELDS}, sort_keys=True)
    try:
        write_png(output, out, text={SETTINGS_KEY: digest, VOI_KEY: voi_text})
    except OSError as exc:
        raise OutputError(f"cannot write {output} ({exc.strerror or one_line(exc)})") from None


def _task_worker(task: Task, *, options: Options, digest: str, overwrite: bool) -> dict:
    """Batch worker: one :class:`Task` -> one manifest row."""
    assert task.output is not None
    return convert_file(task.source, task.output, options, settings_digest=digest, overwrite=overwrite,
                        frame=task.args.get("frame"))


# --------------------------------------------------------------------------- batch


def _frames_in(path: Path, template: NameTemplate | None):
    """The header fields planning needs (name fields, Number of Frames) and the checked frame count."""
    tags = [0x00280008, 0x00280010, 0x00280011, 0x00280100, 0x00280002, 0x00020010]
    tags += list(template.tags) if template is not None else []
    try:
        ds = _dcmread(path, stop_before_pixels=True, specific_tags=tags)
    except OSError as exc:
        raise InputError(f"cannot read the file ({exc.strerror or one_line(exc)})") from None
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"cannot parse the DICOM header ({one_line(exc)})") from None
    try:
        frames = _int(ds, "NumberOfFrames", 1) or 1
    except InputError:
        return ds, 1  # reported by the worker, with the rest of the file's checks
    if frames > 1:
        # Every frame takes at least a few bytes: a header claiming more frames than the
        # file can hold would otherwise make millions of tasks out of one small file.
        size = path.stat().st_size
        try:
            frame_bytes = max(1, ((_int(ds, "Rows", 1) or 1) * (_int(ds, "Columns", 1) or 1)
                                  * (_int(ds, "SamplesPerPixel", 1) or 1) * (_int(ds, "BitsAllocated", 8) or 8)) // 8)
        except InputError:
            frame_bytes = 1
        tsyntax = _transfer_syntax(ds)
        if tsyntax is not None and tsyntax.is_transfer_syntax and tsyntax.is_encapsulated:
            frame_bytes = 8  # an item header per frame at least
        if frames * frame_bytes > size:
            raise InputError(f"Number of Frames {frames} is more than the file ({size} bytes) can hold")
    return ds, frames


def plan(
    inputs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    name: str | NameTemplate | None = None,
    shard: tuple[int, int] | None = None,
    frame: int | str | None = None,
) -> tuple[list[Task], list[dict]]:
    """Tasks for every DICOM file (or frame) under ``inputs`` and rows for the rest.

    Non-DICOM files become ``skipped`` rows (reason ``not a DICOM file``);
    empty and unreadable files, and files whose ``name`` template cannot be
    filled, become ``error`` rows. With ``frame`` set, multi-frame files
    give one task per frame (``"all"``) or for frame ``frame``, named
    ``<stem>_f<k>.png``. This tool's own outputs inside ``out`` (when ``out``
    is an input folder) are left out. With ``shard``, files of other shards
    are left unopened (a job of a job array reads only its own part).
    """
    out = Path(out)
    out_resolved = out.resolve()
    template = NameTemplate(name) if isinstance(name, str) else name
    frame = _frame_setting(frame)
    tasks: list[Task] = []
    rows: list[dict] = []
    for found in find_inputs(inputs, exclude=out):
        key = _printable(found.relative.as_posix())
        if not in_shard(key, shard):
            continue
        base = {"source": str(found.path), "output": None}
        if found.note is not None:
            rows.append({**base, "status": "skipped", "error": None, "reason": found.note})
            continue
        if _is_own_file(found.path, out_resolved):
            continue
        try:
            if not is_dicom(found.path):
                rows.append({**base, "status": "skipped", "error": None, "reason": "not a DICOM file"})
                continue
            stem = found.relative.name
            if found.relative.suffix.lower() in DICOM_SUFFIXES:
                stem = found.relative.stem
            ds, frames = (None, 1)
            if template is not None or frame is not None:
                with warnings.catch_warnings():  # invalid values are reported by the file's own row
                    warnings.simplefilter("ignore")
                    ds, frames = _frames_in(found.path, template)
            if frames > 1 and frame is not None:
                wanted = range(frames) if frame == FRAME_ALL else [int(frame)]
            else:
                wanted = [None]  # type: ignore[list-item]
            for k in wanted:
                if template is not None:
                    rel = template.render(ds, stem, k, frames)
                else:
                    rel = default_output_name(found.relative, k, frames)
                args = {} if k is None else {"frame": k}
                # frames of one file share its key, so that they fall in the same shard
                tasks.append(Task(key=key, source=str(found.path),
                                  output=str(out / rel), args=args))
        except InputError as exc:
            rows.append({**base, "status": "error", "error": one_line(exc), "reason": None})
            continue
    return tasks, rows


def _is_own_file(path: Path, out_resolved: Path) -> bool:
    """Whether ``path`` is something this tool wrote into the output folder (a rerun into an input folder)."""
    try:
        resolved = path.resolve()
    except OSError:
        return False
    if out_resolved not in resolved.parents:
        return False
    name = path.name
    if name.startswith("manifest") and name.endswith(".parquet") and resolved.parent == out_resolved:
        return True
    return name.lower().endswith(".png") and is_own_output(read_text(path))


def nothing_found(result: BatchResult) -> bool:
    """True when a run converted nothing, found nothing up to date and failed nothing: no DICOM image at all."""
    if result.interrupted or result.failed:
        return False
    return not any(r.get("status") == "ok" or r.get("reason") == "output exists with the same settings"
                   for r in result.rows)


def convert(
    inputs: Sequence[str | os.PathLike] | str | os.PathLike,
    out: str | os.PathLike,
    *,
    voi: str = "auto",
    voi_index: int | None = None,
    bits: int = 8,
    fallback: str = "error",
    frame: int | str | None = None,
    name: str | None = None,
    percentiles: tuple[float, float] = voi_mod.DEFAULT_PERCENTILES,
    colour: str = "convert",
    workers: int | None = None,
    overwrite: bool = False,
    fail_fast: bool = False,
    progress: bool = True,
    scheduler: str | None = None,
    shard: tuple[int, int] | None = None,
    batch_size: int | None = None,
) -> BatchResult:
    """Convert every DICOM file under ``inputs`` to a PNG under ``out``; write ``out/manifest.parquet``.

    Outputs are ``out/<path relative to the input folder>.png`` (``a.dcm``
    becomes ``a.png``; a file given directly becomes ``out/<stem>.png``;
    frame ``k`` of a multi-frame file ``<stem>_f<k>.png``), or ``out/<name
    template>.png``. See :func:`convert_file` for one file and
    :mod:`csaws_tools.voi` for the pixel steps. Returns the
    :class:`~csaws_tools.batch.BatchResult` (rows, counts, exit code);
    :func:`nothing_found` tells whether any DICOM image was found.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    options = Options(voi=voi, voi_index=voi_index, bits=bits, fallback=fallback, frame=frame,
                      percentiles=tuple(float(p) for p in percentiles), colour=colour)  # type: ignore[arg-type]
    template = NameTemplate(name) if name else None
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: output folder cannot be written (it is a file, not a folder)")
    from .batch import ensure_writable_dir

    ensure_writable_dir(out)
    tasks, extra = plan(inputs, out, name=template, shard=shard, frame=options.frame)
    settings = {"command": "dicom2png", "pipeline": PIPELINE_VERSION, "name": name, **options.settings()}
    digest = settings_hash(settings)
    worker = functools.partial(_task_worker, options=options, digest=digest, overwrite=overwrite)
    return run_batch(
        tasks,
        worker,
        manifest=out / MANIFEST_NAME,
        settings=settings,
        workers=workers,
        fail_fast=fail_fast,
        progress=progress,
        label="dicom2png",
        scheduler=scheduler,
        shard=shard,
        batch_size=batch_size,
        extra_rows=extra,
        output_dir=out,
    )


__all__ = [
    "COLOUR_MODES",
    "DICOM_SUFFIXES",
    "FRAME_ALL",
    "Found",
    "NameTemplate",
    "NotAnImage",
    "Options",
    "captured",
    "convert",
    "convert_file",
    "default_output_name",
    "file_digest",
    "find_inputs",
    "frame_suffix",
    "header_fields",
    "is_dicom",
    "is_dicomdir",
    "is_own_output",
    "load_image",
    "nothing_found",
    "plan",
    "read_header",
    "render_colour",
    "render_dataset",
    "sanitise",
    "to_array",
]
