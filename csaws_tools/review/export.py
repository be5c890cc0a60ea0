"""Export merged label maps and their images to the layouts nnU-Net v2 and MONAI read.

Inputs: ``MAPS``, the output of ``merge-masks`` (``trainval/<id>.png``,
``test/consensus/<id>.png``, ``test/annotator_<k>/<id>.png``, ``labels.json``),
and ``IMAGES``, any folder holding the images as ``<id>.png`` (searched
recursively: the release's ``CsawS/`` or a ``dicom2png`` output).

:func:`export_nnunet` writes an nnU-Net v2 raw dataset (nnU-Net's
``documentation/dataset_format.md``)::

    OUT/Dataset<XXX>_<Name>/
      imagesTr/<case>_0000.png     every train/val image, one grey channel
      labelsTr/<case>.png          its label map, ids 0..K-1 of the label scheme
      imagesTs/<case>_0000.png     test images
      labelsTs/<case>.png          test ground truth (the expert consensus by default)
      dataset.json                 channel_names, labels, numTraining, file_ending
      splits_final.json            folds from the patient-level splits (protocol sections 1, 5)
      csaws_export.json            what was exported from where, and what each fold is
      manifest.parquet             one row per case

Images are hard links to the inputs when they already are one-channel PNGs
(a copy where linking is impossible); colour, palette and grey+alpha images
are converted (first channel, as the rest of the toolkit reads them).
Labels are always rewritten as plain one-channel PNGs (no palette: nnU-Net
reads PNGs through scikit-image, which expands palettes to RGB) with the
label scheme applied.

:func:`export_monai` writes a MONAI datalist (``training``, ``validation``,
``test`` lists of ``{"image", "label"}`` with paths relative to the JSON's
folder) for ``monai.data.load_decathlon_datalist``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..atomic import temporary_path, write_text_atomic
from ..errors import CsawsError, InputError, OutputError, SettingsError, one_line
from ..execution.options import RunOptions, run_options
from ..execution.runner import (
    BatchResult,
    ensure_writable_dir,
    run_batch,
    settings_hash,
)
from ..execution.tasks import Task
from ..files import files_under, index_by_stem
from ..guards import is_inside
from ..identity import file_identity
from ..limits import check_pixels
from ..masks.classes import split_mask_stem
from ..masks.labels import STANDARD_NAMES, LabelScheme, parse_scheme
from ..masks.labelset import LABELS_NAME, LabelSet
from ..naming import sanitise
from ..png import SETTINGS_KEY, made_with, png_header, read_png, write_png

#: ``--labels with`` and ``--labels without``: the two settings of the study (protocol section 5).
LABEL_ALIASES = {"with": "all", "without": "binary"}
#: nnU-Net v2 normalisation schemes, chosen by the channel name in dataset.json
#: (nnU-Net's ``documentation/explanation_normalization.md``; any other name means ``zscore``).
NORMALIZATIONS = ("zscore", "rgb_to_0_1", "rescale_to_0_1", "CT", "noNorm")
DEFAULT_NORMALIZATION = "zscore"
#: Where the test ground truth comes from: a folder under ``MAPS/test``, or none.
TEST_LABELS = ("consensus", "annotator_1", "annotator_2", "annotator_3", "none")
DEFAULT_DATASET_ID = 501
DEFAULT_NAME = "CSAWS"
EXPORT_RECORD = "csaws_export.json"
CASE_FOLDERS = ("imagesTr", "labelsTr", "imagesTs", "labelsTs")
#: Marks ids a label map may not hold (not a class of its labels.json).
_INVALID = 255
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


# ---------------------------------------------------------------- label schemes

def export_scheme(spec: str | LabelScheme) -> LabelScheme:
    """The label scheme of an export: ``with`` (all 12 classes), ``without`` (cancer vs background) or a spec."""
    if isinstance(spec, str) and spec.strip().lower() in LABEL_ALIASES:
        spec = LABEL_ALIASES[spec.strip().lower()]
    return parse_scheme(spec)


def maps_partition(maps: str | os.PathLike) -> tuple[np.ndarray, int, Path | None]:
    """How the maps under ``maps`` were written: (standard id -> written id, number of ids, labels.json).

    Reads ``maps/labels.json`` (written by merge-masks) through
    :class:`~csaws_tools.masks.labelset.LabelSet`: its numbering (standard or
    release) and label scheme. Without one, the maps are taken to hold the 12
    standard ids.
    """
    path = Path(maps) / LABELS_NAME
    identity = np.arange(len(STANDARD_NAMES), dtype=np.int64)
    if not path.is_file():
        return identity, len(STANDARD_NAMES), None
    try:
        labels = LabelSet.read(path)
        scheme = labels.label_scheme()
    except CsawsError as exc:
        message = one_line(exc)
        if not message.startswith(f"{path}: "):
            message = f"{path}: not a labels.json written by merge-masks ({message})"
        raise InputError(message) from None
    numbering = labels.numbering or "standard"
    if scheme.is_identity:
        lut, k = identity, len(labels.names)
    else:
        lut, k = np.asarray(scheme.lut, dtype=np.int64), scheme.num_classes
    if lut.shape != identity.shape or lut.min() < 0 or lut.max() >= k or k > _INVALID:
        raise InputError(f"{path}: not a labels.json written by merge-masks "
                         "(the scheme's lookup table does not cover the 12 classes)")
    if numbering == "release":  # background moves to the last id (csaws_tools.labels.scheme_ids)
        lut = (lut - 1) % k
    elif numbering != "standard":
        raise InputError(f"{path}: unknown numbering {numbering!r}")
    return lut, k, path


def label_lut(maps: str | os.PathLike, target: LabelScheme) -> np.ndarray:
    """A 256-entry lookup table from the ids written in ``maps`` to ``target``'s ids.

    Ids the maps cannot hold map to 255. When the maps merge classes that
    ``target`` keeps apart (maps written with ``labels='binary'``, exported
    with all classes) the export is impossible and an :class:`InputError` says so.
    """
    written, k, path = maps_partition(maps)
    lut = np.full(256, _INVALID, dtype=np.uint8)
    for w in range(k):
        std = np.flatnonzero(written == w)
        if std.size == 0:
            continue
        ids = np.unique(target.lut[std])
        if ids.size > 1:
            names = ", ".join(STANDARD_NAMES[i] for i in std)
            raise InputError(
                f"{path}: the maps hold {names} as one class (id {w}) but label scheme {target.spec!r} keeps "
                "them apart; rerun merge_masks without labels=, or export with the maps' own scheme")
        lut[w] = ids[0]
    return lut


# ---------------------------------------------------------------- finding inputs

def checked_png_header(path: str | os.PathLike) -> tuple[int, int, int, int]:
    """(rows, columns, bit depth, colour type) from a PNG's IHDR chunk, without decoding pixels."""
    try:
        height, width, depth, ctype = png_header(path)
    except ValueError:
        raise InputError(f"{path}: not a PNG file") from None
    check_pixels((height, width), path)
    return height, width, depth, ctype


