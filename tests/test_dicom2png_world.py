"""dicom2png on the DICOM others write: deflated, 12-bit JPEG, padding, multi-frame, DICOMDIR, colour, messages.

Real files come from ../shared/data and from the test files installed with pydicom
(``pydicom.data.get_testdata_file``, offline); the rest are built here with pydicom.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from click.testing import CliRunner
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut
from pydicom.sequence import Sequence
from pydicom.uid import DeflatedExplicitVRLittleEndian
from test_dicom2png import image, write_dicom

from csaws_tools import dicom2png as d2p
from csaws_tools.batch import read_manifest
from csaws_tools.png import read_png, read_text

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

ROOT = Path(__file__).resolve().parents[1]


def installed(name: str) -> Path:
    """A test file installed with pydicom (no download)."""
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} is not among pydicom's installed test files")
    return Path(path)


def convert_one(tmp_path: Path, src: Path, **kw) -> dict:
    result = d2p.convert([src], tmp_path / "out", workers=1, progress=False, **kw)
    assert len(result.rows) == 1, result.rows
    return result.rows[0]


def window_reference(stored: np.ndarray, center: float, width: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1 LINEAR window onto 0..255, in float64."""
    unit = np.clip((stored.astype(np.float64) - (center - 0.5)) / (width - 1) + 0.5, 0, 1)
    return np.floor(unit * 255 + 0.5)


def _cli():
    from csaws_tools.cli import main

    return main


# --------------------------------------------------------------------------- 1. deflated


def test_deflated_files_convert_like_pydicom_decodes_them(tmp_path):
    """Deflated Explicit VR Little Endian (PS3.5 A.5): pydicom's image_dfl.dcm and one written here."""
    real = installed("image_dfl.dcm")
    row = convert_one(tmp_path / "a", real, fallback="minmax")
    assert row["status"] == "ok", row["error"]
    arr = pydicom.dcmread(real).pixel_array.astype(np.float64)
    expect = np.floor((arr - arr.min()) / (arr.max() - arr.min()) * 255 + 0.5)
    assert np.abs(read_png(row["output"]).astype(int) - expect).max() <= 1

    stored = image(40, 30, seed=3)
    src = write_dicom(tmp_path / "dfl.dcm", stored, WindowCenter=2048, WindowWidth=4096)
    ds = pydicom.dcmread(src)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.save_as(src, enforce_file_format=True)
    assert pydicom.dcmread(src).file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian
    row = convert_one(tmp_path / "b", src)
    assert row["status"] == "ok", row["error"]
    assert np.abs(read_png(row["output"]).astype(int) - window_reference(stored, 2048, 4096)).max() <= 1


def test_deflated_file_without_pixel_data_says_so(tmp_path):
    src = write_dicom(tmp_path / "nopix.dcm", None)
    ds = pydicom.dcmread(src)
    ds.Rows, ds.Columns, ds.BitsAllocated = 8, 8, 16
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.save_as(src, enforce_file_format=True)
    row = convert_one(tmp_path, src)
    assert row["status"] == "error" and row["error"].startswith("has no pixel data")


# --------------------------------------------------------------------------- 2. 12-bit JPEG Extended


def test_twelve_bit_jpeg_extended_decodes_through_gdcm(tmp_path):
    """pydicom's plugins refuse 12-bit JPEG Extended; GDCM decodes it, close to its JPEG 2000 twin."""
    pytest.importorskip("gdcm")
    src = installed("JPEG-lossy.dcm")
    twin = pydicom.dcmread(installed("JPEG2000.dcm")).pixel_array.astype(np.float64)
    arr, _ = d2p.load_image(src)
    assert arr.shape == (1024, 256) and arr.dtype == np.uint16 and int(arr.max()) < 4096
    assert np.corrcoef(arr.ravel(), twin.ravel())[0, 1] > 0.95
    assert np.abs(arr - twin).mean() < 10  # lossy: a few levels of 12 bits off on average
    row = convert_one(tmp_path, src, fallback="minmax")
    assert row["status"] == "ok", row["error"]
    assert row["TransferSyntaxUID"] == "1.2.840.10008.1.2.4.51"
    assert "Unsupported JPEG data precision 12" in (row["warnings"] or "")  # GDCM's stderr, captured


