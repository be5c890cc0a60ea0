"""Guards every stage applies before it writes: never touch an input, clean only its own dead temporaries.

* :func:`refuse_output_in_input` refuses an output folder equal to, or
  inside, a folder the command reads (one line, exit 2): a preview written
  into the image folder would otherwise replace source mammograms.
* :func:`input_paths_set` / :func:`clashes_with_input` let a stage check, per
  output, that the file it is about to write is not one of its inputs.
* :func:`remove_dead_temporaries` removes the temporaries (``.<name>.<pid>.<hex>.tmp``,
  see :mod:`csaws_tools.atomic`) left by *killed* runs only: a temporary
  whose writer process is still alive is kept, so a second run never breaks
  a live one.
* :func:`inputs_digest` folds the identity (size, mtime_ns [, sha256]) of
  each input file into one short hash for the settings hash of an output,
  so an edited input makes the output stale.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Iterable
from pathlib import Path

from .errors import SettingsError
from .identity import file_identity

__all__ = [
    "clashes_with_input",
    "input_paths_set",
    "inputs_digest",
    "pid_alive",
    "refuse_output_in_input",
    "remove_dead_temporaries",
]

_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp$")


def _resolved(path: str | os.PathLike) -> Path:
    return Path(os.path.abspath(os.path.realpath(path)))


def refuse_output_in_input(out: str | os.PathLike, inputs: Iterable[tuple[str, str | os.PathLike]],
                           *, allow_inside: Iterable[str] = ()) -> None:
    """Raise :class:`SettingsError` when the output folder ``out`` is, or lies inside, an input folder.

    ``inputs`` are ``(option name, folder)`` pairs; an input whose option is
    in ``allow_inside`` may hold the output folder (the command leaves the
    output folder out of its search), but may still not be equal to it.
    """
    allow = set(allow_inside)
    o = _resolved(out)
    for what, folder in inputs:
        if folder is None:
            continue
        f = _resolved(folder)
        if o == f:
            raise SettingsError(f"{out}: the output folder is the {what} folder; writing there could "
                                f"replace inputs: choose another output folder")
        if f in o.parents and what not in allow:
            raise SettingsError(f"{out}: the output folder is inside the {what} folder {folder}; "
                                f"choose an output folder outside it")


def input_paths_set(paths: Iterable[str | os.PathLike | None]) -> set[str]:
    """Resolved paths of the input files, for :func:`clashes_with_input`."""
    return {os.path.normcase(str(_resolved(p))) for p in paths if p}


def clashes_with_input(output: str | os.PathLike, inputs: set[str]) -> bool:
    """Whether writing ``output`` would replace one of ``inputs``."""
    return os.path.normcase(str(_resolved(output))) in inputs


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine (a PID we may not signal counts as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


#: A temporary modified this recently is kept even when its PID is not running here: its writer
#: may be a live process on another machine sharing the folder (shards on a cluster).
MIN_AGE_SECONDS = 30.0


def remove_dead_temporaries(folder: str | os.PathLike, *, name: str | None = None,
                            recursive: bool = True, min_age: float = MIN_AGE_SECONDS) -> int:
    """Delete temporaries under ``folder`` whose writing process is dead; return how many.

    A temporary is removed when the PID in its name is not a running process
    on this machine and it was not modified in the last ``min_age`` seconds.
    ``name`` limits it to temporaries of one final file name (e.g. ``p.h5``);
    ``recursive=False`` looks in ``folder`` only. Only names
    :func:`csaws_tools.atomic.temporary_path` makes are touched.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    candidates = folder.rglob(".*.tmp") if recursive else folder.glob(".*.tmp")
    me = os.getpid()
    n = 0
    for tmp in candidates:
        m = _TEMPORARY.match(tmp.name)
        if m is None or (name is not None and m.group("name") != name):
            continue
        pid = int(m.group("pid"))
        if pid == me or pid_alive(pid):
            continue
        try:
            if time.time() - tmp.lstat().st_mtime < min_age:
                continue
            if tmp.is_file() and not tmp.is_symlink():
                tmp.unlink()
                n += 1
        except OSError:
            pass
    return n


def inputs_digest(paths: Iterable[str | os.PathLike | None]) -> str:
    """One short hash of the identities of ``paths`` (in order; ``None`` entries count as absent)."""
    idents = [file_identity(p) if p else None for p in paths]
    text = json.dumps(idents, separators=(",", ":"), default=str, ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:16]


def printable(text: str) -> str:
    """``text`` with undecodable file-name bytes (surrogate escapes) written as ``\\xNN``.

    Names that are not valid UTF-8 reach Python as surrogate escapes, which
    no UTF-8 writer (Parquet, JSON, the terminal) accepts; this spelling keeps
    every byte visible and cannot fail to encode.
    """
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def printable_row(row: dict) -> dict:
    """A manifest row whose strings (and lists of strings) are all encodable (see :func:`printable`)."""
    for key, value in row.items():
        if isinstance(value, str):
            row[key] = printable(value)
        elif isinstance(value, list):
            row[key] = [printable(v) if isinstance(v, str) else v for v in value]
    return row
