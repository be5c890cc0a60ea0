"""The single HDF5 writer of the patches stage: payloads appended in image-id order, then index and attributes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .h5format import INDEX_FIELDS, chunk_shape, encode_attrs, filter_kwargs
from .sampling import cut
from .worker import PatchConfig, Payload

#: Results waiting to be written in image-id order are flushed out of order beyond this many bytes.
REORDER_BUFFER_BYTES = 2 << 30

class PatchWriter:
    """The single HDF5 writer: appends payloads in image order, then the index and attributes."""

    def __init__(self, path: Path, config: PatchConfig, max_buffer_bytes: int = REORDER_BUFFER_BYTES):
        import h5py

        self.config = config
        self.filters = filter_kwargs(config.compression, config.level)
        self.h5 = h5py.File(path, "w", libver=("v110", "latest"))
        s = config.size
        if config.layout == "crops":
            for name in ("images", "masks"):
                self.h5.create_dataset(name, shape=(0, s, s), maxshape=(None, s, s), dtype="u1",
                                       chunks=(1, s, s), **self.filters)
        else:
            self.h5.create_group("full/images")
            self.h5.create_group("full/masks")
        self.index: dict[str, list[np.ndarray]] = {f: [] for f in INDEX_FIELDS}
        self.n = 0
        self.sources: list[str] = []
        self.next_order = 0
        self.pending: dict[int, Payload | None] = {}
        self.pending_bytes = 0
        self.max_buffer_bytes = max_buffer_bytes
        self.in_order = True

    # Results arrive in completion order; they are written in task (image id) order.
    def add(self, payload: Payload) -> None:
        """Queue one payload (or a failure) and write everything that is now in order."""
        self.pending[payload.order] = None if payload.failure else payload
        self.pending_bytes += payload.nbytes
        self._drain()
        while self.pending_bytes > self.max_buffer_bytes and self.pending:
            self.in_order = False
            self._write_order(min(self.pending))

    def _drain(self) -> None:
        while self.next_order in self.pending:
            self._write_order(self.next_order)

    def _write_order(self, order: int) -> None:
        payload = self.pending.pop(order)
        self.next_order = max(self.next_order, order + 1)
        if payload is not None:
            self.pending_bytes -= payload.nbytes
            self._write(payload)

    def _write(self, p: Payload) -> None:
        from ..splits import patient_of

        s = self.config.size
        k = p.index["top"].size
        source = len(self.sources)
        if self.config.layout == "crops":
            imgs, msks = self.h5["images"], self.h5["masks"]
            imgs.resize(self.n + k, axis=0)
            msks.resize(self.n + k, axis=0)
            if p.image_chunks is not None and p.mask_chunks is not None:  # set together by the worker
                for j in range(k):
                    imgs.id.write_direct_chunk((self.n + j, 0, 0), p.image_chunks[j])
                    msks.id.write_direct_chunk((self.n + j, 0, 0), p.mask_chunks[j])
            else:
                assert p.image is not None and p.mask is not None  # sent whole when not pre-encoded
                ib = np.empty((s, s), np.uint8)
                mb = np.empty((s, s), np.uint8)
                for j, (top, left) in enumerate(zip(p.index["top"].tolist(), p.index["left"].tolist())):
                    imgs[self.n + j] = cut(p.image, top, left, s, ib)
                    msks[self.n + j] = cut(p.mask, top, left, s, mb)
        else:
            key = f"{source:06d}"
            cs = chunk_shape(p.shape, s)
            for group, chunks, arr in (("full/images", p.image_chunks, p.image),
                                       ("full/masks", p.mask_chunks, p.mask)):
                ds = self.h5[group].create_dataset(key, shape=p.shape, dtype="u1", chunks=cs, **self.filters)
                ds.attrs["image_id"] = p.image_id
                if chunks is not None:
                    offsets = [(r, c) for r in range(0, p.shape[0], cs[0]) for c in range(0, p.shape[1], cs[1])]
                    for off, data in zip(offsets, chunks):
                        ds.id.write_direct_chunk(off, data)
                else:
                    ds[...] = arr
        self.index["image_id"].append(np.full(k, p.image_id, dtype=object))
        self.index["patient_id"].append(np.full(k, patient_of(p.image_id), dtype=object))
        for f in ("class_id", "center_row", "center_col", "top", "left"):
            self.index[f].append(p.index[f])
        self.index["source"].append(np.full(k, source, dtype=np.int32))
        self.sources.append(p.image_id)
        self.n += k

    def close(self, attrs: dict) -> None:
        """Write what is still queued, the index datasets and the root attributes; close the file."""
        import h5py

        for order in sorted(self.pending):
            self._write_order(order)
        str_t = h5py.string_dtype("utf-8")
        dtypes = {"image_id": str_t, "patient_id": str_t, "class_id": np.int8, "center_row": np.int32,
                  "center_col": np.int32, "top": np.int32, "left": np.int32, "source": np.int32}
        grp = self.h5.create_group("index")
        for f in INDEX_FIELDS:
            parts = self.index[f]
            data = np.concatenate(parts) if parts else np.empty(0, dtype=object if dtypes[f] is str_t else dtypes[f])
            if dtypes[f] is str_t:
                data = data.astype(object)
            grp.create_dataset(f, data=data, dtype=dtypes[f], compression="gzip" if data.size else None)
        self.h5.create_dataset("sources", data=np.asarray(self.sources, dtype=object), dtype=str_t)
        attrs = encode_attrs(dict(attrs, n_patches=self.n, n_images=len(self.sources),
                                  image_order="sorted" if self.in_order else "arrival"))
        for key, value in attrs.items():
            self.h5.attrs[key] = value
        self.h5.attrs["complete"] = True
        self.h5.close()

    def abort(self) -> None:
        try:
            self.h5.close()
        except Exception:  # noqa: BLE001
            pass


__all__ = [
    "PatchWriter",
    "REORDER_BUFFER_BYTES",
]
