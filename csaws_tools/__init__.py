"""csaws-tools: prepare mammography screening data the way the CSAW-S study did.

Stages, one module each:

* :mod:`csaws_tools.dicom2png` - DICOM to 8/16-bit PNG (PS3.3 C.11 modality and VOI steps)
* :mod:`csaws_tools.merge` - per-class masks to one label map in priority order
* :mod:`csaws_tools.patches` - class-centred crops and test tiles into HDF5
* :mod:`csaws_tools.train` - the with/without complementary-label experiment

Shared pieces: :mod:`csaws_tools.classes` (class table), :mod:`csaws_tools.batch`
(the per-file batch runner), :mod:`csaws_tools.png` (fast PNG encoding),
:mod:`csaws_tools.sample` (a synthetic dataset in the release layout).
"""

__version__ = "0.1.0"
