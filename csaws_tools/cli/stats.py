"""``csaws-prepare stats``: the class table (percent of pixels, percent of images) of merged label maps."""

from __future__ import annotations

from pathlib import Path

import click

from ._common import handle_errors


@click.command("stats")
@click.argument("masks_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--by", type=click.Choice(["split"]), default=None,
              help="One table per split, taken from the folder structure (trainval, test/annotator_1, "
                   "test/consensus, ...). Default: one table over every map under MASKS_DIR.")
@click.option("--numbering", type=click.Choice(["standard", "release"]), default=None,
              help="Numbering of the maps (default: read from the labels.json merge-masks wrote; "
                   "standard if there is none).")
@click.option("-o", "--out", "prefix", type=click.Path(dir_okay=False), default=None, metavar="PREFIX",
              help="Write PREFIX.csv and PREFIX.parquet (default: MASKS_DIR/class_table).")
@click.option("--paper/--no-paper", default=True, show_default=True,
              help="Show the CSAW-S paper's training-set figures beside ours.")
@click.option("--workers", "-j", type=click.IntRange(min=1), default=None,
              help="Processes reading maps (default: all cores).")
@handle_errors
def stats(masks_dir, by, numbering, prefix, paper, workers):
    """Print the class table of the label maps under MASKS_DIR and write it to CSV and Parquet.

    For each class: percent of all pixels, percent of maps containing it, sorted by pixel share
    (largest first) like the CSAW-S paper's table. Point it at OUT/trainval for the paper's
    training-set table.

    \b
    Example:
      csaws-prepare stats maps/trainval
      csaws-prepare stats maps --by split -o maps/class_table
    """
    from ..review.stats import class_table, format_table, write_table

    table = class_table(masks_dir, numbering=numbering, by=by, paper=paper, workers=workers)
    click.echo(format_table(table))
    csv, parquet = write_table(table, prefix if prefix else Path(masks_dir) / "class_table")
    click.echo(f"\nwritten: {csv}, {parquet}")
