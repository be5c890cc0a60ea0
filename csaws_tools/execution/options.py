"""How a batch runs, independent of what it computes: one :class:`RunOptions` for every per-file stage.

The CLI builds it once from the shared options (``--workers``, ``--overwrite``,
``--fail-fast``, ``--quiet``, ``--scheduler``, ``--shard``, ``--batch-size``)
and hands it to the stage function as ``run=``. Python callers may pass
either ``run=RunOptions(...)`` or the same names as keyword arguments
(``workers=4, overwrite=True``), as documented before; :func:`run_options`
turns the keywords into the object at the boundary.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .. import defaults

__all__ = ["RUN_OPTION_NAMES", "RunOptions", "run_options"]


@dataclass(frozen=True)
class RunOptions:
    """Execution settings of one batch (none of them changes what an output contains).

    ``workers``: processes (None: :func:`csaws_tools.execution.tasks.default_workers`);
    ``overwrite``: redo outputs already made with the same settings;
    ``fail_fast``: stop at the first input that fails; ``progress``: progress
    lines on stderr; ``scheduler``: a Dask scheduler address or ``"local"``;
    ``shard``: ``(I, N)``, only the I-th of N deterministic parts of the inputs;
    ``batch_size``: inputs per task sent to a worker.
    """

    workers: int | None = defaults.WORKERS
    overwrite: bool = False
    fail_fast: bool = False
    progress: bool = True
    scheduler: str | None = None
    shard: tuple[int, int] | None = None
    batch_size: int | None = None

    def replace(self, **changes: Any) -> RunOptions:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)


#: The keyword arguments the stage functions accept in place of ``run=``.
RUN_OPTION_NAMES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(RunOptions))


def run_options(run: RunOptions | None, keywords: dict[str, Any], function: str = "this function") -> RunOptions:
    """``run`` (default :class:`RunOptions`) with the old keyword arguments applied over it.

    ``keywords`` are the extra keyword arguments a stage function received;
    a name that is not a run option is a :class:`TypeError`, as Python
    itself would raise for an unknown keyword argument.
    """
    unknown = sorted(set(keywords) - set(RUN_OPTION_NAMES))
    if unknown:
        raise TypeError(f"{function}() got an unexpected keyword argument {unknown[0]!r}")
    base = run if run is not None else RunOptions()
    if not keywords:
        return base
    if keywords.get("shard") is not None:
        keywords = dict(keywords, shard=tuple(keywords["shard"]))
    return dataclasses.replace(base, **keywords)
