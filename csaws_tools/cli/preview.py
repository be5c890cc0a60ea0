"""``csaws-prepare preview``: overlay PNGs of label maps on their images, and a contact sheet."""

from __future__ import annotations

import click

from .. import defaults
from ._common import batch_options, finish, handle_errors


@click.command("preview")
@click.option("--images", required=True, type=click.Path(exists=True, file_okay=False),
              help="Folder of images (searched recursively; paired with maps by file name <image id>).")
@click.option("--masks", required=True, type=click.Path(exists=True, file_okay=False),
              help="Folder of label maps, e.g. the output of merge-masks (searched recursively).")
@click.option("-o", "--out", "out", required=True, type=click.Path(file_okay=False),
              help="Output folder: one overlay per map (same sub-folders), contact_sheet.png, manifest.parquet.")
@click.option("--alpha", type=click.FloatRange(0.0, 1.0), default=defaults.PREVIEW_ALPHA, show_default=True,
              help="Opacity of the class colours over the image.")
@click.option("--max-size", type=click.IntRange(min=16), default=defaults.PREVIEW_MAX_SIZE, show_default=True,
              help="Longer side of each overlay in pixels (images are downscaled, never enlarged).")
@click.option("--thumb-size", type=click.IntRange(min=32), default=defaults.PREVIEW_THUMB_SIZE, show_default=True,
              help="Cell size of the contact sheet in pixels.")
@click.option("--numbering", type=click.Choice(["standard", "release"]), default=None,
              help="Numbering of the maps (default: from the labels.json beside them; standard if none).")
@batch_options
@handle_errors
def preview(images, masks, out, alpha, max_size, thumb_size, numbering, run):
    """Write overlays (image in grey, classes in colour, a legend) and one contact sheet of a folder.

    A quick check that masks, images and intensity inversion line up.

    \b
    Example:
      csaws-prepare preview --images CsawS --masks maps -o previews
    """
    from ..review.preview import preview as make_previews

    result = make_previews(images, masks, out, alpha=alpha, max_size=max_size, thumb_size=thumb_size,
                           numbering=numbering, run=run)
    if result.contact_sheet is not None:
        click.echo(f"contact sheet: {result.contact_sheet}")
    else:
        click.echo("no contact sheet written (no overlay was made)")
    finish(result)
