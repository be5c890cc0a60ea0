"""Toy workers for the scale-out tests.

They live in a module of their own (not a test module) so that Dask worker
processes can import them by name: worker processes started from the test
process inherit its ``sys.path``, which holds this folder.
"""

from __future__ import annotations

import os
from pathlib import Path

from csaws_tools.atomic import write_bytes_atomic
from csaws_tools.batch import Task
from csaws_tools.errors import InputError


def content(key: str) -> bytes:
    """What the toy worker writes for ``key``: deterministic, different per key."""
    return (f"{key}:" + str(sum(ord(c) * (i + 1) for i, c in enumerate(key))) * 50 + "\n").encode()


def write_toy(task: Task, *, die_marker: str | None = None, die_on: str = "", always_die_on: str = "",
              bad: str = "") -> dict:
    """Write ``content(task.key)`` to ``task.output`` atomically; skip it when already there.

    ``die_on``: the first time this key is seen (no ``die_marker`` file yet),
    create the marker and kill the worker process. ``always_die_on``: kill the
    worker process every time. ``bad``: raise an InputError for that key.
    """
    if task.key == always_die_on:
        os._exit(1)
    if task.key == bad:
        raise InputError("this input is broken")
    out = Path(task.output)
    data = content(task.key)
    if out.exists() and out.read_bytes() == data:
        return {"status": "skipped", "pid": os.getpid()}
    if task.key == die_on and die_marker and not os.path.exists(die_marker):
        Path(die_marker).write_text(str(os.getpid()))
        os._exit(1)  # the worker dies mid-batch, as if killed or out of memory
    out.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(out, data)
    return {"status": "ok", "pid": os.getpid(), "nbytes": len(data)}


def noop(task: Task) -> dict:
    """Do nothing: measures the runner's own per-task cost."""
    return {"status": "ok"}


class DieOnce:
    """Wrap a command's per-file worker so that the worker process dies, once, at one input.

    ``inner`` is looked up by module and name where the call happens, so a
    test can put a ``DieOnce`` in place of the command's worker function.
    """

    def __init__(self, inner, *, marker: str, name: str):
        self.module, self.qualname = inner.__module__, inner.__qualname__
        self.marker, self.name = marker, name

    def __call__(self, task: Task, **kwargs):
        if Path(task.source).name == self.name and not os.path.exists(self.marker):
            Path(self.marker).write_text(str(os.getpid()))
            os._exit(1)
        import importlib

        inner = getattr(importlib.import_module(self.module), self.qualname)
        return inner(task, **kwargs)
