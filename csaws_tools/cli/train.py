"""``csaws-prepare train`` / ``csaws-train``: rerun the with/without complementary-label experiment."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

import click

from ._common import handle_errors, int_list
from .train_predict import predict
from .train_prepare_dataset import (
    DATASET_DEFAULTS,
    DATASETS,
    LAYOUTS,
    dataset_options,
    prepare_dataset_cmd,
    run_prepare_dataset,
)

PROTOCOL_DEFAULTS = {
    # SUL: the authors' code (src/trainer.py, src/datasets.py); earlier: this tool's previous rule
    "paper": {"selection": "sul", "val_loss": "cancer", "augment": "paper", "schedule": "sul"},
    "earlier": {"selection": "smoothed-loss", "val_loss": "all", "augment": "independent", "schedule": "constant"},
}


def training_options(func: Callable) -> Callable:
    """Options of one training run (defaults: what the authors' code does, protocol section 5)."""
    opts = [
        click.option("--protocol", type=click.Choice(sorted(PROTOCOL_DEFAULTS)), default="paper", show_default=True,
                     help="paper: as the authors' code (SUL) runs it - cancer-only validation loss, SUL's "
                          "checkpoint rule, SUL's flips/rotations/brightness-contrast; earlier: this tool's "
                          "previous choices. --selection, --val-loss, --augment-draw override single items."),
        click.option("--epochs", type=click.FloatRange(min=0, min_open=True), default=100.0, show_default=True,
                     help="Passes over the run's crops: iterations = ceil(epochs x crops / batch) (SUL: 100)."),
        click.option("--iterations", type=click.IntRange(min=1), default=None,
                     help="Train for exactly this many iterations (batches) instead of --epochs."),
        click.option("--batch-size", type=click.IntRange(min=1), default=12, show_default=True, help="Crops per batch."),
        click.option("--lr", type=float, default=1e-4, show_default=True, help="Adam learning rate."),
        click.option("--weight-decay", type=float, default=1e-6, show_default=True, help="Adam weight decay."),
        click.option("--schedule", type=click.Choice(["sul", "constant", "poly", "cosine"]), default=None,
                     help="Learning-rate schedule (default: the protocol's). sul: as the authors' code, x0.1 after "
                          "iteration 99,900 and again after 199,900 (constant for shorter runs; --protocol "
                          "paper); constant (--protocol earlier); poly (power 0.9); cosine."),
        click.option("--warmup", type=click.IntRange(min=0), default=0, show_default=True,
                     help="Linear learning-rate warmup iterations."),
        click.option("--val-every", type=click.IntRange(min=1), default=100, show_default=True,
                     help="Validate, select and checkpoint every this many iterations (SUL: 100)."),
        click.option("--val-max-tiles", "--val-max-crops", "val_max_crops", type=click.IntRange(min=1), default=None,
                     help="Validate on this many evenly spaced validation tiles (default: all; a cheap "
                          "subsample for CPU runs)."),
        click.option("--val-loss", type=click.Choice(["cancer", "all"]), default=None,
                     help="Validation loss: cross-entropy of the cancer pixels only (paper) or of all pixels."),
        click.option("--selection", type=click.Choice(["sul", "smoothed-loss"]), default=None,
                     help="Checkpoint rule: sul (new IoU record and loss <= best 5-point moving average; paper) "
                          "or smoothed-loss (best IoU while the moving average is within 5%% of its minimum)."),
        click.option("--eval-batch-size", type=click.IntRange(min=1), default=16, show_default=True,
                     help="Tiles per batch at validation and test time."),
        click.option("--output-stride", type=click.Choice(["8", "16"]), default="8", show_default=True,
                     help="DeepLabv3 output stride (8: layers 3-4 dilated, as SUL; 16: layer 4 dilated; faster)."),
        click.option("--aux-loss", is_flag=True, help="Add torchvision's auxiliary FCN head on layer 3 (loss weight 0.5)."),
        click.option("--pretrained", default="imagenet", show_default=True,
                     help="Initialisation: imagenet (torchvision's V1 ResNet-50 weights resnet50-19c8e357.pth "
                          "from $TORCH_HOME/hub/checkpoints, downloaded there when online), none (from "
                          "scratch), or a local ResNet-50 / DeepLabv3 state dict file."),
        click.option("--crop", type=click.IntRange(min=8), default=448, show_default=True,
                     help="Random crop size taken from each training crop (at most the crops' size)."),
        click.option("--elastic-p", type=click.FloatRange(0, 1), default=0.5, show_default=True,
                     help="Probability of the elastic deformation per crop (SUL: 0.5)."),
        click.option("--elastic-sigma", type=click.FloatRange(min=0, min_open=True), default=512.0,
                     show_default=True,
                     help="Smoothing of the elastic field in pixels (alpha 256). 512 as SUL's code (a sub-pixel "
                          "shift); 2 is the paper's literal number and tears lesions apart."),
        click.option("--augment-draw", type=click.Choice(["paper", "independent"]), default=None,
                     help="How flips, rotations and brightness/contrast are drawn (paper: as SUL's albumentations "
                          "pipeline; independent: each flip p 0.5, contrast about the crop mean)."),
        click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Base random seed."),
        click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
                     help="auto: CUDA when available."),
        click.option("--no-amp", is_flag=True, help="Train in float32 on CUDA too (default: bf16 autocast on CUDA)."),
        click.option("--no-channels-last", is_flag=True, help="Keep the NCHW memory format on CUDA."),
        click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads for torch."),
        click.option("--no-progress", is_flag=True,
                     help="No progress bar / progress lines (lines every 30 s when stderr is not a terminal; "
                          "CSAWS_PROGRESS_INTERVAL sets the seconds)."),
        click.option("--overwrite", is_flag=True, help="Discard runs made with other settings instead of stopping."),
    ]
    for opt in reversed(opts):
        func = opt(func)
    return func


