"""Training runs end to end on CPU: resume, the with/without grid on the sample dataset, evaluation, CLI."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pd = pytest.importorskip("pandas")

from click.testing import CliRunner  # noqa: E402

from csaws_tools.png import read_png  # noqa: E402
from csaws_tools.train.augment import AugmentConfig  # noqa: E402
from csaws_tools.train.evaluate import evaluate_model  # noqa: E402
from csaws_tools.train.experiment import ExperimentConfig, run_grid  # noqa: E402
from csaws_tools.train.loop import TrainConfig, train_run  # noqa: E402
from csaws_tools.train.prepare import prepare_inputs  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def prepared(small_release, tmp_path_factory):
    """The sample dataset (small images) -> label maps -> crops, tiles and splits."""
    root = small_release
    p = prepare_inputs(root / "raw" / "CsawS", root / "maps", tmp_path_factory.mktemp("inputs"), patch_size=64,
                       per_class=2, sizes=(2, 3), repetitions=2, workers=1, progress=False, subsets="own")
    return root, p


def tiny(p, **kw) -> TrainConfig:
    base = dict(iterations=3, batch_size=2, val_every=1, val_max_crops=4, eval_batch_size=8,
                output_stride=16, augment=AugmentConfig(crop=48), pretrained=None, progress=False)
    base.update(kw)
    return TrainConfig(p.train_file_for(0), p.val_file, **base)


def test_resume_after_interruption(prepared, tmp_path):
    _, p = prepared
    cfg = tiny(p, scheme="binary")
    first = train_run(cfg, tmp_path / "run", stop_after=1)
    assert first["status"] == "interrupted" and (tmp_path / "run" / "last.pt").is_file()
    assert not (tmp_path / "run" / "metrics.json").exists()
    done = train_run(cfg, tmp_path / "run")
    assert done["status"] == "done" and done["iterations"] == 3
    assert [h["iteration"] for h in done["history"]] == [1, 2, 3]
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert ckpt["iteration"] == 3
    # the same run without interruption ends with identical weights (batches and augmentation
    # are functions of (seed, iteration), the RNG state is checkpointed)
    straight = train_run(cfg, tmp_path / "straight")
    a = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)["model"]
    assert all(torch.allclose(a[k], ckpt["model"][k], atol=1e-5) for k in a)
    assert straight["history"][-1]["val_loss"] == pytest.approx(done["history"][-1]["val_loss"], rel=1e-4)
    # rerun: skipped; other settings in the same folder: refused
    assert train_run(cfg, tmp_path / "run")["status"] == "skipped"
    from csaws_tools.errors import InputError
    with pytest.raises(InputError, match="other settings"):
        train_run(replace(cfg, lr=1e-3), tmp_path / "run")
    info = json.loads((tmp_path / "run" / "config.json").read_text())
    assert info["settings"]["data"]["train_file"] and info["tool_version"] and info["seeds"]["run"] == 0
    assert info["config"]["scheme"] == "binary" and info["settings_hash"] == done["settings_hash"]
    hist = pd.read_csv(tmp_path / "run" / "history.csv")
    assert {"val_loss", "val_iou", "val_loss_ma"} <= set(hist.columns)


class Threshold(torch.nn.Module):
    """A stand-in model: cancer where the normalised image is above a threshold."""

    def __init__(self, t):
        super().__init__()
        self.t = t

    def forward(self, x):
        cancer = (x > self.t).float()
        return {"out": torch.cat([1 - cancer, cancer], dim=1)}


def test_evaluation_stitches_tiles_back(prepared):
    root, p = prepared
    raw = (153.5 / 255 - 0.176) / 0.218  # between pixel values 153 and 154 after normalisation
    rows, maps = evaluate_model(Threshold(raw), p.test_tiles, p.test_maps, return_maps=True)
    assert {r["evaluated_against"] for r in rows} == {"expert_1", "expert_2", "expert_3", "consensus"}
    images = {f.stem: f for f in (root / "raw" / "CsawS" / "test_data").rglob("*.png")
              if f.parent.parent.name == "anonymized_dataset"}
    for r in rows:
        folder = Path(p.test_maps) / ("consensus" if r["evaluated_against"] == "consensus"
                                      else "annotator_" + r["evaluated_against"].split("_")[1])
        tp = fp = fn = 0
        for f in sorted(folder.glob("*.png")):
            pred = read_png(images[f.stem]) >= 154
            assert np.array_equal(maps[f.stem] == 1, pred)  # stitched == thresholded full image
            ref = read_png(f) == 1
            tp += int((pred & ref).sum())
            fp += int((pred & ~ref).sum())
            fn += int((~pred & ref).sum())
        assert (r["tp"], r["fp"], r["fn"]) == (tp, fp, fn)
        assert r["iou"] == pytest.approx(tp / (tp + fp + fn))


def test_grid_cell_end_to_end_on_sample(prepared, tmp_path):
    _, p = prepared
    cfg = ExperimentConfig(train=tiny(p, iterations=2), test_tiles=p.test_tiles, test_maps=p.test_maps,
                           splits=p.splits, sizes=(2,), repetitions=1)
    res = run_grid(cfg, tmp_path / "exp", log=lambda m: None)
    out = tmp_path / "exp"
    table = pd.read_parquet(out / "results.parquet")
    assert len(table) == 8
    assert {"setting", "n_train", "repetition", "evaluated_against", "iou"} <= set(table.columns)
    assert set(table["setting"]) == {"with", "without"}
    assert set(table.loc[table.setting == "with", "num_classes"]) == {12}
    assert set(table.loc[table.setting == "without", "num_classes"]) == {2}
    assert table["iou"].between(0, 1).all() or table["iou"].isna().any()
    # both settings trained on the very same crops
    cw = json.loads((out / "runs/with/n2/rep0/config.json").read_text())
    co = json.loads((out / "runs/without/n2/rep0/config.json").read_text())
    assert cw["config"]["image_ids"] == co["config"]["image_ids"] and len(cw["config"]["image_ids"]) == 2
    assert cw["n_crops"] == co["n_crops"] and cw["config"]["seed"] == co["config"]["seed"]
    assert (out / "figure1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = pd.read_csv(out / "summary.csv")
    assert {"with_mean", "with_ci_low", "without_mean", "relative_gain"} <= set(summary.columns)
    assert "| consensus | 2 |" in (out / "summary.md").read_text()
    assert not (out / "runs/with/n2/rep0/last.pt").exists()  # only best.pt kept
    assert set(table["initialisation"]) == {"scratch"} and table["weights_sha256"].isna().all()
    assert "Initialisation: scratch" in (out / "summary.md").read_text()
    assert set(table["protocol"]) == {table["protocol"].iloc[0]} and "selection sul" in table["protocol"].iloc[0]
    assert "lr 0.0001 (sul schedule)" in table["protocol"].iloc[0]
    # rerun: every run and evaluation skipped, same results
    mtime = (out / "runs/with/n2/rep0/metrics.json").stat().st_mtime_ns
    again = run_grid(cfg, out, log=lambda m: None)
    assert (out / "runs/with/n2/rep0/metrics.json").stat().st_mtime_ns == mtime
    pd.testing.assert_frame_equal(again.reset_index(drop=True), res.reset_index(drop=True))
    # an edited test map: the evaluation is redone, the training is not
    tested = (out / "runs/with/n2/rep0/test.json").stat().st_mtime_ns
    a_map = sorted(Path(p.test_maps).rglob("*.png"))[0]
    os.utime(a_map, ns=(a_map.stat().st_atime_ns, a_map.stat().st_mtime_ns + 10**9))
    run_grid(cfg, out, log=lambda m: None)
    assert (out / "runs/with/n2/rep0/test.json").stat().st_mtime_ns != tested
    assert (out / "runs/with/n2/rep0/metrics.json").stat().st_mtime_ns == mtime


def test_cli_single_and_help(prepared, tmp_path):
    from csaws_tools.cli import main as prepare_main
    from csaws_tools.cli.train import train

    _, p = prepared
    runner = CliRunner()
    r = runner.invoke(prepare_main, ["train", "--help"])
    assert r.exit_code == 0 and "run" in r.output and "prepare" in r.output
    r = runner.invoke(train, ["single", "--train-file", p.train_file_for(0), "--val-file", p.val_file, "--scheme",
                              "leave-one-out:skin", "-o", str(tmp_path / "one"), "--iterations", "1",
                              "--batch-size", "2", "--crop", "48", "--val-every", "1", "--val-max-crops", "2",
                              "--output-stride", "16", "--device", "cpu", "--threads", "2",
                              "--pretrained", "none", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "done: selected iteration 1" in r.output
    cfg = json.loads((tmp_path / "one" / "config.json").read_text())
    assert cfg["config"]["scheme"] == "leave-one-out:skin"
    r = runner.invoke(train, ["run", "-o", str(tmp_path / "x"), "--test-maps", p.test_maps])
    assert r.exit_code == 2 and "error:" in r.output


def test_evaluation_counts_images_without_tiles_and_reads_release_numbering(tmp_path):
    """An image whose tiles were all dropped is predicted background (its cancer is missed, not skipped);
    reference maps written with the release numbering (cancer 0) are read through their labels.json."""
    from csaws_tools.classes import labels_json
    from csaws_tools.patches import write_patches
    from csaws_tools.png import write_png

    rng = np.random.default_rng(5)
    bright = rng.integers(0, 256, (40, 50), dtype=np.uint8)
    black = np.zeros((40, 50), np.uint8)          # all tiles dropped (tile_drop="black")
    cancer = np.zeros((40, 50), bool)
    cancer[5:25, 10:30] = True
    for image_id, img in (("000_1", bright), ("001_1", black)):
        write_png(tmp_path / "im" / f"{image_id}.png", img)
        write_png(tmp_path / "tilemaps" / f"{image_id}.png", cancer.astype(np.uint8))
        for folder in ("consensus", "annotator_1"):
            write_png(tmp_path / "maps" / "test" / folder / f"{image_id}.png", np.where(cancer, 0, 11).astype(np.uint8))
    (tmp_path / "maps" / "labels.json").write_text(labels_json("release"))
    res = write_patches(tmp_path / "im", tmp_path / "tilemaps", tmp_path / "tiles.h5", tiles=True, tile_drop="black",
                        size=32, progress=False, workers=1)
    assert res.exit_code == 0
    t = (153.5 / 255 - 0.176) / 0.218
    rows = evaluate_model(Threshold(t), tmp_path / "tiles.h5", tmp_path / "maps" / "test")
    pred = bright >= 154
    tp = int((pred & cancer).sum())
    fp = int((pred & ~cancer).sum())
    fn = int((~pred & cancer).sum()) + int(cancer.sum())  # the black image: all its cancer missed
    for r in rows:
        assert r["n_images"] == 2
        assert (r["tp"], r["fp"], r["fn"]) == (tp, fp, fn)


def test_validation_sharing_patients_with_training_is_refused(prepared, tmp_path):
    from csaws_tools.errors import InputError

    _, p = prepared
    with pytest.raises(InputError, match="must not share patients"):
        train_run(replace(tiny(p), val_file=p.train_file_for(0)), tmp_path / "leak")
    assert not (tmp_path / "leak" / "last.pt").exists()


def test_stop_between_validations_keeps_a_resume_point(prepared, tmp_path):
    _, p = prepared
    cfg = tiny(p, scheme="binary", iterations=2, val_every=2)
    first = train_run(cfg, tmp_path / "run", stop_after=1)
    assert first == {"status": "interrupted", "iteration": 1, "settings_hash": first["settings_hash"]}
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["iteration"] == 1
    messages = []
    done = train_run(cfg, tmp_path / "run", log=messages.append)
    assert any("resuming" in m and "iteration 1" in m for m in messages)
    assert done["status"] == "done" and [h["iteration"] for h in done["history"]] == [2]


def test_each_repetition_has_its_own_crops(prepared):
    """Protocol section 4: crops are sampled once per repetition, with a seed per repetition."""
    import h5py

    from csaws_tools.splits import load_splits, select_images
    from csaws_tools.train.prepare import crop_seed

    _, p = prepared
    splits = load_splits(p.splits)
    seeds = []
    for rep in range(2):
        wanted = {i for key in splits["subsets"] for i in select_images(splits, key, rep)}
        with h5py.File(p.train_file_for(rep)) as f:
            assert set(f["index/image_id"].asstr()[:]) == wanted
            seeds.append(int(f.attrs["seed"]))
    assert seeds == [crop_seed(0, 0), crop_seed(0, 1)]
    # an image in both repetitions gets other crop centres in each
    common = sorted(set(select_images(splits, "2", 0)) & set(select_images(splits, "2", 1))
                    | set(select_images(splits, "3", 0)) & set(select_images(splits, "3", 1)))
    assert common, "the two repetitions share no image"
    centres = []
    for rep in range(2):
        with h5py.File(p.train_file_for(rep)) as f:
            ids = f["index/image_id"].asstr()[:]
            sel = ids == common[0]
            centres.append(sorted(zip(f["index/center_row"][sel], f["index/center_col"][sel])))
    assert centres[0] != centres[1]
    with pytest.raises(Exception, match="per-repetition pattern"):
        train_run(TrainConfig(p.train_file, p.val_file, iterations=1, pretrained=None), "unused")


def test_cli_run_uses_each_repetitions_crops(prepared, tmp_path):
    """`csaws-train run INPUTS` picks INPUTS/train_rep<r>.h5 for repetition r."""
    from csaws_tools.cli.train import train
    from csaws_tools.train.data import file_hash

    _, p = prepared
    inputs = Path(p.val_file).parent
    out = tmp_path / "exp"
    r = CliRunner().invoke(train, ["run", str(inputs), "-o", str(out), "--test-maps", p.test_maps, "--sizes", "2",
                                   "--repetitions", "2", "--iterations", "1", "--batch-size", "2", "--crop", "48",
                                   "--val-every", "1", "--val-max-crops", "2", "--output-stride", "16",
                                   "--device", "cpu", "--threads", "2", "--pretrained", "none",
                                   "--no-progress"])
    assert r.exit_code == 0, r.output
    for rep in range(2):
        for setting in ("with", "without"):
            cfg = json.loads((out / "runs" / setting / "n2" / f"rep{rep}" / "config.json").read_text())
            assert Path(cfg["config"]["train_file"]).name == f"train_rep{rep}.h5"
            assert cfg["settings"]["data"]["train_file"] == file_hash(p.train_file_for(rep))


def test_imagenet_initialisation_from_the_hub_cache_is_recorded(prepared, tmp_path, monkeypatch):
    """--pretrained imagenet with the weights in a (temporary) torch hub cache: loaded, SHA-256 recorded."""
    import hashlib

    from csaws_tools.train.model import IMAGENET_FILE, build_model

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", lambda *a, **k: (_ for _ in ()).throw(OSError("offline")))
    ckpt_dir = tmp_path / "th" / "hub" / "checkpoints"
    ckpt_dir.mkdir(parents=True)
    state = {k: torch.randn_like(v) for k, v in build_model(2, output_stride=16).backbone.state_dict().items()}
    state["conv1.weight"] = torch.randn(64, 3, 7, 7)
    torch.save(state, ckpt_dir / IMAGENET_FILE)
    sha = hashlib.sha256((ckpt_dir / IMAGENET_FILE).read_bytes()).hexdigest()
    _, p = prepared
    m = train_run(tiny(p, scheme="binary", iterations=1, pretrained="imagenet"), tmp_path / "run")
    info = json.loads((tmp_path / "run" / "config.json").read_text())
    assert info["initialisation"] == "imagenet" and info["weights_sha256"] == sha
    assert m["initialisation"] == "imagenet" and m["weights_sha256"] == sha
    assert "tensors loaded" in info["pretrained_report"]


def test_runs_trained_in_parallel_processes_equal_those_run_one_after_the_other(prepared, tmp_path):
    _, p = prepared
    serial_cfg = ExperimentConfig(train=tiny(p, iterations=3, threads=1), test_tiles=p.test_tiles,
                                  test_maps=p.test_maps, splits=p.splits, sizes=(2,), repetitions=1)
    serial = run_grid(serial_cfg, tmp_path / "serial", log=lambda m: None)
    messages: list[str] = []
    # two processes with one thread each: the same arithmetic as one thread one run after the other
    parallel_cfg = replace(serial_cfg, jobs=2, train=replace(serial_cfg.train, threads=2))
    parallel = run_grid(parallel_cfg, tmp_path / "parallel", log=messages.append)
    columns = ["setting", "n_train", "repetition", "evaluated_against", "iou", "tp", "fp", "fn",
               "selected_iteration", "selected_val_iou", "num_classes"]
    pd.testing.assert_frame_equal(serial[columns], parallel[columns])
    for setting in ("with", "without"):
        a, b = (json.loads((tmp_path / folder / "runs" / setting / "n2/rep0/metrics.json").read_text())
                for folder in ("serial", "parallel"))
        assert a["settings_hash"] == b["settings_hash"]
        assert [{k: v for k, v in r.items() if k != "seconds"} for r in a["history"]] == \
            [{k: v for k, v in r.items() if k != "seconds"} for r in b["history"]]
    # the runs' messages reached the caller's log, each run's once
    assert sum(m.startswith("run 1 of 2: with") for m in messages) == 1
    assert sum(m.startswith("run 2 of 2: without") for m in messages) == 1


def test_a_run_failing_in_its_process_stops_the_grid_with_a_one_line_error(prepared, tmp_path):
    from csaws_tools.errors import CsawsError

    _, p = prepared
    cfg = ExperimentConfig(train=tiny(p, iterations=2), test_tiles=p.test_tiles, test_maps=p.test_maps,
                           splits=p.splits, sizes=(2,), repetitions=1, jobs=2)
    settings = [("with", "all", {}), ("broken", "keep:no_such_class", {})]
    with pytest.raises(CsawsError, match=r"^run 2 of 2 \(broken N=2 rep=0\): .*no_such_class") as caught:
        run_grid(cfg, tmp_path / "exp", settings=settings, log=lambda m: None)
    assert "\n" not in str(caught.value)
    with pytest.raises(Exception, match="jobs=0"):
        run_grid(replace(cfg, jobs=0), tmp_path / "exp0", log=lambda m: None)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            return not any(line.startswith("State:") and "Z" in line for line in f)
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="reads child processes from /proc")
def test_runs_in_their_own_processes_end_when_the_grid_process_is_killed(prepared, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    _, p = prepared
    script = f"""
