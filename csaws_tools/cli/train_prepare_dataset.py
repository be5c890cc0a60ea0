"""``csaws-train prepare --dataset``: splits and 512 x 512 images of Cityscapes, VOC, CSAW-S or a folder.

``csaws-train prepare-dataset DATASET ROOT`` is the same command (kept as an alias).
Nothing here imports torch.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable

import click

from ._common import handle_errors, int_list

DATASETS = ("cityscapes", "voc", "csaws", "folders")

LAYOUTS = """\b
DATASET    layout under ROOT
cityscapes leftImg8bit/{train,val}/<city>/*_leftImg8bit.png, gtFine/.../*_gtFine_labelIds.png
           (gtCoarse/ for --coarse); val = 500 of official train, test = official val
voc        VOC2012/JPEGImages, SegmentationClass, ImageSets/Segmentation/{train,val}.txt
           (ROOT may also be VOCdevkit or its parent); val = 500 of official val, test = the rest
csaws      ROOT = merge-masks output (trainval/, test/consensus/), --images the 8-bit images
folders    images/ + labels/ + labels.json (classes; optional "void", "background")"""


def dataset_options(func: Callable) -> Callable:
    """Options of the public-dataset preparation (shared by ``prepare --dataset`` and ``prepare-dataset``)."""
    opts = [
        click.option("--target", default=None,
                     help="Expert class, by name [default: person; cancer for csaws]. A merged target reads "
                          "NAME=A+B, e.g. human=person+rider."),
        click.option("--val-size", type=click.IntRange(min=1), default=None,
                     help="Validation images [default: 500 for cityscapes and voc (the paper), 20 % for folders; "
                          "csaws validates on the protocol's patients]."),
        click.option("--test-size", type=click.IntRange(min=0), default=None,
                     help="folders only: test images drawn at random [default: 20 %]."),
        click.option("--ordering", type=click.Choice(["random", "by-city"]), default="random", show_default=True,
                     help="Training order: random, or by-city (domain shift: cities in random order, shuffled "
                          "within each city; the first N images come from as few cities as possible)."),
        click.option("--size", type=click.IntRange(min=8), default=512, show_default=True,
                     help="Images and label maps are resized to SIZE x SIZE."),
        click.option("--resample", type=click.Choice(["bilinear", "nearest"]), default="bilinear",
                     show_default=True, help="Image resampling (label maps always nearest)."),
        click.option("--coarse", is_flag=True,
                     help="cityscapes: also store the gtCoarse label maps of the training images (coarse study)."),
        click.option("--images", "image_dir", default=None,
                     help="csaws: the 8-bit image folder (ROOT is merge-masks' output). folders: the image "
                          "sub-folder name under ROOT [default: images]."),
        click.option("--labels", "label_dir", default=None,
                     help="folders: the label-map sub-folder name under ROOT [default: labels]."),
        click.option("--grey", is_flag=True, help="folders: store one grey channel instead of three."),
        click.option("--overwrite", is_flag=True, help="Rewrite outputs that are up to date."),
    ]
    for opt in reversed(opts):
        func = opt(func)
    return func


#: the dataset options' parameter names and defaults (to tell which ones a user gave)
DATASET_DEFAULTS = {"target": None, "val_size": None, "test_size": None, "ordering": "random", "size": 512,
                    "resample": "bilinear", "coarse": False, "image_dir": None, "label_dir": None, "grey": False,
                    "overwrite": False}


def run_prepare_dataset(dataset: str, root: str, out: str, *, sizes, repetitions, seed, workers, no_progress,
                        target, val_size, test_size, ordering, size, resample, coarse, image_dir, label_dir, grey,
                        overwrite) -> None:
    """Prepare DATASET under ROOT into OUT, print the summary and exit with its status."""
    from ..train.datasets import get_adapter, prepare_dataset

    options = {}
    if dataset == "csaws":
        options["images"] = image_dir
    elif dataset == "folders":
        options.update(images=image_dir or "images", labels=label_dir or "labels", channels=1 if grey else 3)
    elif image_dir or label_dir or grey:
        raise click.UsageError("--images, --labels and --grey apply to csaws and folders only")
    if test_size is not None and dataset != "folders":
        raise click.UsageError("--test-size applies to folders only (the other datasets have official test sets)")
    adapter = get_adapter(dataset, root, **options)
    try:
        res = prepare_dataset(adapter, out, target=target, val_size=val_size, test_size=test_size, sizes=sizes,
                              repetitions=repetitions or 5, seed=seed, ordering=ordering, size=size,
                              resample=resample, coarse=coarse, workers=workers, progress=not no_progress,
                              overwrite=overwrite)
    except KeyboardInterrupt:
        click.echo("interrupted: files already complete are kept; rerun to finish", err=True)
        sys.exit(130)
    for p in res.problems:
        click.echo(f"error: {p['source']}: {p['error']}", err=True)
    click.echo(res.summary())
    click.echo(f"splits: {res.splits}")
    for sp, path in res.files.items():
        click.echo(f"{sp}: {path}")
    sys.exit(res.exit_code)


@click.command("prepare-dataset")
@click.argument("dataset", type=click.Choice(list(DATASETS)))
@click.argument("root", type=click.Path(exists=True, file_okay=False))
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False),
              help="Output folder: splits.json, train.h5, val.h5, test.h5 and their manifests.")
@click.option("--sizes", default=None, callback=int_list,
              help="Training-set sizes N, comma-separated [default: the paper's; cityscapes "
                   "25,50,100,200,350,500,1000,2475; voc 25,...,1000,1464].")
@click.option("--repetitions", type=click.IntRange(min=1), default=5, show_default=True,
              help="Training orders (and so subsets per N).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the validation draw and of the training orders.")
@dataset_options
@click.option("--workers", "-j", type=click.IntRange(min=1), default=None, help="Worker processes (default: all cores).")
@click.option("--no-progress", is_flag=True, help="Do not show progress bars.")
@handle_errors
def prepare_dataset_cmd(dataset, root, out, sizes, repetitions, seed, workers, no_progress, **kw):
    """Alias of 'csaws-train prepare --dataset DATASET ROOT': the paper's train/val/test split of
    DATASET under ROOT and its images resized for training.

    Label maps keep the dataset's own ids (void stays void); label schemes (binary,
    leave-one-out, random k, merge) are applied when reading. Reruns keep up-to-date files.
    Exit status 1 when an image failed (the others are written and listed in the manifests).

    \b
    Example:
      csaws-prepare sample --kind cityscapes CS
      csaws-train prepare-dataset cityscapes CS -o INPUTS --val-size 4 --sizes 4,8,14 --coarse
    """
    run_prepare_dataset(dataset, root, out, sizes=sizes, repetitions=repetitions, seed=seed, workers=workers,
                        no_progress=no_progress, **kw)


prepare_dataset_cmd.help = inspect.cleandoc(prepare_dataset_cmd.help or "") + "\n\n" + LAYOUTS
