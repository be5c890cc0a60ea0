import re

import numpy as np
from click.testing import CliRunner
from PIL import Image

from csaws_tools.batch import read_manifest
from csaws_tools.classes import COLOURS, labels_json
from csaws_tools.png import read_png, write_png
from csaws_tools.preview import contact_sheet, overlay


def test_overlay_blends_class_colours_and_leaves_background_grey():
    image = np.full((200, 160), 100, np.uint8)
    labels = np.zeros((200, 160), np.uint8)
    labels[150:, 100:] = 1   # cancer
    labels[100:140, :50] = 11  # mammary gland
    rgb = overlay(image, labels, alpha=0.5, legend=False)
    assert rgb.shape == (200, 160, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[10, 150]) == (100, 100, 100)  # background untouched, grey
    expected = np.round(0.5 * 100 + 0.5 * np.array(COLOURS["cancer"]))
    assert np.abs(rgb[190, 150].astype(int) - expected).max() <= 1
    expected = np.round(0.5 * 100 + 0.5 * np.array(COLOURS["mammary_gland"]))
    assert np.abs(rgb[120, 20].astype(int) - expected).max() <= 1


def test_overlay_legend_and_downscale():
    image = np.zeros((400, 300), np.uint16)
    image[:, 150:] = 4000  # 16-bit input is stretched to 8 bits
    labels = np.zeros((400, 300), np.uint8)
    labels[300:, 200:] = 1
    plain = overlay(image, labels, legend=False, max_size=200)
    assert plain.shape == (200, 150, 3)
    assert plain[100, 20, 0] == 0 and plain[100, 100, 0] == 255
    with_legend = overlay(image, labels, max_size=200, title="000_1")
    # the legend and title sit in a panel right of the image: the image itself is not covered
    assert with_legend.shape[0] == 200 and with_legend.shape[1] > 150
    assert np.array_equal(with_legend[:, :150], plain)
    panel = with_legend[:, 150:]
    cancer = np.all(panel == np.array(COLOURS["cancer"], np.uint8), axis=2)
    assert cancer.sum() >= 25  # the legend's cancer swatch is drawn in the panel


def test_overlay_size_mismatch():
    import pytest

    from csaws_tools.errors import InputError

    with pytest.raises(InputError, match="10x10.*12x10"):
        overlay(np.zeros((10, 10), np.uint8), np.zeros((12, 10), np.uint8))


def test_contact_sheet_grid():
    items = [(f"img_{k}", np.full((100, 80, 3), 40 * k, np.uint8)) for k in range(5)]
    sheet = contact_sheet(items, thumb_size=64, columns=3)
    assert sheet.ndim == 3 and sheet.shape[2] == 3
    assert sheet.shape[1] == 3 * (64 + 6) + 6
    # each thumbnail is placed: the centre of cell k has value 40 * k
    for k in range(5):
        r, c = divmod(k, 3)
        cell_h = 64 + max(10, 64 // 16) + 6 + 6
        y, x = 6 + r * cell_h + 32, 6 + c * 70 + 32
        assert tuple(sheet[y, x]) == (40 * k,) * 3


def test_cli_preview_folder(tmp_path):
    from csaws_tools.cli import main

    images, maps = tmp_path / "images" / "000", tmp_path / "maps"
    images.mkdir(parents=True)
    for k in range(3):
        Image.fromarray(np.full((120, 90), 60 + k, np.uint8)).save(images / f"000_{k}.png")
        lab = np.zeros((120, 90), np.uint8)
        lab[10 * k: 10 * k + 30, 20:60] = 1
        write_png(maps / "trainval" / f"000_{k}.png", lab)
    (maps / "labels.json").write_text(labels_json("standard"))
    write_png(maps / "trainval" / "999_1.png", np.zeros((5, 5), np.uint8))  # no image for it
    res = CliRunner().invoke(main, ["preview", "--images", str(tmp_path / "images"), "--masks", str(maps),
                                    "-o", str(tmp_path / "prev"), "-j", "1", "--no-progress"])
    assert res.exit_code == 1, res.output  # one map without an image
    assert re.search(r"3 converted, 0 skipped, 1 failed in [0-9.]+ s, [0-9.]+ files/s", res.output)
    out = read_png(tmp_path / "prev" / "trainval" / "000_1.png")
    assert out.shape[0] == 120 and out.shape[1] > 90  # the image, then the title and legend panel
    assert tuple(out[100, 5]) == (61, 61, 61)
    assert (tmp_path / "prev" / "contact_sheet.png").exists()
    frame = read_manifest(tmp_path / "prev" / "manifest.parquet")
    assert "no image named 999_1" in frame.set_index("image_id").loc["999_1", "error"]
    again = CliRunner().invoke(main, ["preview", "--images", str(tmp_path / "images"), "--masks", str(maps),
                                      "-o", str(tmp_path / "prev"), "-j", "1", "--no-progress"])
    assert "0 converted, 3 skipped, 1 failed" in again.output
    assert (tmp_path / "prev" / "contact_sheet.png").exists()