def test_undecodable_compressed_data_gives_one_short_line(tmp_path):
    src = installed("JPEG-lossy.dcm")
    data = bytearray(src.read_bytes())
    start = data.find(b"\xff\xd8")  # SOI of the first fragment
    data[start + 200 : start + 4000] = b"\x00" * 3800
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(bytes(data))
    row = convert_one(tmp_path, bad)
    assert row["status"] in ("ok", "error")
    if row["status"] == "error":
        assert len(row["error"]) < 300 and "\n" not in row["error"]


# --------------------------------------------------------------------------- 3. pixel padding


def test_pixel_padding_is_black_and_left_out_of_the_fallback(tmp_path):
    """PS3.3 C.7.5.1.1.2: a CT whose air is padded with -2000 spans the whole grey range, padding black."""
    body = np.random.default_rng(0).integers(0, 1001, size=(48, 40)).astype(np.int16)
    body[:, :10] = -2000
    body[0, 10], body[0, 11] = 0, 1000  # the body's own extremes
    src = write_dicom(tmp_path / "pad.dcm", body, PixelRepresentation=1, PixelPaddingValue=-2000,
                      RescaleSlope=1, RescaleIntercept=-1024)
    for method in ("minmax", "percentile"):
        row = convert_one(tmp_path / method, src, fallback=method)
        assert row["status"] == "ok", row["error"]
        out = read_png(row["output"])
        assert (out[:, :10] == 0).all() and row["padding_pixels"] == 480
        if method == "minmax":
            assert (row["window_center"], row["window_width"]) == (500 - 1024, 1000)
            assert out[0, 10] == 0 and out[0, 11] == 255
            np.testing.assert_array_equal(out[:, 10:], np.floor(body[:, 10:] / 1000 * 255 + 0.5))


def test_pixel_padding_range_limit(tmp_path):
    """Pixel Padding Value with Range Limit pads every stored value between the two (either order)."""
    stored = np.full((20, 20), 3000, dtype=np.uint16)
    stored[:, :5] = np.arange(4090, 4096)[:5]
    stored[:, 5:] = np.random.default_rng(1).integers(100, 2001, size=(20, 15))
    src = write_dicom(tmp_path / "range.dcm", stored, PixelPaddingValue=4095, PixelPaddingRangeLimit=4090,
                      PresentationLUTShape="INVERSE")
    row = convert_one(tmp_path, src, fallback="minmax")
    out = read_png(row["output"])
    assert row["padding_pixels"] == 100 and (out[:, :5] == 0).all()  # black even though the image is inverted
    assert row["window_center"] == (stored[:, 5:].min() + stored[:, 5:].max()) / 2


def test_real_ct_with_padding(tmp_path):
    """pydicom's 693_J2KI.dcm (a real CT, JPEG 2000, Pixel Padding Value -2000)."""
    src = installed("693_J2KI.dcm")
    ds = pydicom.dcmread(src)
    stored = ds.pixel_array
    pad = stored == -2000
    assert pad.any()
    row = convert_one(tmp_path, src, fallback="minmax", voi="none")
    out = read_png(row["output"])
    assert row["padding_pixels"] == int(pad.sum()) and (out[pad] == 0).all()
    row = convert_one(tmp_path / "mm", src, fallback="minmax", voi="window", voi_index=None)
    assert row["status"] == "ok"
    # with the fallback, the padding value does not define the low end of the window
    mm = d2p.to_array(src, fallback="minmax", voi="lut")[1]
    real = apply_modality_lut(stored, ds)[~pad]
    assert mm["window_center"] == pytest.approx((real.min() + real.max()) / 2)


# --------------------------------------------------------------------------- 4. multi-frame


