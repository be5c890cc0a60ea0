"""Benchmark of ``csaws-prepare patches`` on one full-size mammogram (4096 x 3328, 120 crops).

Prints, side by side with a floor that does only the unavoidable work:

* floor: decode the image and label-map PNGs + write the same 120 crops'
  bytes (cut beforehand) with the same compression through plain h5py;
* ours: :func:`csaws_tools.patches.write_patches` on that image, whole
  (pairing, decoding, sampling, cutting, compression, writing, manifest);
* the ratio ours / floor (goal <= 1.5);
* the time to count classes and draw the 120 centres;
* peak memory of a run (fresh process) / (image + label map) (goal < 4);
* file sizes and times for gzip-1, gzip-4, lzf, zstd-3 and none;
* crops vs index layout sizes.

Run: ``python benchmarks/bench_patches.py [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

H, W, S = 4096, 3328, 512


def synthetic_pair(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A mammogram-like image and a label map with the release's class areas (protocol section 1)."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:H, 0:W].astype(np.float32)
    # Breast: a half ellipse against the left edge.
    r_ = (rows - H / 2) / (0.46 * H)
    c_ = cols / (0.78 * W)
    inside = r_**2 + c_**2 <= 1.0
    edge = (r_**2 + c_**2 > 0.985) & inside
    mask = np.zeros((H, W), np.uint8)
    mask[inside] = 11                                             # mammary gland (~28 % after the rest)
    mask[inside & (c_ > 0.62)] = 9                                # non-mammary tissue band
    mask[edge] = 6                                                # skin (~0.6 %)
    mask[(rows < 0.35 * H - 0.9 * cols) & (cols < 0.33 * W)] = 10  # pectoral muscle (~3 %)
    for k in range(6):                                            # thick vessels (~0.6 %)
        rr = (0.2 + 0.12 * k) * H + 40 * np.sin(cols[0] / 300 + k)
        for c in range(0, int(0.6 * W), 1):
            r0 = int(rr[c])
            mask[r0 : r0 + 6, c] = np.where(inside[r0 : r0 + 6, c], 4, mask[r0 : r0 + 6, c])
    cy, cx = int(0.55 * H), int(0.35 * W)
    mask[((rows - cy) ** 2 + (cols - cx) ** 2) < 120**2] = 1      # cancer (~0.3 %)
    ys, xs = rng.integers(int(0.3 * H), int(0.7 * H), 60), rng.integers(100, int(0.5 * W), 60)
    for y, x in zip(ys, xs):                                      # calcifications (tiny)
        mask[y : y + 2, x : x + 2] = 2
    mask[int(0.1 * H) : int(0.1 * H) + 120, int(0.4 * W) : int(0.4 * W) + 120] = 3  # lymph node
    mask[int(0.8 * H) : int(0.8 * H) + 80, 200:300] = 5                              # foreign object
    mask[int(0.5 * H) - 50 : int(0.5 * H) + 50, int(0.77 * W) : int(0.77 * W) + 30] = 7  # nipple
    mask[40:120, W - 400 : W - 100] = 8                                              # text
    # Image: smooth tissue with noise, dark background, bright text.
    image = np.zeros((H, W), np.float32)
    image[inside] = 90 + 60 * np.cos(rows[inside] / 300) * np.sin(cols[inside] / 250)
    image += rng.normal(0, 2, (H, W)).astype(np.float32) * inside
    image[mask == 8] = 250
    image[mask == 1] += 50
    return np.clip(image, 0, 255).astype(np.uint8), mask


def floor_write(path: Path, crops_img: np.ndarray, crops_msk: np.ndarray, kwargs: dict) -> None:
    import h5py

    with h5py.File(path, "w") as h5:
        for name, arr in (("images", crops_img), ("masks", crops_msk)):
            ds = h5.create_dataset(name, shape=arr.shape, dtype="u1", chunks=(1, S, S), **kwargs)
            ds[...] = arr


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


PEAK_SCRIPT = r"""
import sys, re
from csaws_tools.patches import write_patches
import h5py, numpy, PIL.Image, pandas, pyarrow.parquet  # imports before the baseline
def rss(key):
    for line in open('/proc/self/status'):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
