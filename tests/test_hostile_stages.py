"""The mask, patch, preview, splits, stats and sample stages under hostile input.

Each test builds the attack (an output folder equal to an input folder, an
edited input, a killed run, a header claiming a huge image, a malformed
splits file, ...) and checks that no input is touched, the error is one line
naming the file, and memory stays bounded.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import time
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from csaws_tools.batch import read_manifest
from csaws_tools.cli import main
from csaws_tools.errors import InputError
from csaws_tools.png import read_png, write_png

CLASSES = ("cancer", "mammary_gland")


def cli(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_error_line(result) -> str:
    """The output of a refused command: exactly one ``error:`` line; returns it."""
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1, result.output
    assert "Traceback" not in result.output
    return errors[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def plain_masks(root: Path, ids=("a", "b"), shape=(40, 30)) -> Path:
    """A plain folder of images ``<id>.png`` and class masks ``<id>_<class>.png``."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for k, i in enumerate(ids):
        write_png(root / f"{i}.png", rng.integers(0, 255, shape, dtype=np.uint8))
        m = np.zeros(shape, np.uint8)
        m[5 + k: 15 + k, 5:15] = 255
        write_png(root / f"{i}_cancer.png", m)
        g = np.zeros(shape, np.uint8)
        g[20:30, :] = 255
        write_png(root / f"{i}_mammary_gland.png", g)
    return root


def image_and_map_folders(base: Path, ids=("000_1", "000_2", "001_1"), shape=(64, 48)) -> tuple[Path, Path]:
    images, maps = base / "images", base / "maps"
    images.mkdir(parents=True, exist_ok=True)
    maps.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for i in ids:
        write_png(images / f"{i}.png", rng.integers(0, 255, shape, dtype=np.uint8))
        lab = np.zeros(shape, np.uint8)
        lab[10:30, 10:30] = 1
        lab[40:, :] = 11
        write_png(maps / f"{i}.png", lab)
    return images, maps


def fake_png(path: Path, rows: int, cols: int) -> Path:
    """A 33-byte PNG: signature and an IHDR chunk claiming ``rows`` x ``cols``, no pixel data."""
    ihdr = struct.pack(">IIBBBBB", cols, rows, 8, 0, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk)
    assert path.stat().st_size == 33
    return path


def fake_tiff(path: Path, rows: int, cols: int) -> Path:
    """A tiny little-endian TIFF whose IFD claims a ``rows`` x ``cols`` 8-bit image (one 16-byte strip)."""
    entries = [  # tag, type (3 SHORT, 4 LONG), count, value
        (256, 4, 1, cols), (257, 4, 1, rows), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
        (273, 4, 1, 8), (277, 3, 1, 1), (278, 4, 1, rows), (279, 4, 1, 16),
    ]
    ifd_offset = 8 + 16
    ifd = struct.pack("<H", len(entries))
    for tag, typ, count, value in entries:
        ifd += struct.pack("<HHI", tag, typ, count) + (struct.pack("<HH", value, 0) if typ == 3
                                                          else struct.pack("<I", value))
    ifd += struct.pack("<I", 0)
    path.write_bytes(b"II*\x00" + struct.pack("<I", ifd_offset) + bytes(16) + ifd)
    return path


# --------------------------------------------------------------------------- 1. never write over an input


def test_preview_into_its_image_folder_is_refused_and_no_image_changes(tmp_path):
    images, maps = image_and_map_folders(tmp_path)
    before = snapshot(images)
    for out in (images, images / "previews"):
        result = cli("preview", "--images", images, "--masks", maps, "-o", out, "--no-progress", "-j", "1")
        assert result.exit_code == 2
        assert "--images" in one_error_line(result)
    result = cli("preview", "--images", images, "--masks", maps, "-o", maps, "--no-progress", "-j", "1")
    assert result.exit_code == 2 and "--masks" in one_error_line(result)
    assert snapshot(images) == before
    assert not (images / "previews").exists()