def grid_options(func: Callable) -> Callable:
    """--sizes, --repetitions and --jobs of a grid (``run`` and ``study``)."""
    opts = [
        click.option("--sizes", default=None, callback=int_list,
                     help="Training-set sizes N to run, comma-separated (default: every size in the splits file, "
                          "else 25,50,100,263; leave-one-out and num-labels run at one N: default 100 or the "
                          "largest prepared size below it)."),
        click.option("--repetitions", type=click.IntRange(min=1), default=None,
                     help="Runs per N and setting (default: every repetition in the splits file, else 5)."),
        click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
                     help="Runs trained at once, each in its own process with --threads / JOBS torch threads "
                          "(default threads: all cores). On a CPU, 2 one-thread runs finish sooner than the "
                          "same runs one after the other with 2 threads."),
    ]
    for opt in reversed(opts):
        func = opt(func)
    return func


def _train_config(train_file: str, val_file: str, kw: dict):
    from ..train.augment import AugmentConfig
    from ..train.loop import TrainConfig

    proto = PROTOCOL_DEFAULTS[kw["protocol"]]
    return TrainConfig(
        train_file=str(train_file), val_file=str(val_file), iterations=kw["iterations"],
        epochs=None if kw["iterations"] is not None else kw["epochs"],
        batch_size=kw["batch_size"], lr=kw["lr"], weight_decay=kw["weight_decay"], schedule=kw["schedule"] or proto["schedule"],
        warmup=kw["warmup"], val_every=kw["val_every"], val_max_crops=kw["val_max_crops"],
        val_loss=kw["val_loss"] or proto["val_loss"], selection=kw["selection"] or proto["selection"],
        eval_batch_size=kw["eval_batch_size"], output_stride=int(kw["output_stride"]), aux_loss=kw["aux_loss"],
        pretrained=kw["pretrained"], seed=kw["seed"], device=kw["device"], amp=not kw["no_amp"],
        channels_last=not kw["no_channels_last"], threads=kw["threads"], progress=not kw["no_progress"],
        augment=AugmentConfig(crop=kw["crop"], elastic_p=kw["elastic_p"], elastic_sigma=kw["elastic_sigma"],
                              protocol=kw["augment_draw"] or proto["augment"]),
        target=kw.get("target"),
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def train() -> None:
    """Rerun the CSAW-S with/without complementary-label experiment and the public-dataset
    studies (training needs the [train] extra; 'prepare --dataset' does not).

    \b
    CSAW-S:
      csaws-train prepare IMAGES MAPS -o INPUTS
          # INPUTS: splits.json, train_rep<r>.h5, val_tiles.h5, val.h5, test_tiles.h5
      csaws-train run INPUTS --test-maps MAPS/test -o EXPERIMENT
    Cityscapes / PASCAL VOC / your own folders (paper section 5):
      csaws-train prepare --dataset cityscapes ROOT -o INPUTS   # splits.json, train/val/test.h5
      csaws-train run INPUTS -o EXPERIMENT                      # with/without, figure5.png
      csaws-train study leave-one-out INPUTS -o EXPERIMENT      # EXPERIMENT/leave-one-out/figure7.png
    EXPERIMENT gets results.parquet, summary.csv/.md and the figure. Reruns skip finished
    runs; an interrupted run resumes from its last checkpoint.
    """


@train.command("prepare")
@click.argument("images", metavar="IMAGES|ROOT", type=click.Path(exists=True, file_okay=False))
@click.argument("maps", required=False, type=click.Path(exists=True, file_okay=False))
@click.option("--dataset", type=click.Choice(list(DATASETS)), default=None,
              help="Prepare a public dataset (or your own folders) under ROOT instead of CSAW-S crops: "
                   "the paper's split, images resized to --size, N-image subsets (see below).")
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--patch-size", type=click.IntRange(min=8), default=512, show_default=True,
              help="CSAW-S: crop/tile size.")