def index_images(images: str | os.PathLike, exclude: Sequence[str | os.PathLike] = ()) -> tuple[dict[str, Path], list[str]]:
    """Image id -> path for the ``*.png`` under ``images``; (index, problems).

    Class masks (``<image>_<class>.png``), hidden files and the folders in
    ``exclude`` (label maps, the output) are passed over; an id found twice
    is a problem and the first path is kept.
    """
    root = Path(images)
    if not root.is_dir():
        raise InputError(f"{root}: images folder not found")
    skip = [Path(e) for e in exclude if e is not None and Path(e).exists()]
    paths = files_under(root, (".png",), case_sensitive=True,
                        skip=lambda p: split_mask_stem(p.stem)[1] is not None or any(is_inside(p, s) for s in skip))
    return index_by_stem(paths, "image")


def _map_ids(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in files_under(folder, (".png",), recursive=False, case_sensitive=True)}


def _test_maps(maps: Path, test_labels: str) -> tuple[dict[str, Path | None], Path | None]:
    """Test image id -> its ground-truth map (``None`` with ``test_labels="none"``), and the folder."""
    test = maps / "test"
    if test_labels == "none":
        ids = {i for d in sorted(test.glob("*")) if d.is_dir() for i in _map_ids(d)} if test.is_dir() else set()
        return {i: None for i in sorted(ids)}, None
    if test_labels not in TEST_LABELS:
        raise SettingsError(f"unknown test labels {test_labels!r}; expected one of {', '.join(TEST_LABELS)}")
    folder = test / test_labels
    return dict(_map_ids(folder)), folder


