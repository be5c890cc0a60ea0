"""Joining shard manifests: sharded runs plus a merge equal one run."""

from __future__ import annotations

import functools
import shutil
from pathlib import Path

import pytest
import scaleout_helpers as helpers
from click.testing import CliRunner

from csaws_tools.batch import Task, read_manifest, run_batch, settings_hash, write_manifest
from csaws_tools.cli import main
from csaws_tools.errors import CsawsError
from csaws_tools.manifests import MissingShardWarning, merge_manifests, summarize_manifest

SETTINGS = {"kind": "toy", "level": 3}


def toy_tasks(out: Path, n: int = 30) -> list[Task]:
    return [Task(key=f"p{i:02d}/img.dcm", source=f"in/p{i:02d}/img.dcm", output=str(out / f"p{i:02d}.txt"))
            for i in range(n)]


def shard_runs(out: Path, n: int, worker=helpers.write_toy, settings=SETTINGS) -> list[Path]:
    paths = []
    for i in range(1, n + 1):
        result = run_batch(toy_tasks(out), worker, manifest=out / "manifest.parquet", settings=settings,
                           workers=1, shard=(i, n), progress=False)
        paths.append(result.manifest)
    return paths


def comparable(frame) -> list[tuple]:
    """Rows without timings and pids (they differ between any two runs), outputs by name."""
    frame = frame.drop(columns=[c for c in ("seconds", "pid") if c in frame])
    frame["output"] = frame["output"].map(lambda p: Path(p).name)
    return sorted(map(tuple, frame.astype(str).itertuples(index=False)))


def test_sharded_runs_plus_merge_equal_one_run(tmp_path):
    whole, sharded = tmp_path / "whole", tmp_path / "sharded"
    one = run_batch(toy_tasks(whole), functools.partial(helpers.write_toy, bad="p07/img.dcm"),
                    manifest=whole / "manifest.parquet", settings=SETTINGS, workers=1, progress=False)
    paths = shard_runs(sharded, 3, worker=functools.partial(helpers.write_toy, bad="p07/img.dcm"))
    assert [p.name for p in paths] == [f"manifest.shard-000{i}-of-0003.parquet" for i in (1, 2, 3)]
    parts = [read_manifest(p) for p in paths]
    assert all(len(p) for p in parts) and sum(len(p) for p in parts) == 30

    merged = merge_manifests(sharded)  # the folder stands for its shard manifests
    assert merged.attrs["path"] == str(sharded / "manifest.parquet")
    expected = read_manifest(whole / "manifest.parquet")
    written = read_manifest(sharded / "manifest.parquet")
    assert list(written.columns) == list(expected.columns)
    assert comparable(written) == comparable(expected)
    assert list(written["source"]) == sorted(expected["source"])
    assert written.attrs["csaws_tools"]["settings"] == expected.attrs["csaws_tools"]["settings"] == SETTINGS
    assert written.attrs["csaws_tools"]["settings_hash"] == settings_hash(SETTINGS)
    assert written.attrs["csaws_tools"]["shards"] == 3
    assert (written["status"] == "error").sum() == one.failed == 1
    # And the outputs themselves are the same files.
    outputs = sorted(p.name for p in sharded.glob("*.txt"))
    assert outputs == sorted(p.name for p in whole.glob("*.txt"))
    assert all((sharded / n).read_bytes() == (whole / n).read_bytes() for n in outputs)


def test_missing_shard_is_an_error_unless_allowed(tmp_path):
    paths = shard_runs(tmp_path, 4)
    paths[1].unlink()
    paths[2].unlink()
    with pytest.raises(CsawsError, match=r"2 of 4 shards missing \(shard 2-3\)"):
        merge_manifests(tmp_path)
    assert not (tmp_path / "manifest.parquet").exists()
    with pytest.warns(MissingShardWarning, match="2 of 4 shards missing"):
        merged = merge_manifests(tmp_path, allow_missing=True)
    assert merged.attrs["csaws_tools"]["missing_shards"] == [2, 3]
    assert len(merged) == len(read_manifest(paths[0])) + len(read_manifest(paths[3]))