@click.option("--per-class", type=click.IntRange(min=1), default=10, show_default=True,
              help="CSAW-S: crops centred on each class present in an image.")
@click.option("--sizes", default=None, callback=int_list,
              help="Training-set sizes N, comma-separated. CSAW-S: narrows the release's subsets, or the sizes "
                   "of sampled ones (default: the release's, else 25,50,100,263). --dataset: default the "
                   "paper's (cityscapes 25,50,100,200,350,500,1000,2475; voc 25,...,1000,1464).")
@click.option("--repetitions", type=click.IntRange(min=1), default=None,
              help="Subsets per size (default: the release's, else 5).")
@click.option("--subsets", type=click.Choice(["auto", "release", "own"]), default="auto", show_default=True,
              help="CSAW-S: auto: the release's training_random_splits.json under IMAGES when present, else "
                   "seeded patient-level subsets; release: require the release's file; own: always sample.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of splits and crops (--dataset: of the validation draw and the training orders).")
@click.option("--val-patients", default=None,
              help="CSAW-S: comma-separated validation patient ids (default: protocol rule).")
@dataset_options
@click.option("--workers", "-j", type=click.IntRange(min=1), default=None, help="Worker processes.")
@click.option("--no-progress", is_flag=True, help="Do not show progress bars.")
@click.pass_context
@handle_errors
def prepare_cmd(ctx, images, maps, dataset, out, patch_size, per_class, sizes, repetitions, subsets, seed,
                val_patients, workers, no_progress, **dataset_kw):
    """CSAW-S: write splits.json, train_rep<r>.h5, val_tiles.h5, val.h5 and test_tiles.h5 from
    IMAGES and MAPS. With --dataset: splits.json, train.h5, val.h5 and test.h5 of the dataset
    under ROOT (no torch needed).

    \b
    CSAW-S outputs:
    splits.json       validation patients and the training subsets (source recorded)
    train_rep<r>.h5   class-centred crops of repetition r's training images
    val_tiles.h5      tiles of the whole validation images (all-background tiles dropped)
    val.h5            class-centred validation crops (for --protocol earlier)
    test_tiles.h5     tiles of the test images

    --dataset outputs: splits.json (the paper's train/val/test split, the training order of
    each repetition and the N-image subsets), train.h5, val.h5, test.h5 (every image resized to
    SIZE x SIZE; label maps keep the dataset's ids, void stays void) and their manifests.
    Reruns keep up-to-date files; exit status 1 when an image failed.

    \b
    Examples:
      csaws-train prepare IMAGES MAPS -o INPUTS
      csaws-prepare sample --kind cityscapes CS
      csaws-train prepare --dataset cityscapes CS -o INPUTS --val-size 4 --sizes 4,8,14 --coarse
    """
    from click.core import ParameterSource

    def given(names) -> list[str]:
        return ["--" + n.replace("_", "-") for n in names
                if ctx.get_parameter_source(n) not in (ParameterSource.DEFAULT, None)]

    if dataset is not None:
        wrong = given(["patch_size", "per_class", "subsets", "val_patients"])
        if wrong:
            raise click.UsageError(f"{', '.join(wrong)} apply to CSAW-S crops, not to --dataset")
        if maps is not None:
            raise click.UsageError(f"--dataset {dataset} takes one folder, ROOT (got a second one: {maps})")
        run_prepare_dataset(dataset, images, out, sizes=sizes, repetitions=repetitions, seed=seed, workers=workers,
                            no_progress=no_progress, **dataset_kw)
        return
    wrong = given([n for n in DATASET_DEFAULTS])
    if wrong:
        raise click.UsageError(f"{', '.join(wrong)} apply with --dataset only")
    if maps is None:
        raise click.UsageError("CSAW-S crops need IMAGES and MAPS (or give --dataset NAME ROOT)")
    from ..train.prepare import prepare_inputs

    vp = [p.strip() for p in val_patients.split(",")] if val_patients else None
    p = prepare_inputs(images, maps, out, patch_size=patch_size, per_class=per_class, sizes=sizes,
                       repetitions=repetitions, seed=seed, val_patients=vp, workers=workers,
                       progress=not no_progress, subsets=subsets)
    for k, v in p.__dict__.items():
        click.echo(f"{k}: {v}")


