"""Fuzzing merge-masks with damaged masks and GeoJSON files (issue: hostile inputs, masks half).

Sample-like PNG masks (grey, 1-bit, palette, RGBA), a TIFF mask and a QuPath
GeoJSON export are damaged (truncated, bits flipped, header fields such as
the PNG/TIFF width and height rewritten, GeoJSON text cut or its numbers
replaced) and merged. Whatever the damage: no traceback escapes, the process
does not abort, every image is exactly one manifest row with a one-line
error when it fails, and memory stays bounded. Seeded (derandomised), so
every run tries the same cases.
"""

from __future__ import annotations

import json
import resource
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from csaws_tools.merge import merge_masks

SHAPE = (48, 40)


def _base_files() -> dict[str, bytes]:
    """name -> bytes of one small image, its class masks in several encodings, and a GeoJSON export."""
    import io

    import tifffile

    rng = np.random.default_rng(0)
    out: dict[str, bytes] = {}

    def png(arr: np.ndarray, mode: str | None = None, **kw) -> bytes:
        buf = io.BytesIO()
        im = Image.fromarray(arr)
        if mode == "1":
            im = im.convert("1")
        elif mode == "P":
            im = im.convert("P")
        im.save(buf, format="PNG", **kw)
        return buf.getvalue()

    image = rng.integers(0, 255, SHAPE, dtype=np.uint8)
    blob = np.zeros(SHAPE, np.uint8)
    blob[10:30, 8:24] = 255
    out["a.png"] = png(image)
    out["a_cancer.png"] = png(blob)
    out["a_skin.png"] = png(np.roll(blob, 5, axis=1), "1")
    out["a_nipple.png"] = png(np.roll(blob, 7, axis=0), "P")
    rgba = np.zeros(SHAPE + (4,), np.uint8)
    rgba[20:40, 10:30] = (255, 0, 0, 255)
    out["a_pectoral_muscle.png"] = png(rgba)
    buf = io.BytesIO()
    tifffile.imwrite(buf, (np.roll(blob, 3, axis=0) > 0).astype(np.uint8) * 255, compression="zlib")
    out["a_mammary_gland.tif"] = buf.getvalue()
    out["g.png"] = png(image)
    square = [[[4, 4], [30, 4], [30, 40], [4, 40], [4, 4]]]
    hole = [[[5, 5], [35, 5], [35, 20], [5, 20], [5, 5]], [[10, 10], [20, 10], [20, 15], [10, 15], [10, 10]]]
    out["g.geojson"] = json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": square},
         "properties": {"classification": {"name": "Cancer"}}},
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": hole},
         "properties": {"classification": {"name": "Mammary gland"}}},
    ]}).encode()
    return out


BASE = _base_files()
TARGETS = sorted(n for n in BASE if n not in ("a.png",))


@st.composite
def damage(draw):
    """(file name, damaged bytes) for one file of the base set."""
    name = draw(st.sampled_from(TARGETS))
    data = bytearray(BASE[name])
    kind = draw(st.sampled_from(["truncate", "flip", "header", "geojson"] if name.endswith(".geojson")
                                else ["truncate", "flip", "header"]))
    if kind == "truncate":
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif kind == "flip":
        for _ in range(draw(st.integers(1, 8))):
            pos = draw(st.integers(0, len(data) - 1))
            data[pos] ^= 1 << draw(st.integers(0, 7))
    elif kind == "header":
        value = draw(st.sampled_from([0, 1, 2**15, 40000, 60000, 2**31 - 1, 2**32 - 1]))
        if name.endswith(".png"):  # IHDR width or height
            off = 16 + 4 * draw(st.integers(0, 1))
            data[off: off + 4] = struct.pack(">I", value)
        elif name.endswith(".tif"):  # a LONG/SHORT value field somewhere in the first IFD
            pos = draw(st.integers(4, max(4, min(len(data), 400) - 4)))
            data[pos: pos + 4] = struct.pack("<I", value)
        else:
            text = data.decode()
            data = bytearray(text.replace("30", str(value) if value else "Infinity", 1).encode())
    else:
        text = data.decode()
        cut = draw(st.sampled_from(['"coordinates"', "[[", "Cancer", "]", "{", "4,"]))
        repl = draw(st.sampled_from(["", "NaN", "-Infinity", "1e308", '"x"', "[]", "null", "{}"]))
        data = bytearray(text.replace(cut, repl, draw(st.integers(1, 3))).encode())
    return name, bytes(data)


@pytest.fixture
def small_limit(monkeypatch):
    monkeypatch.setenv("CSAWS_MAX_PIXELS", str(1 << 22))  # a header claiming more is refused unread


@settings(max_examples=200, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(case=damage())
def test_damaged_masks_and_geojson_give_one_row_per_image_and_no_traceback(tmp_path_factory, small_limit, case):
    name, data = case
    root = tmp_path_factory.mktemp("fuzz")
    src = root / "in"
    src.mkdir()
    for n, b in BASE.items():
        (src / n).write_bytes(data if n == name else b)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = merge_masks(src, root / "out", workers=1, progress=False)
    rss_growth_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    rows = result.rows
    assert sorted(r["image_id"] for r in rows) == ["a", "g"], rows  # every image exactly one row
    for r in rows:
        assert r["status"] in ("ok", "error")
        if r["status"] == "error":
            assert r["error"] and "\n" not in r["error"] and "Traceback" not in r["error"]
            if r["image_id"] == "g" and name == "g.geojson":
                assert "g.geojson" in r["error"]  # a damaged GeoJSON is blamed on the GeoJSON
        else:
            assert (root / "out" / f"{r['image_id']}.png").is_file()
    untouched = "g" if name.startswith("a") else "a"
    assert next(r for r in rows if r["image_id"] == untouched)["status"] == "ok"
    assert rss_growth_mb < 300, f"peak memory grew by {rss_growth_mb:.0f} MB"
    assert Path(result.manifest).is_file()
