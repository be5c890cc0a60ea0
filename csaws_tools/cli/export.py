"""``csaws-prepare export nnunet`` and ``csaws-prepare export monai``: datasets for the frameworks people train with."""

from __future__ import annotations

import sys

import click

from ._common import cli_text, handle_errors

_TEST_LABELS = click.Choice(["consensus", "annotator_1", "annotator_2", "annotator_3", "none"])


@click.group("export")
def export() -> None:
    """Export label maps and images for nnU-Net v2 or MONAI.

    \b
    Both read MAPS (the output folder of merge-masks: trainval/, test/consensus/, labels.json) and
    IMAGES (any folder holding the images as <id>.png, searched recursively: CsawS/ or a dicom2png
    output), and split train/val by patient as the rest of the toolkit does.

    \b
    Examples:
      csaws-prepare export nnunet maps CsawS -o nnUNet_raw
      csaws-prepare export monai maps CsawS -o datalist.json
    """


@export.command("nnunet")
@click.argument("maps", type=click.Path(exists=True, file_okay=False))
@click.argument("images", type=click.Path(exists=True, file_okay=False))
@click.option("-o", "--out", "out", required=True, type=click.Path(file_okay=False),
              help="The nnUNet_raw folder: the dataset is written to OUT/Dataset<ID>_<NAME>/.")
@click.option("--dataset-id", default=501, show_default=True, type=int,
              help="nnU-Net's dataset id (1-999); the number nnUNetv2_plan_and_preprocess -d and nnUNetv2_train take.")
@click.option("--name", default="CSAWS", show_default=True, help="Dataset name (letters, digits, '_', '-').")
@click.option("--labels", "labels", default="with", show_default=True, metavar="SCHEME",
              help="with: all 12 classes; without: cancer vs background (the study's two settings); or any "
                   "label scheme (binary, leave-one-out:<class>, keep:<class>,..., random:<k>:<seed>, "
                   "merge:<a>+<b>=<name>). Ids are renumbered 0..K-1 as nnU-Net requires.")
@click.option("--normalization", type=click.Choice(["zscore", "rgb_to_0_1", "rescale_to_0_1", "CT", "noNorm"]),
              default="zscore", show_default=True,
              help="Channel name in dataset.json, which is how nnU-Net picks its intensity normalisation: "
                   "zscore (per image; nnU-Net's default for non-CT), rgb_to_0_1 (divide by 255: fixed "
                   "scaling of 8-bit images, closest to the study's), rescale_to_0_1 (per-image min-max).")
@click.option("--test-labels", type=_TEST_LABELS, default="consensus", show_default=True,
              help="Ground truth written to labelsTs: the expert consensus (protocol section 3), one "
                   "annotator's maps, or none (imagesTs only).")
@click.option("--splits", "splits_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="A splits JSON (csaws-prepare splits / train prepare) for splits_final.json: fold 0 is "
                   "train vs val, folds 1.. its training subsets. Default: the protocol's validation "
                   "patients where present, else a seeded 20/150 of the patients; fold 0 only.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0),
              help="Seed of the validation draw when there is no --splits file.")
@click.option("--copy", "copy", is_flag=True,
              help="Copy images instead of hard-linking them (default: hard links, a copy where linking fails).")
@click.option("--workers", "-j", type=click.IntRange(min=1), default=None,
              help="Worker processes (default: all cores).")