@dataclass
class Case:
    """One exported case: an image, its label map, and where it goes."""

    case_id: str
    image_id: str
    patient_id: str
    role: str  # "train" (imagesTr) or "test" (imagesTs)
    image: Path | None
    label: Path | None
    error: str | None = None


@dataclass
class ExportPlan:
    """The cases of an export and the splits that decide its folds."""

    cases: list[Case]
    splits: dict
    problems: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def plan_cases(maps: str | os.PathLike, images: str | os.PathLike, *, test_labels: str = "consensus",
               splits: str | os.PathLike | dict | None = None, seed: int = 0,
               exclude: Sequence[str | os.PathLike] = ()) -> ExportPlan:
    """Pair label maps with images and decide the patient-level splits.

    ``splits`` is a splits file written by ``csaws-prepare splits`` / ``train
    prepare`` (or its dict); without one the splits are made here with
    :func:`csaws_tools.splits.make_splits` (the protocol's validation patients
    where present, otherwise a seeded 20/150 of the patients).
    """
    from ..splits import load_splits, make_splits, patient_of

    maps = Path(maps)
    trainval_dir = maps / "trainval"
    if not trainval_dir.is_dir():
        raise InputError(f"{trainval_dir}: folder not found (MAPS is the output folder of merge-masks)")
    train_maps = _map_ids(trainval_dir)
    if not train_maps:
        raise InputError(f"{trainval_dir}: no label maps (*.png)")
    test_maps, test_folder = _test_maps(maps, test_labels)
    index, dups = index_images(images, exclude=[maps, *exclude])
    plan = ExportPlan(cases=[], splits={})
    if test_folder is not None and not test_folder.is_dir() and (maps / "test").is_dir():
        plan.warnings.append(f"no {test_folder}: no test cases are exported (pick another test_labels=)")
    for d in dups:
        plan.problems.append({"source": d.split(" found")[0], "status": "error", "error": d})

    case_of: dict[str, str] = {}
    for role, table in (("train", train_maps), ("test", test_maps)):
        for image_id, label in table.items():
            case_id = sanitise(image_id)
            error = None
            if case_id in case_of:
                error = f"case name {case_id} is already taken by image {case_of[case_id]}"
            elif role == "test" and image_id in train_maps:
                error = f"image {image_id} has a train/val map and a test map; it is exported once, as training"
            image = index.get(image_id)
            if image is None and error is None:
                error = f"no image {image_id}.png under {images}"
            case_of.setdefault(case_id, image_id)
            plan.cases.append(Case(case_id, image_id, patient_of(image_id), role, image, label, error))
    unused = sorted(set(index) - set(train_maps) - set(test_maps))
    if unused:
        more = f" and {len(unused) - 5} more" if len(unused) > 5 else ""
        plan.warnings.append(f"{len(unused)} image(s) without a label map are not exported: "
                             f"{', '.join(unused[:5])}{more}")

    if splits is None:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            plan.splits = make_splits(sorted(train_maps), sizes=(), test_ids=sorted(test_maps), seed=seed)
        plan.warnings.extend(str(w.message) for w in caught)
    else:
        plan.splits = splits if isinstance(splits, dict) else load_splits(splits)
        known = set(plan.splits["train"]["images"]) | set(plan.splits["val"]["images"])
        outside = sorted(set(train_maps) - known)
        if outside:
            plan.warnings.append(f"{len(outside)} train/val map(s) are in no split of the splits file and in no "
                                 f"fold: {', '.join(outside[:5])}")
    return plan


