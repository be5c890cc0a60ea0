"""Former path of :mod:`csaws_tools.execution.scaleout`, kept so existing imports work."""

from __future__ import annotations

from .execution.scaleout import (
    CONNECT_TIMEOUT,
    DIED_MESSAGE,
    IN_FLIGHT_PER_THREAD,
    MAX_BATCH_SIZE,
    TASKS_PER_WORKER,
    connect,
    default_batch_size,
    execute_on_dask,
    import_distributed,
    probe,
)

__all__ = [
    "MAX_BATCH_SIZE",
    "TASKS_PER_WORKER",
    "CONNECT_TIMEOUT",
    "IN_FLIGHT_PER_THREAD",
    "DIED_MESSAGE",
    "import_distributed",
    "default_batch_size",
    "connect",
    "execute_on_dask",
    "probe",
]
