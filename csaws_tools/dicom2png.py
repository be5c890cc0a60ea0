"""DICOM to 8/16-bit PNG, the way the CSAW-S study prepared its images (protocol section 2).

Python API:

* :func:`convert` - a batch: files and folders in, PNGs and ``manifest.parquet`` out
  (what ``csaws-prepare dicom2png`` runs);
* :func:`convert_file` - one DICOM file to one PNG, returning its manifest row;
* :func:`to_array` - one DICOM file to a rendered numpy array and what was applied,
  for training code that wants pixels without files;
* :func:`load_image` - the checked, decoded stored values and the header;
* :func:`find_inputs`, :func:`is_dicom`, :class:`NameTemplate` - input discovery and output naming.

The pixel steps themselves (Modality LUT, VOI window or LUT, output range,
MONOCHROME1 inversion) are in :mod:`csaws_tools.voi`.

Example::

    from csaws_tools.dicom2png import convert, to_array
    result = convert(["raw/"], "png/", voi="auto", bits=8, workers=4)
    print(result.summary())                     # "120 converted, 3 skipped, 1 failed"
    image, info = to_array("raw/p1/img.dcm")    # uint8 array, {"voi_kind": "window", ...}
"""

from __future__ import annotations

import functools
import json
import os
import string
import struct
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from . import voi as voi_mod
from .atomic import remove_stale_temporaries
from .batch import BatchResult, Task, in_shard, run_batch, settings_hash
from .errors import CsawsError, InputError, MissingCodecError, OutputError, one_line
from .naming import sanitise
from .png import SETTINGS_KEY, read_text, write_png

#: File name suffixes that are dropped when naming outputs (``a.dcm`` -> ``a.png``).
DICOM_SUFFIXES = frozenset({".dcm", ".dicom", ".dic", ".ima"})
#: tEXt keys written into every PNG.
VOI_KEY = "csaws:voi"
MANIFEST_NAME = "manifest.parquet"
#: Bumped when the pixel pipeline changes so that reruns redo old outputs.
PIPELINE_VERSION = 1

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
#: preferred plugin fails, pydicom's default order is tried as before.
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
    "1.2.840.10008.1.2.4.51": ("python-gdcm", None),  # JPEG extended
}
_CODEC_PACKAGES: dict[str, str] = {uid: packages for uid, (packages, _) in _CODECS.items()}
_PREFERRED_PLUGINS: dict[str, str] = {uid: plugin for uid, (_, plugin) in _CODECS.items() if plugin}
_SR_SOP_PREFIX = "1.2.840.10008.5.1.4.1.1.88."
_PIXEL_TAGS = {(0x7FE0, 0x0010), (0x7FE0, 0x0008), (0x7FE0, 0x0009)}


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
    """A file found under the inputs: its path and its path relative to its input folder."""

    path: Path
    relative: PurePosixPath
    from_folder: bool


def find_inputs(inputs: Sequence[str | os.PathLike], exclude: str | os.PathLike | None = None) -> list[Found]:
    """Every file under ``inputs`` (files, and folders searched recursively), in a stable order.

    Hidden files and folders (``.name``) are left out, and so is ``exclude``
    (the output folder, when it lies inside an input folder).
    """
    excluded = Path(exclude).resolve() if exclude is not None else None
    found: list[Found] = []
    for item in inputs:
        item = Path(item)
        if not item.exists():
            raise CsawsError(f"{item}: input does not exist")
        if not item.is_dir():
            found.append(Found(item, PurePosixPath(item.name), False))
            continue
        for root, dirs, files in os.walk(item):
            root_path = Path(root)
            dirs[:] = sorted(
                d for d in dirs if not d.startswith(".") and (excluded is None or (root_path / d).resolve() != excluded)
            )
            for name in sorted(files):
                if name.startswith("."):
                    continue
                path = root_path / name
                found.append(Found(path, PurePosixPath(path.relative_to(item).as_posix()), True))
    return found


def default_output_name(relative: PurePosixPath) -> PurePosixPath:
    """``p1/a.dcm`` -> ``p1/a.png``; names without a DICOM suffix keep it (``1.2.3`` -> ``1.2.3.png``)."""
    if relative.suffix.lower() in DICOM_SUFFIXES:
        relative = relative.with_suffix("")
    return relative.with_name(relative.name + ".png")


