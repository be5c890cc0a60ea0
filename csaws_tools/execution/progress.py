"""Progress on stderr, one owner for every command: a batch of files and a training run.

On a terminal a line is redrawn in place; elsewhere (a log file, a cluster
job) a plain line every :func:`progress_interval` seconds (30, or
``CSAWS_PROGRESS_INTERVAL``). :class:`Progress` counts files;
:class:`csaws_tools.train.progress.Progress` counts iterations with the same
helpers (:func:`is_terminal`, :func:`progress_interval`, :func:`write_line`).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import TextIO

__all__ = ["PROGRESS_INTERVAL", "PROGRESS_INTERVAL_ENV", "Progress", "format_rate", "format_seconds",
           "is_terminal", "progress_interval", "write_line"]

#: Seconds between two progress lines when stderr is not a terminal.
PROGRESS_INTERVAL = 30.0
PROGRESS_INTERVAL_ENV = "CSAWS_PROGRESS_INTERVAL"


def is_terminal(stream: TextIO) -> bool:
    """Whether ``stream`` is a terminal (progress redrawn in place) rather than a log."""
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except (OSError, ValueError):
        return False


def write_line(stream: TextIO, text: str) -> None:
    """Write and flush ``text``; a closed or vanished stream is ignored (progress is not worth failing for)."""
    try:
        stream.write(text)
        stream.flush()
    except (OSError, ValueError):
        pass


def format_rate(rate: float) -> str:
    """``2.0 files/s``; slow work keeps two significant digits (``0.018 files/s``), never ``0.0``."""
    if rate >= 1 or rate == 0:
        return f"{rate:.1f} files/s"
    return f"{rate:.2g} files/s"


def format_seconds(seconds: float) -> str:
    """``4.0 s``, ``2 min 05 s``, ``3 h 02 min``: a duration for people."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class Progress:
    """Progress of a batch on stderr.

    On a terminal: one line redrawn in place, ``label: n/N  p%  r files/s  ETA t``.
    Otherwise (a log file, a cluster job): a plain line every ``interval``
    seconds (default 30, ``CSAWS_PROGRESS_INTERVAL``) from a background
    thread, so a log shows life even while a slow file is processed, and one
    line at the end.
    """

    def __init__(self, total: int, label: str, *, stream=None, interval: float | None = None) -> None:
        self.total = total
        self.label = label
        self.done = 0
        self.stream = stream if stream is not None else sys.stderr
        self.tty = is_terminal(self.stream)
        if interval is None:
            interval = progress_interval()
        self.interval = 0.5 if self.tty else interval
        self.start = time.monotonic()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._last_draw = 0.0
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Progress:
        if self.total:
            self._thread = threading.Thread(target=self._tick, daemon=True, name="csaws-progress")
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.total:
            self._emit(final=True)

    def update(self, n: int) -> None:
        self.done += n
        if self.tty and time.monotonic() - self._last_draw >= 0.1:
            self._emit()

    def _tick(self) -> None:
        while not self._stop.wait(self.interval):
            self._emit()

    def line(self, final: bool = False) -> str:
        elapsed = time.monotonic() - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        pct = 100 * self.done // self.total if self.total else 100
        text = f"{self.label}: {self.done}/{self.total} ({pct}%), {format_rate(rate)}"
        if final:
            return text + f", {format_seconds(elapsed)} elapsed"
        if self.done and self.done < self.total:
            text += f", ETA {format_seconds((self.total - self.done) / rate)}"
        return text + f", {format_seconds(elapsed)} elapsed"

    def _emit(self, final: bool = False) -> None:
        with self._lock:
            self._last_draw = time.monotonic()
            if self.tty:
                write_line(self.stream, "\r\x1b[K" + self.line(final) + ("\n" if final else ""))
            else:
                write_line(self.stream, self.line(final) + "\n")


def progress_interval() -> float:
    """Seconds between two log lines: ``CSAWS_PROGRESS_INTERVAL``, else 30 (a bad value counts as unset)."""
    text = os.environ.get(PROGRESS_INTERVAL_ENV, "")
    try:
        value = float(text) if text else PROGRESS_INTERVAL
    except ValueError:
        value = PROGRESS_INTERVAL
    return value if value > 0 else PROGRESS_INTERVAL


