"""The greyscale pixel pipeline of DICOM PS3.3 C.11, as plain functions over numpy arrays.

Stored values pass through, in the standard's order:

1. the **Modality LUT** (C.11.1): a Modality LUT Sequence, or the linear
   Rescale Slope / Rescale Intercept, or nothing;
2. the **VOI LUT** (C.11.2): a window (Window Center / Window Width with the
   VOI LUT Function LINEAR, LINEAR_EXACT or SIGMOID, C.11.2.1.2 and
   C.11.2.1.3), or a VOI LUT Sequence; one of several presets is chosen by
   index. Files without usable VOI data get a *fallback* window computed
   from the image (its min/max or two percentiles);
3. the VOI **output range** is mapped linearly onto ``0..255`` (or
   ``0..65535`` for 16-bit output). The mapping uses the range the VOI step
   *can* produce (the window's output range, or ``0..2**n-1`` for an
   ``n``-bit LUT), never the image's own min/max, so two images with the
   same window get the same grey for the same value;
4. **inversion** when the image is MONOCHROME1 or its Presentation LUT
   Shape is INVERSE (C.11.6), so that the background is black.

The functions are vectorised numpy and work on blocks of rows in
``float32`` (:func:`render`), so memory stays at the input plus the 8/16-bit
output plus one small block. When the whole chain is linear (no LUT, no
sigmoid), the four steps fold into one multiply-add and one clip per pixel;
otherwise integer images go through a lookup table of every possible stored
value, computed once in float64.

Rounding is to the nearest grey level (half up). Results agree with
pydicom's ``apply_modality_lut`` + ``apply_voi_lut`` mapped onto the same
output range within one grey level.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .. import defaults
from ..errors import InputError
from .header import little_endian

#: VOI LUT Functions this module implements (PS3.3 C.11.2.1.3).
WINDOW_FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")
#: Values of ``voi`` accepted by :func:`select_voi`.
VOI_MODES = defaults.VOI_MODES
#: Values of ``fallback`` accepted by :func:`select_voi`.
FALLBACKS = defaults.FALLBACKS
#: Percentiles used by the ``percentile`` fallback.
DEFAULT_PERCENTILES = (0.5, 99.5)

_CHUNK_BYTES = 1 << 20  # float32 work block: about 1 MiB, fits in cache


# --------------------------------------------------------------------------- LUTs


@dataclass(frozen=True)
class LUT:
    """A DICOM lookup table (PS3.3 C.11.1.1.1 / C.11.2.1.1).

    ``first_mapped`` is the input value mapped to ``data[0]``; inputs below
    it give ``data[0]``, inputs past the end give ``data[-1]``. ``bits`` is
    the nominal depth of the entries: the LUT's output range is
    ``0 .. 2**bits - 1``.
    """

    data: np.ndarray
    first_mapped: int
    bits: int
    explanation: str | None = None

    @property
    def out_max(self) -> float:
        return float(2**self.bits - 1)

    def lookup(self, values: np.ndarray) -> np.ndarray:
        """Entries for ``values`` (any numeric dtype; fractional inputs are floored)."""
        idx = np.asarray(values)
        if idx.dtype.kind == "f":
            idx = np.floor(idx)
        idx = np.clip(idx.astype(np.int64) - self.first_mapped, 0, len(self.data) - 1)
        return self.data[idx]


def lut_from_item(item, *, little_endian: bool = True, signed_input: bool = False, what: str = "LUT") -> LUT:
    """Read a LUT from a Modality or VOI LUT Sequence item (LUT Descriptor + LUT Data).

    The descriptor's first value 0 means 65536 entries; its second value is
    signed when the input is (``signed_input``), PS3.3 C.11.2.1.1. ``what``
    names the sequence in messages ("Modality LUT Sequence (0028,3000)").
    """
    desc = item.get("LUTDescriptor")
    if desc is None or "LUTData" not in item or item.LUTData is None:
        raise InputError(f"{what} item without LUT Descriptor or LUT Data")
    try:
        desc = [int(v) for v in (desc if isinstance(desc, (list, tuple)) or type(desc).__name__ == "MultiValue" else [desc])]
    except (TypeError, ValueError):
        raise InputError(f"{what}: LUT Descriptor {desc!r} is not three numbers") from None
    if len(desc) != 3:
        raise InputError(f"{what}: LUT Descriptor has {len(desc)} values, expected 3")
    n, first, bits = desc
    n = n or 65536
    if signed_input and first >= 32768:
        first -= 65536
    if not 1 <= bits <= 16:
        raise InputError(f"{what}: LUT Descriptor gives {bits} bits per entry; 1 to 16 are supported")
    raw = item.LUTData
    if isinstance(raw, (bytes, bytearray)):
        values = np.frombuffer(raw, dtype="<u2" if little_endian else ">u2")
    else:
        values = np.atleast_1d(np.asarray(raw, dtype=np.int64))
    if len(values) < n:
        raise InputError(f"{what}: LUT Data has {len(values)} entries where the LUT Descriptor says {n}")
    data = values[:n].astype(np.float64)
    explanation = item.get("LUTExplanation")
    return LUT(data=data, first_mapped=first, bits=bits, explanation=str(explanation) if explanation else None)


# --------------------------------------------------------------------------- modality


@dataclass(frozen=True)
class Modality:
    """The Modality LUT stage (PS3.3 C.11.1) and the range of values it can output.

    ``kind`` is ``"identity"``, ``"rescale"`` (``slope * x + intercept``)
    or ``"lut"``. ``out_min``/``out_max`` bound its output for every
    possible stored value (from Bits Stored and Pixel Representation), as
    pydicom's ``apply_windowing`` computes them.
    """

    kind: str = "identity"
    slope: float = 1.0
    intercept: float = 0.0
    lut: LUT | None = None
    out_min: float = 0.0
    out_max: float = 65535.0

    @property
    def is_linear(self) -> bool:
        return self.kind != "lut"

    def apply(self, values: np.ndarray) -> np.ndarray:
        """Modality output of ``values`` in float64 (reference path)."""
        if self.kind == "lut":
            assert self.lut is not None
            return self.lut.lookup(values)
        return np.asarray(values, dtype=np.float64) * self.slope + self.intercept


def stored_range(bits_stored: int, signed: bool) -> tuple[int, int]:
    """Smallest and largest stored value for ``bits_stored`` bits (PS3.3 C.7.6.3.1)."""
    if signed:
        return -(2 ** (bits_stored - 1)), 2 ** (bits_stored - 1) - 1
    return 0, 2**bits_stored - 1


def modality_from_dataset(ds) -> Modality:
    """The Modality LUT stage of a dataset (Modality LUT Sequence first, then rescale)."""
    bits = int(ds.get("BitsStored") or ds.get("BitsAllocated") or 16)
    signed = int(ds.get("PixelRepresentation") or 0) == 1
    lo, hi = stored_range(bits, signed)
    seq = ds.get("ModalityLUTSequence")
    if seq:
        lut = lut_from_item(seq[0], little_endian=little_endian(ds), signed_input=signed,
                            what="Modality LUT Sequence (0028,3000)")
        return Modality(kind="lut", lut=lut, out_min=0.0, out_max=lut.out_max)
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if slope is not None and intercept is not None and slope != "" and intercept != "":
        try:
            slope, intercept = float(slope), float(intercept)
        except (TypeError, ValueError):
            raise InputError(f"Rescale Slope {slope!r} / Intercept {intercept!r} are not numbers") from None
        if not (math.isfinite(slope) and math.isfinite(intercept)) or slope == 0:
            raise InputError(f"unusable Rescale Slope {slope} / Intercept {intercept}")
        a, b = lo * slope + intercept, hi * slope + intercept
        return Modality(kind="rescale", slope=slope, intercept=intercept, out_min=min(a, b), out_max=max(a, b))
    return Modality(kind="identity", out_min=float(lo), out_max=float(hi))


# --------------------------------------------------------------------------- VOI


@dataclass(frozen=True)
class VOI:
    """The VOI stage actually used for an image, with what the manifest records.

    ``kind``: ``"window"`` (``center``/``width``/``function``), ``"lut"``
    (``lut``), ``"none"`` (the Modality output range is mapped as is), or a
    fallback computed from the image: ``"minmax"`` / ``"percentile"``
    (a LINEAR_EXACT window from ``low`` to ``high``; ``reason`` says why).
    """

    kind: str
    index: int | None = None
    center: float | None = None
    width: float | None = None
    function: str | None = None
    lut: LUT | None = field(default=None, repr=False)
    reason: str | None = None
    explanation: str | None = None

    def describe(self) -> dict:
        """The manifest fields of this VOI."""
        return {
            "voi_kind": self.kind,
            "voi_index": self.index,
            "window_center": self.center,
            "window_width": self.width,
            "voi_function": self.function if self.kind != "lut" else "LUT",
            "voi_explanation": self.explanation,
            "fallback_reason": self.reason,
        }


def _values(ds, keyword: str) -> list:
    elem = ds.get(keyword)
    if elem is None or elem == "":
        return []
    if isinstance(elem, (list, tuple)) or type(elem).__name__ == "MultiValue":
        return [v for v in elem]
    return [elem]


def windows_in(ds) -> list[tuple[float, float]]:
    """The (centre, width) presets of a dataset, in file order (Window Center/Width, VM 1-n)."""
    centers, widths = _values(ds, "WindowCenter"), _values(ds, "WindowWidth")
    if not centers and not widths:
        return []
    if len(centers) != len(widths):
        raise InputError(f"Window Center has {len(centers)} values but Window Width has {len(widths)}")
    try:
        return [(float(c), float(w)) for c, w in zip(centers, widths)]
    except (TypeError, ValueError):
        raise InputError(f"Window Center/Width are not numbers: {centers} / {widths}") from None


def voi_luts_in(ds, modality: Modality | None = None) -> list[LUT]:
    """The VOI LUT Sequence items of a dataset as :class:`LUT` objects.

    The first value mapped is signed (SS) when the Modality LUT stage can
    output negative values: signed stored values without rescale, or a
    rescale whose output range reaches below zero (PS3.3 C.11.2.1.1). A
    value read as unsigned is then taken as its two's-complement when it
    lies above what the Modality stage can output.
    """
    seq = ds.get("VOILUTSequence")
    if not seq:
        return []
    modality = modality or modality_from_dataset(ds)
    little = little_endian(ds)
    luts = [lut_from_item(item, little_endian=little, what="VOI LUT Sequence (0028,3010)") for item in seq]
    if modality.kind == "lut" or modality.out_min >= 0:
        return luts
    return [
        LUT(lut.data, lut.first_mapped - 65536, lut.bits, lut.explanation)
        if 32768 <= lut.first_mapped <= 65535 and lut.first_mapped > modality.out_max
        else lut
        for lut in luts
    ]


def window_problem(width: float, function: str) -> str | None:
    """Why a window width cannot be used, or ``None`` (PS3.3 C.11.2.1.2.1, C.11.2.1.3)."""
    if not math.isfinite(width):
        return f"window width {width:g} is not a finite number"
    if function == "LINEAR" and width < 1:
        return f"window width {width:g} is not usable (LINEAR needs a width of at least 1, PS3.3 C.11.2.1.2.1)"
    if function != "LINEAR" and width <= 0:
        return f"window width {width:g} is not usable ({function} needs a width above 0, PS3.3 C.11.2.1.3)"
    return None


def select_voi(
    ds,
    *,
    mode: str = "auto",
    index: int | None = None,
) -> VOI:
    """Choose the VOI stage for a dataset, or say why none is usable.

    ``mode``:

    * ``"auto"``: the window if the file has one, else the VOI LUT Sequence
      (the CSAW-S protocol windows with centre and width; PS3.3 C.11.2 leaves
      the choice to the application when both are present); a window that
      cannot be used (width below 1) gives way to the VOI LUT of the same
      index when the file has one;
    * ``"window"`` / ``"lut"``: only that one;
    * ``"none"``: no VOI; the Modality output range is mapped onto the output.

    ``index`` picks a preset (0-based, default 0); an index the file does not
    have raises :class:`InputError`. When nothing usable is found, the result
    has ``kind="fallback"`` and ``reason`` says why; :func:`fallback_voi`
    then computes a window from the image, or the caller raises.
    """
    if mode not in VOI_MODES:
        raise ValueError(f"voi must be one of {VOI_MODES}, not {mode!r}")
    if mode == "none":
        if index is not None:
            raise InputError("a VOI index was given but VOI is 'none'")
        return VOI(kind="none")
    windows = windows_in(ds) if mode in ("auto", "window") else []
    luts = voi_luts_in(ds) if mode == "lut" or (mode == "auto" and not windows) else []
    if windows:
        i = 0 if index is None else index
        if not 0 <= i < len(windows):
            raise InputError(
                f"VOI index {i} does not exist: the file has {len(windows)} window preset(s) (0..{len(windows) - 1})"
            )
        center, width = windows[i]
        function = str(ds.get("VOILUTFunction") or "LINEAR").strip().upper()
        if function not in WINDOW_FUNCTIONS:
            raise InputError(f"unsupported VOI LUT Function {function!r} (supported: {', '.join(WINDOW_FUNCTIONS)})")
        expl = _values(ds, "WindowCenterWidthExplanation")
        explanation = str(expl[i]) if i < len(expl) else None
        problem = window_problem(width, function)
        if problem and mode == "auto" and "VOILUTSequence" in ds:
            # the window is unusable but the file has VOI data that is: use its VOI LUT
            luts = voi_luts_in(ds)
            if i < len(luts):
                return VOI(kind="lut", index=i, lut=luts[i], explanation=luts[i].explanation)
        if problem:
            return VOI(kind="fallback", index=i, center=center, width=width, function=function, reason=problem)
        return VOI(kind="window", index=i, center=center, width=width, function=function, explanation=explanation)
    if luts:
        i = 0 if index is None else index
        if not 0 <= i < len(luts):
            raise InputError(f"VOI index {i} does not exist: the file has {len(luts)} VOI LUT(s) (0..{len(luts) - 1})")
        return VOI(kind="lut", index=i, lut=luts[i], explanation=luts[i].explanation)
    if index is not None:
        what = {"auto": "no window and no VOI LUT Sequence", "window": "no window", "lut": "no VOI LUT Sequence"}[mode]
        raise InputError(f"VOI index {index} does not exist: the file has {what}")
    reason = {
        "auto": "no window (0028,1050/1051) and no VOI LUT Sequence (0028,3010) in the file",
        "window": "no window (0028,1050/1051) in the file",
        "lut": "no VOI LUT Sequence (0028,3010) in the file",
    }[mode]
    return VOI(kind="fallback", reason=reason)


def padding_range(ds) -> tuple[int, int] | None:
    """The stored values that are pixel padding, inclusive, or None (PS3.3 C.7.5.1.1.2).

    Pixel Padding Value alone pads one value; with Pixel Padding Range Limit
    every value between the two (in either order). Both are stored values
    (before the Modality LUT), with the image's signedness: a value read as
    unsigned from a signed image is taken as its two's complement.
    """
    value = ds.get("PixelPaddingValue")
    if value is None or value == "":
        return None
    limit = ds.get("PixelPaddingRangeLimit")
    try:
        a = int(value[0] if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue" else value)
        b = a if limit is None or limit == "" else int(
            limit[0] if isinstance(limit, (list, tuple)) or type(limit).__name__ == "MultiValue" else limit)
    except (TypeError, ValueError, IndexError):
        raise InputError(f"Pixel Padding Value {value!r} / Range Limit {limit!r} are not whole numbers") from None
    if int(ds.get("PixelRepresentation") or 0) == 1:
        alloc = int(ds.get("BitsAllocated") or 16)
        half = 1 << (alloc - 1) if alloc in (8, 16, 32) else 1 << 15
        a, b = (v - 2 * half if v >= half else v for v in (a, b))
    return (a, b) if a <= b else (b, a)


def padding_mask(block: np.ndarray, padding: tuple[int, int]) -> np.ndarray:
    """Boolean mask of the padding pixels of ``block``."""
    lo, hi = padding
    if lo == hi:
        return block == lo
    return (block >= lo) & (block <= hi)


def blank_padding(image: np.ndarray, out: np.ndarray, padding: tuple[int, int]) -> int:
    """Set the output of every padding pixel to 0 (black, the background); return how many there were.

    Done in blocks of rows, so the mask never exists for the whole image.
    """
    rows = _chunk_rows(image)
    n = 0
    for start in range(0, image.shape[0], rows):
        mask = padding_mask(image[start : start + rows], padding)
        n += int(np.count_nonzero(mask))
        out[start : start + rows][mask] = 0
    return n


def _drop_padding(counts: np.ndarray, offset: int, padding: tuple[int, int] | None) -> np.ndarray:
    if padding is None:
        return counts
    lo, hi = padding
    i, j = max(lo - offset, 0), min(hi - offset + 1, len(counts))
    if i < j:
        counts = counts.copy()
        counts[i:j] = 0
    return counts


def image_range(
    image: np.ndarray,
    modality: Modality,
    method: str,
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
    exclude: tuple[int, int] | None = None,
) -> tuple[float, float]:
    """Low and high Modality output values of ``image`` for a fallback window.

    ``"minmax"``: the smallest and largest value; ``"percentile"``: the
    given percentiles (nearest-rank, ``inverted_cdf``), computed from a
    histogram for integer images. Stored values in ``exclude`` (pixel
    padding, inclusive) are left out; an image of nothing but padding
    raises :class:`InputError`.
    """
    if exclude is not None:
        return _range_without(image, modality, method, percentiles, exclude)
    if method == "minmax":
        if modality.is_linear:
            lo, hi = float(image.min()), float(image.max())
            a, b = lo * modality.slope + modality.intercept, hi * modality.slope + modality.intercept
            return min(a, b), max(a, b)
        if image.dtype.kind in "ui" and image.dtype.itemsize <= 2:
            used = modality.apply(_used_values(image))
        else:
            used = modality.apply(image.reshape(-1))
        return float(used.min()), float(used.max())
    if method == "percentile":
        q = np.asarray(percentiles, dtype=np.float64) / 100.0
        if image.dtype.kind in "ui" and image.dtype.itemsize <= 2:
            counts, offset = _histogram(image)
            values = np.arange(len(counts), dtype=np.int64) + offset
            out = modality.apply(values) if modality.kind != "identity" else values.astype(np.float64)
            order = np.argsort(out, kind="stable")
            cdf = np.cumsum(counts[order])
            ranks = np.ceil(q * cdf[-1]).astype(np.int64)
            pos = np.searchsorted(cdf, np.maximum(ranks, 1), side="left")
            lo, hi = out[order][pos]
            return float(lo), float(hi)
        vals = modality.apply(image.reshape(-1))
        lo, hi = np.percentile(vals, q * 100, method="inverted_cdf")
        return float(lo), float(hi)
    raise ValueError(f"fallback must be 'minmax' or 'percentile', not {method!r}")


def _range_without(image, modality, method, percentiles, padding) -> tuple[float, float]:
    """:func:`image_range` leaving out the stored values in ``padding``."""
    q = np.asarray(percentiles, dtype=np.float64) / 100.0
    if image.dtype.kind in "ui" and image.dtype.itemsize <= 2:
        counts, offset = _histogram(image)
        counts = _drop_padding(counts, offset, padding)
        total = int(counts.sum())
        if total == 0:
            raise InputError("every pixel is padding (Pixel Padding Value): nothing to compute a window from")
        values = np.arange(len(counts), dtype=np.int64) + offset
        used = np.flatnonzero(counts)
        if method == "minmax":
            out = modality.apply(values[used])
            return float(out.min()), float(out.max())
        if method != "percentile":
            raise ValueError(f"fallback must be 'minmax' or 'percentile', not {method!r}")
        out = modality.apply(values[used])
        order = np.argsort(out, kind="stable")
        cdf = np.cumsum(counts[used][order])
        ranks = np.ceil(q * cdf[-1]).astype(np.int64)
        pos = np.searchsorted(cdf, np.maximum(ranks, 1), side="left")
        lo, hi = out[order][pos]
        return float(lo), float(hi)
    flat = image.reshape(-1)
    keep = flat[~padding_mask(flat, padding)]
    if keep.size == 0:
        raise InputError("every pixel is padding (Pixel Padding Value): nothing to compute a window from")
    vals = modality.apply(keep)
    if method == "minmax":
        return float(vals.min()), float(vals.max())
    if method != "percentile":
        raise ValueError(f"fallback must be 'minmax' or 'percentile', not {method!r}")
    lo, hi = np.percentile(vals, q * 100, method="inverted_cdf")
    return float(lo), float(hi)


def fallback_voi(
    image: np.ndarray,
    modality: Modality,
    method: str,
    reason: str,
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
    exclude: tuple[int, int] | None = None,
) -> VOI:
    """A LINEAR_EXACT window over the image's own range (``method``: minmax or percentile), padding excluded."""
    lo, hi = image_range(image, modality, method, percentiles, exclude)
    return VOI(kind=method, center=(lo + hi) / 2, width=hi - lo, function="LINEAR_EXACT", reason=reason)