import sys
from csaws_tools.train.augment import AugmentConfig
from csaws_tools.train.experiment import ExperimentConfig, run_grid
from csaws_tools.train.loop import TrainConfig
t = TrainConfig({p.train_file_for(0)!r}, {p.val_file!r}, iterations=100000, batch_size=2, val_every=1000,
                val_max_crops=4, output_stride=16, augment=AugmentConfig(crop=48), pretrained=None,
                progress=False, threads=2)
cfg = ExperimentConfig(train=t, test_tiles={p.test_tiles!r}, test_maps={p.test_maps!r}, splits={p.splits!r},
                       sizes=(2,), repetitions=1, jobs=2)
run_grid(cfg, {str(tmp_path / "exp")!r}, log=lambda m: None)
"""
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=root, env=dict(os.environ, PYTHONPATH=str(root)))
    try:
        runs: list[int] = []
        end = time.monotonic() + 120
        while len(runs) < 2 and time.monotonic() < end and proc.poll() is None:
            time.sleep(0.5)
            children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
            runs = [int(c) for c in children
                    if b"multiprocessing.spawn" in Path(f"/proc/{c}/cmdline").read_bytes()]
        assert len(runs) == 2, "the two runs did not start"
        proc.kill()  # SIGKILL: the grid process cannot stop its runs itself
        proc.wait()
        end = time.monotonic() + 15
        while any(_alive(pid) for pid in runs) and time.monotonic() < end:
            time.sleep(0.2)
        assert not any(_alive(pid) for pid in runs), "a run went on training after its grid process died"
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in runs:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_run_long_enough_for_suls_rate_drop_hashes_its_schedule(prepared):
    from csaws_tools.train.loop import plan_run

    _, p = prepared
    short = {s: plan_run(tiny(p, iterations=99_900, schedule=s), lambda m: None) for s in ("sul", "constant")}
    long = {s: plan_run(tiny(p, iterations=99_901, schedule=s), lambda m: None) for s in ("sul", "constant")}
    assert short["sul"].settings_hash == short["constant"].settings_hash  # the same rates throughout
    assert long["sul"].settings_hash != long["constant"].settings_hash  # the rate drops at 99,900
    assert long["sul"].settings["schedule"] == "sul"


def test_a_run_process_takes_the_parents_file_hashes_instead_of_reading_the_files_again(tmp_path):
    import hashlib

    from csaws_tools.train import data

    f = tmp_path / "big.h5"
    f.write_bytes(b"x" * 1000)
    data.add_known_hashes({(str(f.resolve()), 1000, f.stat().st_mtime_ns): "given by the parent"})
    assert data.file_hash(f) == "given by the parent"  # taken, not computed from the content
    assert data.known_hashes()[(str(f.resolve()), 1000, f.stat().st_mtime_ns)] == "given by the parent"
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**9))  # changed since: hashed again
    assert data.file_hash(f) == hashlib.sha256(b"x" * 1000).hexdigest()