def _multi_frame(path: Path, n: int = 3) -> tuple[Path, np.ndarray, list[tuple[int, int]]]:
    frames = np.stack([image(24, 20, seed=i) for i in range(n)])
    windows = [(1000 + 500 * i, 2000 + 100 * i) for i in range(n)]
    per = []
    for c, w in windows:
        voi = Dataset()
        voi.WindowCenter, voi.WindowWidth = c, w
        item = Dataset()
        item.FrameVOILUTSequence = Sequence([voi])
        per.append(item)
    src = write_dicom(path, frames, PerFrameFunctionalGroupsSequence=Sequence(per))
    return src, frames, windows


def test_frame_all_writes_every_frame_with_its_own_window(tmp_path):
    src, frames, windows = _multi_frame(tmp_path / "in" / "dbt.dcm")
    single = write_dicom(tmp_path / "in" / "single.dcm", image(seed=9), WindowCenter=2048, WindowWidth=4096)
    result = d2p.convert([tmp_path / "in"], tmp_path / "out", frame="all", workers=1, progress=False)
    assert result.summary() == "4 converted, 0 skipped, 0 failed"
    rows = sorted((r for r in result.rows if r["source"] == str(src)), key=lambda r: r["frame"])
    assert [Path(r["output"]).name for r in rows] == ["dbt_f0.png", "dbt_f1.png", "dbt_f2.png"]
    for k, r in enumerate(rows):
        assert r["frame"] == k and (r["window_center"], r["window_width"]) == windows[k]
        expect = window_reference(frames[k], *windows[k])
        assert np.abs(read_png(r["output"]).astype(int) - expect).max() <= 1
    other = next(r for r in result.rows if r["source"] == str(single))
    assert Path(other["output"]).name == "single.png" and other["frame"] is None
    frame = read_manifest(tmp_path / "out" / "manifest.parquet")
    assert len(frame) == 4
    again = d2p.convert([tmp_path / "in"], tmp_path / "out", frame="all", workers=1, progress=False)
    assert again.summary() == "0 converted, 4 skipped, 0 failed"


def test_frame_k_applies_to_multi_frame_files_only_and_never_overwrites_another_frame(tmp_path):
    src, frames, windows = _multi_frame(tmp_path / "in" / "dbt.dcm")
    write_dicom(tmp_path / "in" / "single.dcm", image(seed=9), WindowCenter=2048, WindowWidth=4096)
    out = tmp_path / "out"
    r0 = d2p.convert([tmp_path / "in"], out, frame=0, workers=1, progress=False)
    r1 = d2p.convert([tmp_path / "in"], out, frame=1, workers=1, progress=False)
    assert r0.failed == 0 and r1.failed == 0
    assert (out / "dbt_f0.png").is_file() and (out / "dbt_f1.png").is_file()
    f0 = read_png(out / "dbt_f0.png")
    assert np.abs(f0.astype(int) - window_reference(frames[0], *windows[0])).max() <= 1
    assert read_png(out / "dbt_f1.png").tolist() != f0.tolist()
    missing = d2p.convert([src], tmp_path / "o2", frame=7, workers=1, progress=False).rows[0]
    assert missing["error"] == "frame 7 does not exist: the file has 3 frame(s) (0..2)"


def test_name_template_frame_field(tmp_path):
    src, _, _ = _multi_frame(tmp_path / "dbt.dcm", n=12)
    result = d2p.convert([src], tmp_path / "out", frame="all", name="{PatientID}/s{frame:03d}", workers=1,
                         progress=False)
    assert sorted(Path(r["output"]).name for r in result.rows) == [f"s{k:03d}.png" for k in range(12)]
    result = d2p.convert([src], tmp_path / "o2", frame="all", name="{PatientID}", workers=1, progress=False)
    names = sorted(Path(r["output"]).name for r in result.rows)
    assert names[0] == "P001_f00.png" and names[-1] == "P001_f11.png"  # {frame} added when missing