# --------------------------------------------------------------------------- rendering


def output_max(bits: int) -> int:
    """Largest output grey level: 255 for 8 bits, 65535 for 16."""
    if bits not in (8, 16):
        raise ValueError(f"bits must be 8 or 16, not {bits}")
    return 2**bits - 1


def voi_unit(values: np.ndarray, voi: VOI, modality: Modality) -> np.ndarray:
    """The VOI output of Modality output ``values`` as a fraction of the VOI output range (0..1).

    This is the reference formula (float64): PS3.3 C.11.2.1.2.1 (LINEAR),
    C.11.2.1.3.2 (LINEAR_EXACT), C.11.2.1.3.1 (SIGMOID), C.11.2.1.1 (LUT).
    """
    x = np.asarray(values, dtype=np.float64)
    if voi.kind == "lut":
        assert voi.lut is not None
        return voi.lut.lookup(x) / voi.lut.out_max
    if voi.kind == "none":
        span = modality.out_max - modality.out_min
        return np.clip((x - modality.out_min) / span, 0.0, 1.0) if span > 0 else np.zeros_like(x)
    c, w, f = voi.center, voi.width, voi.function
    assert c is not None and w is not None
    if voi.kind in ("minmax", "percentile"):
        lo = c - w / 2
        return np.clip((x - lo) / w, 0.0, 1.0) if w > 0 else np.zeros_like(x)
    if f == "LINEAR":
        if w == 1:  # the ramp collapses to a step at c - 0.5
            return (x > c - 0.5).astype(np.float64)
        return np.clip((x - (c - 0.5)) / (w - 1) + 0.5, 0.0, 1.0)
    if f == "LINEAR_EXACT":
        return np.clip((x - c) / w + 0.5, 0.0, 1.0)
    if f == "SIGMOID":
        with np.errstate(over="ignore"):
            return 1.0 / (1.0 + np.exp(-4.0 * (x - c) / w))
    raise ValueError(f"unsupported VOI function {f!r}")