# ---------------------------------------------------------------- folds

def make_folds(splits: dict, cases: dict[str, str]) -> tuple[list[dict], list[str]]:
    """nnU-Net folds (``[{"train": [...], "val": [...]}]``) and a description of each.

    Fold 0 is the protocol's split: every training patient against the
    validation patients. Then one fold per training subset of the splits
    (each size N, each repetition) against the same validation patients,
    so ``nnUNetv2_train ... FOLD`` reruns one low-data setting of the study.
    ``cases`` maps image id -> case id (exported cases only). A patient in a
    fold's train and val lists at once is an :class:`InputError`.
    """
    from ..splits import patient_of

    def ids(images):
        return sorted(cases[i] for i in images if i in cases)

    val = ids(splits["val"]["images"])
    folds = [{"train": ids(splits["train"]["images"]), "val": val}]
    names = ["all training patients vs validation patients (protocol section 1)"]
    for n in sorted(splits.get("subsets", {}), key=lambda s: (not str(s).isdigit(), int(s) if str(s).isdigit() else 0, str(s))):
        reps = splits["subsets"][n]
        for rep in sorted(reps, key=lambda r: int(r) if str(r).isdigit() else r):
            folds.append({"train": ids(reps[rep]["images"]), "val": val})
            names.append(f"training subset N={n}, repetition {rep}, vs validation patients")
    by_case = {c: i for i, c in cases.items()}
    for k, fold in enumerate(folds):
        shared = {patient_of(by_case[c]) for c in fold["train"]} & {patient_of(by_case[c]) for c in fold["val"]}
        if shared:
            raise InputError(f"fold {k} has patient(s) {', '.join(sorted(shared))} in both train and val")
        if not fold["train"] or not fold["val"]:
            names[k] += " (EMPTY: no exported case on one side)"
    return folds, names


# ---------------------------------------------------------------- the worker

def place_image(src: Path, dst: Path, *, link: bool, shash: str) -> str:
    """Put a one-channel PNG of ``src`` at ``dst``; return how (linked, copied, converted, up to date).

    A one-channel 8- or 16-bit PNG is hard-linked (copied where linking
    fails or ``link`` is false); any other PNG is decoded and its first
    channel written (palette images through their grey values).
    """
    _, _, depth, ctype = checked_png_header(src)
    plain = ctype == 0 and depth in (8, 16)
    if plain:
        if dst.exists():
            with contextlib.suppress(OSError):
                if os.path.samefile(src, dst):
                    return "up to date"
                s, d = src.stat(), dst.stat()
                if not link and s.st_size == d.st_size and s.st_mtime_ns == d.st_mtime_ns:
                    return "up to date"
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = temporary_path(dst)
        try:
            how = "copied"
            if link:
                try:
                    os.link(src, tmp)
                    how = "linked"
                except OSError:
                    pass
            if how == "copied":
                shutil.copy2(src, tmp)
            os.replace(tmp, dst)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        return how
    ihash = settings_hash({"image": shash, "source": file_identity(src)})
    if made_with(dst, ihash):
        return "up to date"
    try:
        if ctype == 3:
            from PIL import Image

            with Image.open(src) as im:
                arr = np.asarray(im.convert("L"))
        else:
            arr = read_png(src)
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a bad input
        raise InputError(f"{src}: cannot read image ({one_line(exc)})") from None
    if arr.ndim == 3:
        arr = np.ascontiguousarray(arr[..., 0])
    if arr.dtype not in (np.uint8, np.uint16):
        arr = arr.astype(np.uint8)
    write_png(dst, arr, text={SETTINGS_KEY: ihash})
    return "converted"