def test_preview_output_inside_the_map_folder_leaves_maps_untouched(tmp_path):
    images, maps = image_and_map_folders(tmp_path)
    before = snapshot(maps)
    result = cli("preview", "--images", images, "--masks", maps, "-o", maps / "prev", "--no-progress", "-j", "1")
    assert result.exit_code == 0, result.output
    again = cli("preview", "--images", images, "--masks", maps, "-o", maps / "prev", "--no-progress", "-j", "1")
    assert again.exit_code == 0 and "0 converted, 3 skipped" in again.output  # its own overlays are not maps
    assert {k: v for k, v in snapshot(maps).items() if not k.startswith("prev")} == before


def test_merge_masks_into_its_input_folder_is_refused(tmp_path):
    root = plain_masks(tmp_path / "exports")
    before = snapshot(root)
    result = cli("merge-masks", root, "-o", root, "--no-progress", "-j", "1")
    assert result.exit_code == 2 and "output folder is the input folder" in one_error_line(result)
    assert snapshot(root) == before


def test_merge_masks_release_output_inside_a_patient_tree_is_refused(sample_root, tmp_path):
    csaws = sample_root / "CsawS"
    result = cli("merge-masks", csaws, "-o", csaws / "anonymized_dataset" / "maps", "--no-progress")
    assert result.exit_code == 2 and "anonymized_dataset" in one_error_line(result)
    assert not (csaws / "anonymized_dataset" / "maps").exists()


def test_merge_masks_never_replaces_an_input_file(tmp_path):
    from csaws_tools.merge import merge_masks

    # outputs go to OUT/<sub folder>/<id>.png: with OUT the parent of the input folder "in",
    # the map of in/in/a would be written to in/a.png, which is an input image
    root = plain_masks(tmp_path / "in")
    plain_masks(root / "in", ids=("a",))
    before = snapshot(root)
    result = merge_masks(root, tmp_path, workers=1, progress=False)
    assert snapshot(root) == {**before, **{k: v for k, v in snapshot(root).items() if k not in before}}
    after = snapshot(root)
    assert {k: after[k] for k in before} == before  # every input byte-identical
    clash = [r for r in result.rows if r["status"] == "error"]
    assert len(clash) == 1 and "is one of the input files" in clash[0]["error"]
    assert str(root / "a.png") in clash[0]["error"]


def test_patches_output_beside_inputs_leaves_them_untouched(tmp_path):
    from csaws_tools.patches import write_patches

    images, maps = image_and_map_folders(tmp_path)
    before_i, before_m = snapshot(images), snapshot(maps)
    write_patches(images, maps, images / "p.h5", size=16, per_class=2, workers=1, progress=False)
    again = write_patches(images, maps, images / "p.h5", size=16, per_class=2, workers=1, progress=False)
    assert again.up_to_date
    assert {k: v for k, v in snapshot(images).items() if not k.startswith("p.")} == before_i
    assert snapshot(maps) == before_m


def test_splits_refuses_to_overwrite_the_release_split_file(sample_root, tmp_path):
    release = sample_root / "CsawS" / "training_random_splits.json"
    before = release.read_bytes()
    result = cli("splits", sample_root / "CsawS", "-o", release, "--release-subsets")
    assert result.exit_code == 2 and "release's split file" in one_error_line(result)
    image = next((sample_root / "CsawS" / "anonymized_dataset").rglob("*_1.png"))
    img_bytes = image.read_bytes()
    result = cli("splits", sample_root / "CsawS", "-o", image, "--sizes", "1", "--repetitions", "1")
    assert result.exit_code == 2 and "is an image" in one_error_line(result)
    assert release.read_bytes() == before and image.read_bytes() == img_bytes


def test_stats_table_written_in_the_map_folder_changes_no_map(tmp_path):
    _, maps = image_and_map_folders(tmp_path)
    before = snapshot(maps)
    first = cli("stats", maps)
    assert first.exit_code == 0, first.output
    second = cli("stats", maps)  # its own class_table.* are not read as maps
    assert second.exit_code == 0 and second.output == first.output
    after = snapshot(maps)
    assert {k: after[k] for k in before} == before
    assert set(after) - set(before) == {"class_table.csv", "class_table.parquet"}


