"""``csaws-prepare train`` / ``csaws-train``: rerun the with/without complementary-label experiment."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click

from ._common import handle_errors


def _ints(ctx, param, value):
    if value is None:
        return None
    try:
        return tuple(int(v) for v in str(value).split(",") if v.strip())
    except ValueError:
        raise click.BadParameter("expected comma-separated integers, e.g. 25,50,100,263") from None


def training_options(func: Callable) -> Callable:
    """Options of one training run (defaults: the study's values, protocol section 5)."""
    opts = [
        click.option("--iterations", type=click.IntRange(min=1), default=10000, show_default=True,
                     help="Training iterations (batches) per run."),
        click.option("--epochs", type=click.FloatRange(min=0, min_open=True), default=None,
                     help="Train for this many passes over the run's crops instead of --iterations."),
        click.option("--batch-size", type=click.IntRange(min=1), default=12, show_default=True, help="Crops per batch."),
        click.option("--lr", type=float, default=1e-4, show_default=True, help="Adam learning rate."),
        click.option("--weight-decay", type=float, default=1e-6, show_default=True, help="Adam weight decay."),
        click.option("--schedule", type=click.Choice(["constant", "poly", "cosine"]), default="constant",
                     show_default=True, help="Learning-rate schedule over the run (poly: power 0.9)."),
        click.option("--warmup", type=click.IntRange(min=0), default=0, show_default=True,
                     help="Linear learning-rate warmup iterations."),
        click.option("--val-every", type=click.IntRange(min=1), default=500, show_default=True,
                     help="Validate, select and checkpoint every this many iterations."),
        click.option("--val-max-crops", type=click.IntRange(min=1), default=None,
                     help="Validate on this many evenly spaced validation crops (default: all)."),
        click.option("--eval-batch-size", type=click.IntRange(min=1), default=16, show_default=True,
                     help="Crops/tiles per batch at validation and test time."),
        click.option("--output-stride", type=click.Choice(["8", "16"]), default="8", show_default=True,
                     help="DeepLabv3 output stride (8: layers 3-4 dilated; 16: layer 4 dilated; faster)."),
        click.option("--aux-loss", is_flag=True, help="Add torchvision's auxiliary FCN head on layer 3 (loss weight 0.5)."),
        click.option("--pretrained", type=click.Path(exists=True, dir_okay=False), default=None,
                     help="Local torchvision ResNet-50 (ImageNet) or DeepLabv3 state dict; nothing is downloaded."),
        click.option("--crop", type=click.IntRange(min=8), default=448, show_default=True,
                     help="Random crop size taken from each training crop."),
        click.option("--elastic-p", type=click.FloatRange(0, 1), default=0.5, show_default=True,
                     help="Probability of the elastic deformation (alpha 256, sigma 2) per crop."),
        click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Base random seed."),
        click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
                     help="auto: CUDA when available."),
        click.option("--no-amp", is_flag=True, help="Train in float32 on CUDA too (default: bf16 autocast on CUDA)."),
        click.option("--no-channels-last", is_flag=True, help="Keep the NCHW memory format on CUDA."),
        click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads for torch."),
        click.option("--overwrite", is_flag=True, help="Discard runs made with other settings instead of stopping."),
    ]
    for opt in reversed(opts):
        func = opt(func)
    return func


