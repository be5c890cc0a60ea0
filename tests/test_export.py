"""nnU-Net v2 and MONAI export: the dataset format, patient-level folds, label schemes, reruns, bad inputs."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from skimage import io as skio

from csaws_tools.classes import labels_json
from csaws_tools.cli import main
from csaws_tools.errors import InputError, OutputError
from csaws_tools.export import export_monai, export_nnunet, export_scheme, label_lut
from csaws_tools.png import write_png
from csaws_tools.splits import make_splits, patient_of, save_splits


@pytest.fixture(scope="module")
def maps(sample_root, tmp_path_factory) -> Path:
    """The sample's label maps, merged once for this module."""
    from csaws_tools.merge import merge_masks

    out = tmp_path_factory.mktemp("maps")
    result = merge_masks(sample_root / "CsawS", out, workers=1, progress=False)
    assert result.failed == 0
    return out


def check_nnunet_dataset(folder: Path) -> dict:
    """A schema check written from nnU-Net v2's documentation/dataset_format.md and manual_data_splits.md.

    Returns dataset.json; fails the test on any violation.
    """
    ds = json.loads((folder / "dataset.json").read_text())
    for key in ("channel_names", "labels", "numTraining", "file_ending"):
        assert key in ds, f"dataset.json lacks required key {key}"
    assert re.fullmatch(r"Dataset\d{3}_[A-Za-z0-9_-]+", folder.name)
    ending = ds["file_ending"]
    assert ending == ".png"
    channels = sorted(ds["channel_names"], key=int)
    assert channels == [str(i) for i in range(len(channels))]
    labels = ds["labels"]
    assert labels.get("background") == 0
    values = sorted(labels.values())
    assert all(isinstance(v, int) for v in values)
    assert values == list(range(len(values))), "label ids must be consecutive from 0"

    def cases_of(sub: str) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for p in (folder / sub).glob("*" + ending):
            m = re.fullmatch(r"(.+)_(\d{4})" + re.escape(ending), p.name)
            assert m, f"{p.name} does not follow case_identifier_XXXX{ending}"
            out.setdefault(m.group(1), set()).add(m.group(2))
        return out

    train = cases_of("imagesTr")
    assert len(train) == ds["numTraining"]
    labelled = {p.name[: -len(ending)] for p in (folder / "labelsTr").glob("*" + ending)}
    assert labelled == set(train), "every training case needs exactly one label file"
    want = {f"{int(c):04d}" for c in channels}
    for sub, cases in (("imagesTr", train), ("imagesTs", cases_of("imagesTs") if (folder / "imagesTs").is_dir() else {})):
        for case, chans in cases.items():
            assert chans == want, f"{sub}/{case}: channels {chans}, expected {want}"
            # nnU-Net's NaturalImage2DIO reads PNGs with skimage.io.imread: 2-D is one channel,
            # 3-D is RGB(A) (a palette PNG comes back as RGB)
            image = skio.imread(folder / sub / f"{case}_0000{ending}")
            assert image.ndim == 2, f"{case}: image has shape {image.shape}, expected one grey channel"
            lab_dir = "labelsTr" if sub == "imagesTr" else "labelsTs"
            lab = folder / lab_dir / f"{case}{ending}"
            if sub == "imagesTs" and not lab.exists():
                continue
            seg = skio.imread(lab)
            assert seg.ndim == 2, f"{lab}: shape {seg.shape}; labels must be one plain channel (no palette)"
            assert seg.shape == image.shape, f"{case}: label and image sizes differ"
            found = set(np.unique(seg).tolist())
            assert found <= set(values), f"{lab}: unexpected labels {found - set(values)}"
    return ds


def check_folds(folder: Path) -> list[dict]:
    """splits_final.json: a list of {"train", "val"} over training cases, no patient on both sides of a fold."""
    folds = json.loads((folder / "splits_final.json").read_text())
    cases = {p.name[: -len("_0000.png")] for p in (folder / "imagesTr").glob("*_0000.png")}
    assert isinstance(folds, list) and folds
    for fold in folds:
        assert set(fold) == {"train", "val"}
        assert set(fold["train"]) <= cases and set(fold["val"]) <= cases
        assert not {patient_of(c) for c in fold["train"]} & {patient_of(c) for c in fold["val"]}
    return folds