def test_sample_refuses_a_symlinked_folder_of_a_previous_sample(tmp_path):
    from csaws_tools.sample import MARKER

    target = tmp_path / "real_data"
    target.mkdir()
    (target / "keep.png").write_bytes(b"precious")
    out = tmp_path / "s"
    out.mkdir()
    (out / MARKER).write_text("{}")
    (out / "CsawS").symlink_to(target, target_is_directory=True)
    result = cli("sample", out)
    assert result.exit_code == 2
    assert "symbolic link" in one_error_line(result) and "CsawS" in one_error_line(result)
    assert (target / "keep.png").read_bytes() == b"precious"


# --------------------------------------------------------------------------- 2. edited inputs are redone


def test_merge_masks_redoes_a_map_whose_mask_was_edited(tmp_path):
    from csaws_tools.merge import merge_masks

    root = plain_masks(tmp_path / "in")
    out = tmp_path / "out"
    merge_masks(root, out, workers=1, progress=False)
    assert merge_masks(root, out, workers=1, progress=False).count("skipped") == 2
    edited = np.zeros((40, 30), np.uint8)
    edited[0:3, 0:3] = 255
    write_png(root / "a_cancer.png", edited)
    again = merge_masks(root, out, workers=1, progress=False)
    rows = {r["image_id"]: r["status"] for r in again.rows}
    assert rows == {"a": "ok", "b": "skipped"}
    assert read_png(out / "a.png")[1, 1] == 1 and read_png(out / "a.png")[8, 8] == 0


def test_preview_redoes_an_overlay_whose_image_was_edited(tmp_path):
    from csaws_tools.preview import preview

    images, maps = image_and_map_folders(tmp_path)
    out = tmp_path / "prev"
    preview(images, maps, out, workers=1, progress=False)
    old = (out / "000_2.png").read_bytes()
    write_png(images / "000_2.png", np.full((64, 48), 7, np.uint8))
    again = preview(images, maps, out, workers=1, progress=False)
    rows = {r["image_id"]: r["status"] for r in again.rows}
    assert rows == {"000_1": "skipped", "000_2": "ok", "001_1": "skipped"}
    assert (out / "000_2.png").read_bytes() != old


def test_patches_redone_when_a_label_map_was_edited(tmp_path):
    from csaws_tools.patches import write_patches

    images, maps = image_and_map_folders(tmp_path)
    out = tmp_path / "p.h5"
    write_patches(images, maps, out, size=16, per_class=2, workers=1, progress=False)
    assert write_patches(images, maps, out, size=16, per_class=2, workers=1, progress=False).up_to_date
    lab = read_png(maps / "001_1.png").copy()
    lab[0:5, 0:5] = 6
    write_png(maps / "001_1.png", lab)
    again = write_patches(images, maps, out, size=16, per_class=2, workers=1, progress=False)
    assert not again.up_to_date and again.crops_per_class["skin"] == 2


# --------------------------------------------------------------------------- 3. the patches manifest follows its file


def _manifest_seed(path: Path) -> int:
    return int(read_manifest(path).attrs["csaws_tools"]["settings"]["seed"])


def test_killed_patches_run_leaves_no_manifest_without_its_file(tmp_path, monkeypatch):
    from csaws_tools import patches

    images, maps = image_and_map_folders(tmp_path)
    out = tmp_path / "p.h5"

    def killed(self, attrs):
        raise KeyboardInterrupt  # stands for a kill while the file is being finished

    monkeypatch.setattr(patches.PatchWriter, "close", killed)
    with pytest.raises(KeyboardInterrupt):
        patches.write_patches(images, maps, out, size=16, per_class=2, workers=1, progress=False)
    assert not out.exists()
    assert not patches.manifest_path_for(out).exists()  # no "ok" rows for a file that does not exist


