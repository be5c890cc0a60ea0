"""Stage 3, label maps to patches: sampling, the HDF5 patch file format, its writer and reader."""

from __future__ import annotations

from .h5format import (
    COMPRESSIONS,
    DEFAULT_LEVELS,
    FORMAT,
    INDEX_FIELDS,
    LAYOUTS,
    chunk_shape,
    read_file_attrs,
)
from .inputs import (
    check_input_folders,
    check_standard_maps,
    pair_inputs,
    parse_classes,
    read_pair,
)
from .sampling import (
    DEFAULT_PER_CLASS,
    DEFAULT_SIZE,
    NUM_CLASSES,
    STANDARD_NAMES,
    TILE_DROPS,
    class_counts,
    crop_origin,
    cut,
    draw_centres,
    image_rng,
    sample_crops,
    tile_grid,
)
from .stage import (
    PatchesResult,
    manifest_path_for,
    write_patches,
)
from .worker import (
    PatchConfig,
    Payload,
    patch_worker,
    process_image,
)
from .writer import (
    REORDER_BUFFER_BYTES,
    PatchWriter,
)

__all__ = [
    "FORMAT",
    "LAYOUTS",
    "COMPRESSIONS",
    "DEFAULT_LEVELS",
    "INDEX_FIELDS",
    "chunk_shape",
    "read_file_attrs",
    "DEFAULT_SIZE",
    "DEFAULT_PER_CLASS",
    "TILE_DROPS",
    "NUM_CLASSES",
    "STANDARD_NAMES",
    "class_counts",
    "image_rng",
    "draw_centres",
    "crop_origin",
    "cut",
    "sample_crops",
    "tile_grid",
    "REORDER_BUFFER_BYTES",
    "PatchWriter",
    "pair_inputs",
    "check_input_folders",
    "check_standard_maps",
    "parse_classes",
    "read_pair",
    "PatchConfig",
    "Payload",
    "process_image",
    "patch_worker",
    "PatchesResult",
    "manifest_path_for",
    "write_patches",
]
