"""Running batches on a Dask cluster: same results as a local run, robust to dying workers.

One LocalCluster of two single-threaded worker processes on 127.0.0.1 serves
the whole module; runs connect to it with ``scheduler="tcp://..."`` exactly
as they would to a scheduler on another machine.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from pathlib import Path

import pytest

pytest.importorskip("distributed", reason="the [dask] extra is not installed")

import scaleout_helpers as helpers  # noqa: E402  (tests/ is on sys.path; worker processes inherit it)

from csaws_tools.batch import Task, read_manifest, run_batch  # noqa: E402
from csaws_tools.errors import CsawsError, DependencyError  # noqa: E402
from csaws_tools.execution import scaleout  # noqa: E402


@contextlib.contextmanager
def local_cluster():
    """A LocalCluster with two worker processes on loopback.

    The in-process scheduler gives up on a just-killed worker after 5 s instead
    of Dask's default 30 s connect timeout (loopback connects take milliseconds).
    """
    import dask
    from distributed import Client, LocalCluster

    with dask.config.set({"distributed.comm.timeouts.connect": "5s"}), \
            LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                         dashboard_address=None,
                         scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"}) as c:
        with Client(c.scheduler_address, set_as_default=False) as client:
            client.wait_for_workers(2, timeout=120)
        yield c


@pytest.fixture(scope="module")
def cluster():
    """One cluster shared by this module's tests that kill no worker."""
    with local_cluster() as c:
        yield c


@pytest.fixture
def address(cluster) -> str:
    """The shared cluster's scheduler address, after checking both workers are there."""
    from distributed import Client

    with Client(cluster.scheduler_address, set_as_default=False) as client:
        client.wait_for_workers(2, timeout=120)
    return cluster.scheduler_address


@pytest.fixture
def killable_address():
    """A cluster of its own for a test that kills workers.

    A killed worker is restarted by its nanny, which on a busy shared machine
    has failed for good (the shared cluster then served 1 of 2 workers to
    every later test: "Only 1/2 workers arrived after 30"); a test's own
    cluster keeps that from reaching the others.
    """
    with local_cluster() as c:
        yield c.scheduler_address


def toy_tasks(out: Path, n: int) -> list[Task]:
    return [Task(key=f"k{i:03d}", source=f"in/k{i:03d}", output=str(out / f"k{i:03d}.txt")) for i in range(n)]


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def comparable(rows: list[dict]) -> list[tuple]:
    """Rows without what legitimately differs between runs (timings, pids, the output folder)."""
    return sorted((r["source"], Path(r["output"]).name, r["status"], r["error"], r["settings_hash"]) for r in rows)


def test_cluster_run_equals_local_run(tmp_path, address):
    local_out, dask_out = tmp_path / "local", tmp_path / "dask"
    local = run_batch(toy_tasks(local_out, 60), helpers.write_toy, manifest=local_out / "manifest.parquet",
                      settings={"s": 1}, workers=2, progress=False)
    remote = run_batch(toy_tasks(dask_out, 60), helpers.write_toy, manifest=dask_out / "manifest.parquet",
                       settings={"s": 1}, scheduler=address, progress=False)
    assert remote.summary() == local.summary() == "60 converted, 0 skipped, 0 failed"
    assert files(dask_out).keys() == files(local_out).keys()
    expected = {f"k{i:03d}.txt": helpers.content(f"k{i:03d}") for i in range(60)}
    assert {k: v for k, v in files(dask_out).items() if k.endswith(".txt")} == expected
    assert comparable(remote.rows) == comparable(local.rows)
    # The work really ran in the cluster's worker processes, not here.
    assert os.getpid() not in {r["pid"] for r in remote.rows}
    frame = read_manifest(dask_out / "manifest.parquet")
    assert len(frame) == 60 and set(frame["status"]) == {"ok"}
    # A rerun on the cluster skips everything and changes nothing.
    again = run_batch(toy_tasks(dask_out, 60), helpers.write_toy, manifest=dask_out / "manifest.parquet",
                      settings={"s": 1}, scheduler=address, progress=False)
    assert again.summary() == "0 converted, 60 skipped, 0 failed"
    assert {k: v for k, v in files(dask_out).items() if k.endswith(".txt")} == expected