def test_killed_seed_1_run_then_seed_0_rerun_leaves_manifest_and_file_agreeing(tmp_path, monkeypatch):
    from csaws_tools.patches import stage as patches

    images, maps = image_and_map_folders(tmp_path)
    out = tmp_path / "p.h5"
    manifest = patches.manifest_path_for(out)
    patches.write_patches(images, maps, out, size=16, per_class=2, seed=0, workers=1, progress=False)
    assert _manifest_seed(manifest) == 0
    real_close = patches.PatchWriter.close
    monkeypatch.setattr(patches.PatchWriter, "close", lambda self, attrs: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        patches.write_patches(images, maps, out, size=16, per_class=2, seed=1, workers=1, progress=False)
    monkeypatch.setattr(patches.PatchWriter, "close", real_close)
    assert patches.read_file_attrs(out)["seed"] == 0 and _manifest_seed(manifest) == 0
    again = patches.write_patches(images, maps, out, size=16, per_class=2, seed=0, workers=1, progress=False)
    assert again.up_to_date and _manifest_seed(manifest) == 0

    # killed between renaming the file and writing its manifest: the rerun repairs the manifest
    def killed_manifest(path, rows, meta):
        raise KeyboardInterrupt

    monkeypatch.setattr(patches, "_write_manifest", killed_manifest)
    with pytest.raises(KeyboardInterrupt):
        patches.write_patches(images, maps, out, size=16, per_class=2, seed=1, workers=1, progress=False)
    monkeypatch.undo()
    assert patches.read_file_attrs(out)["seed"] == 1 and _manifest_seed(manifest) == 0
    fixed = patches.write_patches(images, maps, out, size=16, per_class=2, seed=1, workers=1, progress=False)
    assert fixed.up_to_date and _manifest_seed(manifest) == 1
    assert set(read_manifest(manifest)["status"]) == {"skipped"}


# --------------------------------------------------------------------------- 4. memory bombs


def _peak_mb(func) -> tuple[object, float]:
    tracemalloc.start()
    try:
        value = func()
        peak = tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()
    return value, peak


def test_tiff_mask_claiming_40000_by_40000_is_refused_from_its_header(tmp_path):
    from csaws_tools.merge import merge_masks

    root = tmp_path / "in"
    root.mkdir()
    fake_tiff(root / "a_cancer.tif", 40000, 40000)
    assert (root / "a_cancer.tif").stat().st_size < 200
    result, peak = _peak_mb(lambda: merge_masks(root, tmp_path / "out", workers=1, progress=False))
    (row,) = result.rows
    assert row["status"] == "error"
    assert "a_cancer.tif" in row["error"] and "40000 x 40000" in row["error"] and "max_pixels" in row["error"]
    assert "\n" not in row["error"]
    assert peak < 50, f"peak {peak:.0f} MB"


def test_fake_png_header_beside_a_geojson_is_refused_before_rasterising(tmp_path):
    from csaws_tools.merge import merge_masks

    root = tmp_path / "in"
    root.mkdir()
    fake_png(root / "a.png", 60000, 60000)
    square = [[[10, 10], [50, 10], [50, 50], [10, 50], [10, 10]]]
    (root / "a.geojson").write_text(json.dumps([{"type": "Feature", "geometry": {"type": "Polygon",
                                    "coordinates": square}, "properties": {"classification": {"name": "Cancer"}}}]))
    result, peak = _peak_mb(lambda: merge_masks(root, tmp_path / "out", workers=1, progress=False))
    (row,) = result.rows
    assert row["status"] == "error" and "a.png" in row["error"] and "60000 x 60000" in row["error"]
    assert peak < 50, f"peak {peak:.0f} MB"


def test_geojson_polygon_with_40000_spikes_is_a_clear_error_with_bounded_memory(tmp_path):
    from csaws_tools.merge import merge_masks

    root = tmp_path / "in"
    root.mkdir()
    fake_png(root / "a.png", 4000, 4000)  # the size is read from the header only
    n = 40000
    xs = np.arange(2 * n) * (3990 / (2 * n)) + 5
    ys = np.where(np.arange(2 * n) % 2 == 0, 10.0, 3990.0)
    ring = np.column_stack([xs, ys]).tolist() + [[3995, 3995], [5, 3995], [xs[0], ys[0]]]
    (root / "a.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
         "properties": {"classification": {"name": "Cancer"}}}]}))
    start = time.monotonic()
    result, peak = _peak_mb(lambda: merge_masks(root, tmp_path / "out", workers=1, progress=False))
    (row,) = result.rows
    assert row["status"] == "error" and "a.geojson" in row["error"] and "limit" in row["error"]
    assert peak < 200, f"peak {peak:.0f} MB"
    assert time.monotonic() - start < 60  # refused from the crossing count, not after filling (loaded CI)


