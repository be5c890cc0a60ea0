"""The ``csaws-prepare`` command line: a thin layer over the Python API.

Each subcommand lives in its own module under :mod:`csaws_tools.cli` and is
imported only when used, so ``csaws-prepare --help`` stays fast.
"""

from __future__ import annotations

import importlib
import importlib.util

import click

from .. import __version__

#: command name -> "module:attribute" under csaws_tools.cli
COMMANDS: dict[str, str] = {
    "sample": "sample:sample",
    "dicom2png": "dicom2png:dicom2png",
    "merge-masks": "merge:merge_masks",
    "stats": "stats:stats",
    "preview": "preview:preview",
    "splits": "patches:splits",
    "patches": "patches:patches",
    "train": "train:train",
    "manifest": "manifest:manifest",
    "demo": "demo:demo",
    "export": "export:export",
    "check": "check:check",
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        names = [n for n, target in COMMANDS.items() if _available(target)]
        return sorted(set(names) | set(super().list_commands(ctx)))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None or not _available(target):
            return super().get_command(ctx, name)
        module, attr = target.split(":")
        return getattr(importlib.import_module(f"{__name__}.{module}"), attr)


def _available(target: str) -> bool:
    return importlib.util.find_spec(f"{__name__}.{target.split(':')[0]}") is not None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="csaws-prepare")
def main() -> None:
    """Prepare mammography data for segmentation the way the CSAW-S study did.

    \b
    Typical pipeline:
      csaws-prepare sample SAMPLE                      # a synthetic dataset in the release layout
      csaws-prepare dicom2png SAMPLE/dicom -o PNG      # DICOM -> 8-bit PNG (modality, VOI, inversion)
      csaws-prepare merge-masks SAMPLE/CsawS -o MAPS   # 11 binary masks -> one label map per image
      csaws-prepare patches --images ... --masks MAPS/trainval -o patches.h5
    Every command writes a Parquet manifest of what it did; see each command's --help.
    """
