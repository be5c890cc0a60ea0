"""``csaws-prepare demo``: every stage on a small synthetic dataset."""

from __future__ import annotations

import click

from ..defaults import DEMO_ITERATIONS
from ._common import handle_errors


@click.command()
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the synthetic sample dataset.")
@click.option("--workers", "-j", type=click.IntRange(min=1), default=None,
              help="Worker processes for each stage (default: all cores).")
@click.option("--train/--no-train", default=None,
              help="End with a small CPU-sized with/without complementary-label comparison "
                   "(default: when PyTorch is installed).")
@click.option("--iterations", type=click.IntRange(min=1), default=None,
              help=f"Training iterations per run of the comparison (default {DEMO_ITERATIONS}).")
@handle_errors
def demo(out: str, seed: int, workers: int | None, train: bool | None, iterations: int | None) -> None:
    """Make a small sample dataset in OUT and run every stage on it, printing what it wrote and where.

    Stages: sample -> dicom2png -> merge-masks -> stats and preview -> splits and patches ->
    (with PyTorch) a small with/without complementary-label comparison sized for a CPU
    (a 16-patient sample, 64-px patches, 400 iterations of batch 24 per run, one repetition, from
    scratch, the paper protocol otherwise, the two settings side by side; about 12 minutes on
    2 cores) that writes
    results.parquet and a Figure-1-style plot. OUT must be empty, new or a previous demo.

    \b
    Examples:
      csaws-prepare demo demo-out --workers 2
      csaws-prepare demo demo-quick --no-train          # the data stages only, seconds
      csaws-prepare demo demo-long --iterations 800     # longer training per run
    """
    from ..demo import run_demo

    paths = run_demo(out, seed=seed, workers=workers, train=train, train_iterations=iterations, log=click.echo)
    click.echo("\nwrote:")
    for name, path in paths.items():
        click.echo(f"  {name:12s} {path}")
