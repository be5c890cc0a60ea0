"""Every stage on a small synthetic dataset: ``csaws-prepare demo OUT``.

The demo writes a sample dataset in the CSAW-S release layout, converts its
DICOM files, merges its masks, prints the class table, writes overlay
previews, splits the patients, writes HDF5 crops and test tiles, and, when
PyTorch is installed, ends with a very short with/without
complementary-label comparison (``results.parquet`` and the Figure-1 plot).
It is small enough to finish in a few minutes on two cores; the numbers it
prints show the pipeline working, not the study's results.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

from .batch import BatchResult
from .errors import CsawsError


def _check(result: BatchResult, what: str) -> None:
    if result.exit_code:
        raise CsawsError(f"demo: {what} failed: {result.summary()} (see {result.manifest})")


@contextlib.contextmanager
def _warnings_as_notes(log: Callable[[str], None]) -> Iterator[None]:
    """Print warnings (e.g. a subset that whole patients cannot fill) as notes of the demo."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        log(f"   note: {w.message}")


def torch_available() -> bool:
    """Whether the ``[train]`` extra (torch) is importable."""
    return importlib.util.find_spec("torch") is not None


def run_demo(
    out: str | os.PathLike,
    *,
    seed: int = 0,
    workers: int | None = None,
    train: bool | None = None,
    train_iterations: int = 4,
    log: Callable[[str], None] = print,
) -> dict[str, Path]:
    """Run every stage into ``out``; return the main outputs by name.

    ``train=None`` trains when torch is installed; ``False`` skips it.
    """
    from .dicom2png import convert
    from .merge import merge_masks
    from .patches import write_patches
    from .preview import preview
    from .sample import write_sample
    from .splits import make_splits, save_splits
    from .stats import class_table, format_table, write_table

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    common = dict(workers=workers, progress=False)

    def step(title: str) -> float:
        log(f"\n== {title}")
        return time.perf_counter()

    def done(start: float, *lines: str) -> None:
        for line in lines:
            log(f"   {line}")
        log(f"   ({time.perf_counter() - start:.1f} s)")

    t = step("1/6 sample: a synthetic dataset in the CSAW-S release layout")
    info = write_sample(out / "sample", seed=seed)
    paths["sample"] = out / "sample"
    done(t, f"{len(info.train_ids)} train/val and {len(info.test_ids)} test images -> {paths['sample']}",
         f"DICOM sources: {info.dicom_dir}, masks: {info.csaws_dir}")

    t = step("2/6 dicom2png: modality LUT, VOI window, MONOCHROME1 inversion -> 8-bit PNG")
    png = out / "png"
    r1 = convert(out / "sample" / "dicom", png / "trainval", **common)
    r2 = convert(out / "sample" / "dicom_test", png / "test", **common)
    _check(r1, "dicom2png")
    _check(r2, "dicom2png")
    paths["png"] = png
    done(t, f"trainval: {r1.summary()} -> {png / 'trainval'}", f"test: {r2.summary()} -> {png / 'test'}")

    t = step("3/6 merge-masks: 11 binary masks -> one label map per image; expert consensus")
    maps = out / "maps"
    r = merge_masks(info.csaws_dir, maps, **common)
    _check(r, "merge-masks")
    paths["maps"] = maps
    done(t, f"{r.summary('merged')} -> {maps} (labels: {maps / 'labels.json'})")

    t = step("4/6 stats and preview: the class table and overlays")
    table = class_table(maps / "trainval")
    csv, _ = write_table(table, out / "class_table")
    log(format_table(table))
    r = preview(png, maps / "trainval", out / "preview", **common)
    _check(r, "preview")
    paths["class_table"] = csv
    paths["preview"] = out / "preview"
    sheets = sorted((out / "preview").glob("contact*.png"))
    done(t, f"table -> {csv}", f"overlays -> {out / 'preview'}" + (f", contact sheet {sheets[0]}" if sheets else ""))

    t = step("5/6 splits and patches: patient-level subsets, class-centred crops, test tiles")
    ids = sorted(p.stem for p in (maps / "trainval").glob("*.png"))
    test_ids = sorted(p.stem for p in (maps / "test" / "consensus").glob("*.png"))
    with _warnings_as_notes(log):
        splits = make_splits(ids, sizes=(2, 4), repetitions=2, seed=seed, test_ids=test_ids)
    splits_path = save_splits(splits, out / "splits.json")
    crops = write_patches(png / "trainval", maps / "trainval", out / "patches" / "train_rep0.h5", size=256,
                          seed=seed, splits=splits, split="train", **common)
    tiles = write_patches(png / "test", maps / "test" / "consensus", out / "patches" / "test_tiles.h5",
                          size=256, tiles=True, tile_drop="black", **common)
    for res, name in ((crops, "patches"), (tiles, "test tiles")):
        _check(res, name)
    paths["patches"] = out / "patches" / "train_rep0.h5"
    paths["tiles"] = out / "patches" / "test_tiles.h5"
    done(t, f"splits -> {splits_path}", f"crops: {crops.summary('written')} -> {paths['patches']}",
         f"tiles: {tiles.summary('written')} -> {paths['tiles']}")

    if train is None:
        train = torch_available()
    if not train:
        log("\n== 6/6 train: skipped (install the [train] extra for the with/without comparison)")
        return paths

    t = step("6/6 train: a very short with/without complementary-label comparison")
    import torch

    from .train import AugmentConfig, ExperimentConfig, TrainConfig, prepare_inputs, run_grid, summarise, summary_markdown

    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    with _warnings_as_notes(log):
        prep = prepare_inputs(png, maps, out / "train_inputs", patch_size=128, per_class=2, sizes=(2, 4),
                              repetitions=2, seed=seed, **common)
    tcfg = TrainConfig(prep.train_file, prep.val_file, iterations=train_iterations, batch_size=2, val_every=2,
                       val_max_crops=8, eval_batch_size=16, output_stride=16, device="cpu",
                       augment=AugmentConfig(crop=112))
    cfg = ExperimentConfig(train=tcfg, test_tiles=prep.test_tiles, test_maps=prep.test_maps, splits=prep.splits,
                           sizes=(2, 4), repetitions=2)
    results = run_grid(cfg, out / "experiment", log=lambda m: None)
    paths["results"] = out / "experiment" / "results.parquet"
    paths["figure"] = out / "experiment" / "figure1.png"
    log(summary_markdown(summarise(results)))
    done(t, f"results -> {paths['results']}", f"plot -> {paths['figure']}",
         f"{train_iterations} iterations per run on CPU: the numbers show the pipeline, not the study's result")
    return paths
