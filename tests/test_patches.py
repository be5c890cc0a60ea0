"""csaws-prepare patches: crops against their source regions, sampling, tiles, layouts, bad inputs."""

from __future__ import annotations


import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from csaws_tools.batch import read_manifest
from csaws_tools.errors import InputError, SettingsError
from csaws_tools.patches import (
    draw_centres,
    manifest_path_for,
    write_patches,
)
from csaws_tools.png import read_png, write_png
from csaws_tools.reader import PatchReader, stitch

S = 64  # patch size used by these tests (the default 512 only costs time)


def make_pair(rng, h, w, classes=(1, 2, 6, 11)):
    """A random 8-bit image and a label map with blobs of several sizes (one class a few pixels)."""
    image = rng.integers(0, 256, (h, w), dtype=np.uint8)
    mask = np.zeros((h, w), np.uint8)
    mask[h // 5 : 4 * h // 5, w // 5 : 4 * w // 5] = 11           # large: mammary gland
    if 6 in classes:
        mask[:, :3] = 6                                            # thin strip: skin
    if 1 in classes:
        mask[h // 2 : h // 2 + 9, w // 2 : w // 2 + 7] = 1        # small blob: cancer
    if 2 in classes:
        mask[h // 3, w // 3] = 2                                   # two pixels: calcifications
        mask[h // 3 + 2, w // 3 + 5] = 2
    return image, mask


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Images and label maps in separate folders; one image smaller than the patch along one axis."""
    root = tmp_path_factory.mktemp("patches")
    rng = np.random.default_rng(7)
    shapes = {"000_1": (150, 130), "000_2": (97, 201), "001_1": (200, 48), "002_3": (64, 64)}
    arrays = {}
    for image_id, (h, w) in shapes.items():
        image, mask = make_pair(rng, h, w, classes=(1, 2, 6, 11) if image_id != "002_3" else (11,))
        pid = image_id.split("_")[0]
        write_png(root / "images" / pid / f"{image_id}.png", image)
        write_png(root / "maps" / f"{image_id}.png", mask)
        arrays[image_id] = (image, mask)
    return root, arrays


def expected_crop(arr, top, left, size):
    """The source region of a crop, zero-padded where it leaves the array (independent of the package)."""
    h, w = arr.shape
    pad = size
    padded = np.pad(arr, pad)
    return padded[top + pad : top + pad + size, left + pad : left + pad + size]


def write(dataset, out, **kw):
    root, _ = dataset
    kw.setdefault("size", S)
    kw.setdefault("per_class", 4)
    kw.setdefault("progress", False)
    kw.setdefault("workers", 1)
    return write_patches(root / "images", root / "maps", out, **kw)


def read_all(path):
    with h5py.File(path, "r") as h5:
        index = {k: h5["index"][k][:] for k in h5["index"]}
        images = h5["images"][:] if "images" in h5 else None
        masks = h5["masks"][:] if "masks" in h5 else None
        attrs = dict(h5.attrs)
    return images, masks, index, attrs


def test_every_crop_is_its_source_region(dataset, tmp_path):
    _, arrays = dataset
    out = tmp_path / "p.h5"
    result = write(dataset, out)
    assert result.exit_code == 0 and result.output == out
    images, masks, index, attrs = read_all(out)
    assert images.shape == masks.shape == (len(index["top"]), S, S)
    assert images.dtype == masks.dtype == np.uint8
    ids = index["image_id"].astype(str)
    for i in range(len(ids)):
        img, msk = arrays[ids[i]]
        top, left = int(index["top"][i]), int(index["left"][i])
        np.testing.assert_array_equal(images[i], expected_crop(img, top, left, S))
        np.testing.assert_array_equal(masks[i], expected_crop(msk, top, left, S))
        r, c = int(index["center_row"][i]), int(index["center_col"][i])
        assert msk[r, c] == index["class_id"][i]  # the centre lies on its class
        assert 0 <= r - top < S and 0 <= c - left < S  # the centre lies inside its crop
        h, w = msk.shape
        if h >= S:  # shifted to stay inside the image
            assert 0 <= top <= h - S
        else:  # padded: image centred in the crop
            assert top == (h - S) // 2 < 0
        if w >= S:
            assert 0 <= left <= w - S
        else:
            assert left == (w - S) // 2 < 0


def test_exactly_per_class_crops_per_present_class(dataset, tmp_path):
    _, arrays = dataset
    out = tmp_path / "p.h5"
    write(dataset, out, per_class=3)
    _, _, index, attrs = read_all(out)
    ids = index["image_id"].astype(str)
    for image_id, (_, msk) in arrays.items():
        present = set(np.unique(msk).tolist())
        got = index["class_id"][ids == image_id]
        counts = {c: int((got == c).sum()) for c in set(got.tolist())}
        assert counts == {c: 3 for c in present}
    assert attrs["per_class"] == 3 and attrs["patch_size"] == S
    manifest = read_manifest(manifest_path_for(out))
    assert set(manifest["image_id"]) == set(arrays)
    row = manifest.set_index("image_id").loc["000_1"]
    assert row["n_crops"] == 15 and row["n_cancer"] == 3 and row["n_calcifications"] == 3 and row["n_nipple"] == 0
    assert (manifest["status"] == "ok").all()


def test_classes_option_limits_centres(dataset, tmp_path):
    out = tmp_path / "p.h5"
    write(dataset, out, classes="cancer,2")
    _, _, index, _ = read_all(out)
    assert set(index["class_id"].tolist()) == {1, 2}
    with pytest.raises(InputError, match="unknown class"):
        write(dataset, tmp_path / "q.h5", classes="tumour")


def test_seed_reproducible_and_independent_of_workers(dataset, tmp_path):
    a = read_all(write(dataset, tmp_path / "a.h5", seed=3, workers=1).output)
    b = read_all(write(dataset, tmp_path / "b.h5", seed=3, workers=2).output)
    c = read_all(write(dataset, tmp_path / "c.h5", seed=4, workers=1).output)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    for k in a[2]:
        np.testing.assert_array_equal(a[2][k], b[2][k])
    assert a[3]["settings_hash"] == b[3]["settings_hash"] != c[3]["settings_hash"]
    assert not np.array_equal(a[2]["center_row"], c[2]["center_row"])
    assert not np.array_equal(a[0], c[0])


@pytest.mark.parametrize("count_hint", [True, False])
def test_centres_uniform_over_class_pixels(count_hint):
    """Both branches (rejection for common classes, flatnonzero for rare ones) draw uniformly."""
    rng = np.random.default_rng(0)
    mask = np.zeros((400, 500), np.uint8)
    mask[10:30, 10:60] = 4            # 1000 pixels: rare (0.5 %) -> flatnonzero
    mask[100:300, 100:400] = 11       # 60000 pixels: common (30 %) -> rejection
    mask[200:300, 100:400] = 10       # half of it replaced: two regions of 30000 each
    for cls, region in ((4, (slice(10, 30), slice(10, 35))), (10, (slice(200, 250), slice(100, 400)))):
        n = 20000
        flat = draw_centres(mask, cls, n, rng, int((mask == cls).sum()) if count_hint else None)
        assert flat.shape == (n,)
        assert (mask.reshape(-1)[flat] == cls).all()
        rows, cols = np.divmod(flat, mask.shape[1])
        inside = ((rows >= region[0].start) & (rows < region[0].stop)
                  & (cols >= region[1].start) & (cols < region[1].stop)).mean()
        assert abs(inside - 0.5) < 0.02  # half the class pixels -> half the draws


def test_small_image_is_padded_and_recorded(dataset, tmp_path):
    _, arrays = dataset
    out = tmp_path / "p.h5"
    result = write(dataset, out)
    padded = {r["image_id"] for r in result.rows if r.get("padded")}
    assert padded == {"001_1"}  # 200 x 48 with 64-pixel patches
    with PatchReader(out) as r:
        rows = r.rows_for("001_1")
        assert (r.index["left"].to_numpy()[rows] == (48 - S) // 2).all()
        image, mask = r[int(rows[0])]
        assert (image[:, :8] == 0).all() and (image[:, 8 + 48 :] == 0).all()


@pytest.mark.parametrize("layout", ["crops", "index"])
def test_tiles_reassemble_into_the_image(dataset, tmp_path, layout):
    _, arrays = dataset
    out = tmp_path / "t.h5"
    write(dataset, out, tiles=True, tile_drop="none", layout=layout)
    with PatchReader(out) as r:
        assert (r.index["class_id"] == -1).all()
        assert r.attrs["kind"] == "tiles"
        for image_id, (img, msk) in arrays.items():
            rows = r.rows_for(image_id)
            h, w = img.shape
            assert rows.size == -(-h // S) * -(-w // S)
            tiles_img, tiles_msk = r[rows]
            # The padded image: tiles laid side by side.
            ph, pw = -(-h // S) * S, -(-w // S) * S
            canvas = np.zeros((ph, pw), np.uint8)
            for t, (top, left) in zip(tiles_img, r.index.iloc[rows][["top", "left"]].to_numpy()):
                canvas[top : top + S, left : left + S] = t
            expected = np.zeros((ph, pw), np.uint8)
            expected[:h, :w] = img
            np.testing.assert_array_equal(canvas, expected)
            np.testing.assert_array_equal(stitch(tiles_msk, r.index.iloc[rows], (h, w)), msk)


def test_background_tiles_dropped(dataset, tmp_path):
    _, arrays = dataset
    out = tmp_path / "t.h5"
    write(dataset, out, tiles=True, tile_drop="background")
    with PatchReader(out) as r:
        for image_id, (img, msk) in arrays.items():
            rows = r.rows_for(image_id)
            kept = {tuple(p) for p in r.index.iloc[rows][["top", "left"]].to_numpy().tolist()}
            want = {(t, l) for t in range(0, msk.shape[0], S) for l in range(0, msk.shape[1], S)
                    if msk[t : t + S, l : l + S].any()}
            assert kept == want
            _, masks = r[rows]
            # Dropped tiles are background, so stitching with fill 0 restores the label map.
            np.testing.assert_array_equal(stitch(masks, r.index.iloc[rows], msk.shape), msk)


@pytest.mark.parametrize("compression", ["gzip", "lzf", "zstd", "none"])
def test_index_layout_reads_back_the_crop_layout(dataset, tmp_path, compression):
    if compression == "zstd":
        pytest.importorskip("hdf5plugin", reason="zstd needs the [zstd] extra")
    crops = write(dataset, tmp_path / "c.h5", compression=compression)
    index = write(dataset, tmp_path / "i.h5", compression=compression, layout="index")
    with PatchReader(crops.output) as a, PatchReader(index.output) as b:
        assert len(a) == len(b) > 0
        assert a.attrs["layout"] == "crops" and b.attrs["layout"] == "index"
        ia, ma = a[:]
        ib, mb = b[:]
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_array_equal(ma, mb)
        assert a.index.equals(b.index)
    with h5py.File(index.output, "r") as h5:  # each image stored once, chunked in patch-sized tiles
        ds = h5["full/images/000000"]
        assert ds.attrs["image_id"] == "000_1" and ds.chunks == (S, S)


def test_rerun_skips_then_overwrite_redoes(dataset, tmp_path):
    out = tmp_path / "p.h5"
    write(dataset, out)
    mtime = out.stat().st_mtime_ns
    again = write(dataset, out)
    assert again.up_to_date and again.count("skipped") == 4 and out.stat().st_mtime_ns == mtime
    redo = write(dataset, out, overwrite=True)
    assert not redo.up_to_date and redo.count("ok") == 4
    other = write(dataset, out, seed=9)  # other settings: regenerated
    assert other.count("ok") == 4 and read_all(out)[3]["seed"] == 9


def test_failure_while_writing_leaves_no_file(dataset, tmp_path, monkeypatch):
    from csaws_tools import patches as mod

    def boom(self, attrs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(mod.PatchWriter, "close", boom)
    with pytest.raises(RuntimeError):
        write(dataset, tmp_path / "p.h5")
    assert [p.name for p in tmp_path.iterdir() if p.suffix in (".h5", ".tmp")] == []


def test_partial_file_is_not_taken_as_complete(dataset, tmp_path):
    out = tmp_path / "p.h5"
    with h5py.File(out, "w") as h5:  # what a killed writer could leave behind under a final name
        h5.create_dataset("images", shape=(0, S, S), dtype="u1")
    with pytest.raises(InputError, match="not a complete patches file"):
        PatchReader(out)
    result = write(dataset, out)
    assert result.count("ok") == 4 and not result.up_to_date


def test_bad_inputs_are_clear_per_image_errors(tmp_path):
    rng = np.random.default_rng(1)
    img, msk = make_pair(rng, 100, 90)
    write_png(tmp_path / "im" / "000_1.png", img)
    write_png(tmp_path / "lm" / "000_1.png", msk)
    write_png(tmp_path / "im" / "000_2.png", img)                    # size mismatch
    write_png(tmp_path / "lm" / "000_2.png", msk[:, :80])
    write_png(tmp_path / "im" / "000_3.png", img)                    # no label map
    write_png(tmp_path / "lm" / "000_4.png", msk)                    # no image
    write_png(tmp_path / "im" / "000_5.png", img.astype(np.uint16) * 200)  # 16-bit image
    write_png(tmp_path / "lm" / "000_5.png", msk)
    write_png(tmp_path / "im" / "000_6.png", img)                    # values outside the standard ids
    write_png(tmp_path / "lm" / "000_6.png", (msk + 12).astype(np.uint8))
    (tmp_path / "im" / "000_7.png").write_bytes(b"not a png")         # corrupt
    write_png(tmp_path / "lm" / "000_7.png", msk)
    out = tmp_path / "p.h5"
    result = write_patches(tmp_path / "im", tmp_path / "lm", out, size=S, per_class=2, progress=False, workers=2)
    assert result.exit_code == 1 and result.count("ok") == 1 and result.failed == 6
    errors = {r["image_id"]: r["error"] for r in result.rows if r["status"] == "error"}
    assert "size mismatch" in errors["000_2"] and "100x90" in errors["000_2"] and "100x80" in errors["000_2"]
    assert "no label map 000_3.png" in errors["000_3"]
    assert "no image 000_4.png" in errors["000_4"]
    assert "16-bit" in errors["000_5"]
    assert "id 12" in errors["000_6"]
    assert "cannot read image 000_7.png" in errors["000_7"]
    assert all("\n" not in e for e in errors.values())
    with PatchReader(out) as r:  # the good image is written; the file records the failures
        assert set(r.index["image_id"]) == {"000_1"} and r.attrs["n_failed"] == 6
    manifest = read_manifest(manifest_path_for(out))
    assert set(manifest.loc[manifest["status"] == "error", "image_id"]) == set(errors)


def test_empty_split_and_bad_settings(dataset, tmp_path):
    with pytest.raises(InputError, match="no images selected"):
        write(dataset, tmp_path / "p.h5", image_ids=[])
    with pytest.raises(SettingsError, match="layout="):
        write(dataset, tmp_path / "p.h5", layout="zarr")
    splits = {"format": "csaws-splits/1", "train": {"images": []}, "val": {"images": ["000_1"]},
              "test": {"images": []}, "subsets": {}}
    with pytest.raises(InputError, match="split 'train' holds no images"):
        write(dataset, tmp_path / "p.h5", splits=splits, split="train")
    result = write(dataset, tmp_path / "v.h5", splits=splits, split="val")
    assert {r["image_id"] for r in result.rows} == {"000_1"}
    assert read_all(tmp_path / "v.h5")[3]["split"] == "val"


def test_release_layout_rgb_images_and_class_masks_passed_over(tmp_path):
    rng = np.random.default_rng(2)
    img, msk = make_pair(rng, 80, 70)
    rgb = np.stack([img, img // 2, img // 3], axis=-1)
    write_png(tmp_path / "CsawS" / "anonymized_dataset" / "003" / "003_1.png", rgb)
    write_png(tmp_path / "CsawS" / "anonymized_dataset" / "003" / "003_1_cancer.png", (msk == 1).astype(np.uint8) * 255)
    write_png(tmp_path / "maps" / "003_1.png", msk, palette=[(i, i, i) for i in range(12)])
    out = tmp_path / "p.h5"
    result = write_patches(tmp_path / "CsawS", tmp_path / "maps", out, size=S, per_class=2, progress=False)
    assert result.count("ok") == 1 and result.failed == 0
    with PatchReader(out) as r:
        image, mask = r[0]
        top, left = int(r.index["top"][0]), int(r.index["left"][0])
        np.testing.assert_array_equal(image, expected_crop(img, top, left, S))  # first channel
        np.testing.assert_array_equal(mask, expected_crop(msk, top, left, S))   # palette indices


def test_cli_patches_prints_statistics(dataset, tmp_path):
    from csaws_tools.cli import main

    root, _ = dataset
    out = tmp_path / "p.h5"
    args = ["patches", "--images", str(root / "images"), "--masks", str(root / "maps"), "-o", str(out),
            "--size", str(S), "--per-class", "2", "--no-progress", "-j", "1"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "mammary_gland" in res.output and "patches written" in res.output and "4 converted" in res.output
    with h5py.File(out, "r") as h5:
        assert h5.attrs["crops_per_class"] and h5.attrs["pixel_share"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0 and "up to date" in res.output
    res = CliRunner().invoke(main, args + ["--shard", "1/2"])
    assert res.exit_code == 2 and "--shard does not apply" in res.output
    res = CliRunner().invoke(main, ["patches", "--help"])
    assert "--layout" in res.output and "--compression" in res.output


def test_sample_end_to_end(sample_root, tmp_path):
    """sample -> merge-masks -> splits -> patches -> reader with a label scheme."""
    from csaws_tools.cli import main

    runner = CliRunner()
    maps = tmp_path / "maps"
    res = runner.invoke(main, ["merge-masks", str(sample_root / "CsawS"), "-o", str(maps), "--no-progress"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(main, ["splits", str(sample_root / "CsawS"), "-o", str(tmp_path / "s.json"),
                               "--sizes", "2,4", "--repetitions", "2"])
    assert res.exit_code == 0, res.output
    out = tmp_path / "p.h5"
    res = runner.invoke(main, ["patches", "--images", str(sample_root / "CsawS"), "--masks", str(maps / "trainval"),
                               "--splits", str(tmp_path / "s.json"), "--split", "4", "--repetition", "1",
                               "--size", "256", "-o", str(out), "--no-progress", "-j", "2"])
    assert res.exit_code == 0, res.output
    import json

    chosen = json.loads((tmp_path / "s.json").read_text())["subsets"]["4"]["1"]["images"]
    with PatchReader(out, scheme="binary") as r:
        assert set(r.index["image_id"]) == set(chosen)
        assert r.attrs["split"] == "4" and r.attrs["repetition"] == 1
        assert r.num_classes == 2
        for i in range(0, len(r), max(1, len(r) // 10)):
            image, mask = r[i]
            row = r.index.iloc[i]
            src = read_png(maps / "trainval" / f"{row.image_id}.png")
            np.testing.assert_array_equal(mask, (expected_crop(src, int(row.top), int(row.left), 256) == 1))
    res = runner.invoke(main, ["patches", "--images", str(sample_root / "CsawS" / "test_data"),
                               "--masks", str(maps / "test" / "consensus"), "--tiles", "--size", "256",
                               "-o", str(tmp_path / "t.h5"), "--no-progress"])
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize("doc, match", [
    ({"numbering": "release", "classes": []}, "'release' numbering"),
    ({"numbering": "standard", "scheme": {"spec": "keep:skin"}, "classes": []}, "label scheme 'keep:skin'"),
])
def test_maps_in_another_numbering_or_scheme_are_refused(tmp_path, doc, match):
    """Release ids (cancer 0, background 11) or scheme ids would be read as standard ids: refuse them."""
    import json

    rng = np.random.default_rng(3)
    img, msk = make_pair(rng, 80, 70)
    write_png(tmp_path / "im" / "000_1.png", img)
    write_png(tmp_path / "maps" / "trainval" / "000_1.png", msk)
    (tmp_path / "maps" / "labels.json").write_text(json.dumps(doc))
    with pytest.raises(InputError, match=match):
        write_patches(tmp_path / "im", tmp_path / "maps" / "trainval", tmp_path / "p.h5", size=S, progress=False)
    assert not (tmp_path / "p.h5").exists()
    (tmp_path / "maps" / "labels.json").write_text(json.dumps({"numbering": "standard", "classes": []}))
    result = write_patches(tmp_path / "im", tmp_path / "maps" / "trainval", tmp_path / "p.h5", size=S,
                           progress=False, workers=1)
    assert result.exit_code == 0