def test_shards_with_different_settings_are_refused(tmp_path):
    a = shard_runs(tmp_path / "a", 2)
    b = shard_runs(tmp_path / "b", 2, settings={**SETTINGS, "level": 4})
    with pytest.raises(CsawsError, match="made with different settings"):
        merge_manifests([a[0], b[1]], tmp_path / "m.parquet")


def test_input_in_two_shards_is_refused(tmp_path):
    rows = [{"source": "in/a", "output": "a", "status": "ok", "error": None},
            {"source": "in/b", "output": "b", "status": "ok", "error": None}]
    meta = {"settings": {}, "settings_hash": settings_hash({})}
    write_manifest(tmp_path / "m.shard-0001-of-0002.parquet", rows, {**meta, "shard": [1, 2]})
    write_manifest(tmp_path / "m.shard-0002-of-0002.parquet", rows[1:], {**meta, "shard": [2, 2]})
    with pytest.raises(CsawsError, match=r"1 inputs appear in more than one manifest: in/b"):
        merge_manifests(tmp_path)


def test_same_shard_twice_and_mixed_splits_are_refused(tmp_path):
    paths = shard_runs(tmp_path / "a", 2)
    copy = tmp_path / "copy.parquet"
    shutil.copy(paths[0], copy)
    with pytest.raises(CsawsError, match=r"shard 1/2 is given twice"):
        merge_manifests([paths[0], copy, paths[1]], tmp_path / "m.parquet")
    other = shard_runs(tmp_path / "b", 3)
    with pytest.raises(CsawsError, match=r"shards of different splits \(N = 2, 3\)"):
        merge_manifests([paths[0], other[1]], tmp_path / "m.parquet")
    with pytest.raises(CsawsError, match="would overwrite one of its inputs"):
        merge_manifests(paths, paths[0])


def test_cli_merge_and_show(tmp_path):
    worker = functools.partial(helpers.write_toy, bad="p03/img.dcm")
    shard_runs(tmp_path, 2, worker=worker)
    runner = CliRunner()
    result = runner.invoke(main, ["manifest", "merge", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "merged 2 manifests: 30 rows (29 converted, 0 skipped, 1 failed)" in result.output
    assert (tmp_path / "manifest.parquet").is_file()

    shown = runner.invoke(main, ["manifest", "show", str(tmp_path)])
    assert shown.exit_code == 0, shown.output
    assert "30 rows: 29 converted, 0 skipped, 1 failed" in shown.output
    assert "merged from 2 shards" in shown.output
    assert "1  this input is broken" in shown.output
    assert "level = 3" in shown.output
    info = summarize_manifest(tmp_path / "manifest.parquet")
    assert info["status"] == {"ok": 29, "skipped": 0, "error": 1}
    assert info["errors"] == [("this input is broken", 1)]


def test_cli_missing_shard_message_and_allow_missing(tmp_path):
    paths = shard_runs(tmp_path, 3)
    paths[2].unlink()
    runner = CliRunner()
    result = runner.invoke(main, ["manifest", "merge", str(tmp_path)])
    assert result.exit_code == 2
    assert "error: 1 of 3 shards missing (shard 3)" in result.output
    allowed = runner.invoke(main, ["manifest", "merge", str(tmp_path), "-o", str(tmp_path / "part.parquet"),
                                   "--allow-missing"])
    assert allowed.exit_code == 0, allowed.output
    assert "warning: 1 of 3 shards missing (shard 3)" in allowed.output
    assert read_manifest(tmp_path / "part.parquet").attrs["csaws_tools"]["missing_shards"] == [3]


def test_output_written_by_two_shards_is_refused(tmp_path):
    """Two inputs of different shards named alike (a --name template) overwrite each other: merge says so."""
    from csaws_tools.batch import in_shard

    keys = [f"p{i:02d}/img.dcm" for i in range(40)]
    a = next(k for k in keys if in_shard(k, (1, 2)))
    b = next(k for k in keys if in_shard(k, (2, 2)))
    out = tmp_path / "out"
    tasks = [Task(key=k, source=f"in/{k}", output=str(out / "same.txt")) for k in (a, b)]
    for i in (1, 2):
        run_batch(tasks, helpers.write_toy, manifest=out / "manifest.parquet", settings=SETTINGS, workers=1,
                  shard=(i, 2), progress=False)
    with pytest.raises(CsawsError, match="1 outputs were written by more than one manifest"):
        merge_manifests(out)
