"""Patient-level train/validation splits and training subsets (protocol sections 1 and 5).

The study trains on subsets of N = 25, 50, 100 and 263 images, sampled at
the patient level, five repetitions each, and validates on 20 of the 150
train/val patients. :func:`make_splits` builds all of that from a folder of
images (or a list of image ids) and writes it as JSON with the seeds, so a
training run can be traced back to the exact images it saw:

>>> splits = make_splits(["000_1", "000_2", "001_1", "002_1"], sizes=(1,), repetitions=2,
...                      val_patients=["002"])
>>> splits["val"]["images"]
['002_1']

Rules (also in ``docs/patches.md``):

* An image id is ``<patient>_<n>``; the patient is everything before the last
  underscore (an id without an underscore is its own patient).
* Validation patients: those given; else those of the 20 suggested by the
  protocol (section 1) that are present (all 20 in the full release), as
  long as a training patient is left; else a seeded random 20/150 of the
  patients (at least one, never all).
* Subsets: for each repetition, the training patients are put in a seeded
  random order; walking that order, a patient is added whole when all of
  their images still fit within N; the walk stops at exactly N images. When
  no patient fits any more and N is not reached, the subset keeps fewer
  images and a warning says so. N larger than the training set is an error.
* Images under a folder named ``test_data`` or ``test`` form the test split.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from . import __version__, defaults
from .atomic import write_text_atomic
from .errors import InputError, OutputError, SettingsError
from .files import files_under
from .jsonfile import read_json_object
from .masks.classes import split_mask_stem
from .text import counted

FORMAT = "csaws-splits/1"
#: Protocol section 1: the 20 suggested validation patients.
PROTOCOL_VAL_PATIENTS: tuple[str, ...] = (
    "000", "001", "012", "018", "025", "030", "034", "038", "053", "062",
    "068", "075", "083", "127", "131", "139", "156", "181", "245", "249",
)
#: Protocol section 5: training-set sizes (images).
DEFAULT_SIZES: tuple[int, ...] = defaults.SUBSET_SIZES
DEFAULT_REPETITIONS = defaults.REPETITIONS
#: Fraction of patients held out when the protocol's patients are absent (20 of 150).
VAL_FRACTION = 20 / 150
TEST_FOLDERS = frozenset({"test_data", "test"})
RELEASE_SPLITS_NAME = "training_random_splits.json"


def patient_of(image_id: str) -> str:
    """The patient id of an image id: the part before the last underscore (``"017_2"`` -> ``"017"``)."""
    head, sep, _ = image_id.rpartition("_")
    return head if sep and head else image_id


def find_images(root: str | os.PathLike) -> tuple[list[str], list[str]]:
    """Image ids under ``root`` (PNG files, searched recursively), as (train/val, test).

    Class masks (``<image>_<class>.png``) and hidden files are passed over;
    files under a ``test_data`` or ``test`` folder are test images.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: not a folder")
    trainval: set[str] = set()
    test: set[str] = set()
    for path in files_under(root, (".png",), case_sensitive=True):
        image_id, token = split_mask_stem(path.stem)
        if token is not None:
            continue
        rel = path.relative_to(root).parts[:-1]
        (test if TEST_FOLDERS.intersection(rel) else trainval).add(image_id)
    return sorted(trainval - test), sorted(test)


