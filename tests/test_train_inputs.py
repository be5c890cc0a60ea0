"""`train prepare` and `train run` agree on INPUTS: release subsets, validation tiles, splits.json, bad settings."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from click.testing import CliRunner  # noqa: E402

from csaws_tools.errors import InputError, OutputError, SettingsError  # noqa: E402
from csaws_tools.train.prepare import prepare_inputs  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def release(small_release, tmp_path_factory):
    """The sample dataset (which ships a training_random_splits.json) prepared with the defaults."""
    root = small_release
    p = prepare_inputs(root / "raw" / "CsawS", root / "maps", tmp_path_factory.mktemp("inputs"), patch_size=64,
                       per_class=2, workers=1, progress=False)
    return root, p


def test_prepare_uses_the_release_subsets_when_present(release):
    root, p = release
    sp = json.loads(Path(p.splits).read_text())
    shipped = json.loads((root / "raw" / "CsawS" / "training_random_splits.json").read_text())
    assert sp["subset_rule"]["source"] == "release"
    assert sp["subset_rule"]["release_file"] == "training_random_splits.json"
    assert sorted(sp["subsets"], key=int) == sorted(shipped, key=int)
    for n, reps in shipped.items():
        for r, pids in reps.items():
            assert sp["subsets"][n][r]["patients"] == sorted(pids)


def test_prepare_own_subsets_on_request_and_narrowing(release, tmp_path):
    root, _ = release
    kw = dict(patch_size=64, per_class=1, workers=1, progress=False)
    # narrowing the release's subsets: only the sizes asked for, the first repetitions
    p = prepare_inputs(root / "raw" / "CsawS", root / "maps", tmp_path / "narrow", sizes=(2,), repetitions=2, **kw)
    sp = json.loads(Path(p.splits).read_text())
    assert sp["subset_rule"]["source"] == "release" and list(sp["subsets"]) == ["2"]
    assert sorted(sp["subsets"]["2"]) == ["0", "1"] and sp["subset_rule"]["repetitions"] == 2
    assert sorted(f.name for f in (tmp_path / "narrow").glob("train_rep*.h5")) == ["train_rep0.h5", "train_rep1.h5"]
    # own seeded subsets on request, although the release has a file
    p = prepare_inputs(root / "raw" / "CsawS", root / "maps", tmp_path / "own", sizes=(2,), repetitions=1,
                       subsets="own", **kw)
    sp = json.loads(Path(p.splits).read_text())
    assert sp["subset_rule"]["source"] == "sampled" and sp["subsets"]["2"]["0"]["seed"] is not None
    with pytest.raises(SettingsError, match=r"sizes=\[7\]: .*training_random_splits\.json has subsets of 1, 2"):
        prepare_inputs(root / "raw" / "CsawS", root / "maps", tmp_path / "n", sizes=(7,), **kw)
    with pytest.raises(InputError, match="no training_random_splits.json"):
        prepare_inputs(root / "maps", root / "maps", tmp_path / "r", subsets="release", **kw)


def test_prepare_writes_validation_tiles_of_whole_images(release):
    import h5py

    from csaws_tools.png import read_png

    root, p = release
    sp = json.loads(Path(p.splits).read_text())
    with h5py.File(p.val_file) as f:
        ids = set(f["index/image_id"].asstr()[:])
        assert np.all(f["index/class_id"][:] == -1)  # tiles, not class-centred crops
        tops, lefts = f["index/top"][:], f["index/left"][:]
        masks = f["masks"][:]
    assert ids <= set(sp["val"]["images"]) and ids
    assert np.all(tops % 64 == 0) and np.all(lefts % 64 == 0)  # a grid over the whole image
    assert all(m.any() for m in masks)  # all-background tiles dropped
    # every non-background tile of a validation image is there
    first = sorted(ids)[0]
    lab = read_png(root / "maps" / "trainval" / f"{first}.png")
    want = sum(lab[t:t + 64, l:l + 64].any() for t in range(0, lab.shape[0], 64) for l in range(0, lab.shape[1], 64))
    with h5py.File(p.val_file) as f:
        assert int((f["index/image_id"].asstr()[:] == first).sum()) == want


def test_run_reads_sizes_repetitions_and_files_from_inputs(release, tmp_path, monkeypatch):
    from csaws_tools.cli.train import train
    from csaws_tools.train import experiment

    root, p = release
    seen = {}

    def fake_grid(cfg, out, log=None, overwrite=False):
        seen["cfg"] = cfg
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "summary.md").write_text("table\n")

    monkeypatch.setattr(experiment, "run_grid", fake_grid)
    inputs = str(Path(p.splits).parent)
    r = CliRunner().invoke(train, ["run", inputs, "-o", str(tmp_path / "e"), "--test-maps", p.test_maps,
                                   "--crop", "48"])
    assert r.exit_code == 0, r.output
    cfg = seen["cfg"]
    assert tuple(cfg.sizes) == (1, 2) and cfg.repetitions == 5  # what prepare wrote (the release's)
    assert Path(cfg.train.val_file).name == "val_tiles.h5" and cfg.train.train_file.endswith("train_rep{rep}.h5")
    assert cfg.train.pretrained == "imagenet" and cfg.train.epochs == 100 and cfg.train.iterations is None
    assert cfg.train.selection == "sul" and cfg.train.val_loss == "cancer" and cfg.train.val_every == 100
    r = CliRunner().invoke(train, ["run", inputs, "-o", str(tmp_path / "e"), "--test-maps", p.test_maps,
                                   "--crop", "48", "--sizes", "2", "--repetitions", "3", "--protocol", "earlier"])
    assert r.exit_code == 0, r.output
    cfg = seen["cfg"]
    assert tuple(cfg.sizes) == (2,) and cfg.repetitions == 3 and Path(cfg.train.val_file).name == "val.h5"
    assert cfg.train.selection == "smoothed-loss"
    # a size splits.json does not have: one line naming the option and the file
    r = CliRunner().invoke(train, ["run", inputs, "-o", str(tmp_path / "e"), "--test-maps", p.test_maps,
                                   "--sizes", "25"])
    assert r.exit_code != 0 and "--sizes 25" in r.output and "splits.json" in r.output
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1


def test_crop_larger_than_the_patches_is_a_one_line_error(release, tmp_path):
    from csaws_tools.cli.train import train

    _, p = release
    r = CliRunner().invoke(train, ["single", "--train-file", p.train_file_for(0), "--val-file", p.val_file,
                                   "-o", str(tmp_path / "one"), "--crop", "448", "--pretrained", "none",
                                   "--no-progress", "--device", "cpu"])
    assert r.exit_code != 0 and "Traceback" not in r.output
    assert "--crop 448 is larger than the 64-px crops of" in r.output and "train_rep0.h5" in r.output


def test_crop_larger_than_the_patches_names_the_parameter_in_python(release):
    from csaws_tools.train.augment import AugmentConfig
    from csaws_tools.train.loop import TrainConfig, check_crop

    _, p = release
    cfg = TrainConfig(train_file=p.train_file_for(0), val_file=p.val_file, augment=AugmentConfig(crop=448))
    with pytest.raises(SettingsError) as err:
        check_crop(cfg)
    message = str(err.value)
    assert message.startswith("crop=448 is larger than the 64-px crops of") and message.endswith("use crop=64 or less")
    assert "--" not in message and err.value.param == "crop"


def test_prepare_on_a_full_disk_is_a_one_line_error(release, tmp_path, monkeypatch):
    from csaws_tools.cli.train import train
    from csaws_tools.train import prepare as prep

    root, _ = release

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x" / "splits.json"))

    monkeypatch.setattr(prep, "_prepare", full)
    with pytest.raises(OutputError, match="No space left on device"):
        prepare_inputs(root / "raw" / "CsawS", root / "maps", tmp_path / "x")
    r = CliRunner().invoke(train, ["prepare", str(root / "raw" / "CsawS"), str(root / "maps"), "-o",
                                   str(tmp_path / "x")])
    assert r.exit_code != 0 and "No space left on device" in r.output and "Traceback" not in r.output


def test_corrupt_chunk_in_training_names_file_and_patch(release, tmp_path):
    import h5py

    from csaws_tools.train.data import CropSource

    _, p = release
    src = Path(p.train_file_for(0))
    bad = tmp_path / "bad.h5"
    bad.write_bytes(src.read_bytes())
    with h5py.File(bad) as f:
        dset = f["images"]
        n = dset.shape[0]
        offset = dset.id.get_chunk_info(n - 1).byte_offset  # the last patch's chunk
        size = dset.id.get_chunk_info(n - 1).size
    raw = bytearray(bad.read_bytes())
    raw[offset:offset + size] = b"\xff" * size
    bad.write_bytes(bytes(raw))
    src_ok = CropSource(bad, np.arange(n - 1), np.arange(256), seed=0, batch_size=2, cache_mb=0)
    src_ok.batch(0)  # the good patches still read
    with pytest.raises(InputError, match=rf"bad\.h5: patch {n - 1} cannot be read "):
        CropSource(bad, np.arange(n), np.arange(256), seed=0, batch_size=2)  # read into memory at start
