"""The batch runner shared by every per-file command.

A command turns its inputs into :class:`Task` objects and hands them to
:func:`run_batch` together with a *worker*: a picklable function (a
module-level function, or a :func:`functools.partial` of one) that
processes one task and returns one manifest row. The runner

* spreads tasks over processes (or a Dask cluster, or one shard of them),
* turns any exception of a worker into an ``error`` row with a one-line
  reason and one line on stderr naming the file, so one bad file never
  stops the batch (unless ``fail_fast``),
* shows progress: ``n/N``, files/s and ETA on a terminal, a plain log line
  every 30 s otherwise (``CSAWS_PROGRESS_INTERVAL``), nothing with ``--quiet``,
* prints at most :data:`ERROR_LINES_PER_KIND` error lines of one kind, then a
  count (the manifest keeps every row),
* writes the Parquet manifest atomically, every few seconds and at the end,
  so a killed run leaves a readable manifest; text that is not valid UTF-8
  (file names on Linux may be any bytes) is stored escaped, see
  :func:`escape_text`,
* removes the temporaries of dead writers from its output folders
  (``output_dir``), never those of a live run,
* ends its pool processes when the main process dies, even by SIGKILL,
* stops promptly on Ctrl-C, keeping what was finished.

Workers skip work that is already done (same output, same settings hash) and
report it as ``status="skipped"``; see :func:`settings_hash` and, to fold the
identity of the inputs into the hash, :func:`task_hash`.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import multiprocessing
import os
import re
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from .. import __version__
from ..atomic import remove_stale_temporaries
from ..errors import (
    CsawsError,
    DependencyError,
    OutputError,
    OutputWriteError,
    SettingsError,
    one_line,
)
from ..identity import file_identity
from .manifests import (
    needs_escape,
    shard_manifest_path,
    write_manifest,
)
from .options import RunOptions, run_options
from .progress import Progress, format_rate, format_seconds
from .tasks import (
    Task,
    Worker,
    call_worker,
    default_workers,
    error_row,
    init_pool_process,
    run_tasks,
)

__all__ = [
    "SUCCESS_WORD",
    "BatchResult",
    "ensure_writable_dir",
    "find_duplicate_outputs",
    "in_shard",
    "parse_shard",
    "run_batch",
    "settings_hash",
    "stop_pool",
    "task_hash",
]

#: The one word every summary uses for inputs done in this run ("8 converted, 0 skipped, 0 failed").
SUCCESS_WORD = "converted"
#: Error lines printed for one kind of error before the rest are only counted.
ERROR_LINES_PER_KIND = 10


@dataclass
class BatchResult:
    """What a batch did: the manifest rows, their counts, and where the manifest is."""

    rows: list[dict]
    manifest: Path | None
    interrupted: bool = False
    #: Wall-clock seconds the batch took (None when not measured).
    seconds: float | None = None

    def count(self, status: str) -> int:
        return sum(1 for r in self.rows if r.get("status") == status)

    @property
    def failed(self) -> int:
        return self.count("error")

    @property
    def exit_code(self) -> int:
        """0 when nothing failed, 1 when anything failed, 130 when interrupted."""
        if self.interrupted:
            return 130
        return 1 if self.failed else 0

    def summary(self, verb: str | None = None, *, timing: bool = False) -> str:
        """The closing line, e.g. ``"12 converted, 3 skipped, 1 failed"``.

        ``verb`` defaults to :data:`SUCCESS_WORD`, the word every command's
        summary uses. ``timing`` adds the elapsed time and throughput:
        ``"8 converted, 0 skipped, 0 failed in 4.0 s, 2.0 files/s"``.
        """
        text = f"{self.count('ok')} {verb or SUCCESS_WORD}, {self.count('skipped')} skipped, {self.failed} failed"
        if timing and self.seconds is not None:
            rate = len(self.rows) / self.seconds if self.seconds > 0 else 0.0
            text += f" in {format_seconds(self.seconds)}, {format_rate(rate)}"
        return text


def error_line(row: dict) -> str:
    """``<source>: <error>`` for a failed row; the source is not repeated when the message starts with it."""
    source, error = str(row.get("source")), str(row.get("error"))
    return error if error.startswith(source + ":") else f"{source}: {error}"


def settings_hash(settings: Any) -> str:
    """A short stable hash of the settings that determine an output.

    Canonical JSON (sorted keys) hashed with SHA-256, first 16 hex digits.
    Outputs record it; a rerun skips an output whose recorded hash matches.
    """
    text = json.dumps(settings, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def inputs_hash(inputs: Iterable[str | os.PathLike | None], content: bool | None = None) -> str:
    """One short hash of the identities of ``inputs`` in order (``None``: an absent optional input)."""
    return settings_hash([None if p is None else file_identity(p, content) for p in inputs])


def task_hash(settings: Any, *inputs: str | os.PathLike | None, content: bool | None = None) -> str:
    """The settings hash of one output, covering the identity of the inputs it is made from.

    ``settings_hash`` of ``settings`` plus, for each input path, its
    :func:`~csaws_tools.identity.file_identity` (size and mtime_ns; also its
    SHA-256 when ``content`` is true, or when ``CSAWS_HASH_INPUTS=1`` /
    ``--hash-inputs`` and ``content`` is None). An edited input changes the
    hash, so a rerun redoes the output instead of skipping it::

        digest = task_hash(settings, task.source)          # in a stage's worker
        if not overwrite and png.made_with(out, digest): ... skip ...
    """
    return settings_hash({"settings": settings, "inputs": inputs_hash(inputs, content)})


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """Parse ``"I/N"`` (1 <= I <= N) into ``(I, N)``; ``None`` passes through."""
    if text is None:
        return None
    try:
        i, n = (int(p) for p in text.split("/"))
    except ValueError:
        raise SettingsError(f"shard={text!r} must look like 'I/N' (for example '3/10')", param="shard") from None
    if not (n >= 1 and 1 <= i <= n):
        raise SettingsError(f"shard={text!r}: need 1 <= I <= N", param="shard")
    return i, n


def in_shard(key: str, shard: tuple[int, int] | None) -> bool:
    """Whether the task ``key`` belongs to shard ``(I, N)``.

    The assignment depends on the key alone (CRC-32 modulo N), so it is the
    same on every machine and does not change when other inputs are added.
    """
    if shard is None:
        return True
    i, n = shard
    return zlib.crc32(key.encode("utf-8", "surrogateescape")) % n == i - 1


def ensure_writable_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` if needed and check that files can be written in it."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".csaws-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OutputError(f"{path}: output folder cannot be written ({exc.strerror or exc})") from None
    return path


def _batches(tasks: Sequence[Task], size: int) -> list[list[Task]]:
    return [list(tasks[i : i + size]) for i in range(0, len(tasks), size)]


def _mp_context():
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def _pool(n_procs: int) -> cf.ProcessPoolExecutor:
    """A process pool whose processes ignore Ctrl-C and exit when this process dies.

    See :func:`~csaws_tools.execution.tasks.init_pool_process`; a pool is
    stopped early with :func:`stop_pool`.
    """
    return cf.ProcessPoolExecutor(max_workers=n_procs, mp_context=_mp_context(),
                                  initializer=init_pool_process, initargs=(os.getpid(),))


#: Seconds :func:`stop_pool` waits for a killed pool process to be gone.
STOP_SECONDS = 5.0


def stop_pool(pool: cf.ProcessPoolExecutor) -> None:
    """End ``pool`` now (Ctrl-C, fail-fast, an error): work in progress is abandoned.

    Queued work is cancelled and the pool's processes are killed (they ignore
    SIGINT; what they were writing is a temporary file that the next run
    removes). A process killed while sending a result leaves half a message
    in the result pipe, on which the pool's manager thread would wait for
    ever, and the interpreter with it at exit. Once every process is gone
    this process holds the pipe's last writing end: closing it ends such a
    wait (the manager reads end-of-file and shuts the pool down).

    Futures of ``pool`` must not be cancelled one by one before this: the
    pool's manager thread would later fail on them (``InvalidStateError``);
    ``shutdown(cancel_futures=True)`` cancels them in that thread instead.
    """
    # shutdown() drops the pool's references to these: take them first.
    processes = list((getattr(pool, "_processes", None) or {}).values())
    writer = getattr(getattr(pool, "_result_queue", None), "_writer", None)
    manager = getattr(pool, "_executor_manager_thread", None)
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in processes:
        proc.kill()
    gone = True
    for proc in processes:
        proc.join(STOP_SECONDS)
        gone = gone and not proc.is_alive()
    if gone and writer is not None:
        writer.close()
    if manager is not None:
        manager.join(STOP_SECONDS)


def _apply_chunk(func: Callable[[Any], Any], chunk: Sequence[Any]) -> list[Any]:
    return [func(x) for x in chunk]


def map_ordered(func: Callable[[Any], Any], items: Sequence[Any], workers: int | None = None) -> list[Any]:
    """``[func(x) for x in items]`` in this runner's process pool, results in input order.

    For computations over a whole collection whose items are not outputs
    with manifest rows (the class table, the synthetic sample). The first
    exception propagates, as it would inline. ``workers``: None for
    :func:`~csaws_tools.execution.tasks.default_workers`; 1 (or one item)
    runs inline.
    """
    workers = workers or default_workers()
    n_procs = min(workers, len(items))
    if n_procs <= 1:
        return [func(x) for x in items]
    size = max(1, len(items) // (4 * workers))
    pool = _pool(n_procs)
    try:
        futures = [pool.submit(_apply_chunk, func, items[i : i + size]) for i in range(0, len(items), size)]
        results = [x for fut in futures for x in fut.result()]
    except BaseException:  # the first error, or Ctrl-C: do not wait for the rest
        stop_pool(pool)
        raise
    pool.shutdown()
    return results


def _run_isolated(worker: Worker, batch: list[Task]) -> list[tuple[dict, Any]]:
    """Run one batch in a fresh single-process pool; a dead process fails the batch."""
    pool = _pool(1)
    try:
        return pool.submit(run_tasks, worker, batch).result()
    except cf.process.BrokenProcessPool:
        return [(error_row(t, "worker process died while processing this input"), None) for t in batch]
    except BaseException:  # Ctrl-C: do not wait for the batch
        stop_pool(pool)
        raise
    finally:
        pool.shutdown(wait=True)


def _execute_local(
    worker: Worker, tasks: Sequence[Task], workers: int, batch_size: int
) -> Iterator[list[tuple[dict, Any]]]:
    """Yield results batch by batch from a process pool (or inline for one worker).

    A worker process that dies (killed, out of memory) fails only the tasks
    of the batch it held; the pool is restarted for the rest.
    """
    if workers <= 1 or len(tasks) <= 1:
        for t in tasks:
            yield [call_worker(worker, t)]
        return
    queue = _batches(tasks, batch_size)
    queue.reverse()
    n_procs = min(workers, len(queue))
    pool = _pool(n_procs)
    pending: dict[cf.Future, list[Task]] = {}
    try:
        while queue or pending:
            # Keep at most two batches per worker in flight: bounded memory, prompt stop.
            while queue and len(pending) < 2 * n_procs:
                b = queue.pop()
                pending[pool.submit(run_tasks, worker, b)] = b
            done, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
            suspects: list[list[Task]] = []
            for fut in done:
                b = pending.pop(fut)
                try:
                    yield fut.result()
                except cf.process.BrokenProcessPool:
                    suspects.append(b)
            if suspects:
                # Every batch in flight fails when one process dies: rerun each
                # alone so that only the batch that kills its process fails.
                suspects.extend(pending.values())
                pending.clear()
                pool.shutdown(wait=False, cancel_futures=True)
                for b in suspects:
                    yield _run_isolated(worker, b)
                pool = _pool(n_procs)
    finally:
        if pending:  # stopped early (Ctrl-C, fail-fast): do not wait for running batches
            stop_pool(pool)
        else:
            pool.shutdown(wait=True, cancel_futures=True)


def _execute(
    worker: Worker,
    tasks: Sequence[Task],
    workers: int,
    batch_size: int | None,
    scheduler: str | None,
) -> Iterator[list[tuple[dict, Any]]]:
    if scheduler is None:
        yield from _execute_local(worker, tasks, workers, batch_size or 1)
        return
    try:
        from .scaleout import execute_on_dask
    except ImportError as exc:
        raise DependencyError(
            f"scheduler= needs Dask: pip install 'csaws-tools[dask]' ({one_line(exc)})", param="scheduler"
        ) from None
    yield from execute_on_dask(worker, tasks, scheduler, batch_size=batch_size, workers=workers)


def find_duplicate_outputs(tasks: Sequence[Task]) -> tuple[list[Task], list[dict]]:
    """Split tasks into those to run and error rows for second claims on one output."""
    claimed: dict[str, Task] = {}
    keep: list[Task] = []
    errors: list[dict] = []
    for t in tasks:
        if t.output is None:
            keep.append(t)
            continue
        norm = os.path.normcase(os.path.abspath(t.output))
        first = claimed.get(norm)
        if first is None:
            claimed[norm] = t
            keep.append(t)
        else:
            errors.append(error_row(t, f"output {t.output} is already written by input {first.source}; not overwriting"))
    return keep, errors


_DIGITS = re.compile(r"\d+")


def error_kind(row: dict) -> str:
    """What makes two error messages "the same kind": the message without the file's name and numbers."""
    message = str(row.get("error") or "")
    for name in (row.get("source"), row.get("output")):
        if isinstance(name, str) and name:
            message = message.replace(name, "")
            message = message.replace(os.path.basename(name), "")
    return _DIGITS.sub("#", message).strip(" :")