base = rss('VmRSS')
write_patches(sys.argv[1], sys.argv[2], sys.argv[3], workers=1, progress=False, compression=sys.argv[4],
              layout=sys.argv[5])
print(rss('VmHWM') - base)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    from csaws_tools.patches import class_counts, cut, sample_crops, write_patches
    from csaws_tools.patches.h5format import filter_kwargs as _filter_kwargs
    from csaws_tools.png import read_png, write_png

    tmp = Path(tempfile.mkdtemp(prefix="bench-patches-"))
    image, mask = synthetic_pair()
    write_png(tmp / "img" / "000_1.png", image)
    write_png(tmp / "lm" / "000_1.png", mask)
    counts = class_counts(mask)
    print(f"image {H}x{W}, classes present: {int((counts > 0).sum())}; "
          f"class share %: " + ", ".join(f"{i}:{100 * c / mask.size:.3f}" for i, c in enumerate(counts)))

    t_centres = best(lambda: sample_crops(mask, image_id="000_1"), args.repeat)
    index = sample_crops(mask, image_id="000_1")
    n = index["top"].size
    crops_img = np.stack([cut(image, t, l, S) for t, l in zip(index["top"], index["left"])])
    crops_msk = np.stack([cut(mask, t, l, S) for t, l in zip(index["top"], index["left"])])
    t_decode = best(lambda: (read_png(tmp / "img" / "000_1.png"), read_png(tmp / "lm" / "000_1.png")), args.repeat)
    print(f"{n} crops; class counts + centre drawing: {1000 * t_centres:.1f} ms; "
          f"PNG decode (image + label map): {1000 * t_decode:.0f} ms")

    print(f"\n{'compression':<12}{'floor ms':>10}{'ours ms':>10}{'ratio':>8}{'crops MB':>10}{'index MB':>10}"
          f"{'index/crops':>12}")
    settings = [("gzip", 1), ("gzip", 4), ("lzf", None), ("zstd", 3), ("none", None)]
    for comp, level in settings:
        kwargs = _filter_kwargs(comp, level)
        fpath = tmp / f"floor-{comp}{level}.h5"
        t_write = best(lambda: floor_write(fpath, crops_img, crops_msk, kwargs), args.repeat)
        floor = t_decode + t_write
        out = tmp / f"ours-{comp}{level}.h5"
        ours = best(lambda: write_patches(tmp / "img", tmp / "lm", out, compression=comp, level=level,
                                          workers=1, progress=False, overwrite=True), args.repeat)
        iout = tmp / f"index-{comp}{level}.h5"
        write_patches(tmp / "img", tmp / "lm", iout, compression=comp, level=level, layout="index",
                      workers=1, progress=False, overwrite=True)
        cs, is_ = out.stat().st_size / 1e6, iout.stat().st_size / 1e6
        name = f"{comp}-{level}" if level is not None else comp
        print(f"{name:<12}{1000 * floor:>10.0f}{1000 * ours:>10.0f}{ours / floor:>8.2f}{cs:>10.1f}{is_:>10.1f}"
              f"{cs / is_:>11.1f}x")

    one = (image.nbytes + mask.nbytes)
    print()
    for comp, layout in (("gzip", "crops"), ("gzip", "index"), ("lzf", "crops")):
        peak = int(subprocess.check_output(
            [sys.executable, "-c", PEAK_SCRIPT, str(tmp / "img"), str(tmp / "lm"), str(tmp / f"peak-{layout}.h5"),
             comp, layout], env=dict(os.environ)).split()[-1])
        print(f"peak memory ({comp}, {layout} layout): {peak / 1e6:.0f} MB = {peak / one:.2f} x (image + label map "
              f"{one / 1e6:.0f} MB)")
    print(f"\nfiles in {tmp}")


if __name__ == "__main__":
    main()