prepare_cmd.help = inspect.cleandoc(prepare_cmd.help or "") + "\n\n" + LAYOUTS


def input_options(func: Callable) -> Callable:
    """Where a grid's files are (``run`` and ``study``): defaults from INPUTS."""
    opts = [
        click.option("-o", "--out", required=True, type=click.Path(file_okay=False), help="Experiment folder."),
        click.option("--train-file", default=None,
                     help="Training crops or images; {rep} in the name stands for the repetition, one file each "
                          "(default: INPUTS/train_rep{rep}.h5 as written by 'train prepare', else INPUTS/train.h5)."),
        click.option("--val-file", type=click.Path(exists=True, dir_okay=False), default=None,
                     help="Validation tiles (default: INPUTS/val_tiles.h5; INPUTS/val.h5 crops with --protocol "
                          "earlier, and the validation images of 'prepare --dataset')."),
        click.option("--test-tiles", type=click.Path(exists=True, dir_okay=False), default=None,
                     help="Test tiles (default: INPUTS/test_tiles.h5; INPUTS/test.h5, the test images of "
                          "'prepare --dataset')."),
        click.option("--test-maps", type=click.Path(exists=True, file_okay=False), default=None,
                     help="CSAW-S: folder with annotator_<k>/ and consensus/ test label maps (merge-masks' "
                          "MAPS/test); required there. The public datasets' test labels are in test.h5."),
        click.option("--splits", type=click.Path(exists=True, dir_okay=False), default=None,
                     help="Splits file with the N-image subsets (default: INPUTS/splits.json if present, "
                          "else sampled at the patient level)."),
        click.option("--target", default=None,
                     help="Public datasets: the expert class by name (default: the one INPUTS was prepared "
                          "for, person); NAME=A+B merges classes, e.g. human=person+rider."),
        click.option("--keep-last", is_flag=True, help="Keep each finished run's last.pt (optimiser state; large)."),
    ]
    for opt in reversed(opts):
        func = opt(func)
    return func


