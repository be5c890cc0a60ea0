"""Datasets of the paper's public studies and a user's own data (paper section 5, protocol section 6).

>>> from csaws_tools.train.datasets import get_adapter, prepare_dataset   # doctest: +SKIP
>>> adapter = get_adapter("cityscapes", "/data/cityscapes")               # doctest: +SKIP
>>> prepare_dataset(adapter, "INPUTS", target="person", val_size=500)   # doctest: +SKIP

* :mod:`.base` - the adapter interface (:class:`DatasetAdapter`, :class:`Item`)
* :mod:`.cityscapes`, :mod:`.voc`, :mod:`.csaws`, :mod:`.folders` - one adapter per layout
* :mod:`.schemes` - binary / leave-one-out / random k / merge lookup tables for any class list
* :mod:`.prepare` - the paper's splits, N-image subsets and resized images in HDF5
* :mod:`.store` - the HDF5 layout, its writer and :class:`ImageSetReader`

None of these modules imports torch.
"""

from __future__ import annotations

import os

from ...errors import SettingsError
from .base import DatasetAdapter, Item, Problem
from .cityscapes import CITYSCAPES_CLASSES, CityscapesAdapter
from .csaws import CsawsAdapter
from .folders import FoldersAdapter
from .prepare import PreparedDataset, paper_split, prepare_dataset, training_order
from .schemes import DatasetScheme, build_scheme, parse_target, scheme_for
from .store import ImageSetReader, combine_coarse, resize_image, resize_labels
from .voc import VOC_CLASSES, VOCAdapter, voc_palette

#: name -> adapter class
ADAPTERS: dict[str, type[DatasetAdapter]] = {
    "cityscapes": CityscapesAdapter,
    "voc": VOCAdapter,
    "csaws": CsawsAdapter,
    "folders": FoldersAdapter,
}


def get_adapter(name: str, root: str | os.PathLike, **options) -> DatasetAdapter:
    """The adapter ``name`` over ``root`` (options: ``images`` for csaws; ``images``, ``labels``,
    ``channels`` for folders)."""
    cls = ADAPTERS.get(str(name).lower())
    if cls is None:
        raise SettingsError(f"unknown dataset {name!r}; expected one of {', '.join(ADAPTERS)}")
    options = {k: v for k, v in options.items() if v is not None}
    return cls(root, **options)


__all__ = [
    "ADAPTERS",
    "CITYSCAPES_CLASSES",
    "VOC_CLASSES",
    "CityscapesAdapter",
    "CsawsAdapter",
    "DatasetAdapter",
    "DatasetScheme",
    "FoldersAdapter",
    "ImageSetReader",
    "Item",
    "PreparedDataset",
    "Problem",
    "VOCAdapter",
    "build_scheme",
    "combine_coarse",
    "get_adapter",
    "paper_split",
    "parse_target",
    "prepare_dataset",
    "resize_image",
    "resize_labels",
    "scheme_for",
    "training_order",
    "voc_palette",
]
