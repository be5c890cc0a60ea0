"""The synthetic sample dataset: layout, determinism, DICOM storage, masks, and agreement with pydicom."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pydicom
import pytest
from click.testing import CliRunner
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from pydicom.uid import JPEG2000Lossless

from csaws_tools.classes import MASK_CLASSES
from csaws_tools.errors import OutputError
from csaws_tools.png import read_png
from csaws_tools.sample import VOI_STYLES, SampleInfo, write_sample

SMALL = (256, 208)


@pytest.fixture(scope="module")
def info(tmp_path_factory) -> SampleInfo:
    return write_sample(tmp_path_factory.mktemp("sample") / "out", seed=0)


def _mask(folder: Path, image_id: str, cls: str) -> np.ndarray:
    return read_png(folder / image_id[:3] / f"{image_id}_{cls}.png")


def _label_map(folder: Path, image_id: str) -> np.ndarray:
    """Merge the 11 masks by priority: 0..10 = MASK_CLASSES order, 11 = background."""
    lab = None
    for i, cls in reversed(list(enumerate(MASK_CLASSES))):
        m = _mask(folder, image_id, cls) > 0
        if lab is None:
            lab = np.full(m.shape, len(MASK_CLASSES), dtype=np.uint8)
        lab[m] = i
    return lab


def _all_images(info: SampleInfo):
    """(image id, dicom path, released png path, mask folder) for every image."""
    for i in info.train_ids:
        yield i, info.dicom_dir / i[:3] / f"{i}.dcm", info.trainval_dir / i[:3] / f"{i}.png", info.trainval_dir
    for i in info.test_ids:
        yield (i, info.dicom_test_dir / i[:3] / f"{i}.dcm", info.test_dir / "anonymized_dataset" / i[:3] / f"{i}.png",
               info.test_dir / "annotator_1")


def _view(info: SampleInfo, image_id: str) -> str:
    return next(im.view for im in info.images if im.image_id == image_id)


def _multi(ds, keyword: str) -> list:
    """A value of VM 1-n as a list."""
    if keyword not in ds:
        return []
    value = ds[keyword].value
    return list(value) if ds[keyword].VM > 1 else [value]


def _output_range(ds) -> tuple[float, float]:
    """The Modality output range pydicom maps the VOI output onto: stored range, rescaled."""
    lo, hi = 0.0, float(2**ds.BitsStored - 1)
    if "RescaleSlope" in ds:
        s, i = float(ds.RescaleSlope), float(ds.RescaleIntercept)
        lo, hi = lo * s + i, hi * s + i
    return lo, hi


def _pydicom_8bit(ds, index: int = 0, prefer_lut: bool = False) -> np.ndarray:
    """pydicom's Modality LUT + VOI (window preset ``index`` or VOI LUT) onto 0..255, MONOCHROME1 inverted."""
    values = apply_modality_lut(ds.pixel_array, ds)
    voi = apply_voi_lut(values, ds, index=index, prefer_lut=prefer_lut).astype(np.float64)
    if prefer_lut and "VOILUTSequence" in ds:
        expected = voi / (2 ** ds.VOILUTSequence[index].LUTDescriptor[2] - 1) * 255
    else:
        lo, hi = _output_range(ds)
        expected = (voi - lo) / (hi - lo) * 255
    if ds.PhotometricInterpretation == "MONOCHROME1":
        expected = 255 - expected
    return expected


# --------------------------------------------------------------------------- layout


