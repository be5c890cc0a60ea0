import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from csaws_tools.classes import PAPER_CLASS_TABLE, class_names
from csaws_tools.errors import CsawsError
from csaws_tools.png import read_png, write_png
from csaws_tools.stats import class_table, count_ids, format_table


def maps(tmp_path):
    """Three hand-made standard-numbered maps: two in trainval, one in test/consensus."""
    a = np.zeros((4, 5), np.uint8); a[0, :] = 11; a[1, 0] = 1           # 5 gland, 1 cancer, 14 bg
    b = np.zeros((4, 5), np.uint8); b[:2, :] = 11; b[3, 4] = 6; b[2, 2] = 1  # 10 gland, 1 skin, 1 cancer, 8 bg
    c = np.zeros((2, 5), np.uint8); c[0, 0] = 1                           # 1 cancer, 9 bg
    write_png(tmp_path / "trainval" / "a.png", a)
    write_png(tmp_path / "trainval" / "b.png", b)
    write_png(tmp_path / "test" / "consensus" / "c.png", c)
    return a, b, c


def test_pooled_table_against_hand_counts(tmp_path):
    maps(tmp_path)
    t = class_table(tmp_path, workers=1).set_index("class")
    total = 20 + 20 + 10
    assert t.loc["background", "pixels"] == 14 + 8 + 9
    assert t.loc["mammary_gland", "pixels"] == 15
    assert t.loc["cancer", "pixel_percent"] == pytest.approx(100 * 3 / total)
    assert t.loc["cancer", "image_percent"] == pytest.approx(100.0)
    assert t.loc["skin", "image_percent"] == pytest.approx(100 / 3)
    assert t.loc["calcifications", "images"] == 0
    assert t["pixel_percent"].sum() == pytest.approx(100.0)
    assert t.loc["mammary_gland", "paper_pixel_percent"] == PAPER_CLASS_TABLE["mammary_gland"][0]
    # sorted by pixel share, largest first
    order = class_table(tmp_path, workers=1)["class"].tolist()
    assert order[:4] == ["background", "mammary_gland", "cancer", "skin"]


def test_by_split(tmp_path):
    maps(tmp_path)
    t = class_table(tmp_path, by="split", workers=1)
    assert set(t["split"]) == {"trainval", "test/consensus"}
    tv = t[t.split == "trainval"].set_index("class")
    assert tv.loc["cancer", "pixel_percent"] == pytest.approx(100 * 2 / 40)
    assert tv.loc["skin", "image_percent"] == pytest.approx(50.0)
    cons = t[t.split == "test/consensus"].set_index("class")
    assert cons.loc["cancer", "pixels"] == 1
    assert int(cons["n_images"].iloc[0]) == 1
    # the paper's figures (its training set) are beside the training-set table only
    assert tv["paper_pixel_percent"].notna().all() and cons["paper_pixel_percent"].isna().all()
    text = format_table(t)
    assert "1 label map in test/consensus" in text and "2 label maps in trainval" in text
    consensus_block = text[text.index("in test/consensus"):].split("\n\n")[0]
    trainval_block = text[text.index("in trainval"):].split("\n\n")[0]
    assert "paper" not in consensus_block and "paper % px" in trainval_block


def test_release_numbering_and_labels_json(tmp_path):
    m = np.full((2, 2), 11, np.uint8); m[0, 0] = 0  # release: 0 = cancer, 11 = background
    write_png(tmp_path / "m.png", m)
    t = class_table(tmp_path, numbering="release", workers=1).set_index("class")
    assert t.loc["cancer", "pixels"] == 1 and t.loc["background", "pixels"] == 3
    # labels.json next to the maps decides the names when no numbering is given
    from csaws_tools.classes import labels_json

    (tmp_path / "labels.json").write_text(labels_json("release"))
    t2 = class_table(tmp_path, workers=1).set_index("class")
    assert t2.loc["cancer", "pixels"] == 1


def test_value_outside_classes_is_an_error(tmp_path):
    write_png(tmp_path / "m.png", np.full((2, 2), 12, np.uint8))
    with pytest.raises(CsawsError, match="m.png: holds value 12"):
        class_table(tmp_path, workers=1)


def test_count_ids_blocks():
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 12, (300, 257)).astype(np.uint8)
    assert np.array_equal(count_ids(arr, 12, block_pixels=1000), np.bincount(arr.ravel(), minlength=12))


def test_cli_writes_csv_and_parquet(tmp_path):
    from csaws_tools.cli import main

    maps(tmp_path / "maps")
    res = CliRunner().invoke(main, ["stats", str(tmp_path / "maps"), "--by", "split", "-o", str(tmp_path / "t"),
                                    "-j", "1"])
    assert res.exit_code == 0, res.output
    assert "label maps in trainval" in res.output and "paper % px" in res.output
    csv = pd.read_csv(tmp_path / "t.csv")
    pq = pd.read_parquet(tmp_path / "t.parquet")
    assert len(csv) == len(pq) == 24
    assert format_table(class_table(tmp_path / "maps", workers=1)).splitlines()[0] == "3 label maps"


def test_stats_on_sample_against_direct_counts(sample_root, tmp_path, monkeypatch):
    from pathlib import Path

    from csaws_tools.cli import main
    from csaws_tools.merge import merge_masks

    merge_masks(sample_root, tmp_path / "maps", workers=2, progress=False)
    # the table documented in docs/merge-masks.md is what the command prints on the default sample
    doc = (Path(__file__).resolve().parents[1] / "docs" / "merge-masks.md").read_text(encoding="utf-8")
    start = doc.index("$ csaws-prepare stats maps/trainval")
    documented = doc[doc.index("\n", start) + 1: doc.index("```", start)].rstrip("\n")
    monkeypatch.chdir(tmp_path)
    printed = CliRunner().invoke(main, ["stats", "maps/trainval", "-j", "1"])
    assert printed.exit_code == 0, printed.output
    assert printed.output.rstrip("\n") == documented
    t = class_table(tmp_path / "maps" / "trainval", workers=2).set_index("class")
    files = sorted((tmp_path / "maps" / "trainval").glob("*.png"))
    stack = np.stack([read_png(p) for p in files])
    names = class_names("standard")
    for i, name in enumerate(names):
        assert t.loc[name, "pixels"] == int((stack == i).sum())
        assert t.loc[name, "images"] == int((stack == i).any(axis=(1, 2)).sum())
        assert t.loc[name, "pixel_percent"] == pytest.approx(100 * (stack == i).mean())
