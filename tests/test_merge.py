import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from click.testing import CliRunner
from PIL import Image

from csaws_tools.batch import read_manifest
from csaws_tools.classes import MASK_CLASSES, labels_json
from csaws_tools.merge import merge_masks, paint, read_mask, split_mask_name
from csaws_tools.png import read_png, read_text
from csaws_tools.qupath import fill_rings

SHAPE = (6, 5)
# Hand-built masks (rows x columns 6 x 5) and the map they must give.
REGIONS = {
    "mammary_gland": (slice(0, 6), slice(0, 4)),
    "pectoral_muscle": (slice(0, 2), slice(0, 2)),
    "skin": (slice(0, 6), slice(3, 4)),
    "cancer": (slice(2, 5), slice(1, 4)),
    "calcifications": ([3, 5], [2, 0]),  # (3, 2) lies in the cancer, (5, 0) in the gland
    "text": ([0], [4]),
}
EXPECTED_STANDARD = np.array([
    [10, 10, 11, 6, 8],
    [10, 10, 11, 6, 0],
    [11, 1, 1, 1, 0],
    [11, 1, 1, 1, 0],
    [11, 1, 1, 1, 0],
    [2, 11, 11, 6, 0],
], dtype=np.uint8)
EXPECTED_RELEASE = np.array([
    [9, 9, 10, 5, 7],
    [9, 9, 10, 5, 11],
    [10, 0, 0, 0, 11],
    [10, 0, 0, 0, 11],
    [10, 0, 0, 0, 11],
    [1, 10, 10, 5, 11],
], dtype=np.uint8)


def region_mask(cls, shape=SHAPE):
    m = np.zeros(shape, dtype=bool)
    if cls in REGIONS:
        m[REGIONS[cls]] = True
    return m


def write_mask(path: Path, mask: np.ndarray, style: str = "255") -> None:
    """Write a bool mask in one of the formats masks come in."""
    path.parent.mkdir(parents=True, exist_ok=True)
    m = mask.astype(np.uint8)
    if style == "255":
        Image.fromarray(m * 255).save(path)
    elif style == "01":
        Image.fromarray(m).save(path)
    elif style == "grey":
        Image.fromarray(m * 37).save(path)
    elif style == "rgb":
        Image.fromarray(np.stack([m * 200, m * 0, m * 10], axis=2)).save(path)
    elif style == "rgba":  # opaque black background, opaque red foreground
        Image.fromarray(np.stack([m * 255, m * 0, m * 0, np.full_like(m, 255)], axis=2)).save(path)
    elif style == "tiff16":
        tifffile.imwrite(path, m.astype(np.uint16) * 65535)
    else:
        raise ValueError(style)


STYLES = {"cancer": "255", "mammary_gland": "01", "skin": "rgb", "pectoral_muscle": "rgba",
          "calcifications": "grey"}