class NameTemplate:
    """Output names from DICOM keywords, e.g. ``{PatientID}/{PatientID}_{InstanceNumber:04d}``.

    Fields are DICOM keywords (or ``stem``, the input file's name without
    suffix); a format spec applies to the value (Integer String values are
    ints, Decimal String values floats). Values are sanitised with
    :func:`sanitise`, so no name leaves the output folder; ``/`` in the
    template's own text makes sub-folders. ``.png`` is appended.
    """

    SPECIAL = ("stem",)

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

    def render(self, ds, stem: str) -> PurePosixPath:
        """The output name (relative, ending ``.png``) for a dataset."""
        out = []
        for literal, fieldname, spec in self.pieces:
            out.append(literal)
            if fieldname is None:
                continue
            value: Any = stem if fieldname == "stem" else _template_value(ds, fieldname)
            try:
                text = format(value, spec)
            except (ValueError, TypeError) as exc:
                raise InputError(f"--name field {{{fieldname}:{spec}}} cannot format {value!r}: {exc}") from None
            out.append(sanitise(text))
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
    """Read the header from an open file; return (dataset, pixel element info)."""
    try:
        ds = _dcmread(fh, stop_before_pixels=True)
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types for a corrupt header
        raise InputError(f"cannot parse the DICOM header ({one_line(exc)})") from None
    if not len(ds):
        raise InputError("not a DICOM file (no data elements)")
    info: dict = {"present": False}
    tsyntax = _transfer_syntax(ds)
    pos = fh.tell()
    head = fh.read(12)
    fh.seek(pos)
    if len(head) >= 8:
        end = "<" if tsyntax is None or tsyntax.is_little_endian else ">"
        group, elem = struct.unpack(f"{end}HH", head[:4])
        if (group, elem) in _PIXEL_TAGS:
            explicit = tsyntax is None or not tsyntax.is_implicit_VR
            if explicit and len(head) >= 12:
                length, header_len = struct.unpack(f"{end}L", head[8:12])[0], 12
            else:
                length, header_len = struct.unpack(f"{end}L", head[4:8])[0], 8
            size = os.fstat(fh.fileno()).st_size
            info = {"present": True, "length": length, "available": size - pos - header_len}
    return ds, info


def _transfer_syntax(ds):
    """The transfer syntax from the file meta, or, for files without one, from how the dataset was encoded."""
    from pydicom import uid

    meta = getattr(ds, "file_meta", None)
    value = meta.get("TransferSyntaxUID") if meta is not None else None
    if value:
        return uid.UID(str(value))
    implicit, little = getattr(ds, "original_encoding", (None, None))
    if implicit is None or little is None:
        return None
    if implicit:
        return uid.ImplicitVRLittleEndian
    return uid.ExplicitVRLittleEndian if little else uid.ExplicitVRBigEndian


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
    if uid is None:
        return "unknown SOP class"
    name = getattr(uid, "name", str(uid))
    return str(name)


def _check_image(ds, info: dict, frame: int | None) -> int:
    """Raise :class:`InputError` for anything that is not one greyscale image; return the frame count."""
    sop = str(ds.get("SOPClassUID") or "")
    if sop.startswith(_SR_SOP_PREFIX) or str(ds.get("Modality") or "") == "SR":
        raise InputError(f"is a structured report ({_sop_class_name(ds)}), not an image")
    if not info.get("present"):
        raise InputError(f"has no pixel data ({_sop_class_name(ds)})")
    for kw in ("Rows", "Columns", "BitsAllocated"):
        if ds.get(kw) in (None, ""):
            raise InputError(f"has pixel data but no {kw}")
    pi = str(ds.get("PhotometricInterpretation") or "").strip().upper()
    spp = int(ds.get("SamplesPerPixel") or 1)
    if pi not in ("MONOCHROME1", "MONOCHROME2") or spp != 1:
        raise InputError(
            f"Photometric Interpretation {pi or 'missing'} with {spp} sample(s) per pixel: "
            "only greyscale images (MONOCHROME1/MONOCHROME2) are converted"
        )
    try:
        frames = int(ds.get("NumberOfFrames") or 1)
    except (TypeError, ValueError):
        frames = 1
    if frames > 1 and frame is None:
        raise InputError(f"multi-frame image ({frames} frames): choose one with --frame N (0..{frames - 1})")
    if frame is not None and not 0 <= frame < frames:
        raise InputError(f"frame {frame} does not exist: the file has {frames} frame(s) (0..{frames - 1})")
    tsyntax = _transfer_syntax(ds)
    if tsyntax is None or not tsyntax.is_encapsulated:
        rows, cols, alloc = int(ds.Rows), int(ds.Columns), int(ds.BitsAllocated)
        bits = rows * cols * frames * spp * alloc
        expected = (bits + 7) // 8
        length = info["length"] if info["length"] != 0xFFFFFFFF else expected
        available = min(length, info["available"])
        if available < expected:
            raise InputError(
                f"pixel data is truncated: the file holds {available} bytes where {rows} rows x {cols} columns "
                f"x {frames} frame(s) x {alloc} bits need {expected}"
            )
    return frames