def test_nnunet_export_of_the_sample_passes_the_dataset_format_check(sample_root, maps, tmp_path):
    result = export_nnunet(maps, sample_root / "CsawS", tmp_path, workers=1, progress=False)
    assert result.exit_code == 0 and result.failed == 0
    folder = tmp_path / "Dataset501_CSAWS"
    ds = check_nnunet_dataset(folder)
    assert ds["numTraining"] == len(list((maps / "trainval").glob("*.png")))
    assert len(ds["labels"]) == 12
    assert ds["channel_names"] == {"0": "zscore"}
    assert len(list((folder / "labelsTs").glob("*.png"))) == len(list((maps / "test" / "consensus").glob("*.png")))
    folds = check_folds(folder)
    # protocol validation patients 000 and 001 are in the sample: they form fold 0's validation side
    assert {patient_of(c) for c in folds[0]["val"]} == {"000", "001"}
    assert sorted(folds[0]["train"] + folds[0]["val"]) == sorted(
        p.name[:-9] for p in (folder / "imagesTr").glob("*_0000.png"))


def test_folds_from_a_splits_file_are_its_subsets_with_no_patient_on_both_sides(sample_root, maps, tmp_path):
    ids = sorted(p.stem for p in (maps / "trainval").glob("*.png"))
    with pytest.warns(UserWarning, match="fewer than N images, as whole patients"):  # N=4 cannot be met by whole patients
        splits = make_splits(ids, sizes=(2, 4), repetitions=2, seed=3)
    path = save_splits(splits, tmp_path / "splits.json")
    result = export_nnunet(maps, sample_root / "CsawS", tmp_path / "raw", splits=path, workers=1, progress=False)
    folder = tmp_path / "raw" / "Dataset501_CSAWS"
    folds = check_folds(folder)
    assert len(folds) == 1 + 2 * 2
    assert folds[1]["train"] == sorted(splits["subsets"]["2"]["0"]["images"])
    assert all(f["val"] == sorted(splits["val"]["images"]) for f in folds)
    record = json.loads((folder / "csaws_export.json").read_text())
    assert record["folds"][1].startswith("training subset N=2, repetition 0")
    assert result.fold_names == record["folds"]


def test_without_labels_keeps_cancer_and_merges_every_other_class_into_background(sample_root, maps, tmp_path):
    export_nnunet(maps, sample_root / "CsawS", tmp_path, labels="without", workers=1, progress=False)
    folder = tmp_path / "Dataset501_CSAWS"
    ds = check_nnunet_dataset(folder)
    assert ds["labels"] == {"background": 0, "cancer": 1}
    for src in (maps / "trainval").glob("*.png"):
        merged = np.asarray(Image.open(src))  # palette indices: standard ids
        exported = np.asarray(Image.open(folder / "labelsTr" / src.name))
        np.testing.assert_array_equal(exported, (merged == 1).astype(np.uint8))


def test_leave_one_out_scheme_renumbers_the_kept_classes_consecutively(sample_root, maps, tmp_path):
    export_nnunet(maps, sample_root / "CsawS", tmp_path, labels="leave-one-out:skin", workers=1, progress=False)
    folder = tmp_path / "Dataset501_CSAWS"
    ds = check_nnunet_dataset(folder)
    assert "skin" not in ds["labels"] and ds["labels"]["nipple"] == 6 and len(ds["labels"]) == 11
    src = next((maps / "trainval").glob("*.png"))
    merged = np.asarray(Image.open(src))
    exported = np.asarray(Image.open(folder / "labelsTr" / src.name))
    assert np.all(exported[merged == 6] == 0)  # skin -> background
    assert np.all(exported[merged == 7] == 6)  # nipple moves down one id


