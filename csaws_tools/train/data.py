"""Training batches from a patches HDF5 file, read ahead in a background thread.

Layout (written by :func:`csaws_tools.patches.write_patches`): datasets
``images`` and ``masks`` (N, S, S) uint8, 1-D datasets under ``index/``
(``image_id``, ``patient_id``, ``class_id``, ``top``, ``left`` ...), label
maps in the standard numbering. A label scheme's lookup table remaps masks
on the fly, so the "with" and "without" settings read the very same crops.

Images files of ``csaws-train prepare --dataset`` (``format = "csaws-images/1"``,
:class:`~csaws_tools.train.datasets.store.ImageSetReader`) are read the same
way; their colour images come out channels first, (B, C, S, S).

The batch order is a pure function of (seed, iteration): an interrupted run
that resumes at iteration k sees exactly the batches it would have seen.
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..errors import InputError
from ..reader import PatchReader

_HASHES: dict[tuple, str] = {}


def file_hash(path: str | os.PathLike) -> str:
    """SHA-256 of a file's content (cached per path, size and modification time in this process)."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        h = hashlib.sha256()
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
        _HASHES[key] = h.hexdigest()
    return _HASHES[key]


def known_hashes() -> dict[tuple, str]:
    """The hashes :func:`file_hash` has computed in this process, to hand to a process it starts."""
    return dict(_HASHES)


def add_known_hashes(known: dict[tuple, str]) -> None:
    """Take hashes another process computed (keyed by path, size and modification time, so a
    file changed since is hashed again) instead of reading those files once more."""
    _HASHES.update(known)