def remap_label(path: Path, lut: np.ndarray) -> np.ndarray:
    """Read a label map and map its ids through ``lut``; ids outside the maps' classes are an error."""
    try:
        arr = read_png(path)
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"{path}: cannot read label map ({one_line(exc)})") from None
    if arr.ndim != 2 or arr.dtype != np.uint8:
        raise InputError(f"{path}: not a one-channel 8-bit label map (shape {arr.shape}, {arr.dtype}); "
                         "is this an image rather than a map written by merge-masks?")
    out = lut[arr]
    bad = out == _INVALID
    if bad.any():
        values = np.unique(arr[bad])
        raise InputError(f"{path}: holds id(s) {', '.join(map(str, values[:5].tolist()))} that are no class "
                         "of the maps' labels.json")
    return out


@dataclass(frozen=True)
class ExportArgs:
    """One case's own settings: its ids, role, the image and label map and where the map goes."""

    case_id: str
    image_id: str
    patient_id: str | None
    #: "train" or "test" (nnU-Net's imagesTr/imagesTs)
    role: str
    image: str | None
    label: str | None
    label_out: str | None
    #: a problem found while planning, reported as the case's error
    error: str | None = None


def export_worker(task: Task[ExportArgs], *, lut: tuple[int, ...], shash: str, link: bool, overwrite: bool) -> dict:
    """Export one case (image and label map); return its manifest row."""
    a = task.args
    row: dict = {"case_id": a.case_id, "image_id": a.image_id, "patient_id": a.patient_id, "role": a.role}
    row["label_output"] = a.label_out
    if a.error:
        row.update(status="error", error=a.error)
        return row
    assert a.image is not None  # a case without an image is planned with an error
    image, image_out = Path(a.image), Path(str(task.output))
    label, label_out = (Path(a.label), Path(a.label_out)) if a.label and a.label_out else (None, None)
    if overwrite:
        for p in (image_out, label_out):
            if p is not None:
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
    try:
        rows, cols, _, _ = checked_png_header(image)
        labels = None
        lhash = ""
        if label is not None and label_out is not None:
            mrows, mcols, _, _ = checked_png_header(label)
            if (mrows, mcols) != (rows, cols):  # checked on every run: the image may have changed
                raise InputError(f"size mismatch: image {image} is {rows}x{cols} but label map {label} is "
                                 f"{mrows}x{mcols}")
            lhash = settings_hash({"label": shash, "source": file_identity(label)})
            if not made_with(label_out, lhash):
                labels = remap_label(label, np.asarray(lut, dtype=np.uint8))
        how = place_image(image, image_out, link=link, shash=shash)
        if labels is not None and label_out is not None:
            try:
                write_png(label_out, labels, text={SETTINGS_KEY: lhash})
            except Exception:
                with contextlib.suppress(FileNotFoundError):
                    image_out.unlink()
                raise
    except InputError as exc:
        row.update(status="error", error=one_line(exc))
        return row
    row["image_method"] = how
    row["status"] = "skipped" if how == "up to date" and labels is None else "ok"
    return row


# ---------------------------------------------------------------- nnU-Net

def dataset_folder_name(dataset_id: int, name: str) -> str:
    """``Dataset<XXX>_<Name>`` (nnU-Net: a three-digit id, 1 to 999, and a free name)."""
    if not 1 <= int(dataset_id) <= 999:
        raise SettingsError(f"dataset_id={dataset_id!r} must be 1 to 999 (nnU-Net's three-digit ids)",
                            param="dataset_id")
    if not _NAME_RE.match(name or ""):
        raise SettingsError(f"name={name!r}: use letters, digits, '_' and '-' (it becomes a folder name)", param="name")
    return f"Dataset{int(dataset_id):03d}_{name}"


