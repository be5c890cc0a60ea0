"""Speed and memory of ``dicom2png`` against its floor, measured side by side.

For each image (the real files in ``../shared/data/dicom/bench`` and a
synthetic full-size 4096 x 3328, 12-bit uncompressed mammogram made here):

* raw decode: the codec alone through pydicom (``iter_pixels`` with the plugin
  dicom2png tries first), no checks: the decode floor
* decode: header checks (fragment walk, codestream size) + decode (:func:`csaws_tools.dicom2png.load_image`)
* window: our float32 Modality + VOI + mapping (:func:`csaws_tools.voi.render`)
* encode: the fastest PNG encoder we have (:func:`csaws_tools.png.encode_png`)
* floor = raw decode + window + encode; whole = :func:`convert_file` (checks, decode,
  window, PNG written atomically, warnings captured); goal whole / floor <= 1.3
* pydicom ``apply_modality_lut`` + ``apply_voi_lut`` against our window step
* Pillow's default PNG encoder against ours (time and size)
* peak traced memory of one conversion / decoded image size (goal < 4), and the
  growth of the peak resident set size (RSS) of a fresh process converting the
  file, which also counts the codecs' own C buffers that tracemalloc cannot see

The synthetic image is also measured JPEG 2000 lossless and JPEG-LS lossless
compressed (the codecs of many real mammograms).

and the throughput of a batch with 1 and 2 worker processes.

Run: ``python benchmarks/bench_dicom2png.py [--repeat 3] [--batch 8] [--quick]``
(``--quick``: the real files only, JPEG 2000 lossless ``RG3_J2KR`` included; no
synthetic image, no throughput).
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
import warnings
import zlib
from pathlib import Path

import numpy as np

from csaws_tools import voi
from csaws_tools.dicom2png import Options, convert, convert_file, load_image
from csaws_tools.png import encode_png

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT.parent / "shared" / "data" / "dicom" / "bench"
REAL_J2K = ROOT.parent / "shared" / "data" / "dicom" / "real" / "RG3_J2KR.dcm"


def best(fn, repeat: int) -> tuple[float, object]:
    """Best wall time of ``repeat`` calls, and the last result."""
    times, result = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return min(times), result


def synthetic_mammogram(path: Path, rows: int = 4096, cols: int = 3328) -> Path:
    """A 12-bit uncompressed MG file: a smooth breast-like dome with texture on a zero background."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:rows, 0:cols].astype(np.float32)
    r = np.sqrt(((y - rows / 2) / (rows * 0.45)) ** 2 + (x / (cols * 0.8)) ** 2)
    breast = r < 1
    img = np.where(breast, 1200 + 1800 * np.sqrt(np.clip(1 - r, 0, None)), 0).astype(np.float32)
    small = rng.normal(0, 120, size=(rows // 16, cols // 16)).astype(np.float32)
    img += np.kron(small, np.ones((16, 16), np.float32))[:rows, :cols] * breast
    img += rng.normal(0, 15, size=img.shape).astype(np.float32) * breast
    arr = np.clip(img, 0, 4095).astype(np.uint16)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID = "MG", "BENCH"
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.WindowCenter, ds.WindowWidth = 2100, 2400
    ds.RescaleSlope, ds.RescaleIntercept = 1, 0
    ds.PixelData = arr.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def compressed_copies(path: Path) -> list[Path]:
    """``path`` re-encoded JPEG 2000 lossless and JPEG-LS lossless (those whose encoder is installed)."""
    import pydicom
    from pydicom.uid import JPEG2000Lossless, JPEGLSLossless

    made = []
    for syntax, suffix in ((JPEG2000Lossless, "J2KR"), (JPEGLSLossless, "JLSL")):
        ds = pydicom.dcmread(path)
        try:
            ds.compress(syntax)
        except (RuntimeError, ImportError) as exc:
            print(f"(no {syntax.name} encoder: {exc})")
            continue
        target = path.with_name(f"{path.stem}_{suffix}.dcm")
        ds.save_as(target, enforce_file_format=True)
        made.append(target)
    return made


_RSS_CHILD = """
import importlib, re, sys
from pathlib import Path
from csaws_tools.dicom2png import Options, convert_file
for name in ("openjpeg", "jpeg_ls", "gdcm"):  # shared libraries are loaded before the baseline
    try:
        importlib.import_module(name)
    except ImportError:
        pass
def high_water():  # this process's peak RSS in bytes (ru_maxrss would include the parent's, kept across exec)
    with open("/proc/self/status") as fh:
        return int(re.search(r"VmHWM:\\s+(\\d+) kB", fh.read()).group(1)) * 1024
base = high_water()
row = convert_file(Path(sys.argv[1]), Path(sys.argv[2]), Options(), overwrite=True)
assert row["status"] == "ok", row["error"]
print(high_water() - base)
"""


def rss_growth(path: Path, target: Path) -> float:
    """Bytes by which a fresh process's peak RSS grows while it converts ``path`` (NaN without Linux ``/proc``)."""
    if not Path("/proc/self/status").exists():
        return float("nan")
    done = subprocess.run([sys.executable, "-c", _RSS_CHILD, str(path), str(target)],
                          capture_output=True, text=True, check=True)
    return int(done.stdout.split()[-1])


def measure(path: Path, tmp: Path, repeat: int) -> dict:
    import pydicom
    from PIL import Image
    from pydicom.pixels import (
        apply_modality_lut,
        apply_voi_lut,
        iter_pixels,
        pixel_array,
    )

    from csaws_tools.dicom.codecs import _PREFERRED_PLUGINS

    options = Options()
    t_dec, (img, ds) = best(lambda: load_image(path), repeat)
    tsyntax = ds.file_meta.TransferSyntaxUID

    def raw_decode():
        if not tsyntax.is_encapsulated:
            return pixel_array(path)
        frames = iter_pixels(path, decoding_plugin=_PREFERRED_PLUGINS.get(str(tsyntax), ""))
        try:
            return next(frames)
        finally:
            frames.close()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t_raw, _ = best(raw_decode, repeat)
    modality = voi.modality_from_dataset(ds)
    chosen = voi.select_voi(ds)
    inv = voi.inverted(ds)
    t_win, out = best(lambda: voi.render(img, modality, chosen, invert=inv), repeat)
    t_enc, png = best(lambda: encode_png(out, text={"csaws:settings": "0" * 16}), repeat)
    floor = t_raw + t_win + t_enc
    target = tmp / (path.stem + ".png")
    t_whole, row = best(lambda: convert_file(path, target, options, overwrite=True), repeat)
    assert row["status"] == "ok", row["error"]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full = pydicom.dcmread(path)
    t_pyd, _ = best(lambda: apply_voi_lut(apply_modality_lut(img, full), full, prefer_lut=False), repeat)

    def pillow() -> bytes:
        buf = io.BytesIO()
        Image.fromarray(out).save(buf, format="PNG")
        return buf.getvalue()

    t_pil, pil_png = best(pillow, max(1, repeat - 1))

    tracemalloc.start()
    convert_file(path, target, options, overwrite=True)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss = rss_growth(path, target)
    return {
        "name": path.name,
        "size": f"{img.shape[0]}x{img.shape[1]}",
        "syntax": str(ds.file_meta.TransferSyntaxUID.name)[:22],
        "raw": t_raw, "decode": t_dec, "window": t_win, "encode": t_enc, "floor": floor, "whole": t_whole,
        "ratio": t_whole / floor, "pydicom_voi": t_pyd, "voi_speedup": t_pyd / t_win,
        "pillow": t_pil, "png_speedup": t_pil / t_enc, "png_kb": len(png) / 1024, "pillow_kb": len(pil_png) / 1024,
        "peak_x": peak / img.nbytes, "rss_x": rss / img.nbytes,
    }


def throughput(path: Path, tmp: Path, n: int) -> dict[int, float]:
    src = tmp / "batch_in"
    src.mkdir(exist_ok=True)
    for i in range(n):
        link = src / f"img{i:03d}.dcm"
        if not link.exists():
            os.symlink(path, link)
    rates = {}
    for workers in (1, 2):
        out = tmp / f"batch_out_{workers}"
        t = time.perf_counter()
        result = convert([src], out, workers=workers, progress=False, overwrite=True)
        elapsed = time.perf_counter() - t
        assert result.count("ok") == n, result.rows
        rates[workers] = n / elapsed
    return rates


def _cpu_work(_: int) -> float:
    data = bytes(range(256)) * (1 << 14)
    t = time.perf_counter()
    for _ in range(20):
        zlib.compress(data, 6)
    return time.perf_counter() - t


def machine_scaling() -> float:
    """How much faster two processes do fixed pure-CPU work than one: the ceiling for our scaling here."""
    import concurrent.futures as cf

    t = time.perf_counter()
    for i in range(4):
        _cpu_work(i)
    serial = time.perf_counter() - t
    with cf.ProcessPoolExecutor(2) as pool:
        list(pool.map(_cpu_work, range(2)))
        t = time.perf_counter()
        list(pool.map(_cpu_work, range(4)))
        parallel = time.perf_counter() - t
    return serial / parallel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="timings are the best of this many runs")
    parser.add_argument("--batch", type=int, default=8, help="full-size images in the throughput batch")
    parser.add_argument("--quick", action="store_true", help="real files only: no synthetic image, no throughput")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        files = sorted(BENCH.glob("*.dcm")) if BENCH.is_dir() else []
        if REAL_J2K.is_file():
            files.append(REAL_J2K)
        if not files:
            print(f"(no real files at {BENCH}; synthetic image only)")
        synthetic = None
        if not args.quick or not files:
            synthetic = synthetic_mammogram(tmp / "synthetic_MG_4096x3328.dcm")
            files += [synthetic, *compressed_copies(synthetic)]
        results = [measure(p, tmp, args.repeat) for p in files]
        ms = lambda v: f"{v * 1000:7.1f}"
        print("times in ms, best of", args.repeat, "runs, one process")
        header = (f"{'image':<30} {'size':>10} {'raw dec':>7} {'decode':>7} {'window':>7} {'encode':>7} {'floor':>7} {'whole':>7} "
                  f"{'whole/floor':>11} {'pyd VOI':>7} {'x':>5} {'Pillow':>7} {'x':>5} {'KB ours':>8} "
                  f"{'KB Pil':>8} {'peak/img':>8} {'RSS/img':>7}")
        print(header)
        print("-" * len(header))
        for r in results:
            print(f"{r['name']:<30} {r['size']:>10} {ms(r['raw'])} {ms(r['decode'])} {ms(r['window'])} {ms(r['encode'])} "
                  f"{ms(r['floor'])} {ms(r['whole'])} {r['ratio']:>11.2f} {ms(r['pydicom_voi'])} "
                  f"{r['voi_speedup']:>5.1f} {ms(r['pillow'])} {r['png_speedup']:>5.1f} {r['png_kb']:>8.0f} "
                  f"{r['pillow_kb']:>8.0f} {r['peak_x']:>8.2f} {r['rss_x']:>7.2f}")
        if synthetic is None:
            return
        rates = throughput(synthetic, tmp, args.batch)
        control = machine_scaling()
        print(f"\nthroughput, {args.batch} full-size images: 1 worker {rates[1]:.2f} img/s, "
              f"2 workers {rates[2]:.2f} img/s, scaling {rates[2] / rates[1]:.2f}x (cores: {os.cpu_count()}); "
              f"the same machine runs pure-CPU zlib work {control:.2f}x faster with 2 processes than 1")
        print("goals: whole/floor <= 1.3, peak/img < 4 (peak traced by tracemalloc / decoded image bytes); "
              "RSS/img: growth of a fresh process's peak resident memory during one conversion / decoded image bytes")


if __name__ == "__main__":
    main()
