"""Atomic file writes: write to a temporary name beside the target, then rename.

A process killed at any moment (even by SIGKILL) leaves either the old file,
the complete new file, or a stray temporary file that no reader mistakes for
an output; never a half-written output under its final name.

Temporary names look like ``.<name>.<pid>-<host>.<random>.tmp``: hidden, with
the writer's process id and a 4-hex tag of its host, so that
:func:`remove_stale_temporaries` can tell a dead writer's leftovers from a
live run's files. ``<name>`` is the final name, cut (at a character boundary)
so that the temporary name never exceeds 255 bytes (``NAME_MAX``) whenever
the final name fits.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import secrets
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from .errors import OutputWriteError

TMP_SUFFIX = ".tmp"
#: The longest file name (bytes) most file systems allow (Linux ``NAME_MAX``).
NAME_MAX = 255
#: Temporaries of another host are removed only when untouched this long (seconds):
#: its process ids cannot be checked from here (shared file systems, job arrays).
FOREIGN_STALE_SECONDS = 24 * 3600
_TEMPORARY_NAME = re.compile(
    r"^\.(?P<name>.+)\.(?P<pid>\d+)(?:-(?P<host>[0-9a-f]{4}))?\.[0-9a-f]{8}" + re.escape(TMP_SUFFIX) + "$"
)
#: errno values that mean "the output cannot be written here", whatever the file.
_WRITE_ERRNOS = {getattr(errno, name) for name in ("ENOSPC", "EROFS", "EDQUOT", "EFBIG") if hasattr(errno, name)}


def host_tag() -> str:
    """Four hex digits identifying this machine (from its host name)."""
    return hashlib.sha256(socket.gethostname().encode("utf-8", "surrogateescape")).hexdigest()[:4]


def _cut(name: str, max_bytes: int) -> str:
    """``name`` cut to at most ``max_bytes`` bytes of its file-system encoding, at a character boundary."""
    raw = os.fsencode(name)
    if len(raw) <= max_bytes:
        return name
    raw = raw[:max_bytes]
    # Do not end inside a multi-byte UTF-8 character (undecodable names keep their bytes).
    for drop in range(4):
        try:
            (raw[: len(raw) - drop] if drop else raw).decode("utf-8")
        except UnicodeDecodeError:
            continue
        raw = raw[: len(raw) - drop] if drop else raw
        break
    return os.fsdecode(raw)


def temporary_path(path: str | os.PathLike) -> Path:
    """A unique hidden temporary name in the same folder as ``path``, at most 255 bytes long."""
    path = Path(path)
    tail = f".{os.getpid()}-{host_tag()}.{secrets.token_hex(4)}{TMP_SUFFIX}"
    name = _cut(path.name, NAME_MAX - 1 - len(tail))
    return path.with_name(f".{name}{tail}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; rename it to ``path`` on success.

    On an exception the temporary file is removed and ``path`` is untouched.
    The parent folder is created when missing. A failure to write the output
    (disk full, read-only or unwritable folder) is raised as
    :class:`~csaws_tools.errors.OutputWriteError` (an ``OSError``) whose one-line
    message names ``path``; removing the temporary never hides that error.
    """
    path = Path(path)
    tmp = temporary_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        if isinstance(exc, OutputWriteError) or not _is_write_error(exc, tmp, path):
            raise
        raise OutputWriteError.from_oserror(path, exc) from exc
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def _is_write_error(exc: OSError, tmp: Path, path: Path) -> bool:
    names = {os.fspath(tmp), os.fspath(path), os.fspath(path.parent)}
    named = {str(exc.filename), str(exc.filename2)} & names
    return bool(named) or exc.errno in _WRITE_ERRNOS


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    write_bytes_atomic(path, text.encode("utf-8"))


def process_start_time(pid: int) -> float | None:
    """When process ``pid`` started (Unix time), from ``/proc``; ``None`` when unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
        # Field 22 (starttime, clock ticks after boot) counted after the ")" that ends the command name.
        ticks = int(stat[stat.rindex(b")") + 2 :].split()[19])
        with open("/proc/stat", "rb") as fh:
            btime = next(int(line.split()[1]) for line in fh if line.startswith(b"btime "))
        return btime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def pid_alive(pid: int) -> bool:
    """Whether a running process with id ``pid`` exists on this machine (a zombie is not running)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    except OSError:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # no /proc (not Linux): it exists
    return state not in (b"Z", b"X")  # killed, waiting to be reaped: it writes nothing more


def writer_is_dead(tmp: str | os.PathLike, now: float | None = None) -> bool:
    """Whether the process that wrote the temporary ``tmp`` has ended.

    The writer's process id and host tag are in the name. A temporary of this
    host is dead when no process has that id, or when the process that has it
    now started after the file was last written (the id was reused). A
    temporary of another host is treated as dead only after
    :data:`FOREIGN_STALE_SECONDS` without a write. Names this module did not
    make are never considered.
    """
    tmp = Path(tmp)
    m = _TEMPORARY_NAME.match(tmp.name)
    if m is None:
        return False
    try:
        mtime = tmp.stat().st_mtime
    except OSError:
        return False
    if m["host"] is not None and m["host"] != host_tag():
        return (time.time() if now is None else now) - mtime > FOREIGN_STALE_SECONDS
    pid = int(m["pid"])
    if pid == os.getpid():
        return False
    if not pid_alive(pid):
        return True
    started = process_start_time(pid)
    # /proc's boot time is whole seconds: allow one second before calling the id reused.
    return started is not None and started > mtime + 1.0


def _is_temporary_of(tmp_name: str, name: str) -> bool:
    """Whether ``tmp_name`` is a temporary that :func:`temporary_path` makes for the final ``name``."""
    m = _TEMPORARY_NAME.match(tmp_name)
    return m is not None and name.startswith(m["name"]) and (
        m["name"] == name or len(os.fsencode(m["name"])) < len(os.fsencode(name)))


def remove_stale_temporaries(folder: str | os.PathLike, *, name: str | None = None,
                             recursive: bool = True) -> int:
    """Delete temporaries under ``folder`` whose writer has ended; return how many.

    Safe while other runs write into the same folder: a live writer's
    temporaries (see :func:`writer_is_dead`) are kept, and only names that
    :func:`temporary_path` makes are considered, never a user's file.
    ``name`` limits it to the temporaries of one final file name (e.g.
    ``p.h5``, whose folder may hold anything); ``recursive=False`` looks in
    ``folder`` only.
    """
    n = 0
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    pattern = f".*{TMP_SUFFIX}"
    for tmp in folder.rglob(pattern) if recursive else folder.glob(pattern):
        if name is not None and not _is_temporary_of(tmp.name, name):
            continue
        if not writer_is_dead(tmp):
            continue
        with contextlib.suppress(OSError):
            tmp.unlink()
            n += 1
    return n
