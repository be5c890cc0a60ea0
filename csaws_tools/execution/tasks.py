"""The worker contract shared by the local pool and the Dask cluster.

A :class:`Task` is one unit of work; a *worker* is a picklable function that
processes one task and returns one manifest row (or ``(row, payload)``).
A task's per-file settings (``args``) are a frozen dataclass defined by the
stage that owns the worker (for example ``masks.merge.MergeArgs``); the
worker is annotated with ``Task[ThatArgs]`` and reads attributes.
:func:`run_tasks` runs a list of tasks wherever it is sent (a pool process,
a Dask worker), turning every exception into an ``error`` row.

This module imports nothing else of the package but :mod:`csaws_tools.errors`,
so :mod:`csaws_tools.batch` and :mod:`csaws_tools.scaleout` both build on it
without importing each other.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

from ..errors import one_line

#: A stage's per-task settings: a frozen dataclass (picklable, for pool processes and Dask).
ArgsT = TypeVar("ArgsT")

Worker = Callable[["Task[Any]"], "dict | tuple[dict, Any]"]

#: Seconds between two checks of the parent process by the watchdog of a pool process.
WATCHDOG_SECONDS = 1.0
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Task(Generic[ArgsT]):
    """One unit of work: usually one input file and the output it makes.

    ``key`` is stable across runs and machines (for example the input's path
    relative to its input folder); sharding and duplicate detection use it.
    ``args`` holds the stage's own settings for this task, a frozen
    dataclass defined beside the stage's worker (``None`` for a task that
    needs none); the runner never looks inside it.
    """

    key: str
    source: str
    output: str | None = None
    args: ArgsT = cast(Any, None)


def default_workers() -> int:
    """All cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def error_row(task: Task, message: str, seconds: float = 0.0) -> dict:
    """The manifest row of a task that failed."""
    return {
        "source": task.source,
        "output": task.output,
        "status": "error",
        "error": message,
        "seconds": seconds,
    }


def call_worker(worker: Worker, task: Task) -> tuple[dict, Any]:
    """Run ``worker`` on ``task``; any exception becomes an ``error`` row."""
    start = time.perf_counter()
    try:
        result = worker(task)
    except Exception as exc:  # noqa: BLE001 - one bad file never stops a batch
        return error_row(task, one_line(exc), time.perf_counter() - start), None
    row, payload = result if isinstance(result, tuple) else (result, None)
    row.setdefault("source", task.source)
    row.setdefault("output", task.output)
    row.setdefault("status", "ok")
    row.setdefault("error", None)
    row.setdefault("seconds", time.perf_counter() - start)
    return row, payload


def run_tasks(worker: Worker, tasks: Sequence[Task]) -> list[tuple[dict, Any]]:
    """Run a batch of tasks one after another (one process or cluster task)."""
    return [call_worker(worker, t) for t in tasks]


def init_pool_process(parent_pid: int) -> None:
    """The initializer of every pool process: ignore Ctrl-C, end with the parent.

    A terminal's Ctrl-C sends SIGINT to the whole foreground process group.
    Raised inside a pool process, the KeyboardInterrupt can land while the
    process reads a task from, or writes a result to, the pool's pipes and
    leave half a message there, on which the pool then waits for ever. So
    pool processes ignore SIGINT; the main process alone decides, and stops
    them (see :func:`csaws_tools.execution.runner.stop_pool`).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    exit_with_parent(parent_pid)


def exit_with_parent(parent_pid: int) -> None:
    """Make this (pool) process end when the process ``parent_pid`` that started it dies.

    Runs as the initializer of every pool process, so a run whose main process
    is killed (even by SIGKILL, which it cannot catch) leaves no worker behind.
    On Linux the kernel sends SIGKILL on the parent's death
    (``prctl(PR_SET_PDEATHSIG)``); elsewhere, or if that fails, a daemon thread
    checks the parent every :data:`WATCHDOG_SECONDS` and exits.
    """
    armed = False
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            armed = libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
        except (OSError, AttributeError):
            armed = False
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(1)
    if not armed:
        threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True,
                         name="csaws-parent-watchdog").start()


def _watch_parent(parent_pid: int) -> None:
    while True:
        time.sleep(WATCHDOG_SECONDS)
        if os.getppid() != parent_pid:
            os._exit(1)


__all__ = [
    "ArgsT",
    "call_worker",
    "default_workers",
    "error_row",
    "exit_with_parent",
    "init_pool_process",
    "run_tasks",
    "Task",
    "WATCHDOG_SECONDS",
    "Worker",
]