def _affine(modality: Modality, voi: VOI, top: float, invert: bool) -> tuple[float, float] | None:
    """``(a, b)`` with output ``= clip(a * stored + b, 0, top)`` when the chain is linear, else None."""
    if not modality.is_linear:
        return None
    s, i = modality.slope, modality.intercept
    if voi.kind == "none":
        span = modality.out_max - modality.out_min
        if span <= 0:
            return None
        k, d = 1 / span, -modality.out_min / span
    elif voi.kind in ("minmax", "percentile"):
        assert voi.center is not None and voi.width is not None
        if voi.width <= 0:
            return None
        k = 1 / voi.width
        d = -(voi.center - voi.width / 2) / voi.width
    elif voi.kind == "window" and voi.function == "LINEAR" and voi.width != 1:
        assert voi.center is not None and voi.width is not None
        k = 1 / (voi.width - 1)
        d = 0.5 - (voi.center - 0.5) / (voi.width - 1)
    elif voi.kind == "window" and voi.function == "LINEAR_EXACT":
        assert voi.center is not None and voi.width is not None
        k = 1 / voi.width
        d = 0.5 - voi.center / voi.width
    else:
        return None
    # unit = k * (s * x + i) + d, output = top * unit (or top - top * unit)
    a, b = top * k * s, top * (k * i + d)
    if invert:
        a, b = -a, top - b
    return a, b