def is_image_set(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an images file of ``csaws-train prepare --dataset`` (format ``csaws-images/1``)."""
    import h5py

    from ..reader import attr_value
    from .datasets.store import FORMAT

    try:
        with h5py.File(path, "r") as h5:
            return attr_value(h5.attrs.get("format", "")) == FORMAT
    except (OSError, ValueError):
        return False


def open_patches(path: str | os.PathLike, scheme: Any = None, **options: Any) -> Any:
    """A :class:`csaws_tools.reader.PatchReader` (crops or index layout, any compression), or an
    :class:`~csaws_tools.train.datasets.store.ImageSetReader` for a public-dataset images file
    (``options``: its ``target``, ``labels``, ``coarse_mode``)."""
    if not Path(path).is_file():
        raise InputError(f"{path}: patches file not found")
    if is_image_set(path):
        from .datasets.store import ImageSetReader

        return ImageSetReader(path, scheme, **options)
    return PatchReader(path, scheme=scheme)


def channels_first(images: np.ndarray) -> np.ndarray:
    """Colour images (k, S, S, C) -> (k, C, S, S); grey crops (k, S, S) are returned as they are."""
    if images.ndim == 4:
        return np.ascontiguousarray(images.transpose(0, 3, 1, 2))
    return images


def read_index(path: str | os.PathLike) -> pd.DataFrame:
    """The ``index/`` table of a patches file (image_id, patient_id, class_id, top, left, ...)."""
    with open_patches(path) as r:
        return r.index.copy()


def select_rows(index: pd.DataFrame, ids: Sequence[str] | None, path: str = "") -> np.ndarray:
    """Row numbers whose image id (or, failing that, patient id) is in ``ids``; all rows for None."""
    if ids is None:
        return np.arange(len(index))
    wanted = {str(i) for i in ids}
    rows = np.flatnonzero(index["image_id"].isin(wanted).to_numpy())
    if rows.size == 0 and "patient_id" in index:
        rows = np.flatnonzero(index["patient_id"].astype(str).isin(wanted).to_numpy())
    if rows.size == 0:
        raise InputError(f"{path}: none of the {len(wanted)} selected images has crops in this file")
    return rows


class CropSource:
    """Random batches of crops (uint8 images, scheme-remapped uint8 masks) from a patches file.

    ``cache_mb``: when the selected crops fit, they are read into memory once
    and batches are gathered from RAM; otherwise each batch is one sorted
    multi-row read through the reader.
    """

    def __init__(self, path: str | os.PathLike, rows: np.ndarray, lut: np.ndarray, *, seed: int,
                 batch_size: int, cache_mb: float = 4096, reader_options: dict | None = None) -> None:
        self.path = str(path)
        self.rows = np.sort(np.asarray(rows, dtype=np.int64))
        self.lut = np.asarray(lut, dtype=np.uint8)
        self.seed = int(seed)
        self.batch_size = int(batch_size)
        self._reader: Any = None
        self._cache = None
        self.options = dict(reader_options or {})
        if self.rows.size < self.batch_size:
            raise InputError(f"{self.path}: {self.rows.size} crops selected, fewer than one batch of "
                             f"{self.batch_size}")
        with open_patches(self.path, **self.options) as r:
            self.size = int(r.size)
            channels = int(getattr(r, "channels", 1))
            if (channels + 1) * self.rows.size * self.size**2 <= cache_mb * 2**20:
                self._cache = r[self.rows]  # a damaged chunk: InputError naming file and patch (PatchReader)

    def batch_positions(self, iteration: int) -> np.ndarray:
        """Positions (into ``rows``) of the batch at ``iteration``: epochs of seeded permutations."""
        n, b = self.rows.size, self.batch_size
        per_epoch = n // b  # the last incomplete batch of each epoch is dropped
        epoch, k = divmod(int(iteration), per_epoch)
        perm = np.random.default_rng([self.seed, epoch]).permutation(n)
        return perm[k * b:(k + 1) * b]

    def batch(self, iteration: int) -> tuple[np.ndarray, np.ndarray]:
        """uint8 images (B, S, S) (colour: (B, C, S, S)) and remapped uint8 masks (B, S, S)."""
        pos = np.sort(self.batch_positions(iteration))
        if self._cache is not None:
            img, msk = self._cache[0][pos], self._cache[1][pos]
        else:
            if self._reader is None:
                self._reader = open_patches(self.path, **self.options)
            img, msk = self._reader[self.rows[pos]]
        return channels_first(img), self.lut[msk]

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None


class Prefetcher:
    """Read batches ``start .. stop-1`` ahead in a thread; yield pinned CPU tensors.

    The consumer copies them to the device with ``non_blocking=True``.
    """

    def __init__(self, source: CropSource, start: int, stop: int, *, depth: int = 3, pin: bool = False) -> None:
        self.source, self.start, self.stop, self.pin = source, start, stop, pin
        self._q: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, daemon=True, name="csaws-prefetch")
        self._thread.start()

    def _work(self) -> None:
        try:
            for it in range(self.start, self.stop):
                if self._stop.is_set():
                    return
                img, msk = self.source.batch(it)
                ti, tm = torch.from_numpy(img), torch.from_numpy(msk)
                if self.pin:
                    ti, tm = ti.pin_memory(), tm.pin_memory()
                while not self._stop.is_set():
                    try:
                        self._q.put((it, ti, tm), timeout=0.1)
                        break
                    except queue.Full:
                        continue
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            self._q.put(exc)
        finally:
            self._q.put(None)

    def __iter__(self) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        while True:
            item = self._q.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self._stop.set()
        while True:  # drain so the worker can finish
            try:
                self._q.get_nowait()
            except queue.Empty:
                break
        self._thread.join(timeout=5)


def iter_crops(path: str | os.PathLike, lut: np.ndarray | None, batch_size: int,
               rows: np.ndarray | None = None) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Sequential (rows, images, masks) chunks of a patches or images file (masks remapped by ``lut``;
    colour images channels first)."""
    with open_patches(path) as r:
        rows = np.arange(len(r)) if rows is None else np.sort(np.asarray(rows, dtype=np.int64))
        for i in range(0, rows.size, batch_size):
            sel = rows[i:i + batch_size]
            img, msk = r[sel]
            yield sel, channels_first(img), (msk if lut is None else np.asarray(lut, np.uint8)[msk])