def test_worker_killed_mid_batch_is_retried(tmp_path, killable_address):
    out = tmp_path / "out"
    marker = tmp_path / "died"
    worker = functools.partial(helpers.write_toy, die_marker=str(marker), die_on="k013")
    # Batches of 10: k013 is the fourth input of the second batch, so the worker dies mid-batch.
    result = run_batch(toy_tasks(out, 40), worker, manifest=out / "manifest.parquet",
                       scheduler=killable_address, batch_size=10, progress=False)
    assert marker.exists(), "the worker process was not killed"
    assert int(marker.read_text()) not in {r["pid"] for r in result.rows}
    assert result.failed == 0 and len(result.rows) == 40
    assert sorted(r["source"] for r in result.rows) == [f"in/k{i:03d}" for i in range(40)]
    # Inputs finished by the lost attempt are reported as skipped: their outputs were complete.
    assert result.count("ok") + result.count("skipped") == 40
    assert files(out) == {**{f"k{i:03d}.txt": helpers.content(f"k{i:03d}") for i in range(40)},
                          "manifest.parquet": (out / "manifest.parquet").read_bytes()}


def test_input_that_always_kills_its_worker_fails_alone(tmp_path, killable_address, capsys):
    out = tmp_path / "out"
    worker = functools.partial(helpers.write_toy, always_die_on="k005")
    result = run_batch(toy_tasks(out, 12), worker, manifest=None, scheduler=killable_address, batch_size=6,
                       progress=False)
    failed = [r for r in result.rows if r["status"] == "error"]
    assert [r["source"] for r in failed] == ["in/k005"]
    assert failed[0]["error"].startswith("worker process died while processing this input")
    assert result.count("ok") + result.count("skipped") == 11
    assert "error: in/k005: worker process died" in capsys.readouterr().err
    assert not (out / "k005.txt").exists()
    assert all((out / f"k{i:03d}.txt").read_bytes() == helpers.content(f"k{i:03d}") for i in range(12) if i != 5)


def test_errors_become_rows_and_fail_fast_stops(tmp_path, address):
    worker = functools.partial(helpers.write_toy, bad="k002")
    result = run_batch(toy_tasks(tmp_path / "a", 8), worker, manifest=None, scheduler=address, progress=False)
    errors = {r["source"]: r["error"] for r in result.rows if r["status"] == "error"}
    assert errors == {"in/k002": "this input is broken"}
    assert result.exit_code == 1
    stopped = run_batch(toy_tasks(tmp_path / "b", 60), worker, manifest=None, scheduler=address,
                        batch_size=3, fail_fast=True, progress=False)
    assert stopped.failed == 1 and len(stopped.rows) < 60


def test_scheduler_local_starts_and_closes_its_own_cluster(tmp_path):
    psutil = pytest.importorskip("psutil")
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    out = tmp_path / "out"
    result = run_batch(toy_tasks(out, 10), helpers.write_toy, manifest=None, scheduler="local", workers=2,
                       progress=False)
    assert result.summary() == "10 converted, 0 skipped, 0 failed"
    assert len({r["pid"] for r in result.rows} - {os.getpid()}) >= 1
    assert os.getpid() not in {r["pid"] for r in result.rows}
    leftover = [p for p in psutil.Process().children(recursive=True) if p.pid not in before and p.is_running()
                and p.status() != psutil.STATUS_ZOMBIE]
    assert leftover == []


def test_default_batch_size():
    assert scaleout.default_batch_size(10, 2) == 2  # a few tasks per worker
    assert scaleout.default_batch_size(3, 8) == 1
    assert scaleout.default_batch_size(1_000_000, 100) == 200  # capped: hundreds of files per task
    assert scaleout.default_batch_size(4000, 10) == 100


def test_unreachable_scheduler_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(scaleout, "CONNECT_TIMEOUT", 1.0)
    with pytest.raises(CsawsError, match=r"cannot reach the Dask scheduler within 1 s"):
        run_batch([Task("a", "in/a", None)], helpers.noop, manifest=None, scheduler="tcp://127.0.0.1:9",
                  progress=False)