def _group(image_ids: Iterable[str]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for i in sorted(set(image_ids)):
        groups.setdefault(patient_of(i), []).append(i)
    return groups


def _derived_seed(seed: int, *key: int) -> int:
    """A 32-bit seed derived from ``seed`` and ``key`` (independent streams per key)."""
    return int(np.random.SeedSequence([int(seed), *key]).generate_state(1)[0])


def _fill(order: Sequence[str], groups: dict[str, list[str]], n: int) -> list[str]:
    """Walk ``order`` adding whole patients whose images fit within ``n``; stop at ``n``."""
    chosen, count = [], 0
    for pid in order:
        k = len(groups[pid])
        if count + k <= n:
            chosen.append(pid)
            count += k
            if count == n:
                break
    return chosen


def find_release_splits(root: str | os.PathLike) -> Path | None:
    """The release's ``training_random_splits.json`` under ``root`` (or ``root/CsawS``), if any."""
    root = Path(root)
    for cand in (root / RELEASE_SPLITS_NAME, root / "CsawS" / RELEASE_SPLITS_NAME):
        if cand.is_file():
            return cand
    found = sorted(root.rglob(RELEASE_SPLITS_NAME)) if root.is_dir() else []
    return found[0] if found else None


def read_release_subsets(path: str | os.PathLike, groups: dict[str, list[str]]) -> dict:
    """Read ``{"<N>": {"<rep>": [<pid>, ...]}}`` into this module's subset records.

    Patient ids may be strings or numbers; numbers are matched to the
    zero-padded ids present (``17`` -> ``"017"``). Unknown patients are an error.
    """
    path = Path(path)
    raw = read_json_object(path, "release splits {N: {repetition: [patients]}}")
    by_number = {int(p): p for p in groups if p.isdigit()}
    subsets: dict[str, dict] = {}
    for n, reps in raw.items():
        if not isinstance(reps, dict):
            raise InputError(f"{path}: entry {n!r} is not an object of repetitions")
        subsets[str(n)] = {}
        for rep, pids in reps.items():
            if not isinstance(pids, list):
                raise InputError(f"{path}: subset {n}/{rep} should be a list of patient ids, not "
                                 f"{type(pids).__name__} {str(pids)[:40]!r}")
            patients = []
            for p in pids:
                if not isinstance(p, (str, int)) or isinstance(p, bool):
                    raise InputError(f"{path}: subset {n}/{rep} holds {p!r}, not a patient id")
                key = str(p)
                if key not in groups and key.isdigit():
                    key = by_number.get(int(key), key)
                if key not in groups:
                    raise InputError(f"{path}: subset {n}/{rep} names patient {p!r}, who has no training image here")
                if key in patients:
                    raise InputError(f"{path}: subset {n}/{rep} names patient {p!r} twice")
                patients.append(key)
            images = sorted(i for p in patients for i in groups[p])
            subsets[str(n)][str(rep)] = {"seed": None, "patients": sorted(patients),
                                         "images": images, "n_images": len(images)}
    return subsets


def make_splits(
    source: str | os.PathLike | Iterable[str],
    *,
    val_patients: Sequence[str] | None = None,
    sizes: Sequence[int] = DEFAULT_SIZES,
    repetitions: int = DEFAULT_REPETITIONS,
    seed: int = 0,
    release_subsets: bool | str | os.PathLike = False,
    test_ids: Iterable[str] = (),
) -> dict:
    """Build the patient-level splits of protocol sections 1 and 5.

    ``source`` is a folder (images found by :func:`find_images`) or an
    iterable of train/val image ids (``test_ids`` then lists test images).
    ``release_subsets`` takes the training subsets from the release's
    ``training_random_splits.json`` (``True``: look for it under ``source``;
    or a path) instead of sampling them. Returns a JSON-ready dict; see
    :func:`save_splits` and :func:`select_images`.
    """
    root = None
    if isinstance(source, (str, os.PathLike)):
        root = Path(source)
        trainval, test = find_images(root)
        if not trainval:
            raise InputError(f"{root}: no train/validation images (*.png that are not class masks) found")
    else:
        trainval, test = sorted(set(source)), sorted(set(test_ids))
        if not trainval:
            raise InputError("no image ids given")
    if int(seed) < 0:
        raise InputError(f"seed must be a non-negative integer, not {seed}")
    groups = _group(trainval)
    patients = sorted(groups)

    val_seed = None
    if val_patients is not None:
        val = sorted({str(p) for p in val_patients})
        missing = [p for p in val if p not in groups]
        if missing:
            raise InputError(f"validation patients {', '.join(missing)} have no image here")
        rule = "given"
    elif 0 < sum(p in groups for p in PROTOCOL_VAL_PATIENTS) < len(patients):
        val, rule = [p for p in PROTOCOL_VAL_PATIENTS if p in groups], "protocol"
    else:
        if len(patients) < 2:
            raise InputError(f"need at least 2 patients for a train/validation split, found {len(patients)}")
        n_val = min(max(1, round(len(patients) * VAL_FRACTION)), len(patients) - 1)
        val_seed = _derived_seed(seed, 0)
        rng = np.random.default_rng(val_seed)
        val = sorted(rng.choice(patients, size=n_val, replace=False).tolist())
        rule = "seeded-fraction"
    train = [p for p in patients if p not in set(val)]
    if not train:
        raise InputError("every patient is in the validation split; no training patient is left")
    train_images = [i for p in train for i in groups[p]]
    train_groups = {p: groups[p] for p in train}

    sizes = [int(n) for n in sizes]
    subsets: dict[str, dict] = {}
    release_path = None
    if release_subsets:
        release_path = (find_release_splits(root) if release_subsets is True and root is not None
                        else Path(release_subsets) if release_subsets is not True else None)
        if release_path is None:
            raise InputError(f"no {RELEASE_SPLITS_NAME} found under {root}")
        subsets = read_release_subsets(release_path, groups)
        sizes = sorted(int(n) for n in subsets if str(n).isdigit())
        repetitions = max((len(v) for v in subsets.values()), default=0)
    else:
        for n in sizes:
            if n <= 0:
                raise SettingsError(f"sizes: a subset size must be positive, not {n}", param="sizes")
            if n > len(train_images):
                raise InputError(
                    f"subset size {n} exceeds the {len(train_images)} training images "
                    f"({len(train)} patients); pass smaller sizes (for example "
                    f"sizes=[{max(1, len(train_images) // 3)}, {max(1, 2 * len(train_images) // 3)}])",
                    param="sizes",
                )
        if repetitions < 1:
            raise SettingsError(f"repetitions={repetitions!r} must be at least 1", param="repetitions")
        short: list[str] = []
        for rep in range(repetitions):
            rep_seed = _derived_seed(seed, 1, rep)
            order = np.random.default_rng(rep_seed).permutation(train).tolist()
            for n in sizes:
                chosen = _fill(order, train_groups, n)
                images = sorted(i for p in chosen for i in groups[p])
                if len(images) < n:
                    short.append(f"N={n} repetition {rep}: {counted(len(images), 'image')}")
                subsets.setdefault(str(n), {})[str(rep)] = {
                    "seed": rep_seed, "patients": sorted(chosen), "images": images, "n_images": len(images),
                }

        if short:
            warnings.warn(f"{len(short)} of {len(sizes) * repetitions} subsets hold fewer than N images, as "
                          f"whole patients do not add up to exactly N ({'; '.join(short[:4])}"
                          f"{'; ...' if len(short) > 4 else ''})", stacklevel=2)

    test_groups = _group(test)
    shared = sorted(set(groups) & set(test_groups))
    if shared:
        more = f" and {len(shared) - 5} more" if len(shared) > 5 else ""
        warnings.warn(f"patient(s) {', '.join(shared[:5])}{more} have images both in train/val and in test; "
                      "their test images are not independent of training (recorded as test.shared_patients)",
                      stacklevel=2)
    return {
        "format": FORMAT,
        "tool_version": __version__,
        "seed": int(seed),
        "validation": {"rule": rule, "seed": val_seed, "fraction": VAL_FRACTION if rule == "seeded-fraction" else None},
        "train": {"patients": train, "images": train_images},
        "val": {"patients": val, "images": [i for p in val for i in groups[p]]},
        "test": {"patients": sorted(test_groups), "images": test, "shared_patients": shared},
        "subsets": subsets,
        "subset_rule": {
            "source": "release" if release_path is not None else "sampled",
            "release_file": release_path.name if release_path is not None else None,
            "sizes": sizes,
            "repetitions": repetitions,
            "rule": "whole patients in seeded random order, each added when its images fit within N",
        },
    }


def check_output(path: str | os.PathLike, root: str | os.PathLike) -> None:
    """Refuse an output that is one of the inputs read from ``root`` (the release splits, an image)."""
    path, root = Path(path), Path(root)
    if not path.exists():
        return
    if path.is_dir():
        raise OutputError(f"{path}: is a folder; give a file name such as splits.json")
    release = find_release_splits(root) if root.is_dir() else None
    if release is not None and path.resolve() == release.resolve():
        raise OutputError(f"{path}: is the release's split file, an input; choose another output file")
    if path.suffix.lower() in (".png", ".tif", ".tiff", ".dcm"):
        raise OutputError(f"{path}: is an image, not a splits file; choose another output file")


def save_splits(splits: dict, path: str | os.PathLike) -> Path:
    """Write ``splits`` as indented JSON, atomically; an unwritable place is an :class:`OutputError`."""
    path = Path(path)
    try:
        write_text_atomic(path, json.dumps(splits, indent=1) + "\n")
    except OSError as exc:
        raise OutputError(f"{path}: cannot write the splits file ({exc.strerror or exc})") from None
    return path


def _check_structure(data: dict, name: object) -> None:
    """Every split a list of image-id strings; every subset repetition an object with one."""
    def ids(value, where: str) -> None:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise InputError(f"{name}: {where} should be a list of image ids, not {str(value)[:40]!r}")
        if len(set(value)) != len(value):
            raise InputError(f"{name}: {where} names an image twice")

    for key in ("train", "val", "test"):
        part = data.get(key)
        if not isinstance(part, dict) or "images" not in part:
            raise InputError(f"{name}: no {key!r} split with an 'images' list")
        ids(part["images"], f"{key}.images")
    subsets = data.get("subsets", {})
    if not isinstance(subsets, dict):
        raise InputError(f"{name}: 'subsets' should be an object of subset sizes")
    for n, reps in subsets.items():
        if not isinstance(reps, dict):
            raise InputError(f"{name}: subset {n} should be an object of repetitions")
        for r, rec in reps.items():
            if not isinstance(rec, dict) or "images" not in rec:
                raise InputError(f"{name}: subset {n}/{r} has no 'images' list")
            ids(rec["images"], f"subsets.{n}.{r}.images")


def load_splits(path: str | os.PathLike) -> dict:
    """Read a splits file written by :func:`save_splits` (checks the format)."""
    path = Path(path)
    data = read_json_object(path, "a splits file")
    if data.get("format") != FORMAT:
        raise InputError(f"{path}: not a splits file written by csaws-prepare splits (format {FORMAT})")
    _check_structure(data, path)
    return data


def select_images(splits: dict | str | os.PathLike, split: str, repetition: int | None = None) -> list[str]:
    """The image ids of one split: ``train``, ``val``, ``trainval``, ``test``, or a subset size ``N``.

    A subset needs ``repetition`` (default 0). An empty selection is an error.
    """
    if not isinstance(splits, dict):
        splits = load_splits(splits)
    else:
        _check_structure(splits, "splits")
    split = str(split)
    if split in ("train", "val", "test"):
        ids = list(splits[split]["images"])
    elif split == "trainval":
        ids = sorted(splits["train"]["images"] + splits["val"]["images"])
    elif split in splits.get("subsets", {}):
        rep = str(0 if repetition is None else int(repetition))
        reps = splits["subsets"][split]
        if rep not in reps:
            raise InputError(f"subset {split} has no repetition {rep} (it has {', '.join(sorted(reps))})")
        ids = list(reps[rep]["images"])
    else:
        known = ["train", "val", "trainval", "test", *splits.get("subsets", {})]
        raise InputError(f"unknown split {split!r}; expected one of {', '.join(known)}")
    if not ids:
        raise InputError(f"split {split!r} holds no images")
    return ids


__all__ = [
    "check_output",
    "DEFAULT_REPETITIONS",
    "DEFAULT_SIZES",
    "find_images",
    "find_release_splits",
    "FORMAT",
    "load_splits",
    "make_splits",
    "patient_of",
    "PROTOCOL_VAL_PATIENTS",
    "read_release_subsets",
    "RELEASE_SPLITS_NAME",
    "save_splits",
    "select_images",
    "TEST_FOLDERS",
    "VAL_FRACTION",
]
