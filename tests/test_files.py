"""Image discovery: ids by file stem, duplicates reported with both paths."""

from __future__ import annotations

from csaws_tools.files import files_by_folder, files_under, index_by_stem, is_hidden, subfolders
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


def _touch(root, *rels):
    for rel in rels:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"")


def test_files_under_lists_sorted_files_by_suffix_in_any_case_leaving_out_hidden_files_and_folders(tmp_path):
    _touch(tmp_path, "b/2.PNG", "a/1.png", "a/.hidden.png", "a/3.tif", "a/notes.txt")
    (tmp_path / "c.png").mkdir()  # a folder named like an image is not a file
    assert files_under(tmp_path, (".png",)) == [tmp_path / "a" / "1.png", tmp_path / "b" / "2.PNG"]
    assert files_under(tmp_path, (".png", ".tif"), skip=lambda p: p.name == "1.png") == \
        [tmp_path / "a" / "3.tif", tmp_path / "b" / "2.PNG"]


def test_files_under_case_sensitive_matches_the_suffix_exactly(tmp_path):
    _touch(tmp_path, "a/1.png", "a/2.PNG")
    assert files_under(tmp_path, (".png",), case_sensitive=True) == [tmp_path / "a" / "1.png"]


def test_files_under_without_recursion_lists_the_folder_itself_and_none_suffix_means_any_file(tmp_path):
    _touch(tmp_path, "z.json", "1.png", ".x", "sub/2.png")
    assert files_under(tmp_path, None, recursive=False) == [tmp_path / "1.png", tmp_path / "z.json"]
    assert files_under(tmp_path, (".png",), recursive=False) == [tmp_path / "1.png"]
    assert files_under(tmp_path / "missing", None, recursive=False) == []
    assert files_under(tmp_path / "missing", (".png",)) == []


def test_subfolders_are_sorted_and_leave_out_hidden_folders_and_files(tmp_path):
    _touch(tmp_path, "b/x", "a/x", ".git/x", "file.png")
    assert subfolders(tmp_path) == [tmp_path / "a", tmp_path / "b"]
    assert subfolders(tmp_path / "file.png") == [] and subfolders(tmp_path / "missing") == []


def test_is_hidden_looks_at_the_last_name_only(tmp_path):
    assert is_hidden(tmp_path / "._x.png") and is_hidden(".DS_Store")
    assert not is_hidden(tmp_path / ".cache" / "x.png")


def test_files_by_folder_walks_every_folder_once_leaving_out_hidden_names_and_reporting_link_loops(tmp_path):
    _touch(tmp_path, "a/1.png", "a/.x.png", "b/c/2.png", ".hidden/3.png")
    (tmp_path / "empty").mkdir()
    (tmp_path / "b" / "c" / "up").symlink_to(tmp_path / "b", target_is_directory=True)  # a loop
    loops: list[str] = []
    found = files_by_folder(tmp_path, loops.append)
    assert sorted(found) == [tmp_path / "a", tmp_path / "b" / "c"]  # folders without files are left out
    assert found[tmp_path / "a"] == [tmp_path / "a" / "1.png"]
    assert found[tmp_path / "b" / "c"] == [tmp_path / "b" / "c" / "2.png"]
    assert loops == [str(tmp_path / "b" / "c" / "up")]
