"""Prepare the experiment's inputs from label maps and images (protocol sections 4-5).

From ``MAPS`` (written by ``csaws-prepare merge-masks``: ``trainval/<id>.png``,
``test/annotator_<k>/<id>.png``, ``test/consensus/<id>.png``) and the image
folder, write into ``OUT``::

    splits.json      patient-level validation split and the N-image subsets
    train.h5         class-centred crops of the training images (all 12 classes)
    val.h5           class-centred crops of the validation images
    test_tiles.h5    non-overlapping tiles of the test images (all-black tiles dropped)

and return the paths. The test label maps stay where they are (``MAPS/test``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError


@dataclass(frozen=True)
class PreparedInputs:
    """Paths of the prepared experiment inputs."""

    train_file: str
    val_file: str
    test_tiles: str
    test_maps: str
    splits: str


def prepare_inputs(images: str | os.PathLike, maps: str | os.PathLike, out: str | os.PathLike, *,
                   patch_size: int = 512, per_class: int = 10, sizes: Sequence[int] = (25, 50, 100, 263),
                   repetitions: int = 5, seed: int = 0, val_patients: Sequence[str] | None = None,
                   workers: int | None = None, progress: bool = True) -> PreparedInputs:
    """Write splits, training/validation crops and test tiles; skip files already up to date."""
    from ..patches import write_patches
    from ..splits import make_splits, save_splits

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
    splits = make_splits(ids, sizes=sizes, repetitions=repetitions, seed=seed, val_patients=val_patients,
                         test_ids=test_ids)
    splits_path = save_splits(splits, out / "splits.json")
    common = dict(size=patch_size, per_class=per_class, seed=seed, workers=workers, progress=progress)
    for name, split in (("train.h5", "train"), ("val.h5", "val")):
        res = write_patches(images, trainval, out / name, splits=splits, split=split, **common)
        _check(res, out / name)
    res = write_patches(images, consensus, out / "test_tiles.h5", tiles=True, tile_drop="black",
                        image_ids=test_ids, size=patch_size, seed=seed, workers=workers, progress=progress)
    _check(res, out / "test_tiles.h5")
    return PreparedInputs(str(out / "train.h5"), str(out / "val.h5"), str(out / "test_tiles.h5"), str(test),
                          str(splits_path))


def _check(result, path: Path) -> None:
    if getattr(result, "exit_code", 0) or not path.is_file():
        raise InputError(f"{path}: patch writing failed ({result.summary('wrote') if hasattr(result, 'summary') else result})")
