"""Former path of :mod:`csaws_tools.execution.tasks`, kept so existing imports work."""

from __future__ import annotations

from .execution.tasks import (
    WATCHDOG_SECONDS,
    Task,
    Worker,
    call_worker,
    default_workers,
    error_row,
    exit_with_parent,
    run_tasks,
)

__all__ = [
    "Worker",
    "WATCHDOG_SECONDS",
    "Task",
    "default_workers",
    "error_row",
    "call_worker",
    "run_tasks",
    "exit_with_parent",
]