def _experiment(inputs, train_file, val_file, test_tiles, test_maps, splits, sizes, repetitions, kw, *,
                with_scheme: str = "all", without_scheme: str = "binary", keep_last: bool = False):
    """The ExperimentConfig of ``run`` / ``study`` from INPUTS and the options (one-line errors for missing files)."""
    from ..errors import SettingsError
    from ..train.data import is_image_set
    from ..train.experiment import ExperimentConfig, grid_from_splits

    base = Path(inputs) if inputs else None

    def pick(value, name, option):
        if value:
            return value
        if base is None or not (base / name).is_file():
            where = f"{base / name} not found" if base is not None else "no INPUTS folder given"
            raise SettingsError(f"give {option} ({where})")
        return str(base / name)

    if not train_file and base is not None and (base / "train_rep0.h5").is_file():
        train_file = str(base / "train_rep{rep}.h5")  # one crop file per repetition (train prepare)
    train_file = pick(train_file, "train.h5", "--train-file")
    if splits is None and base is not None and (base / "splits.json").is_file():
        splits = str(base / "splits.json")
    sizes, repetitions = grid_from_splits(splits, sizes, repetitions)
    for rep in range(repetitions):
        path = train_file.format(rep=rep) if "{rep}" in train_file else train_file
        if not Path(path).is_file():
            raise SettingsError(f"--train-file {path}: training crops not found (repetition {rep})")
    images = is_image_set(train_file.format(rep=0) if "{rep}" in train_file else train_file)
    if images:  # prepare --dataset: val.h5 and test.h5 hold whole resized images
        val_file = pick(val_file, "val.h5", "--val-file")
        tiles = pick(test_tiles, "test.h5", "--test-tiles")
        if test_maps:
            raise SettingsError("--test-maps applies to CSAW-S; the test labels of these inputs are in test.h5")
    else:
        if kw.get("target"):
            raise SettingsError("--target applies to the inputs of 'prepare --dataset' (CSAW-S: cancer)")
        val_name = "val.h5" if kw["protocol"] == "earlier" else "val_tiles.h5"
        val_file = pick(val_file, val_name, "--val-file")
        tiles = pick(test_tiles, "test_tiles.h5", "--test-tiles")
        if not test_maps:
            raise SettingsError("give --test-maps (the CSAW-S test label maps, merge-masks' MAPS/test)")
    return ExperimentConfig(train=_train_config(train_file, val_file, kw), test_tiles=tiles, test_maps=test_maps,
                            splits=splits, sizes=sizes, repetitions=repetitions, with_scheme=with_scheme,
                            without_scheme=without_scheme, keep_last=keep_last, jobs=kw.get("jobs") or 1)


@train.command("run")
@click.argument("inputs", type=click.Path(exists=True, file_okay=False), required=False)
@input_options
@grid_options
@click.option("--with-scheme", default="all", show_default=True,
              help="Label scheme of the 'with' setting: all, leave-one-out:<class>, random:<k>:<seed>, "
                   "keep:<a>,<b>, merge:<a>+<b>=<name>.")
