"""Options and helpers shared by the batch commands."""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator

import click

from ..errors import CsawsError
from ..execution.runner import BatchResult, parse_shard


def input_options(func: Callable) -> Callable:
    """Add ``--max-pixels`` and ``--hash-inputs``, set for this call only in the environment.

    The readers and the worker processes read ``CSAWS_MAX_PIXELS`` and
    ``CSAWS_HASH_INPUTS``; the command function gets neither parameter, and
    the environment is restored when it returns.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        max_pixels = kwargs.pop("max_pixels", None)
        hash_inputs = kwargs.pop("hash_inputs", False)
        env = {}
        if max_pixels is not None:
            env["CSAWS_MAX_PIXELS"] = str(max_pixels)
        if hash_inputs:
            env["CSAWS_HASH_INPUTS"] = "1"
        with _environment(env):
            return func(*args, **kwargs)

    options = [
        click.option("--max-pixels", type=click.IntRange(min=1), default=None, metavar="N",
                     help="Refuse images whose header claims more than N pixels (per frame), before decoding "
                          "[default: 268435456 = 2**28, or CSAWS_MAX_PIXELS]."),
        click.option("--hash-inputs", is_flag=True,
                     help="Also hash each input's content to decide whether an output is up to date "
                          "(slower; by default an input's size and modification time are compared). "
                          "Same as CSAWS_HASH_INPUTS=1."),
    ]
    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


#: The command parameters :func:`batch_options` folds into one :class:`RunOptions` (``run``).
_RUN_PARAMS = ("workers", "overwrite", "fail_fast", "no_progress", "scheduler", "shard", "batch_size")


def batch_options(func: Callable) -> Callable:
    """Add the options every per-file batch command shares.

    A command with a ``run`` parameter receives them as one
    :class:`~csaws_tools.execution.options.RunOptions` (built here, once);
    otherwise as the separate parameters ``workers, overwrite, fail_fast,
    no_progress, scheduler, shard, batch_size``. ``--quiet`` (alias
    ``--no-progress``) means ``progress=False``; ``--max-pixels`` and
    ``--hash-inputs`` are handled by :func:`input_options`.
    """
    wants_run = "run" in inspect.signature(func).parameters

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        quiet = kwargs.pop("quiet", False)
        kwargs["no_progress"] = bool(kwargs.get("no_progress")) or quiet
        if wants_run:
            from ..execution.options import RunOptions

            given = {name: kwargs.pop(name) for name in _RUN_PARAMS}
            kwargs["run"] = RunOptions(workers=given["workers"], overwrite=given["overwrite"],
                                       fail_fast=given["fail_fast"], progress=not given["no_progress"],
                                       scheduler=given["scheduler"], shard=given["shard"],
                                       batch_size=given["batch_size"])
        return func(*args, **kwargs)

    options = [
        click.option("--workers", "-j", type=click.IntRange(min=1), default=None,
                     help="Worker processes (default: all cores)."),
        click.option("--overwrite", is_flag=True,
                     help="Redo outputs that already exist with the same settings (default: skip them)."),
        click.option("--fail-fast", is_flag=True, help="Stop at the first input that fails."),
        click.option("--quiet", "-q", is_flag=True,
                     help="No progress output (on a terminal: n/N, files/s and ETA; otherwise a log line "
                          "every 30 s). Error lines and the summary are still printed."),
        click.option("--no-progress", is_flag=True, help="The same as --quiet (kept for old scripts)."),
        click.option("--scheduler", metavar="ADDRESS", default=None,
                     help="Run on a Dask cluster: a scheduler address (tcp://host:8786) or 'local' "
                          "for a LocalCluster on this machine. Needs the [dask] extra."),
        click.option("--shard", metavar="I/N", default=None, callback=_shard_callback,
                     help="Process only the I-th of N deterministic parts of the inputs (for job arrays); "
                          "the manifest is written as manifest.shard-I-of-N.parquet."),
        click.option("--batch-size", type=click.IntRange(min=1), default=None,
                     help="Inputs per task sent to a worker (default: 1 locally; on a cluster about 4 tasks per worker, at most 200)."),
    ]
    for option in reversed(options):
        wrapper = option(wrapper)
    return input_options(wrapper)


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of one command (restored after)."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _shard_callback(ctx: click.Context, param: click.Parameter, value: str | None):
    try:
        return parse_shard(value)
    except CsawsError as exc:
        raise click.BadParameter(cli_message(exc, ctx)) from None


def int_list(ctx: click.Context | None, param: click.Parameter | None, value: str | None) -> tuple[int, ...] | None:
    """Click callback: ``"25,50,100"`` -> ``(25, 50, 100)``; ``None`` passes through."""
    if value is None:
        return None
    try:
        out = tuple(int(v) for v in str(value).split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers such as 25,50,100, not {value!r}") from None
    if not out:
        raise click.BadParameter("give at least one number")
    return out


def option_for(ctx: click.Context | None, param: str) -> click.Option | None:
    """The option of the running command (or of a group above it) for the API parameter ``param``.

    Matched by the option's Python name (``crop``) or by its spelling
    (``--val-size`` for ``val_size``); None when the command has no such option.
    """
    flag = "--" + param.replace("_", "-")
    while ctx is not None:
        for p in ctx.command.params:
            if isinstance(p, click.Option) and (p.name == param or flag in p.opts):
                return p
        ctx = ctx.parent
    return None


#: A value as the API messages write it: a quoted string, a list/tuple, or a word (number, N, True).
_VALUE = r"""'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|\[[^\]]*\]|\([^)]*\)|[\w.+-]+"""
_PLAIN = re.compile(r"[\w.,/:+-]+")


