"""What the shared execution layer promises under hostile input and faults.

Each test attacks one promise of :mod:`csaws_tools.batch`, :mod:`csaws_tools.atomic`
or the shared CLI options, the way a user or a broken machine would.
"""

from __future__ import annotations

import errno
import functools
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from csaws_tools import atomic
from csaws_tools.execution import runner as batch
from csaws_tools.atomic import (
    FOREIGN_STALE_SECONDS,
    atomic_path,
    remove_stale_temporaries,
    temporary_path,
    write_bytes_atomic,
)
from csaws_tools.batch import (
    BatchResult,
    Task,
    escape_text,
    read_manifest,
    run_batch,
    task_hash,
    unescape_text,
    write_manifest,
)
from csaws_tools.errors import InputError, OutputError, OutputWriteError

ROOT = Path(__file__).resolve().parents[1]


def _env(**extra) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), **extra)
    return env


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _alive(pid: int) -> bool:
    """Alive and not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rsplit(b")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in (b"Z", b"X")


def size_worker(task: Task) -> dict:
    if "fail" in os.fsdecode(task.source):
        raise InputError(f"{task.source}: broken on purpose")
    return {"bytes": os.path.getsize(task.source)}


# ---------------------------------------------------------------- non-UTF-8 names (10.3)


@pytest.mark.skipif(sys.platform != "linux", reason="file names are arbitrary bytes only on Linux")
@pytest.mark.parametrize("workers", [1, 2])
def test_non_utf8_file_name_is_one_row_and_the_batch_goes_on(tmp_path, workers, capsys):
    raw_dir = os.fsencode(tmp_path)
    names = [b"good.dcm", b"bad\xff.dcm", b"fail\xfe\\x41.dcm", b"other.dcm"]
    for n in names:
        with open(os.path.join(raw_dir, n), "wb") as fh:
            fh.write(b"x" * len(n))
    sources = [os.fsdecode(os.path.join(raw_dir, n)) for n in names]
    tasks = [Task(key=os.path.basename(s), source=s, output=s + ".png") for s in sources]
    manifest = tmp_path / "manifest.parquet"
    result = run_batch(tasks, size_worker, manifest=manifest, workers=workers, progress=False,
                       shard=None)
    assert len(result.rows) == 4
    assert result.summary() == "3 converted, 0 skipped, 1 failed"
    err = capsys.readouterr().err
    assert "fail\\xfe\\x41.dcm: broken on purpose" in err  # printable, no UnicodeEncodeError

    frame = read_manifest(manifest)
    assert sorted(frame["source"]) == sorted(sources)  # round-trips exactly
    by_bytes = {os.fsencode(s): r for s, r in zip(frame["source"], frame.to_dict("records"))}
    assert by_bytes[os.path.join(raw_dir, b"bad\xff.dcm")]["bytes"] == len(b"bad\xff.dcm")
    assert by_bytes[os.path.join(raw_dir, b"fail\xfe\\x41.dcm")]["status"] == "error"
    assert "escaped" not in frame.columns

    raw = read_manifest(manifest, raw=True)  # what other Parquet readers see: valid UTF-8 text
    bad = raw[raw["source"].str.contains("bad")].iloc[0]
    assert bad["source"].endswith("bad\\xff.dcm") and bad["escaped"] == "source,output"
    tricky = raw[raw["source"].str.contains("fail")].iloc[0]
    assert tricky["source"].endswith("fail\\xfe\\\\x41.dcm")  # a real backslash is doubled
    assert raw[raw["source"].str.endswith("good.dcm")]["escaped"].isna().all()


def test_escape_round_trips_any_bytes():
    import random

    rng = random.Random(0)
    for _ in range(300):
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(12))).replace(b"\0", b"")
        text = os.fsdecode(data)
        stored = escape_text(text)
        stored.encode("utf-8")  # always valid UTF-8
        assert os.fsencode(unescape_text(stored)) == data


@pytest.mark.skipif(sys.platform != "linux", reason="file names are arbitrary bytes only on Linux")
def test_merging_shards_keeps_non_utf8_names(tmp_path):
    from csaws_tools.manifests import merge_manifests

    raw_dir = os.fsencode(tmp_path)
    sources = []
    for n in (b"a\xff.dcm", b"b.dcm", b"c\xfe.dcm", b"d.dcm"):
        with open(os.path.join(raw_dir, n), "wb") as fh:
            fh.write(b"x")
        sources.append(os.fsdecode(os.path.join(raw_dir, n)))
    tasks = [Task(key=os.path.basename(s), source=s) for s in sources]
    for i in (1, 2):
        run_batch(tasks, size_worker, manifest=tmp_path / "out" / "manifest.parquet", workers=1,
                  progress=False, shard=(i, 2))
    merged = merge_manifests(tmp_path / "out")
    assert sorted(read_manifest(merged.attrs["path"])["source"]) == sorted(sources)


# ---------------------------------------------------------------- temporaries (10.4, 10.9, 10.10)


def _renamed(tmp: Path, pid: int) -> Path:
    return tmp.with_name(tmp.name.replace(f".{os.getpid()}-", f".{pid}-"))


def test_live_writers_temporaries_survive_and_dead_ones_go(tmp_path):
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        alive_tmp = _renamed(temporary_path(tmp_path / "a.png"), live.pid)
        dead_tmp = _renamed(temporary_path(tmp_path / "b.png"), _dead_pid())
        reused_tmp = _renamed(temporary_path(tmp_path / "c.png"), live.pid)
        for p in (alive_tmp, dead_tmp, reused_tmp):
            p.write_bytes(b"partial")
        # Written an hour before the live process started: its writer was another, dead
        # process with the same (reused) id.
        old = time.time() - 3600
        os.utime(reused_tmp, (old, old))
        assert remove_stale_temporaries(tmp_path) == 2
        assert alive_tmp.exists() and not dead_tmp.exists() and not reused_tmp.exists()
    finally:
        live.kill()
        live.wait()


def test_a_killed_writer_not_yet_reaped_counts_as_dead(tmp_path):
    zombie = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        zombie.kill()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _alive(zombie.pid):
            time.sleep(0.02)
        os.kill(zombie.pid, 0)  # still exists (a zombie: nobody has waited for it)
        leftover = _renamed(temporary_path(tmp_path / "a.png"), zombie.pid)
        leftover.write_bytes(b"")
        assert remove_stale_temporaries(tmp_path) == 1
    finally:
        zombie.wait()


def test_other_hosts_temporaries_are_kept_until_a_day_old(tmp_path):
    mine = temporary_path(tmp_path / "a.png")
    foreign_name = mine.name.replace(f"-{atomic.host_tag()}.", "-ffff." if atomic.host_tag() != "ffff" else "-0000.")
    fresh = tmp_path / foreign_name
    stale = tmp_path / foreign_name.replace(".png.", ".jpg.")
    fresh.write_bytes(b"")
    stale.write_bytes(b"")
    old = time.time() - FOREIGN_STALE_SECONDS - 60
    os.utime(stale, (old, old))
    assert remove_stale_temporaries(tmp_path) == 1
    assert fresh.exists() and not stale.exists()


def test_second_run_does_not_delete_a_live_runs_temporary(tmp_path):
    """A first run writes slowly into OUT while a second run starts there and cleans up."""
    script = textwrap.dedent(f"""
        import sys, time
        from csaws_tools.atomic import atomic_path
        with atomic_path({str(tmp_path / 'slow.bin')!r}) as tmp:
            with open(tmp, 'wb') as fh:
                fh.write(b'first half ')
                fh.flush()
                print('writing', flush=True)
                time.sleep(2)
                fh.write(b'second half')
    """)
    first = subprocess.Popen([sys.executable, "-c", script], env=_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    assert first.stdout.readline().strip() == b"writing"
    result = run_batch([Task(key="x", source=str(tmp_path))], size_worker, manifest=tmp_path / "m.parquet",
                       workers=1, progress=False, output_dir=tmp_path)
    assert result.exit_code == 0
    _, err = first.communicate(timeout=30)
    assert first.returncode == 0, err.decode()
    assert (tmp_path / "slow.bin").read_bytes() == b"first half second half"


def test_run_batch_removes_dead_temporaries_from_its_output_folders(tmp_path):
    a, b = tmp_path / "maps", tmp_path / "previews" / "sub"
    b.mkdir(parents=True)
    a.mkdir()
    dead = _dead_pid()
    leftovers = [_renamed(temporary_path(a / "x.png"), dead), _renamed(temporary_path(b / "p.h5"), dead)]
    for p in leftovers:
        p.write_bytes(b"18 MB of half an HDF5 file")
    run_batch([], size_worker, manifest=None, progress=False, output_dir=[a, tmp_path / "previews"])
    assert not any(p.exists() for p in leftovers)


@pytest.mark.parametrize("length", range(236, 256))
def test_names_up_to_255_bytes_write_atomically(tmp_path, length):
    for stem_char in ("a", "é"):  # one- and two-byte characters
        unit = len(stem_char.encode())
        stem = stem_char * ((length - 4) // unit) + "b" * ((length - 4) % unit)
        name = stem + ".png"
        assert len(name.encode()) == length
        tmp = temporary_path(tmp_path / name)
        assert len(os.fsencode(tmp.name)) <= 255
        tmp.name.encode("utf-8")  # cut at a character boundary
        write_bytes_atomic(tmp_path / name, b"data")
        assert (tmp_path / name).read_bytes() == b"data"
        leftover = _renamed(tmp, _dead_pid())
        leftover.write_bytes(b"")
        assert remove_stale_temporaries(tmp_path) == 1  # the cut name is still recognised


# ---------------------------------------------------------------- write failures (10.8)


def test_disk_full_inside_atomic_path_names_the_output(tmp_path):
    target = tmp_path / "out" / "a.png"
    with pytest.raises(OutputWriteError) as info, atomic_path(target) as tmp, open(tmp, "wb"):
        raise OSError(errno.ENOSPC, "No space left on device")
    assert str(info.value) == f"{target}: cannot write the output (No space left on device)"
    assert isinstance(info.value, OSError) and isinstance(info.value, OutputError)
    assert info.value.errno == errno.ENOSPC
    assert list(target.parent.iterdir()) == []  # no temporary left


def test_cleanup_failure_does_not_hide_the_real_error(tmp_path, monkeypatch):
    def refuse(self, *a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    def read_only(src, dst):
        raise OSError(errno.EROFS, "Read-only file system", str(src), str(dst))

    monkeypatch.setattr(os, "replace", read_only)
    monkeypatch.setattr(Path, "unlink", refuse)
    with pytest.raises(OutputWriteError, match=r"a\.txt: cannot write the output \(Read-only file system\)"):
        write_bytes_atomic(tmp_path / "a.txt", b"x")


def test_input_errors_inside_atomic_path_are_not_blamed_on_the_output(tmp_path):
    with pytest.raises(FileNotFoundError), atomic_path(tmp_path / "a.png"):
        (tmp_path / "missing-input.dcm").read_bytes()


def _fail_write(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_at_the_first_manifest_write_is_one_line_before_any_work(tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    monkeypatch.setattr(pq, "write_table", _fail_write)
    ran = []
    with pytest.raises(OutputWriteError) as info:
        run_batch([Task(key="a", source=str(tmp_path))], functools.partial(_record, ran=ran),
                  manifest=tmp_path / "manifest.parquet", workers=1, progress=False)
    assert str(info.value) == f"{tmp_path / 'manifest.parquet'}: cannot write the output (No space left on device)"
    assert ran == []


def _record(task: Task, ran: list) -> dict:
    ran.append(task.key)
    return {}


def test_disk_full_at_a_later_manifest_write_lets_the_batch_finish_then_says_so(tmp_path, monkeypatch):
    calls = []
    real = batch.write_manifest

    def flaky(path, rows, meta=None):
        calls.append(len(rows))
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, rows, meta)

    monkeypatch.setattr(batch, "write_manifest", flaky)
    ran: list = []
    with pytest.raises(OutputWriteError, match="manifest.parquet: cannot write the output"):
        run_batch([Task(key=str(i), source=str(i)) for i in range(5)], functools.partial(_record, ran=ran),
                  manifest=tmp_path / "manifest.parquet", workers=1, progress=False)
    assert ran == ["0", "1", "2", "3", "4"]


def _batch_cli(fn):
    from csaws_tools.cli._common import batch_options, finish, handle_errors

    @click.command()
    @click.option("-o", "--out", type=click.Path(path_type=Path))
    @batch_options
    @handle_errors
    def cmd(out, workers, overwrite, fail_fast, no_progress, scheduler, shard, batch_size):
        fn(out=out, no_progress=no_progress)
        result = run_batch([Task(key=str(i), source=str(i)) for i in range(3)], functools.partial(_record, ran=[]),
                           manifest=out / "manifest.parquet", workers=1, progress=not no_progress)
        finish(result)

    return cmd


def test_cli_disk_full_at_the_manifest_is_one_line_exit_2(tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    monkeypatch.setattr(pq, "write_table", _fail_write)
    res = CliRunner().invoke(_batch_cli(lambda **k: None), ["-o", str(tmp_path)])
    assert res.exit_code == 2
    assert res.output.strip().splitlines() == [
        f"error: {tmp_path / 'manifest.parquet'}: cannot write the output (No space left on device)"]


def test_manifest_show_on_a_corrupt_file_is_one_line(tmp_path):
    from csaws_tools.cli import main

    write_manifest(tmp_path / "manifest.parquet", [{"source": "a", "status": "ok"}])
    data = (tmp_path / "manifest.parquet").read_bytes()
    (tmp_path / "manifest.parquet").write_bytes(data[: len(data) // 2] + b"\0" * 50 + data[-20:])
    res = CliRunner().invoke(main, ["manifest", "show", str(tmp_path)])
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {tmp_path / 'manifest.parquet'}: not a readable")
    assert "Traceback" not in res.output


# ---------------------------------------------------------------- orphaned workers (10.11)


def test_workers_exit_when_the_main_process_is_killed(tmp_path):
    script = textwrap.dedent(f"""
        import os, sys, time
        sys.path.insert(0, {str(ROOT / 'tests')!r})
        from csaws_tools.batch import Task, run_batch
        from test_guarantees_exec import sleepy_worker
        print(os.getpid(), flush=True)
        run_batch([Task(key=str(i), source={str(tmp_path)!r}) for i in range(8)], sleepy_worker,
                  manifest=None, workers=2, progress=False)
    """)
    main = subprocess.Popen([sys.executable, "-c", script], env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        pids: list[int] = []
        while time.monotonic() < deadline and len(pids) < 2:
            pids = [int(p.name.split(".")[0]) for p in tmp_path.glob("*.worker")]
            time.sleep(0.05)
        assert len(pids) == 2, main.stderr.read().decode() if main.poll() is not None else "no workers"
        assert all(_alive(p) for p in pids)
        main.send_signal(signal.SIGKILL)
        main.wait(10)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.05)
        assert not any(_alive(p) for p in pids), "pool processes outlived their killed parent"
    finally:
        main.kill()
        main.wait()
        for p in tmp_path.glob("*.worker"):
            try:
                os.kill(int(p.name.split(".")[0]), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass


def sleepy_worker(task: Task) -> dict:
    Path(task.source, f"{os.getpid()}.worker").touch()
    time.sleep(60)
    return {}


# ---------------------------------------------------------------- input identity (10.5)


def test_task_hash_changes_when_an_input_is_edited(tmp_path, monkeypatch):
    monkeypatch.delenv("CSAWS_HASH_INPUTS", raising=False)
    src = tmp_path / "a.dcm"
    src.write_bytes(b"window 40/400")
    settings = {"voi": "auto"}
    first = task_hash(settings, src)
    assert task_hash(settings, src) == first
    assert task_hash({"voi": "none"}, src) != first
    st = src.stat()
    src.write_bytes(b"window 50/500")  # same size; new mtime
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert task_hash(settings, src) != first
    # An edit that keeps size and mtime is seen only when content is hashed.
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert task_hash(settings, src) == first
    assert task_hash(settings, src, content=True) != task_hash(settings, src, content=False)
    monkeypatch.setenv("CSAWS_HASH_INPUTS", "1")
    assert task_hash(settings, src) == task_hash(settings, src, content=True)
    # Several inputs: each counts.
    other = tmp_path / "mask.png"
    other.write_bytes(b"m")
    both = task_hash(settings, src, other)
    other.write_bytes(b"mm")
    assert task_hash(settings, src, other) != both


def test_batch_options_set_max_pixels_hash_inputs_and_quiet(tmp_path, monkeypatch):
    monkeypatch.delenv("CSAWS_MAX_PIXELS", raising=False)
    monkeypatch.delenv("CSAWS_HASH_INPUTS", raising=False)
    seen = {}

    def spy(out, no_progress):
        from csaws_tools.limits import check_pixels, max_pixels

        seen.update(max_pixels=max_pixels(), hash=os.environ.get("CSAWS_HASH_INPUTS"), quiet=no_progress)
        try:
            check_pixels((40, 40), "bomb.png")  # what every reader calls before decoding
            seen["refused"] = None
        except InputError as exc:
            seen["refused"] = str(exc)

    cmd = _batch_cli(spy)
    res = CliRunner().invoke(cmd, ["-o", str(tmp_path), "--max-pixels", "1000", "--hash-inputs", "--quiet"])
    assert res.exit_code == 0, res.output
    assert seen == {"max_pixels": 1000, "hash": "1", "quiet": True, "refused":
                    "bomb.png: header claims 40 x 40 = 1600 pixels, more than the limit of 1000 (max_pixels; CSAWS_MAX_PIXELS)"}
    assert "CSAWS_MAX_PIXELS" not in os.environ and "CSAWS_HASH_INPUTS" not in os.environ  # restored
    res = CliRunner().invoke(cmd, ["-o", str(tmp_path), "--no-progress"])
    assert seen == {"max_pixels": 2**28, "hash": None, "quiet": True, "refused": None}
    res = CliRunner().invoke(cmd, ["-o", str(tmp_path)])
    assert seen["quiet"] is False
    help_text = CliRunner().invoke(cmd, ["--help"]).output
    for option in ("--quiet", "--no-progress", "--max-pixels", "--hash-inputs"):
        assert option in help_text


# ---------------------------------------------------------------- progress and summaries (13.3, 13.4, 13.7)


def slow_worker(task: Task) -> dict:
    time.sleep(0.15)
    return {}


def test_progress_without_a_terminal_is_periodic_log_lines_with_n_of_total(tmp_path):
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT / 'tests')!r})
        from csaws_tools.batch import Task, run_batch
        from test_guarantees_exec import slow_worker
        run_batch([Task(key=str(i), source=str(i)) for i in range(12)], slow_worker, manifest=None,
                  workers=1, label="dicom2png")
    """)
    log = tmp_path / "job.log"
    with open(log, "wb") as fh:  # as in a cluster job: stderr is a file
        subprocess.run([sys.executable, "-c", script], env=_env(CSAWS_PROGRESS_INTERVAL="0.4"),
                       stderr=fh, check=True, timeout=60)
    lines = log.read_text().splitlines()
    assert 3 <= len(lines) <= 8, lines  # every 0.4 s over ~1.8 s, plus the last
    assert all(line.startswith("dicom2png: ") and "files/s" in line for line in lines)
    assert "ETA" in lines[0] and "/12 (" in lines[0]
    assert lines[-1].startswith("dicom2png: 12/12 (100%)") and "elapsed" in lines[-1]
    counts = [int(line.split(": ")[1].split("/")[0]) for line in lines]
    assert counts == sorted(counts) and counts[0] < 12


