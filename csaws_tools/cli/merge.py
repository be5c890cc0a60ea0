"""``csaws-prepare merge-masks``: one label map per image from the per-class masks."""

from __future__ import annotations

import re

import click

from .. import defaults
from ._common import batch_options, finish, handle_errors


def _size_callback(ctx: click.Context, param: click.Parameter, value: str | None):
    if value is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*[xX,]\s*(\d+)\s*", value)
    if not m or int(m.group(1)) < 1 or int(m.group(2)) < 1:
        raise click.BadParameter(f"expected ROWSxCOLS such as 4096x3328, not {value!r}")
    return int(m.group(1)), int(m.group(2))


@click.command("merge-masks")
@click.argument("root", type=click.Path(exists=True, file_okay=False))
@click.option("-o", "--out", "out", required=True, type=click.Path(file_okay=False),
              help="Output folder: trainval/, test/annotator_<k>/, test/consensus/, labels.json, manifest.parquet.")
@click.option("--numbering", type=click.Choice(list(defaults.NUMBERINGS)), default=defaults.NUMBERING, show_default=True,
              help="standard: background 0, cancer 1 ... mammary_gland 11. "
                   "release: the original scripts' cancer 0 ... mammary_gland 10, background 11.")
@click.option("--labels", "labels", default=defaults.LABEL_SCHEME, show_default=True, metavar="SCHEME",
              help="Label scheme applied to the written maps: all, binary, leave-one-out:<class>, "
                   "keep:<class>,..., random:<k>:<seed>, merge:<a>+<b>=<name>. Recorded in labels.json.")
@click.option("--strict", is_flag=True,
              help="A missing class mask is an error (default: treated as empty and listed in the manifest's "
                   "warnings). Annotator 3 of the test set gives cancer only and is never flagged.")
@click.option("--size", default=None, metavar="ROWSxCOLS", callback=_size_callback,
              help="Image size for QuPath GeoJSON files without an image beside them (e.g. 4096x3328).")
@batch_options
@handle_errors
def merge_masks(root, out, numbering, labels, strict, size, run):
    """Merge the binary class masks of every image under ROOT into one label map per image.

    \b
    ROOT is one of:
      * a CSAW-S release (CsawS/ or the folder holding it): anonymized_dataset/<pid>/<pid>_<n>_<class>.png
        and test_data/annotator_<k>/<pid>/<pid>_<n>_<class>.png;
      * a folder (searched recursively) of masks <image>_<class>.png|tif|tiff, e.g. QuPath exports;
      * a folder of QuPath GeoJSON exports <image>.geojson, rasterised at the size of <image>.png|tif
        beside them (or --size).
    Where masks overlap the higher-priority class wins (cancer > calcifications > ... > mammary_gland);
    any non-zero mask pixel counts as marked. Test images also get test/consensus/<pid>_<n>.png:
    cancer where at least two of the three experts marked cancer.

    \b
    Example:
      csaws-prepare merge-masks CsawS -o maps
      csaws-prepare merge-masks CsawS -o maps-binary --labels binary --numbering standard
    """
    from ..masks.merge import merge_masks as merge

    result = merge(root, out, numbering=numbering, labels=labels, strict=strict, size=size, run=run)
    finish(result)
