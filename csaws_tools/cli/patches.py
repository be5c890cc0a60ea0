"""``csaws-prepare splits`` and ``csaws-prepare patches``."""

from __future__ import annotations

import warnings

import click

from .. import defaults
from ._common import batch_options, finish, handle_errors, int_list


@click.command("splits")
@click.argument("root", type=click.Path(exists=True, file_okay=False))
@click.option("-o", "--out", "out", required=True, type=click.Path(dir_okay=False),
              help="The splits JSON file to write.")
@click.option("--val-patients", default=None, metavar="PID,...",
              help="Validation patients (default: those of the protocol's 20 suggested patients that are present, "
                   "otherwise a seeded random 20/150 of the patients).")
@click.option("--sizes", default=",".join(map(str, defaults.SUBSET_SIZES)), show_default=True, callback=int_list, metavar="N,...",
              help="Training-subset sizes in images. A size above the number of training images is an error: "
                   "on a small dataset pass smaller sizes, e.g. --sizes 4,8.")
@click.option("--repetitions", default=defaults.REPETITIONS, show_default=True, type=click.IntRange(min=1),
              help="Subsets drawn per size.")
@click.option("--seed", default=defaults.SEED, show_default=True, type=click.IntRange(min=0),
              help="Seed of the validation draw and of every repetition (derived seeds are written to the JSON).")
@click.option("--release-subsets", is_flag=True,
              help="Take the training subsets from the release's training_random_splits.json under ROOT "
                   "instead of drawing them (--sizes and --repetitions are then ignored).")
@handle_errors
def splits(root, out, val_patients, sizes, repetitions, seed, release_subsets):
    """Write patient-level train/validation splits and training subsets of the images under ROOT.

    \b
    ROOT is searched recursively for images (*.png; class masks <image>_<class>.png are passed over);
    images under a folder named test_data or test form the test split. The patient of an image id
    <pid>_<n> is <pid>. Every subset of N images is made of whole training patients: patients are
    taken in a seeded random order and each is added when all its images still fit within N, until
    N images are reached.

    \b
    Examples:
      csaws-prepare splits CsawS -o splits.json --sizes 2,4 --repetitions 3
      csaws-prepare splits CsawS -o release-splits.json --release-subsets

    \b
    The default --sizes (25,50,100,263) are the paper's and need the full release;
    on the small sample (7 training images) use --sizes 2,4.
    """
    from ..splits import check_output, make_splits, save_splits
    from ..text import counted

    check_output(out, root)
    vp = None if val_patients is None else [p.strip() for p in val_patients.split(",") if p.strip()]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = make_splits(root, val_patients=vp, sizes=sizes, repetitions=repetitions, seed=seed,
                           release_subsets=release_subsets)
    for w in caught:
        click.echo(f"warning: {w.message}", err=True)
    save_splits(data, out)
    click.echo(
        f"train: {counted(len(data['train']['patients']), 'patient')}, "
        f"{counted(len(data['train']['images']), 'image')}; "
        f"val: {counted(len(data['val']['patients']), 'patient')}, {counted(len(data['val']['images']), 'image')} "
        f"({data['validation']['rule']}); test: {counted(len(data['test']['images']), 'image')}"
    )
    for n, reps in data["subsets"].items():
        counts = sorted({r["n_images"] for r in reps.values()})
        click.echo(f"subset {n}: {counted(len(reps), 'repetition')} of {'/'.join(map(str, counts))} "
                   f"image{'' if counts == [1] else 's'}")
    click.echo(f"written: {out}")


@click.command("patches")
@click.option("--images", required=True, type=click.Path(exists=True, file_okay=False),
              help="Folder of 8-bit images <image_id>.png, searched recursively (class masks "
                   "<image>_<class>.png beside them are passed over; RGB images use their first channel).")
@click.option("--masks", required=True, type=click.Path(exists=True, file_okay=False),
              help="Folder of label maps <image_id>.png in standard ids (merge-masks output, e.g. MAPS/trainval).")
@click.option("-o", "--out", "out", required=True, type=click.Path(dir_okay=False),
              help="The HDF5 file to write (.h5); a manifest <name>.manifest.parquet is written beside it.")
