"""The pixel pipeline (csaws_tools.voi) against pydicom's reference implementation of PS3.3 C.11."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from pydicom.sequence import Sequence

from csaws_tools import voi
from csaws_tools.errors import InputError


def make_ds(**attrs) -> Dataset:
    ds = Dataset()
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.PixelRepresentation = 0
    for k, v in attrs.items():
        setattr(ds, k, v)
    return ds


def pydicom_reference(arr: np.ndarray, ds: Dataset, *, index: int = 0, bits: int = 8, prefer_lut: bool = False):
    """pydicom's modality + VOI output mapped from the VOI output range onto 0..2**bits-1, inverted for MONOCHROME1."""
    top = 2**bits - 1
    m = apply_modality_lut(arr, ds)
    v = np.asarray(apply_voi_lut(m, ds, index=index, prefer_lut=prefer_lut), dtype=np.float64)
    use_lut = "VOILUTSequence" in ds and (prefer_lut or "WindowCenter" not in ds)
    if use_lut:
        lo, hi = 0.0, 2.0 ** int(ds.VOILUTSequence[index].LUTDescriptor[2]) - 1
    else:
        if "ModalityLUTSequence" in ds:
            lo, hi = 0.0, 2.0 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1
        elif ds.PixelRepresentation == 0:
            lo, hi = 0.0, 2.0**ds.BitsStored - 1
        else:
            lo, hi = -(2.0 ** (ds.BitsStored - 1)), 2.0 ** (ds.BitsStored - 1) - 1
        if "RescaleSlope" in ds and "RescaleIntercept" in ds:
            lo, hi = lo * float(ds.RescaleSlope) + float(ds.RescaleIntercept), hi * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    unit = (v - lo) / (hi - lo)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        unit = 1.0 - unit
    return unit * top


def ours(arr: np.ndarray, ds: Dataset, *, index: int | None = None, bits: int = 8, mode: str = "auto") -> np.ndarray:
    modality = voi.modality_from_dataset(ds)
    chosen = voi.select_voi(ds, mode=mode, index=index)
    return voi.render(arr, modality, chosen, bits=bits, invert=voi.inverted(ds))


def assert_within_one(a: np.ndarray, ref: np.ndarray) -> None:
    diff = np.abs(a.astype(np.float64) - ref)
    assert diff.max() <= 1.0, f"max difference {diff.max()} grey levels"


RNG = np.random.default_rng(1234)
IMG12 = RNG.integers(0, 4096, size=(1500, 333), dtype=np.uint16)  # rows span several work blocks
IMG12[0, :4] = [0, 4095, 2048, 2047]


