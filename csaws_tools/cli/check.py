"""``csaws-prepare check``: find what is wrong with a dataset before a long run (reads headers only)."""

from __future__ import annotations

import json
import sys

import click

from ._common import handle_errors


@click.command("check")
@click.argument("root", type=click.Path(exists=True, file_okay=False))
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON document (counts and every finding) instead of the table.")
@click.option("--max-lines", default=10, show_default=True, type=click.IntRange(min=0),
              help="Findings listed per kind in the table (--json lists them all).")
@handle_errors
def check(root, as_json, max_lines):
    """Check the dataset under ROOT and report every problem; writes nothing.

    \b
    ROOT is a CSAW-S release (CsawS/ or the folder holding it) or a plain folder tree of images
    <image>.png with class masks <image>_<class>.png (images may sit in another folder of the
    same split). Only file names and image headers are read: a full release takes seconds.
    Reported: images missing class masks, masks that do not belong (complementary masks of test
    annotator 3), duplicate masks and images, unknown class tokens, mask/image size mismatches,
    images without masks, masks without an image, unreadable files (truncated or corrupt PNG,
    broken links, link loops, images over the pixel limit), names that are not UTF-8, missing test
    annotators (annotator_1..3), and patients with images both in train/val and in test.
    Exit status: 0 when nothing is wrong, 1 when anything is.

    \b
    Examples:
      csaws-prepare check CsawS
      csaws-prepare check CsawS --json > check.json
    """
    from ..review.check import check_dataset

    report = check_dataset(root)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=1))
    else:
        click.echo(report.format(per_kind=max_lines))
    sys.exit(report.exit_code)
