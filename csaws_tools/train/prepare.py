"""Prepare the experiment's inputs from label maps and images (protocol sections 4-5).

From ``MAPS`` (written by ``csaws-prepare merge-masks``: ``trainval/<id>.png``,
``test/annotator_<k>/<id>.png``, ``test/consensus/<id>.png``) and the image
folder, write into ``OUT``::

    splits.json      patient-level validation split and the N-image subsets
    train_rep<r>.h5  class-centred crops of the training images of repetition r
                     (all 12 classes), sampled with that repetition's own seed
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

    def train_file_for(self, repetition: int) -> str:
        """The training crops of one repetition."""
        return self.train_file.format(rep=int(repetition))


def prepare_inputs(images: str | os.PathLike, maps: str | os.PathLike, out: str | os.PathLike, *,
                   patch_size: int = 512, per_class: int = 10, sizes: Sequence[int] = (25, 50, 100, 263),
                   repetitions: int = 5, seed: int = 0, val_patients: Sequence[str] | None = None,
                   workers: int | None = None, progress: bool = True) -> PreparedInputs:
    """Write splits, training/validation crops and test tiles; skip files already up to date.

    Protocol section 4: crops are sampled offline once per repetition, each
    repetition with its own seed (:func:`crop_seed`); a repetition's file holds
    the images of all its subsets (every N), so the N-image runs and both
    settings of that repetition read the very same crops.
    """
    from ..patches import write_patches
    from ..splits import make_splits, save_splits, select_images

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
    common = dict(size=patch_size, per_class=per_class, workers=workers, progress=progress)
    for rep in range(repetitions):
        rep_ids = sorted({i for key in splits["subsets"] for i in select_images(splits, key, rep)})
        path = out / TRAIN_PATTERN.format(rep=rep)
        res = write_patches(images, trainval, path, image_ids=rep_ids, split="train", repetition=rep,
                            seed=crop_seed(seed, rep), **common)
        _check(res, path)
    res = write_patches(images, trainval, out / "val.h5", splits=splits, split="val", seed=seed, **common)
    _check(res, out / "val.h5")
    res = write_patches(images, consensus, out / "test_tiles.h5", tiles=True, tile_drop="black",
                        image_ids=test_ids, size=patch_size, seed=seed, workers=workers, progress=progress)
    _check(res, out / "test_tiles.h5")
    return PreparedInputs(str(out / TRAIN_PATTERN), str(out / "val.h5"), str(out / "test_tiles.h5"), str(test),
                          str(splits_path))


def _check(result, path: Path) -> None:
    if getattr(result, "exit_code", 0) or not path.is_file():
        raise InputError(f"{path}: patch writing failed ({result.summary('wrote') if hasattr(result, 'summary') else result})")