def test_quiet_prints_no_progress(capfd, monkeypatch):
    monkeypatch.setenv("CSAWS_PROGRESS_INTERVAL", "0.05")
    run_batch([Task(key=str(i), source=str(i)) for i in range(3)], slow_worker, manifest=None, workers=1,
              progress=False)
    assert capfd.readouterr().err == ""
    run_batch([Task(key=str(i), source=str(i)) for i in range(3)], slow_worker, manifest=None, workers=1)
    assert "working: 3/3 (100%)" in capfd.readouterr().err


def test_progress_on_a_terminal_redraws_one_line_with_rate_and_eta():
    import io

    class Tty(io.StringIO):
        def isatty(self):
            return True

    stream = Tty()
    with batch.Progress(10, "merging masks", stream=stream) as bar:
        for _ in range(10):
            time.sleep(0.02)
            bar.update(1)
    text = stream.getvalue()
    assert text.startswith("\r\x1b[K")
    assert "merging masks: 10/10 (100%)" in text and "files/s" in text and text.endswith("\n")
    assert "ETA" in text


def test_summary_has_elapsed_time_and_throughput():
    rows = [{"status": "ok"}] * 8
    result = BatchResult(rows=rows, manifest=None, seconds=4.0)
    assert result.summary(timing=True) == "8 converted, 0 skipped, 0 failed in 4.0 s, 2.0 files/s"
    assert result.summary() == "8 converted, 0 skipped, 0 failed"
    assert result.summary("merged") == "8 merged, 0 skipped, 0 failed"  # the old signature still works
    assert BatchResult(rows=rows, manifest=None, seconds=125.0).summary(timing=True).endswith(
        "in 2 min 05 s, 0.064 files/s")


