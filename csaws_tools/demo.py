"""Every stage on a small synthetic dataset: ``csaws-prepare demo OUT``.

The demo writes a sample dataset in the CSAW-S release layout, converts its
DICOM files, merges its masks, prints the class table, writes overlay
previews, splits the patients, writes HDF5 crops and test tiles, and, when
PyTorch is installed, ends with a small with/without complementary-label
comparison (``results.parquet`` and the Figure-1 plot) sized for a CPU
(:data:`DEMO_TRAINING`): small patches, a few hundred iterations, the paper
protocol otherwise (SUL's augmentation with its sub-pixel elastic shift,
cancer-only validation loss, SUL's checkpoint rule) and no ImageNet weights
(nothing is downloaded). Its numbers are a small synthetic run, not the
study's results; whichever setting wins is reported as it comes.
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
from .defaults import DEMO_ITERATIONS
from .errors import CsawsError, OutputError

#: The file that marks a folder as a previous demo (a rerun may write into it).
DEMO_MARKER = ".csaws-demo.json"

#: The CPU-sized training of the demo: the same for both settings; printed and written to the results.
DEMO_TRAINING = {
    "patch_size": 64,        # crops and tiles (the study: 512)
    "crop": 48,              # random crop inside each patch (the study: 448)
    "per_class": 4,          # class-centred crops per class present in an image (the study: 10)
    "iterations": DEMO_ITERATIONS,  # per run (the study: 100 epochs, thousands of iterations)
    "batch_size": 24,        # (the study: 12) a CPU step costs little more with 24 small crops than with 6
    "lr": 1e-4,              # Adam, as the study
    "val_every": 20,         # (the study: 100)
    "val_max_tiles": None,   # all validation tiles, as the study (a subsample made the selection chance)
    "output_stride": 16,     # (the study: 8)
    "pretrained": "none",    # nothing downloaded (the study: ImageNet)
    "repetitions": 1,        # (the study: 5)
    "jobs": 2,               # the two settings trained at once, each with half the threads (at most 4 in all)
}

#: The demo's sample: patients with train/val and with test images (the sample's default: 6 and 2).
DEMO_SAMPLE = {"train_patients": 16, "test_patients": 4}


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
    train_iterations: int | None = None,
    log: Callable[[str], None] = print,
    training: dict | None = None,
    sample_size: tuple[int, int] | None = None,
) -> dict[str, Path]:
    """Run every stage into ``out``; return the main outputs by name.

    ``train=None`` trains when torch is installed; ``False`` skips it.
    ``training`` overrides items of :data:`DEMO_TRAINING` (``train_iterations``
    the iterations). ``sample_size``: (rows, columns) of the sample images
    (default the sample's). ``out`` must be empty, new or a previous demo.
    """
    from .dicom2png import convert
    from .merge import merge_masks
    from .patches import write_patches
    from .preview import preview
    from .sample import write_sample
    from .splits import make_splits, save_splits
    from .stats import class_table, format_table, write_table

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / DEMO_MARKER).is_file():
        raise OutputError(f"{out}: folder is not empty and does not hold a previous demo; choose an empty or new folder")
    out.mkdir(parents=True, exist_ok=True)
    from .atomic import write_text_atomic

    write_text_atomic(out / DEMO_MARKER, '{"written_by": "csaws-prepare demo"}\n')
    paths: dict[str, Path] = {}
    from .execution.options import RunOptions

    run = RunOptions(workers=workers, progress=False)

    def step(title: str) -> float:
        log(f"\n== {title}")
        return time.perf_counter()

    def done(start: float, *lines: str) -> None:
        for line in lines:
            log(f"   {line}")
        log(f"   ({time.perf_counter() - start:.1f} s)")

    t = step("1/6 sample: a synthetic dataset in the CSAW-S release layout")
    info = write_sample(out / "sample", seed=seed, size=sample_size, n_train_patients=DEMO_SAMPLE["train_patients"],
                        n_test_patients=DEMO_SAMPLE["test_patients"], workers=workers or 1)
    paths["sample"] = out / "sample"
    done(t, f"{len(info.train_ids)} train/val and {len(info.test_ids)} test images -> {paths['sample']}",
         f"DICOM sources: {info.dicom_dir}, masks: {info.csaws_dir}")

    t = step("2/6 dicom2png: modality LUT, VOI window, MONOCHROME1 inversion -> 8-bit PNG")
    png = out / "png"
    r1 = convert(out / "sample" / "dicom", png / "trainval", run=run)
    r2 = convert(out / "sample" / "dicom_test", png / "test", run=run)
    _check(r1, "dicom2png")
    _check(r2, "dicom2png")
    paths["png"] = png
    done(t, f"trainval: {r1.summary()} -> {png / 'trainval'}", f"test: {r2.summary()} -> {png / 'test'}")

    t = step("3/6 merge-masks: 11 binary masks -> one label map per image; expert consensus")
    maps = out / "maps"
    r = merge_masks(info.csaws_dir, maps, run=run)
    _check(r, "merge-masks")
    paths["maps"] = maps
    done(t, f"{r.summary('merged')} -> {maps} (labels: {maps / 'labels.json'})")

    t = step("4/6 stats and preview: the class table and overlays")
    table = class_table(maps / "trainval")
    csv, _ = write_table(table, out / "class_table")
    log(format_table(table))
    r = preview(png, maps / "trainval", out / "preview", run=run)
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
                          seed=seed, splits=splits, split="train", run=run)
    tiles = write_patches(png / "test", maps / "test" / "consensus", out / "patches" / "test_tiles.h5",
                          size=256, tiles=True, tile_drop="black", run=run)
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

    t = step("6/6 train: a small with/without complementary-label comparison on the CPU")
    import torch

    from .train import ExperimentConfig, TrainConfig, prepare_inputs, run_grid, summarise, summary_markdown
    from .train.augment import AugmentConfig
    from .train.experiment import grid_from_splits

    conf = dict(DEMO_TRAINING, **(training or {}))
    if train_iterations is not None:
        conf["iterations"] = int(train_iterations)
    threads = max(1, min(4, os.cpu_count() or 1))
    torch.set_num_threads(threads)
    jobs = conf["jobs"] = max(1, min(int(conf["jobs"]), threads))  # one process per core at most
    with _warnings_as_notes(log):
        prep = prepare_inputs(png, maps, out / "train_inputs", patch_size=conf["patch_size"],
                              per_class=conf["per_class"], repetitions=conf["repetitions"], seed=seed,
                              release_file=info.csaws_dir / "training_random_splits.json", workers=workers,
                              progress=False)
    sizes, reps = grid_from_splits(prep.splits, None, conf["repetitions"])
    sizes = sizes[-1:]  # the largest training subset: one grid column keeps the run CPU-sized
    tcfg = TrainConfig(prep.train_file, prep.val_file, iterations=conf["iterations"], batch_size=conf["batch_size"],
                       lr=conf["lr"], val_every=conf["val_every"], val_max_crops=conf["val_max_tiles"],
                       eval_batch_size=16, output_stride=conf["output_stride"], device="cpu",
                       pretrained=conf["pretrained"], augment=AugmentConfig(crop=conf["crop"]), threads=threads)
    import json as _json

    source = _json.loads(Path(prep.splits).read_text())["subset_rule"]["source"]
    log("   configuration (a small synthetic run, CPU-sized; the study trains far longer on 512-px patches):")
    log("   " + ", ".join(f"{k} {'all' if v is None else v}" for k, v in conf.items()) + f", N {sizes[0]} ({source} subsets), "
        "elastic as the authors' code (alpha 256, sigma 512, p 0.5), SUL checkpoint rule, cancer-only val loss")
    log("   no ImageNet weights: trained from scratch (the study starts from ImageNet)")
    cfg = ExperimentConfig(train=tcfg, test_tiles=prep.test_tiles, test_maps=prep.test_maps, splits=prep.splits,
                           sizes=sizes, repetitions=reps, jobs=jobs)
    t_train = time.perf_counter()
    results = run_grid(cfg, out / "experiment", log=lambda m: log("   " + m) if m.startswith("run ") else None,
                       title="CSAW-S sample: small synthetic CPU run")
    results["demo_configuration"] = _json.dumps(conf, sort_keys=True)
    results["demo_note"] = "small synthetic CPU run; not the study's result"
    from .atomic import atomic_path

    with atomic_path(out / "experiment" / "results.parquet") as tmp:
        results.to_parquet(tmp, index=False)
    paths["results"] = out / "experiment" / "results.parquet"
    paths["figure"] = out / "experiment" / "figure1.png"
    table = summarise(results)
    log(summary_markdown(table))
    cons = table[table["evaluated_against"] == "consensus"]
    verdict = ""
    if len(cons):
        w, wo = float(cons["with_mean"].iloc[-1]), float(cons["without_mean"].iloc[-1])
        winner = "with" if w > wo else "without" if wo > w else "neither"
        verdict = (f"against the consensus: with {w:.3f}, without {wo:.3f} mean cancer IoU -> "
                   f"{winner} complementary labels ahead in this small synthetic run")
        if max(w, wo) <= 0.1:
            verdict += "; at this CPU size neither setting learned cancer (IoU <= 0.1 for both)"
        elif min(w, wo) <= 0.1:
            verdict += "; at this CPU size one setting did not learn cancer (IoU <= 0.1)"
    done(t, f"results -> {paths['results']}", f"plot -> {paths['figure']}", verdict,
         f"training and testing took {time.perf_counter() - t_train:.0f} s on the CPU")
    return paths
