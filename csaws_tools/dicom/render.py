"""Rendering decoded pixels: greyscale through :mod:`.voi` (PS3.3 C.11), colour to 8-bit RGB."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .. import defaults
from ..errors import InputError, SettingsError, one_line
from . import voi as voi_mod
from .header import captured, header_fields
from .pixels import _COLOUR, load_image

VOI_KEY = "csaws:voi"
MANIFEST_NAME = "manifest.parquet"
#: Bumped when the pixel pipeline changes so that reruns redo old outputs.
PIPELINE_VERSION = 2
#: Values of ``frame`` besides a 0-based index.
FRAME_ALL = "all"
#: Values of ``colour``.
COLOUR_MODES = defaults.COLOUR_MODES

# --------------------------------------------------------------------------- rendering


def _frame_setting(value: int | str | None) -> int | str | None:
    if value is None or value == FRAME_ALL:
        return value
    if isinstance(value, str):
        if not value.isdigit():
            raise SettingsError(f"frame={value!r}: must be a 0-based number or 'all'", param="frame")
        value = int(value)
    if int(value) < 0:
        raise SettingsError(f"frame={value!r} must be 0 or more", param="frame")
    return int(value)


@dataclass(frozen=True)
class Options:
    """How pixels are rendered; every field is part of the settings hash.

    ``frame``: the frame of multi-frame files (0-based), ``"all"`` for one
    PNG per frame, or None (multi-frame files fail); single-frame files
    ignore it. ``colour``: ``"convert"`` colour images to 8-bit RGB, or
    ``"refuse"`` them.
    """

    voi: str = defaults.VOI
    voi_index: int | None = None
    bits: int = defaults.BITS
    fallback: str = defaults.FALLBACK
    frame: int | str | None = None
    percentiles: tuple[float, float] = voi_mod.DEFAULT_PERCENTILES
    colour: str = "convert"

    def __post_init__(self) -> None:
        if self.voi not in voi_mod.VOI_MODES:
            raise SettingsError(f"voi={self.voi!r}: must be one of {', '.join(voi_mod.VOI_MODES)}", param="voi")
        if self.fallback not in voi_mod.FALLBACKS:
            raise SettingsError(f"fallback={self.fallback!r}: must be one of {', '.join(voi_mod.FALLBACKS)}",
                                param="fallback")
        if self.bits not in (8, 16):
            raise SettingsError(f"bits={self.bits!r}: must be 8 or 16", param="bits")
        if self.voi == "none" and self.voi_index is not None:
            raise SettingsError("voi_index= was given but voi='none' (no VOI step to choose a preset of)",
                                param=("voi_index", "voi"))
        if self.voi_index is not None and self.voi_index < 0:
            raise SettingsError(f"voi_index={self.voi_index!r} must be 0 or more", param="voi_index")
        object.__setattr__(self, "frame", _frame_setting(self.frame))
        if self.colour not in COLOUR_MODES:
            raise SettingsError(f"colour={self.colour!r}: must be one of {', '.join(COLOUR_MODES)}", param="colour")
        lo, hi = self.percentiles
        if not 0 <= lo < hi <= 100:
            raise SettingsError(f"percentiles={self.percentiles!r}: must satisfy 0 <= low < high <= 100",
                                param="percentiles")

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
            raise InputError(f"{chosen.reason}; choose a fallback (fallback='minmax' or fallback='percentile') "
                             "to convert anyway", param="fallback")
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


__all__ = [
    "COLOUR_MODES",
    "FRAME_ALL",
    "MANIFEST_NAME",
    "Options",
    "PIPELINE_VERSION",
    "render_colour",
    "render_dataset",
    "to_array",
    "VOI_KEY",
]
