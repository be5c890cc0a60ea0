"""Options and helpers shared by the batch commands."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable

import click

from ..batch import BatchResult, parse_shard
from ..errors import CsawsError


def batch_options(func: Callable) -> Callable:
    """Add the options every per-file batch command shares."""
    options = [
        click.option("--workers", "-j", type=click.IntRange(min=1), default=None,
                     help="Worker processes (default: all cores)."),
        click.option("--overwrite", is_flag=True,
                     help="Redo outputs that already exist with the same settings (default: skip them)."),
        click.option("--fail-fast", is_flag=True, help="Stop at the first input that fails."),
        click.option("--no-progress", is_flag=True, help="Do not show the progress bar."),
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
        func = option(func)
    return func


def _shard_callback(ctx: click.Context, param: click.Parameter, value: str | None):
    try:
        return parse_shard(value)
    except CsawsError as exc:
        raise click.BadParameter(str(exc)) from None


def handle_errors(func: Callable) -> Callable:
    """Turn a :class:`CsawsError` into ``error: <message>`` and exit status 2."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except CsawsError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)

    return wrapper


def finish(result: BatchResult, verb: str) -> None:
    """Print the summary line and where the manifest is; exit with the batch's status."""
    click.echo(result.summary(verb))
    if result.manifest is not None:
        click.echo(f"manifest: {result.manifest}")
    sys.exit(result.exit_code)
