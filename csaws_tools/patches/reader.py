"""Read a patches file: random access, slicing, label-scheme remap on read, torch Dataset.

>>> with PatchReader("patches.h5", scheme="binary") as r:    # doctest: +SKIP
...     image, mask = r[0]              # uint8 (S, S) each; mask in the scheme's ids
...     images, masks = r[10:20]        # (10, S, S) each
...     r.index.head()                  # one row per patch (pandas)

The same file serves the with- and without-complementary-label settings
(protocol section 5): masks hold the standard ids (background 0, cancer 1,
..., mammary gland 11) and ``scheme`` remaps them through a 12-entry lookup
table on every read. Both layouts (``crops``: stored crops; ``index``: full
images plus centres, crops cut on the fly) return identical arrays.
The file layout is documented in ``docs/patches.md``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DependencyError, InputError
from ..masks.classes import class_names
from .h5format import JSON_ATTRS, attr_value, decode_attrs  # noqa: F401 - JSON_ATTRS, attr_value: former home

#: Chunk cache per dataset when cutting crops from full images (index layout).
CHUNK_CACHE_BYTES = 64 << 20


def _load_scheme(scheme: Any):
    if scheme is None:
        return None
    try:
        from ..masks.labels import parse_scheme
    except ImportError as exc:  # pragma: no cover - labels ships with the package
        raise DependencyError(f"label schemes are unavailable ({exc})") from None
    return parse_scheme(scheme)


class PatchReader:
    """Random access to the patches of one HDF5 file written by ``csaws-prepare patches``.

    ``scheme``: a label-scheme spec or object (:func:`csaws_tools.labels.parse_scheme`);
    ``None`` returns the stored standard ids.
    """

    def __init__(self, path: str | os.PathLike, scheme: Any = None):
        import h5py

        self.path = Path(path)
        try:
            self._h5 = h5py.File(self.path, "r", rdcc_nbytes=CHUNK_CACHE_BYTES)
        except (OSError, ValueError) as exc:
            raise InputError(f"{self.path}: cannot open as HDF5 ({exc})") from None
        raw = dict(self._h5.attrs)
        if not raw.get("complete") or "index" not in self._h5:
            self._h5.close()
            raise InputError(f"{self.path}: not a complete patches file (written by csaws-prepare patches)")
        self.attrs: dict[str, Any] = decode_attrs(raw)
        if self.attrs.get("compression") == "zstd":
            try:
                import hdf5plugin  # noqa: F401 - registers the Zstandard filter
            except ImportError:
                self._h5.close()
                raise DependencyError(
                    f"{self.path} is compressed with Zstandard: pip install 'csaws-tools[zstd]' (hdf5plugin)"
                ) from None
        self.layout: str = self.attrs.get("layout", "crops")
        self.size: int = int(self.attrs["patch_size"])
        grp = self._h5["index"]
        self._top = grp["top"][:].astype(np.int64)
        self._left = grp["left"][:].astype(np.int64)
        self._source = grp["source"][:].astype(np.int64)
        self._index = None
        self.scheme = _load_scheme(scheme)
        self._lut = None if self.scheme is None else np.asarray(self.scheme.lut, dtype=np.uint8)
        if self.layout == "crops":
            self._images = self._h5["images"]
            self._masks = self._h5["masks"]
        else:
            self._full_images = self._h5["full/images"]
            self._full_masks = self._h5["full/masks"]

    # ----------------------------------------------------------------- metadata
    def __len__(self) -> int:
        return int(self._top.size)

    @property
    def num_classes(self) -> int:
        """Classes after the label scheme (12 without one)."""
        return 12 if self.scheme is None else int(self.scheme.num_classes)

    @property
    def class_names(self) -> list[str]:
        """Class names indexed by (scheme) id."""
        return class_names("standard") if self.scheme is None else list(self.scheme.names)

    @property
    def index(self):
        """One row per patch: image_id, patient_id, class_id, center_row, center_col, top, left (pandas)."""
        if self._index is None:
            import pandas as pd

            grp = self._h5["index"]
            cols = {}
            for f in ("image_id", "patient_id"):
                cols[f] = grp[f].asstr()[:] if len(self) else np.empty(0, dtype=object)
            for f in ("class_id", "center_row", "center_col", "top", "left"):
                cols[f] = grp[f][:]
            self._index = pd.DataFrame(cols)
        return self._index

    # ----------------------------------------------------------------- reading
    def _normalise(self, key) -> tuple[np.ndarray, bool]:
        n = len(self)
        if isinstance(key, (int, np.integer)):
            i = int(key)
            if not -n <= i < n:
                raise IndexError(f"patch {i} out of range ({n} patches)")
            return np.array([i % n]), True
        if isinstance(key, slice):
            return np.arange(n)[key], False
        idx = np.asarray(key)
        if idx.size == 0:
            return np.empty(0, dtype=np.int64), False
        if idx.dtype == bool:
            if idx.shape != (n,):
                raise IndexError(f"boolean index of length {idx.size} for {n} patches")
            return np.flatnonzero(idx), False
        if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
            raise IndexError("index with an int, a slice, a sequence of ints or a boolean mask")
        if idx.size and (idx.max() >= n or idx.min() < -n):
            raise IndexError(f"patch index out of range ({n} patches)")
        return idx % n if n else idx, False

    def _read(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Read patches ``idx``; a corrupt chunk is an :class:`InputError` naming the file and the patch."""
        try:
            return self._read_raw(idx)
        except (OSError, RuntimeError, ValueError) as first:
            error: BaseException = first
        for i in idx.tolist():  # find the patch whose chunk fails
            try:
                self._read_raw(np.asarray([i], dtype=idx.dtype))
            except (OSError, RuntimeError, ValueError) as exc:
                error, bad = exc, i
                break
        else:
            bad = int(idx[0])
        raise InputError(f"{self.path}: patch {bad} cannot be read (corrupt data? "
                         f"{' '.join(str(error).split())})") from None

    def _read_raw(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s = self.size
        k = idx.size
        images = np.empty((k, s, s), dtype=np.uint8)
        masks = np.empty((k, s, s), dtype=np.uint8)
        if k == 0:
            return images, masks
        if self.layout == "crops":
            if k == 1 or bool(np.all(np.diff(idx) == 1)):
                lo = int(idx[0])
                self._images.read_direct(images, np.s_[lo : lo + k])
                self._masks.read_direct(masks, np.s_[lo : lo + k])
            else:
                uniq, inverse = np.unique(idx, return_inverse=True)
                imgs = self._images[uniq]
                msks = self._masks[uniq]
                images[:] = imgs[inverse]
                masks[:] = msks[inverse]
        else:
            for j, i in enumerate(idx.tolist()):
                key = f"{int(self._source[i]):06d}"
                self._cut(self._full_images[key], int(self._top[i]), int(self._left[i]), images[j])
                self._cut(self._full_masks[key], int(self._top[i]), int(self._left[i]), masks[j])
        if self._lut is not None:
            masks = self._lut[masks]
        return images, masks

    @staticmethod
    def _cut(ds, top: int, left: int, out: np.ndarray) -> None:
        s = out.shape[0]
        h, w = ds.shape
        r0, r1 = max(top, 0), min(top + s, h)
        c0, c1 = max(left, 0), min(left + s, w)
        if r0 != top or c0 != left or r1 != top + s or c1 != left + s:
            out.fill(0)
        if r1 > r0 and c1 > c0:
            ds.read_direct(out, np.s_[r0:r1, c0:c1], np.s_[r0 - top : r1 - top, c0 - left : c1 - left])

    def __getitem__(self, key) -> tuple[np.ndarray, np.ndarray]:
        """``r[i]`` -> (image, mask) each (S, S); ``r[a:b]``, ``r[[i, j]]`` -> stacked (k, S, S)."""
        idx, single = self._normalise(key)
        images, masks = self._read(idx)
        return (images[0], masks[0]) if single else (images, masks)

    @property
    def image_ids(self) -> list[str]:
        """Every image the file was made from, in file order, including images that got no patch
        (a test image whose tiles were all dropped)."""
        if "sources" in self._h5:
            return [attr_value(v) for v in self._h5["sources"][:]]
        return list(dict.fromkeys(self.index["image_id"].astype(str)))

    def rows_for(self, image_id: str) -> np.ndarray:
        """Patch numbers of one image (for example its tiles, to :func:`stitch` predictions)."""
        return np.flatnonzero(self.index["image_id"].to_numpy() == image_id)

    def image_shape(self, image_id: str) -> tuple[int, int] | None:
        """(rows, columns) of a source image when the file knows it (index layout), else None."""
        if self.layout != "index":
            return None
        rows = self.rows_for(image_id)
        if not rows.size:
            raise KeyError(image_id)
        return tuple(self._full_images[f"{int(self._source[rows[0]]):06d}"].shape)

    # ----------------------------------------------------------------- lifetime
    def close(self) -> None:
        if getattr(self, "_h5", None) is not None:
            try:
                self._h5.close()
            finally:
                self._h5 = None

    def __enter__(self) -> PatchReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PatchReader({str(self.path)!r}, {len(self)} patches of {self.size}x{self.size}, layout={self.layout})"


def stitch(predictions: np.ndarray, rows, image_shape: tuple[int, int], fill: float | int = 0) -> np.ndarray:
    """Reassemble tile predictions into a full image.

    ``predictions``: (n, S, S) or (n, C, S, S), one per tile; ``rows``: the
    tiles' index rows (a DataFrame with ``top`` and ``left``, or a sequence of
    (top, left)); ``image_shape``: (rows, columns) of the image. Padding is
    cut away; pixels no tile covers (dropped background tiles) get ``fill``.
    Returns (H, W) or (C, H, W).
    """
    predictions = np.asarray(predictions)
    if hasattr(rows, "columns"):
        tops, lefts = rows["top"].to_numpy(), rows["left"].to_numpy()
    else:
        pos = np.asarray(rows).reshape(-1, 2)
        tops, lefts = pos[:, 0], pos[:, 1]
    if len(tops) != predictions.shape[0]:
        raise ValueError(f"{predictions.shape[0]} predictions for {len(tops)} tiles")
    h, w = image_shape
    s = predictions.shape[-1]
    lead = predictions.shape[1:-2]
    out = np.full(lead + (h, w), fill, dtype=predictions.dtype)
    for p, top, left in zip(predictions, tops.tolist(), lefts.tolist()):
        r0, r1 = max(top, 0), min(top + s, h)
        c0, c1 = max(left, 0), min(left + s, w)
        if r1 > r0 and c1 > c0:
            out[..., r0:r1, c0:c1] = p[..., r0 - top : r1 - top, c0 - left : c1 - left]
    return out


try:  # the Dataset adapter needs torch (the [train] extra)
    from torch.utils.data import Dataset as _TorchDataset
except ImportError:  # pragma: no cover - torch not installed
    _TorchDataset = object


class TorchPatchDataset(_TorchDataset):
    """A ``torch.utils.data.Dataset`` over a patches file.

    Items: (image float32 tensor (1, S, S) in [0, 1], mask int64 tensor (S, S)).
    The file is opened lazily in each worker process, so it is safe with
    ``DataLoader(num_workers > 0)``. ``indices`` restricts it to some patches.
    """

    def __init__(self, path: str | os.PathLike, scheme: Any = None, indices: Sequence[int] | None = None):
        try:
            import torch  # noqa: F401
        except ImportError:
            raise DependencyError("TorchPatchDataset needs torch: pip install 'csaws-tools[train]'") from None
        self.path = Path(path)
        self.scheme = _load_scheme(scheme)
        with PatchReader(self.path, scheme=self.scheme) as r:
            n = len(r)
            self.num_classes = r.num_classes
            self.class_names = r.class_names
        self.indices = np.arange(n) if indices is None else np.asarray(indices, dtype=np.int64)
        if self.indices.size and (self.indices.max() >= n or self.indices.min() < 0):
            raise IndexError(f"indices out of range for {n} patches")
        self._reader: PatchReader | None = None
        self._pid: int | None = None

    def _open(self) -> PatchReader:
        if self._reader is None or self._pid != os.getpid():
            self._reader = PatchReader(self.path, scheme=self.scheme)
            self._pid = os.getpid()
        return self._reader

    def __len__(self) -> int:
        return int(self.indices.size)

    def __getitem__(self, i: int):
        import torch

        image, mask = self._open()[int(self.indices[i])]
        x = torch.from_numpy(image).to(torch.float32).div_(255.0).unsqueeze_(0)
        y = torch.from_numpy(mask.astype(np.int64))
        return x, y

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_reader"] = None  # h5py handles do not cross processes
        state["_pid"] = None
        return state


__all__ = [
    "CHUNK_CACHE_BYTES",
    "PatchReader",
    "stitch",
    "TorchPatchDataset",
]
