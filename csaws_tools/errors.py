"""Exceptions raised by csaws-tools.

Every expected problem with an input is a :class:`CsawsError` whose message
is one line that says what is wrong; batch commands add the file name and
record it in the manifest instead of stopping.
"""

from __future__ import annotations


class CsawsError(Exception):
    """A problem with an input or a setting, explained in one line."""


class InputError(CsawsError):
    """An input file cannot be used (unreadable, corrupt, inconsistent)."""


class MissingCodecError(InputError):
    """The pixel data is compressed with a codec that no installed plugin decodes."""


class SettingsError(CsawsError):
    """A setting (option or argument) is invalid; the message names it."""


class OutputError(CsawsError):
    """An output cannot be written (folder not writable, name collision)."""


class DependencyError(CsawsError):
    """An optional dependency is needed for the requested feature."""


def one_line(exc: BaseException) -> str:
    """Render ``exc`` as a single line; unexpected errors keep their type name."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, CsawsError):
        return text
    return f"{type(exc).__name__}: {text}"


class OutputWriteError(OutputError, OSError):
    """An output file could not be written (disk full, read-only folder, no permission).

    Also an :class:`OSError`, so code that handles ``OSError`` around a write keeps working;
    its message is one line naming the output file.
    """

    def __init__(self, message: str, errno_: int | None = None) -> None:
        OSError.__init__(self, message)
        self.message = message
        self.errno = errno_

    def __str__(self) -> str:
        return self.message

    def __reduce__(self):  # picklable across worker processes
        return (type(self), (self.message, self.errno))

    @classmethod
    def from_oserror(cls, path: object, exc: OSError) -> OutputWriteError:
        reason = exc.strerror or str(exc)
        return cls(f"{path}: cannot write the output ({reason})", exc.errno)
