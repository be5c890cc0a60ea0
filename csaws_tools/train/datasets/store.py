"""Full images resized to S x S in one HDF5 file, and its reader (paper section 5.2).

Layout (``format = "csaws-images/1"``), the conventions of a patches file
(``docs/patches.md``) with colour and one crop per image::

    images         (N, S, S, C) uint8, one chunk per image (C = 3 colour, 1 grey)
    masks          (N, S, S)    uint8, the dataset's own class ids; void stays void
    coarse_masks   (N, S, S)    uint8, Cityscapes gtCoarse ids (only when prepared with coarse labels)
    index/         image_id, patient_id (the group: city, patient, ...), class_id (-1: whole image),
                   center_row, center_col, top, left (0: the crop is the whole image), source,
                   orig_rows, orig_cols (size before resizing)
    sources        image ids in file order
    attrs          format, kind="images", layout="crops", patch_size=S, channels, dataset, split,
                   classes / labels (JSON), background, void (-1: none), target, resample_image,
                   resample_label, pixel_share and class_images (JSON), settings, settings_hash,
                   n_images, n_failed, complete

:class:`csaws_tools.reader.PatchReader` reads one-channel (S, S) crops only;
:class:`ImageSetReader` is its counterpart for these files (same indexing,
``index`` table, ``image_ids`` and ``rows_for``; images come back
(k, S, S, C), masks (k, S, S) remapped by a scheme on every read).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import InputError, SettingsError
from ...reader import attr_value

FORMAT = "csaws-images/1"
RESAMPLES = ("bilinear", "nearest")
INDEX_FIELDS = ("image_id", "patient_id", "class_id", "center_row", "center_col", "top", "left", "source",
                "orig_rows", "orig_cols")
JSON_ATTRS = ("classes", "labels", "settings", "pixel_share", "class_images", "info")


def resize_image(image: np.ndarray, size: int, resample: str = "bilinear") -> np.ndarray:
    """(H, W, C) uint8 -> (size, size, C): bilinear (Pillow, antialiased when shrinking) or nearest."""
    from PIL import Image

    if resample not in RESAMPLES:
        raise SettingsError(f"unknown resampling {resample!r}; expected {' or '.join(RESAMPLES)}")
    mode = Image.Resampling.BILINEAR if resample == "bilinear" else Image.Resampling.NEAREST
    chans = [np.asarray(Image.fromarray(np.ascontiguousarray(image[:, :, c])).resize((size, size), mode))
             for c in range(image.shape[2])]
    return np.stack(chans, axis=-1)


def resize_labels(labels: np.ndarray, size: int) -> np.ndarray:
    """(H, W) uint8 class ids -> (size, size) by nearest neighbour (pixel centres): only ids already present."""
    h, w = labels.shape
    rows = np.minimum(((np.arange(size) + 0.5) * h / size).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(size) + 0.5) * w / size).astype(np.int64), w - 1)
    return np.ascontiguousarray(labels[rows[:, None], cols[None, :]])


def combine_coarse(fine: np.ndarray, coarse: np.ndarray, target_ids, background: int = 0,
                   mode: str = "fine-target") -> np.ndarray:
    """Coarse complementary labels with the fine target (paper section 5.3, label quality).

    ``fine-target``: the target is exactly the fine target (coarse target pixels
    outside it become background); ``overlay``: fine target pixels painted over
    the coarse map, coarse target pixels kept (what the authors' code does).
    """
    t = np.asarray(sorted(target_ids), dtype=np.uint8)
    fine_t = np.isin(fine, t)
    out = np.array(coarse, copy=True)
    if mode == "fine-target":
        out[np.isin(coarse, t) & ~fine_t] = background
    elif mode != "overlay":
        raise SettingsError(f"unknown coarse mode {mode!r}; expected fine-target or overlay")
    out[fine_t] = fine[fine_t]
    return out


def read_attrs(path: str | os.PathLike) -> dict | None:
    """Root attributes of a complete images file, or None (missing, partial, other format)."""
    import h5py

    try:
        with h5py.File(path, "r") as h5:
            attrs = {k: attr_value(v) for k, v in h5.attrs.items()}
    except (OSError, ValueError):
        return None
    return attrs if attrs.get("complete") and attrs.get("format") == FORMAT else None


class ImageSetWriter:
    """Preallocated datasets; each image is written at its own row; failed rows are removed on close."""

    def __init__(self, path: Path, n: int, size: int, channels: int, coarse: bool, level: int = 1):
        import h5py

        self.h5 = h5py.File(path, "w", libver=("v110", "latest"))
        self.n, self.size = n, size
        filt = {"compression": "gzip", "compression_opts": level}
        s = size
        self.h5.create_dataset("images", shape=(n, s, s, channels), maxshape=(None, s, s, channels), dtype="u1",
                               chunks=(1, s, s, channels), **filt)
        names = ["masks"] + (["coarse_masks"] if coarse else [])
        for name in names:
            self.h5.create_dataset(name, shape=(n, s, s), maxshape=(None, s, s), dtype="u1", chunks=(1, s, s), **filt)
        self.names = ["images"] + names
        self.ok = np.zeros(n, dtype=bool)
        self.meta: dict[int, tuple[str, str, int, int]] = {}

    def put(self, row: int, key: str, group: str, image: np.ndarray, masks: dict[str, np.ndarray],
            orig: tuple[int, int]) -> None:
        self.h5["images"][row] = image
        for name, m in masks.items():
            self.h5[name][row] = m
        self.ok[row] = True
        self.meta[row] = (key, group, int(orig[0]), int(orig[1]))

    def close(self, attrs: dict) -> int:
        """Compact away failed rows, write the index and attributes; return the number of images."""
        import h5py

        rows = np.flatnonzero(self.ok)
        if rows.size < self.n:  # move the good rows down, one image at a time
            for new, old in enumerate(rows.tolist()):
                if new != old:
                    for name in self.names:
                        self.h5[name][new] = self.h5[name][old]
            for name in self.names:
                self.h5[name].resize(rows.size, axis=0)
        k = int(rows.size)
        s = self.size
        str_t = h5py.string_dtype("utf-8")
        keys = [self.meta[r][0] for r in rows.tolist()]
        cols = {
            "image_id": np.asarray(keys, dtype=object),
            "patient_id": np.asarray([self.meta[r][1] for r in rows.tolist()], dtype=object),
            "class_id": np.full(k, -1, np.int8), "center_row": np.full(k, s // 2, np.int32),
            "center_col": np.full(k, s // 2, np.int32), "top": np.zeros(k, np.int32), "left": np.zeros(k, np.int32),
            "source": np.arange(k, dtype=np.int32),
            "orig_rows": np.asarray([self.meta[r][2] for r in rows.tolist()], dtype=np.int32),
            "orig_cols": np.asarray([self.meta[r][3] for r in rows.tolist()], dtype=np.int32),
        }
        grp = self.h5.create_group("index")
        for f in INDEX_FIELDS:
            data = cols[f]
            grp.create_dataset(f, data=data, dtype=str_t if data.dtype == object else data.dtype)
        self.h5.create_dataset("sources", data=np.asarray(keys, dtype=object), dtype=str_t)
        for key, value in dict(attrs, n_images=k).items():
            self.h5.attrs[key] = value
        self.h5.attrs["complete"] = True
        self.h5.close()
        return k

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self.h5.close()


class ImageSetReader:
    """Random access to an images file written by :func:`~csaws_tools.train.datasets.prepare_dataset`.

    ``scheme``: a :class:`~csaws_tools.train.datasets.schemes.DatasetScheme`,
    or a spec string built for the file's class table (with ``target``,
    default the file's target). ``labels="coarse"``: Cityscapes coarse
    complementary labels with the fine target (:func:`combine_coarse`).
    """

    def __init__(self, path: str | os.PathLike, scheme: Any = None, *, target: str | None = None,
                 labels: str = "fine", coarse_mode: str = "fine-target"):
        import h5py

        self.path = Path(path)
        try:
            self._h5 = h5py.File(self.path, "r")
        except (OSError, ValueError) as exc:
            raise InputError(f"{self.path}: cannot open as HDF5 ({exc})") from None
        attrs = {k: attr_value(v) for k, v in self._h5.attrs.items()}
        if not attrs.get("complete") or attrs.get("format") != FORMAT:
            self._h5.close()
            raise InputError(f"{self.path}: not a complete images file (format {FORMAT}, written by prepare-dataset)")
        for k in JSON_ATTRS:
            if isinstance(attrs.get(k), str):
                attrs[k] = json.loads(attrs[k])
        if attrs.get("void") == -1:
            attrs["void"] = None
        self.attrs = attrs
        self.size = int(attrs["patch_size"])
        self.channels = int(attrs["channels"])
        if labels not in ("fine", "coarse"):
            raise SettingsError(f"labels must be fine or coarse, not {labels!r}")
        if labels == "coarse" and "coarse_masks" not in self._h5:
            self._h5.close()
            raise InputError(f"{self.path}: holds no coarse label maps (prepare with coarse=True, training split)",
                             param="coarse")
        self.labels = labels
        self.coarse_mode = coarse_mode
        self.info = {"classes": attrs["classes"], "background": attrs["background"], "void": attrs["void"],
                     "target": target or attrs.get("target"), "target_default": attrs.get("target")}
        from .schemes import parse_target, scheme_for

        self.target = self.info["target"]
        self._target_ids = parse_target(self.target, attrs["classes"])[1]
        if isinstance(scheme, str):
            scheme = scheme_for(self.info, scheme)
        self.scheme = scheme
        self._lut = None if scheme is None else np.asarray(scheme.lut, dtype=np.uint8)
        self._index = None

    def __len__(self) -> int:
        return int(self._h5["images"].shape[0])

    @property
    def num_classes(self) -> int:
        """Classes after the scheme (the dataset's class count without one)."""
        return len(self.attrs["classes"]) if self.scheme is None else self.scheme.num_classes

    @property
    def class_names(self) -> list[str]:
        return list(self.attrs["classes"]) if self.scheme is None else list(self.scheme.names)

    @property
    def ignore_index(self) -> int | None:
        """The id loss and IoU must ignore (void), or None."""
        return self.attrs["void"] if self.scheme is None else self.scheme.void_out

    @property
    def index(self):
        """One row per image: image_id, patient_id (group), ..., orig_rows, orig_cols (pandas)."""
        if self._index is None:
            import pandas as pd

            grp = self._h5["index"]
            cols = {f: (grp[f].asstr()[:] if f in ("image_id", "patient_id") else grp[f][:]) for f in INDEX_FIELDS}
            self._index = pd.DataFrame(cols)
        return self._index

    @property
    def image_ids(self) -> list[str]:
        return [attr_value(v) for v in self._h5["sources"][:]]

    def rows_for(self, image_ids) -> np.ndarray:
        """Row numbers of the given image ids, in the order given; unknown ids are an error."""
        pos = {k: i for i, k in enumerate(self.image_ids)}
        missing = [k for k in image_ids if k not in pos]
        if missing:
            raise InputError(f"{self.path}: {len(missing)} image(s) not in this file, e.g. {missing[0]}")
        return np.asarray([pos[k] for k in image_ids], dtype=np.int64)

    def __getitem__(self, key) -> tuple[np.ndarray, np.ndarray]:
        """``r[i]`` -> (image (S, S, C), mask (S, S)); slices and int sequences -> stacked."""
        n = len(self)
        single = isinstance(key, (int, np.integer))
        if single:
            if not -n <= int(key) < n:
                raise IndexError(f"image {key} out of range ({n} images)")
            idx = np.array([int(key) % n])
        elif isinstance(key, slice):
            idx = np.arange(n)[key]
        else:
            idx = np.asarray(key, dtype=np.int64).reshape(-1)
            if idx.size and (idx.max() >= n or idx.min() < -n):
                raise IndexError(f"image index out of range ({n} images)")
            idx = idx % n if n else idx
        uniq, inverse = np.unique(idx, return_inverse=True)
        images = self._h5["images"][uniq] if uniq.size else np.empty((0, self.size, self.size, self.channels), np.uint8)
        masks = self._h5["masks"][uniq] if uniq.size else np.empty((0, self.size, self.size), np.uint8)
        if self.labels == "coarse" and uniq.size:
            masks = combine_coarse(masks, self._h5["coarse_masks"][uniq], self._target_ids,
                                   int(self.attrs["background"]), self.coarse_mode)
        images, masks = images[inverse], masks[inverse]
        if self._lut is not None:
            masks = np.take(self._lut, masks)
        return (images[0], masks[0]) if single else (images, masks)

    def close(self) -> None:
        if getattr(self, "_h5", None) is not None:
            self._h5.close()
            self._h5 = None

    def __enter__(self) -> ImageSetReader:  # noqa: PYI034
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"ImageSetReader({str(self.path)!r}, {len(self)} images of {self.size}x{self.size}x{self.channels}, "
                f"dataset={self.attrs.get('dataset')}, split={self.attrs.get('split')})")