@click.option("--overwrite", is_flag=True, help="Redo cases that are already up to date (default: skip them).")
@click.option("--fail-fast", is_flag=True, help="Stop at the first case that fails.")
@click.option("--no-progress", is_flag=True, help="Do not show the progress bar.")
@handle_errors
def nnunet(maps, images, out, dataset_id, name, labels, normalization, test_labels, splits_file, seed, copy,
           workers, overwrite, fail_fast, no_progress):
    """Write an nnU-Net v2 raw dataset from the label maps in MAPS and the images in IMAGES.

    \b
    OUT/Dataset<ID>_<NAME>/
      imagesTr/<case>_0000.png   train/val images (one grey channel; hard links where possible)
      labelsTr/<case>.png        one-channel label maps, ids 0..K-1 of --labels
      imagesTs/, labelsTs/       test images and --test-labels maps
      dataset.json               channel_names, labels, numTraining, file_ending .png
      splits_final.json          patient-level folds; copy it to nnUNet_preprocessed/Dataset<ID>_<NAME>/
      csaws_export.json          settings, sources and what each fold is
      manifest.parquet           one row per case
    Reruns skip cases that are up to date; case files of an earlier export that are not
    exported now are removed, so numTraining always matches imagesTr.

    \b
    Examples:
      csaws-prepare export nnunet maps CsawS -o nnUNet_raw
      csaws-prepare export nnunet maps CsawS -o nnUNet_raw --dataset-id 502 --name CSAWSbinary --labels without
    Then: nnUNetv2_plan_and_preprocess -d 501 --verify_dataset_integrity
          nnUNetv2_train 501 2d 0
    """
    from ..execution.options import RunOptions
    from ..review.export import export_nnunet

    result = export_nnunet(maps, images, out, dataset_id=dataset_id, name=name, labels=labels,
                           normalization=normalization, test_labels=test_labels, splits=splits_file, seed=seed,
                           link=not copy, run=RunOptions(workers=workers, overwrite=overwrite,
                                                         fail_fast=fail_fast, progress=not no_progress))
    for w in result.warnings:
        click.echo(f"warning: {cli_text(w, ('test_labels',))}", err=True)
    ds = result.dataset_json or {}
    click.echo(f"{result.summary(timing=True)}; {ds.get('numTraining', 0)} training cases, "
               f"{len(ds.get('labels', {}))} labels, {len(result.folds or [])} fold(s)")
    if result.removed:
        click.echo(f"removed {result.removed} case file(s) of an earlier export")
    click.echo(f"dataset: {result.folder}")
    click.echo(f"manifest: {result.manifest}")
    if not result.interrupted and result.folder is not None:
        name = result.folder.name
        click.echo(f"next: nnUNetv2_plan_and_preprocess -d {dataset_id} --verify_dataset_integrity")
        click.echo(f"      cp {result.folder / 'splits_final.json'} \"$nnUNet_preprocessed/{name}/\"")
        click.echo(f"      nnUNetv2_train {dataset_id} 2d 0")
    sys.exit(result.exit_code)


@export.command("monai")
@click.argument("maps", type=click.Path(exists=True, file_okay=False))
@click.argument("images", type=click.Path(exists=True, file_okay=False))
@click.option("-o", "--out", "out", required=True, type=click.Path(dir_okay=False),
              help="The datalist JSON file to write.")
@click.option("--base-dir", type=click.Path(file_okay=False), default=None,
              help="Folder the paths are relative to (default: the JSON's folder); pass the same to "
                   "monai.data.load_decathlon_datalist(..., base_dir=...).")
@click.option("--test-labels", type=_TEST_LABELS, default="consensus", show_default=True,
              help="Labels of the test entries: the expert consensus, one annotator's maps, or none.")
@click.option("--splits", "splits_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="A splits JSON (csaws-prepare splits / train prepare). Default: made here (the protocol's "
                   "validation patients where present, else a seeded 20/150 of the patients).")
@click.option("--train", "train_split", default="train", show_default=True, metavar="SPLIT",
              help="The training list: train (every training patient), trainval (no validation list), or a "
                   "subset size N of --splits.")
@click.option("--repetition", type=click.IntRange(min=0), default=None,
              help="Repetition of a subset --train N (default 0).")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0),
              help="Seed of the validation draw when there is no --splits file.")
@handle_errors
def monai(maps, images, out, base_dir, test_labels, splits_file, train_split, repetition, seed):
    """Write a MONAI datalist JSON from the label maps in MAPS and the images in IMAGES.

    \b
    {"training": [{"image": ..., "label": ...}, ...], "validation": [...], "test": [...],
     "labels": {"0": "background", ...}}
    Paths are relative to the JSON's folder (or --base-dir). Training and validation are split by
    patient; test entries are the test images with their --test-labels maps. Pairs whose sizes
    differ are left out and reported (exit status 1).

    \b
    Examples:
      csaws-prepare export monai maps CsawS -o datalist.json
      csaws-prepare export monai maps CsawS -o datalist.json --test-labels annotator_1
    In Python:
      monai.data.load_decathlon_datalist("datalist.json", data_list_key="training")
    """
    from ..review.export import export_monai

    result = export_monai(maps, images, out, base_dir=base_dir, test_labels=test_labels, splits=splits_file,
                          train_split=train_split, repetition=repetition, seed=seed)
    for w in result.warnings:
        click.echo(f"warning: {cli_text(w, ('test_labels',))}", err=True)
    for p in result.problems:
        click.echo(f"error: {p}", err=True)
    click.echo(result.summary())
    click.echo(f"written: {result.path}")
    sys.exit(result.exit_code)
