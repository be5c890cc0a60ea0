"""``csaws-train predict``: label maps of whole images by a trained run (sliding-window inference)."""

from __future__ import annotations

import click

from ._common import _shard_callback, finish, handle_errors, input_options


@click.command("predict")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False),
              help="Output folder: one label map per image (palette PNG; folders keep their sub-folders), "
                   "labels.json, manifest.parquet.")
@click.option("--checkpoint", default=None,
              help="Checkpoint to use (default: RUN_DIR/best.pt, the selected one); a bare name such as "
                   "last.pt is looked up in RUN_DIR. Read with torch.load(weights_only=True) only.")
@click.option("--tile", type=click.IntRange(min=8), default=None,
              help="Tile size in pixels (default: the run's training crop size from config.json).")
@click.option("--overlap", type=click.FloatRange(0.0, 1.0, max_open=True), default=0.25, show_default=True,
              help="Fraction of a tile shared with its neighbour; probabilities are averaged where tiles "
                   "overlap. 0: non-overlapping zero-padded tiles as the study evaluated (use --tile 512).")
@click.option("--batch-size", type=click.IntRange(min=1), default=4, show_default=True,
              help="Tiles per forward pass (memory grows with it).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="auto: CUDA when available.")
@click.option("--no-amp", is_flag=True, help="Run in float32 on CUDA too (default: bf16 autocast on CUDA).")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads for torch (default: torch's choice; with -j N, cores / N each).")
@click.option("--overlay", "overlay_dir", type=click.Path(file_okay=False), default=None,
              help="Also write an overlay of each map on its image (as csaws-prepare preview) into this folder.")
@click.option("--overlay-max-size", type=click.IntRange(min=16), default=1024, show_default=True,
              help="Longer side of each overlay in pixels (downscaled, never enlarged).")
@click.option("--workers", "-j", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes (torch already uses every core for one image; more processes rarely help).")
@click.option("--overwrite", is_flag=True, help="Redo maps that are up to date (default: skip them).")
@click.option("--fail-fast", is_flag=True, help="Stop at the first image that fails.")
@click.option("--no-progress", is_flag=True, help="Do not show the progress bar.")
@click.option("--shard", metavar="I/N", default=None, callback=_shard_callback,
              help="Process only the I-th of N deterministic parts of the images (for job arrays).")
@input_options
@handle_errors
def predict(run_dir, images, out, checkpoint, tile, overlap, batch_size, device, no_amp, threads, overlay_dir,
            overlay_max_size, workers, overwrite, fail_fast, no_progress, shard):
    """Label maps of IMAGES (8/16-bit greyscale PNGs, or folders of them) by the run in RUN_DIR.

    Sliding-window inference with the run's selected checkpoint: tiles of the training crop
    size, softmax averaged where they overlap, borders padded with black. Maps use the run's
    class numbering (labels.json beside them). Reruns skip maps that are up to date (same
    checkpoint, settings and input file). Exit status 1 when any image failed.

    \b
    Example:
      csaws-train predict EXPERIMENT/runs/with/n25/rep0 PNG/test -o PRED --overlay PRED_OVERLAYS
    """
    from ..train.predict import predict as run

    result = run(run_dir, list(images), out, checkpoint=checkpoint, tile=tile, overlap=overlap,
                 batch_size=batch_size, device=device, amp=not no_amp, threads=threads, overlay_dir=overlay_dir,
                 overlay_max_size=overlay_max_size, workers=workers, overwrite=overwrite, fail_fast=fail_fast,
                 progress=not no_progress, shard=shard)
    finish(result)
