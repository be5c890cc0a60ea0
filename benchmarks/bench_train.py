"""Does the input pipeline keep up with the model? (issue: never starve the GPU)

Times training steps of the same model two ways, side by side:

* real: batches read from a patches file (background thread, pinned memory,
  non-blocking copies), augmented on the device (flips, rotations, crop,
  elastic, brightness/contrast), forward + backward + Adam step;
* floor: one synthetic batch already on the device, same step without input work.

Prints steps/s of both, their ratio (goal >= 0.9), images/s, and peak GPU
memory on CUDA. Example (GPU): python benchmarks/bench_train.py --device cuda
CPU (small): python benchmarks/bench_train.py --device cpu --patch 96 --crop 80 --batch 2 --steps 6
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from csaws_tools.train.augment import AugmentConfig, augment_batch
from csaws_tools.train.data import CropSource, Prefetcher
from csaws_tools.train.loop import autocast, resolve_device
from csaws_tools.train.model import build_model


def make_file(path: Path, n: int, size: int) -> None:
    """A crops-layout patches file with n random crops (written by the real writer)."""
    from csaws_tools.patches import write_patches
    from csaws_tools.png import write_png

    rng = np.random.default_rng(0)
    img_dir, map_dir = path.parent / "img", path.parent / "map"
    img_dir.mkdir(exist_ok=True)
    map_dir.mkdir(exist_ok=True)
    side = size * 2
    for i in range((n + 11) // 12 + 1):
        yy, xx = np.mgrid[0:side, 0:side]
        img = (128 + 60 * np.sin(xx / 17.0 + i) * np.cos(yy / 13.0) + rng.normal(0, 10, (side, side))).clip(0, 255)
        lab = ((yy // (side // 4)) * 3 + xx // (side // 3)).astype(np.uint8) % 12
        write_png(img_dir / f"{i:03d}_1.png", img.astype(np.uint8))
        write_png(map_dir / f"{i:03d}_1.png", lab)
    write_patches(img_dir, map_dir, path, size=size, per_class=1, workers=1, progress=False)


def step_fn(model, opt, device, amp, cl):
    def step(x, y):
        if cl:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp):
            loss = F.cross_entropy(model(x)["out"].float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--patch", type=int, default=512)
    ap.add_argument("--crop", type=int, default=448)
    ap.add_argument("--batch", type=int, default=12)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--classes", type=int, default=12)
    ap.add_argument("--output-stride", type=int, default=8)
    ap.add_argument("--crops", type=int, default=120, help="crops in the benchmark file")
    ap.add_argument("--cache-mb", type=float, default=0, help="0: read every batch from the file")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--file", default=None, help="use this patches file instead of a generated one")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if device.type == "cpu":
        torch.set_flush_denormal(True)  # as train_run does on CPU
    amp = cl = device.type == "cuda"
    torch.manual_seed(0)
    model = build_model(args.classes, output_stride=args.output_stride).to(device).train()
    if cl:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, weight_decay=1e-6)
    step = step_fn(model, opt, device, amp, cl)
    cfg = AugmentConfig(crop=args.crop)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.file) if args.file else Path(tmp) / "bench.h5"
        if not args.file:
            make_file(path, args.crops, args.patch)
        lut = np.arange(12, dtype=np.uint8) if args.classes == 12 else np.minimum(np.arange(12), 1).astype(np.uint8)
        from csaws_tools.train.data import read_index
        rows = np.arange(len(read_index(path)))
        src = CropSource(path, rows, lut, seed=0, batch_size=args.batch, cache_mb=args.cache_mb)

        # floor: synthetic batch already on the device
        x = torch.randn(args.batch, 1, args.crop, args.crop, device=device)
        y = torch.randint(0, args.classes, (args.batch, args.crop, args.crop), device=device)
        for _ in range(args.warmup):
            step(x, y)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        sync(device)
        t = time.perf_counter()
        for _ in range(args.steps):
            step(x, y)
        sync(device)
        floor = args.steps / (time.perf_counter() - t)

        # real: file -> thread -> pinned -> device -> augment -> step
        total = args.warmup + args.steps
        pre = Prefetcher(src, 0, total, depth=3, pin=device.type == "cuda")
        t = None
        g = torch.Generator(device=device).manual_seed(0)
        for it, img, msk in pre:
            if it == args.warmup:
                sync(device)
                t = time.perf_counter()
            xi = img.to(device, non_blocking=True)
            yi = msk.to(device, non_blocking=True)
            xi, yi = augment_batch(xi, yi, cfg, generator=g)
            step(xi, yi)
        sync(device)
        real = args.steps / (time.perf_counter() - t)
        pre.close()
        src.close()

        # input pipeline alone (read + augment, no model)
        src = CropSource(path, rows, lut, seed=1, batch_size=args.batch, cache_mb=args.cache_mb)
        sync(device)
        t = time.perf_counter()
        for i in range(args.steps):
            img, msk = src.batch(i)
            augment_batch(torch.from_numpy(img).to(device), torch.from_numpy(msk).to(device), cfg, generator=g)
        sync(device)
        pipe = args.steps / (time.perf_counter() - t)
        src.close()

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {name}; batch {args.batch}, crop {args.crop} from {args.patch}, {args.classes} classes, "
          f"output stride {args.output_stride}, bf16+channels-last: {amp}")
    print(f"synthetic batch on device: {floor:.3f} steps/s ({floor * args.batch:.1f} images/s)")
    print(f"real data + augmentation:  {real:.3f} steps/s ({real * args.batch:.1f} images/s)")
    print(f"ratio real / synthetic:    {real / floor:.3f} (goal >= 0.9)")
    print(f"input pipeline alone (read + augment, no model, one thread): {pipe:.2f} batches/s")
    if device.type == "cuda":
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