def test_geojson_with_too_many_vertices_or_infinite_coordinates_blames_the_geojson(tmp_path):
    from csaws_tools.qupath import read_geojson

    path = tmp_path / "a.geojson"
    ring = [[0, 0], [10, 0], ["Infinity", 5], [0, 10], [0, 0]]
    text = json.dumps([{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
                        "properties": {"classification": {"name": "Cancer"}}}]).replace('"Infinity"', "Infinity")
    path.write_text(text)
    with pytest.raises(InputError, match=r"a\.geojson: feature 0 \(Cancer\) has a coordinate inf"):
        read_geojson(path)


def test_preview_and_patches_check_headers_before_decoding(tmp_path):
    from csaws_tools.patches import write_patches
    from csaws_tools.preview import preview

    images, maps = image_and_map_folders(tmp_path, ids=("000_1", "000_2"))
    fake_png(images / "000_2.png", 60000, 60000)
    result, peak = _peak_mb(lambda: preview(images, maps, tmp_path / "prev", workers=1, progress=False))
    rows = {r["image_id"]: r for r in result.rows}
    assert rows["000_2"]["status"] == "error" and "60000 x 60000" in rows["000_2"]["error"]
    assert rows["000_1"]["status"] == "ok"
    result2, peak2 = _peak_mb(lambda: write_patches(images, maps, tmp_path / "p.h5", size=16, per_class=2,
                                                    workers=1, progress=False))
    rows = {r["image_id"]: r for r in result2.rows}
    assert rows["000_2"]["status"] == "error" and "60000 x 60000" in rows["000_2"]["error"]
    assert max(peak, peak2) < 100


# --------------------------------------------------------------------------- 5. one line instead of a traceback


def test_unwritable_outputs_are_one_line(tmp_path):
    images, maps = image_and_map_folders(tmp_path)
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    res = cli("splits", maps, "-o", blocker / "splits.json", "--sizes", "1", "--repetitions", "1")
    assert res.exit_code == 2 and "splits.json" in one_error_line(res)
    res = cli("patches", "--images", images, "--masks", maps, "-o", blocker / "p.h5", "--size", "16",
              "--no-progress", "-j", "1")
    assert res.exit_code == 2 and "p.h5" in one_error_line(res)
    res = cli("sample", blocker / "s")
    assert res.exit_code == 2 and "cannot write the sample" in one_error_line(res)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder_is_one_line(tmp_path):
    images, maps = image_and_map_folders(tmp_path)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        res = cli("splits", maps, "-o", ro / "splits.json", "--sizes", "1", "--repetitions", "1")
        assert res.exit_code == 2 and "splits.json" in one_error_line(res)
        res = cli("patches", "--images", images, "--masks", maps, "-o", ro / "p.h5", "--size", "16",
                  "--no-progress", "-j", "1")
        assert res.exit_code == 2 and "p.h5" in one_error_line(res)
    finally:
        ro.chmod(0o700)