def _check_codec(ds) -> None:
    """Raise :class:`MissingCodecError` when no installed plugin decodes the transfer syntax."""
    from pydicom.pixels import get_decoder

    tsyntax = _transfer_syntax(ds)
    if tsyntax is None:
        return
    try:
        decoder = get_decoder(tsyntax)
    except NotImplementedError:
        raise MissingCodecError(f"pixel data in {tsyntax.name} ({tsyntax}) cannot be decoded: no decoder supports it") from None
    if not decoder.is_available:
        packages = _CODEC_PACKAGES.get(str(tsyntax), "python-gdcm")
        raise MissingCodecError(
            f"no decoder installed for {tsyntax.name} ({tsyntax}) pixel data: pip install {packages}"
        )


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
    path: str | os.PathLike, *, frame: int | None = None, on_header: Callable[[Any], None] | None = None
) -> tuple[np.ndarray, Any]:
    """Read, check and decode one greyscale frame of a DICOM file.

    Returns ``(stored values, header dataset)``: a 2-D array of the stored
    values (before any LUT) and the dataset without pixel data. Raises
    :class:`InputError` (or :class:`MissingCodecError`) with a one-line
    reason for anything else: no pixel data, structured reports, colour,
    multi-frame without ``frame``, truncated pixel data, missing codec.
    ``on_header(ds)`` is called as soon as the header is read, before any check.
    """
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise InputError(f"cannot read the file ({exc.strerror or one_line(exc)})") from None
    with fh:
        ds, info = _read_header(fh)
        if on_header is not None:
            on_header(ds)
        frames = _check_image(ds, info, frame)
        _check_codec(ds)
        _apply_frame_voi(ds, frame if frames > 1 else None)
        tsyntax = _transfer_syntax(ds)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                arr = _decode_pixels(fh, tsyntax, frame if frames > 1 else None)
        except Exception as exc:  # noqa: BLE001 - decoders raise many types
            name = tsyntax.name if tsyntax is not None else "the"
            raise InputError(f"cannot decode {name} pixel data ({one_line(exc)})") from None
    if arr.ndim != 2:
        raise InputError(f"decoded pixel data has shape {arr.shape}, expected one 2-D greyscale frame")
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr, ds


def _decode_pixels(fh, tsyntax, index: int | None) -> np.ndarray:
    """Decode frame ``index`` (``None``: the only frame) of the open file ``fh`` with pydicom.

    Compressed single-frame data go through :func:`pydicom.pixels.iter_pixels`,
    which wraps the decoder's output buffer as the array instead of copying it
    into a second, preallocated one (as :func:`pydicom.pixels.pixel_array`
    does); the plugin in :data:`_PREFERRED_PLUGINS` is tried first. The peak
    is then the compressed frame plus about one decoded image.
    """
    from pydicom.pixels import get_decoder, iter_pixels, pixel_array

    kwargs: dict[str, Any] = {} if tsyntax is None else {"transfer_syntax_uid": tsyntax}
    if tsyntax is None or not tsyntax.is_encapsulated:
        fh.seek(0)
        return pixel_array(fh, index=index, **kwargs)
    plugins = [""]  # "": every available plugin, in pydicom's order
    preferred = _PREFERRED_PLUGINS.get(str(tsyntax))
    if preferred is not None and preferred in get_decoder(tsyntax).available_plugins:
        plugins.insert(0, preferred)
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
        except Exception:  # noqa: BLE001 - retried with every plugin; the last failure is reported
            if plugin == plugins[-1]:
                raise
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------- rendering