def test_layout_and_file_counts(info):
    root = info.root
    assert info.train_patients == ["000", "001", "002", "003", "004", "005"]
    assert info.test_patients == ["006", "007"]
    assert info.validation_patients == ["000", "001"]
    ids = info.train_ids + info.test_ids
    assert len(ids) == len(set(ids))
    for image_id in ids:
        assert re.fullmatch(r"\d{3}_\d{1,2}", image_id)
    per_patient = {}
    for image_id in ids:
        per_patient.setdefault(image_id[:3], []).append(image_id)
    assert set(per_patient) == set(info.train_patients + info.test_patients)
    assert all(1 <= len(v) <= 2 for v in per_patient.values())

    for image_id in info.train_ids:
        pid = image_id[:3]
        assert (root / "dicom" / pid / f"{image_id}.dcm").is_file()
        assert (root / "CsawS" / "anonymized_dataset" / pid / f"{image_id}.png").is_file()
        for cls in MASK_CLASSES:
            assert (root / "CsawS" / "anonymized_dataset" / pid / f"{image_id}_{cls}.png").is_file()
    for image_id in info.test_ids:
        pid = image_id[:3]
        assert (root / "dicom_test" / pid / f"{image_id}.dcm").is_file()
        assert (root / "CsawS" / "test_data" / "anonymized_dataset" / pid / f"{image_id}.png").is_file()
        for k in (1, 2):
            for cls in MASK_CLASSES:
                assert (root / "CsawS" / "test_data" / f"annotator_{k}" / pid / f"{image_id}_{cls}.png").is_file()

    # exact counts: nothing else written
    n_train, n_test = len(info.train_ids), len(info.test_ids)
    assert len(list((root / "dicom").rglob("*.dcm"))) == n_train
    assert len(list((root / "dicom_test").rglob("*.dcm"))) == n_test
    assert len(list((root / "CsawS" / "anonymized_dataset").rglob("*.png"))) == n_train * 12
    assert len(list((root / "CsawS" / "test_data" / "anonymized_dataset").rglob("*.png"))) == n_test
    for k, per_image in ((1, 11), (2, 11), (3, 1)):
        assert len(list((root / "CsawS" / "test_data" / f"annotator_{k}").rglob("*.png"))) == n_test * per_image
    assert not list(root.rglob(".*.tmp"))


def test_annotator_3_has_only_cancer(info):
    files = sorted((info.test_dir / "annotator_3").rglob("*.png"))
    assert files
    assert all(f.stem.endswith("_cancer") for f in files)


def test_random_splits_json(info):
    splits = json.loads(info.splits_json.read_text())
    pool = set(info.train_patients) - {"000", "001"}
    assert splits
    for n, reps in splits.items():
        assert len(reps) == 5
        for rep, pids in reps.items():
            assert rep.isdigit()
            assert len(pids) == int(n) == len(set(pids))
            assert set(pids) <= pool
    assert max(int(n) for n in splits) == len(pool)


def test_sample_info_and_manifest(info):
    import pandas as pd

    table = pd.read_parquet(info.manifest)
    assert list(table["image_id"]) == info.train_ids + info.test_ids
    assert (table["rows"] == 640).all() and (table["cols"] == 512).all()
    # the recorded pixel counts are the masks' own
    row = table.iloc[0]
    cancer = _mask(info.trainval_dir, row["image_id"], "cancer")
    assert row["px_cancer"] == np.count_nonzero(cancer)


# --------------------------------------------------------------------------- determinism


def _file_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.suffix in (".png", ".dcm", ".json")}


def test_same_seed_gives_identical_files_and_workers_do_not_matter(tmp_path):
    a = write_sample(tmp_path / "a", seed=5, n_train_patients=2, n_test_patients=1, size=SMALL)
    b = write_sample(tmp_path / "b", seed=5, n_train_patients=2, n_test_patients=1, size=SMALL, workers=2)
    fa, fb = _file_bytes(a.root), _file_bytes(b.root)
    assert fa.keys() == fb.keys()
    assert len(fa) > 30
    differing = [k for k in fa if fa[k] != fb[k]]
    assert differing == []


