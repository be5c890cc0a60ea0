import os

import numpy as np
import pytest
from PIL import Image

from csaws_tools import png
from csaws_tools.png import encode_png, png_size, read_png, read_text, write_png


@pytest.mark.parametrize(
    "image",
    [
        np.random.default_rng(0).integers(0, 256, (37, 53), dtype=np.uint8),
        np.random.default_rng(1).integers(0, 65536, (19, 31), dtype=np.uint16),
        np.random.default_rng(2).integers(0, 256, (11, 7, 3), dtype=np.uint8),
        np.random.default_rng(3).integers(0, 256, (5, 9, 4), dtype=np.uint8),
    ],
)
def test_round_trip_through_pillow(tmp_path, image):
    path = tmp_path / "x.png"
    write_png(path, image)
    assert np.array_equal(read_png(path), image)
    assert png_size(path) == image.shape[:2]


def test_large_image_spans_several_blocks(tmp_path):
    image = (np.arange(3000 * 2000, dtype=np.uint32) % 251).astype(np.uint8).reshape(3000, 2000)
    write_png(tmp_path / "big.png", image)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "big.png")), image)


def test_palette_gives_indices_back(tmp_path):
    labels = np.random.default_rng(0).integers(0, 12, (40, 30), dtype=np.uint8)
    pal = [(i * 20, 255 - i * 20, i) for i in range(12)]
    write_png(tmp_path / "p.png", labels, palette=pal)
    with Image.open(tmp_path / "p.png") as im:
        assert im.mode == "P"
        assert im.getpalette()[:6] == [0, 255, 0, 20, 235, 1]
    assert np.array_equal(read_png(tmp_path / "p.png"), labels)


def test_text_chunks_read_without_decoding(tmp_path):
    write_png(tmp_path / "t.png", np.zeros((4, 4), np.uint8), text={"csaws:settings": "abc123", "k": "v"})
    assert read_text(tmp_path / "t.png") == {"csaws:settings": "abc123", "k": "v"}
    with Image.open(tmp_path / "t.png") as im:
        assert im.text["csaws:settings"] == "abc123"
    (tmp_path / "junk.png").write_bytes(b"not a png")
    assert read_text(tmp_path / "junk.png") == {}
    assert read_text(tmp_path / "missing.png") == {}


def test_rejects_unsupported_arrays():
    with pytest.raises(ValueError, match="cannot encode"):
        encode_png(np.zeros((3, 3), np.float32))
    with pytest.raises(ValueError, match="palette"):
        encode_png(np.zeros((3, 3), np.uint16), palette=[(0, 0, 0)])


def test_no_temporary_left_after_write(tmp_path):
    write_png(tmp_path / "a.png", np.ones((3, 3), np.uint8))
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_write_png_memory_stays_within_a_block(tmp_path, dtype):
    """No byte-swapped copy of a 16-bit image and no compressed file held in memory: a few blocks at a time."""
    import tracemalloc

    rng = np.random.default_rng(5)
    image = rng.integers(0, np.iinfo(dtype).max, size=(4096, 3328), dtype=dtype)  # noise: compresses badly
    write_png(tmp_path / "warm.png", image[:8])
    tracemalloc.start()
    try:
        write_png(tmp_path / "big.png", image)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert np.array_equal(read_png(tmp_path / "big.png"), image)
    assert (tmp_path / "big.png").read_bytes() == encode_png(image)
    assert peak < 6 * png._BLOCK_BYTES, f"peak {peak / image.nbytes:.2f} x the image"


def test_stale_temporaries_are_removed_but_nothing_else(tmp_path):
    import subprocess
    import sys

    from csaws_tools.atomic import remove_stale_temporaries, temporary_path

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    mine = temporary_path(tmp_path / "sub" / "a.png")  # this process is alive: its temporary stays
    stale = mine.with_name(mine.name.replace(f".{os.getpid()}-", f".{dead.pid}-"))
    stale.parent.mkdir()
    stale.write_bytes(b"half a png")
    mine.write_bytes(b"being written")
    keep = [tmp_path / ".notes.tmp", tmp_path / "sub" / ".cache.tmp", tmp_path / "a.png", mine]
    for p in keep[:3]:
        p.write_bytes(b"a user's file")
    assert remove_stale_temporaries(tmp_path) == 1
    assert not stale.exists() and all(p.exists() for p in keep)