@dataclass(frozen=True)
class Options:
    """How pixels are rendered; every field is part of the settings hash."""

    voi: str = "auto"
    voi_index: int | None = None
    bits: int = 8
    fallback: str = "error"
    frame: int | None = None
    percentiles: tuple[float, float] = voi_mod.DEFAULT_PERCENTILES

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
        if self.frame is not None and self.frame < 0:
            raise CsawsError(f"frame must be 0 or more, not {self.frame}")
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
        }


def render_dataset(image: np.ndarray, ds, options: Options) -> tuple[np.ndarray, dict]:
    """Apply Modality LUT, VOI (or the fallback), output mapping and inversion; return (image, info)."""
    modality = voi_mod.modality_from_dataset(ds)
    chosen = voi_mod.select_voi(ds, mode=options.voi, index=options.voi_index)
    if chosen.kind == "fallback":
        if options.fallback == "error":
            raise InputError(f"{chosen.reason}; choose a fallback (--fallback minmax or percentile) to convert anyway")
        chosen = voi_mod.fallback_voi(image, modality, options.fallback, chosen.reason or "", options.percentiles)
    invert = voi_mod.inverted(ds)
    out = voi_mod.render(image, modality, chosen, bits=options.bits, invert=invert)
    info = chosen.describe()
    info.update(modality_kind=modality.kind, inverted=invert, frame=options.frame, bits=options.bits)
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
) -> tuple[np.ndarray, dict]:
    """One DICOM file as the array :func:`convert` would write, plus the VOI used and header fields."""
    options = Options(voi=voi, voi_index=voi_index, bits=bits, fallback=fallback, frame=frame, percentiles=percentiles)
    image, ds = load_image(path, frame=options.frame)
    out, info = render_dataset(image, ds, options)
    info.update(header_fields(ds))
    return out, info


# --------------------------------------------------------------------------- one file


_VOI_FIELDS = ("voi_kind", "voi_index", "window_center", "window_width", "voi_function", "voi_explanation",
               "fallback_reason", "modality_kind", "inverted", "frame", "bits")


def _empty_row() -> dict:
    row: dict[str, Any] = {"reason": None}
    row.update({c: None for c in HEADER_COLUMNS})
    row["TransferSyntaxUID"] = None
    row.update({c: None for c in _VOI_FIELDS})
    return row


def convert_file(
    source: str | os.PathLike,
    output: str | os.PathLike,
    options: Options | None = None,
    *,
    settings_digest: str | None = None,
    overwrite: bool = False,
) -> dict:
    """Convert one DICOM file to a PNG at ``output``; return its manifest row.

    The PNG is written atomically and records ``settings_digest`` (tEXt
    ``csaws:settings``) and the VOI used (``csaws:voi``). When ``output``
    already records the same digest, nothing is done and the row says
    ``skipped`` (unless ``overwrite``). A bad input gives a row with
    ``status="error"`` and a one-line ``error``.
    """
    options = options or Options()
    digest = settings_digest or settings_hash(options.settings())
    start = time.perf_counter()
    row = _empty_row()
    row.update(source=str(source), output=str(output), status="ok", error=None)
    try:
        if not overwrite:
            text = read_text(output)
            if text.get(SETTINGS_KEY) == digest:
                row.update(status="skipped", reason="output exists with the same settings")
                try:
                    row.update(json.loads(text.get(VOI_KEY, "{}")))
                except ValueError:
                    pass
                row.update(header_fields(read_header(source)))
                row["seconds"] = time.perf_counter() - start
                return row
        image, ds = load_image(source, frame=options.frame, on_header=lambda d: row.update(header_fields(d)))
        out, info = render_dataset(image, ds, options)
        del image
        row.update(info)
        voi_text = json.dumps({k: info.get(k) for k in _VOI_FIELDS}, sort_keys=True)
        try:
            write_png(output, out, text={SETTINGS_KEY: digest, VOI_KEY: voi_text})
        except OSError as exc:
            raise OutputError(f"cannot write {output} ({exc.strerror or one_line(exc)})") from None
    except CsawsError as exc:
        row.update(status="error", error=one_line(exc))
    except Exception as exc:  # noqa: BLE001 - one bad file never stops a batch
        row.update(status="error", error=one_line(exc))
    row["seconds"] = time.perf_counter() - start
    return row


