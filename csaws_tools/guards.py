"""Guards every stage applies before it writes: never touch an input.

* :func:`refuse_output_in_input` refuses an output folder equal to, or
  inside, a folder the command reads (one line, exit 2): a preview written
  into the image folder would otherwise replace source mammograms.
* :func:`input_paths_set` / :func:`clashes_with_input` let a stage check, per
  output, that the file it is about to write is not one of its inputs.

Dead temporaries: :func:`csaws_tools.atomic.remove_stale_temporaries`; input
identity in settings hashes: :func:`csaws_tools.batch.task_hash`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from .errors import SettingsError

__all__ = [
    "clashes_with_input",
    "input_paths_set",
    "is_inside",
    "refuse_output_in_input",
]


def _resolved(path: str | os.PathLike) -> Path:
    return Path(os.path.abspath(os.path.realpath(path)))


def refuse_output_in_input(out: str | os.PathLike, inputs: Iterable[tuple[str, str | os.PathLike | None]],
                           *, allow_inside: Iterable[str] = (), params: Iterable[str] = ()) -> None:
    """Raise :class:`SettingsError` when the output folder ``out`` is, or lies inside, an input folder.

    ``inputs`` are ``(name, folder)`` pairs; an input whose name is in
    ``allow_inside`` may hold the output folder (the command leaves the
    output folder out of its search), but may still not be equal to it.
    Names in ``params`` are API parameters: the message writes them
    ``name='folder'`` and the error carries the name (see :mod:`csaws_tools.errors`).
    """
    allow, params = set(allow_inside), set(params)
    o = _resolved(out)
    for what, folder in inputs:
        if folder is None:
            continue
        f = _resolved(folder)
        param = what if what in params else None
        if o == f:
            where = f"the input folder {what}={str(folder)!r}" if param else f"the {what} folder"
            raise SettingsError(f"{out}: the output folder is {where}; writing there could "
                                f"replace inputs: choose another output folder", param=param)
        if f in o.parents and what not in allow:
            where = f"the input folder {what}={str(folder)!r}" if param else f"the {what} folder {folder}"
            raise SettingsError(f"{out}: the output folder is inside {where}; "
                                f"choose an output folder outside it", param=param)


def input_paths_set(paths: Iterable[str | os.PathLike | None]) -> set[str]:
    """Resolved paths of the input files, for :func:`clashes_with_input`."""
    return {os.path.normcase(str(_resolved(p))) for p in paths if p}


def clashes_with_input(output: str | os.PathLike, inputs: set[str]) -> bool:
    """Whether writing ``output`` would replace one of ``inputs``."""
    return os.path.normcase(str(_resolved(output))) in inputs


def is_inside(path: str | os.PathLike, folder: str | os.PathLike | None) -> bool:
    """Whether ``path`` is ``folder`` or lies under it (links resolved); ``None`` holds nothing."""
    if folder is None:
        return False
    p, f = _resolved(path), _resolved(folder)
    return p == f or f in p.parents