@click.option("--without-scheme", default="binary", show_default=True, help="Label scheme of the 'without' setting.")
@training_options
@handle_errors
def run_cmd(inputs, out, train_file, val_file, test_tiles, test_maps, splits, sizes, repetitions, with_scheme,
            without_scheme, keep_last, **kw):
    """Train and evaluate the with/without grid; write results.parquet, summary and the figure under OUT.

    Sizes, repetitions and files come from what 'train prepare' wrote into INPUTS (CSAW-S:
    splits.json, train_rep<r>.h5, val_tiles.h5, test_tiles.h5; 'prepare --dataset': splits.json,
    train.h5, val.h5, test.h5); --sizes and --repetitions narrow them.

    \b
    On 'prepare --dataset' inputs (paper section 5.2): colour input (3 channels; ImageNet
    initialisation keeps all three of the first convolution), the dataset's classes, the target
    class of INPUTS (--target), void (255) ignored in loss and IoU, no rotation and no elastic
    deformation, test IoU on the resized test images. Figure: figure1.png (CSAW-S),
    figure5.png (Cityscapes), figure6.png (VOC), figure_with_without.png (folders).
    """
    from ..train.experiment import figure_name, inputs_of, run_grid

    cfg = _experiment(inputs, train_file, val_file, test_tiles, test_maps, splits, sizes, repetitions, kw,
                      with_scheme=with_scheme, without_scheme=without_scheme, keep_last=keep_last)
    run_grid(cfg, out, log=click.echo, overwrite=kw["overwrite"])
    click.echo((Path(out) / "summary.md").read_text())
    click.echo(f"results: {Path(out) / 'results.parquet'}\nfigure: {Path(out) / figure_name(inputs_of(cfg).dataset)}")


@train.command("study")
@click.argument("study", type=click.Choice(["leave-one-out", "num-labels", "coarse", "domain-shift", "merge"]))
@click.argument("inputs", type=click.Path(exists=True, file_okay=False), required=False)
@input_options
@grid_options
@click.option("--classes", default=None,
              help="leave-one-out: the complementary classes to leave out, comma-separated (default: every one).")
@click.option("--ks", default="0,1,2,4,8,16,32", show_default=True, callback=int_list,
              help="num-labels: numbers of complementary classes k (capped at the classes available; the "
                   "full count is added when the list goes beyond it).")
@click.option("--merge-target", default="human=person+rider", show_default=True,
              help="merge: the merged target, NAME=A+B.")
@training_options
@handle_errors
def study_cmd(study, inputs, out, train_file, val_file, test_tiles, test_maps, splits, sizes, repetitions,
              keep_last, classes, ks, merge_target, **kw):
    """Run one of the paper's studies of which complementary labels help on the inputs of
    'csaws-train prepare --dataset' (paper section 5.3 and appendix); resumable like 'run'.

    \b
    STUDY          runs                                              figure
    leave-one-out  at one N: all labels, and all but one per class    figure7.png (sorted bars,
                   (that class merged into background)               relative change of target IoU)
    num-labels     at one N: k random complementary classes          figure8.png (IoU vs k)
                   (k = 0,1,2,4,8,16,32), drawn per repetition
    coarse         over N: with, with gtCoarse complementary labels  figure5_coarse.png
                   (person fine), without; needs 'prepare --coarse'
    domain-shift   over N: with/without on city-ordered subsets;     figure_domain_shift.png
                   needs 'prepare --ordering by-city'
    merge          over N: with/without, target human=person+rider  figure13.png

    OUT gets runs/ and OUT/STUDY/ with results.parquet, summary.parquet, summary.md and the
    figure. The 'with' and 'without' runs of leave-one-out and num-labels are those of
    'csaws-train run': in the same OUT they are trained once.

    \b
    Example (the synthetic Cityscapes sample, a few CPU minutes):
      csaws-prepare sample --kind cityscapes CS
      csaws-train prepare --dataset cityscapes CS -o IN --val-size 4 --sizes 4 --repetitions 2 --size 64
      csaws-train study leave-one-out IN -o EXP --classes rider,car --iterations 2 --pretrained none \\
          --output-stride 16 --batch-size 2 --device cpu
    """
    from ..errors import SettingsError
    from ..train.studies import FIGURES, StudyConfig, run_study

    n = None
    if study in ("leave-one-out", "num-labels") and sizes:
        if len(sizes) > 1:
            raise SettingsError(f"the {study} study runs at one N; give one --sizes value")
        n = int(sizes[0])
        sizes = None
    if classes and study != "leave-one-out":
        raise SettingsError("--classes applies to the leave-one-out study")
    cfg = _experiment(inputs, train_file, val_file, test_tiles, test_maps, splits, sizes, repetitions, kw,
                      keep_last=keep_last)
    sc = StudyConfig(cfg, study, n=n, ks=ks, classes=[c.strip() for c in classes.split(",") if c.strip()]
                     if classes else None, merge_target=merge_target)
    run_study(sc, out, log=click.echo, overwrite=kw["overwrite"])
    tables = Path(out) / study
    click.echo((tables / "summary.md").read_text())
    click.echo(f"results: {tables / 'results.parquet'}\nfigure: {tables / FIGURES[study]}")


