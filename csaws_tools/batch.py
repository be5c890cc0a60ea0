"""Former path of :mod:`csaws_tools.execution.runner`, kept so existing imports work."""

from __future__ import annotations

from .execution.manifests import (
    escape_text,
    order_columns,
    read_manifest,
    shard_manifest_path,
    unescape_text,
    write_manifest,
)
from .execution.runner import (
    SUCCESS_WORD,
    BatchResult,
    Progress,
    ensure_writable_dir,
    find_duplicate_outputs,
    in_shard,
    inputs_hash,
    parse_shard,
    run_batch,
    settings_hash,
    task_hash,
)
from .execution.tasks import (
    Task,
    Worker,
    call_worker,
    default_workers,
    error_row,
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
    "task_hash",
    "Progress",
    "inputs_hash",
    "Task",
    "Worker",
    "call_worker",
    "default_workers",
    "error_row",
    "run_tasks",
    "escape_text",
    "order_columns",
    "read_manifest",
    "shard_manifest_path",
    "unescape_text",
    "write_manifest",
]