def test_other_seed_gives_other_data(tmp_path):
    a = write_sample(tmp_path / "a", seed=1, n_train_patients=2, n_test_patients=0, size=SMALL)
    b = write_sample(tmp_path / "b", seed=2, n_train_patients=2, n_test_patients=0, size=SMALL)
    # compare the first image of each (ids may differ with the seed)
    ia, ib = a.train_ids[0], b.train_ids[0]
    da = pydicom.dcmread(a.dicom_dir / ia[:3] / f"{ia}.dcm").pixel_array
    db = pydicom.dcmread(b.dicom_dir / ib[:3] / f"{ib}.dcm").pixel_array
    assert da.shape == db.shape
    assert not np.array_equal(da, db)
    assert not np.array_equal(_mask(a.trainval_dir, ia, "cancer"), _mask(b.trainval_dir, ib, "cancer"))
    ua = pydicom.dcmread(a.dicom_dir / ia[:3] / f"{ia}.dcm").SOPInstanceUID
    ub = pydicom.dcmread(b.dicom_dir / ib[:3] / f"{ib}.dcm").SOPInstanceUID
    assert ua != ub


# --------------------------------------------------------------------------- DICOM


def test_dicom_headers_and_decoding(info):
    photometrics, syntaxes, sop_uids = set(), set(), set()
    for image_id, dcm, _, _ in _all_images(info):
        ds = pydicom.dcmread(dcm)
        assert ds.file_meta.MediaStorageSOPClassUID == "1.2.840.10008.5.1.4.1.1.1.2"
        assert ds.SOPClassUID == ds.file_meta.MediaStorageSOPClassUID
        assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID
        assert ds.Modality == "MG"
        assert ds.PatientID == image_id[:3]
        assert ds.InstanceNumber == int(image_id[4:])
        assert ds.ViewPosition == _view(info, image_id)
        assert ds.ImageLaterality in ("L", "R")
        assert ds.BurnedInAnnotation == "YES"
        assert ds.Manufacturer == "csaws-tools phantom"
        assert ds.BitsAllocated == 16 and 12 <= ds.BitsStored <= 14 and ds.HighBit == ds.BitsStored - 1
        assert ds.PixelRepresentation == 0
        assert (ds.Rows, ds.Columns) == (640, 512)
        assert len(ds.PixelSpacing) == 2 and float(ds.PixelSpacing[0]) > 0
        centers, widths = _multi(ds, "WindowCenter"), _multi(ds, "WindowWidth")
        assert len(centers) == len(widths) == len(_multi(ds, "WindowCenterWidthExplanation")) >= 1
        lo, hi = _output_range(ds)  # windows are in Modality output (rescaled) units
        assert all(float(w) > 1 for w in widths)
        assert all(lo < float(c) < hi for c in centers)
        arr = ds.pixel_array
        assert arr.shape == (640, 512) and arr.dtype == np.uint16
        assert int(arr.max()) < 2**ds.BitsStored
        photometrics.add(ds.PhotometricInterpretation)
        syntaxes.add(ds.file_meta.TransferSyntaxUID)
        sop_uids.add(ds.SOPInstanceUID)
    assert photometrics == {"MONOCHROME1", "MONOCHROME2"}
    assert JPEG2000Lossless in syntaxes and len(syntaxes) == 2
    assert len(sop_uids) == len(info.train_ids) + len(info.test_ids)


def test_monochrome1_stores_dense_tissue_as_low_values(info):
    for image_id, dcm, _, masks in _all_images(info):
        ds = pydicom.dcmread(dcm)
        arr = ds.pixel_array.astype(np.int64)
        background = arr[_label_map(masks, image_id) == len(MASK_CLASSES)].mean()
        gland = arr[_mask(masks, image_id, "mammary_gland") > 0].mean()
        if ds.PhotometricInterpretation == "MONOCHROME1":
            assert gland < background
        else:
            assert gland > background


def test_released_png_equals_pydicom_window(info):
    """The released PNG = pydicom's apply_modality_lut + apply_voi_lut (first window preset, the file's
    VOI LUT Function) mapped from the window's output range onto 0..255, MONOCHROME1 inverted (within 1)."""
    functions = set()
    for _, dcm, png, _ in _all_images(info):
        ds = pydicom.dcmread(dcm)
        expected = _pydicom_8bit(ds)
        released = read_png(png)
        assert released.dtype == np.uint8 and released.shape == expected.shape
        assert np.abs(released - expected).max() <= 1.0
        function = str(ds.get("VOILUTFunction", "LINEAR"))
        functions.add(function)
        # a LINEAR window clips air to black and dense tissue to white; a sigmoid only approaches them
        if function == "LINEAR":
            assert released.min() == 0 and released.max() == 255
        else:
            assert released.min() <= 5 and released.max() >= 250
    assert functions == {"LINEAR", "SIGMOID"}