def _splits_file(tmp_path: Path, doc: dict) -> Path:
    path = tmp_path / "splits.json"
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize("damage, message", [
    (lambda d: d.pop("train"), "no 'train' split"),
    (lambda d: d["val"].__setitem__("images", "000_1"), "val.images should be a list of image ids"),
    (lambda d: d["train"].__setitem__("images", ["000_1", "000_1"]), "names an image twice"),
    (lambda d: d["subsets"]["1"]["0"].__setitem__("images", "000_1"), "subsets.1.0.images"),
])
def test_malformed_splits_file_is_one_line_naming_it(tmp_path, damage, message):
    images, maps = image_and_map_folders(tmp_path)
    made = cli("splits", maps, "-o", tmp_path / "good.json", "--sizes", "1", "--repetitions", "1")
    assert made.exit_code == 0, made.output
    doc = json.loads((tmp_path / "good.json").read_text())
    damage(doc)
    path = _splits_file(tmp_path, doc)
    res = cli("patches", "--images", images, "--masks", maps, "-o", tmp_path / "p.h5", "--size", "16",
              "--splits", path, "--split", "train", "--no-progress", "-j", "1")
    assert res.exit_code == 2
    line = one_error_line(res)
    assert str(path) in line and message in line


@pytest.mark.parametrize("subsets, message", [
    ({"1": {"0": "000"}}, "should be a list of patient ids"),
    ({"1": {"0": ["000", "0"]}}, "names patient '0' twice"),
])
def test_release_split_file_with_a_string_or_duplicates_is_refused(tmp_path, subsets, message):
    _, maps = image_and_map_folders(tmp_path)
    (maps / "training_random_splits.json").write_text(json.dumps(subsets))
    res = cli("splits", maps, "-o", tmp_path / "s.json", "--release-subsets")
    assert res.exit_code == 2
    line = one_error_line(res)
    assert "training_random_splits.json" in line and message in line
    assert not (tmp_path / "s.json").exists()


# --------------------------------------------------------------------------- 6. temporaries, symlinks, messages


def _dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_merge_masks_removes_its_dead_temporaries_but_not_a_live_runs(tmp_path):
    from csaws_tools.merge import merge_masks

    root = plain_masks(tmp_path / "in")
    out = tmp_path / "out"
    out.mkdir()
    dead = out / f".a.png.{_dead_pid()}.0123abcd.tmp"
    live = out / f".b.png.{os.getppid()}.0123abcd.tmp"
    user = out / ".notes.tmp"
    from csaws_tools.atomic import host_tag

    other_host = "0000" if host_tag() != "0000" else "0001"
    recent = out / f".c.png.{_dead_pid()}-{other_host}.0123abcd.tmp"  # a live writer on another machine, maybe
    for p in (dead, live, user, recent):
        p.write_bytes(b"x" * 100)
    for p in (dead, user):  # the live writer's file is as recent as its writer (an older one means a reused PID)
        os.utime(p, (time.time() - 120, time.time() - 120))
    merge_masks(root, out, workers=1, progress=False)
    assert not dead.exists() and live.exists() and user.exists() and recent.exists()


def test_patches_removes_its_dead_temporaries(tmp_path):
    from csaws_tools.patches import write_patches

    images, maps = image_and_map_folders(tmp_path)
    dead = tmp_path / f".p.h5.{_dead_pid()}.0123abcd.tmp"
    other = tmp_path / f".q.h5.{_dead_pid()}.0123abcd.tmp"  # another file's: not this run's business
    dead.write_bytes(b"x" * 1000)
    other.write_bytes(b"x")
    for p in (dead, other):
        os.utime(p, (time.time() - 120, time.time() - 120))
    write_patches(images, maps, tmp_path / "p.h5", size=16, per_class=2, workers=1, progress=False)
    assert not dead.exists() and other.exists()


def test_merge_masks_plain_layout_follows_folder_symlinks_with_loop_protection(tmp_path):
    from csaws_tools.merge import merge_masks

    real = plain_masks(tmp_path / "elsewhere" / "site1")
    root = tmp_path / "in"
    root.mkdir()
    (root / "site1").symlink_to(real, target_is_directory=True)
    (real / "loop").symlink_to(real, target_is_directory=True)  # a loop back to itself
    result = merge_masks(root, tmp_path / "out", workers=1, progress=False)
    ok = sorted(r["image_id"] for r in result.rows if r["status"] == "ok")
    assert ok == ["a", "b"]
    loops = [r for r in result.rows if r["status"] == "error"]
    assert len(loops) == 1 and "already searched" in loops[0]["error"] and "loop" in loops[0]["source"]
    assert (tmp_path / "out" / "site1" / "a.png").is_file()


