"""``csaws-prepare demo`` runs every stage and says where it wrote each output."""

import h5py
import numpy as np
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


def test_demo_help_lists_options():
    result = CliRunner().invoke(main, ["demo", "--help"])
    assert result.exit_code == 0
    for option in ("--seed", "--workers", "--train / --no-train", "--iterations"):
        assert option in result.output
