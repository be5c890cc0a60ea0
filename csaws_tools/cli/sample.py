"""``csaws-prepare sample``: write a synthetic dataset in the CSAW-S release layout."""

from __future__ import annotations

import re
from pathlib import Path

import click

from .. import defaults
from ._common import handle_errors


def _parse_size(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*[xX*,]\s*(\d+)\s*", value)
    if not match:
        raise click.BadParameter(f"{value!r} is not ROWSxCOLS, e.g. 640x512")
    return int(match.group(1)), int(match.group(2))


@click.command("sample")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--seed", type=int, default=defaults.SEED, show_default=True,
              help="Random seed; the same seed and options give byte-identical files.")
@click.option("--patients", type=click.IntRange(1, 999), default=defaults.SAMPLE_TRAIN_PATIENTS, show_default=True,
              help="Train/val patients (ids 000, 001, ...; one or two images each, CC and MLO).")
@click.option("--test-patients", type=click.IntRange(0, 999), default=defaults.SAMPLE_TEST_PATIENTS, show_default=True,
              help="Test patients (numbered after the train/val ones), with masks from three annotators.")
@click.option("--size", metavar="ROWSxCOLS", callback=_parse_size, default=None,
              help="Image size in pixels [default: 640x512].")
@click.option("--full-size", is_flag=True,
              help="Full-field mammograms of 4096x3328 pixels (about 1-4 s and 30 MB of PNG per image).")
@click.option("--workers", "-j", type=click.IntRange(min=1), default=defaults.WORKERS,
              help="Processes drawing images in parallel (default: all cores; output is identical for any number).")
@click.option("--kind", type=click.Choice(["csaws", "cityscapes", "voc"]), default="csaws", show_default=True,
              help="Layout: CSAW-S mammograms, or tiny Cityscapes / PASCAL VOC 2012 stand-ins "
                   "(only --seed and --size apply to those).")
@handle_errors
def sample(out: Path, seed: int, patients: int, test_patients: int, size: tuple[int, int] | None,
           full_size: bool, workers: int | None, kind: str) -> None:
    """Write a synthetic mammography dataset in the CSAW-S release layout to OUT.

    \b
    OUT/dicom/<pid>/<pid>_<n>.dcm          train/val DICOM (MG, For Presentation;
                                           some MONOCHROME1, some JPEG 2000 lossless;
                                           LINEAR and SIGMOID windows, several presets,
                                           Rescale Slope/Intercept, a VOI LUT Sequence)
    OUT/dicom_test/<pid>/<pid>_<n>.dcm     test DICOM
    OUT/CsawS/anonymized_dataset/...       8-bit images (what dicom2png makes with its
                                           defaults) and 11 binary masks per image
    OUT/CsawS/test_data/...                test images; masks of annotators 1, 2 (all
                                           classes) and 3 (cancer only)
    OUT/CsawS/training_random_splits.json  patient subsets {"N": {"rep": [pid, ...]}}
    OUT/sample.parquet                     one row per image: views, storage, class pixels

    OUT must be new, empty, or a previous sample (which is then replaced).

    \b
    Example:
      csaws-prepare sample SAMPLE --seed 1 --patients 8 --workers 2
    """
    if kind != "csaws":
        from ..sample_public import write_public_sample

        click.echo(write_public_sample(kind, out, seed=seed, size=size).summary())
        return
    from ..sample.release import check_size, write_sample

    if full_size and size is not None:
        raise click.UsageError("give --size or --full-size, not both")
    if size is not None:
        try:
            check_size(size)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--size") from None
    info = write_sample(out, seed=seed, n_train_patients=patients, n_test_patients=test_patients,
                        size=size, full_size=full_size, workers=workers)
    click.echo(info.summary())
    click.echo(f"  DICOM (train/val): {info.dicom_dir}")
    if info.test_ids:
        click.echo(f"  DICOM (test):      {info.dicom_test_dir}")
    click.echo(f"  released PNG and masks: {info.trainval_dir}")
    if info.test_ids:
        click.echo(f"  test images and annotator masks: {info.test_dir}")
    click.echo(f"  patient splits:    {info.splits_json}")
    click.echo(f"  manifest:          {info.manifest}")
    if info.validation_patients:
        click.echo(f"  suggested validation patients present: {', '.join(info.validation_patients)}")