def test_cli_summary_uses_one_word_and_timing(tmp_path):
    res = CliRunner().invoke(_batch_cli(lambda **k: None), ["-o", str(tmp_path), "--quiet"])
    assert res.exit_code == 0
    first = res.output.splitlines()[0]
    assert first.startswith("3 converted, 0 skipped, 0 failed in ") and first.endswith(" files/s")


def flood_worker(task: Task) -> dict:
    if task.key.startswith("bad"):
        raise InputError(f"{task.source}: not a DICOM file (no 'DICM' at byte {128 + len(task.key)})")
    if task.key.startswith("odd"):
        raise InputError(f"{task.source}: window width 0 is below 1")
    return {}


def test_a_flood_of_identical_errors_is_counted_after_ten_lines(tmp_path, capsys):
    keys = [f"bad{i}" for i in range(67)] + ["odd1", "odd2"] + ["good"]
    tasks = [Task(key=k, source=f"in/{k}.dcm") for k in keys]
    result = run_batch(tasks, flood_worker, manifest=tmp_path / "m.parquet", workers=1, progress=False)
    err = capsys.readouterr().err.splitlines()
    assert len([line for line in err if "not a DICOM file" in line and "more like this" not in line]) == 10
    assert len([line for line in err if "window width 0" in line]) == 2
    more = [line for line in err if "more like this" in line]
    assert len(more) == 1 and more[0].startswith("error: ... and 57 more like this (all in ")
    assert "in/bad0.dcm" in more[0]
    frame = read_manifest(tmp_path / "m.parquet")
    assert (frame["status"] == "error").sum() == 69 and result.failed == 69