def test_every_window_preset_and_the_voi_lut_agree_with_pydicom(info):
    """dicom2png's --voi-index N and --voi lut on the sample match pydicom for every preset and VOI LUT."""
    from csaws_tools.dicom2png import to_array

    checked_presets = checked_luts = 0
    for _, dcm, png, _ in _all_images(info):
        ds = pydicom.dcmread(dcm)
        for index in range(1, len(_multi(ds, "WindowCenter"))):
            ours, meta = to_array(dcm, voi_index=index)
            assert meta["voi_index"] == index and meta["voi_kind"] == "window"
            assert np.abs(ours - _pydicom_8bit(ds, index=index)).max() <= 1.0
            # the presets are different windows, not copies of the first
            assert not np.array_equal(ours, read_png(png))
            checked_presets += 1
        if "VOILUTSequence" in ds:
            ours, meta = to_array(dcm, voi="lut")
            assert meta["voi_kind"] == "lut"
            assert np.abs(ours - _pydicom_8bit(ds, prefer_lut=True)).max() <= 1.0
            # the LUT holds the first window: the same picture within one grey level
            assert np.abs(ours.astype(int) - read_png(png)).max() <= 1
            checked_luts += 1
    assert checked_presets >= 6 and checked_luts >= 2


def test_sample_exercises_the_modality_and_voi_variants(info):
    """Rescale (unit and non-unit slope), several presets, SIGMOID, LINEAR written or implied, VOI LUT."""
    import pandas as pd

    seen: dict[str, list[str]] = {}
    for image_id, dcm, _, _ in _all_images(info):
        ds = pydicom.dcmread(dcm, stop_before_pixels=True)

        def add(kind: str) -> None:
            seen.setdefault(kind, []).append(image_id)

        if "RescaleSlope" in ds:
            assert "RescaleIntercept" in ds
            add("rescale")
            if float(ds.RescaleSlope) != 1:
                add("non-unit slope")
            if ds.PhotometricInterpretation == "MONOCHROME1":
                add("rescale MONOCHROME1")
        n = len(_multi(ds, "WindowCenter"))
        if n > 1:
            add("presets")
            assert _multi(ds, "WindowCenterWidthExplanation")[0] == "NORMAL"
        if n == 3:
            add("three presets")
        function = ds.get("VOILUTFunction")
        add(f"function {function}")
        if function == "SIGMOID":
            add(f"SIGMOID {ds.PhotometricInterpretation}")
        if "VOILUTSequence" in ds:
            add("VOI LUT")
    for kind in ("rescale", "non-unit slope", "rescale MONOCHROME1", "presets", "three presets",
                 "function SIGMOID", "function LINEAR", "function None", "SIGMOID MONOCHROME1",
                 "SIGMOID MONOCHROME2", "VOI LUT"):
        assert kind in seen, kind
    # storage cycles over the images: the default sample has every style three times
    assert len(seen["rescale"]) == 6 and len(seen["function SIGMOID"]) == 3 and len(seen["VOI LUT"]) == 3

    table = pd.read_parquet(info.manifest)
    assert sorted(table["voi_style"].value_counts()) == [3] * len(VOI_STYLES)
    assert set(table.loc[table["rescale"], "image_id"]) == set(seen["rescale"])
    assert set(table.loc[table["voi_function"] == "SIGMOID", "image_id"]) == set(seen["function SIGMOID"])
    assert set(table.loc[table["voi_lut_sequence"], "image_id"]) == set(seen["VOI LUT"])
    assert set(table.loc[table["window_presets"] > 1, "image_id"]) == set(seen["presets"])


