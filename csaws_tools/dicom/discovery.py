"""Finding DICOM inputs (judged by content) and naming their outputs."""

from __future__ import annotations

import os
import string
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import InputError, SettingsError, one_line
from ..naming import sanitise
from .header import _dcmread

#: File name suffixes that are dropped when naming outputs (``a.dcm`` -> ``a.png``).
DICOM_SUFFIXES = frozenset({".dcm", ".dicom", ".dic", ".ima"})
#: tEXt keys written into every PNG.
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
            raise InputError(f"{item}: input does not exist")
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
            raise SettingsError(f"name={template!r}: {exc}", param="name") from None
        tags = []
        for literal, fieldname, spec, conv in parsed:
            if "\\" in literal or "\0" in literal:
                raise SettingsError(f"name={template!r}: backslashes and NUL are not allowed", param="name")
            if fieldname is not None:
                if conv:
                    raise SettingsError(f"name={template!r}: conversions like !r are not supported", param="name")
                if fieldname not in self.SPECIAL:
                    tag = tag_for_keyword(fieldname)
                    if tag is None:
                        raise SettingsError(
                            f"name={template!r}: {{{fieldname}}} is not a DICOM keyword "
                            f"(for example PatientID, SOPInstanceUID, InstanceNumber) or one of {self.SPECIAL}",
                            param="name",
                        )
                    tags.append(tag)
            self.pieces.append((literal, fieldname, spec or ""))
        if not any(f for _, f, _ in self.pieces):
            raise SettingsError(f"name={template!r}: the template has no {{field}}, so every output would collide", param="name")
        if template.startswith("/"):
            raise SettingsError(f"name={template!r}: must be a relative name", param="name")
        for part in template.split("/"):
            if part in ("", ".", ".."):
                raise SettingsError(f"name={template!r}: empty, '.' or '..' path parts are not allowed", param="name")
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
                raise InputError(f"field {{{fieldname}:{spec}}} of name= cannot format {value!r}: {exc}",
                                 param="name") from None
            out.append(sanitise(text))
        if frame is not None and frames > 1 and not self.has_frame:
            out.append(frame_suffix(frame, frames))
        rel = PurePosixPath("".join(out) + ".png")
        if rel.is_absolute() or any(p in ("", ".", "..") for p in rel.parts):
            raise InputError(f"name= gives an unsafe output name {str(rel)!r}", param="name")
        return rel


def _template_value(ds, keyword: str) -> Any:
    elem = ds.data_element(keyword) if keyword in ds else None
    if elem is None or elem.value is None or elem.value == "":
        raise InputError(f"field {{{keyword}}} of name=: the file has no {keyword} value", param="name")
    value = elem.value
    if elem.VR == "IS":
        return int(value) if elem.VM == 1 else "-".join(str(int(v)) for v in value)
    if elem.VR == "DS":
        return float(value) if elem.VM == 1 else "-".join(str(v) for v in value)
    if elem.VM > 1:
        return "-".join(str(v) for v in value)
    return str(value)


__all__ = [
    "default_output_name",
    "DICOM_SUFFIXES",
    "find_inputs",
    "Found",
    "frame_suffix",
    "is_dicom",
    "NameTemplate",
]