def _check_dataset_folder(out: Path, folder: Path, dataset_id: int) -> None:
    """Refuse a folder that is not ours and a second dataset with the same id (nnU-Net cannot tell them apart)."""
    if folder.exists() and (not folder.is_dir() or (any(folder.iterdir()) and not (folder / EXPORT_RECORD).is_file())):
        raise OutputError(f"{folder}: exists and is not an earlier export (no {EXPORT_RECORD}); "
                          "choose another dataset_id= or name= or remove it", param=("dataset_id", "name"))
    if out.is_dir():
        others = sorted(p.name for p in out.glob(f"Dataset{int(dataset_id):03d}_*") if p.name != folder.name)
        if others:
            raise OutputError(f"{out}: holds {', '.join(others)} with the same dataset id {dataset_id:03d}; "
                              "nnU-Net would not know which one to use: choose another dataset_id=",
                              param="dataset_id")


def _remove_stale(folder: Path, keep: set[Path]) -> int:
    """Remove case files of an earlier export that this export does not hold (they would count as cases)."""
    n = 0
    for sub in CASE_FOLDERS:
        d = folder / sub
        if not d.is_dir():
            continue
        for p in d.glob("*.png"):
            if p not in keep:
                with contextlib.suppress(OSError):
                    p.unlink()
                    n += 1
        with contextlib.suppress(OSError):
            d.rmdir()  # only when empty
    return n


@dataclass
class ExportResult(BatchResult):
    """A batch result with the files the export wrote and what it found."""

    folder: Path | None = None
    dataset_json: dict | None = None
    folds: list[dict] | None = None
    fold_names: list[str] | None = None
    warnings: list[str] = field(default_factory=list)
    removed: int = 0