def test_frames_claimed_beyond_the_file_do_not_become_tasks(tmp_path):
    src, _, _ = _multi_frame(tmp_path / "dbt.dcm")
    ds = pydicom.dcmread(src)
    ds.NumberOfFrames = 10**9
    ds.save_as(src, enforce_file_format=True)
    tasks, rows = d2p.plan([src], tmp_path / "out", frame="all")
    assert tasks == [] and "Number of Frames 1000000000 is more than the file" in rows[0]["error"]


def test_cli_frame_option(tmp_path):
    src, _, _ = _multi_frame(tmp_path / "in" / "dbt.dcm")
    res = CliRunner().invoke(_cli(), ["dicom2png", str(src), "-o", str(tmp_path / "o"), "--frame", "all",
                                      "--no-progress", "-j", "1"])
    assert res.exit_code == 0 and "3 converted" in res.stdout
    bad = CliRunner().invoke(_cli(), ["dicom2png", str(src), "-o", str(tmp_path / "o"), "--frame", "x"])
    assert bad.exit_code == 2 and "neither a 0-based frame number nor 'all'" in bad.output


# --------------------------------------------------------------------------- 5. DICOMDIR


def test_dicomdir_files_are_skipped_not_failed(tmp_path):
    tree = tmp_path / "cd"
    shutil.copytree(installed("DICOMDIR").parent, tree, ignore=shutil.ignore_patterns("TINY_ALPHA"))
    result = d2p.convert([tree], tmp_path / "out", workers=1, progress=False)
    dirs = [r for r in result.rows if Path(r["source"]).name.startswith("DICOMDIR")]
    assert len(dirs) >= 5
    for r in dirs:
        assert (r["status"], r["reason"]) == ("skipped", "DICOMDIR"), r
    assert not list((tmp_path / "out").glob("DICOMDIR*.png"))


# --------------------------------------------------------------------------- 6. no Photometric Interpretation


def test_missing_photometric_interpretation_is_monochrome2_with_a_warning(tmp_path):
    stored = image(30, 20, seed=5)
    src = write_dicom(tmp_path / "acr.dcm", stored, WindowCenter=2048, WindowWidth=4096)
    ds = pydicom.dcmread(src)
    del ds.PhotometricInterpretation
    ds.save_as(src)
    row = convert_one(tmp_path, src)
    assert row["status"] == "ok", row["error"]
    assert "Photometric Interpretation (0028,0004) is missing; assumed MONOCHROME2" in row["warnings"]
    assert row["PhotometricInterpretation"] is None  # the manifest shows what the file says
    assert np.abs(read_png(row["output"]).astype(int) - window_reference(stored, 2048, 4096)).max() <= 1


# --------------------------------------------------------------------------- 7. messages


def test_unknown_transfer_syntax_is_named(tmp_path):
    src = write_dicom(tmp_path / "new.dcm", image(8, 8), WindowCenter=2048, WindowWidth=4096)
    data = src.read_bytes()
    assert data.count(b"1.2.840.10008.1.2.1\0") == 1
    src.write_bytes(data.replace(b"1.2.840.10008.1.2.1\0", b"1.2.840.10008.1.2.9\0"))
    row = convert_one(tmp_path, src)
    assert row["error"] == ("transfer syntax 1.2.840.10008.1.2.9 is not supported: it is not a transfer syntax "
                            "pydicom knows (a newer or private one)")


def test_invalid_number_of_frames_is_named(tmp_path):
    src = write_dicom(tmp_path / "nf.dcm", image(8, 8), WindowCenter=2048, WindowWidth=4096, NumberOfFrames=1)
    data = src.read_bytes()
    element = b"\x28\x00\x08\x00IS\x02\x001 "
    assert data.count(element) == 1
    src.write_bytes(data.replace(element, element[:-2] + b"1A"))
    row = convert_one(tmp_path, src)
    assert row["error"] == "NumberOfFrames '1A' is not a whole number"


