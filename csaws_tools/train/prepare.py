"""Prepare the experiment's inputs from label maps and images (protocol sections 4-5).

From ``MAPS`` (written by ``csaws-prepare merge-masks``: ``trainval/<id>.png``,
``test/annotator_<k>/<id>.png``, ``test/consensus/<id>.png``) and the image
folder, write into ``OUT``::

    splits.json      patient-level validation split and the N-image subsets (from
                     the release's training_random_splits.json when it has one)
    train_rep<r>.h5  class-centred crops of the training images of repetition r
                     (all 12 classes), sampled with that repetition's own seed
    val_tiles.h5     non-overlapping tiles of the whole validation images, tiles
                     whose label map is all background dropped (what SUL validates on)
    val.h5           class-centred crops of the validation images (the earlier validation)
    test_tiles.h5    non-overlapping tiles of the test images (all-black tiles dropped)

and return the paths. The test label maps stay where they are (``MAPS/test``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError, OutputError, SettingsError

#: File name pattern of the per-repetition training crops.
TRAIN_PATTERN = "train_rep{rep}.h5"


def crop_seed(seed: int, repetition: int) -> int:
    """The crop-sampling seed of one repetition (protocol section 4: a seed per repetition)."""
    return int(seed) * 1000 + int(repetition)


@dataclass(frozen=True)
class PreparedInputs:
    """Paths of the prepared experiment inputs.

    ``train_file`` is a pattern with ``{rep}``: each repetition has its own
    crops (:meth:`train_file_for`); the with and without settings of one
    repetition share them.
    """

    train_file: str
    val_file: str
    test_tiles: str
    test_maps: str
    splits: str
    val_crops: str | None = None

    def train_file_for(self, repetition: int) -> str:
        """The training crops of one repetition."""
        return self.train_file.format(rep=int(repetition))


SUBSET_SOURCES = ("auto", "release", "own")


def prepare_inputs(images: str | os.PathLike, maps: str | os.PathLike, out: str | os.PathLike, *,
                   patch_size: int = 512, per_class: int = 10, sizes: Sequence[int] | None = None,
                   repetitions: int | None = None, seed: int = 0, val_patients: Sequence[str] | None = None,
                   workers: int | None = None, progress: bool = True, subsets: str = "auto",
                   release_file: str | os.PathLike | None = None) -> PreparedInputs:
    """Write splits, training crops, validation tiles and test tiles; skip files already up to date.

    ``subsets``: ``auto`` takes the training subsets from the release's
    ``training_random_splits.json`` under ``images`` when there is one (as
    SUL ``src/datasets.py`` does), else samples them (seeded, patient level);
    ``release`` insists on the release's file; ``own`` always samples.
    ``sizes`` / ``repetitions`` narrow the release's subsets, or set the sampled
    ones (default 25, 50, 100, 263 and 5). ``release_file``: the release's
    subsets file when it is not under ``images``.

    Protocol section 4: crops are sampled offline once per repetition, each
    repetition with its own seed (:func:`crop_seed`); a repetition's file holds
    the images of all its subsets (every N), so the N-image runs and both
    settings of that repetition read the very same crops.
    """
    try:
        return _prepare(images, maps, out, patch_size=patch_size, per_class=per_class, sizes=sizes,
                        repetitions=repetitions, seed=seed, val_patients=val_patients, workers=workers,
                        progress=progress, subsets=subsets, release_file=release_file)
    except OSError as exc:
        where = exc.filename or out
        raise OutputError(f"{where}: cannot write the prepared inputs ({exc.strerror or exc})") from None


def _prepare(images, maps, out, *, patch_size, per_class, sizes, repetitions, seed, val_patients, workers,
             progress, subsets, release_file=None) -> PreparedInputs:
    from ..patches import write_patches
    from ..splits import find_release_splits, make_splits, save_splits, select_images

    maps, out = Path(maps), Path(out)
    trainval, test = maps / "trainval", maps / "test"
    consensus = test / "consensus"
    for d in (trainval, consensus):
        if not d.is_dir():
            raise InputError(f"{d}: folder not found (expected the output of merge-masks)")
    out.mkdir(parents=True, exist_ok=True)
    ids = sorted(p.stem for p in trainval.glob("*.png"))
    test_ids = sorted(p.stem for p in consensus.glob("*.png"))
    if not ids:
        raise InputError(f"{trainval}: no label maps")
    if subsets not in SUBSET_SOURCES:
        raise SettingsError(f"subsets={subsets!r}: expected one of {', '.join(SUBSET_SOURCES)}", param="subsets")
    release = None
    if subsets != "own":
        release = Path(release_file) if release_file else find_release_splits(images)
    if subsets == "release" and release is None:
        raise InputError(f"{images}: no training_random_splits.json found (subsets='release')", param="subsets")
    if release is not None:
        splits = make_splits(ids, val_patients=val_patients, seed=seed, release_subsets=release, test_ids=test_ids)
        splits = _narrow(splits, sizes, repetitions, release)
    else:
        splits = make_splits(ids, sizes=sizes or (25, 50, 100, 263), repetitions=repetitions or 5, seed=seed,
                             val_patients=val_patients, test_ids=test_ids)
    repetitions = int(splits["subset_rule"]["repetitions"])
    splits_path = save_splits(splits, out / "splits.json")
    common = dict(size=patch_size, per_class=per_class, workers=workers, progress=progress)
    for rep in range(repetitions):
        rep_ids = sorted({i for key in splits["subsets"] for i in select_images(splits, key, rep)})
        path = out / TRAIN_PATTERN.format(rep=rep)
        res = write_patches(images, trainval, path, image_ids=rep_ids, split="train", repetition=rep,
                            seed=crop_seed(seed, rep), **common)
        _check(res, path)
    res = write_patches(images, trainval, out / "val.h5", splits=splits, split="val", seed=seed, **common)
    _check(res, out / "val.h5")
    res = write_patches(images, trainval, out / "val_tiles.h5", splits=splits, split="val", seed=seed, tiles=True,
                        tile_drop="background", size=patch_size, workers=workers, progress=progress)
    _check(res, out / "val_tiles.h5")
    res = write_patches(images, consensus, out / "test_tiles.h5", tiles=True, tile_drop="black",
                        image_ids=test_ids, size=patch_size, seed=seed, workers=workers, progress=progress)
    _check(res, out / "test_tiles.h5")
    return PreparedInputs(str(out / TRAIN_PATTERN), str(out / "val_tiles.h5"), str(out / "test_tiles.h5"), str(test),
                          str(splits_path), str(out / "val.h5"))


def _narrow(splits: dict, sizes: Sequence[int] | None, repetitions: int | None, release) -> dict:
    """Keep the requested sizes / first repetitions of the release's subsets."""
    have = splits["subsets"]
    if sizes:
        missing = [int(n) for n in sizes if str(int(n)) not in have]
        if missing:
            raise SettingsError(f"sizes={missing!r}: {release} has subsets of "
                                f"{', '.join(sorted(have, key=int))} patients only (or use subsets='own')",
                                param=("sizes", "subsets"))
        have = {str(int(n)): have[str(int(n))] for n in sizes}
    def order(key: str):
        return (0, int(key), "") if key.isdigit() else (1, 0, key)

    # repetitions numbered 0.. in the file's order (the release may count from 1); the file's key is kept
    have = {n: {str(i): dict(v, release_repetition=r)
                for i, (r, v) in enumerate(sorted(reps.items(), key=lambda kv: order(kv[0])))
                if not repetitions or i < repetitions}
            for n, reps in have.items()}
    val = set(splits["val"]["patients"])
    for n, reps in have.items():
        for v in reps.values():
            shared = sorted(val & set(v["patients"]))
            if shared:
                raise InputError(f"{release}: subset {n}/{v['release_repetition']} holds validation patient(s) "
                                 f"{', '.join(shared[:5])}; give val_patients= outside the subsets or subsets='own'",
                                 param=("val_patients", "subsets"))
    splits = dict(splits, subsets=have)
    splits["subset_rule"] = dict(splits["subset_rule"], sizes=sorted(int(n) for n in have),
                                 rule="the release's subsets as given (N counts patients; SUL src/datasets.py)",
                                 repetitions=max((len(v) for v in have.values()), default=0))
    return splits


def _check(result, path: Path) -> None:
    if getattr(result, "exit_code", 0) or not path.is_file():
        raise InputError(f"{path}: patch writing failed ({result.summary('wrote') if hasattr(result, 'summary') else result})")