def _cli_value(value: str) -> str:
    """``'x.pth'`` -> ``x.pth`` (quotes only where the shell needs none); ``[7, 9]`` -> ``7,9``."""
    if value[:1] in "[(" and value[-1:] in "])":
        return ",".join(v.strip().strip("'\"") for v in value[1:-1].split(",") if v.strip())
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"" and _PLAIN.fullmatch(value[1:-1]):
        return value[1:-1]
    return value


def cli_message(exc: CsawsError, ctx: click.Context | None = None) -> str:
    """``exc``'s message with its parameters spelled as the running command's options.

    The library writes ``crop=448 is larger ...`` (:mod:`csaws_tools.errors`);
    the command line shows ``--crop 448 is larger ...``; a flag's value is
    dropped (``overwrite=True`` -> ``--overwrite``). Parameters the command
    has no option for keep the API spelling.
    """
    return cli_text(str(exc), exc.params, ctx)


def cli_text(text: str, params: Iterable[str], ctx: click.Context | None = None) -> str:
    """:func:`cli_message` for a line that is not an exception (a warning naming ``params``)."""
    if ctx is None:
        ctx = click.get_current_context(silent=True)
    for param in params:
        option = option_for(ctx, param)
        if option is None:
            continue
        longs = [o for o in option.opts if o.startswith("--")] or list(option.opts)
        flag = max(longs, key=len)
        pattern = re.compile(rf"(?<![\w.\-/]){re.escape(param)}=({_VALUE})?")

        def spell(m: re.Match, flag: str = flag, is_flag: bool = bool(option.is_flag)) -> str:
            value = m.group(1)
            return flag if is_flag or not value else f"{flag} {_cli_value(value)}"

        text = pattern.sub(spell, text)
    return text


def handle_errors(func: Callable) -> Callable:
    """Turn a :class:`CsawsError` into ``error: <message>`` and exit status 2, Ctrl-C into 130.

    The message names the command's options where the library named its
    parameters (:func:`cli_message`). Ctrl-C ends every command as the batch
    commands end it: one ``interrupted`` line and exit status 130 (not
    click's "Aborted!" and 1).
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except CsawsError as exc:
            click.echo(f"error: {cli_message(exc)}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted: finished outputs are kept; a rerun goes on from there", err=True)
            sys.exit(130)

    return wrapper


def finish(result: BatchResult) -> None:
    """Print the summary line and where the manifest is; exit with the batch's status.

    Every command's summary uses the same word for inputs done in this run
    (:data:`csaws_tools.batch.SUCCESS_WORD`) and ends with the elapsed time
    and throughput: ``8 converted, 0 skipped, 0 failed in 4.0 s, 2.0 files/s``.
    """
    click.echo(result.summary(timing=True))
    if result.manifest is not None:
        click.echo(f"manifest: {result.manifest}")
    sys.exit(result.exit_code)
