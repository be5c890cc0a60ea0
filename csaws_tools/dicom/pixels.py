"""Checked, decoded stored pixel values of one DICOM image (PS3.3 C.7.6.3 Image Pixel module)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import InputError, one_line
from ..limits import check_pixels
from . import codecs
from .codecs import _PREFERRED_PLUGINS, _check_codec, _check_fragments, _codestream_size
from .header import (
    _DEFLATED,
    _SR_SOP_PREFIX,
    ImageInfo,
    NotAnImage,
    _add_note,
    _dcmread,
    _int,
    _read_header,
    _sop_class_name,
    is_dicomdir,
    transfer_syntax,
)

_GREY = ("MONOCHROME1", "MONOCHROME2")
_COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "PALETTE COLOR")

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
    tsyntax = transfer_syntax(ds)
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
            "(MONOCHROME1/MONOCHROME2) are converted with colour='refuse'", param="colour"
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
            f"multi-frame image ({frames} frames): choose one with frame=N (0..{frames - 1}) "
            "or every one with frame='all'", param="frame"
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
        tsyntax = transfer_syntax(ds)
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
    if tsyntax is not None and tsyntax.is_encapsulated and refused and codecs._gdcm_available():
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
                frames.close()  # type: ignore[attr-defined]  # a generator
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


__all__ = [
    "load_image",
]