def export_nnunet(
    maps: str | os.PathLike,
    images: str | os.PathLike,
    out: str | os.PathLike,
    *,
    dataset_id: int = DEFAULT_DATASET_ID,
    name: str = DEFAULT_NAME,
    labels: str | LabelScheme = "with",
    normalization: str = DEFAULT_NORMALIZATION,
    test_labels: str = "consensus",
    splits: str | os.PathLike | dict | None = None,
    seed: int = 0,
    link: bool = True,
    run: RunOptions | None = None,
    **run_keywords: Any,
) -> ExportResult:
    """Write an nnU-Net v2 raw dataset ``out/Dataset<XXX>_<Name>`` (see the module docstring).

    ``labels``: ``with`` (12 classes), ``without`` (cancer vs background) or
    any label scheme spec; the ids become consecutive 0..K-1 as nnU-Net
    requires. ``normalization`` is the channel name nnU-Net reads as its
    normalisation scheme. Reruns skip cases that are up to date; cases of an
    earlier export that are not exported now are removed from the folder.
    ``run`` says how the cases are processed (workers, overwrite, fail_fast,
    progress, scheduler, batch_size; :class:`~csaws_tools.execution.options.RunOptions`),
    or give its fields as keywords (``workers=4``). One dataset is written,
    so ``shard`` does not apply.
    """
    run = run_options(run, run_keywords, "export_nnunet")
    if run.shard is not None:
        raise SettingsError("shard does not apply to export_nnunet: it writes one dataset (dataset.json, "
                            "splits_final.json)", param="shard")
    if normalization not in NORMALIZATIONS:
        raise SettingsError(f"normalization={normalization!r}: expected one of {', '.join(NORMALIZATIONS)}",
                            param="normalization")
    scheme = export_scheme(labels)
    out = Path(out)
    folder = out / dataset_folder_name(dataset_id, name)
    lut = label_lut(maps, scheme)
    plan = plan_cases(maps, images, test_labels=test_labels, splits=splits, seed=seed, exclude=[out])
    _check_dataset_folder(out, folder, dataset_id)
    ensure_writable_dir(folder)
    settings = {"command": "export nnunet", "labels": scheme.to_dict(), "lut": lut.tolist(),
                "maps": str(Path(maps).resolve()), "test_labels": test_labels}
    shash = settings_hash(settings)
    record = {"format": "csaws-export/1", "tool_version": __version__, "settings": settings,
              "images": str(Path(images).resolve()), "complete": False}
    write_text_atomic(folder / EXPORT_RECORD, json.dumps(record, indent=1) + "\n")

    tasks = []
    for c in plan.cases:
        img_dir, lab_dir = ("imagesTr", "labelsTr") if c.role == "train" else ("imagesTs", "labelsTs")
        label_out = str(folder / lab_dir / f"{c.case_id}.png") if c.label is not None else None
        tasks.append(Task(key=f"{c.role}/{c.case_id}", source=str(c.image or c.label),
                          output=str(folder / img_dir / f"{c.case_id}_0000.png"),
                          args=ExportArgs(case_id=c.case_id, image_id=c.image_id, patient_id=c.patient_id,
                                          role=c.role, image=str(c.image) if c.image else None,
                                          label=str(c.label) if c.label else None, label_out=label_out,
                                          error=c.error)))
    worker = functools.partial(export_worker, lut=tuple(int(v) for v in lut), shash=shash, link=link,
                               overwrite=run.overwrite)
    result = run_batch(tasks, worker, manifest=folder / "manifest.parquet", settings=settings, run=run,
                       label="exporting to nnU-Net", extra_rows=plan.problems)
    if result.interrupted:  # dataset.json and the folds of the last complete run stay as they were
        return ExportResult(rows=result.rows, manifest=result.manifest, interrupted=True, seconds=result.seconds,
                            folder=folder,
                            warnings=plan.warnings)
    done = [r for r in result.rows if r.get("status") in ("ok", "skipped") and r.get("case_id")]
    keep = {Path(r["output"]) for r in done} | {Path(r["label_output"]) for r in done if r.get("label_output")}
    removed = _remove_stale(folder, keep)

    train_cases = {r["image_id"]: r["case_id"] for r in done if r["role"] == "train"}
    folds, fold_names = make_folds(plan.splits, train_cases)
    dataset = {
        "name": name,
        "description": "CSAW-S mammograms (ICML 2020, 'Adding seemingly uninformative labels helps in low data "
                       f"regimes') exported by csaws-tools {__version__}; label scheme {scheme.spec!r}; "
                       "channel 0: the 8-bit mammogram",
        "channel_names": {"0": normalization},
        "labels": {n: i for i, n in enumerate(scheme.names)},
        "numTraining": len(train_cases),
        "file_ending": ".png",
        "overwrite_image_reader_writer": "NaturalImage2DIO",
    }
    write_text_atomic(folder / "dataset.json", json.dumps(dataset, indent=2) + "\n")
    write_text_atomic(folder / "splits_final.json", json.dumps(folds, indent=1) + "\n")
    test_cases = sorted(r["case_id"] for r in done if r["role"] == "test")
    record.update(complete=result.failed == 0, folds=fold_names,
                  training_cases=len(train_cases), test_cases=len(test_cases),
                  test_labels_from=None if test_labels == "none" else f"MAPS/test/{test_labels}",
                  splits_rule=plan.splits.get("validation"))
    write_text_atomic(folder / EXPORT_RECORD, json.dumps(record, indent=1) + "\n")
    return ExportResult(rows=result.rows, manifest=result.manifest, interrupted=result.interrupted,
                        seconds=result.seconds,
                        folder=folder, dataset_json=dataset, folds=folds, fold_names=fold_names,
                        warnings=plan.warnings, removed=removed)


# ---------------------------------------------------------------- MONAI

@dataclass
class DatalistResult:
    """What :func:`export_monai` wrote: the datalist, its path and the problems found."""

    path: Path
    datalist: dict
    problems: list[str]
    warnings: list[str]

    @property
    def exit_code(self) -> int:
        return 1 if self.problems else 0

    def summary(self) -> str:
        counts = ", ".join(f"{len(self.datalist[k])} {k}" for k in ("training", "validation", "test"))
        return f"{counts}; {len(self.problems)} failed"