def test_dicom2png_defaults_reproduce_the_released_pngs(info, tmp_path):
    """csaws-prepare dicom2png with default settings turns the sample's DICOM into the released PNGs exactly."""
    from csaws_tools.dicom2png import convert

    released = {i: png for i, _, png, _ in _all_images(info)}
    for source, ids in ((info.dicom_dir, info.train_ids), (info.dicom_test_dir, info.test_ids)):
        out = tmp_path / source.name
        result = convert([source], out, workers=1, progress=False)
        assert result.exit_code == 0
        import pandas as pd

        table = pd.read_parquet(out / "manifest.parquet")
        assert (table["status"] == "ok").all() and len(table) == len(ids)
        assert (table["voi_kind"] == "window").all() and (table["voi_index"] == 0).all()
        assert set(table["voi_function"]) == {"LINEAR", "SIGMOID"}
        assert set(table["modality_kind"]) == {"identity", "rescale"}
        for image_id in ids:
            ours = read_png(out / image_id[:3] / f"{image_id}.png")
            np.testing.assert_array_equal(ours, read_png(released[image_id]), err_msg=image_id)


def test_right_breasts_are_mirrored(info):
    for image_id, dcm, _, masks in _all_images(info):
        ds = pydicom.dcmread(dcm)
        gland = _mask(masks, image_id, "mammary_gland") > 0
        centre_col = np.nonzero(gland)[1].mean() / gland.shape[1]
        if ds.ImageLaterality == "L":
            assert centre_col < 0.5 and ds.PatientOrientation[0] == "A"
        else:
            assert centre_col > 0.5 and ds.PatientOrientation[0] == "P"


# --------------------------------------------------------------------------- masks


def test_masks_are_binary_and_image_sized(info):
    for image_id, _, png, masks in _all_images(info):
        shape = read_png(png).shape
        for cls in MASK_CLASSES:
            m = _mask(masks, image_id, cls)
            assert m.shape == shape and m.dtype == np.uint8
            assert set(np.unique(m)) <= {0, 255}


def test_cancer_in_every_image_and_for_every_annotator(info):
    for image_id in info.train_ids:
        assert (_mask(info.trainval_dir, image_id, "cancer") > 0).sum() > 50
    for image_id in info.test_ids:
        for k in (1, 2, 3):
            assert (_mask(info.test_dir / f"annotator_{k}", image_id, "cancer") > 0).sum() > 50


def test_experts_disagree_plausibly(info):
    ious = []
    for image_id in info.test_ids:
        ms = [_mask(info.test_dir / f"annotator_{k}", image_id, "cancer") > 0 for k in (1, 2, 3)]
        for a in range(3):
            for b in range(a + 1, 3):
                ious.append((ms[a] & ms[b]).sum() / (ms[a] | ms[b]).sum())
        consensus = (ms[0].astype(int) + ms[1] + ms[2]) >= 2
        union, inter = ms[0] | ms[1] | ms[2], ms[0] & ms[1] & ms[2]
        assert inter.sum() < consensus.sum() < union.sum()
        # the complementary masks of annotators 1 and 2 are full sets
        for cls in MASK_CLASSES[1:]:
            assert _mask(info.test_dir / "annotator_2", image_id, cls).shape == ms[0].shape
    assert all(0.4 < v < 0.95 for v in ious)
    assert 0.55 < float(np.mean(ious)) < 0.85


def test_class_frequencies_are_plausible(info):
    counts = np.zeros(len(MASK_CLASSES) + 1)
    present = np.zeros(len(MASK_CLASSES) + 1)
    total = 0
    for image_id in info.train_ids:
        lab = _label_map(info.trainval_dir, image_id)
        c = np.bincount(lab.ravel(), minlength=len(MASK_CLASSES) + 1)
        counts += c
        present += c > 0
        total += lab.size
    frac = dict(zip(list(MASK_CLASSES) + ["background"], counts / total * 100))
    seen = dict(zip(list(MASK_CLASSES) + ["background"], present / len(info.train_ids)))
    assert 40 < frac["background"] < 85
    assert 15 < frac["mammary_gland"] < 45
    foreground = {k: v for k, v in frac.items() if k not in ("background", "mammary_gland")}
    assert max(foreground.values()) < frac["mammary_gland"]
    assert 0.05 < frac["cancer"] < 2.0
    assert 0.1 < frac["skin"] < 2.0
    for cls in ("cancer", "skin", "mammary_gland", "background"):
        assert seen[cls] == 1.0
    for cls in ("calcifications", "text", "nipple", "thick_vessels"):
        assert frac[cls] < 1.5


