"""Defaults and choices shared by the Python API and the command line, defined once.

Plain Python values only: the lazy CLI imports this module to build its
``--help`` without importing numpy or any stage. The stage modules take
their parameter defaults from here, and ``tests/test_defaults.py`` checks
that every CLI option's default equals the API parameter it maps to.
"""

from __future__ import annotations

__all__ = [
    "BITS", "BIT_DEPTHS", "COLOUR", "COLOUR_MODES", "COMPRESSION", "COMPRESSIONS", "DEMO_ITERATIONS", "FALLBACK", "FALLBACKS",
    "LABEL_SCHEME", "LAYOUT", "LAYOUTS", "NUMBERING", "NUMBERINGS", "PATCH_SIZE", "PER_CLASS",
    "PREVIEW_ALPHA", "PREVIEW_MAX_SIZE", "PREVIEW_THUMB_SIZE", "REPETITIONS", "SAMPLE_TEST_PATIENTS",
    "SAMPLE_TRAIN_PATIENTS", "SEED", "SUBSET_SIZES", "TILE_DROP", "TILE_DROPS", "VOI", "VOI_MODES", "WORKERS",
]

# -- execution (every per-file stage, stats and sample)
#: Worker processes: None means every core this process may use
#: (:func:`csaws_tools.execution.tasks.default_workers`).
WORKERS: int | None = None
#: Seed of every random choice (splits, crop centres, the synthetic sample).
SEED = 0

# -- dicom2png (protocol section 2; DICOM PS3.3 C.11)
VOI_MODES = ("auto", "window", "lut", "none")
VOI = "auto"
FALLBACKS = ("error", "minmax", "percentile")
FALLBACK = "error"
BIT_DEPTHS = (8, 16)
BITS = 8
COLOUR_MODES = ("convert", "refuse")
COLOUR = "convert"

# -- merge-masks (protocol sections 1 and 3)
NUMBERINGS = ("standard", "release")
NUMBERING = "standard"
LABEL_SCHEME = "all"

# -- splits (protocol section 5: training subsets of N images, 5 repetitions)
SUBSET_SIZES: tuple[int, ...] = (25, 50, 100, 263)
REPETITIONS = 5

# -- patches (protocol section 4; paper appendix A.5)
PATCH_SIZE = 512
PER_CLASS = 10
LAYOUTS = ("crops", "index")
LAYOUT = "crops"
COMPRESSIONS = ("gzip", "lzf", "zstd", "none")
COMPRESSION = "gzip"
TILE_DROPS = ("background", "black", "none")
TILE_DROP = "black"

# -- preview
PREVIEW_ALPHA = 0.45
PREVIEW_MAX_SIZE = 1024
PREVIEW_THUMB_SIZE = 256

# -- sample
SAMPLE_TRAIN_PATIENTS = 6
SAMPLE_TEST_PATIENTS = 2

# -- demo
#: Training iterations per run of the demo's with/without comparison (CPU-sized; docs/train.md).
DEMO_ITERATIONS = 400
