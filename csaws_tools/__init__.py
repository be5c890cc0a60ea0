"""csaws-tools: prepare mammography screening data the way the CSAW-S study did.

Stages, one subpackage each (docs/architecture.md):

* :mod:`csaws_tools.dicom` - DICOM to 8/16-bit PNG (PS3.3 C.11 modality and VOI steps);
  entry point :func:`csaws_tools.dicom2png.convert`
* :mod:`csaws_tools.masks` - per-class masks to one label map in priority order, ``labels.json``;
  entry point :func:`csaws_tools.merge.merge_masks`
* :mod:`csaws_tools.splits` - patient-level splits and training subsets
* :mod:`csaws_tools.patches` - class-centred crops and test tiles into HDF5, and their reader
* :mod:`csaws_tools.review` - class statistics, previews, dataset checks, exports
* :mod:`csaws_tools.train` - the with/without complementary-label experiment

Under every per-file stage: :mod:`csaws_tools.execution` (tasks, run options,
local pool, Dask, shards, manifests). Shared pieces: :mod:`csaws_tools.defaults`,
:mod:`csaws_tools.errors`, :mod:`csaws_tools.atomic`, :mod:`csaws_tools.png`,
:mod:`csaws_tools.sample` (a synthetic dataset in the release layout).
"""

__version__ = "0.1.0"
