"""``csaws-prepare manifest``: join shard manifests, summarise a manifest (see :mod:`csaws_tools.manifests`)."""

from __future__ import annotations

import warnings
from pathlib import Path

import click

from ..execution.runner import SUCCESS_WORD
from ._common import handle_errors


@click.group("manifest")
def manifest() -> None:
    """Work with the Parquet manifests that the batch commands write."""


@manifest.command("merge")
@click.argument("sources", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The merged manifest [default: the shards' name without the shard part, "
                   "e.g. OUT/manifest.parquet].")
@click.option("--allow-missing", is_flag=True,
              help="Merge even when some shards 1..N are missing (a warning lists them; the merged "
                   "manifest's metadata records them). Without it a missing shard is an error.")
@handle_errors
def merge(sources: tuple[Path, ...], out: Path | None, allow_missing: bool) -> None:
    """Join the manifests of the shards of a run (--shard I/N) into one.

    SOURCES are shard manifests (manifest.shard-000I-of-000N.parquet) or folders
    holding them. The shards must have been made with the same settings, no input
    may appear in two of them, and all shards 1..N must be there. The merged
    manifest (rows sorted by source) is written atomically; its summary is printed.

    \b
    Examples:
      csaws-prepare manifest merge png/                 # -> png/manifest.parquet
      csaws-prepare manifest merge png/manifest.shard-*.parquet -o png/manifest.parquet
    """
    from ..execution.manifests import MissingShardWarning, merge_manifests

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", MissingShardWarning)
        frame = merge_manifests(list(sources), out, allow_missing=allow_missing)
    for w in caught:
        click.echo(f"warning: {w.message}", err=True)
    meta = frame.attrs["csaws_tools"]
    status = frame["status"].value_counts() if "status" in frame else {}
    counts = (f"{int(status.get('ok', 0))} {SUCCESS_WORD}, {int(status.get('skipped', 0))} skipped, "
              f"{int(status.get('error', 0))} failed")
    click.echo(f"merged {len(meta['merged_from'])} manifests: {len(frame)} rows ({counts})")
    click.echo(f"manifest: {frame.attrs['path']}")


@manifest.command("show")
@click.argument("path", type=click.Path(exists=True, dir_okay=True, path_type=Path))
@click.option("--errors", "top_errors", type=click.IntRange(min=0), default=10, show_default=True,
              help="How many distinct error messages to list (commonest first).")
@handle_errors
def show(path: Path, top_errors: int) -> None:
    """Summarise a manifest: rows by status, the commonest errors, the settings that made it.

    PATH is a manifest file, or an output folder holding manifest.parquet.

    \b
    Example:
      csaws-prepare manifest show png/
    """
    from ..errors import InputError
    from ..execution.manifests import summarize_manifest

    if path.is_dir():
        path = path / "manifest.parquet"
        if not path.is_file():
            raise InputError(f"{path.parent}: no manifest.parquet in this folder")
    info = summarize_manifest(path, top_errors=top_errors)
    s = info["status"]
    click.echo(f"{info['path']}: {info['rows']} rows: {s['ok']} {SUCCESS_WORD}, {s['skipped']} skipped, "
               f"{s['error']} failed")
    if info["shard"]:
        click.echo(f"shard {info['shard'][0]} of {info['shard'][1]}")
    elif info["shards"]:
        missing = info["missing_shards"]
        click.echo(f"merged from {info['shards']} shards" + (f" ({len(missing)} missing: {missing})" if missing else ""))
    click.echo(f"settings hash {info['settings_hash']}, csaws-tools {info['tool_version']}")
    if info["seconds"] is not None:
        click.echo(f"worker time {info['seconds']:.1f} s")
    if info["settings"]:
        for key, value in sorted(info["settings"].items()):
            click.echo(f"  {key} = {value}")
    if info["errors"]:
        click.echo("errors (commonest first):")
        for message, n in info["errors"]:
            click.echo(f"  {n:6d}  {message}")