def test_pectoral_muscle_on_mlo_only(info):
    for image_id, _, _, masks in _all_images(info):
        n = (_mask(masks, image_id, "pectoral_muscle") > 0).sum()
        if _view(info, image_id) == "MLO":
            assert n > 0.01 * 640 * 512
        else:
            assert n == 0


def test_structures_are_where_the_masks_say(info):
    """Mask regions have the intensities of their structures in the released image."""
    for image_id, _, png, masks in _all_images(info):
        img = read_png(png).astype(float)
        lab = _label_map(masks, image_id)
        cancer, gland = lab == 0, lab == MASK_CLASSES.index("mammary_gland")
        assert img[lab == len(MASK_CLASSES)].mean() < 15  # background is dark
        assert img[cancer].mean() > img[gland].mean() + 20  # the tumour is a bright mass
        calc = lab == 1
        if calc.any():
            assert img[calc].mean() > 200
        text = _mask(masks, image_id, "text") > 0
        if text.any():
            assert (img[text] == 255).mean() > 0.2 and img[text].min() < 30  # bright glyphs on black
        skin = lab == MASK_CLASSES.index("skin")
        # the skin band is brighter than the fat just inside the breast boundary
        assert img[skin].mean() > 40
        if _view(info, image_id) == "MLO":
            pect = lab == MASK_CLASSES.index("pectoral_muscle")
            assert img[pect].mean() > img[gland].mean()


# --------------------------------------------------------------------------- folder handling and CLI


def test_refuses_a_foreign_non_empty_folder(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(OutputError, match="not empty"):
        write_sample(tmp_path, size=SMALL, n_train_patients=1, n_test_patients=0)
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_rewrites_a_previous_sample(tmp_path):
    first = write_sample(tmp_path / "s", seed=1, n_train_patients=3, n_test_patients=1, size=SMALL)
    (first.root / "other-output").mkdir()
    second = write_sample(tmp_path / "s", seed=2, n_train_patients=1, n_test_patients=0, size=SMALL)
    dcms = sorted(p.stem for p in second.root.rglob("*.dcm"))
    assert dcms == second.train_ids
    assert not (second.root / "dicom_test").exists()
    assert (second.root / "other-output").is_dir()  # files that are not the sample's are kept


def test_cli(tmp_path):
    from csaws_tools.cli import main

    runner = CliRunner()
    out = tmp_path / "cli"
    result = runner.invoke(main, ["sample", str(out), "--seed", "3", "--patients", "1", "--test-patients", "1",
                                  "--size", "200x160"])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and str(out / "dicom") in result.output
    dcms = sorted(out.rglob("*.dcm"))
    assert dcms and all(pydicom.dcmread(p).Rows == 200 for p in dcms)
    assert len(list((out / "dicom_test").rglob("*.dcm"))) >= 1

    result = runner.invoke(main, ["sample", str(out), "--size", "12x10"])
    assert result.exit_code == 2 and "--size" in result.output

    result = runner.invoke(main, ["sample", str(out), "--size", "200x160", "--full-size"])
    assert result.exit_code == 2

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "x").write_text("")
    result = runner.invoke(main, ["sample", str(foreign), "--size", "200x160"])
    assert result.exit_code == 2 and "error:" in result.output and "not empty" in result.output

    result = runner.invoke(main, ["sample", "--help"])
    for option in ("--seed", "--patients", "--test-patients", "--size", "--full-size", "--workers"):
        assert option in result.output