def _echo_err(text: str) -> None:
    """One line on stderr; a name that is not valid UTF-8 is shown with backslash escapes."""
    if needs_escape(text):
        text = "".join(f"\\x{ord(c) - 0xDC00:02x}" if 0xDC80 <= ord(c) <= 0xDCFF
                       else (f"\\u{ord(c):04x}" if 0xD800 <= ord(c) <= 0xDFFF else c) for c in text)
    click.echo(text, err=True)


def run_batch(
    tasks: Iterable[Task],
    worker: Worker,
    *,
    manifest: str | os.PathLike | None,
    settings: dict | None = None,
    run: RunOptions | None = None,
    label: str = "working",
    on_result: Callable[[dict, Any], None] | None = None,
    extra_rows: Sequence[dict] = (),
    flush_seconds: float = 2.0,
    output_dir: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    **run_keywords: Any,
) -> BatchResult:
    """Run ``worker`` over ``tasks`` and write the manifest.

    ``run`` says how (processes, Dask, shard, progress; see
    :class:`~csaws_tools.execution.options.RunOptions`); its fields may also
    be given as keyword arguments (``workers=4``).

    ``settings`` are recorded with their hash in every row and in the
    manifest's metadata. ``on_result(row, payload)`` runs in this process for
    workers that return ``(row, payload)`` (a single writer for shared
    outputs such as HDF5). ``extra_rows`` are rows decided before running
    (inputs skipped as not relevant, planning errors); they count like others.
    ``output_dir`` (one folder or several): temporaries left there by dead
    writers (killed runs) are removed first; a live run's are kept (see
    :func:`csaws_tools.atomic.remove_stale_temporaries`). ``progress=False``
    (``--quiet``) prints no progress; error lines and the summary stay.

    A manifest that cannot be written (disk full, read-only folder) is an
    :class:`~csaws_tools.errors.OutputWriteError` naming it: raised at once
    when the first write fails, otherwise after the batch has run.
    """
    run = run_options(run, run_keywords, "run_batch")
    workers, fail_fast, progress = run.workers, run.fail_fast, run.progress
    scheduler, shard, batch_size = run.scheduler, run.shard, run.batch_size
    started = time.monotonic()
    settings = dict(settings or {})
    shash = settings_hash(settings)
    tasks = [t for t in tasks if in_shard(t.key, shard)]
    tasks, dup_errors = find_duplicate_outputs(tasks)
    workers = workers or default_workers()
    manifest_path = shard_manifest_path(Path(manifest), shard) if manifest is not None else None
    meta = {"settings": settings, "settings_hash": shash, "tool_version": __version__, "shard": shard}
    if output_dir is not None:
        folders = [output_dir] if isinstance(output_dir, (str, os.PathLike)) else list(output_dir)
        for folder in folders:
            remove_stale_temporaries(folder)

    rows: list[dict] = []
    last_flush = time.monotonic()
    interrupted = False
    stop = False
    kinds: dict[str, list] = {}  # error kind -> [count, first message]

    def finish_row(row: dict) -> None:
        row["settings_hash"] = shash
        row["tool_version"] = __version__
        rows.append(row)
        if row["status"] == "error":
            line = error_line(row)
            kind = kinds.setdefault(error_kind(row), [0, line])
            kind[0] += 1
            if kind[0] <= ERROR_LINES_PER_KIND:
                _echo_err(f"error: {line}")

    write_cost = 0.0  # seconds the last manifest write took
    write_error: OutputError | None = None

    def flush(force: bool = False) -> None:
        nonlocal last_flush, write_cost, write_error
        # Every flush rewrites the whole manifest: on very large runs wait at least
        # ten times as long as a write takes, so writing stays under ~10% of the time.
        due = time.monotonic() - last_flush >= max(flush_seconds, 10 * write_cost)
        if manifest_path is not None and (force or due):
            start = time.monotonic()
            try:
                write_manifest(manifest_path, rows, meta)
                write_error = None
            except OSError as exc:
                if not isinstance(exc, OutputError):
                    exc = OutputWriteError.from_oserror(manifest_path, exc)
                write_error = exc
            last_flush = time.monotonic()
            write_cost = last_flush - start

    for r in list(extra_rows) + dup_errors:
        finish_row(dict(r))
    if fail_fast and any(r["status"] == "error" for r in rows):
        stop = True
    flush(force=True)  # a run killed at any moment leaves a readable manifest
    if write_error is not None:  # nothing can be recorded: stop before doing any work
        raise write_error

    bar = Progress(len(tasks), label) if progress else None
    try:
        if bar is not None:
            bar.__enter__()
        if not stop and tasks:
            for batch in _execute(worker, tasks, workers, batch_size, scheduler):
                for row, payload in batch:
                    if payload is not None and on_result is not None and row["status"] == "ok":
                        try:
                            on_result(row, payload)
                        except CsawsError as exc:
                            row.update(status="error", error=one_line(exc))
                    finish_row(row)
                    if fail_fast and row["status"] == "error":
                        stop = True
                if bar is not None:
                    bar.update(len(batch))
                flush()
                if stop:
                    break
    except KeyboardInterrupt:
        interrupted = True
        click.echo("interrupted: stopping workers; finished outputs are kept", err=True)
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
        for count, first in kinds.values():
            if count > ERROR_LINES_PER_KIND:
                more = count - ERROR_LINES_PER_KIND
                where = f" (all in {manifest_path})" if manifest_path is not None else ""
                _echo_err(f"error: ... and {more} more like this{where}; the first was: {first}")
        flush(force=True)
    if write_error is not None:
        raise write_error
    return BatchResult(rows=rows, manifest=manifest_path, interrupted=interrupted,
                       seconds=time.monotonic() - started)
