"""``csaws-prepare dicom2png``: DICOM files and folders to 8/16-bit PNG (see :mod:`csaws_tools.dicom2png`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from .. import defaults

if TYPE_CHECKING:
    from ..execution.options import RunOptions

from ._common import batch_options, finish, handle_errors


def _frame_callback(ctx: click.Context, param: click.Parameter, value: str | None):
    if value is None or value == "all":
        return value
    if not value.isdigit():
        raise click.BadParameter(f"{value!r} is neither a 0-based frame number nor 'all'")
    return int(value)


@click.command("dicom2png")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--out", required=True, type=click.Path(path_type=Path),
              help="Output folder (created if needed); the manifest is OUT/manifest.parquet.")
@click.option("--voi", type=click.Choice(list(defaults.VOI_MODES)), default=defaults.VOI, show_default=True,
              help="VOI step (PS3.3 C.11.2): 'auto' uses the window (Window Center/Width) if the file has "
                   "one, else its VOI LUT Sequence, else the --fallback; 'window' or 'lut' use only that one; "
                   "'none' maps the whole Modality LUT output range onto the output.")
@click.option("--voi-index", type=click.IntRange(min=0), default=None,
              help="Which window preset or VOI LUT to use, 0-based. An index the file does not have is "
                   "an error for that file. [default: the first the file has (its row's voi_index is 0); "
                   "a file with none goes to --fallback, and the run's settings record voi_index null]")
@click.option("--bits", type=click.Choice([str(b) for b in defaults.BIT_DEPTHS]), default=str(defaults.BITS), show_default=True,
              help="PNG bit depth: the VOI output range is mapped onto 0..255 or 0..65535.")
@click.option("--fallback", type=click.Choice(list(defaults.FALLBACKS)), default=defaults.FALLBACK,
              show_default=True,
              help="For files without usable VOI data (none present, window width below 1): fail the file, "
                   "or window over the image's min..max or its 0.5th..99.5th percentiles. The manifest "
                   "records which was used and why (voi_kind, fallback_reason).")
@click.option("--frame", metavar="N|all", default=None, callback=_frame_callback,
              help="Multi-frame files (e.g. breast tomosynthesis): 'all' writes one PNG per frame, N "
                   "(0-based) only frame N; outputs are <stem>_f<k>.png, one manifest row per frame, with "
                   "each frame's own window. Single-frame files ignore it. Without it multi-frame files fail.")
@click.option("--colour", "--color", "colour", type=click.Choice(list(defaults.COLOUR_MODES)), default=defaults.COLOUR,
              show_default=True,
              help="Colour images (RGB, YBR_FULL/YBR_FULL_422, PALETTE COLOR): 'convert' writes an 8-bit RGB "
                   "PNG (colour space converted to RGB, palette applied, no VOI step, --bits ignored); "
                   "'refuse' fails them, converting greyscale only.")
@click.option("--name", "name_template", metavar="TEMPLATE", default=None,
              help="Name outputs from DICOM keywords instead of input paths, e.g. "
                   "'{PatientID}/{PatientID}_{InstanceNumber:04d}' ('.png' is added; {stem} is the "
                   "input's name, {frame} the frame number). Values are sanitised to letters, digits and . _ + -, so names "
                   "stay inside OUT.")
@batch_options
@handle_errors
def dicom2png(inputs: tuple[Path, ...], out: Path, voi: str, voi_index: int | None, bits: str, fallback: str,
              frame: int | str | None, colour: str, name_template: str | None, run: RunOptions) -> None:
    """Convert DICOM images (files, or folders searched recursively) to PNG in OUT.

    DICOM files are recognised by content, not by name; other files are skipped and
    counted. Each image goes through the Modality LUT (Rescale Slope/Intercept or
    Modality LUT Sequence), the VOI window or LUT, a linear map of the VOI output range
    onto the PNG range, and inversion of MONOCHROME1 so that the background is black.

    Outputs are OUT/<path relative to the input folder>.png (a.dcm -> a.png), or
    OUT/<stem>.png for a file given directly, or named by --name. A rerun skips outputs
    made with the same settings (--overwrite redoes them). Every input gets a row in
    OUT/manifest.parquet; the run ends with "N converted, M skipped, K failed" and exit
    status 1 if anything failed, or if no DICOM image was found at all.

    Multi-frame files need --frame (N or all); colour images become RGB PNGs
    (--colour refuse to fail them); DICOMDIR index files are skipped. Pixel padding
    (Pixel Padding Value) is written black and left out of --fallback statistics.
    An existing file in OUT that this command did not write is never replaced.

    \b
    Examples:
      csaws-prepare dicom2png raw/ -o png/
      csaws-prepare dicom2png raw/ -o png16/ --bits 16 --fallback percentile
      csaws-prepare dicom2png raw/ -o named/ --name '{PatientID}/{PatientID}_{InstanceNumber:04d}'
      csaws-prepare dicom2png dbt/ -o slices/ --frame all --name '{stem}_f{frame:03d}'
    """
    from ..dicom.convert import convert, nothing_found
    try:
        result = convert(
            list(inputs), out, voi=voi, voi_index=voi_index, bits=int(bits), fallback=fallback, frame=frame,
            name=name_template, colour=colour, run=run,
        )
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    if nothing_found(result):
        click.echo(result.summary(timing=True))
        looked = len(result.rows)
        where = ", ".join(str(p) for p in inputs)
        click.echo(f"error: no DICOM image found in {where} ({looked} file(s) looked at, none is a DICOM image "
                   "this command converts); check the input folder", err=True)
        sys.exit(1)
    finish(result)