def write_image_masks(folder: Path, image_id: str, classes=MASK_CLASSES, shape=SHAPE, image=True,
                      masks=None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if image:
        Image.fromarray(np.full(shape, 90, dtype=np.uint8)).save(folder / f"{image_id}.png")
    for cls in classes:
        m = region_mask(cls, shape) if masks is None else masks.get(cls, np.zeros(shape, bool))
        write_mask(folder / f"{image_id}_{cls}.png", m, STYLES.get(cls, "255"))


def release(tmp_path: Path) -> Path:
    root = tmp_path / "CsawS"
    write_image_masks(root / "anonymized_dataset" / "000", "000_1")
    write_image_masks(root / "anonymized_dataset" / "000", "000_12")  # two-digit image number
    return root


def run(root, out, **kw):
    kw.setdefault("workers", 1)
    kw.setdefault("progress", False)
    return merge_masks(root, out, **kw)


@pytest.mark.parametrize("numbering, expected", [("standard", EXPECTED_STANDARD), ("release", EXPECTED_RELEASE)])
def test_overlapping_masks_by_priority(tmp_path, numbering, expected):
    root = release(tmp_path)
    result = run(tmp_path, tmp_path / "out", numbering=numbering)  # the folder holding CsawS/ works too
    assert result.summary("merged") == "2 merged, 0 skipped, 0 failed" and result.exit_code == 0
    for image_id in ("000_1", "000_12"):
        got = read_png(tmp_path / "out" / "trainval" / f"{image_id}.png")
        assert got.dtype == np.uint8 and np.array_equal(got, expected)
    with Image.open(tmp_path / "out" / "trainval" / "000_1.png") as im:
        assert im.mode == "P"  # palette: shows colours in viewers, reads back as ids
    assert (tmp_path / "out" / "labels.json").read_text().strip() == labels_json(numbering)
    frame = read_manifest(tmp_path / "out" / "manifest.parquet")
    row = frame[frame.image_id == "000_1"].iloc[0]
    assert row.patient_id == "000" and row.split == "trainval" and row.status == "ok"
    assert row.px_cancer == 9 and row.px_calcifications == 1 and row.px_background == 5
    assert row.px_mammary_gland == int((EXPECTED_STANDARD == 11).sum())
    assert len(json.loads(row.source_masks)) == 11
    assert pd.isna(row.warnings)
    assert root.exists()


def test_split_mask_name():
    assert split_mask_name("000_1_non-mammary_tissue") == ("000_1", "non-mammary_tissue")
    assert split_mask_name("img 3_Pectoral muscle") == ("img 3", "pectoral_muscle")
    assert split_mask_name("000_1") == ("000_1", None)


@pytest.mark.parametrize("style", ["255", "01", "grey", "rgb", "rgba", "tiff16"])
def test_read_mask_styles(tmp_path, style):
    m = region_mask("cancer")
    path = tmp_path / ("m.tif" if style == "tiff16" else "m.png")
    write_mask(path, m, style)
    assert np.array_equal(read_mask(path), m)


def test_rgba_transparent_background(tmp_path):
    m = region_mask("cancer")
    arr = np.zeros(SHAPE + (4,), np.uint8)
    arr[m] = (255, 255, 255, 255)
    arr[~m] = (255, 255, 255, 0)  # white but transparent: not marked
    Image.fromarray(arr).save(tmp_path / "m.png")
    assert np.array_equal(read_mask(tmp_path / "m.png"), m)


def test_plain_folder_with_tiff_masks(tmp_path):
    src = tmp_path / "exports" / "site_a"
    src.mkdir(parents=True)
    for cls in MASK_CLASSES:  # 16-bit TIFF masks, an image id with a space (sanitised in the output name)
        tifffile.imwrite(src / f"case 7_{cls}.tif", region_mask(cls).astype(np.uint16) * 1000)
    result = run(tmp_path / "exports", tmp_path / "exports" / "maps")  # output inside the input folder
    assert result.exit_code == 0
    assert np.array_equal(read_png(tmp_path / "exports" / "maps" / "site_a" / "case_7.png"), EXPECTED_STANDARD)
    again = run(tmp_path / "exports", tmp_path / "exports" / "maps")  # its own outputs are not inputs
    assert again.summary("merged") == "0 merged, 1 skipped, 0 failed"


def test_api_paint_with_arrays():
    masks = {c: region_mask(c) for c in REGIONS}
    assert np.array_equal(paint(masks, SHAPE), EXPECTED_STANDARD)
    assert np.array_equal(paint(masks, SHAPE, numbering="release"), EXPECTED_RELEASE)


def test_labels_scheme_applied_and_recorded(tmp_path):
    release(tmp_path)
    run(tmp_path / "CsawS", tmp_path / "out", labels="leave-one-out:skin")
    got = read_png(tmp_path / "out" / "trainval" / "000_1.png")
    from csaws_tools.labels import parse_scheme

    scheme = parse_scheme("leave-one-out:skin")
    assert np.array_equal(got, scheme.apply(EXPECTED_STANDARD))
    assert got[0, 3] == 0  # skin merged into background, even over the gland
    doc = json.loads((tmp_path / "out" / "labels.json").read_text())
    assert doc["scheme"]["spec"] == "leave-one-out:skin"
    assert [c["name"] for c in doc["classes"]] == list(scheme.names)
    frame = read_manifest(tmp_path / "out" / "manifest.parquet")
    assert "px_skin" not in frame.columns and frame.attrs["csaws_tools"]["settings"]["labels"] == "leave-one-out:skin"


def test_binary_release_numbering(tmp_path):
    release(tmp_path)
    run(tmp_path / "CsawS", tmp_path / "out", labels="binary", numbering="release")
    got = read_png(tmp_path / "out" / "trainval" / "000_1.png")
    assert np.array_equal(got, np.where(EXPECTED_STANDARD == 1, 0, 1))


def make_test_set(root: Path, cancer_by_annotator: dict) -> None:
    img_dir = root / "test_data" / "anonymized_dataset" / "150"
    img_dir.mkdir(parents=True)
    Image.fromarray(np.zeros(SHAPE, np.uint8)).save(img_dir / "150_2.png")
    for k, cancer in cancer_by_annotator.items():
        folder = root / "test_data" / f"annotator_{k}" / "150"
        classes = MASK_CLASSES if k != 3 else ("cancer",)
        masks = {c: region_mask(c) for c in classes}
        masks["cancer"] = cancer
        write_image_masks(folder, "150_2", classes=classes, image=False, masks=masks)


def test_test_set_annotators_and_consensus(tmp_path):
    root = tmp_path / "CsawS"
    a = np.zeros(SHAPE, bool); a[0:3, 0:3] = True
    b = np.zeros(SHAPE, bool); b[1:4, 1:4] = True
    c = np.zeros(SHAPE, bool); c[2:6, 0:2] = True
    make_test_set(root, {1: a, 2: b, 3: c})
    result = run(root, tmp_path / "out")
    assert result.exit_code == 0 and result.count("ok") == 4
    votes = a.astype(int) + b + c
    expected = np.where(votes >= 2, 1, 0)
    cons = read_png(tmp_path / "out" / "test" / "consensus" / "150_2.png")
    assert np.array_equal(cons, expected)
    # hand check of one pixel: (2, 1) is marked by all three, (0, 0) by one only
    assert cons[2, 1] == 1 and cons[0, 0] == 0
    a3 = read_png(tmp_path / "out" / "test" / "annotator_3" / "150_2.png")
    assert np.array_equal(a3, c.astype(np.uint8))
    a1 = read_png(tmp_path / "out" / "test" / "annotator_1" / "150_2.png")
    assert a1[0, 0] == 1 and a1[5, 0] == 2
    frame = read_manifest(tmp_path / "out" / "manifest.parquet").set_index("annotator")
    assert pd.isna(frame.loc["3", "warnings"])  # cancer-only annotator: no missing-mask warning
    assert frame.loc["consensus", "px_cancer"] == int(expected.sum())
    assert frame.loc["consensus", "split"] == "test"
    cons_rel = run(root, tmp_path / "out-r", numbering="release")
    assert cons_rel.exit_code == 0
    assert np.array_equal(read_png(tmp_path / "out-r" / "test" / "consensus" / "150_2.png"),
                          np.where(votes >= 2, 0, 11))


def test_consensus_needs_three_annotators(tmp_path):
    root = tmp_path / "CsawS"
    m = region_mask("cancer")
    make_test_set(root, {1: m, 2: m})
    result = run(root, tmp_path / "out")
    frame = read_manifest(tmp_path / "out" / "manifest.parquet").set_index("annotator")
    assert frame.loc["consensus", "status"] == "error"
    assert "missing for annotator(s) 3" in frame.loc["consensus", "error"]
    assert result.exit_code == 1


def test_size_mismatch_fails_that_image_only(tmp_path, capsys):
    root = release(tmp_path)
    bad = root / "anonymized_dataset" / "000" / "000_1_skin.png"
    write_mask(bad, np.ones((7, 5), bool))
    result = run(root, tmp_path / "out")
    assert result.summary("merged") == "1 merged, 0 skipped, 1 failed" and result.exit_code == 1
    frame = read_manifest(tmp_path / "out" / "manifest.parquet").set_index("image_id")
    err = frame.loc["000_1", "error"]
    assert str(bad) in err and "7x5" in err and "6x5" in err
    assert frame.loc["000_1", "split"] == "trainval"  # the row keeps the image's columns
    assert not (tmp_path / "out" / "trainval" / "000_1.png").exists()
    assert (tmp_path / "out" / "trainval" / "000_12.png").exists()
    assert "7x5" in capsys.readouterr().err


def test_image_without_masks_is_an_error(tmp_path):
    root = release(tmp_path)
    Image.fromarray(np.zeros(SHAPE, np.uint8)).save(root / "anonymized_dataset" / "000" / "000_3.png")
    result = run(root, tmp_path / "out")
    frame = read_manifest(tmp_path / "out" / "manifest.parquet")
    row = frame[frame.source.str.endswith("000_3.png")].iloc[0]
    assert row.status == "error" and "no class masks" in row.error
    assert result.failed == 1 and result.count("ok") == 2


def test_missing_mask_warns_and_strict_fails(tmp_path):
    root = release(tmp_path)
    (root / "anonymized_dataset" / "000" / "000_1_nipple.png").unlink()
    (root / "anonymized_dataset" / "000" / "000_1_text.png").unlink()
    result = run(root, tmp_path / "out")
    assert result.exit_code == 0
    frame = read_manifest(tmp_path / "out" / "manifest.parquet").set_index("image_id")
    assert "missing class masks: nipple, text" in frame.loc["000_1", "warnings"]
    assert pd.isna(frame.loc["000_12", "warnings"])
    got = read_png(tmp_path / "out" / "trainval" / "000_1.png")
    assert np.array_equal(got, np.where(EXPECTED_STANDARD == 8, 0, EXPECTED_STANDARD))  # text treated as empty
    strict = run(root, tmp_path / "out-strict", strict=True)
    frame = read_manifest(tmp_path / "out-strict" / "manifest.parquet").set_index("image_id")
    assert frame.loc["000_1", "status"] == "error" and "nipple, text" in frame.loc["000_1", "error"]
    assert strict.exit_code == 1 and strict.count("ok") == 1


def test_unknown_token_warns(tmp_path):
    root = release(tmp_path)
    write_mask(root / "anonymized_dataset" / "000" / "000_1_tumour.png", region_mask("cancer"))
    result = run(root, tmp_path / "out")
    assert result.exit_code == 0
    frame = read_manifest(tmp_path / "out" / "manifest.parquet").set_index("image_id")
    assert "unknown class tokens: tumour" in frame.loc["000_1", "warnings"]
    assert np.array_equal(read_png(tmp_path / "out" / "trainval" / "000_1.png"), EXPECTED_STANDARD)


def test_corrupt_mask(tmp_path):
    root = release(tmp_path)
    bad = root / "anonymized_dataset" / "000" / "000_12_cancer.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    result = run(root, tmp_path / "out")
    frame = read_manifest(tmp_path / "out" / "manifest.parquet").set_index("image_id")
    assert frame.loc["000_12", "status"] == "error"
    assert str(bad) in frame.loc["000_12", "error"] and "cannot read mask" in frame.loc["000_12", "error"]
    assert result.count("ok") == 1


def test_resume_skips_by_settings_hash(tmp_path):
    root = release(tmp_path)
    first = run(root, tmp_path / "out")
    out_file = tmp_path / "out" / "trainval" / "000_1.png"
    h = read_text(out_file)["csaws:settings"]
    # the map records the hash of the run's settings and its inputs' identities
    from csaws_tools.batch import task_hash
    a = first.rows[0]
    inputs = [str(root / "anonymized_dataset" / "000" / "000_1.png"), None, *a["source_masks"]]
    assert h == task_hash(a["settings_hash"], *inputs)
    mtime = out_file.stat().st_mtime_ns
    again = run(root, tmp_path / "out")
    assert again.summary("merged") == "0 merged, 2 skipped, 0 failed"
    assert out_file.stat().st_mtime_ns == mtime
    frame = read_manifest(tmp_path / "out" / "manifest.parquet").set_index("image_id")
    assert frame.loc["000_1", "px_cancer"] == 9  # counts are kept for skipped maps
    redo = run(root, tmp_path / "out", numbering="release")
    assert redo.count("ok") == 2
    forced = run(root, tmp_path / "out", numbering="release", overwrite=True)
    assert forced.count("ok") == 2


def test_parallel_workers_same_result(tmp_path):
    root = release(tmp_path)
    result = run(root, tmp_path / "out", workers=2)
    assert result.count("ok") == 2
    assert np.array_equal(read_png(tmp_path / "out" / "trainval" / "000_12.png"), EXPECTED_STANDARD)


# ------------------------------------------------------------------ QuPath GeoJSON

def square(x0, y0, x1, y1):
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]