def test_missing_scheduler_file_is_a_clear_error(tmp_path):
    with pytest.raises(CsawsError, match="scheduler file not found"):
        run_batch([Task("a", "in/a", None)], helpers.noop, manifest=None,
                  scheduler=str(tmp_path / "scheduler.json"), progress=False)


def test_without_dask_the_message_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if not installed
    with pytest.raises(DependencyError, match=r"pip install 'csaws-tools\[dask\]'"):
        run_batch([Task("a", "in/a", None)], helpers.noop, manifest=None, scheduler="local", progress=False)


def test_workers_with_another_version_are_refused(address, monkeypatch):
    monkeypatch.setattr(scaleout, "__version__", "0.0.1-other")  # this side claims another version
    with pytest.raises(CsawsError, match=r"workers run csaws-tools .*, this machine 0.0.1-other"):
        run_batch([Task("a", "in/a", None)], helpers.noop, manifest=None, scheduler=address, progress=False)


def test_worker_the_cluster_cannot_import_is_a_clear_error(tmp_path, address, monkeypatch):
    # A module only this process can import (added to sys.path after the workers started).
    (tmp_path / "only_here_module.py").write_text("def work(task):\n    return {}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import only_here_module

    with pytest.raises(CsawsError, match=r"workers cannot run this command .*only_here_module.*installed on every worker"):
        run_batch([Task("a", "in/a", None)], only_here_module.work, manifest=None, scheduler=address,
                  progress=False)


# --------------------------------------------------------------------------- the real commands

MG = "1.2.840.10008.5.1.4.1.1.1.2"  # Digital Mammography X-Ray Image Storage - For Presentation


def write_dicoms(folder: Path, n: int) -> None:
    """``n`` uncompressed 128 x 128 12-bit mammography DICOMs with window tags, plus one non-DICOM file."""
    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    rng = np.random.default_rng(3)
    for i in range(n):
        uid = f"1.2.826.0.1.3680043.10.99.{i + 1}"
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MG
        meta.MediaStorageSOPInstanceUID = uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID, ds.StudyInstanceUID = MG, uid, uid + ".1"
        ds.PatientID, ds.Modality, ds.InstanceNumber = f"P{i % 4:03d}", "MG", i + 1
        ds.ImageLaterality, ds.ViewPosition = ("L", "R")[i % 2], ("CC", "MLO")[(i // 2) % 2]
        ds.Rows = ds.Columns = 128
        ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 1, 16, 12, 11, 0
        ds.PhotometricInterpretation = "MONOCHROME1" if i % 3 == 0 else "MONOCHROME2"
        ds.WindowCenter, ds.WindowWidth = 1800 + 20 * i, 2400 - 10 * i
        ds.PixelData = rng.integers(0, 4096, size=(128, 128), dtype=np.uint16).tobytes()
        path = folder / f"P{i % 4:03d}" / f"img{i:02d}.dcm"
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(path, enforce_file_format=True)
    (folder / "notes.txt").write_text("not a DICOM file\n")


def tree(folder: Path, suffix: str = ".png") -> dict[str, bytes]:
    """Every output file under ``folder`` by relative path (hidden temporaries would show up too)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and (p.suffix == suffix or p.name.startswith("."))}


def manifest_rows(path: Path, folder: Path) -> list[tuple]:
    frame = read_manifest(path).drop(columns=["seconds"])
    frame["output"] = frame["output"].map(lambda p: Path(p).relative_to(folder).as_posix() if isinstance(p, str) else None)
    return sorted(map(tuple, frame.astype(str).itertuples(index=False)))


@pytest.fixture(scope="module")
def dicoms(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("dicoms")
    write_dicoms(folder, 24)
    return folder


def test_dicom2png_cluster_and_shards_equal_local(dicoms, tmp_path, address):
    from click.testing import CliRunner

    from csaws_tools.cli import main

    runner = CliRunner()
    local, dask, sharded = tmp_path / "local", tmp_path / "dask", tmp_path / "sharded"
    res = runner.invoke(main, ["dicom2png", str(dicoms), "-o", str(local), "-j", "2", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "24 converted, 1 skipped, 0 failed" in res.output
    res = runner.invoke(main, ["dicom2png", str(dicoms), "-o", str(dask), "--scheduler", address,
                               "--batch-size", "5", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "24 converted, 1 skipped, 0 failed" in res.output
    for i in (1, 2, 3):
        res = runner.invoke(main, ["dicom2png", str(dicoms), "-o", str(sharded), "--shard", f"{i}/3",
                                   "--no-progress"])
        assert res.exit_code == 0, res.output
    res = runner.invoke(main, ["manifest", "merge", str(sharded)])
    assert res.exit_code == 0, res.output
    assert "merged 3 manifests: 25 rows (24 converted, 1 skipped, 0 failed)" in res.output

    expected = tree(local)
    assert len(expected) == 24 and not any(k.startswith(".") for k in expected)
    assert tree(dask) == expected  # byte for byte
    assert tree(sharded) == expected
    rows = manifest_rows(local / "manifest.parquet", local)
    assert manifest_rows(dask / "manifest.parquet", dask) == rows
    assert manifest_rows(sharded / "manifest.parquet", sharded) == rows


def test_dicom2png_worker_killed_mid_batch(dicoms, tmp_path, killable_address, monkeypatch):
    from csaws_tools.dicom import convert as dicom2png

    local = tmp_path / "local"
    assert dicom2png.convert(dicoms, local, workers=1, progress=False).exit_code == 0
    marker = tmp_path / "died"
    # Wrap the command's per-file worker so that the worker process dies at img13, once.
    monkeypatch.setattr(dicom2png, "_task_worker",
                        helpers.DieOnce(dicom2png._task_worker, marker=str(marker), name="img13.dcm"))
    dask = tmp_path / "dask"
    result = dicom2png.convert(dicoms, dask, scheduler=killable_address, batch_size=6, progress=False)
    assert marker.exists(), "the worker process was not killed"
    assert result.failed == 0 and result.count("ok") + result.count("skipped") == 25
    assert tree(dask) == tree(local)


def test_cli_without_dask_names_the_extra(dicoms, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from csaws_tools.cli import main

    monkeypatch.setitem(sys.modules, "distributed", None)  # as if the [dask] extra were not installed
    res = CliRunner().invoke(main, ["dicom2png", str(dicoms), "-o", str(tmp_path / "out"), "--scheduler", "local",
                                    "--no-progress"])
    assert res.exit_code == 2
    assert "error: --scheduler needs Dask: pip install 'csaws-tools[dask]'" in res.output
    assert not list((tmp_path / "out").rglob("*.png"))


def test_merge_masks_and_patches_on_the_cluster_equal_local(sample_root, tmp_path, address):
    import h5py
    import numpy as np

    from csaws_tools.merge import merge_masks
    from csaws_tools.patches import write_patches

    maps_local, maps_dask = tmp_path / "maps_local", tmp_path / "maps_dask"
    a = merge_masks(sample_root / "CsawS", maps_local, workers=2, progress=False)
    b = merge_masks(sample_root / "CsawS", maps_dask, scheduler=address, progress=False)
    assert a.exit_code == b.exit_code == 0 and a.summary() == b.summary()
    expected = tree(maps_local)
    assert expected and tree(maps_dask) == expected

    h5_local, h5_dask = tmp_path / "local.h5", tmp_path / "dask.h5"
    write_patches(sample_root / "CsawS", maps_local / "trainval", h5_local, size=128, per_class=2, workers=2,
                  progress=False)
    write_patches(sample_root / "CsawS", maps_local / "trainval", h5_dask, size=128, per_class=2,
                  scheduler=address, progress=False)
    with h5py.File(h5_local, "r") as x, h5py.File(h5_dask, "r") as y:
        names: list[str] = []
        x.visit(names.append)
        other: list[str] = []
        y.visit(other.append)
        assert sorted(names) == sorted(other)
        datasets = [n for n in names if isinstance(x[n], h5py.Dataset)]
        assert datasets
        for n in datasets:
            np.testing.assert_array_equal(x[n][()], y[n][()], err_msg=n)
