"""``csaws-prepare demo`` runs every stage and says where it wrote each output."""

import os

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from csaws_tools.batch import read_manifest
from csaws_tools.cli import main
from csaws_tools.png import read_png


def test_demo_runs_every_stage(tmp_path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(main, ["demo", str(out), "--no-train", "--workers", "2"])
    assert result.exit_code == 0, result.output
    for stage in ("sample", "dicom2png", "merge-masks", "stats and preview", "splits and patches"):
        assert stage in result.output
    assert "train: skipped" in result.output
    # every stage wrote what it says, and each manifest has no failures
    for manifest in ("png/trainval/manifest.parquet", "png/test/manifest.parquet", "maps/manifest.parquet"):
        frame = read_manifest(out / manifest)
        assert len(frame) and set(frame["status"]) == {"ok"}, manifest
    pngs = sorted((out / "png" / "trainval").rglob("*.png"))
    maps = sorted((out / "maps" / "trainval").glob("*.png"))
    assert len(pngs) == len(maps) > 0
    assert read_png(maps[0]).max() <= 11
    assert (out / "preview" / "contact_sheet.png").is_file()
    assert (out / "class_table.csv").read_text().count("\n") >= 12
    with h5py.File(out / "patches" / "train_rep0.h5") as f:
        assert f["images"].shape[1:] == (256, 256) and f["images"].shape == f["masks"].shape
        assert np.all(f["index/class_id"][:] >= 0)
    with h5py.File(out / "patches" / "test_tiles.h5") as f:
        assert np.all(f["index/class_id"][:] == -1)
    assert "results" not in result.output.split("wrote:")[-1]


def test_demo_refuses_a_folder_that_is_not_a_previous_demo(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    result = CliRunner().invoke(main, ["demo", str(tmp_path), "--no-train"])
    assert result.exit_code != 0 and "not empty" in result.output and "Traceback" not in result.output
    assert (tmp_path / "mine.txt").read_text() == "keep me" and sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]


def test_demo_help_lists_options():
    result = CliRunner().invoke(main, ["demo", "--help"])
    assert result.exit_code == 0
    for option in ("--seed", "--workers", "--train / --no-train", "--iterations"):
        assert option in result.output


@pytest.mark.slow
def test_tiny_demo_training_writes_results_with_its_configuration(tmp_path):
    """The demo's training stage end to end at a tiny size (the real demo is measured, not run, in CI)."""
    pytest.importorskip("torch")
    import pandas as pd

    from csaws_tools.demo import run_demo

    lines = []
    paths = run_demo(tmp_path / "d", workers=1, train=True, log=lines.append, sample_size=(320, 256),
                     training={"iterations": 1, "batch_size": 2, "val_every": 1, "val_max_tiles": None,
                               "repetitions": 1, "per_class": 1})
    res = pd.read_parquet(paths["results"])
    assert set(res["setting"]) == {"with", "without"} and set(res["repetition"]) == {0}
    assert set(res["initialisation"]) == {"scratch"}
    assert '"iterations": 1' in res["demo_configuration"].iloc[0]
    text = "\n".join(lines)
    assert "small synthetic run" in text and "from scratch" in text and "run 2 of 2" in text
    assert "val_max_tiles all" in text  # the demo's default: every validation tile, said in words
    assert f"jobs {min(2, os.cpu_count() or 1)}" in text  # both settings at once where there are two cores
    assert paths["figure"].read_bytes()[:4] == b"\x89PNG"
    # a rerun into the same folder (a previous demo) is allowed
    run_demo(tmp_path / "d", workers=1, train=False, log=lambda m: None, sample_size=(320, 256))