def test_stage_commands_log_periodic_progress_when_stderr_is_a_file(sample_root, tmp_path, monkeypatch):
    import re

    from csaws_tools.cli import main

    monkeypatch.setenv("CSAWS_PROGRESS_INTERVAL", "0.05")
    line = re.compile(r"^[\w-]+[\w -]*: (\d+)/(\d+) \(\d+%\), [\d.]+ files/s")
    runs = {
        "dicom2png": ["dicom2png", str(sample_root / "dicom"), "-o", str(tmp_path / "png")],
        "merge-masks": ["merge-masks", str(sample_root / "CsawS"), "-o", str(tmp_path / "maps")],
        "patches": ["patches", "--images", str(sample_root / "CsawS" / "anonymized_dataset"),
                    "--masks", str(tmp_path / "maps" / "trainval"), "-o", str(tmp_path / "p.h5"),
                    "--size", "64", "--per-class", "1"],
    }
    for name, args in runs.items():
        res = CliRunner().invoke(main, [*args, "-j", "1"])  # stderr captured: not a terminal
        assert res.exit_code == 0, (name, res.output)
        counts = [(int(m[1]), int(m[2])) for m in map(line.match, res.stderr.splitlines()) if m]
        assert len(counts) >= 2, (name, res.stderr)  # periodic lines, then the last one
        total = counts[-1][1]
        assert counts[-1] == (total, total) and total > 1, (name, res.stderr)
        assert [n for n, _ in counts] == sorted(n for n, _ in counts)
        assert " converted, " in res.stdout
        if name != "patches":  # patches builds its own result from run_batch's (no elapsed time yet)
            assert " files/s" in res.stdout


def writing_worker(task: Task) -> dict:
    write_bytes_atomic(task.output, b"png bytes")
    return {}


def test_disk_full_for_one_output_is_a_failed_row_naming_it(tmp_path, monkeypatch, capsys):
    real = os.replace

    def full(src, dst):
        if str(dst).endswith("b.png"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", full)
    tasks = [Task(key=k, source=k, output=str(tmp_path / f"{k}.png")) for k in "abc"]
    result = run_batch(tasks, writing_worker, manifest=tmp_path / "m.parquet", workers=1, progress=False)
    assert result.exit_code == 1 and result.summary() == "2 converted, 0 skipped, 1 failed"
    row = next(r for r in result.rows if r["source"] == "b")
    assert row["error"] == f"{tmp_path / 'b.png'}: cannot write the output (No space left on device)"
    assert f"error: b: {tmp_path / 'b.png'}: cannot write the output" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "c.png", "m.parquet"]
