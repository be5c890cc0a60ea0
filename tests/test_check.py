"""``check``: every kind of problem found once, from names and headers only, nothing written, no traceback."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from csaws_tools.check import check_dataset, header_size
from csaws_tools.cli import main
from csaws_tools.errors import InputError
from csaws_tools.png import write_png


def _snapshot(root: Path) -> dict:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            out[p] = (st.st_size, st.st_mtime_ns)
    return out


@pytest.fixture()
def release(sample_root, tmp_path) -> Path:
    """A private copy of the sample's release folder to break."""
    dst = tmp_path / "CsawS"
    shutil.copytree(sample_root / "CsawS", dst)
    return dst


def _kinds(report) -> dict[str, int]:
    return {k: v for k, v in report.counts().items() if v}


def test_the_sample_release_is_clean_and_counted(sample_root):
    report = check_dataset(sample_root)
    assert report.layout == "release" and report.ok and report.exit_code == 0
    assert report.images == 15 and report.annotators == ["annotator_1", "annotator_2", "annotator_3"]
    # train/val: 11 images x 11 masks; test: 4 images x (11 + 11 + 1)
    assert report.masks == 11 * 11 + 4 * 23


def test_each_broken_thing_is_exactly_one_finding_of_its_kind(release):
    a = release / "anonymized_dataset"
    (a / "000" / "000_6_skin.png").unlink()
    shutil.copy(release / "test_data" / "annotator_1" / "006" / "006_2_skin.png",
                release / "test_data" / "annotator_3" / "006")
    shutil.copy(a / "000" / "000_6_cancer.png", a / "000" / "000_6_cancer.tif")
    shutil.copy(a / "000" / "000_6_cancer.png", a / "000" / "000_6_tumour.png")
    write_png(a / "001" / "001_11_nipple.png", np.zeros((10, 10), np.uint8))
    write_png(a / "002" / "002_9.png", np.zeros((10, 10), np.uint8))
    (a / "003" / "003_1.png").unlink()
    shutil.rmtree(release / "test_data" / "annotator_2")
    before = _snapshot(release)
    report = check_dataset(release)
    assert _snapshot(release) == before  # writes nothing
    assert _kinds(report) == {
        "missing_masks": 1, "extra_masks": 1, "duplicate_masks": 1, "unknown_tokens": 1, "size_mismatch": 1,
        "image_without_masks": 1, "masks_without_image": 1, "missing_annotators": 1,
    }
    by_kind = {f.kind: f for f in report.findings}
    assert "skin" in by_kind["missing_masks"].message and by_kind["missing_masks"].image_id == "000_6"
    assert by_kind["unknown_tokens"].path.endswith("000_6_tumour.png")
    assert "10x10" in by_kind["size_mismatch"].message and "640x512" in by_kind["size_mismatch"].message
    assert "annotator_2" in by_kind["missing_annotators"].message
    assert report.exit_code == 1


def test_hostile_files_are_one_finding_each_and_never_a_traceback(release):
    a = release / "anonymized_dataset"
    mask = a / "004" / "004_6_text.png"
    mask.write_bytes(mask.read_bytes()[:300])  # truncated inside its image data
    (a / "005" / os.fsdecode(b"bad\xffname.png")).write_bytes(b"")
    os.symlink("loop", a / "005" / "loop")
    os.symlink("..", a / "005" / "up")
    os.symlink("/nonexistent/file.png", a / "005" / "gone.png")
    report = check_dataset(release)
    assert _kinds(report) == {"unreadable": 4, "bad_name": 1}
    messages = " | ".join(f.message for f in report.findings)
    assert "truncated PNG" in messages and "symbolic-link loop" in messages and "broken symbolic link" in messages
    res = CliRunner().invoke(main, ["check", str(release)])
    assert res.exit_code == 1
    assert "Traceback" not in res.output and "bad\\xffname.png" in res.output and "5 problems found" in res.output
    doc = json.loads(CliRunner().invoke(main, ["check", str(release), "--json"]).output)
    assert doc["ok"] is False and doc["counts"]["unreadable"] == 4 and len(doc["findings"]) == 5


def test_patients_in_both_train_and_test_are_reported(release):
    src = release / "anonymized_dataset" / "000"
    image = next(p for p in src.glob("000_*.png") if p.stem.count("_") == 1)
    (release / "test_data" / "anonymized_dataset" / "000").mkdir()
    shutil.copy(image, release / "test_data" / "anonymized_dataset" / "000" / "000_5.png")
    for k in ("1", "2", "3"):
        d = release / "test_data" / f"annotator_{k}" / "000"
        d.mkdir()
        for m in src.glob(f"{image.stem}_*.png"):
            if k != "3" or m.stem.endswith("_cancer"):
                shutil.copy(m, d / m.name.replace(image.stem, "000_5"))
    report = check_dataset(release)
    assert _kinds(report) == {"patient_overlap": 1}
    assert report.findings[0].path == "000"


def test_plain_folders_pair_masks_with_images_in_another_folder_of_the_split(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    from csaws_tools.classes import MASK_CLASSES

    for image_id in ("a_1", "b_1"):
        write_png(images / f"{image_id}.png", np.zeros((20, 16), np.uint8))
    for cls in MASK_CLASSES:
        write_png(masks / f"a_1_{cls}.png", np.zeros((20, 16), np.uint8))
    report = check_dataset(tmp_path)
    assert report.layout == "plain"
    assert _kinds(report) == {"image_without_masks": 1}
    assert report.findings[0].image_id == "b_1"


def test_header_size_reads_png_without_decoding_and_refuses_a_bomb(tmp_path, monkeypatch):
    path = tmp_path / "x.png"
    write_png(path, np.zeros((40, 30), np.uint8))
    assert header_size(path) == (40, 30)
    monkeypatch.setenv("CSAWS_MAX_PIXELS", "100")
    with pytest.raises(InputError, match="more than the limit"):
        header_size(path)


def test_check_help_examples_run(sample_root):
    runner = CliRunner()
    res = runner.invoke(main, ["check", "--help"])
    assert res.exit_code == 0 and "csaws-prepare check CsawS" in res.output
    res = runner.invoke(main, ["check", str(sample_root / "CsawS")])
    assert res.exit_code == 0 and "OK: nothing wrong found" in res.output
    res = runner.invoke(main, ["check", str(sample_root / "CsawS"), "--json"])
    assert res.exit_code == 0 and json.loads(res.output)["ok"] is True
