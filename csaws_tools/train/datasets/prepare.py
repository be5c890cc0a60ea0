"""Splits and resized full images for the public-dataset studies (paper section 5, protocol section 6).

:func:`prepare_dataset` writes into OUT::

    splits.json    train / val / test image keys (the paper's split, seeded), the training
                   order of each repetition and the N-image subsets (the first N of that order)
    train.h5       every training image resized to S x S (with gtCoarse maps when coarse=True)
    val.h5, test.h5
    manifest.parquet   one row per image: status, error, groups, sizes

The split (paper section 5.1):

* ``cityscapes``: ``val_size`` (500) images of the official train set drawn
  at random are the validation set, the rest train; the official val set is the test set.
* ``voc``: the official train set is the training set; ``val_size`` (500) of
  the official val set (1,449 images) validate, the other 949 test.
* ``csaws``: the patient-level validation split of :mod:`csaws_tools.splits`
  (the protocol's 20 patients), test = ``test/consensus``.
* ``folders``: ``test_size`` then ``val_size`` images drawn at random, the rest train.

Training order of repetition r (``ordering``): ``random``, a seeded
permutation; ``by-city`` (domain shift, appendix D), the groups in a seeded
random order, each group's images shuffled and kept together, so that the
first N images come from as few cities as possible. Subset N of repetition r
is the first N images of that order, so subsets are nested as in the
authors' code.

Each output file is written under a temporary name and renamed when
complete; a rerun keeps outputs made with the same settings and inputs
(sizes and modification times of every file), so an interrupted run resumes
with the file it was writing.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ... import __version__
from ...atomic import atomic_path, write_text_atomic
from ...batch import BatchResult, Task, run_batch, settings_hash
from ...errors import InputError, SettingsError
from ...identity import file_identity
from .base import DatasetAdapter, Item, check_ids, seeded_take
from .schemes import parse_target
from .store import (
    FORMAT,
    RESAMPLES,
    ImageSetWriter,
    read_attrs,
    resize_image,
    resize_labels,
)

#: Paper section 5.3 and appendix D: Cityscapes training-set sizes.
CITYSCAPES_SIZES = (25, 50, 100, 200, 350, 500, 1000, 2475)
#: The paper does not list the VOC sizes (Figure 6); this schedule ends at the full 1,464 training images.
VOC_SIZES = (25, 50, 100, 200, 350, 500, 1000, 1464)
DEFAULT_SIZES = {"cityscapes": CITYSCAPES_SIZES, "voc": VOC_SIZES, "csaws": (25, 50, 100, 263)}
PAPER_VAL_SIZE = 500
ORDERINGS = ("random", "by-city")
FILES = {"train": "train.h5", "val": "val.h5", "test": "test.h5"}


def _derived(seed: int, *key: int) -> int:
    return int(np.random.SeedSequence([int(seed), *key]).generate_state(1)[0])


def _too_big(what: str, asked: int, available: int, param: str, suggestion: int) -> InputError:
    return InputError(f"{param}={asked} is more than the {available} {what}; pass {param}={suggestion} or less",
                      param=param)


def paper_split(adapter: DatasetAdapter, found: dict[str, list[Item]], *, val_size: int | None, seed: int,
                test_size: int | None = None) -> tuple[dict[str, list[Item]], dict]:
    """The paper's train/val/test split of the items found per official split; returns (split, rule)."""
    name = adapter.name
    if name == "cityscapes":
        official = found["train"]
        k = PAPER_VAL_SIZE if val_size is None else val_size
        if k >= len(official):
            raise _too_big("images of the official train set (some must stay for training)", k, len(official),
                           "val_size", max(1, len(official) // 5))
        val_keys = set(seeded_take([i.key for i in official], k, seed, 0))
        split = {"train": [i for i in official if i.key not in val_keys],
                 "val": [i for i in official if i.key in val_keys], "test": found["val"]}
        rule = {"rule": "val: random images of the official train set; test: the official val set", "val_size": k}
    elif name == "voc":
        official = found["val"]
        k = PAPER_VAL_SIZE if val_size is None else val_size
        if k >= len(official):
            raise _too_big("images of the official val set (some must stay for testing)", k, len(official),
                           "val_size", max(1, len(official) // 3))
        val_keys = set(seeded_take([i.key for i in official], k, seed, 0))
        split = {"train": found["train"], "val": [i for i in official if i.key in val_keys],
                 "test": [i for i in official if i.key not in val_keys]}
        rule = {"rule": "train: the official train set; val: random images of the official val set; "
                        "test: the rest of the official val set", "val_size": k}
    elif name == "csaws":
        from ...splits import make_splits

        items = {i.key: i for i in found["trainval"]}
        if not items:
            raise InputError(f"{adapter.root}: no usable train/validation images")
        if val_size is not None:
            raise SettingsError("csaws validates on whole patients (the protocol's 20); val_size= does not apply",
                                param="val_size")
        s = make_splits(sorted(items), sizes=(), repetitions=1, seed=seed)
        split = {"train": [items[k] for k in s["train"]["images"]], "val": [items[k] for k in s["val"]["images"]],
                 "test": found["test"]}
        rule = {"rule": f"patient-level validation ({s['validation']['rule']})", "val_size": len(split["val"])}
    else:
        pool = found["all"]
        n = len(pool)
        t = round(0.2 * n) if test_size is None else test_size
        v = round(0.2 * n) if val_size is None else val_size
        if t + v >= n:
            which, asked = ("val_size", v) if val_size is not None or test_size is None else ("test_size", t)
            raise _too_big("images left after the other held-out split (some must stay for training)", asked,
                           n - (t if which == "val_size" else v), which, max(0, (n - 1) // 5))
        keys = [i.key for i in pool]
        test_keys = set(seeded_take(keys, t, seed, 2))
        rest = [k for k in keys if k not in test_keys]
        val_keys = set(seeded_take(rest, v, seed, 0))
        split = {"train": [i for i in pool if i.key not in test_keys | val_keys],
                 "val": [i for i in pool if i.key in val_keys], "test": [i for i in pool if i.key in test_keys]}
        rule = {"rule": "seeded random test and validation images", "val_size": v, "test_size": t}
    rule["seed"] = int(seed)
    return split, rule


def training_order(items: Sequence[Item], seed: int, repetition: int, ordering: str = "random") -> list[Item]:
    """The training order of one repetition (module docstring): random, or grouped by city in random order."""
    if ordering == "random":
        perm = np.random.default_rng(_derived(seed, 1, repetition)).permutation(len(items))
        return [items[i] for i in perm]
    if ordering != "by-city":
        raise SettingsError(f"unknown ordering {ordering!r}; expected {' or '.join(ORDERINGS)}")
    groups: dict[str, list[Item]] = {}
    for it in items:
        groups.setdefault(it.group, []).append(it)
    if len(groups) == 1 and "" in groups:
        raise SettingsError("ordering='by-city' needs groups (cities); this dataset has none", param="ordering")
    rng = np.random.default_rng(_derived(seed, 3, repetition))
    names = sorted(groups)
    out: list[Item] = []
    for gi in rng.permutation(len(names)):
        members = groups[names[gi]]
        out.extend(members[j] for j in rng.permutation(len(members)))
    return out


@dataclass
class PreparedDataset:
    """What :func:`prepare_dataset` wrote, and how it went."""

    out: Path
    splits: Path
    files: dict[str, Path]
    counts: dict[str, int]
    results: dict[str, BatchResult] = field(default_factory=dict)
    problems: list[dict] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return len(self.problems) + sum(r.failed for r in self.results.values())

    @property
    def exit_code(self) -> int:
        if any(r.interrupted for r in self.results.values()):
            return 130
        return 1 if self.failed else 0

    def summary(self) -> str:
        parts = [f"{k} {v}" for k, v in self.counts.items()]
        return f"{', '.join(parts)} images; {self.failed} failed" + \
            (f"; up to date: {', '.join(self.skipped)}" if self.skipped else "")


@dataclass(frozen=True)
class ImageArgs:
    """One image's own settings for a dataset's HDF5 file: its row, ids and label map(s)."""

    #: the image's row in the split's file (results come back in any order)
    row: int
    #: the image id in the file and the manifest
    key: str
    #: the image's group (city, patient) that splits keep together
    group: str
    #: the fine label map
    label: str
    #: the coarse label map (Cityscapes gtCoarse), if any
    coarse: str | None = None


def image_worker(task: Task[ImageArgs], *, size: int, resample: str, channels: int, n_classes: int, void: int | None,
                 coarse: bool) -> tuple[dict, dict]:
    """Batch worker: read, check and resize one image and its label map(s)."""
    from .base import read_image, read_label_map

    image = read_image(task.source, channels)
    label = read_label_map(task.args.label)
    if label.shape != image.shape[:2]:
        raise InputError(f"{task.args.label}: label map is {label.shape[0]}x{label.shape[1]} but the image "
                         f"is {image.shape[0]}x{image.shape[1]}")
    check_ids(label, n_classes, void, task.args.label)
    masks = {"masks": resize_labels(label, size)}
    if coarse:
        cpath = task.args.coarse
        if not cpath:
            raise InputError(f"{task.source}: no gtCoarse label map for this image")
        c = read_label_map(cpath)
        if c.shape != label.shape:
            raise InputError(f"{cpath}: coarse map is {c.shape[0]}x{c.shape[1]}, the fine one {label.shape[0]}x{label.shape[1]}")
        check_ids(c, n_classes, void, cpath)
        masks["coarse_masks"] = resize_labels(c, size)
    img = resize_image(image, size, resample)
    counts = np.bincount(masks["masks"].reshape(-1), minlength=256)
    row = {"image_id": task.args.key, "group": task.args.group, "height": int(label.shape[0]),
           "width": int(label.shape[1]), "pixels": counts.tolist()}
    return row, {"row": int(task.args.row), "image": img, "masks": masks, "orig": label.shape}


def prepare_dataset(adapter: DatasetAdapter, out: str | os.PathLike, *, target: str | None = None,
                    val_size: int | None = None, test_size: int | None = None,
                    sizes: Sequence[int] | None = None, repetitions: int = 5, seed: int = 0,
                    ordering: str = "random", size: int = 512, resample: str = "bilinear",
                    coarse: bool = False, workers: int | None = None, progress: bool = True,
                    overwrite: bool = False) -> PreparedDataset:
    """Write splits.json and train/val/test HDF5 files of ``adapter``'s dataset into ``out`` (module docstring).

    ``val_size`` / ``sizes`` default to the paper's values for the dataset
    (500; Cityscapes N = 25 ... 2475); a dataset too small for them is a
    one-line error that suggests a value. Returns a :class:`PreparedDataset`;
    its ``exit_code`` is 1 when any image failed (the others are written).
    """
    if ordering not in ORDERINGS:
        raise SettingsError(f"ordering={ordering!r}: expected {' or '.join(ORDERINGS)}", param="ordering")
    if resample not in RESAMPLES:
        raise SettingsError(f"resample={resample!r}: expected {' or '.join(RESAMPLES)}", param="resample")
    if size < 8:
        raise SettingsError(f"size={size!r} must be at least 8", param="size")
    if repetitions < 1 or seed < 0:
        raise SettingsError(f"repetitions={repetitions!r} must be at least 1 and seed={seed!r} not negative",
                            param=("repetitions", "seed"))
    if val_size is not None and val_size < 1:
        raise SettingsError(f"val_size={val_size!r} must be at least 1", param="val_size")
    if coarse and adapter.name != "cityscapes":
        raise SettingsError(f"coarse=True needs Cityscapes gtCoarse; {adapter.name} has no coarse labels", param="coarse")
    if coarse and not adapter.has_coarse():
        raise InputError(f"{adapter.root}: coarse=True needs the gtCoarse/ folder (gtCoarse.zip)", param="coarse")
    names = adapter.class_names
    target = target or adapter.target_default
    target_name, target_ids = parse_target(target, names)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    found: dict[str, list[Item]] = {}
    problems: list[dict] = []
    for sp in adapter.splits:
        items, probs = adapter.scan(sp)
        found[sp] = items
        problems += [{"source": p.source, "output": None, "status": "error", "error": p.error} for p in probs]
    split, rule = paper_split(adapter, found, val_size=val_size, seed=seed, test_size=test_size)
    train = split["train"]
    sizes = list(DEFAULT_SIZES.get(adapter.name, ()) if sizes is None else sizes)
    if not sizes:
        sizes = [len(train)]
    for n in sizes:
        if n < 1:
            raise SettingsError(f"sizes: a subset size must be positive, not {n}", param="sizes")
        if n > len(train):
            fit = [m for m in sizes if m <= len(train)] or [max(1, len(train) // 2)]
            if len(train) not in fit:
                fit.append(len(train))
            raise InputError(f"subset size {n} exceeds the {len(train)} training images; pass "
                             f"sizes={fit!r}", param="sizes")
    orders = {str(r): training_order(train, seed, r, ordering) for r in range(repetitions)}
    subsets = {str(n): {r: {"seed": _derived(seed, 1 if ordering == 'random' else 3, int(r)),
                            "patients": sorted({i.group for i in o[:n]}),
                            "images": [i.key for i in o[:n]], "n_images": n}
                        for r, o in orders.items()} for n in sizes}
    info = adapter.describe()
    from ...splits import FORMAT as SPLITS_FORMAT

    doc = {
        "format": SPLITS_FORMAT, "tool_version": __version__, "seed": int(seed),
        "dataset": adapter.name, "root": str(adapter.root.resolve()), "target": target, "target_name": target_name,
        "target_ids": target_ids, "classes": names, "background": adapter.background, "void": adapter.void,
        "channels": adapter.channels, "image_size": size, "resample": {"image": resample, "label": "nearest"},
        "validation": rule,
        **{sp: {"patients": sorted({i.group for i in split[sp]}), "images": [i.key for i in split[sp]]}
           for sp in ("train", "val", "test")},
        "ordering": ordering,
        "orders": {r: [i.key for i in o] for r, o in orders.items()},
        "subsets": subsets,
        "subset_rule": {"source": "sampled", "sizes": sizes, "repetitions": repetitions, "ordering": ordering,
                        "rule": "the first N images of each repetition's training order (nested subsets)"},
        "problems": problems,
    }
    splits_path = out / "splits.json"
    write_text_atomic(splits_path, json.dumps(doc, indent=1) + "\n")

    results: dict[str, BatchResult] = {}
    skipped: list[str] = []
    counts: dict[str, int] = {}
    files: dict[str, Path] = {}
    for sp in ("train", "val", "test"):
        path = out / FILES[sp]
        files[sp] = path
        items = split[sp]
        counts[sp] = len(items)
        with_coarse = coarse and sp == "train"
        coarse_paths = {i.key: adapter.coarse_label(i) for i in items} if with_coarse else {}
        ident = hashlib.sha256()
        for i in items:
            cpath = coarse_paths.get(i.key)
            ident.update(json.dumps([i.key, i.group, file_identity(i.image), file_identity(i.label),
                                     file_identity(cpath) if cpath is not None else None]).encode())
        settings = {"command": "prepare-dataset", "dataset": adapter.name, "split": sp, "size": size,
                    "resample": resample, "coarse": with_coarse, "channels": adapter.channels,
                    "classes": names, "void": adapter.void, "inputs_sha256": ident.hexdigest()[:16]}
        shash = settings_hash(settings)
        existing = None if overwrite else read_attrs(path)
        if existing is not None and existing.get("settings_hash") == shash and int(existing.get("n_failed", 1)) == 0:
            skipped.append(FILES[sp])
            continue
        results[sp] = _write_split(adapter, items, path, sp, settings, shash, target, size, resample, with_coarse,
                                   coarse_paths, workers, progress, info)
    failed = {sp: sorted(r["image_id"] for r in res.rows if r.get("status") == "error" and r.get("image_id"))
              for sp, res in results.items()}
    failed = {sp: keys for sp, keys in failed.items() if keys}
    if failed:  # listed in splits.json, missing from the HDF5 file: readers must know
        doc["failed"] = failed
        write_text_atomic(splits_path, json.dumps(doc, indent=1) + "\n")
    return PreparedDataset(out=out, splits=splits_path, files=files, counts=counts, results=results,
                           problems=problems, skipped=skipped)


def _write_split(adapter: DatasetAdapter, items: list[Item], path: Path, sp: str, settings: dict, shash: str,
                 target: str, size: int, resample: str, coarse: bool, coarse_paths: dict, workers: int | None,
                 progress: bool, info: dict) -> BatchResult:
    n_classes = len(adapter.class_names)
    tasks = [Task(key=f"{sp}/{it.key}", source=str(it.image), output=None,
                  args=ImageArgs(row=k, key=it.key, group=it.group, label=str(it.label),
                                 coarse=str(coarse_paths[it.key]) if coarse_paths.get(it.key) else None))
             for k, it in enumerate(items)]
    pixels = np.zeros(256, dtype=np.int64)
    images_with = np.zeros(256, dtype=np.int64)
    with atomic_path(path) as tmp:
        writer = ImageSetWriter(tmp, len(items), size, adapter.channels, coarse)
        try:
            def on_result(row: dict, payload: dict) -> None:
                row["output"] = str(path)
                writer.put(payload["row"], row["image_id"], row["group"], payload["image"], payload["masks"],
                           payload["orig"])
                c = np.asarray(row.pop("pixels"), dtype=np.int64)
                pixels[:] += c
                images_with[:] += c > 0

            worker = functools.partial(image_worker, size=size, resample=resample, channels=adapter.channels,
                                       n_classes=n_classes, void=adapter.void, coarse=coarse)
            result = run_batch(tasks, worker, manifest=path.with_name(f"{path.stem}.manifest.parquet"),
                               settings=settings, workers=workers, progress=progress,
                               label=f"resizing {sp} images", on_result=on_result)
            key_of = {str(it.image): it.key for it in items}
            for row in result.rows:
                row.pop("pixels", None)
                if row.get("status") == "error":
                    row.setdefault("image_id", key_of.get(str(row.get("source"))))
            if result.interrupted:
                raise KeyboardInterrupt
            total = int(pixels.sum())
            names = adapter.class_names
            keyed = list(enumerate(names)) + ([(adapter.void, "void")] if adapter.void is not None else [])
            attrs = {
                "format": FORMAT, "kind": "images", "layout": "crops", "patch_size": size, "channels": adapter.channels,
                "dataset": adapter.name, "split": sp, "classes": json.dumps(names),
                "labels": json.dumps({"numbering": adapter.name, "classes": [
                    {"name": nm, "id": i, "colour": list(col)} for i, (nm, col) in
                    enumerate(zip(names, adapter.colours()))], "void": adapter.void,
                    "background": adapter.background}),
                "background": adapter.background, "void": -1 if adapter.void is None else adapter.void,
                "target": target, "resample_image": resample, "resample_label": "nearest",
                "has_coarse": bool(coarse), "info": json.dumps(info),
                "pixel_share": json.dumps({nm: (float(pixels[i]) / total if total else 0.0) for i, nm in keyed}),
                "class_images": json.dumps({nm: int(images_with[i]) for i, nm in keyed}),
                "tool_version": __version__, "settings_hash": shash, "settings": json.dumps(settings, sort_keys=True),
                "n_failed": result.failed,
            }
            writer.close(attrs)
        except BaseException:
            writer.abort()
            raise
    return result
