"""Merging masks against its floor: decoding the 11 mask PNGs + encoding the label map.

Makes one full-size (4096 x 3328) image with 11 masks (the sample dataset
generator at full size, or self-made shapes with --self-made), then times,
side by side and alternating:

* floor: decode the 11 mask PNGs with Pillow into numpy, encode the output
  with ``csaws_tools.png.encode_png`` (the fastest known way);
* merge: ``csaws_tools.merge.merge_worker`` on that image (read, check
  sizes, paint by priority, count pixels, write atomically).

Prints the best and median times, the ratio of the best (goal: <= 1.3) and the peak memory of
the merge as traced by tracemalloc (numpy buffers), in copies of one
uint8 image.

    python benchmarks/bench_merge.py [--repeat 7] [--self-made]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
from PIL import Image

from csaws_tools.classes import MASK_CLASSES
from csaws_tools.merge import discover, merge_worker, plan_tasks
from csaws_tools.png import encode_png

SIZE = (4096, 3328)


def self_made(root: Path) -> None:
    """Eleven overlapping ellipse/band masks of one full-size image, saved by Pillow (zlib 6)."""
    folder = root / "CsawS" / "anonymized_dataset" / "000"
    folder.mkdir(parents=True)
    rr, cc = np.ogrid[: SIZE[0], : SIZE[1]]
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, SIZE, dtype=np.uint8)).save(folder / "000_1.png")
    for cls in MASK_CLASSES:
        cy, cx = rng.integers(500, 3500), rng.integers(500, 2800)
        ry, rx = rng.integers(50, 2000), rng.integers(50, 1600)
        m = ((rr - cy) / ry) ** 2 + ((cc - cx) / rx) ** 2 <= 1
        Image.fromarray(m.astype(np.uint8) * 255).save(folder / f"000_1_{cls}.png")


def make_data(root: Path, use_self_made: bool) -> str:
    if not use_self_made:
        try:
            from csaws_tools.sample import write_sample

            # drawn in this process (workers=1): after a process pool and pyarrow's import, glibc's malloc
            # hands this process fresh pages for every large array, which made the merge measured
            # next here 25-45 % slower (about 100,000 page faults per merge)
            write_sample(root, seed=0, full_size=True, n_train_patients=1, n_test_patients=0, workers=1)
            return "sample generator (full size)"
        except Exception as exc:  # noqa: BLE001 - fall back to self-made masks
            print(f"sample generator unavailable ({exc}); using self-made masks", file=sys.stderr)
    self_made(root)
    return "self-made ellipses"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--self-made", action="store_true", help="do not use the sample generator")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        source = make_data(tmp / "data", args.self_made)
        items, _, _ = discover(tmp / "data")
        tasks, _ = plan_tasks(items, tmp / "out")
        task = tasks[0]
        masks = [task.args.masks[c] for c in MASK_CLASSES if c in task.args.masks]
        shape = np.asarray(Image.open(masks[0])).shape
        print(f"masks: {len(masks)} of {shape[0]}x{shape[1]} ({source})")
        worker = functools.partial(merge_worker, numbering="standard", scheme="all", strict=False,
                                   overwrite=True, shash="bench")

        reference_map = None

        def floor() -> None:
            for p in masks:
                with Image.open(p) as im:
                    np.asarray(im)
            encode_png(reference_map)  # the same label map the merge writes

        def merge() -> None:
            row = worker(task)
            assert row.get("status", "ok") == "ok", row

        merge()  # warm up caches; its output is the map the floor encodes
        from csaws_tools.png import read_png

        reference_map = read_png(task.output)
        floor()
        t_floor, t_merge = [], []
        for _ in range(args.repeat):
            for fn, times in ((floor, t_floor), (merge, t_merge)):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
        # The minimum is the least disturbed run of each (other processes only ever add time).
        f, m = min(t_floor), min(t_merge)
        tracemalloc.start()
        merge()
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        one = shape[0] * shape[1]
        print(f"floor (decode {len(masks)} PNGs + encode_png): {f * 1000:8.1f} ms  (best of {args.repeat}; "
              f"median {statistics.median(t_floor) * 1000:.1f})")
        print(f"merge_worker (one image):              {m * 1000:8.1f} ms  (best of {args.repeat}; "
              f"median {statistics.median(t_merge) * 1000:.1f})")
        print(f"ratio merge / floor: {m / f:.2f}  (goal <= 1.3)")
        print(f"peak traced memory of one merge: {peak / 2**20:.1f} MiB = {peak / one:.1f} x one uint8 image "
              f"({one / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
