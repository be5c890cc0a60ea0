"""Image discovery: ids by file stem, duplicates reported with both paths."""

from __future__ import annotations

from csaws_tools.files import index_by_stem
from csaws_tools.review.export import index_images


def test_an_id_found_twice_is_one_problem_naming_both_files_and_the_first_is_kept(tmp_path):
    a, b = tmp_path / "a" / "001_1.png", tmp_path / "b" / "001_1.png"
    found, problems = index_by_stem([a, b, tmp_path / "002_1.png"], "image")
    assert found == {"001_1": a, "002_1": tmp_path / "002_1.png"}
    assert problems == [f"image 001_1 found twice: {a} and {b}; pass a narrower folder"]


def test_a_rejected_path_is_a_problem_and_not_an_id(tmp_path):
    found, problems = index_by_stem([tmp_path / "x.png"], "image", reject=lambda p: f"{p.name}: refused")
    assert found == {} and problems == ["x.png: refused"]


def test_export_indexes_images_skipping_masks_hidden_files_and_excluded_folders(tmp_path):
    for rel in ("a/001_1.png", "b/001_1.png", "a/001_1_cancer.png", "a/.002_1.png", "maps/003_1.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    found, problems = index_images(tmp_path, exclude=[tmp_path / "maps"])
    assert list(found) == ["001_1"] and found["001_1"] == tmp_path / "a" / "001_1.png"
    assert len(problems) == 1 and "found twice" in problems[0]
