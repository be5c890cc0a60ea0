"""Training on the public datasets and the label studies, end to end on CPU (paper section 5, protocol section 6)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pd = pytest.importorskip("pandas")

from click.testing import CliRunner

from csaws_tools.errors import InputError, SettingsError
from csaws_tools.sample_public import write_public_sample
from csaws_tools.train.augment import IMAGENET_MEAN, IMAGENET_STD
from csaws_tools.train.datasets import (
    VOC_CLASSES,
    ImageSetReader,
    get_adapter,
    prepare_dataset,
)
from csaws_tools.train.experiment import ExperimentConfig, run_grid
from csaws_tools.train.loop import TrainConfig, run_data
from csaws_tools.train.studies import (
    StudyConfig,
    fixed_n,
    k_values,
    run_study,
    summarise_study,
)

torch.set_num_threads(2)
PNG = b"\x89PNG\r\n\x1a\n"
#: a class of each synthetic dataset present in its training images, left out in the leave-one-out cell
LEFT_OUT = {"cityscapes": "rider", "voc": "bicycle"}


def _inputs(kind: str, base: Path, **kw) -> Path:
    root = base / kind
    write_public_sample(kind, root, seed=0)
    opts = {"val_size": 4, "sizes": (4,), "repetitions": 1, "size": 32, "workers": 1, "progress": False}
    opts.update(kw)
    res = prepare_dataset(get_adapter(kind, root), base / f"{kind}_in", **opts)
    assert res.exit_code == 0
    return base / f"{kind}_in"


def _config(inp: Path, **kw) -> ExperimentConfig:
    train = TrainConfig(str(inp / "train.h5"), str(inp / "val.h5"), iterations=1, batch_size=2, val_every=1,
                        eval_batch_size=8, output_stride=16, pretrained=None, progress=False, device="cpu")
    return ExperimentConfig(train=train, test_tiles=str(inp / "test.h5"), splits=str(inp / "splits.json"),
                            sizes=(4,), repetitions=1, **kw)


@pytest.fixture(scope="module", params=["cityscapes", "voc"])
def studied(request, tmp_path_factory):
    """One with/without cell and one leave-one-out cell (N = 4, 1 iteration, 32 px) on a synthetic dataset,
    recording the input channels that reached the first convolution."""
    kind = request.param
    base = tmp_path_factory.mktemp(kind)
    inp = _inputs(kind, base)
    cfg = _config(inp)
    seen: list[int] = []
    from csaws_tools.train import loop

    real_build = loop.build_model

    def build(*args, **kwargs):
        model = real_build(*args, **kwargs)
        model.backbone.conv1.register_forward_pre_hook(lambda mod, inputs: seen.append(int(inputs[0].shape[1])))
        return model

    exp = base / "exp"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(loop, "build_model", build)
        grid = run_grid(cfg, exp, log=lambda m: None)
        stamp = (exp / "runs/with/n4/rep0/metrics.json").stat().st_mtime_ns
        loo, table = run_study(StudyConfig(cfg, "leave-one-out", classes=[LEFT_OUT[kind]]), exp, log=lambda m: None)
    return {"kind": kind, "inputs": inp, "exp": exp, "grid": grid, "loo": loo, "table": table, "seen": seen,
            "with_stamp": stamp}


@pytest.mark.slow
def test_with_and_without_rows_carry_dataset_and_person_target(studied):
    grid, kind = studied["grid"], studied["kind"]
    assert set(grid["setting"]) == {"with", "without"} and len(grid) == 2
    assert set(grid["dataset"]) == {kind} and set(grid["target"]) == {"person"}
    assert set(grid["evaluated_against"]) == {"test"} and set(grid["n_images"]) == {6}
    classes = {"cityscapes": 34, "voc": 21}[kind]
    assert grid.set_index("setting").loc["with", "num_classes"] == classes  # the dataset's class count
    assert grid.set_index("setting").loc["without", "num_classes"] == 2
    saved = pd.read_parquet(studied["exp"] / "results.parquet")
    assert {"dataset", "target"} <= set(saved.columns) and "no rotation, elastic p 0" in saved["protocol"].iloc[0]
    figure = studied["exp"] / {"cityscapes": "figure5.png", "voc": "figure6.png"}[kind]
    assert figure.read_bytes()[:8] == PNG and figure.stat().st_size > 5000


@pytest.mark.slow
def test_three_colour_channels_reach_the_model_and_imagenet_statistics_normalise(studied):
    assert studied["seen"] and set(studied["seen"]) == {3}
    best = torch.load(studied["exp"] / "runs/with/n4/rep0/best.pt", weights_only=True)
    assert best["in_channels"] == 3 and tuple(best["model"]["backbone.conv1.weight"].shape) == (64, 3, 7, 7)
    info = json.loads((studied["exp"] / "runs/with/n4/rep0/config.json").read_text())
    aug = info["config"]["augment"]
    assert aug["rotate90"] is False and aug["elastic_p"] == 0.0 and aug["crop"] == 32  # section 5.2; whole image
    assert tuple(aug["mean"]) == IMAGENET_MEAN and tuple(aug["std"]) == IMAGENET_STD
    assert info["inputs"]["channels"] == 3 and info["inputs"]["target"] == "person"
    from csaws_tools.train.predict import read_run

    with pytest.raises(InputError, match="3 channels.*CSAW-S runs only"):  # predict is for grey mammograms
        read_run(studied["exp"] / "runs/with/n4/rep0")


@pytest.mark.slow
def test_leave_one_out_merges_the_left_out_class_into_background(studied):
    kind, exp = studied["kind"], studied["exp"]
    left = LEFT_OUT[kind]
    loo = studied["loo"]
    assert set(loo["setting"]) == {"with", f"loo-{left}"} and set(loo["dataset"]) == {kind}
    # the baseline is the with run of the grid: reused, not trained again
    assert (exp / "runs/with/n4/rep0/metrics.json").stat().st_mtime_ns == studied["with_stamp"]
    cw = json.loads((exp / "runs/with/n4/rep0/config.json").read_text())
    cl = json.loads((exp / f"runs/loo-{left}/n4/rep0/config.json").read_text())
    assert len(cl["scheme"]["names"]) == len(cw["scheme"]["names"]) - 1 and left not in cl["scheme"]["names"]
    assert cl["config"]["image_ids"] == cw["config"]["image_ids"] and cl["config"]["seed"] == cw["config"]["seed"]
    lut = np.asarray(cl["scheme"]["lut"], dtype=np.uint8)
    with ImageSetReader(studied["inputs"] / "train.h5") as r:
        left_id = r.class_names.index(left)
        rows = r.rows_for(cl["config"]["image_ids"])
        raw = r[rows][1]
    assert (raw == left_id).any()  # the class is in the run's training images ...
    assert (lut[raw][raw == left_id] == 0).all()  # ... and trains as background
    assert lut[left_id] == 0 and np.asarray(cw["scheme"]["lut"])[left_id] > 1
    assert list(studied["table"]["left_out"]) == [left]
    fig = exp / "leave-one-out" / "figure7.png"
    assert fig.read_bytes()[:8] == PNG and fig.stat().st_size > 5000
    assert f"| {left} | 4 |" in (exp / "leave-one-out" / "summary.md").read_text()
    # the grid's own table is still there beside the study's
    assert set(pd.read_parquet(exp / "results.parquet")["setting"]) == {"with", "without"}
    from csaws_tools.cli.train import train

    fig.unlink()
    r = CliRunner().invoke(train, ["summarize", str(exp / "leave-one-out")])  # rebuilds table and figure
    assert r.exit_code == 0 and f"| {left} | 4 |" in r.output and fig.read_bytes()[:8] == PNG


class _Everywhere(torch.nn.Module):
    """Predicts class 1 (the target) at every pixel."""

    def forward(self, x):
        out = torch.zeros(x.shape[0], 2, *x.shape[2:])
        out[:, 1] = 1.0
        return {"out": out}


def test_void_pixels_count_neither_in_test_nor_in_validation_iou(tmp_path):
    from csaws_tools.train.evaluate import evaluate_image_set
    from csaws_tools.train.loop import validate

    inp = _inputs("voc", tmp_path)
    with ImageSetReader(inp / "test.h5", "binary") as r:
        masks = r[:][1]
        lut = np.asarray(r.scheme.lut)
    void, target = int((masks == 255).sum()), int((masks == 1).sum())
    assert void > 0 and target > 0
    expected = target / int((masks != 255).sum())  # target everywhere: tp = target, fp = other valid pixels
    rows = evaluate_image_set(_Everywhere(), inp / "test.h5", lut, "cpu", amp=False, ignore_index=255)
    assert rows[0]["iou"] == pytest.approx(expected) and rows[0]["fn"] == 0 and rows[0]["tp"] == target
    assert rows[0]["iou"] != pytest.approx(target / masks.size)  # what counting void would give
    val = validate(_Everywhere(), str(inp / "test.h5"), lut, torch.device("cpu"), amp=False, ignore_index=255,
                   loss="all")
    assert val["val_iou"] == pytest.approx(expected) and np.isfinite(val["val_loss"])


def test_csaws_model_and_settings_hash_are_those_of_before():
    """The 1-channel CSAW-S model (state-dict keys and shapes) and a run's settings hash, pinned from the
    code before the public-dataset support."""
    from csaws_tools.batch import settings_hash
    from csaws_tools.train.model import build_model

    sd = build_model(12, output_stride=8).state_dict()
    assert len(sd) == 182 and tuple(sd["backbone.conv1.weight"].shape) == (64, 1, 7, 7)
    keys = hashlib.sha256(repr([(k, tuple(v.shape)) for k, v in sd.items()]).encode()).hexdigest()[:16]
    assert keys == "26440144df85475c"
    cfg = TrainConfig("a/train_rep0.h5", "a/val_tiles.h5", scheme="binary")
    assert settings_hash(cfg.settings()) == "11f0cb7d99d8106f"


def test_imagenet_initialisation_keeps_all_three_channels_of_the_first_convolution():
    from csaws_tools.train.model import build_model, load_pretrained

    source = build_model(2, output_stride=16, in_channels=3).backbone.state_dict()  # ResNet-50 keys, RGB conv1
    state = {k: torch.randn_like(v) for k, v in source.items()}
    colour = build_model(34, output_stride=16, in_channels=3)
    report = load_pretrained(colour, state, require_backbone=True)
    assert report.reduced == [] and torch.equal(colour.backbone.conv1.weight, state["conv1.weight"])
    grey = build_model(2, output_stride=16)  # CSAW-S: channel 0 only, as before
    assert load_pretrained(grey, state).reduced == ["conv1.weight"]
    assert torch.equal(grey.backbone.conv1.weight, state["conv1.weight"][:, :1])


def test_csaws_patches_keep_one_channel_no_void_and_the_cancer_scheme(small_release, tmp_path):
    from csaws_tools.train.prepare import prepare_inputs

    root = small_release
    p = prepare_inputs(root / "raw" / "CsawS", root / "maps", tmp_path / "in", patch_size=32, per_class=1,
                       sizes=(2,), repetitions=1, workers=1, progress=False, subsets="own")
    data = run_data(TrainConfig(p.train_file_for(0), p.val_file, scheme="all"))
    assert not data.images and data.channels == 1 and data.ignore_index is None and data.ce_ignore == -100
    assert data.scheme.num_classes == 12 and data.dataset == "csaws" and data.target == "cancer"
    with pytest.raises(SettingsError, match="target= and labels=.coarse. apply"):
        run_data(TrainConfig(p.train_file_for(0), p.val_file, target="person"))


# --------------------------------------------------------------------------- study grids and tables


def test_study_preconditions_are_one_line_errors_saying_how_to_prepare(tmp_path):
    cs = _config(_inputs("cityscapes", tmp_path))
    with pytest.raises(InputError, match=r"holds no coarse label maps.*--coarse"):
        run_study(StudyConfig(cs, "coarse"), tmp_path / "e", log=lambda m: None)
    with pytest.raises(InputError, match=r"random order.*--ordering by-city"):
        run_study(StudyConfig(cs, "domain-shift"), tmp_path / "e", log=lambda m: None)
    voc = _config(_inputs("voc", tmp_path))
    with pytest.raises(SettingsError, match="unknown class 'rider'"):
        run_study(StudyConfig(voc, "merge"), tmp_path / "e", log=lambda m: None)
    with pytest.raises(SettingsError, match="not a complementary class"):
        run_study(StudyConfig(voc, "leave-one-out", classes=["person"]), tmp_path / "e", log=lambda m: None)
    with pytest.raises(SettingsError, match="unknown study"):
        StudyConfig(voc, "everything")
    assert not (tmp_path / "e" / "runs").exists()


def test_study_grids_have_the_papers_cells(tmp_path):
    from csaws_tools.train.studies import study_cells

    inp = _inputs("cityscapes", tmp_path, sizes=(2, 4), repetitions=2, ordering="by-city", coarse=True)
    cfg = _config(inp)
    cfg.sizes, cfg.repetitions = (2, 4), 2
    cells = study_cells(StudyConfig(cfg, "num-labels", ks=(0, 1, 2, 4, 8, 16, 32)))
    assert sorted({c.n for c in cells}) == [4]  # one N: the largest prepared size up to 100
    ks = [dict(c.columns)["k"] for c in cells if c.rep == 0]
    assert ks == [0, 1, 2, 4, 8, 16, 32]  # 32 complementary classes: 34 minus background and person
    k2 = [c for c in cells if dict(c.columns)["k"] == 2]
    assert {c.scheme for c in k2} == {"random:2:0", "random:2:1"}  # drawn per repetition
    assert {c.setting for c in cells if dict(c.columns)["k"] in (0, 32)} == {"without", "with"}
    coarse = study_cells(StudyConfig(cfg, "coarse"))
    assert {c.setting for c in coarse} == {"with", "with-coarse", "without"} and {c.n for c in coarse} == {2, 4}
    assert next(dict(c.overrides) for c in coarse if c.setting == "with-coarse") == {"labels": "coarse"}
    shift = study_cells(StudyConfig(cfg, "domain-shift"))
    assert {c.setting for c in shift} == {"with-by-city", "without-by-city"}
    from csaws_tools.sample_public import CITIES

    for c in shift:  # the cities of each subset are recorded with its rows
        col = dict(c.columns)
        assert col["n_groups"] == len(col["groups"].split(",")) and set(col["groups"].split(",")) <= \
            {city for _, city, _ in CITIES}
    merged = study_cells(StudyConfig(cfg, "merge"))
    assert {dict(c.overrides)["target"] for c in merged} == {"human=person+rider"}
    assert run_data(TrainConfig(str(inp / "train.h5"), str(inp / "val.h5"), scheme="all",
                                target="human=person+rider")).scheme.names[:2] == ("unlabeled", "human")


def test_run_with_a_merged_target_trains_the_plain_schemes_with_that_target(tmp_path, monkeypatch):
    from dataclasses import replace

    from csaws_tools.train import experiment

    cfg = _config(_inputs("cityscapes", tmp_path))
    cfg.train = replace(cfg.train, target="human=person+rider")
    seen = []

    def stop(cfg_, cells, out, **kw):
        seen.extend(cells)
        raise KeyboardInterrupt

    monkeypatch.setattr(experiment, "run_cells", stop)
    with pytest.raises(KeyboardInterrupt):
        run_grid(cfg, tmp_path / "exp", log=lambda m: None)
    assert [c.scheme for c in seen] == ["all", "binary"]
    schemes = [run_data(replace(cfg.train, scheme=c.scheme)).scheme for c in seen]
    assert [s.names[1] for s in schemes] == ["human", "human"] and schemes[0].num_classes == 33


def test_k_values_and_the_fixed_n_follow_what_exists():
    assert k_values((0, 1, 2, 4, 8, 16, 32), 20) == [0, 1, 2, 4, 8, 16, 20]
    assert k_values((0, 1, 2, 4), 20) == [0, 1, 2, 4]
    assert k_values((0, 1, 2, 4, 8, 16, 32), 4) == [0, 1, 2, 4]
    assert fixed_n((25, 50, 100, 200), None, "s") == 100 and fixed_n((25, 50), None, "s") == 50
    assert fixed_n((200, 500), None, "s") == 200 and fixed_n((25, 50), 25, "s") == 25
    with pytest.raises(SettingsError, match="no subset of that size"):
        fixed_n((25, 50), 100, "s")


def test_leave_one_out_table_pairs_repetitions_and_sorts_by_relative_change():
    rows = []
    for rep, base in enumerate((0.5, 0.4, 0.6)):
        rows.append({"setting": "with", "left_out": "", "repetition": rep, "iou": base})
        rows.append({"setting": "loo-car", "left_out": "car", "repetition": rep, "iou": base * 0.5})
        rows.append({"setting": "loo-sky", "left_out": "sky", "repetition": rep, "iou": base * 1.1})
    res = pd.DataFrame(rows).assign(evaluated_against="test", n_train=100)
    table = summarise_study(res, "leave-one-out")
    assert list(table["left_out"]) == ["car", "sky"]
    assert table["change_mean"].tolist() == pytest.approx([-0.5, 0.1])
    assert table["change_ci_low"].tolist() == pytest.approx([-0.5, 0.1])  # the same change every repetition
    assert table["baseline_iou"].tolist() == pytest.approx([0.5, 0.5])


# --------------------------------------------------------------------------- command line


def test_prepare_dataset_runs_without_torch(tmp_path):
    root = tmp_path / "voc"
    write_public_sample("voc", root, seed=0)
    code = ("import sys; sys.modules['torch'] = None\n"
            "from csaws_tools.cli.train import main\n"
            f"main(['prepare', '--dataset', 'voc', {str(root)!r}, '-o', {str(tmp_path / 'in')!r}, '--val-size', "
            "'4', '--sizes', '4', '--repetitions', '1', '--size', '16', '-j', '1', '--no-progress'])\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr
    assert "train 12, val 4, test 6 images; 0 failed" in done.stdout
    assert all((tmp_path / "in" / f).is_file() for f in ("splits.json", "train.h5", "val.h5", "test.h5"))
    training = "import sys; sys.modules['torch'] = None; from csaws_tools.train import train_run"
    blocked = subprocess.run([sys.executable, "-c", training], capture_output=True, text=True, timeout=120,
                             check=False, cwd=Path(__file__).resolve().parents[1])
    assert blocked.returncode != 0 and "needs torch" in blocked.stderr


def test_prepare_refuses_options_of_the_other_kind(tmp_path):
    from csaws_tools.cli.train import train

    runner = CliRunner()
    r = runner.invoke(train, ["prepare", "--dataset", "voc", str(tmp_path), "-o", str(tmp_path / "o"),
                              "--patch-size", "64"])
    assert r.exit_code == 2 and "--patch-size apply to CSAW-S crops" in r.output
    r = runner.invoke(train, ["prepare", str(tmp_path), str(tmp_path), "-o", str(tmp_path / "o"), "--coarse"])
    assert r.exit_code == 2 and "--coarse apply with --dataset only" in r.output
    r = runner.invoke(train, ["prepare", str(tmp_path), "-o", str(tmp_path / "o")])
    assert r.exit_code == 2 and "need IMAGES and MAPS" in r.output
    r = runner.invoke(train, ["study", "--help"])
    assert r.exit_code == 0 and "figure7.png" in r.output and "--iterations" in r.output and "--ks" in r.output


@pytest.mark.slow
def test_cli_run_and_study_on_prepared_voc(tmp_path):
    from csaws_tools.cli.train import train

    inp = _inputs("voc", tmp_path)
    common = ["--iterations", "1", "--batch-size", "2", "--output-stride", "16", "--pretrained", "none",
              "--device", "cpu", "--threads", "2", "--no-progress"]
    r = CliRunner().invoke(train, ["study", "num-labels", str(inp), "-o", str(tmp_path / "exp"), "--ks", "1",
                                   *common])
    assert r.exit_code == 0, r.output
    res = pd.read_parquet(tmp_path / "exp" / "num-labels" / "results.parquet")
    assert list(res["k"]) == [1] and set(res["study"]) == {"num-labels"} and set(res["target"]) == {"person"}
    assert res["scheme"].iloc[0] == "random:1:0" and res["num_classes"].iloc[0] == 3  # background, person, one
    assert res["kept"].iloc[0] in set(VOC_CLASSES) - {"background", "person"}
    assert (tmp_path / "exp" / "num-labels" / "figure8.png").read_bytes()[:8] == PNG
    assert "| 1 | 4 |" in r.output and "figure8.png" in r.output
    r = CliRunner().invoke(train, ["run", str(inp), "-o", str(tmp_path / "exp"), "--test-maps", str(tmp_path),
                                   *common])
    assert r.exit_code == 2 and "--test-maps applies to CSAW-S" in r.output