def test_preview_reports_contact_sheet_only_when_written(tmp_path):
    images, maps = image_and_map_folders(tmp_path, ids=("000_1",))
    ok = cli("preview", "--images", images, "--masks", maps, "-o", tmp_path / "p1", "--no-progress", "-j", "1")
    assert f"contact sheet: {tmp_path / 'p1' / 'contact_sheet.png'}" in ok.output
    (images / "000_1.png").unlink()
    bad = cli("preview", "--images", images, "--masks", maps, "-o", tmp_path / "p2", "--no-progress", "-j", "1")
    assert bad.exit_code == 1 and "contact sheet:" not in bad.output
    assert not (tmp_path / "p2" / "contact_sheet.png").exists()


def test_preview_two_images_with_one_id_and_ids_beyond_the_classes_are_errors(tmp_path):
    from csaws_tools.preview import preview

    images, maps = image_and_map_folders(tmp_path)
    (images / "other").mkdir()
    shutil.copy(images / "000_1.png", images / "other" / "000_1.png")
    lab = read_png(maps / "000_2.png").copy()
    lab[0, 0] = 14
    write_png(maps / "000_2.png", lab)
    result = preview(images, maps, tmp_path / "prev", workers=1, progress=False)
    rows = {r["image_id"]: r for r in result.rows}
    assert rows["000_1"]["status"] == "error"
    assert str(images / "000_1.png") in rows["000_1"]["error"]
    assert str(images / "other" / "000_1.png") in rows["000_1"]["error"]
    assert rows["000_2"]["status"] == "error" and "id 14" in rows["000_2"]["error"]
    assert rows["001_1"]["status"] == "ok"


def test_corrupt_hdf5_chunk_names_the_file_and_the_patch(tmp_path):
    import h5py

    from csaws_tools.patches import write_patches
    from csaws_tools.reader import PatchReader

    images, maps = image_and_map_folders(tmp_path)
    out = tmp_path / "p.h5"
    write_patches(images, maps, out, size=16, per_class=2, workers=1, progress=False)
    with h5py.File(out, "r") as h5:
        info = h5["images"].id.get_chunk_info(3)
    with open(out, "r+b") as fh:
        fh.seek(info.byte_offset)
        fh.write(b"\xff" * info.size)
    with PatchReader(out) as reader:
        reader[2]  # other patches still read
        with pytest.raises(InputError, match=rf"{out.name}: patch 3 cannot be read"):
            reader[3]
        with pytest.raises(InputError, match=r"patch 3 cannot be read"):
            reader[[0, 3, 5]]


# --------------------------------------------------------------------------- mistakes users make


def test_preview_with_images_and_masks_swapped_stops_with_one_line(tmp_path):
    images, maps = image_and_map_folders(tmp_path)
    res = cli("preview", "--images", maps, "--masks", images, "-o", tmp_path / "prev", "--no-progress")
    assert res.exit_code == 2 and "swapped" in one_error_line(res)
    assert not list((tmp_path / "prev").glob("*.png")) if (tmp_path / "prev").exists() else True


def test_patches_masks_pointing_at_the_parent_of_trainval_and_test_stops(tmp_path):
    images, maps = image_and_map_folders(tmp_path)
    parent = tmp_path / "MAPS"
    shutil.copytree(maps, parent / "trainval")
    shutil.copytree(maps, parent / "test" / "consensus")
    res = cli("patches", "--images", images, "--masks", parent, "-o", tmp_path / "p.h5", "--no-progress")
    assert res.exit_code == 2
    line = one_error_line(res)
    assert str(parent / "trainval") in line and str(parent / "test" / "consensus") in line
    assert not (tmp_path / "p.h5").exists()


