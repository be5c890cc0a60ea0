"""The preparation pipeline from Python: DICOM -> PNG -> label maps -> class table -> HDF5 crops.

    python examples/pipeline.py WORKDIR

Every function here is what the matching ``csaws-prepare`` command calls; each
returns a result with the manifest rows (``result.rows``), the counts
(``result.summary()``) and an exit code, and never raises for one bad input.
"""

import sys
from pathlib import Path

from csaws_tools.dicom2png import convert
from csaws_tools.labels import parse_scheme
from csaws_tools.merge import merge_masks
from csaws_tools.patches import write_patches
from csaws_tools.reader import PatchReader
from csaws_tools.sample import write_sample
from csaws_tools.stats import class_table, format_table

work = Path(sys.argv[1] if len(sys.argv) > 1 else "pipeline-out")

info = write_sample(work / "sample", seed=1)  # a synthetic dataset in the CSAW-S release layout
print(convert(info.dicom_dir, work / "png", progress=False).summary("converted"))
print(merge_masks(info.csaws_dir, work / "maps", progress=False).summary("merged"))
print(format_table(class_table(work / "maps" / "trainval")))

result = write_patches(work / "png", work / "maps" / "trainval", work / "crops.h5", size=256, per_class=10, seed=0,
                       progress=False)
print(result.summary("written"))

# With and without complementary labels read the very same crops; a label scheme remaps the masks.
for spec in ("all", "binary", "leave-one-out:skin"):
    with PatchReader(work / "crops.h5", scheme=parse_scheme(spec)) as reader:
        image, mask = reader[0]
        print(f"{spec:20s} {len(reader)} crops of {image.shape}, {reader.num_classes} classes: {reader.class_names}")
