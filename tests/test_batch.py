import functools
import os

import pytest

from csaws_tools.batch import (
    Task,
    in_shard,
    parse_shard,
    read_manifest,
    run_batch,
    settings_hash,
    shard_manifest_path,
)
from csaws_tools.errors import CsawsError, InputError


def square(task: Task, *, fail_on: str = "") -> dict:
    if task.key == fail_on:
        raise InputError("this input is broken")
    if task.key == "crash":
        raise ZeroDivisionError("division by zero")
    return {"value": int(task.key) ** 2 if task.key.isdigit() else None}


def die(task: Task) -> dict:
    if task.key == "3":
        os._exit(1)  # a worker process dies (as if killed)
    return {"value": 1}


def tasks(keys):
    return [Task(key=k, source=f"in/{k}", output=f"out/{k}") for k in keys]


@pytest.mark.parametrize("workers", [1, 2])
def test_errors_become_rows_and_batch_goes_on(tmp_path, workers, capsys):
    worker = functools.partial(square, fail_on="2")
    result = run_batch(tasks(["1", "2", "3", "crash"]), worker, manifest=tmp_path / "m.parquet",
                       settings={"a": 1}, workers=workers, progress=False)
    by_key = {r["source"]: r for r in result.rows}
    assert by_key["in/1"]["value"] == 1 and by_key["in/3"]["value"] == 9
    assert by_key["in/2"]["status"] == "error" and by_key["in/2"]["error"] == "this input is broken"
    assert by_key["in/crash"]["error"] == "ZeroDivisionError: division by zero"
    assert result.summary("squared") == "2 squared, 0 skipped, 2 failed"
    assert result.exit_code == 1
    err = capsys.readouterr().err
    assert "error: in/2: this input is broken" in err
    frame = read_manifest(tmp_path / "m.parquet")
    assert list(frame.columns[:4]) == ["source", "output", "status", "error"]
    assert set(frame["settings_hash"]) == {settings_hash({"a": 1})}
    assert frame.attrs["csaws_tools"]["settings"] == {"a": 1}


def test_fail_fast_stops_early(tmp_path):
    result = run_batch(tasks([str(i) for i in range(20)]), functools.partial(square, fail_on="0"),
                       manifest=None, workers=1, fail_fast=True, progress=False)
    assert len(result.rows) == 1 and result.failed == 1


def test_duplicate_outputs_error_for_the_second(tmp_path):
    ts = [Task("a", "in/a", "out/x.png"), Task("b", "in/b", "out/x.png")]
    result = run_batch(ts, functools.partial(square), manifest=None, workers=1, progress=False)
    errors = [r for r in result.rows if r["status"] == "error"]
    assert len(errors) == 1 and errors[0]["source"] == "in/b"
    assert "already written by input in/a" in errors[0]["error"]


def test_dead_worker_fails_only_its_batch(tmp_path):
    result = run_batch(tasks([str(i) for i in range(8)]), die, manifest=None, workers=2, progress=False)
    assert len(result.rows) == 8
    failed = [r["source"] for r in result.rows if r["status"] == "error"]
    assert failed == ["in/3"]


def test_shards_partition_the_inputs():
    keys = [f"p{i}/img.dcm" for i in range(200)]
    parts = [[k for k in keys if in_shard(k, (i, 4))] for i in range(1, 5)]
    assert sorted(sum(parts, [])) == sorted(keys)
    assert all(parts)
    assert parse_shard("2/4") == (2, 4)
    for bad in ("0/4", "5/4", "x", "1/0"):
        with pytest.raises(CsawsError):
            parse_shard(bad)
    assert shard_manifest_path(__import__("pathlib").Path("o/manifest.parquet"), (3, 10)).name == (
        "manifest.shard-0003-of-0010.parquet"
    )


def test_settings_hash_is_order_independent():
    assert settings_hash({"a": 1, "b": [1, 2]}) == settings_hash({"b": [1, 2], "a": 1})
    assert settings_hash({"a": 1}) != settings_hash({"a": 2})


# ---------------------------------------------------------------- run options


def test_run_options_take_the_old_keywords_over_the_object():
    from csaws_tools.execution.options import RunOptions, run_options

    base = RunOptions(workers=3, progress=False)
    assert run_options(None, {}) == RunOptions()
    assert run_options(base, {}) is base
    assert run_options(base, {"overwrite": True, "shard": [2, 4]}) == RunOptions(
        workers=3, progress=False, overwrite=True, shard=(2, 4))
    with pytest.raises(TypeError, match="convert\\(\\) got an unexpected keyword argument 'wokers'"):
        run_options(None, {"wokers": 2}, "convert")


def test_a_stage_given_run_options_or_keywords_writes_the_same(tmp_path):
    from csaws_tools.execution.options import RunOptions

    tasks = [Task(key=str(i), source=str(i)) for i in range(4)]
    by_object = run_batch(tasks, _echo_worker, manifest=None, run=RunOptions(workers=1, progress=False))
    by_keywords = run_batch(tasks, _echo_worker, manifest=None, workers=1, progress=False)
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in by_object.rows]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in by_keywords.rows]
    assert by_object.count("ok") == 4


def test_map_ordered_keeps_the_input_order_and_raises_the_first_error():
    from csaws_tools.execution.runner import map_ordered

    assert map_ordered(abs, [-3, 1, -2, 5, -8, 13], workers=2) == [3, 1, 2, 5, 8, 13]
    assert map_ordered(abs, [-1], workers=4) == [1]
    with pytest.raises(TypeError):
        map_ordered(abs, [1, "x", 2], workers=2)


def _echo_worker(task: Task) -> dict:
    return {"source": task.source, "output": None, "status": "ok", "value": int(task.key) * 2}