def test_images_are_hard_links_and_a_rerun_skips_every_case(sample_root, maps, tmp_path):
    first = export_nnunet(maps, sample_root / "CsawS", tmp_path, workers=1, progress=False)
    folder = tmp_path / "Dataset501_CSAWS"
    image = sample_root / "CsawS" / "anonymized_dataset" / "000"
    src = next(p for p in image.glob("000_*.png") if p.stem.count("_") == 1)
    assert os.path.samefile(src, folder / "imagesTr" / f"{src.stem}_0000.png")
    before = {p: p.stat().st_mtime_ns for p in folder.rglob("*.png")}
    again = export_nnunet(maps, sample_root / "CsawS", tmp_path, workers=1, progress=False)
    assert again.count("skipped") == first.count("ok") and again.count("ok") == 0
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*.png")} == before
    copied = export_nnunet(maps, sample_root / "CsawS", tmp_path / "copies", link=False, workers=1, progress=False)
    assert copied.failed == 0
    assert not os.path.samefile(src, tmp_path / "copies" / "Dataset501_CSAWS" / "imagesTr" / f"{src.stem}_0000.png")


def _tiny(root: Path, *, image_mode: str = "L", mismatch: str | None = None) -> tuple[Path, Path]:
    """A hand-made MAPS and IMAGES pair: 4 patients, one image each, standard 12-class maps."""
    maps, images = root / "maps", root / "images"
    (maps / "trainval").mkdir(parents=True)
    images.mkdir()
    (maps / "labels.json").write_text(labels_json("standard"))
    rng = np.random.default_rng(0)
    for pid in ("100", "101", "102", "103"):
        image_id = f"{pid}_1"
        lab = rng.integers(0, 12, size=(32, 24), dtype=np.uint8)
        write_png(maps / "trainval" / f"{image_id}.png", lab)
        shape = (30, 24) if image_id == mismatch else (32, 24)
        grey = rng.integers(0, 256, size=shape, dtype=np.uint8)
        if image_mode == "RGB":
            Image.fromarray(np.stack([grey, grey // 2, grey // 3], axis=-1), "RGB").save(images / f"{image_id}.png")
        elif image_mode == "P":
            Image.fromarray(grey, "L").convert("P").save(images / f"{image_id}.png")
        else:
            write_png(images / f"{image_id}.png", grey)
    return maps, images


@pytest.mark.parametrize("mode", ["RGB", "P"])
def test_colour_and_palette_images_are_converted_to_one_grey_channel(tmp_path, mode):
    maps, images = _tiny(tmp_path, image_mode=mode)
    result = export_nnunet(maps, images, tmp_path / "raw", workers=1, progress=False)
    assert result.failed == 0
    folder = tmp_path / "raw" / "Dataset501_CSAWS"
    check_nnunet_dataset(folder)
    assert {r["image_method"] for r in result.rows} == {"converted"}
    src = Image.open(images / "100_1.png")
    want = np.asarray(src)[..., 0] if mode == "RGB" else np.asarray(src.convert("L"))
    np.testing.assert_array_equal(np.asarray(Image.open(folder / "imagesTr" / "100_1_0000.png")), want)
    again = export_nnunet(maps, images, tmp_path / "raw", workers=1, progress=False)
    assert again.count("skipped") == 4


def test_a_size_mismatch_fails_one_case_and_the_dataset_stays_consistent(tmp_path):
    maps, images = _tiny(tmp_path, mismatch="102_1")
    result = export_nnunet(maps, images, tmp_path / "raw", workers=1, progress=False)
    assert result.exit_code == 1 and result.failed == 1
    row = next(r for r in result.rows if r["status"] == "error")
    assert "size mismatch" in row["error"] and "102_1" in row["error"]
    folder = tmp_path / "raw" / "Dataset501_CSAWS"
    ds = check_nnunet_dataset(folder)
    assert ds["numTraining"] == 3
    assert not (folder / "imagesTr" / "102_1_0000.png").exists()
    assert all("102_1" not in f["train"] + f["val"] for f in check_folds(folder))


def test_cases_of_an_earlier_export_that_are_gone_are_removed(tmp_path):
    maps, images = _tiny(tmp_path)
    export_nnunet(maps, images, tmp_path / "raw", workers=1, progress=False)
    (maps / "trainval" / "103_1.png").unlink()
    result = export_nnunet(maps, images, tmp_path / "raw", workers=1, progress=False)
    folder = tmp_path / "raw" / "Dataset501_CSAWS"
    assert result.removed == 2  # image and label of 103_1
    assert check_nnunet_dataset(folder)["numTraining"] == 3


def test_refuses_a_foreign_folder_and_a_second_dataset_with_the_same_id(tmp_path):
    maps, images = _tiny(tmp_path)
    foreign = tmp_path / "raw" / "Dataset501_CSAWS"
    foreign.mkdir(parents=True)
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="not an earlier export"):
        export_nnunet(maps, images, tmp_path / "raw", workers=1, progress=False)
    assert (foreign / "notes.txt").read_text() == "mine"
    with pytest.raises(OutputError, match="same dataset id 501"):
        export_nnunet(maps, images, tmp_path / "raw", name="Other", workers=1, progress=False)


def test_release_numbered_maps_are_renumbered_and_binary_maps_cannot_give_all_classes(tmp_path):
    (tmp_path / "labels.json").write_text(labels_json("release"))
    lut = label_lut(tmp_path, export_scheme("with"))
    assert lut[11] == 0 and lut[0] == 1 and lut[10] == 11 and lut[12] == 255
    (tmp_path / "labels.json").write_text(json.dumps({
        "numbering": "standard", "scheme": export_scheme("binary").to_dict(), "classes": []}))
    assert label_lut(tmp_path, export_scheme("without"))[:3].tolist() == [0, 1, 255]
    with pytest.raises(InputError, match="rerun merge_masks without labels="):
        label_lut(tmp_path, export_scheme("with"))


def test_nnunet_export_takes_run_options_like_the_other_stages_and_the_old_keywords_alike(tmp_path):
    from csaws_tools.errors import SettingsError
    from csaws_tools.execution.options import RunOptions

    maps, images = _tiny(tmp_path)
    with_run = export_nnunet(maps, images, tmp_path / "a", run=RunOptions(workers=1, progress=False))
    with_keywords = export_nnunet(maps, images, tmp_path / "b", workers=1, progress=False)
    assert with_run.exit_code == with_keywords.exit_code == 0
    folder_a, folder_b = with_run.folder, with_keywords.folder
    made = sorted(p.relative_to(folder_a) for p in folder_a.rglob("*.png"))
    assert made and made == sorted(p.relative_to(folder_b) for p in folder_b.rglob("*.png"))
    assert all((folder_a / r).read_bytes() == (folder_b / r).read_bytes() for r in made)
    rerun = export_nnunet(maps, images, tmp_path / "a", run=RunOptions(workers=1, progress=False))
    assert rerun.count("skipped") == len(rerun.rows) > 0
    again = export_nnunet(maps, images, tmp_path / "a", run=RunOptions(workers=1, progress=False, overwrite=True))
    assert again.count("ok") == len(again.rows) and again.count("skipped") == 0  # overwrite from the run options
    with pytest.raises(SettingsError, match="shard does not apply to export_nnunet"):
        export_nnunet(maps, images, tmp_path / "c", run=RunOptions(shard=(1, 2), progress=False))
    with pytest.raises(TypeError, match="export_nnunet.*'wokers'"):
        export_nnunet(maps, images, tmp_path / "c", wokers=1)
    assert not (tmp_path / "c").exists()


def test_a_map_holding_an_id_outside_its_classes_is_one_failed_case(tmp_path):
    maps, images = _tiny(tmp_path)
    write_png(maps / "trainval" / "101_1.png", np.full((32, 24), 200, dtype=np.uint8))
    result = export_nnunet(maps, images, tmp_path / "raw", workers=1, progress=False)
    assert result.failed == 1
    assert "200" in next(r["error"] for r in result.rows if r["status"] == "error")


def test_monai_datalist_paths_resolve_from_the_json_folder_and_split_by_patient(sample_root, maps, tmp_path):
    out = tmp_path / "lists" / "datalist.json"
    result = export_monai(maps, sample_root / "CsawS", out)
    assert result.exit_code == 0
    doc = json.loads(out.read_text())
    assert set(doc) >= {"training", "validation", "test"}
    n_maps = len(list((maps / "trainval").glob("*.png")))
    assert len(doc["training"]) + len(doc["validation"]) == n_maps
    assert len(doc["test"]) == len(list((maps / "test" / "consensus").glob("*.png")))
    for key in ("training", "validation", "test"):
        for e in doc[key]:
            assert not os.path.isabs(e["image"]) and not os.path.isabs(e["label"])
            image, label = out.parent / e["image"], out.parent / e["label"]
            assert image.is_file() and label.is_file() and Path(image).stem == Path(label).stem
    train_p = {patient_of(Path(e["image"]).stem) for e in doc["training"]}
    val_p = {patient_of(Path(e["image"]).stem) for e in doc["validation"]}
    assert val_p == {"000", "001"} and not train_p & val_p
    assert doc["labels"]["0"] == "background" and doc["labels"]["1"] == "cancer"
    based = export_monai(maps, sample_root / "CsawS", tmp_path / "d2.json", base_dir=sample_root)
    entry = based.datalist["training"][0]
    assert (sample_root / entry["image"]).is_file() and entry["image"].startswith("CsawS")


def test_monai_leaves_out_and_reports_a_mismatched_pair(tmp_path):
    maps, images = _tiny(tmp_path, mismatch="100_1")
    result = export_monai(maps, images, tmp_path / "d.json")
    assert result.exit_code == 1 and any("100_1" in p for p in result.problems)
    doc = json.loads((tmp_path / "d.json").read_text())
    assert len(doc["training"]) + len(doc["validation"]) == 3


def test_export_command_lines_print_one_summary_and_exit_by_outcome(sample_root, maps, tmp_path):
    runner = CliRunner()
    res = runner.invoke(main, ["export", "nnunet", str(maps), str(sample_root / "CsawS"), "-o", str(tmp_path),
                               "--labels", "without", "-j", "1", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert re.search(r"0 failed in [0-9.]+ s, [0-9.]+ files/s; ", res.output) and "2 labels" in res.output
    res = runner.invoke(main, ["export", "monai", str(maps), str(sample_root / "CsawS"), "-o",
                               str(tmp_path / "datalist.json")])
    assert res.exit_code == 0 and "training" in res.output
    res = runner.invoke(main, ["export", "nnunet", str(maps), str(sample_root / "CsawS"), "-o", str(tmp_path),
                               "--labels", "nonsense"])
    assert res.exit_code == 2 and "unknown label scheme" in res.output and "Traceback" not in res.output
    for args in (["export", "--help"], ["export", "nnunet", "--help"], ["export", "monai", "--help"]):
        res = runner.invoke(main, args)
        assert res.exit_code == 0 and "Example" in res.output


@pytest.mark.parametrize("command", [["export"], ["export", "nnunet"], ["export", "monai"], ["check"]])
def test_every_help_example_runs_on_the_default_sample(sample_root, maps, tmp_path, monkeypatch, command):
    import shlex

    (tmp_path / "CsawS").symlink_to(sample_root / "CsawS", target_is_directory=True)
    (tmp_path / "maps").symlink_to(maps, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    text = runner.invoke(main, [*command, "--help"]).output
    examples = [line.strip() for line in text.splitlines() if line.strip().startswith("csaws-prepare ")]
    assert examples, f"no examples in {' '.join(command)} --help"
    for example in examples:
        args = shlex.split(example.split(">")[0])[1:]
        res = runner.invoke(main, args)
        assert res.exit_code == 0, f"{example}: {res.output}"


def test_a_rerun_notices_an_image_replaced_by_one_of_another_size(tmp_path):
    maps, images = _tiny(tmp_path)
    assert export_nnunet(maps, images, tmp_path / "raw", workers=1, progress=False).failed == 0
    (images / "101_1.png").unlink()
    write_png(images / "101_1.png", np.zeros((16, 16), np.uint8))
    result = export_nnunet(maps, images, tmp_path / "raw", workers=1, progress=False)
    assert result.failed == 1 and "size mismatch" in next(r["error"] for r in result.rows if r["status"] == "error")
    folder = tmp_path / "raw" / "Dataset501_CSAWS"
    assert check_nnunet_dataset(folder)["numTraining"] == 3
    assert not (folder / "labelsTr" / "101_1.png").exists()