def test_lut_message_names_the_sequence(tmp_path):
    item = Dataset()
    item.LUTDescriptor = [256, 0, 8]
    src = write_dicom(tmp_path / "lut.dcm", image(8, 8), VOILUTSequence=Sequence([item]))
    row = convert_one(tmp_path, src)
    assert row["error"] == "VOI LUT Sequence (0028,3010) item without LUT Descriptor or LUT Data"


def test_library_messages_go_to_the_file_row_not_stderr(shared_data, tmp_path):
    """Raw decoder lines and pydicom warnings never reach stderr; only 'error: <file>: ...' lines do."""
    src = tmp_path / "in"
    shutil.copytree(shared_data / "dicom" / "real", src)
    shutil.copy(installed("JPEG-lossy.dcm"), src / "jpeg12.dcm")
    out = tmp_path / "out"
    proc = subprocess.run(check=False, args=[sys.executable, "-m", "csaws_tools.cli", "dicom2png", str(src), "-o", str(out),
                           "-j", "2", "--no-progress", "--fallback", "minmax"], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert proc.returncode == 1  # MR_truncated
    lines = proc.stderr.splitlines()
    assert lines and all(line.startswith(f"error: {src}/") for line in lines), proc.stderr
    frame = read_manifest(out / "manifest.parquet")
    jpeg = frame[frame.source.str.endswith("jpeg12.dcm")].iloc[0]
    assert jpeg.status == "ok" and "Unsupported JPEG data precision 12" in jpeg.warnings


# --------------------------------------------------------------------------- 8. colour


def test_rgb_and_ybr_become_rgb_png_like_pydicom(tmp_path):
    for name in ("examples_rgb_color.dcm", "SC_rgb_dcmtk_+eb+cy+n1.dcm", "SC_ybr_full_422_uncompressed.dcm",
                 "SC_rgb_jpeg.dcm",  # its Pixel Data element is implicit VR inside explicit VR data
                 "SC_rgb_rle_16bit.dcm"):
        src = installed(name)
        row = convert_one(tmp_path / name, src)
        assert row["status"] == "ok", (name, row["error"])
        out = read_png(row["output"])
        ds = pydicom.dcmread(src)
        ref = ds.pixel_array.astype(np.float64)  # pydicom converts YBR to RGB
        if ds.BitsStored > 8:
            ref = np.floor(ref * 255 / (2**ds.BitsStored - 1) + 0.5)
        assert out.shape == ref.shape and out.dtype == np.uint8 and row["voi_kind"] == "colour"
        assert np.abs(out.astype(int) - ref).max() <= 1, name


def test_palette_colour_is_applied(tmp_path):
    src = installed("examples_palette.dcm")
    row = convert_one(tmp_path, src)
    assert row["status"] == "ok", row["error"]
    ds = pydicom.dcmread(src)
    rgb = apply_color_lut(ds.pixel_array, ds).astype(np.float64)
    bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
    expect = np.floor(rgb * 255 / (2**bits - 1) + 0.5)
    out = read_png(row["output"])
    assert out.shape == (*ds.pixel_array.shape, 3) and np.abs(out.astype(int) - expect).max() <= 1


def test_colour_refuse_keeps_greyscale_only(tmp_path):
    row = convert_one(tmp_path, installed("examples_rgb_color.dcm"), colour="refuse")
    assert row["status"] == "error"
    assert row["error"].startswith("Photometric Interpretation RGB with 3 sample(s) per pixel: only greyscale")


def test_colour_multi_frame(tmp_path):
    src = installed("examples_ybr_color.dcm")
    result = d2p.convert([src], tmp_path / "out", frame=2, workers=1, progress=False)
    row = result.rows[0]
    assert row["status"] == "ok" and Path(row["output"]).name == "examples_ybr_color_f02.png"
    expect = pydicom.pixels.pixel_array(src, index=2)
    assert np.abs(read_png(row["output"]).astype(int) - expect).max() <= 1


# --------------------------------------------------------------------------- inputs are never touched


def test_output_into_the_input_folder_never_replaces_an_input(tmp_path):
    """``dicom2png X -o X``: an existing PNG that this tool did not write is an input, never overwritten."""
    x = tmp_path / "x"
    write_dicom(x / "p1" / "a.dcm", image(seed=1), WindowCenter=2048, WindowWidth=4096)
    write_dicom(x / "p1" / "b.dcm", image(seed=2), WindowCenter=2048, WindowWidth=4096)
    theirs = x / "p1" / "a.png"
    theirs.write_bytes(b"\x89PNG\r\n\x1a\nsomebody's image")
    before = theirs.read_bytes()
    for overwrite in (False, True):
        result = d2p.convert([x], x, workers=1, progress=False, overwrite=overwrite)
        assert theirs.read_bytes() == before
        rows = {Path(r["source"]).name: r for r in result.rows}
        assert rows["a.dcm"]["status"] == "error" and "was not written by dicom2png; not overwriting" in rows["a.dcm"]["error"]
        assert rows["b.dcm"]["status"] == "ok"
        assert rows["a.png"]["reason"] == "not a DICOM file"
        assert "b.png" not in rows and "manifest.parquet" not in rows  # its own outputs are not inputs
    assert "csaws:voi" in read_text(x / "p1" / "b.png")


# --------------------------------------------------------------------------- decompression bombs


def test_header_claiming_a_huge_image_is_refused_before_decoding(tmp_path):
    """60000 x 60000 claimed by the header (native) or by the JPEG 2000 codestream: one line, no allocation."""
    big = write_dicom(tmp_path / "in" / "native.dcm", image(4, 4), WindowCenter=2048, WindowWidth=4096)
    ds = pydicom.dcmread(big)
    ds.Rows, ds.Columns = 60000, 60000
    ds.save_as(big, enforce_file_format=True)
    j2k = tmp_path / "in" / "j2k.dcm"
    data = bytearray((ROOT.parent / "shared" / "data" / "dicom" / "real" / "RG3_J2KR.dcm").read_bytes()) \
        if (ROOT.parent / "shared" / "data").is_dir() else bytearray(installed("MR_small_jp2klossless.dcm").read_bytes())
    i = data.find(b"\xff\x4f\xff\x51")
    data[i + 8 : i + 24] = (60000).to_bytes(4, "big") * 2 + bytes(8)  # Xsiz, Ysiz; offsets 0
    j2k.write_bytes(bytes(data))
    code = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))\n"
        "from csaws_tools import dicom2png as d\n"
        f"r = d.convert([{str(tmp_path / 'in')!r}], {str(tmp_path / 'out')!r}, workers=1, progress=False)\n"
        "for row in r.rows: print(row['source'], '|', row['status'], '|', row['error'])\n"
    )
    proc = subprocess.run(check=False, args=[sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = dict(line.split(" | ", 1) for line in proc.stdout.splitlines())
    assert lines[str(big)].startswith("error | the file: header claims 60000 x 60000 = 3600000000 pixels")
    assert lines[str(j2k)].startswith("error | the compressed frame: header claims 60000 x 60000")


def test_max_pixels_option(tmp_path):
    src = write_dicom(tmp_path / "a.dcm", image(64, 48), WindowCenter=2048, WindowWidth=4096)
    env_before = os.environ.get("CSAWS_MAX_PIXELS")
    try:
        res = CliRunner().invoke(_cli(), ["dicom2png", str(src), "-o", str(tmp_path / "o"), "--max-pixels", "1000",
                                          "-j", "1", "--no-progress"])
        assert res.exit_code == 1
        assert "header claims 64 x 48 = 3072 pixels, more than the limit of 1000 (max_pixels; CSAWS_MAX_PIXELS)" in res.stderr
    finally:
        if env_before is None:
            os.environ.pop("CSAWS_MAX_PIXELS", None)
        else:
            os.environ["CSAWS_MAX_PIXELS"] = env_before
    ok = CliRunner().invoke(_cli(), ["dicom2png", str(src), "-o", str(tmp_path / "o"), "-j", "1", "--no-progress"])
    assert ok.exit_code == 0


# --------------------------------------------------------------------------- edited inputs, links, names


def test_an_edited_input_is_redone(tmp_path):
    src = write_dicom(tmp_path / "in" / "a.dcm", image(seed=1), WindowCenter=2048, WindowWidth=4096)
    out = tmp_path / "out"
    assert d2p.convert([tmp_path / "in"], out, workers=1, progress=False).summary() == "1 converted, 0 skipped, 0 failed"
    assert d2p.convert([tmp_path / "in"], out, workers=1, progress=False).summary() == "0 converted, 1 skipped, 0 failed"
    first = read_png(out / "a.png")
    ds = pydicom.dcmread(src)
    ds.WindowCenter = 1000
    ds.save_as(src, enforce_file_format=True)
    again = d2p.convert([tmp_path / "in"], out, workers=1, progress=False)
    assert again.summary() == "1 converted, 0 skipped, 0 failed" and again.rows[0]["window_center"] == 1000
    assert read_png(out / "a.png").tolist() != first.tolist()


def test_folder_links_are_followed_and_a_loop_is_one_row(tmp_path):
    real = tmp_path / "data" / "site1"
    write_dicom(real / "a.dcm", image(seed=1), WindowCenter=2048, WindowWidth=4096)
    top = tmp_path / "in"
    top.mkdir()
    (top / "linked").symlink_to(real, target_is_directory=True)
    (real / "loop").symlink_to(top, target_is_directory=True)  # in -> linked -> loop -> in ...
    result = d2p.convert([top], tmp_path / "out", workers=1, progress=False)
    rows = {Path(r["source"]).name: r for r in result.rows}
    assert rows["a.dcm"]["status"] == "ok" and (tmp_path / "out" / "linked" / "a.png").is_file()
    assert rows["loop"]["status"] == "skipped" and "already searched" in rows["loop"]["reason"]
    assert len(result.rows) == 2


def test_a_file_name_that_is_not_utf8_is_one_row(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    raw = os.fsencode(folder) + b"/caf\xe9.dcm"
    good = write_dicom(folder / "good.dcm", image(seed=1), WindowCenter=2048, WindowWidth=4096)
    shutil.copy(good, raw)
    tasks, rows = d2p.plan([folder], tmp_path / "out")
    assert rows == [] and len(tasks) == 2
    names = sorted(Path(t.output).name for t in tasks)
    assert names == ["caf_xe9.png", "good.png"]
    for t in tasks:
        t.key.encode("utf-8")  # shardable
        row = d2p.convert_file(t.source, t.output, d2p.Options())
        assert row["status"] == "ok", row["error"]


def test_folder_without_dicom_exits_1_and_says_so(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "notes.txt").write_text("x")
    (tmp_path / "in" / "scan.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    res = CliRunner().invoke(_cli(), ["dicom2png", str(tmp_path / "in"), "-o", str(tmp_path / "o"), "-j", "1",
                                      "--no-progress"])
    assert res.exit_code == 1
    assert "0 converted, 2 skipped, 0 failed" in res.stdout
    assert f"no DICOM image found in {tmp_path / 'in'} (2 file(s) looked at" in res.stderr


def test_stderr_capture_is_safe_with_threads(tmp_path):
    """Concurrent conversions in threads capture codec lines and leave stderr working afterwards."""
    import concurrent.futures as cf

    src = installed("JPEG-lossy.dcm")
    before = os.fstat(2)
    with cf.ThreadPoolExecutor(4) as pool:
        rows = list(pool.map(lambda k: d2p.convert_file(src, tmp_path / f"{k}.png", d2p.Options(fallback="minmax")),
                             range(8)))
    assert all(r["status"] == "ok" for r in rows)
    assert any("Unsupported JPEG data precision 12" in (r["warnings"] or "") for r in rows)
    after = os.fstat(2)  # fd 2 is the same file again, not a capture file
    assert (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino)
