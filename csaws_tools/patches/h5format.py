"""The patches HDF5 file format (``csaws-patches/1``, docs/patches.md): names, chunking, filters, root attributes."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from .. import defaults
from ..errors import DependencyError, InputError

FORMAT = "csaws-patches/1"
LAYOUTS = defaults.LAYOUTS
COMPRESSIONS = defaults.COMPRESSIONS
#: Default levels: gzip 1 writes twice as fast as gzip 4 for a few percent more bytes
#: (benchmarks/bench_patches.py); zstd 3 is the Zstandard default.
DEFAULT_LEVELS = {"gzip": 1, "zstd": 3}
INDEX_FIELDS = ("image_id", "patient_id", "class_id", "center_row", "center_col", "top", "left", "source")
def chunk_shape(shape: tuple[int, int], size: int) -> tuple[int, int]:
    """The chunk shape of a full image in the index layout: crop-sized, at most the image."""
    return (min(size, shape[0]), min(size, shape[1]))


# --------------------------------------------------------------------------- writer


def filter_kwargs(compression: str, level: int | None) -> dict:
    if compression == "gzip":
        return {"compression": "gzip", "compression_opts": level}
    if compression == "lzf":
        return {"compression": "lzf"}
    if compression == "zstd":
        try:
            import hdf5plugin
        except ImportError:
            raise DependencyError("compression='zstd' needs hdf5plugin: pip install 'csaws-tools[zstd]'",
                                  param="compression") from None
        return dict(hdf5plugin.Zstd(clevel=3 if level is None else level))
    if compression == "none":
        return {}
    raise InputError(f"unknown compression {compression!r}; expected one of {', '.join(COMPRESSIONS)}")


def read_file_attrs(path: str | os.PathLike) -> dict | None:
    """Root attributes of a complete patches file, or None when missing, partial or unreadable."""
    import h5py

    try:
        with h5py.File(path, "r") as h5:
            attrs = dict(h5.attrs)
    except (OSError, ValueError):
        return None
    return attrs if attrs.get("complete") and attrs.get("format") == FORMAT else None


#: Root attributes stored as JSON text and decoded by :attr:`PatchReader.attrs`.
JSON_ATTRS = ("labels", "classes", "settings", "crops_per_class", "pixel_share")


def attr_value(value: Any) -> Any:
    """An HDF5 attribute or dataset value as plain Python (bytes decoded as UTF-8, numpy to lists/scalars)."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


#: Optional root attributes and what stands for "none" in the file (HDF5 attributes cannot be None).
NONE_SENTINELS: dict[str, Any] = {"split": "", "repetition": -1, "seed": -1, "per_class": -1}


def encode_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    """Root attributes as stored: None as its sentinel, the :data:`JSON_ATTRS` as JSON text (settings key-sorted)."""
    out: dict[str, Any] = {}
    for key, value in attrs.items():
        if value is None and key in NONE_SENTINELS:
            value = NONE_SENTINELS[key]
        elif key in JSON_ATTRS and not isinstance(value, str):
            value = json.dumps(value, sort_keys=key == "settings")
        out[key] = value
    return out


def decode_attrs(raw: dict[str, Any]) -> dict[str, Any]:
    """Root attributes as read back: plain Python values, JSON decoded, sentinels back to None."""
    attrs: dict[str, Any] = {}
    for key, value in raw.items():
        value = attr_value(value)
        if key in JSON_ATTRS and isinstance(value, str):
            value = json.loads(value)
        attrs[key] = value
    for key, none in NONE_SENTINELS.items():
        if attrs.get(key) == none:
            attrs[key] = None
    return attrs


__all__ = [
    "attr_value",
    "chunk_shape",
    "COMPRESSIONS",
    "decode_attrs",
    "DEFAULT_LEVELS",
    "encode_attrs",
    "filter_kwargs",
    "FORMAT",
    "INDEX_FIELDS",
    "JSON_ATTRS",
    "LAYOUTS",
    "NONE_SENTINELS",
    "read_file_attrs",
]
