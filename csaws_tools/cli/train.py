"""``csaws-prepare train`` / ``csaws-train``: rerun the with/without complementary-label experiment."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click

from ._common import handle_errors, int_list
from .train_predict import predict
from .train_prepare_dataset import prepare_dataset_cmd

PROTOCOL_DEFAULTS = {
    # SUL: the authors' code (src/trainer.py, src/datasets.py); earlier: this tool's previous rule
    "paper": {"selection": "sul", "val_loss": "cancer", "augment": "paper"},
    "earlier": {"selection": "smoothed-loss", "val_loss": "all", "augment": "independent"},
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
        click.option("--schedule", type=click.Choice(["constant", "poly", "cosine"]), default="constant",
                     show_default=True, help="Learning-rate schedule over the run (poly: power 0.9)."),
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


def _train_config(train_file: str, val_file: str, kw: dict):
    from ..train.augment import AugmentConfig
    from ..train.loop import TrainConfig

    proto = PROTOCOL_DEFAULTS[kw["protocol"]]
    return TrainConfig(
        train_file=str(train_file), val_file=str(val_file), iterations=kw["iterations"],
        epochs=None if kw["iterations"] is not None else kw["epochs"],
        batch_size=kw["batch_size"], lr=kw["lr"], weight_decay=kw["weight_decay"], schedule=kw["schedule"],
        warmup=kw["warmup"], val_every=kw["val_every"], val_max_crops=kw["val_max_crops"],
        val_loss=kw["val_loss"] or proto["val_loss"], selection=kw["selection"] or proto["selection"],
        eval_batch_size=kw["eval_batch_size"], output_stride=int(kw["output_stride"]), aux_loss=kw["aux_loss"],
        pretrained=kw["pretrained"], seed=kw["seed"], device=kw["device"], amp=not kw["no_amp"],
        channels_last=not kw["no_channels_last"], threads=kw["threads"], progress=not kw["no_progress"],
        augment=AugmentConfig(crop=kw["crop"], elastic_p=kw["elastic_p"], elastic_sigma=kw["elastic_sigma"],
                              protocol=kw["augment_draw"] or proto["augment"]),
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def train() -> None:
    """Rerun the CSAW-S with/without complementary-label experiment (needs the [train] extra).

    \b
    Typical use:
      csaws-prepare train prepare IMAGES MAPS -o INPUTS
          # INPUTS: splits.json, train_rep<r>.h5, val_tiles.h5, val.h5, test_tiles.h5
      csaws-prepare train run INPUTS --test-maps MAPS/test -o EXPERIMENT
    EXPERIMENT gets results.parquet, summary.csv/.md and figure1.png. Reruns skip finished
    runs; an interrupted run resumes from its last checkpoint.
    """


@train.command("prepare")
@click.argument("images", type=click.Path(exists=True, file_okay=False))
@click.argument("maps", type=click.Path(exists=True, file_okay=False))
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--patch-size", type=click.IntRange(min=8), default=512, show_default=True, help="Crop/tile size.")
@click.option("--per-class", type=click.IntRange(min=1), default=10, show_default=True,
              help="Crops centred on each class present in an image.")
@click.option("--sizes", default=None, callback=int_list,
              help="Training-set sizes N, comma-separated: narrows the release's subsets, or the sizes of "
                   "sampled ones (default: the release's, else 25,50,100,263).")
@click.option("--repetitions", type=click.IntRange(min=1), default=None,
              help="Subsets per size (default: the release's, else 5).")
@click.option("--subsets", type=click.Choice(["auto", "release", "own"]), default="auto", show_default=True,
              help="auto: the release's training_random_splits.json under IMAGES when present, else seeded "
                   "patient-level subsets; release: require the release's file; own: always sample.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of splits and crops.")
@click.option("--val-patients", default=None, help="Comma-separated validation patient ids (default: protocol rule).")
@click.option("--workers", "-j", type=click.IntRange(min=1), default=None, help="Worker processes.")
@click.option("--no-progress", is_flag=True, help="Do not show progress bars.")
@handle_errors
def prepare_cmd(images, maps, out, patch_size, per_class, sizes, repetitions, subsets, seed, val_patients, workers,
                no_progress):
    """Write splits.json, train_rep<r>.h5, val_tiles.h5, val.h5 and test_tiles.h5 from IMAGES and MAPS.

    \b
    splits.json       validation patients and the training subsets (source recorded)
    train_rep<r>.h5   class-centred crops of repetition r's training images
    val_tiles.h5      tiles of the whole validation images (all-background tiles dropped)
    val.h5            class-centred validation crops (for --protocol earlier)
    test_tiles.h5     tiles of the test images
    """
    from ..train.prepare import prepare_inputs

    vp = [p.strip() for p in val_patients.split(",")] if val_patients else None
    p = prepare_inputs(images, maps, out, patch_size=patch_size, per_class=per_class, sizes=sizes,
                       repetitions=repetitions, seed=seed, val_patients=vp, workers=workers,
                       progress=not no_progress, subsets=subsets)
    for k, v in p.__dict__.items():
        click.echo(f"{k}: {v}")


@train.command("run")
@click.argument("inputs", type=click.Path(exists=True, file_okay=False), required=False)
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False), help="Experiment folder.")
@click.option("--train-file", default=None,
              help="Training crops; {rep} in the name stands for the repetition, one file each "
                   "(default: INPUTS/train_rep{rep}.h5 as written by 'train prepare', else INPUTS/train.h5).")
@click.option("--val-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Validation tiles (default: INPUTS/val_tiles.h5; INPUTS/val.h5 crops with --protocol earlier).")
@click.option("--test-tiles", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Test tiles (default: INPUTS/test_tiles.h5).")
@click.option("--test-maps", type=click.Path(exists=True, file_okay=False), required=True,
              help="Folder with annotator_<k>/ and consensus/ test label maps (merge-masks' MAPS/test).")
@click.option("--splits", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Splits file with the N-image subsets (default: INPUTS/splits.json if present, "
                   "else sampled at the patient level).")
@click.option("--sizes", default=None, callback=int_list,
              help="Training-set sizes N to run (default: every size in the splits file, else 25,50,100,263).")
@click.option("--repetitions", type=click.IntRange(min=1), default=None,
              help="Runs per N and setting (default: every repetition in the splits file, else 5).")
@click.option("--with-scheme", default="all", show_default=True,
              help="Label scheme of the 'with' setting: all, leave-one-out:<class>, random:<k>:<seed>, "
                   "keep:<a>,<b>, merge:<a>+<b>=<name>.")
@click.option("--without-scheme", default="binary", show_default=True, help="Label scheme of the 'without' setting.")
@click.option("--keep-last", is_flag=True, help="Keep each finished run's last.pt (optimiser state; large).")
@training_options
@handle_errors
def run_cmd(inputs, out, train_file, val_file, test_tiles, test_maps, splits, sizes, repetitions, with_scheme,
            without_scheme, keep_last, **kw):
    """Train and evaluate the grid; write results.parquet, summary and figure1.png under OUT.

    Sizes, repetitions and files come from what 'train prepare' wrote into INPUTS (splits.json,
    train_rep<r>.h5, val_tiles.h5, test_tiles.h5); --sizes and --repetitions narrow them.
    """
    from ..train.experiment import ExperimentConfig, grid_from_splits, run_grid

    base = Path(inputs) if inputs else None

    def pick(value, name, option):
        if value:
            return value
        if base is None or not (base / name).is_file():
            where = f"{base / name} not found" if base is not None else "no INPUTS folder given"
            raise SettingsError(f"give {option} ({where})")
        return str(base / name)

    from ..errors import SettingsError

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
    val_name = "val.h5" if kw["protocol"] == "earlier" else "val_tiles.h5"
    val_file = pick(val_file, val_name, "--val-file")
    tiles = pick(test_tiles, "test_tiles.h5", "--test-tiles")
    cfg = ExperimentConfig(train=_train_config(train_file, val_file, kw), test_tiles=tiles, test_maps=test_maps,
                           splits=splits, sizes=sizes, repetitions=repetitions, with_scheme=with_scheme,
                           without_scheme=without_scheme, keep_last=keep_last)
    run_grid(cfg, out, log=click.echo, overwrite=kw["overwrite"])
    click.echo((Path(out) / "summary.md").read_text())
    click.echo(f"results: {Path(out) / 'results.parquet'}\nfigure: {Path(out) / 'figure1.png'}")


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
@click.option("--against", default="consensus", show_default=True, help="Reference plotted in figure1.png.")
@handle_errors
def summarize_cmd(experiment, against):
    """Rewrite summary.csv/.md and figure1.png from EXPERIMENT/results.parquet."""
    import pandas as pd

    from ..atomic import atomic_path, write_text_atomic
    from ..train.experiment import plot_figure1, summarise, summary_markdown

    exp = Path(experiment)
    res = pd.read_parquet(exp / "results.parquet")
    table = summarise(res)
    with atomic_path(exp / "summary.csv") as tmp:
        table.to_csv(tmp, index=False)
    md = summary_markdown(table)
    write_text_atomic(exp / "summary.md", md + "\n")
    plot_figure1(res, exp / "figure1.png", against)
    click.echo(md)


train.add_command(predict)
train.add_command(prepare_dataset_cmd)


def main(argv: list[str] | None = None) -> None:
    """Console script ``csaws-train`` (the same commands as ``csaws-prepare train``)."""
    train.main(args=argv, prog_name="csaws-train")

