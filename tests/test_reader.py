"""PatchReader (random access, slicing, scheme remap), stitch, and the torch Dataset adapter."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from csaws_tools.errors import InputError
from csaws_tools.patches import write_patches
from csaws_tools.png import write_png
from csaws_tools.reader import PatchReader, TorchPatchDataset, stitch

S = 48


@pytest.fixture(scope="module", params=["crops", "index"])
def patch_file(request, tmp_path_factory):
    root = tmp_path_factory.mktemp("reader")
    rng = np.random.default_rng(3)
    for image_id, (h, w) in {"010_1": (120, 100), "011_1": (90, 150)}.items():
        image = rng.integers(0, 256, (h, w), dtype=np.uint8)
        mask = rng.integers(0, 12, (h, w), dtype=np.uint8)  # every class present
        write_png(root / "im" / f"{image_id}.png", image)
        write_png(root / "lm" / f"{image_id}.png", mask)
    out = root / "p.h5"
    write_patches(root / "im", root / "lm", out, size=S, per_class=2, layout=request.param, progress=False, workers=1)
    return out


def test_random_access_matches_plain_h5py(patch_file):
    with PatchReader(patch_file) as r:
        assert len(r) == 2 * 12 * 2
        assert list(r.index.columns) == ["image_id", "patient_id", "class_id", "center_row", "center_col", "top", "left"]
        single = [r[i] for i in range(len(r))]
        imgs, msks = r[:]
        assert imgs.shape == msks.shape == (len(r), S, S) and imgs.dtype == np.uint8
        for i, (im, mk) in enumerate(single):
            np.testing.assert_array_equal(im, imgs[i])
            np.testing.assert_array_equal(mk, msks[i])
        np.testing.assert_array_equal(r[-1][0], imgs[-1])
        np.testing.assert_array_equal(r[2:5][1], msks[2:5])
        np.testing.assert_array_equal(r[::7][0], imgs[::7])
        np.testing.assert_array_equal(r[[5, 0, 5]][0], imgs[[5, 0, 5]])  # unsorted, repeated
        np.testing.assert_array_equal(r[np.arange(len(r)) % 3 == 0][1], msks[::3])
        assert r[[]][0].shape == (0, S, S)
        with pytest.raises(IndexError):
            r[len(r)]
        with pytest.raises(IndexError):
            r[[0, len(r)]]
        # Mask at the centre equals the centre's class in both layouts.
        idx = r.index
        for i in range(len(r)):
            assert msks[i][idx.center_row[i] - idx.top[i], idx.center_col[i] - idx.left[i]] == idx.class_id[i]
        assert r.attrs["per_class"] == 2 and r.attrs["split"] is None and r.attrs["repetition"] is None
        assert r.attrs["labels"]["numbering"] == "standard"
        assert r.num_classes == 12 and r.class_names[0] == "background" and r.class_names[1] == "cancer"
        layout = r.layout
    if layout == "crops":  # the public layout, read without this package
        with h5py.File(patch_file, "r") as h5:
            np.testing.assert_array_equal(h5["images"][3], imgs[3])
            assert h5["images"].chunks == (1, S, S)
            assert h5["index/image_id"].asstr()[0] == "010_1"


def test_scheme_remaps_on_read(patch_file):
    from csaws_tools.labels import parse_scheme

    with PatchReader(patch_file) as raw, PatchReader(patch_file, scheme="binary") as binary:
        _, stored = raw[:]
        _, remapped = binary[:]
        lut = parse_scheme("binary").lut
        np.testing.assert_array_equal(remapped, lut[stored])
        assert set(np.unique(remapped).tolist()) == {0, 1}
        np.testing.assert_array_equal(remapped == 1, stored == 1)  # cancer vs everything else
        assert binary.num_classes == 2 and len(binary.class_names) == 2

    scheme = parse_scheme("leave-one-out:skin")  # a LabelScheme object is accepted as well as a spec
    with PatchReader(patch_file, scheme=scheme) as r:
        _, masks = r[:]
        np.testing.assert_array_equal(masks, scheme.lut[stored])
        assert r.class_names == list(scheme.names) and "skin" not in r.class_names


def test_not_a_patches_file(tmp_path):
    bad = tmp_path / "x.h5"
    with h5py.File(bad, "w") as h5:
        h5["a"] = 1
    with pytest.raises(InputError, match="not a complete patches file"):
        PatchReader(bad)
    (tmp_path / "y.h5").write_bytes(b"garbage")
    with pytest.raises(InputError, match="cannot open as HDF5"):
        PatchReader(tmp_path / "y.h5")


def test_stitch_places_channels_and_crops_padding():
    preds = np.arange(2 * 3 * 4 * 4, dtype=np.float32).reshape(2, 3, 4, 4)
    out = stitch(preds, [(0, 0), (0, 4)], (3, 6), fill=-1)
    assert out.shape == (3, 3, 6)
    np.testing.assert_array_equal(out[:, :, :4], preds[0][:, :3, :])
    np.testing.assert_array_equal(out[:, :, 4:], preds[1][:, :3, :2])
    with pytest.raises(ValueError):
        stitch(preds, [(0, 0)], (3, 6))


@pytest.mark.parametrize("num_workers", [0, 2])
def test_torch_dataloader(patch_file, num_workers):
    torch = pytest.importorskip("torch", reason="the torch Dataset adapter needs the [train] extra")
    from torch.utils.data import DataLoader

    ds = TorchPatchDataset(patch_file, scheme="binary", indices=range(0, 20))
    assert len(ds) == 20 and ds.num_classes == 2
    loader = DataLoader(ds, batch_size=8, shuffle=False, num_workers=num_workers)
    xs, ys = zip(*loader)
    x, y = torch.cat(xs), torch.cat(ys)
    assert x.shape == (20, 1, S, S) and x.dtype == torch.float32
    assert y.shape == (20, S, S) and y.dtype == torch.int64
    with PatchReader(patch_file, scheme="binary") as r:
        imgs, msks = r[:20]
    np.testing.assert_allclose(x[:, 0].numpy(), imgs / 255.0, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(y.numpy(), msks)
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