def test_patches_images_pointing_at_dicom_stops_with_one_line(tmp_path):
    _, maps = image_and_map_folders(tmp_path)
    dicom = tmp_path / "dicom" / "000"
    dicom.mkdir(parents=True)
    (dicom / "000_1.dcm").write_bytes(bytes(128) + b"DICM" + bytes(64))
    res = cli("patches", "--images", tmp_path / "dicom", "--masks", maps, "-o", tmp_path / "p.h5",
              "--no-progress")
    assert res.exit_code == 2 and "dicom2png" in one_error_line(res)


@pytest.mark.skipif(os.name != "posix", reason="POSIX file names are bytes")
def test_file_names_that_are_not_utf8_are_one_row_each_and_the_batch_goes_on(tmp_path):
    from csaws_tools.merge import merge_masks
    from csaws_tools.patches import write_patches
    from csaws_tools.preview import preview

    root = plain_masks(tmp_path / "in", ids=("a",))
    bad = os.fsdecode(b"b\xff")
    m = np.zeros((40, 30), np.uint8)
    m[1:4, 1:4] = 255
    write_png(root / f"{bad}.png", m)
    write_png(root / f"{bad}_cancer.png", m)
    result = merge_masks(root, tmp_path / "maps", workers=1, progress=False)
    assert result.count("ok") == 2 and result.manifest.is_file()
    frame = read_manifest(result.manifest)
    assert bad in set(frame["image_id"])  # read back with the undecodable byte, nothing lost
    assert str(root / f"{bad}.png") in set(frame["source"])
    # preview pairs by stem; the map of b\xff is named with a safe name, the image keeps its bytes
    images, maps = image_and_map_folders(tmp_path / "pp", ids=("000_1",))
    write_png(images / f"{bad}.png", m)
    write_png(maps / f"{bad}.png", np.zeros((40, 30), np.uint8))
    shown = preview(images, maps, tmp_path / "prev", workers=1, progress=False)
    assert shown.count("ok") == 2 and read_manifest(shown.manifest).shape[0] == 2
    # patches: an id that is not valid UTF-8 cannot go into the HDF5 file: one error row
    made = write_patches(images, maps, tmp_path / "p.h5", size=16, per_class=2, workers=1, progress=False)
    errors = [r for r in made.rows if r["status"] == "error"]
    assert len(errors) == 2 and all("not valid UTF-8" in r["error"] for r in errors)  # image and map
    assert made.output.is_file() and made.n_patches > 0
    assert read_manifest(made.manifest).shape[0] == 3


def test_default_test_tiles_are_the_evaluation_tiles_not_only_those_with_cancer(tmp_path):
    from csaws_tools.patches import write_patches
    from csaws_tools.reader import PatchReader

    images, maps = tmp_path / "im", tmp_path / "consensus"
    images.mkdir()
    maps.mkdir()
    image = np.zeros((64, 64), np.uint8)
    image[:, :30] = 120  # breast in the left tiles, black on the right
    consensus = np.zeros((64, 64), np.uint8)
    consensus[2:6, 2:6] = 1  # cancer in the top-left tile only
    write_png(images / "000_1.png", image)
    write_png(maps / "000_1.png", consensus)
    res = write_patches(images, maps, tmp_path / "t.h5", size=32, tiles=True, workers=1, progress=False)
    with PatchReader(res.output) as r:
        kept = sorted(map(tuple, r.index[["top", "left"]].to_numpy().tolist()))
    assert kept == [(0, 0), (32, 0)]  # every tile with breast, with or without cancer; black ones dropped
    only_cancer = write_patches(images, maps, tmp_path / "b.h5", size=32, tiles=True, tile_drop="background",
                                workers=1, progress=False)
    assert only_cancer.n_patches == 1


def test_stats_refuses_a_map_whose_header_claims_a_huge_image(tmp_path):
    _, maps = image_and_map_folders(tmp_path, ids=("000_1",))
    fake_png(maps / "000_2.png", 60000, 60000)
    res = cli("stats", maps, "-j", "1")
    assert res.exit_code == 2 and "000_2.png" in one_error_line(res) and "60000 x 60000" in one_error_line(res)