@train.command("single")
@click.option("--train-file", type=click.Path(exists=True, dir_okay=False), required=True, help="Training crops.")
@click.option("--val-file", type=click.Path(exists=True, dir_okay=False), required=True, help="Validation crops.")
@click.option("--scheme", default="all", show_default=True, help="Label scheme (see merge-masks --labels).")
@click.option("--images", default=None, help="Comma-separated image (or patient) ids to train on (default: all).")
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False), help="Run folder.")
@training_options
@handle_errors
def single_cmd(train_file, val_file, scheme, images, out, **kw):
    """Train one run (resumes from OUT/last.pt when interrupted)."""
    from dataclasses import replace

    from ..train.loop import train_run

    cfg = replace(_train_config(train_file, val_file, kw), scheme=scheme,
                  image_ids=[i.strip() for i in images.split(",")] if images else None)
    m = train_run(cfg, out, log=click.echo, overwrite=kw["overwrite"])
    click.echo(f"{m['status']}: selected iteration {m.get('selected_iteration')}, "
               f"validation cancer IoU {m.get('selected_val_iou')}")


@train.command("summarize")
@click.argument("experiment", type=click.Path(exists=True, file_okay=False))
@click.option("--against", default="consensus", show_default=True,
              help="Reference plotted in the figure (CSAW-S; the public datasets have one: test).")
@handle_errors
def summarize_cmd(experiment, against):
    """Rewrite the summary and the figure from EXPERIMENT/results.parquet: summary.csv/.md and
    figure1.png (figure5.png Cityscapes, figure6.png VOC) of 'run'; for a study give its
    folder, EXPERIMENT/STUDY (summary.parquet/.md and its figure)."""
    import pandas as pd

    from ..atomic import atomic_path, write_text_atomic
    from ..train.experiment import (
        DATASET_TITLES,
        figure_name,
        plot_figure1,
        summarise,
        summary_markdown,
    )

    exp = Path(experiment)
    res = pd.read_parquet(exp / "results.parquet")
    dataset = str(res["dataset"].iloc[0]) if "dataset" in res and len(res) else "csaws"
    if "study" in res and len(res):
        from ..train.studies import FIGURES, plot_study, study_markdown, summarise_study

        study = str(res["study"].iloc[0])
        table = summarise_study(res, study)
        with atomic_path(exp / "summary.parquet") as tmp:
            table.to_parquet(tmp, index=False)
        title = DATASET_TITLES.get(dataset, dataset)
        md = study_markdown(table, study)
        write_text_atomic(exp / "summary.md", f"# {study} study, {title}\n\n{md}\n")
        plot_study(res, table, study, exp / FIGURES[study], title)
        click.echo(md)
        return
    table = summarise(res)
    with atomic_path(exp / "summary.csv") as tmp:
        table.to_csv(tmp, index=False)
    md = summary_markdown(table)
    write_text_atomic(exp / "summary.md", md + "\n")
    title = None
    if dataset != "csaws":
        target = str(res["target"].iloc[0]) if "target" in res else "target"
        title = f"{DATASET_TITLES.get(dataset, dataset)}, {target}: complementary labels"
    plot_figure1(res, exp / figure_name(dataset), against, title=title)
    click.echo(md)


train.add_command(predict)
train.add_command(prepare_dataset_cmd)


def main(argv: list[str] | None = None) -> None:
    """Console script ``csaws-train`` (the same commands as ``csaws-prepare train``)."""
    train.main(args=argv, prog_name="csaws-train")