def reference_render(image: np.ndarray, modality: Modality, voi: VOI, *, bits: int = 8, invert: bool = False) -> np.ndarray:
    """The whole pipeline in float64 on the full image: slow, obviously correct, for tests."""
    top = output_max(bits)
    unit = voi_unit(modality.apply(image), voi, modality)
    if invert:
        unit = 1.0 - unit
    out = np.floor(unit * top + 0.5)
    return np.clip(out, 0, top).astype(np.uint8 if bits == 8 else np.uint16)


def _histogram(image: np.ndarray) -> tuple[np.ndarray, int]:
    """Counts of every possible value of an integer image of at most 16 bits, and the first value.

    Counted in blocks: ``np.bincount`` converts its input to 64-bit
    integers, which for the whole image would be four times a 16-bit image.
    """
    n = 1 << (8 * image.dtype.itemsize)
    flat = image.reshape(-1)
    if image.dtype.kind == "i":
        flat = flat.view(np.dtype(f"u{image.dtype.itemsize}"))  # two's-complement bit patterns
    counts = np.zeros(n, dtype=np.int64)
    step = _CHUNK_BYTES // 8
    for start in range(0, flat.size, step):
        counts += np.bincount(flat[start : start + step], minlength=n)
    if image.dtype.kind == "u":
        return counts, 0
    half = n // 2
    return np.concatenate([counts[half:], counts[:half]]), -half  # ordered from the most negative value


