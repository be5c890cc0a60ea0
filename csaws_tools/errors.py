"""Exceptions raised by csaws-tools.

Every expected problem with an input is a :class:`CsawsError` whose message
is one line that says what is wrong; batch commands add the file name and
record it in the manifest instead of stopping.

Which class:

* :class:`SettingsError` -- a setting (a keyword argument of the Python API,
  an option of the CLI) is invalid or does not fit the inputs;
* :class:`InputError` -- an input file or folder cannot be used;
* :class:`OutputError` -- an output cannot be written;
* :class:`DependencyError` -- an optional package is needed and missing.

Messages are written in the Python API's words. A parameter is named the way a
Python caller spells it, as ``name=value`` with the value as Python writes it
(``crop=448``, ``pretrained='x.pth'``, ``sizes=[7, 9]``, ``overwrite=True``),
or ``name=N`` with an upper-case placeholder when no particular value is meant
(``give epochs=N or iterations=N``). The error carries the names of the
parameters it mentions (``param=`` / ``params``); the command line's error
handler (:func:`csaws_tools.cli._common.handle_errors`) rewrites each
``name=value`` of those parameters into the option's spelling
(``--crop 448``, ``--pretrained x.pth``, ``--sizes 7,9``, ``--overwrite``),
so a CLI user reads the flags they typed and a Python user the keywords they
passed. Errors written into manifests by batch workers stay in API words: a
manifest is read by both.
"""

from __future__ import annotations

from collections.abc import Iterable


class CsawsError(Exception):
    """A problem with an input or a setting, explained in one line.

    ``param`` names the API parameter(s) the message is about (a name, or
    several names); they are kept in :attr:`params` and survive pickling
    (errors cross process boundaries).
    """

    params: tuple[str, ...] = ()

    def __init__(self, *args: object, param: str | Iterable[str] | None = None) -> None:
        super().__init__(*args)
        if param is not None:
            self.params = (param,) if isinstance(param, str) else tuple(param)

    @property
    def param(self) -> str | None:
        """The (first) API parameter the message is about, or None."""
        return self.params[0] if self.params else None


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