def feature(geometry, name):
    return {"type": "Feature", "geometry": geometry,
            "properties": {"objectType": "annotation", "classification": {"name": name, "color": [255, 0, 0]}}}


def test_geojson_matches_equivalent_png_masks(tmp_path):
    shape = (12, 10)
    feats = [
        # mammary gland: a polygon with a hole (rows 0..9, cols 0..7 minus rows 3..5, cols 2..4)
        feature({"type": "Polygon", "coordinates": [square(0, 0, 8, 10), square(2, 3, 5, 6)]}, "Mammary gland"),
        # pectoral muscle: a multipolygon of two squares, one overlapping the gland's hole
        feature({"type": "MultiPolygon", "coordinates": [[square(0, 0, 2, 2)], [square(3, 4, 4, 5)]]},
                "Pectoral muscle"),
        feature({"type": "Polygon", "coordinates": [square(6, 8, 9, 11)]}, "cancer"),
        # two overlapping cancer annotations are united
        feature({"type": "Polygon", "coordinates": [square(7, 9, 10, 12)]}, "Cancer"),
        feature({"type": "Polygon", "coordinates": [square(0, 11, 1, 12)]}, "Tumour"),
        feature({"type": "Point", "coordinates": [1, 1]}, "Skin"),
    ]
    png_dir, gj_dir = tmp_path / "png", tmp_path / "gj"
    masks = {c: np.zeros(shape, bool) for c in MASK_CLASSES}
    masks["mammary_gland"][0:10, 0:8] = True
    masks["mammary_gland"][3:6, 2:5] = False
    masks["pectoral_muscle"][0:2, 0:2] = True
    masks["pectoral_muscle"][4:5, 3:4] = True
    masks["cancer"][8:11, 6:9] = True
    masks["cancer"][9:12, 7:10] = True
    write_image_masks(png_dir, "img", shape=shape, masks=masks)
    gj_dir.mkdir()
    (gj_dir / "img.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    Image.fromarray(np.zeros(shape, np.uint8)).save(gj_dir / "img.png")
    assert run(png_dir, tmp_path / "out-png").exit_code == 0
    assert run(gj_dir, tmp_path / "out-gj").exit_code == 0
    a = read_png(tmp_path / "out-png" / "img.png")
    b = read_png(tmp_path / "out-gj" / "img.png")
    assert np.array_equal(a, b)
    assert b[4, 3] == 10 and b[4, 2] == 0  # pectoral square inside the hole; hole is background
    frame = read_manifest(tmp_path / "out-gj" / "manifest.parquet")
    w = frame.warnings.iloc[0]
    assert "'Tumour' (1)" in w and "1 point or line annotation(s) ignored" in w and "no annotations of:" in w


def test_geojson_size_from_option_or_error(tmp_path):
    gj = tmp_path / "gj"
    gj.mkdir()
    (gj / "a.geojson").write_text(json.dumps([feature({"type": "Polygon", "coordinates": [square(1, 1, 3, 3)]},
                                                      "cancer")]))
    result = run(gj, tmp_path / "out")
    assert result.exit_code == 1 and "size=(ROWS, COLS)" in result.rows[0]["error"]
    result = run(gj, tmp_path / "out", size=(5, 4), overwrite=True)
    assert result.exit_code == 0
    got = read_png(tmp_path / "out" / "a.png")
    expected = np.zeros((5, 4), np.uint8)
    expected[1:3, 1:3] = 1
    assert np.array_equal(got, expected)


def test_fill_rings_against_skimage_polygon():
    from skimage.draw import polygon as sk_polygon

    rng = np.random.default_rng(3)
    shape = (60, 50)
    for _ in range(20):
        n = int(rng.integers(3, 12))
        ang = np.sort(rng.uniform(0, 2 * np.pi, n))
        rad = rng.uniform(5, 30, n)
        xy = np.stack([25.3 + rad * np.cos(ang), 29.7 + rad * np.sin(ang)], axis=1)  # may leave the image
        ring = np.vstack([xy, xy[:1]])
        got = fill_rings([ring], shape)
        ref = np.zeros(shape, bool)
        rr, cc = sk_polygon(xy[:, 1] - 0.5, xy[:, 0] - 0.5, shape)  # pixel centres at +0.5
        ref[rr, cc] = True
        assert np.array_equal(got, ref)


def test_corrupt_geojson(tmp_path):
    gj = tmp_path / "gj"
    gj.mkdir()
    (gj / "a.geojson").write_text("{not json")
    result = run(gj, tmp_path / "out", size=(4, 4))
    assert result.exit_code == 1 and str(gj / "a.geojson") in result.rows[0]["error"]


# ------------------------------------------------------------------ CLI and the sample dataset

def test_cli(tmp_path):
    from csaws_tools.cli import main

    release(tmp_path)
    res = CliRunner().invoke(main, ["merge-masks", str(tmp_path / "CsawS"), "-o", str(tmp_path / "out"),
                                    "--workers", "1", "--no-progress", "--numbering", "release"])
    assert res.exit_code == 0, res.output
    assert "2 converted, 0 skipped, 0 failed" in res.output
    assert np.array_equal(read_png(tmp_path / "out" / "trainval" / "000_1.png"), EXPECTED_RELEASE)
    res = CliRunner().invoke(main, ["merge-masks", str(tmp_path / "CsawS"), "-o", str(tmp_path / "o2"),
                                    "--labels", "keep:tumour"])
    assert res.exit_code == 2 and "unknown class 'tumour'" in res.output
    res = CliRunner().invoke(main, ["merge-masks", "--help"])
    for opt in ("--numbering", "--labels", "--strict", "--size", "--workers", "--shard"):
        assert opt in res.output


def _direct_map(folder: Path, image_id: str, classes=MASK_CLASSES) -> np.ndarray:
    """Reference: the smallest standard id among the classes marking a pixel (independent of paint order)."""
    stack, ids = [], []
    for k, cls in enumerate(MASK_CLASSES):
        p = folder / f"{image_id}_{cls}.png"
        if cls in classes and p.exists():
            stack.append(np.asarray(Image.open(p).convert("L")) > 0)
            ids.append(k + 1)
    stack = np.stack(stack)
    best = np.where(stack, np.array(ids)[:, None, None], 99).min(axis=0)
    return np.where(best == 99, 0, best).astype(np.uint8)


def test_whole_sample(sample_root, tmp_path):
    out = tmp_path / "out"
    result = run(sample_root, out, workers=2)
    assert result.failed == 0 and result.count("ok") > 0
    csaws = sample_root / "CsawS"
    frame = read_manifest(out / "manifest.parquet")
    assert frame.warnings.isna().all()
    n_train = sum(1 for p in (csaws / "anonymized_dataset").rglob("*.png") if split_mask_name(p.stem)[1] is None)
    assert (frame.split == "trainval").sum() == n_train
    for row in frame[frame.split == "trainval"].itertuples():
        expected = _direct_map(csaws / "anonymized_dataset" / row.patient_id, row.image_id)
        got = read_png(row.output)
        assert np.array_equal(got, expected), row.image_id
        assert row.px_cancer == int((expected == 1).sum())
    for row in frame[frame.annotator == "consensus"].itertuples():
        votes = sum(np.asarray(Image.open(csaws / "test_data" / f"annotator_{k}" / row.patient_id /
                                          f"{row.image_id}_cancer.png")) > 0 for k in (1, 2, 3))
        assert np.array_equal(read_png(row.output), (votes >= 2).astype(np.uint8))
    n_test = len(list((csaws / "test_data" / "anonymized_dataset").rglob("*.png")))
    assert (frame.annotator == "consensus").sum() == n_test