@click.option("--size", default=defaults.PATCH_SIZE, show_default=True, type=click.IntRange(min=1), help="Patch side in pixels.")
@click.option("--per-class", default=defaults.PER_CLASS, show_default=True, type=click.IntRange(min=1),
              help="Crop centres drawn per class present in an image.")
@click.option("--classes", default=None, metavar="CLASS,...",
              help="Classes that get centres, by name or standard id (default: all 12, as the paper).")
@click.option("--seed", default=defaults.SEED, show_default=True, type=click.IntRange(min=0),
              help="Seed of the centre draws (one per repetition gives the paper's 5 crop sets).")
@click.option("--tiles", is_flag=True,
              help="Cut every image into non-overlapping tiles instead (test set); positions are recorded.")
@click.option("--tile-drop", type=click.Choice(list(defaults.TILE_DROPS)), default=defaults.TILE_DROP,
              show_default=True,
              help="Tiles dropped with --tiles: 'black' drops tiles whose image is all black (the evaluation "
                   "tiles: false positives anywhere in the breast are counted); 'background' drops tiles whose "
                   "label map is all background (on consensus maps only tiles with cancer remain); 'none' keeps all.")
@click.option("--splits", "splits_file", default=None, type=click.Path(exists=True, dir_okay=False),
              help="A splits file (csaws-prepare splits) to pick the images from; needs --split.")
@click.option("--split", default=None, metavar="NAME",
              help="train, val, trainval, test, or a subset size N of the splits file.")
@click.option("--repetition", default=None, type=click.IntRange(min=0),
              help="Repetition of subset N (default 0); recorded in the file.")
@click.option("--layout", type=click.Choice(list(defaults.LAYOUTS)), default=defaults.LAYOUT, show_default=True,
              help="crops: every crop stored; index: every image and label map stored once (crop-sized "
                   "chunks) plus the crop positions, crops cut when read (several times smaller).")
@click.option("--compression", type=click.Choice(list(defaults.COMPRESSIONS)), default=defaults.COMPRESSION,
              show_default=True,
              help="HDF5 compression. gzip and lzf open with plain h5py; zstd needs hdf5plugin to read and write.")
@click.option("--level", default=None, type=int,
              help="Compression level (gzip 0-9, default 1; zstd 1-22, default 3).")
@batch_options
@handle_errors
def patches(images, masks, out, size, per_class, classes, seed, tiles, tile_drop, splits_file, split,
            repetition, layout, compression, level, run):
    """Cut class-centred crops (or test tiles) of every image and its label map into one HDF5 file.

    \b
    For every image and every class present, --per-class centres are drawn uniformly among that
    class's pixels and a --size square crop is cut around each, shifted to stay inside the image
    (an image smaller than the crop is padded with background; top/left are then negative).
    Masks keep all 12 standard classes: label schemes (with/without complementary labels) remap
    them when read (csaws_tools.reader.PatchReader). Layout: docs/patches.md.

    \b
    Examples:
      csaws-prepare patches --images CsawS/anonymized_dataset --masks maps/trainval -o rep0.h5 --seed 0
      csaws-prepare patches --images CsawS --masks maps/trainval --splits splits.json --split 4 \\
          --repetition 2 --seed 2 -o n4-rep2.h5
      csaws-prepare patches --images CsawS/test_data --masks maps/test/consensus --tiles -o test.h5
    """
    from ..errors import CsawsError
    from ..patches.stage import write_patches

    if run.shard is not None:  # one file: a job array would write N copies of it
        raise CsawsError("--shard does not apply to patches: it writes one file")
    if splits_file is None and (split is not None or repetition is not None):
        raise CsawsError("--split and --repetition need --splits FILE")
    result = write_patches(images, masks, out, size=size, per_class=per_class, classes=classes, seed=seed,
                           tiles=tiles, tile_drop=tile_drop, splits=splits_file, split=split,
                           repetition=repetition, layout=layout, compression=compression, level=level,
                           run=run)
    if result.up_to_date:
        click.echo(f"{out} is up to date (same settings); pass --overwrite to redo it")
    elif result.output is not None:
        click.echo(result.statistics_table())
        padded = sum(1 for r in result.rows if r.get("padded"))
        if padded:
            click.echo(f"{padded} image(s) smaller than the patch were padded with background")
        click.echo(f"{result.n_patches} patches written to {result.output}")
    finish(result)