def export_monai(
    maps: str | os.PathLike,
    images: str | os.PathLike,
    out: str | os.PathLike,
    *,
    base_dir: str | os.PathLike | None = None,
    test_labels: str = "consensus",
    splits: str | os.PathLike | dict | None = None,
    train_split: str = "train",
    repetition: int | None = None,
    seed: int = 0,
) -> DatalistResult:
    """Write a MONAI datalist JSON: ``training``, ``validation`` and ``test`` lists of ``{"image", "label"}``.

    Paths are relative to ``base_dir`` (default: the JSON's folder), as
    ``monai.data.load_decathlon_datalist(path, data_list_key=..., base_dir=...)``
    expects. ``train_split`` is ``train`` (every training patient),
    ``trainval`` or a subset size ``N`` of the splits (with ``repetition``).
    Labels are the maps as written (their ids are listed under ``labels``).
    A pair whose sizes differ (read from the headers) is left out and reported.
    """
    from ..splits import select_images

    out = Path(out)
    if out.is_dir():
        raise SettingsError(f"{out}: is a folder; -o names the datalist JSON file to write")
    base = Path(base_dir) if base_dir is not None else out.parent
    base = Path(os.path.abspath(base))
    plan = plan_cases(maps, images, test_labels=test_labels, splits=splits, seed=seed)
    problems = [p["error"] for p in plan.problems]

    def rel(path: Path) -> str:
        try:
            return os.path.relpath(os.path.abspath(path), base)
        except ValueError:  # another drive (Windows): no relative path exists
            return os.path.abspath(path)

    good: dict[str, dict] = {}
    for c in plan.cases:
        if c.error or c.image is None:
            problems.append(c.error or f"no image {c.image_id}")
            continue
        try:
            rows, cols, _, _ = checked_png_header(c.image)
            entry = {"image": rel(c.image)}
            if c.label is not None:
                mrows, mcols, _, _ = checked_png_header(c.label)
                if (mrows, mcols) != (rows, cols):
                    raise InputError(f"size mismatch: image {c.image} is {rows}x{cols} but label map {c.label} is "
                                     f"{mrows}x{mcols}")
                entry["label"] = rel(c.label)
        except (InputError, OSError) as exc:
            problems.append(one_line(exc))
            continue
        good[f"{c.role}/{c.image_id}"] = entry

    def entries(role: str, ids) -> list[dict]:
        return [good[f"{role}/{i}"] for i in sorted(ids) if f"{role}/{i}" in good]

    train_ids = select_images(plan.splits, train_split, repetition)
    val_ids = plan.splits["val"]["images"] if train_split != "trainval" else []
    test_ids = [c.image_id for c in plan.cases if c.role == "test"]
    _, k, lpath = maps_partition(maps)
    names = _maps_names(lpath, k)
    datalist = {
        "description": f"CSAW-S datalist from csaws-tools {__version__}: training split {train_split!r}"
                       + (f" repetition {repetition}" if repetition is not None else "")
                       + "; validation patients of the patient-level splits; test labels "
                       + (f"MAPS/test/{test_labels}" if test_labels != "none" else "none"),
        "labels": {str(i): n for i, n in enumerate(names)},
        "training": entries("train", train_ids),
        "validation": entries("train", val_ids),
        "test": entries("test", test_ids),
    }
    write_text_atomic(out, json.dumps(datalist, indent=1) + "\n")
    return DatalistResult(path=out, datalist=datalist, problems=problems, warnings=plan.warnings)


def _maps_names(path: Path | None, k: int) -> list[str]:
    if path is None:
        return list(STANDARD_NAMES)
    from ..masks.labelset import names_from_labels_json

    try:
        return names_from_labels_json(path)
    except Exception:  # noqa: BLE001 - already validated by maps_partition; fall back to ids
        return [str(i) for i in range(k)]


__all__ = [
    "LABEL_ALIASES",
    "NORMALIZATIONS",
    "TEST_LABELS",
    "DatalistResult",
    "ExportArgs",
    "ExportResult",
    "export_monai",
    "export_nnunet",
    "export_scheme",
    "index_images",
    "label_lut",
    "make_folds",
    "maps_partition",
    "place_image",
    "plan_cases",
    "checked_png_header",
]