def _train_config(train_file: str, val_file: str, kw: dict):
    from ..train.augment import AugmentConfig
    from ..train.loop import TrainConfig

    return TrainConfig(
        train_file=str(train_file), val_file=str(val_file), iterations=kw["iterations"], epochs=kw["epochs"],
        batch_size=kw["batch_size"], lr=kw["lr"], weight_decay=kw["weight_decay"], schedule=kw["schedule"],
        warmup=kw["warmup"], val_every=kw["val_every"], val_max_crops=kw["val_max_crops"],
        eval_batch_size=kw["eval_batch_size"], output_stride=int(kw["output_stride"]), aux_loss=kw["aux_loss"],
        pretrained=kw["pretrained"], seed=kw["seed"], device=kw["device"], amp=not kw["no_amp"],
        channels_last=not kw["no_channels_last"], threads=kw["threads"],
        augment=AugmentConfig(crop=kw["crop"], elastic_p=kw["elastic_p"]),
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def train() -> None:
    """Rerun the CSAW-S with/without complementary-label experiment (needs the [train] extra).

    \b
    Typical use:
      csaws-prepare train prepare IMAGES MAPS -o INPUTS    # splits, crops, test tiles
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
@click.option("--sizes", default="25,50,100,263", show_default=True, callback=_ints,
              help="Training-set sizes N (images), comma-separated.")
@click.option("--repetitions", type=click.IntRange(min=1), default=5, show_default=True, help="Subsets per size.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of splits and crops.")
@click.option("--val-patients", default=None, help="Comma-separated validation patient ids (default: protocol rule).")
@click.option("--workers", "-j", type=click.IntRange(min=1), default=None, help="Worker processes.")
@click.option("--no-progress", is_flag=True, help="Do not show progress bars.")
@handle_errors
def prepare_cmd(images, maps, out, patch_size, per_class, sizes, repetitions, seed, val_patients, workers,
                no_progress):
    """Write splits.json, train.h5, val.h5 and test_tiles.h5 from IMAGES and merge-masks' MAPS."""
    from ..train.prepare import prepare_inputs

    vp = [p.strip() for p in val_patients.split(",")] if val_patients else None
    p = prepare_inputs(images, maps, out, patch_size=patch_size, per_class=per_class, sizes=sizes,
                       repetitions=repetitions, seed=seed, val_patients=vp, workers=workers,
                       progress=not no_progress)
    for k, v in p.__dict__.items():
        click.echo(f"{k}: {v}")


@train.command("run")
@click.argument("inputs", type=click.Path(exists=True, file_okay=False), required=False)
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False), help="Experiment folder.")
@click.option("--train-file", default=None,
              help="Training crops; {rep} in the name stands for the repetition, one file each "
                   "(default: INPUTS/train_rep{rep}.h5 as written by 'train prepare', else INPUTS/train.h5).")
@click.option("--val-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Validation crops (default: INPUTS/val.h5).")
@click.option("--test-tiles", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Test tiles (default: INPUTS/test_tiles.h5).")
@click.option("--test-maps", type=click.Path(exists=True, file_okay=False), required=True,
              help="Folder with annotator_<k>/ and consensus/ test label maps (merge-masks' MAPS/test).")
@click.option("--splits", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Splits file with the N-image subsets (default: INPUTS/splits.json if present, "
                   "else sampled at the patient level).")
@click.option("--sizes", default="25,50,100,263", show_default=True, callback=_ints, help="Training-set sizes N.")
@click.option("--repetitions", type=click.IntRange(min=1), default=5, show_default=True, help="Runs per N and setting.")
@click.option("--with-scheme", default="all", show_default=True,
              help="Label scheme of the 'with' setting: all, leave-one-out:<class>, random:<k>:<seed>, "
                   "keep:<a>,<b>, merge:<a>+<b>=<name>.")
@click.option("--without-scheme", default="binary", show_default=True, help="Label scheme of the 'without' setting.")
@click.option("--keep-last", is_flag=True, help="Keep each finished run's last.pt (optimiser state; large).")
@training_options
@handle_errors
def run_cmd(inputs, out, train_file, val_file, test_tiles, test_maps, splits, sizes, repetitions, with_scheme,
            without_scheme, keep_last, **kw):
    """Train and evaluate the grid; write results.parquet, summary and figure1.png under OUT."""
    from ..errors import InputError
    from ..train.experiment import ExperimentConfig, run_grid

    base = Path(inputs) if inputs else None

    def pick(value, name):
        if value:
            return value
        if base is None or not (base / name).is_file():
            raise InputError(f"give --{name.split('.')[0].replace('_', '-')} or an INPUTS folder holding {name}")
        return str(base / name)

    if not train_file and base is not None and (base / "train_rep0.h5").is_file():
        train_file = str(base / "train_rep{rep}.h5")  # one crop file per repetition (train prepare)
    train_file = pick(train_file, "train.h5")
    for rep in range(repetitions):
        if not Path(train_file.format(rep=rep) if "{rep}" in train_file else train_file).is_file():
            raise InputError(f"{train_file.format(rep=rep)}: training crops not found")
    val_file = pick(val_file, "val.h5")
    tiles = pick(test_tiles, "test_tiles.h5")
    if splits is None and base is not None and (base / "splits.json").is_file():
        splits = str(base / "splits.json")
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


def main(argv: list[str] | None = None) -> None:
    """Console script ``csaws-train`` (the same commands as ``csaws-prepare train``)."""
    train.main(args=argv, prog_name="csaws-train")


from .train_predict import predict as _predict

train.add_command(_predict)