def _task_worker(task: Task, *, options: Options, digest: str, overwrite: bool) -> dict:
    """Batch worker: one :class:`Task` -> one manifest row."""
    assert task.output is not None
    return convert_file(task.source, task.output, options, settings_digest=digest, overwrite=overwrite)


# --------------------------------------------------------------------------- batch


def plan(
    inputs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    name: str | NameTemplate | None = None,
    shard: tuple[int, int] | None = None,
) -> tuple[list[Task], list[dict]]:
    """Tasks for every DICOM file under ``inputs`` and rows for the rest.

    Non-DICOM files become ``skipped`` rows (reason ``not a DICOM file``);
    empty and unreadable files, and files whose ``name`` template cannot be
    filled, become ``error`` rows. With ``shard``, files of other shards are
    left unopened (a job of a job array reads only its own part).
    """
    out = Path(out)
    template = NameTemplate(name) if isinstance(name, str) else name
    tasks: list[Task] = []
    rows: list[dict] = []
    for found in find_inputs(inputs, exclude=out):
        key = found.relative.as_posix()
        if not in_shard(key, shard):
            continue
        base = {"source": str(found.path), "output": None}
        try:
            if not is_dicom(found.path):
                rows.append({**base, "status": "skipped", "error": None, "reason": "not a DICOM file"})
                continue
            if template is not None:
                ds = _read_named_fields(found.path, template)
                stem = found.relative.name
                if found.relative.suffix.lower() in DICOM_SUFFIXES:
                    stem = found.relative.stem
                rel = template.render(ds, stem)
            else:
                rel = default_output_name(found.relative)
        except InputError as exc:
            rows.append({**base, "status": "error", "error": one_line(exc), "reason": None})
            continue
        tasks.append(Task(key=key, source=str(found.path), output=str(out / rel)))
    return tasks, rows


def _read_named_fields(path: Path, template: NameTemplate):
    try:
        return _dcmread(path, stop_before_pixels=True, specific_tags=list(template.tags))
    except OSError as exc:
        raise InputError(f"cannot read the file ({exc.strerror or one_line(exc)})") from None
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"cannot parse the DICOM header ({one_line(exc)})") from None


def convert(
    inputs: Sequence[str | os.PathLike] | str | os.PathLike,
    out: str | os.PathLike,
    *,
    voi: str = "auto",
    voi_index: int | None = None,
    bits: int = 8,
    fallback: str = "error",
    frame: int | None = None,
    name: str | None = None,
    percentiles: tuple[float, float] = voi_mod.DEFAULT_PERCENTILES,
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
    becomes ``a.png``; a file given directly becomes ``out/<stem>.png``), or
    ``out/<name template>.png``. See :func:`convert_file` for one file and
    :mod:`csaws_tools.voi` for the pixel steps. Returns the
    :class:`~csaws_tools.batch.BatchResult` (rows, counts, exit code).
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    options = Options(voi=voi, voi_index=voi_index, bits=bits, fallback=fallback, frame=frame,
                      percentiles=tuple(float(p) for p in percentiles))  # type: ignore[arg-type]
    template = NameTemplate(name) if name else None
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: output folder cannot be written (it is a file, not a folder)")
    from .batch import ensure_writable_dir

    ensure_writable_dir(out)
    tasks, extra = plan(inputs, out, name=template, shard=shard)
    if shard is None:
        remove_stale_temporaries(out)  # left by a killed run; shards may share ``out`` and keep theirs
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
    )


__all__ = [
    "DICOM_SUFFIXES",
    "Found",
    "NameTemplate",
    "Options",
    "convert",
    "convert_file",
    "default_output_name",
    "find_inputs",
    "header_fields",
    "is_dicom",
    "load_image",
    "plan",
    "read_header",
    "render_dataset",
    "sanitise",
    "to_array",
]