def _used_values(image: np.ndarray) -> np.ndarray:
    counts, offset = _histogram(image)
    return np.flatnonzero(counts) + offset


def _value_table(dtype: np.dtype, fn) -> tuple[np.ndarray, int]:
    """``fn`` evaluated on every value of an integer dtype of at most 16 bits: (table, first value)."""
    dtype = np.dtype(dtype)
    n = 1 << (8 * dtype.itemsize)
    first = 0 if dtype.kind == "u" else -(n // 2)
    return fn(np.arange(first, first + n, dtype=np.int64)), first


def _chunk_rows(image: np.ndarray) -> int:
    row_elems = max(1, int(np.prod(image.shape[1:], dtype=np.int64)))
    return max(1, _CHUNK_BYTES // (4 * row_elems))


def render(
    image: np.ndarray,
    modality: Modality,
    voi: VOI,
    *,
    bits: int = 8,
    invert: bool = False,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Apply Modality LUT, VOI, output mapping and inversion to ``image``; return uint8/uint16.

    ``image`` holds stored values (any integer or float dtype, 2-D). Work is
    done in blocks of rows of about 1 MiB of ``float32``; ``out`` may be a
    preallocated array of the output dtype and shape.
    """
    if voi.kind == "fallback":
        raise ValueError(f"no usable VOI ({voi.reason}); compute one with fallback_voi()")
    top = output_max(bits)
    dtype = np.uint8 if bits == 8 else np.uint16
    if out is None:
        out = np.empty(image.shape, dtype=dtype)
    elif out.shape != image.shape or out.dtype != dtype:
        raise ValueError(f"out must be {dtype.__name__} of shape {image.shape}")
    if image.size == 0:
        return out
    flat_in = image.reshape(image.shape[0], -1)
    flat_out = out.reshape(out.shape[0], -1)
    rows = _chunk_rows(image)
    affine = _affine(modality, voi, float(top), invert)
    if affine is not None:
        a, b = np.float32(affine[0]), np.float32(affine[1] + 0.5)  # +0.5: round half up on truncation
        hi = np.float32(top + 0.499)
        buf = np.empty((min(rows, flat_in.shape[0]), flat_in.shape[1]), dtype=np.float32)
        for start in range(0, flat_in.shape[0], rows):
            src = flat_in[start : start + rows]
            tmp = buf[: src.shape[0]]
            np.multiply(src, a, out=tmp, casting="unsafe")
            tmp += b
            np.clip(tmp, np.float32(0), hi, out=tmp)
            flat_out[start : start + rows] = tmp  # truncation of values >= 0
        return out

    def chain(values: np.ndarray) -> np.ndarray:
        unit = voi_unit(modality.apply(values), voi, modality)
        if invert:
            unit = 1.0 - unit
        return np.clip(np.floor(unit * top + 0.5), 0, top).astype(dtype)

    if image.dtype.kind in "ui" and image.dtype.itemsize <= 2:
        table, first = _value_table(image.dtype, chain)
        if image.dtype.kind == "i":  # index the table by the two's-complement bit pattern
            table = np.concatenate([table[-first:], table[:-first]])
            flat_in = flat_in.view(np.dtype(f"u{image.dtype.itemsize}"))
        for start in range(0, flat_in.shape[0], rows):
            np.take(table, flat_in[start : start + rows], out=flat_out[start : start + rows])
        return out
    for start in range(0, flat_in.shape[0], rows):
        flat_out[start : start + rows] = chain(flat_in[start : start + rows])
    return out


def inverted(ds) -> bool:
    """Whether the image must be inverted to show the background black.

    True for Photometric Interpretation MONOCHROME1 and for Presentation LUT
    Shape INVERSE (PS3.3 C.11.6.1.2); in DX/MG images the two go together
    and mean one inversion, not two.
    """
    pi = str(ds.get("PhotometricInterpretation") or "").strip().upper()
    shape = str(ds.get("PresentationLUTShape") or "").strip().upper()
    return pi == "MONOCHROME1" or shape == "INVERSE"


__all__ = [
    "DEFAULT_PERCENTILES",
    "FALLBACKS",
    "LUT",
    "VOI",
    "VOI_MODES",
    "WINDOW_FUNCTIONS",
    "Modality",
    "blank_padding",
    "fallback_voi",
    "image_range",
    "inverted",
    "lut_from_item",
    "modality_from_dataset",
    "output_max",
    "padding_mask",
    "padding_range",
    "reference_render",
    "render",
    "select_voi",
    "stored_range",
    "voi_luts_in",
    "voi_unit",
    "window_problem",
    "windows_in",
]
