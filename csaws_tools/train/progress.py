"""Progress of a training run on stderr.

On a terminal: one bar line per run, rewritten in place (``it n/N``, rate,
ETA). Elsewhere (a log file, a batch job): a plain line at least every
``interval`` seconds (default 30; environment ``CSAWS_PROGRESS_INTERVAL``)
and one at each validation. Terminal detection, the interval and safe
writes are those of every command (:mod:`csaws_tools.execution.progress`).
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from ..execution.progress import PROGRESS_INTERVAL as DEFAULT_INTERVAL
from ..execution.progress import is_terminal, progress_interval, write_line

__all__ = ["DEFAULT_INTERVAL", "Progress"]


def _fmt_seconds(s: float) -> str:
    if s != s or s == float("inf"):
        return "?"
    s = int(round(s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h:d}:{m:02d}:{sec:02d}" if h else f"{m:02d}:{sec:02d}"


class Progress:
    """Report iterations ``start .. total`` of one run named ``name``."""

    def __init__(self, name: str, start: int, total: int, *, stream: TextIO | None = None,
                 interval: float | None = None, enabled: bool = True) -> None:
        self.name, self.start, self.total = name, int(start), int(total)
        self.stream = stream if stream is not None else sys.stderr
        self.interval = float(progress_interval() if interval is None else interval)
        self.enabled = enabled
        self.tty = is_terminal(self.stream)
        self.t0 = time.perf_counter()
        self.last_line = self.t0
        self.done = self.start

    def _status(self) -> str:
        elapsed = time.perf_counter() - self.t0
        steps = self.done - self.start
        rate = steps / elapsed if elapsed > 0 and steps else 0.0
        eta = (self.total - self.done) / rate if rate else float("inf")
        return (f"{self.name}: it {self.done}/{self.total} {rate:.2f} it/s elapsed {_fmt_seconds(elapsed)} "
                f"ETA {_fmt_seconds(eta)}")

    def _bar(self) -> str:
        width = 24
        filled = int(width * self.done / max(self.total, 1))
        return f"\r[{'#' * filled}{'.' * (width - filled)}] {self._status()}"

    def update(self, done: int) -> None:
        """``done`` iterations finished in total."""
        self.done = int(done)
        if not self.enabled:
            return
        now = time.perf_counter()
        if self.tty:
            if now - self.last_line >= 0.2 or self.done >= self.total:
                write_line(self.stream, self._bar())
                self.last_line = now
        elif now - self.last_line >= self.interval:
            write_line(self.stream, self._status() + "\n")
            self.last_line = now

    def note(self, text: str) -> None:
        """A line at a validation (always printed; on a terminal below the bar)."""
        if not self.enabled:
            return
        prefix = "\r\x1b[K" if self.tty else ""
        write_line(self.stream, f"{prefix}{self._status()} | {text}\n")
        self.last_line = time.perf_counter()

    def close(self) -> None:
        if self.enabled and self.tty:
            write_line(self.stream, "\n")