@pytest.mark.parametrize("function", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
@pytest.mark.parametrize("bits", [8, 16])
def test_window_functions_match_pydicom(function, photometric, bits):
    ds = make_ds(WindowCenter=1800, WindowWidth=1200, VOILUTFunction=function, PhotometricInterpretation=photometric)
    got = ours(IMG12, ds, bits=bits)
    assert got.dtype == (np.uint8 if bits == 8 else np.uint16)
    assert_within_one(got, pydicom_reference(IMG12, ds, bits=bits))
    # the output range is the window's, not the image's: values far outside saturate
    low = IMG12 < 1000
    expect_low = 0 if photometric == "MONOCHROME2" else 2**bits - 1
    if function != "SIGMOID":
        assert np.all(got[low] == expect_low)


@pytest.mark.parametrize("slope,intercept", [(1.0, -1024.0), (3.774114, 0.000061), (-0.5, 100.0)])
def test_rescale_then_window_matches_pydicom(slope, intercept):
    centre = (2048 * slope + intercept)
    ds = make_ds(WindowCenter=centre, WindowWidth=abs(1500 * slope), RescaleSlope=slope, RescaleIntercept=intercept)
    assert_within_one(ours(IMG12, ds), pydicom_reference(IMG12, ds))


def test_signed_data_and_sigmoid_use_the_value_table():
    arr = RNG.integers(-2048, 2048, size=(400, 300), dtype=np.int16)
    ds = make_ds(PixelRepresentation=1, WindowCenter=-100, WindowWidth=900, VOILUTFunction="SIGMOID",
                 RescaleSlope=2, RescaleIntercept=-10)
    assert_within_one(ours(arr, ds), pydicom_reference(arr, ds))
    # the same chain on a dtype without a value table (int32: float blocks) gives the same grey levels
    modality, chosen = voi.modality_from_dataset(ds), voi.select_voi(ds)
    wide = voi.render(arr.astype(np.int32), modality, chosen)
    assert np.abs(wide.astype(int) - ours(arr, ds).astype(int)).max() <= 1


def test_fast_linear_path_equals_float64_reference():
    ds = make_ds(WindowCenter=2000.5, WindowWidth=1001, RescaleSlope=1.5, RescaleIntercept=-7, PhotometricInterpretation="MONOCHROME1")
    modality, chosen = voi.modality_from_dataset(ds), voi.select_voi(ds)
    fast = voi.render(IMG12, modality, chosen, invert=True)
    slow = voi.reference_render(IMG12, modality, chosen, invert=True)
    diff = np.abs(fast.astype(int) - slow.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3  # only float32 rounding at exact half levels


def test_width_one_is_a_threshold_like_pydicom():
    ds = make_ds(WindowCenter=2000, WindowWidth=1)
    got = ours(IMG12, ds)
    assert set(np.unique(got)) <= {0, 255}
    assert np.array_equal(got == 255, IMG12 > 1999.5)
    assert_within_one(got, pydicom_reference(IMG12, ds))


def voi_lut_item(data, first, bits) -> Dataset:
    item = Dataset()
    item.LUTDescriptor = [len(data), first, bits]
    item.LUTData = list(int(v) for v in data)
    return item


def test_voi_lut_sequence_matches_pydicom_including_clipping():
    lut = (np.linspace(0, 1, 2000) ** 0.5 * 65535).astype(int)
    ds = make_ds()
    ds.VOILUTSequence = Sequence([voi_lut_item(lut, 1000, 16), voi_lut_item(lut[::-1], 0, 16)])
    for index in (0, 1):
        got = ours(IMG12, ds, index=index)
        assert_within_one(got, pydicom_reference(IMG12, ds, index=index, prefer_lut=True))
    assert np.all(ours(IMG12, ds)[IMG12 < 1000] == 0)  # below the first mapped value: first entry
    assert np.all(ours(IMG12, ds)[IMG12 >= 2999] == 255)  # past the end: last entry


def test_modality_lut_sequence_then_window_matches_pydicom():
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 16]  # pydicom reads 8- and 16-bit modality LUTs
    item.LUTData = [int(v) for v in (4095 - np.arange(4096)) * 16]  # an inverting modality LUT
    ds = make_ds(WindowCenter=24000, WindowWidth=32000)
    ds.ModalityLUTSequence = Sequence([item])
    assert_within_one(ours(IMG12, ds), pydicom_reference(IMG12, ds))


def test_auto_prefers_the_window_and_lut_mode_the_lut():
    ds = make_ds(WindowCenter=[450, 200], WindowWidth=[790, 443])
    ds.VOILUTSequence = Sequence([voi_lut_item(np.arange(4096), 0, 12)])
    assert voi.select_voi(ds).kind == "window"
    picked = voi.select_voi(ds, index=1)
    assert (picked.center, picked.width, picked.index) == (200.0, 443.0, 1)
    assert voi.select_voi(ds, mode="lut").kind == "lut"
    assert voi.select_voi(ds, mode="none").kind == "none"


def test_missing_index_and_inconsistent_windows_are_errors():
    ds = make_ds(WindowCenter=[450, 200], WindowWidth=[790, 443])
    with pytest.raises(InputError, match="VOI index 2 does not exist: the file has 2 window preset"):
        voi.select_voi(ds, index=2)
    with pytest.raises(InputError, match="no VOI LUT Sequence"):
        voi.select_voi(ds, mode="lut", index=0)
    with pytest.raises(InputError, match="Window Center has 2 values but Window Width has 1"):
        voi.select_voi(make_ds(WindowCenter=[1, 2], WindowWidth=5))
    with pytest.raises(InputError, match="unsupported VOI LUT Function 'GAMMA'"):
        voi.select_voi(make_ds(WindowCenter=1, WindowWidth=5, VOILUTFunction="GAMMA"))


def test_unusable_or_missing_voi_gives_a_fallback_with_a_reason():
    zero = voi.select_voi(make_ds(WindowCenter=100, WindowWidth=0))
    assert zero.kind == "fallback" and "window width 0 is not usable" in zero.reason
    assert voi.select_voi(make_ds(WindowCenter=100, WindowWidth=0.5, VOILUTFunction="LINEAR_EXACT")).kind == "window"
    none = voi.select_voi(make_ds())
    assert none.kind == "fallback" and "no window" in none.reason
    with pytest.raises(ValueError, match="fallback_voi"):
        voi.render(IMG12, voi.Modality(), none)


@pytest.mark.parametrize("dtype,lo,hi", [(np.uint16, 0, 4096), (np.int16, -3000, 3000), (np.uint8, 0, 256)])
def test_percentile_and_minmax_fallbacks(dtype, lo, hi):
    arr = RNG.integers(lo, hi, size=(300, 200)).astype(dtype)
    modality = voi.Modality(kind="rescale", slope=-2.0, intercept=5.0, out_min=-1e5, out_max=1e5)
    values = arr.astype(np.float64) * -2.0 + 5.0
    expect = np.percentile(values, [0.5, 99.5], method="inverted_cdf")
    assert voi.image_range(arr, modality, "percentile") == pytest.approx(tuple(expect))
    assert voi.image_range(arr, modality, "minmax") == pytest.approx((values.min(), values.max()))
    fb = voi.fallback_voi(arr, modality, "minmax", "no window")
    out = voi.render(arr, modality, fb)
    assert out.min() == 0 and out.max() == 255
    assert fb.describe()["fallback_reason"] == "no window" and fb.describe()["voi_kind"] == "minmax"


def test_none_maps_the_modality_output_range():
    ds = make_ds()
    got = ours(IMG12, ds, mode="none")
    assert_within_one(got, IMG12 / 4095 * 255)


def test_inversion_rules():
    assert voi.inverted(make_ds(PhotometricInterpretation="MONOCHROME1"))
    assert voi.inverted(make_ds(PresentationLUTShape="INVERSE"))
    assert voi.inverted(make_ds(PhotometricInterpretation="MONOCHROME1", PresentationLUTShape="INVERSE"))
    assert not voi.inverted(make_ds(PresentationLUTShape="IDENTITY"))


def test_render_into_preallocated_output_and_bad_bits():
    ds = make_ds(WindowCenter=2048, WindowWidth=4096)
    out = np.empty(IMG12.shape, np.uint8)
    res = voi.render(IMG12, voi.modality_from_dataset(ds), voi.select_voi(ds), out=out)
    assert res is out
    with pytest.raises(ValueError):
        voi.render(IMG12, voi.modality_from_dataset(ds), voi.select_voi(ds), bits=12)


def test_voi_lut_first_mapped_value_is_signed_when_rescale_output_can_be_negative():
    # CT-like: unsigned 12-bit storage, Rescale Intercept -1024, VOI LUT starting at -1024 (PS3.3 C.11.2.1.1:
    # the first value mapped is SS). Read as US it arrives as 64512; it must still start at -1024.
    lut = np.arange(4096) * 16
    ds = make_ds(RescaleSlope=1, RescaleIntercept=-1024)
    ds.VOILUTSequence = Sequence([voi_lut_item(lut, 65536 - 1024, 16)])
    chosen = voi.select_voi(ds)
    assert chosen.kind == "lut" and chosen.lut.first_mapped == -1024
    got = ours(IMG12, ds)
    expect = np.floor(lut[np.clip(IMG12.astype(int) - 1024 + 1024, 0, 4095)] / 65535 * 255 + 0.5)
    assert np.array_equal(got, expect.astype(np.uint8))
    # an unsigned first value the modality output can reach is left as it is
    ds = make_ds(RescaleSlope=40, RescaleIntercept=-1024)
    ds.VOILUTSequence = Sequence([voi_lut_item(lut, 40000, 16)])
    assert voi.select_voi(ds).lut.first_mapped == 40000


def test_auto_uses_the_voi_lut_when_the_window_is_unusable():
    ds = make_ds(WindowCenter=100, WindowWidth=0)
    ds.VOILUTSequence = Sequence([voi_lut_item(np.arange(4096), 0, 12)])
    assert voi.select_voi(ds).kind == "lut"
    assert voi.select_voi(ds, mode="window").kind == "fallback"  # asked for the window only: no LUT


def test_rescale_that_is_not_a_number_is_a_clear_error():
    ds = make_ds()
    ds.add_new(0x00281053, "LO", "abc")  # Rescale Slope
    ds.add_new(0x00281052, "LO", "0")
    with pytest.raises(InputError, match="Rescale Slope 'abc' / Intercept '0' are not numbers"):
        voi.modality_from_dataset(ds)


@pytest.mark.parametrize("dtype", [np.uint16, np.int16])
def test_histogram_fallbacks_stay_within_a_fraction_of_the_image(dtype):
    """np.bincount copies its input to 64 bits; counting in blocks keeps that to one block."""
    import tracemalloc

    arr = RNG.integers(-2000 if dtype == np.int16 else 0, 4096, size=(2000, 1000)).astype(dtype)
    modality = voi.Modality(kind="lut", lut=voi.LUT(np.arange(65536.0), -32768, 16), out_min=0, out_max=65535)
    expect = np.percentile(arr.astype(np.int64), [0.5, 99.5], method="inverted_cdf") + 32768  # the LUT adds 32768
    voi.image_range(arr[:10], modality, "percentile")  # warm up
    tracemalloc.start()
    try:
        got = voi.image_range(arr, modality, "percentile")
        minmax = voi.image_range(arr, modality, "minmax")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert got == pytest.approx(tuple(expect))
    assert minmax == (int(arr.min()) + 32768.0, int(arr.max()) + 32768.0)
    assert peak < arr.nbytes, f"peak {peak / arr.nbytes:.2f} x the image"
