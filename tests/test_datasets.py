"""Dataset adapters, label schemes on any class list, and prepare-dataset (paper section 5, protocol section 6)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from csaws_tools.errors import InputError, SettingsError
from csaws_tools.png import write_png
from csaws_tools.sample_public import CITIES, pascal_palette, write_public_sample
from csaws_tools.train.datasets import (
    CITYSCAPES_CLASSES,
    VOC_CLASSES,
    ImageSetReader,
    build_scheme,
    combine_coarse,
    get_adapter,
    paper_split,
    prepare_dataset,
    resize_image,
    resize_labels,
    training_order,
    voc_palette,
)
from csaws_tools.train.datasets.base import Item


@pytest.fixture(scope="module")
def cs_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cityscapes")
    write_public_sample("cityscapes", root, seed=0)
    return root


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("voc")
    write_public_sample("voc", root, seed=0)
    return root


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / src.name
    shutil.copytree(src, dst)
    return dst


# --------------------------------------------------------------------------- adapters


def test_cityscapes_adapter_reads_the_synthetic_layout_with_cities_from_file_names(cs_root):
    a = get_adapter("cityscapes", cs_root)
    assert a.class_names == list(CITYSCAPES_CLASSES) and len(a.class_names) == 34
    assert a.classes[24] == "person" and a.classes[25] == "rider" and a.void is None and a.background == 0
    train = list(a.items("train"))
    val = list(a.items("val"))
    expected = {c: n for s, c, n in CITIES if s == "train"}
    assert len(train) == sum(expected.values()) and len(val) == sum(n for s, _, n in CITIES if s == "val")
    by_city = {}
    for it in train:
        assert it.key.startswith(it.group + "_") and it.label.name == f"{it.key}_gtFine_labelIds.png"
        by_city[it.group] = by_city.get(it.group, 0) + 1
    assert by_city == expected and by_city["ulm"] == 1  # a city with a single image
    lab = a.read_label(train[0].label)
    assert lab.dtype == np.uint8 and lab.ndim == 2 and lab.max() <= 33
    assert a.coarse_label(train[0]).name == f"{train[0].key}_gtCoarse_labelIds.png"


def test_cityscapes_hand_made_layout_one_image_city_and_misnamed_files(tmp_path):
    img = np.zeros((8, 16, 3), dtype=np.uint8)
    lab = np.full((8, 16), 24, dtype=np.uint8)
    for split, city, key in (("train", "tiny", "tiny_000000_000001"), ("val", "munster", "munster_000000_000019")):
        write_png(tmp_path / "leftImg8bit" / split / city / f"{key}_leftImg8bit.png", img)
        write_png(tmp_path / "gtFine" / split / city / f"{key}_gtFine_labelIds.png", lab)
    write_png(tmp_path / "leftImg8bit" / "train" / "tiny" / "holiday_photo_leftImg8bit.png", img)
    a = get_adapter("cityscapes", tmp_path)
    items, problems = a.scan("train")
    assert [(i.key, i.group) for i in items] == [("tiny_000000_000001", "tiny")]
    assert len(problems) == 1 and "holiday_photo" in problems[0].source and "<city>_<seq>_<frame>" in problems[0].error
    assert [i.group for i in training_order(items, 0, 0, "by-city")] == ["tiny"]
    assert a.coarse_label(items[0]) is None and not a.has_coarse()
    with pytest.raises(InputError, match="no leftImg8bit"):
        get_adapter("cityscapes", tmp_path / "gtFine")


def test_voc_adapter_reads_palette_indices_with_void_borders(voc_root):
    a = get_adapter("voc", voc_root)  # the folder holding VOCdevkit
    assert a.class_names == list(VOC_CLASSES) and a.classes[15] == "person" and a.void == 255
    items = list(a.items("train"))
    assert len(items) == 12 and all(it.group == "" for it in items)
    with Image.open(items[0].label) as im:
        assert im.mode == "P"  # a palette PNG: the index is the class id
        assert im.getpalette()[15 * 3:16 * 3] == [192, 128, 128]
    maps = [a.read_label(it.label) for it in items]
    assert all(m.ndim == 2 and m.dtype == np.uint8 for m in maps)
    values = set(np.unique(np.concatenate([m.ravel() for m in maps])).tolist())
    assert 255 in values and 15 in values and values <= set(range(21)) | {255}
    # every object is ringed by void: no object pixel touches background directly
    m = next(m for m in maps if (m == 15).any())
    obj, bg = (m > 0) & (m < 255), m == 0
    assert not ((obj[1:, :] & bg[:-1, :]).any() or (obj[:-1, :] & bg[1:, :]).any()
                or (obj[:, 1:] & bg[:, :-1]).any() or (obj[:, :-1] & bg[:, 1:]).any())
    assert get_adapter("voc", voc_root / "VOCdevkit").voc == a.voc == get_adapter("voc", a.voc).voc


def test_voc_palette_is_the_standard_colour_map():
    p = voc_palette(256)
    assert p[0] == (0, 0, 0) and p[1] == (128, 0, 0) and p[15] == (192, 128, 128) and p[255] == (224, 224, 192)
    assert pascal_palette(256) == p


def test_voc_list_naming_a_missing_file_is_a_clear_one_line_problem(voc_root, tmp_path):
    root = _copy(voc_root, tmp_path)
    voc = root / "VOCdevkit" / "VOC2012"
    gone = (voc / "ImageSets" / "Segmentation" / "train.txt").read_text().split()[2]
    (voc / "JPEGImages" / f"{gone}.jpg").unlink()
    a = get_adapter("voc", root)
    items, problems = a.scan("train")
    assert len(items) == 11 and len(problems) == 1
    assert "train.txt:3" in problems[0].source and f"JPEGImages/{gone}.jpg is missing" in problems[0].error
    with pytest.raises(InputError) as err:
        list(a.items("train"))
    assert "\n" not in str(err.value) and gone in str(err.value)
    res = prepare_dataset(a, tmp_path / "out", val_size=4, sizes=(5,), repetitions=2, size=32, workers=1,
                          progress=False)
    assert res.exit_code == 1 and res.counts["train"] == 11  # the other images are written
    with ImageSetReader(res.files["train"]) as r:
        assert len(r) == 11 and gone not in r.image_ids
    assert json.loads(res.splits.read_text())["problems"][0]["error"].endswith("is missing")


def test_cityscapes_image_without_label_and_bad_ids_fail_only_that_image(cs_root, tmp_path):
    root = _copy(cs_root, tmp_path)
    a = get_adapter("cityscapes", root)
    train = list(a.items("train"))
    train[1].label.unlink()  # no fine label map
    bad = train[3]
    lab = np.asarray(Image.open(bad.label)).copy()
    lab[0, 0] = 40  # not a Cityscapes label id
    write_png(bad.label, lab)
    corrupt = train[5]
    corrupt.image.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    _, problems = a.scan("train")
    assert len(problems) == 1 and "no fine label map" in problems[0].error
    res = prepare_dataset(a, tmp_path / "out", val_size=2, sizes=(3,), repetitions=1, size=32, workers=1,
                          progress=False)
    assert res.exit_code == 1
    rows = [r for r in res.results["train"].rows + res.results["val"].rows if r["status"] == "error"]
    errors = {Path(r["source"]).name: r["error"] for r in rows}
    assert any("id(s) 40 outside the classes 0..33" in e for e in errors.values())
    assert corrupt.image.name in errors and all("\n" not in e for e in errors.values())
    written = []
    for sp in ("train", "val"):
        with ImageSetReader(res.files[sp]) as r:
            written += r.image_ids
            # failed rows were compacted away: every stored row is its own image
            assert list(r.index["image_id"]) == r.image_ids and list(r.index["source"]) == list(range(len(r)))
    assert bad.key not in written and corrupt.key not in written and train[1].key not in written
    failed = json.loads(res.splits.read_text())["failed"]  # in the split but not in the HDF5 files
    assert sorted(k for keys in failed.values() for k in keys) == sorted([bad.key, corrupt.key])
    assert len(written) == len(train) - 3


def test_colour_label_map_and_oversized_header_are_refused_with_one_line(tmp_path, monkeypatch):
    from csaws_tools.limits import ENV_VAR

    a = get_adapter("voc", write_public_sample("voc", tmp_path / "v").root)
    rgb = tmp_path / "rgb.png"
    write_png(rgb, np.zeros((4, 4, 3), dtype=np.uint8))  # a VOC map saved as colours
    with pytest.raises(InputError, match="label map is RGB; expected a palette or 8-bit grey PNG"):
        a.read_label(rgb)
    monkeypatch.setenv(ENV_VAR, "10")
    with pytest.raises(InputError, match="more than the limit of 10"):
        a.read_image(rgb)


def test_missing_coarse_map_fails_only_that_training_image(cs_root, tmp_path):
    root = _copy(cs_root, tmp_path)
    a = get_adapter("cityscapes", root)
    res0 = prepare_dataset(a, tmp_path / "o", val_size=2, sizes=(3,), repetitions=1, size=16, workers=1,
                           progress=False)  # without --coarse: coarse maps are not needed
    assert res0.exit_code == 0
    victim = json.loads(res0.splits.read_text())["train"]["images"][0]
    next(root.rglob(f"{victim}_gtCoarse_labelIds.png")).unlink()
    res = prepare_dataset(a, tmp_path / "o", val_size=2, sizes=(3,), repetitions=1, size=16, workers=1,
                          progress=False, coarse=True)
    errors = [r for r in res.results["train"].rows if r["status"] == "error"]
    assert res.exit_code == 1 and len(errors) == 1 and "no gtCoarse label map" in errors[0]["error"]
    assert "val.h5" in res.skipped and "test.h5" in res.skipped  # only the training file carries coarse maps


def test_csaws_adapter_reads_merge_masks_output_read_only(sample_root, tmp_path):
    from csaws_tools.merge import merge_masks

    maps = tmp_path / "maps"
    merge_masks(sample_root, maps, workers=1, progress=False)
    before = sorted((p, p.stat().st_mtime_ns) for p in maps.rglob("*"))
    a = get_adapter("csaws", maps, images=sample_root / "CsawS")
    assert a.target_default == "cancer" and a.class_names[1] == "cancer" and a.channels == 1
    items = list(a.items("trainval"))
    assert items and all(it.group == it.key.rsplit("_", 1)[0] for it in items)
    img = a.read_image(items[0].image)
    assert img.ndim == 3 and img.shape[2] == 1
    assert set(np.unique(a.read_label(items[0].label)).tolist()) <= set(range(12))
    assert sorted((p, p.stat().st_mtime_ns) for p in maps.rglob("*")) == before
    with pytest.raises(InputError, match=r"images="):
        get_adapter("csaws", maps)


def _folder_dataset(root: Path, n: int = 10, groups: int = 2) -> Path:
    from csaws_tools.classes import labels_json

    rng = np.random.default_rng(0)
    for i in range(n):
        sub = f"site{i % groups}"
        img = rng.integers(0, 255, size=(20 + i, 30, 3), dtype=np.uint8)
        lab = rng.integers(0, 12, size=(20 + i, 30), dtype=np.uint8)
        lab[0, :] = 255  # void row
        write_png(root / "images" / sub / f"im{i:02d}.png", img)
        write_png(root / "labels" / sub / f"im{i:02d}.png", lab)
    (root / "labels.json").write_text(labels_json("standard"))  # what merge-masks writes
    return root


def test_folders_adapter_pairs_by_relative_path_and_reads_labels_json(tmp_path):
    root = _folder_dataset(tmp_path / "own")
    (root / "images" / "site0" / "orphan.png").write_bytes((root / "images" / "site0" / "im00.png").read_bytes())
    a = get_adapter("folders", root)
    assert a.class_names[1] == "cancer" and a.void == 255 and a.background == 0
    items, problems = a.scan("all")
    assert len(items) == 10 and {it.group for it in items} == {"site0", "site1"}
    assert len(problems) == 1 and "no label map labels/site0/orphan.png" in problems[0].error
    res = prepare_dataset(a, tmp_path / "out", target="cancer", val_size=2, test_size=3, sizes=(2, 5),
                          repetitions=2, size=16, workers=1, progress=False, ordering="by-city")
    assert res.counts == {"train": 5, "val": 2, "test": 3} and res.exit_code == 1  # the orphan is reported
    with ImageSetReader(res.files["test"], "binary") as r:
        img, m = r[:]
        assert img.shape == (3, 16, 16, 3) and set(np.unique(m).tolist()) <= {0, 1, 255}
    grey = get_adapter("folders", root, channels=1)
    with pytest.raises(InputError, match="colour image"):  # colour where one channel is wanted
        grey.read_image(items[0].image)
    g = np.arange(12, dtype=np.uint8).reshape(3, 4)
    write_png(tmp_path / "g.png", g)
    assert grey.read_image(tmp_path / "g.png")[:, :, 0].tolist() == g.tolist()
    rgb = a.read_image(tmp_path / "g.png")  # grey repeated into three channels
    assert rgb.shape == (3, 4, 3) and (rgb == g[:, :, None]).all()


def test_folders_without_labels_json_is_an_error(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    with pytest.raises(InputError, match="no labels.json"):
        get_adapter("folders", tmp_path)


def test_unknown_dataset_name_lists_the_choices(tmp_path):
    with pytest.raises(SettingsError, match="cityscapes, voc, csaws, folders"):
        get_adapter("kitti", tmp_path)


# --------------------------------------------------------------------------- schemes


@pytest.fixture(scope="module")
def city_map() -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.integers(0, 34, size=(64, 64), dtype=np.uint8)


def test_binary_scheme_keeps_exactly_the_target_pixels_and_void(city_map):
    s = build_scheme("binary", CITYSCAPES_CLASSES, target="person")
    out = s.apply(city_map)
    assert s.names == ("unlabeled", "person") and s.num_classes == 2 and s.void_out is None
    assert (out == 1).sum() == (city_map == 24).sum() and (out == 0).sum() == (city_map != 24).sum()
    v = np.array([[0, 15, 255, 3]], dtype=np.uint8)
    vs = build_scheme("binary", VOC_CLASSES, target="person", void=255)
    assert vs.apply(v).tolist() == [[0, 1, 255, 0]] and vs.void_out == 255  # void stays void (ignored)
    vc = build_scheme("binary", VOC_CLASSES, target="person", void=255, void_as_class=True)
    assert vc.names == ("background", "person", "void") and vc.apply(v).tolist() == [[0, 1, 2, 0]]


def test_all_scheme_puts_background_then_target_then_the_others_in_id_order(city_map):
    s = build_scheme("all", CITYSCAPES_CLASSES, target="person")
    out = s.apply(city_map)
    assert s.num_classes == 34 and s.names[:3] == ("unlabeled", "person", "ego vehicle")
    for new_id, name in enumerate(s.names):
        assert (out == new_id).sum() == (city_map == CITYSCAPES_CLASSES.index(name)).sum()


def test_leave_one_out_merges_that_class_into_background(city_map):
    s = build_scheme("leave-one-out:traffic_light", CITYSCAPES_CLASSES, target="person")
    out = s.apply(city_map)
    assert "traffic light" not in s.names and s.num_classes == 33
    assert (out == 0).sum() == ((city_map == 0) | (city_map == 19)).sum()
    assert (out == 1).sum() == (city_map == 24).sum()
    with pytest.raises(SettingsError, match="background or the target"):
        build_scheme("leave-one-out:person", CITYSCAPES_CLASSES, target="person")
    with pytest.raises(SettingsError, match="unknown class 'lamp'"):
        build_scheme("leave-one-out:lamp", CITYSCAPES_CLASSES, target="person")


def test_random_k_keeps_k_seeded_complementary_classes(city_map):
    a = build_scheme("random:4:0", CITYSCAPES_CLASSES, target="person")
    assert a.names == build_scheme("random:4:0", CITYSCAPES_CLASSES, target="person").names
    assert a.num_classes == 6 and a.names[:2] == ("unlabeled", "person")
    others = {build_scheme(f"random:4:{s}", CITYSCAPES_CLASSES, target="person").names for s in range(1, 6)}
    assert len(others | {a.names}) > 1
    out = a.apply(city_map)
    kept = [CITYSCAPES_CLASSES.index(n) for n in a.names[2:]]
    assert (out == 0).sum() == (~np.isin(city_map, kept + [24])).sum()
    for new_id, cid in enumerate(kept, start=2):
        assert (out == new_id).sum() == (city_map == cid).sum()
    assert build_scheme("random:32:0", CITYSCAPES_CLASSES, target="person").num_classes == 34
    with pytest.raises(SettingsError, match="k must be 0..32"):
        build_scheme("random:33:0", CITYSCAPES_CLASSES, target="person")


def test_merged_human_target_and_merged_complementary_classes(city_map):
    s = build_scheme("all", CITYSCAPES_CLASSES, target="human=person+rider")
    out = s.apply(city_map)
    assert s.names[1] == "human" and "rider" not in s.names and s.num_classes == 33
    assert (out == 1).sum() == np.isin(city_map, [24, 25]).sum()
    b = build_scheme("binary", CITYSCAPES_CLASSES, target="human=person+rider")
    assert (b.apply(city_map) == 1).sum() == np.isin(city_map, [24, 25]).sum()
    m = build_scheme("merge:car+truck+bus=vehicle", CITYSCAPES_CLASSES, target="person")
    mo = m.apply(city_map)
    assert (mo == m.names.index("vehicle")).sum() == np.isin(city_map, [26, 27, 28]).sum()
    assert m.members["vehicle"] == ["car", "truck", "bus"] and m.num_classes == 32


# --------------------------------------------------------------------------- resizing


def test_nearest_resize_of_labels_keeps_only_existing_ids():
    rng = np.random.default_rng(3)
    lab = rng.choice(np.array([0, 7, 24, 255], dtype=np.uint8), size=(100, 230))
    for size in (17, 64, 512):
        out = resize_labels(lab, size)
        assert out.shape == (size, size) and set(np.unique(out).tolist()) <= {0, 7, 24, 255}
    big = np.kron(np.arange(16, dtype=np.uint8).reshape(4, 4), np.ones((8, 8), dtype=np.uint8))
    assert np.array_equal(resize_labels(big, 4), np.arange(16, dtype=np.uint8).reshape(4, 4))
    assert np.array_equal(resize_labels(np.arange(4, dtype=np.uint8).reshape(2, 2), 4),
                          np.kron(np.arange(4, dtype=np.uint8).reshape(2, 2), np.ones((2, 2), np.uint8)))


def test_bilinear_resize_keeps_three_channels_and_smooth_values():
    img = np.zeros((40, 80, 3), dtype=np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = 10, 200, 90
    out = resize_image(img, 32)
    assert out.shape == (32, 32, 3) and (out == [10, 200, 90]).all()
    ramp = np.repeat(np.linspace(0, 255, 64).astype(np.uint8)[None, :, None], 8, axis=0).repeat(3, axis=2)
    r = resize_image(ramp, 16, "bilinear")[0, :, 0].astype(int)
    assert (np.diff(r) >= 0).all() and len(set(r.tolist())) == 16
    n = resize_image(ramp, 16, "nearest")[0, :, 0]
    assert set(n.tolist()) <= set(ramp[0, :, 0].tolist())


def test_coarse_labels_with_the_fine_target():
    fine = np.array([[24, 24, 7, 7], [0, 7, 7, 25]], dtype=np.uint8)
    coarse = np.array([[24, 0, 24, 8], [0, 8, 0, 0]], dtype=np.uint8)
    exact = combine_coarse(fine, coarse, [24], background=0)
    assert exact.tolist() == [[24, 24, 0, 8], [0, 8, 0, 0]]  # target exactly the fine target
    overlay = combine_coarse(fine, coarse, [24], mode="overlay")
    assert overlay.tolist() == [[24, 24, 24, 8], [0, 8, 0, 0]]  # the authors' code keeps coarse person
    assert (exact == 24).sum() == (fine == 24).sum()


# --------------------------------------------------------------------------- splits and orders


def _items(groups: dict[str, int]) -> list[Item]:
    return [Item(key=f"{g}_{i:03d}", image=Path("x"), label=Path("y"), group=g)
            for g, n in groups.items() for i in range(n)]


def test_by_city_order_keeps_each_city_together_in_random_city_order():
    items = _items({"aachen": 7, "bonn": 5, "ulm": 1, "zurich": 4})
    firsts = set()
    for rep in range(6):
        order = training_order(items, 0, rep, "by-city")
        assert sorted(i.key for i in order) == sorted(i.key for i in items)
        cities = [i.group for i in order]
        blocks = [c for j, c in enumerate(cities) if j == 0 or cities[j - 1] != c]
        assert len(blocks) == 4 and set(blocks) == {"aachen", "bonn", "ulm", "zurich"}  # contiguous blocks
        firsts.add(blocks[0])
    assert len(firsts) > 1  # the city order is random per repetition
    assert training_order(items, 0, 2, "by-city") == training_order(items, 0, 2, "by-city")
    rnd = training_order(items, 0, 0, "random")
    assert rnd == training_order(items, 0, 0, "random") and rnd != training_order(items, 1, 0, "random")


def test_cityscapes_split_val_from_official_train_and_test_is_official_val(cs_root):
    a = get_adapter("cityscapes", cs_root)
    found = {sp: a.scan(sp)[0] for sp in a.splits}
    split, _ = paper_split(a, found, val_size=5, seed=0)
    keys = {sp: {i.key for i in v} for sp, v in split.items()}
    assert len(keys["val"]) == 5 and len(keys["train"]) == len(found["train"]) - 5
    assert keys["test"] == {i.key for i in found["val"]} and not keys["train"] & keys["val"]
    assert paper_split(a, found, val_size=5, seed=0)[0]["val"] == split["val"]
    assert {i.key for i in paper_split(a, found, val_size=5, seed=1)[0]["val"]} != keys["val"]
    with pytest.raises(InputError) as err:
        paper_split(a, found, val_size=None, seed=0)  # the paper's 500 on a tiny dataset
    msg = str(err.value)
    assert "val_size=500" in msg and "pass val_size=3" in msg and "\n" not in msg


def test_voc_split_train_official_val_and_test_share_the_official_val(voc_root):
    a = get_adapter("voc", voc_root)
    found = {sp: a.scan(sp)[0] for sp in a.splits}
    split, _ = paper_split(a, found, val_size=4, seed=0)
    assert [i.key for i in split["train"]] == [i.key for i in found["train"]]
    assert len(split["val"]) == 4 and len(split["test"]) == len(found["val"]) - 4
    assert {i.key for i in split["val"]} | {i.key for i in split["test"]} == {i.key for i in found["val"]}


def test_prepare_writes_splits_subsets_and_512_images_then_resumes(cs_root, tmp_path):
    a = get_adapter("cityscapes", cs_root)
    out = tmp_path / "inputs"
    res = prepare_dataset(a, out, val_size=4, sizes=(3, 6, 14), repetitions=3, ordering="by-city", coarse=True,
                          size=64, workers=1, progress=False)
    assert res.exit_code == 0 and res.counts == {"train": 14, "val": 4, "test": 6}
    doc = json.loads(res.splits.read_text())
    assert doc["format"] == "csaws-splits/1" and doc["dataset"] == "cityscapes" and doc["target"] == "person"
    assert doc["classes"] == list(CITYSCAPES_CLASSES) and doc["void"] is None and doc["background"] == 0
    for rep in ("0", "1", "2"):
        order = doc["orders"][rep]
        assert sorted(order) == sorted(doc["train"]["images"])
        for n in ("3", "6", "14"):
            assert doc["subsets"][n][rep]["images"] == order[: int(n)]  # nested: the first N of the order
    from csaws_tools.splits import select_images

    assert select_images(doc, "3", 1) == doc["orders"]["1"][:3]
    with ImageSetReader(res.files["train"], "all") as r:
        img, m = r[:]
        assert img.shape == (14, 64, 64, 3) and m.shape == (14, 64, 64) and r.num_classes == 34
        assert r.attrs["has_coarse"] and r.image_ids == doc["train"]["images"]
        assert set(r.index["patient_id"]) == {k.split("_")[0] for k in r.image_ids}
        assert (r.index["orig_rows"] == 128).all() and (r.index["orig_cols"] == 256).all()
    with ImageSetReader(res.files["train"], "binary", labels="coarse") as r, \
            ImageSetReader(res.files["train"], "binary") as f:
        assert np.array_equal(r[:][1], f[:][1])  # person stays fine under coarse labels
    with ImageSetReader(res.files["test"]) as t:
        assert not t.attrs["has_coarse"]
        with pytest.raises(InputError, match="no coarse"):
            ImageSetReader(res.files["test"], labels="coarse")
    stamp = res.files["val"].stat().st_mtime_ns
    again = prepare_dataset(a, out, val_size=4, sizes=(3, 6, 14), repetitions=3, ordering="by-city", coarse=True,
                            size=64, workers=1, progress=False)
    assert sorted(again.skipped) == ["test.h5", "train.h5", "val.h5"] and res.files["val"].stat().st_mtime_ns == stamp
    val_item = doc["val"]["images"][0]
    lab = next((cs_root / "gtFine" / "train").rglob(f"{val_item}_gtFine_labelIds.png"))
    os.utime(lab, ns=(lab.stat().st_atime_ns, lab.stat().st_mtime_ns + 10**9))  # an edited input
    third = prepare_dataset(a, out, val_size=4, sizes=(3, 6, 14), repetitions=3, ordering="by-city", coarse=True,
                            size=64, workers=1, progress=False)
    assert "val.h5" not in third.skipped and "train.h5" in third.skipped


def test_subset_size_larger_than_the_training_set_suggests_sizes(voc_root, tmp_path):
    a = get_adapter("voc", voc_root)
    with pytest.raises(InputError) as err:
        prepare_dataset(a, tmp_path / "o", val_size=4, size=16, workers=1, progress=False)  # paper sizes up to 1464
    assert "subset size 25 exceeds the 12 training images" in str(err.value) and "sizes=" in str(err.value)
    with pytest.raises(SettingsError, match="needs groups"):
        prepare_dataset(a, tmp_path / "o", val_size=4, sizes=(3,), ordering="by-city", size=16, progress=False)


# --------------------------------------------------------------------------- samples and command line


def test_public_samples_are_deterministic_per_seed(tmp_path):
    a, b, c = (write_public_sample("voc", tmp_path / n, seed=s) for n, s in (("a", 0), ("b", 0), ("c", 1)))
    rel = "VOCdevkit/VOC2012/SegmentationClass/2008_000003.png"
    assert (a.root / rel).read_bytes() == (b.root / rel).read_bytes() != (c.root / rel).read_bytes()
    with pytest.raises(Exception, match="not empty"):
        (tmp_path / "full").mkdir()
        (tmp_path / "full" / "x.txt").write_text("x")
        write_public_sample("cityscapes", tmp_path / "full")


def test_cli_sample_kind_and_prepare_dataset(tmp_path):
    from csaws_tools.cli import main
    from csaws_tools.cli.train import train

    runner = CliRunner()
    r = runner.invoke(main, ["sample", "--kind", "voc", str(tmp_path / "voc")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "voc" / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation" / "val.txt").is_file()
    r = runner.invoke(train, ["prepare-dataset", "voc", str(tmp_path / "voc"), "-o", str(tmp_path / "in")])
    assert r.exit_code == 2 and "--val-size 500 is more than the 10 images" in r.output
    r = runner.invoke(train, ["prepare-dataset", "voc", str(tmp_path / "voc"), "-o", str(tmp_path / "in"),
                              "--val-size", "4", "--sizes", "3,12", "--repetitions", "2", "--size", "32",
                              "-j", "1", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "train 12, val 4, test 6 images; 0 failed" in r.output
    r = runner.invoke(train, ["prepare-dataset", "--help"])
    assert r.exit_code == 0 and "--ordering" in r.output and "--coarse" in r.output
