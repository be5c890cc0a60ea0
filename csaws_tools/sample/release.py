"""A synthetic dataset in the CSAW-S release layout (protocol section 1), deterministic by seed.

:func:`write_sample` draws mammogram-like phantoms (:mod:`csaws_tools.phantom`)
and writes, under one folder::

    dicom/<pid>/<pid>_<n>.dcm                 train/val sources (Digital Mammography, For Presentation)
    dicom_test/<pid>/<pid>_<n>.dcm            test sources
    CsawS/anonymized_dataset/<pid>/<pid>_<n>.png            the 8-bit image as released
    CsawS/anonymized_dataset/<pid>/<pid>_<n>_<class>.png    11 binary masks (0 / 255)
    CsawS/test_data/anonymized_dataset/<pid>/<pid>_<n>.png  test images
    CsawS/test_data/annotator_<k>/<pid>/<pid>_<n>_<class>.png  k = 1, 2 (11 classes), 3 (cancer only)
    CsawS/training_random_splits.json         {"<N>": {"<rep>": [pid, ...]}}
    sample.parquet                            one row per image: what was drawn and how it is stored
    .csaws-sample.json                        marks the folder as a sample (seed, size, counts)

The DICOM files store their Modality LUT and VOI data the ways real
mammograms do (protocol section 2; PS3.3 C.11), cycled over the images
(:data:`VOI_STYLES`): one LINEAR window, several window presets, the
SIGMOID function, Rescale Slope / Intercept with windows in rescaled units,
and a VOI LUT Sequence beside the window. The released PNG is what
``csaws-prepare dicom2png`` with default settings makes from the DICOM (the
first preset with the file's function, the window's output range onto
0..255, MONOCHROME1 inverted): :func:`released_image`.

Same seed and settings give byte-identical files; every image has its own
random stream keyed by (seed, patient, image number), so results do not
depend on the number of workers.
"""

from __future__ import annotations

import datetime
import functools
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .. import defaults
from ..atomic import atomic_path, write_text_atomic
from ..dicom.voi import (
    VOI,
    Modality,
    inverted,
    modality_from_dataset,
    render,
    select_voi,
    voi_unit,
    windows_in,
)
from ..errors import OutputError
from ..execution.runner import map_ordered
from ..masks.classes import MAIN_CLASS, MASK_CLASSES
from ..png import write_png
from .phantom import PhantomSpec, make_phantom

#: Default image size (rows, columns): small, so the default sample takes seconds.
DEFAULT_SIZE: tuple[int, int] = (640, 512)
#: The size of a full-field Hologic mammogram.
FULL_SIZE: tuple[int, int] = (4096, 3328)
#: Pixel spacing (mm) at full size; smaller images get proportionally coarser spacing.
FULL_SIZE_SPACING_MM = 0.065
#: Validation patients suggested by the study (protocol section 1).
SUGGESTED_VALIDATION: tuple[str, ...] = (
    "000", "001", "012", "018", "025", "030", "034", "038", "053", "062",
    "068", "075", "083", "127", "131", "139", "156", "181", "245", "249",
)
#: Digital Mammography X-Ray Image Storage - For Presentation (PS3.4 B.5).
MG_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
MANUFACTURER = "csaws-tools phantom"
MARKER = ".csaws-sample.json"
MANIFEST = "sample.parquet"
#: Annotators of the test set; the third labels cancer only (protocol section 1).
ANNOTATORS = (1, 2, 3)
#: Written folders (removed when a previous sample is rewritten).
_OWNED = ("dicom", "dicom_test", "CsawS", MARKER, MANIFEST)

# How often the optional structures occur (fractions of images), after protocol section 1's table.
_P_CALCIFICATIONS = 0.52
_P_LYMPH_NODES_MLO = 0.44  # lymph nodes are drawn on MLO views only (about half the images)
_P_FOREIGN_OBJECT = 0.19
_P_TEXT = 0.80
_P_NIPPLE = 0.86
_P_NON_MAMMARY = {"MLO": 0.9, "CC": 0.2}
_P_THICK_VESSELS = 0.78


@dataclass(frozen=True)
class VOIStyle:
    """How an image stores its Modality LUT and VOI data (PS3.3 C.11.1, C.11.2)."""

    function: str  # VOI LUT Function in effect: "LINEAR" or "SIGMOID"
    function_in_file: bool  # False: VOILUTFunction absent (LINEAR by default, PS3.3 C.11.2.1.3)
    presets: tuple[str, ...]  # WindowCenterWidthExplanation of each preset; the first is the default
    slope: float | None = None  # Rescale Slope / Intercept (None: no Modality LUT step)
    intercept: float | None = None
    voi_lut: bool = False  # a VOI LUT Sequence beside the window, equal to the first preset


#: The storage styles, cycled over the images of a sample (image k gets ``VOI_STYLES[k % 5]``).
#: Every sample of five images or more holds each of them.
VOI_STYLES: tuple[VOIStyle, ...] = (
    VOIStyle("LINEAR", True, ("NORMAL",)),
    VOIStyle("SIGMOID", True, ("NORMAL", "HARDER", "SOFTER")),
    VOIStyle("LINEAR", False, ("NORMAL",), slope=1.0, intercept=-1024.0),
    VOIStyle("LINEAR", True, ("NORMAL", "FULL RANGE"), slope=0.5, intercept=-100.0),
    VOIStyle("LINEAR", True, ("NORMAL",), voi_lut=True),
)
#: SIGMOID presets (NORMAL, HARDER, SOFTER): widths as fractions of the LINEAR window's width, and the
#: centre moved toward fat by a fraction of it, so that fat and gland keep about the grey levels of the
#: LINEAR window, air stays near black (a sigmoid never reaches 0) and calcium, metal and text saturate.
_SIGMOID_WIDTHS = (0.45, 0.36, 0.57)
_SIGMOID_SHIFT = 0.125


@dataclass(frozen=True)
class SampleImage:
    """One image of the sample: identity, what was drawn, how it is stored."""

    image_id: str  # "<pid>_<n>"
    pid: str
    n: int
    split: str  # "trainval" or "test"
    view: str  # "CC" or "MLO"
    laterality: str  # "L" or "R"
    photometric: str  # "MONOCHROME1" or "MONOCHROME2"
    jpeg2000: bool
    bits_stored: int
    voi_style: int  # index into VOI_STYLES; the fields below spell it out
    voi_function: str  # VOI LUT Function in effect (LINEAR or SIGMOID)
    voi_function_in_file: bool  # whether VOILUTFunction is written (absent means LINEAR)
    window_presets: int  # number of WindowCenter/WindowWidth values
    rescale: bool  # Rescale Slope / Intercept present (windows are then in rescaled units)
    rescale_slope: float  # 1.0 when absent
    rescale_intercept: float  # 0.0 when absent
    voi_lut_sequence: bool  # a VOI LUT Sequence beside the window
    calcifications: bool
    lymph_nodes: bool
    foreign_object: bool
    text: bool
    nipple: bool
    non_mammary: bool
    thick_vessels: bool


@dataclass
class SampleInfo:
    """What :func:`write_sample` wrote and where."""

    root: Path
    seed: int
    size: tuple[int, int]
    train_ids: list[str]  # image ids "<pid>_<n>" of the train/val set
    test_ids: list[str]
    train_patients: list[str]  # all train/val patients
    test_patients: list[str]
    validation_patients: list[str]  # train/val patients among the study's suggested validation set
    dicom_dir: Path  # root/dicom
    dicom_test_dir: Path  # root/dicom_test
    csaws_dir: Path  # root/CsawS
    images: list[SampleImage] = field(default_factory=list)

    @property
    def trainval_dir(self) -> Path:
        """``CsawS/anonymized_dataset`` (train/val images and masks)."""
        return self.csaws_dir / "anonymized_dataset"

    @property
    def test_dir(self) -> Path:
        """``CsawS/test_data``."""
        return self.csaws_dir / "test_data"

    @property
    def splits_json(self) -> Path:
        return self.csaws_dir / "training_random_splits.json"

    @property
    def manifest(self) -> Path:
        return self.root / MANIFEST

    def summary(self) -> str:
        n_dcm = len(self.train_ids) + len(self.test_ids)
        return (
            f"wrote {n_dcm} DICOM files ({len(self.train_ids)} train/val images of {len(self.train_patients)} "
            f"patient(s), {len(self.test_ids)} test images of {len(self.test_patients)} patient(s)), "
            f"{self.size[0]} x {self.size[1]} pixels, seed {self.seed}"
        )


# --------------------------------------------------------------------------- pixel mapping


def released_image(stored: np.ndarray, ds) -> np.ndarray:
    """The released 8-bit image: exactly what ``csaws-prepare dicom2png`` makes with default settings.

    Modality LUT (Rescale Slope / Intercept), the first window preset with the
    file's VOI LUT Function (PS3.3 C.11.2), the window's output range onto
    0..255, then inverted for MONOCHROME1 (protocol section 2), computed by
    :func:`csaws_tools.voi.render`.
    """
    chosen = select_voi(ds)
    if chosen.kind != "window":
        raise ValueError(f"the sample's files always have a usable window, got {chosen.kind!r}")
    return render(stored, modality_from_dataset(ds), chosen, bits=8, invert=inverted(ds))


def density_to_stored(density: np.ndarray, bits_stored: int, photometric: str,
                      rng: np.random.Generator) -> tuple[np.ndarray, int, int]:
    """Map phantom density onto stored values; return (pixels uint16, window centre, window width).

    MONOCHROME2 stores dense tissue as high values. MONOCHROME1 stores the
    complement (dense = low), with the window mirrored to match.
    The window spans density 0.12 (just above the air) to 1.0 (dense tissue);
    calcium, metal and burned-in text saturate.
    """
    maxv = (1 << bits_stored) - 1
    air = maxv * rng.uniform(0.03, 0.06)
    scale = (maxv * rng.uniform(0.85, 0.95) - air) / 1.3
    stored = np.clip(np.rint(air + density * np.float32(scale)), 0, maxv).astype(np.uint16)
    lo, hi = air + 0.12 * scale, air + 1.0 * scale
    center, width = int(round((lo + hi) / 2)), int(round(hi - lo))
    if photometric == "MONOCHROME1":
        np.subtract(maxv, stored, out=stored)
        center = maxv - center
    return stored, center, width


def _ds_str(value: float) -> str:
    """A Decimal String (PS3.5 6.2, at most 16 characters) holding ``value`` exactly or nearly."""
    return str(int(value)) if float(value).is_integer() else f"{value:.10g}"


def window_presets(style: VOIStyle, center: int, width: int, bits_stored: int,
                   photometric: str) -> list[tuple[float, float]]:
    """The (centre, width) presets of an image in Modality output units (rescaled when the style rescales).

    ``center``/``width`` is the LINEAR window over the breast in stored
    units (:func:`density_to_stored`). SIGMOID presets are narrower and
    centred nearer fat (toward lower density: higher stored values for
    MONOCHROME1); a second LINEAR preset spans every stored value. With
    Rescale Slope ``s`` and Intercept ``b``, a stored-unit window (c, w)
    becomes (s c + b, s w): the window is given in rescaled values
    (PS3.3 C.11.1, C.11.2) and spans the same stored values.
    """
    if style.function == "SIGMOID":
        shift = round(_SIGMOID_SHIFT * width) * (1 if photometric == "MONOCHROME1" else -1)
        stored = [(float(center + shift), float(max(2, round(f * width)))) for f in _SIGMOID_WIDTHS]
    else:
        full = float(1 << bits_stored)
        stored = [(float(center), float(width)), (full / 2, full)]
    stored = stored[: len(style.presets)]
    if style.slope is None:
        return stored
    slope, intercept = style.slope, style.intercept or 0.0
    return [(slope * c + intercept, slope * w) for c, w in stored]


# --------------------------------------------------------------------------- planning


def plan_sample(seed: int, n_train_patients: int, n_test_patients: int) -> list[SampleImage]:
    """Decide patients, views, storage and optional structures (no pixels yet).

    Patients get consecutive zero-padded ids from "000" (train/val first, so
    the suggested validation patients 000 and 001 exist), one or two images
    each (CC and MLO of the same breast). Storage cycles over the images:
    every third is MONOCHROME1, every fourth JPEG 2000 lossless, and image k
    stores its Modality LUT and VOI data as ``VOI_STYLES[k % 5]``, so any
    sample of five images or more has every kind.
    """
    rng = np.random.default_rng([seed, 7001])
    images: list[SampleImage] = []
    k = 0
    for p in range(n_train_patients + n_test_patients):
        pid = f"{p:03d}"
        split = "trainval" if p < n_train_patients else "test"
        two = rng.random() < 0.8
        views = ["CC", "MLO"] if two else [str(rng.choice(["CC", "MLO"]))]
        laterality = str(rng.choice(["L", "R"]))
        first = int(rng.integers(1, 12))
        for i, view in enumerate(views):
            voi_style = k % len(VOI_STYLES)
            style = VOI_STYLES[voi_style]
            images.append(SampleImage(
                image_id=f"{pid}_{first + i}", pid=pid, n=first + i, split=split, view=view,
                laterality=laterality,
                photometric="MONOCHROME1" if k % 3 == 1 else "MONOCHROME2",
                jpeg2000=k % 4 == 2,
                bits_stored=int(rng.choice([12, 12, 14])),
                voi_style=voi_style,
                voi_function=style.function,
                voi_function_in_file=style.function_in_file,
                window_presets=len(style.presets),
                rescale=style.slope is not None,
                rescale_slope=1.0 if style.slope is None else style.slope,
                rescale_intercept=0.0 if style.intercept is None else style.intercept,
                voi_lut_sequence=style.voi_lut,
                calcifications=bool(rng.random() < _P_CALCIFICATIONS),
                lymph_nodes=view == "MLO" and bool(rng.random() < _P_LYMPH_NODES_MLO),
                foreign_object=bool(rng.random() < _P_FOREIGN_OBJECT),
                text=bool(rng.random() < _P_TEXT),
                nipple=bool(rng.random() < _P_NIPPLE),
                non_mammary=bool(rng.random() < _P_NON_MAMMARY[view]),
                thick_vessels=bool(rng.random() < _P_THICK_VESSELS),
            ))
            k += 1
    return images


def random_splits(train_pids: list[str], seed: int, repetitions: int = 5) -> dict[str, dict[str, list[str]]]:
    """Patient subsets like ``training_random_splits.json``: {"<N>": {"<rep>": [pid, ...]}}.

    Drawn from the train/val patients outside the suggested validation set;
    N runs over a few sizes up to all of them.
    """
    pool = [p for p in train_pids if p not in SUGGESTED_VALIDATION] or list(train_pids)
    rng = np.random.default_rng([seed, 7002])
    sizes = sorted({max(1, len(pool) // 4), max(1, len(pool) // 2), len(pool)})
    out: dict[str, dict[str, list[str]]] = {}
    for n in sizes:
        out[str(n)] = {
            str(rep): sorted(str(p) for p in rng.choice(pool, size=n, replace=False)) for rep in range(repetitions)
        }
    return out


# --------------------------------------------------------------------------- writing one image


def _uid(seed: int, *parts: object) -> str:
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=["csaws-tools sample", str(seed), *map(str, parts)])


def _patient_orientation(view: str, laterality: str) -> list[str]:
    """Row and column directions (PS3.3 C.7.6.1.1.1): chest wall left for L, right for R."""
    row = "A" if laterality == "L" else "P"
    col = "R" if laterality == "L" else "L"
    return [row, col] if view == "CC" else [row, "F"]


def _voi_lut_item(center: float, width: float, function: str, bits_stored: int):
    """A VOI LUT Sequence item (PS3.3 C.11.2.1.1) equal to a window over every stored value, 16-bit entries."""
    from pydicom.dataelem import DataElement
    from pydicom.dataset import Dataset

    n = 1 << bits_stored
    values = np.arange(n, dtype=np.float64)
    unit = voi_unit(values, VOI(kind="window", center=center, width=width, function=function),
                    Modality(out_min=0.0, out_max=float(n - 1)))
    data = np.floor(unit * 65535 + 0.5).astype("<u2")
    item = Dataset()
    item.add(DataElement(0x00283002, "US", [n if n < 65536 else 0, 0, 16]))  # LUT Descriptor
    item.LUTExplanation = "NORMAL AS LUT"
    item.add(DataElement(0x00283006, "OW", data.tobytes()))  # LUT Data
    return item


def build_dicom(img: SampleImage, stored: np.ndarray, center: int, width: int, seed: int,
                spacing: float):
    """A Digital Mammography For Presentation dataset (PS3.3 A.26) holding ``stored``.

    ``center``/``width`` is the LINEAR window in stored units; the image's
    :class:`VOIStyle` decides the presets, function, rescale and VOI LUT written.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import UID, ExplicitVRLittleEndian, JPEG2000Lossless

    rows, cols = stored.shape
    sop_uid = _uid(seed, img.pid, img.n, "sop")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(MG_FOR_PRESENTATION)
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian

    ds = Dataset()
    ds.file_meta = meta
    day = datetime.date(2012, 1, 2) + datetime.timedelta(days=(seed * 97 + int(img.pid) * 13) % 1800)
    date = day.strftime("%Y%m%d")
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["DERIVED", "PRIMARY"]
    ds.SOPClassUID = MG_FOR_PRESENTATION
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = ds.AcquisitionDate = date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "093000"
    ds.AccessionNumber = f"S{seed}P{img.pid}"
    ds.Modality = "MG"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.Manufacturer = MANUFACTURER
    ds.ManufacturerModelName = "phantom"
    ds.InstitutionName = "synthetic"
    ds.PatientName = f"Phantom^{img.pid}"
    ds.PatientID = img.pid
    ds.PatientBirthDate = ""
    ds.PatientSex = "F"
    ds.BodyPartExamined = "BREAST"
    ds.BurnedInAnnotation = "YES"
    ds.StudyInstanceUID = _uid(seed, img.pid, "study")
    ds.SeriesInstanceUID = _uid(seed, img.pid, img.n, "series")
    ds.StudyID = img.pid
    ds.SeriesNumber = 1
    ds.InstanceNumber = img.n
    ds.PatientOrientation = _patient_orientation(img.view, img.laterality)
    ds.ImageLaterality = img.laterality
    ds.ViewPosition = img.view
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = img.photometric
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated = 16
    ds.BitsStored = img.bits_stored
    ds.HighBit = img.bits_stored - 1
    ds.PixelRepresentation = 0
    ds.PixelSpacing = ds.ImagerPixelSpacing = [f"{spacing:.6g}", f"{spacing:.6g}"]
    ds.PixelIntensityRelationship = "LOG"
    ds.PixelIntensityRelationshipSign = 1 if img.photometric == "MONOCHROME2" else -1
    style = VOI_STYLES[img.voi_style]
    if style.slope is not None:
        ds.RescaleSlope = _ds_str(style.slope)
        ds.RescaleIntercept = _ds_str(style.intercept or 0.0)
        ds.RescaleType = "US"  # unspecified (PS3.3 C.11.1.1.2)
    presets = window_presets(style, center, width, img.bits_stored, img.photometric)
    centers = [_ds_str(c) for c, _ in presets]
    widths = [_ds_str(w) for _, w in presets]
    ds.WindowCenter = centers if len(centers) > 1 else centers[0]
    ds.WindowWidth = widths if len(widths) > 1 else widths[0]
    ds.WindowCenterWidthExplanation = list(style.presets) if len(style.presets) > 1 else style.presets[0]
    if style.function_in_file:
        ds.VOILUTFunction = style.function
    if style.voi_lut:
        if style.slope is not None:
            raise ValueError("the VOI LUT style maps stored values and has no rescale")
        ds.VOILUTSequence = Sequence([_voi_lut_item(presets[0][0], presets[0][1], style.function, img.bits_stored)])
    ds.LossyImageCompression = "00"
    ds.PixelData = np.ascontiguousarray(stored, dtype="<u2").tobytes()
    if img.jpeg2000:
        ds.compress(JPEG2000Lossless, np.ascontiguousarray(stored), encoding_plugin="pylibjpeg",
                    generate_instance_uid=False)  # lossless: the instance stays the same
    return ds


def _mask_png(mask: np.ndarray) -> np.ndarray:
    return mask.view(np.uint8) * np.uint8(255)


def write_image(img: SampleImage, root: Path, size: tuple[int, int], seed: int) -> dict:
    """Draw one phantom and write its DICOM, PNG and masks; return its manifest row."""
    rows, cols = size
    rng = np.random.default_rng([seed, int(img.pid), img.n])
    spec = PhantomSpec(
        rows=rows, cols=cols, view=img.view, laterality=img.laterality,
        calcifications=img.calcifications, lymph_nodes=img.lymph_nodes, foreign_object=img.foreign_object,
        text=img.text, nipple=img.nipple, non_mammary=img.non_mammary, thick_vessels=img.thick_vessels,
    )
    phantom = make_phantom(spec, rng)
    stored, center, width = density_to_stored(phantom.density, img.bits_stored, img.photometric, rng)
    del phantom.density
    spacing = FULL_SIZE_SPACING_MM * FULL_SIZE[0] / rows

    test = img.split == "test"
    dcm_path = root / ("dicom_test" if test else "dicom") / img.pid / f"{img.image_id}.dcm"
    ds = build_dicom(img, stored, center, width, seed, spacing)
    released = released_image(stored, ds)
    first_center, first_width = windows_in(ds)[0]
    with atomic_path(dcm_path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    del ds, stored

    csaws = root / "CsawS"
    image_dir = (csaws / "test_data" / "anonymized_dataset" if test else csaws / "anonymized_dataset") / img.pid
    write_png(image_dir / f"{img.image_id}.png", released)
    if test:
        for k in ANNOTATORS:
            folder = csaws / "test_data" / f"annotator_{k}" / img.pid
            write_png(folder / f"{img.image_id}_{MAIN_CLASS}.png", _mask_png(phantom.expert_cancer[k - 1]))
            if k == 3:
                continue
            for name in MASK_CLASSES[1:]:
                write_png(folder / f"{img.image_id}_{name}.png", _mask_png(phantom.masks[name]))
    else:
        for name in MASK_CLASSES:
            write_png(image_dir / f"{img.image_id}_{name}.png", _mask_png(phantom.masks[name]))

    # one vocabulary across manifests: patient_id, px_<class>
    row = {("patient_id" if k == "pid" else k): v for k, v in asdict(img).items()}
    row.update(
        dicom=str(dcm_path.relative_to(root)), rows=rows, cols=cols,
        window_center=first_center, window_width=first_width,
        pixel_spacing_mm=spacing,
        transfer_syntax="1.2.840.10008.1.2.4.90" if img.jpeg2000 else "1.2.840.10008.1.2.1",
    )
    for name in MASK_CLASSES:
        row[f"px_{name}"] = int(np.count_nonzero(phantom.masks[name]))
    return row


# --------------------------------------------------------------------------- the dataset


def _prepare_root(root: Path) -> None:
    """Refuse a non-empty folder that is not a previous sample; clear a previous sample's files."""
    if root.exists() and not root.is_dir():
        raise OutputError(f"{root}: exists and is not a folder")
    if root.is_dir() and any(root.iterdir()):
        if not (root / MARKER).is_file():
            raise OutputError(
                f"{root}: folder is not empty and does not hold a previous sample; choose an empty or new folder"
            )
        for name in _OWNED:
            path = root / name
            if path.is_symlink():
                raise OutputError(f"{path}: is a symbolic link (to {os.readlink(path)}); a previous sample's "
                                  "folders are replaced, never followed: remove the link or choose another folder")
        for name in _OWNED:
            path = root / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    root.mkdir(parents=True, exist_ok=True)


def _parse_size(size: tuple[int, int] | None, full_size: bool) -> tuple[int, int]:
    if full_size:
        if size is not None and tuple(size) != FULL_SIZE:
            raise ValueError("give either size or full_size, not both")
        return FULL_SIZE
    if size is None:
        return DEFAULT_SIZE
    return check_size(size)


def check_size(size: tuple[int, int]) -> tuple[int, int]:
    """Validate an image size (rows, columns); raise ValueError when unusable."""
    rows, cols = (int(v) for v in size)
    if rows < 128 or cols < 96:
        raise ValueError(f"size {rows} x {cols} is too small; at least 128 x 96 pixels")
    if rows > 8192 or cols > 8192:
        raise ValueError(f"size {rows} x {cols} is too large; at most 8192 pixels a side")
    return rows, cols


def write_sample(
    root: str | Path,
    *,
    seed: int = defaults.SEED,
    n_train_patients: int = defaults.SAMPLE_TRAIN_PATIENTS,
    n_test_patients: int = defaults.SAMPLE_TEST_PATIENTS,
    size: tuple[int, int] | None = None,
    full_size: bool = False,
    workers: int | None = defaults.WORKERS,
) -> SampleInfo:
    """Write a synthetic CSAW-S-like dataset under ``root`` (see the module docstring).

    ``size`` is (rows, columns), default :data:`DEFAULT_SIZE`; ``full_size``
    gives 4096 x 3328. ``workers``: processes drawing images (default: all
    cores, as every stage; the files are identical for any number). ``root`` must be empty, new, or a
    previous sample (whose files are then replaced); anything else is an
    :class:`~csaws_tools.errors.OutputError`.
    """
    if n_train_patients < 1 or n_test_patients < 0:
        raise ValueError("need at least one train/val patient and zero or more test patients")
    if n_train_patients + n_test_patients > 1000:
        raise ValueError("at most 1000 patients (ids are three digits)")
    size = _parse_size(size, full_size)
    root = Path(root)
    try:
        return _write_sample(root, seed, n_train_patients, n_test_patients, size, workers)
    except OSError as exc:
        where = exc.filename or root
        raise OutputError(f"{where}: cannot write the sample ({exc.strerror or exc})") from None


def _write_image_at(image: SampleImage, *, root: Path, size: tuple[int, int], seed: int) -> dict:
    return write_image(image, root, size, seed)


def _write_sample(root: Path, seed: int, n_train_patients: int, n_test_patients: int, size: tuple[int, int],
                  workers: int | None) -> SampleInfo:
    _prepare_root(root)
    images = plan_sample(seed, n_train_patients, n_test_patients)

    rows = map_ordered(functools.partial(_write_image_at, root=root, size=size, seed=seed), images, workers)

    train_pids = [f"{p:03d}" for p in range(n_train_patients)]
    test_pids = [f"{p:03d}" for p in range(n_train_patients, n_train_patients + n_test_patients)]
    csaws = root / "CsawS"
    write_text_atomic(csaws / "training_random_splits.json", json.dumps(random_splits(train_pids, seed), indent=1))

    import pandas as pd

    table = pd.DataFrame(rows)
    with atomic_path(root / MANIFEST) as tmp:
        table.to_parquet(tmp, index=False)
    info = SampleInfo(
        root=root, seed=seed, size=size,
        train_ids=[i.image_id for i in images if i.split == "trainval"],
        test_ids=[i.image_id for i in images if i.split == "test"],
        train_patients=train_pids, test_patients=test_pids,
        validation_patients=[p for p in train_pids if p in SUGGESTED_VALIDATION],
        dicom_dir=root / "dicom", dicom_test_dir=root / "dicom_test", csaws_dir=csaws, images=images,
    )
    write_text_atomic(root / MARKER, json.dumps({
        "generator": "csaws-tools sample", "seed": seed, "size": list(size),
        "n_train_patients": n_train_patients, "n_test_patients": n_test_patients,
        "train_ids": info.train_ids, "test_ids": info.test_ids,
    }, indent=1))
    return info


__all__ = [
    "ANNOTATORS",
    "build_dicom",
    "check_size",
    "DEFAULT_SIZE",
    "density_to_stored",
    "FULL_SIZE",
    "FULL_SIZE_SPACING_MM",
    "MANIFEST",
    "MANUFACTURER",
    "MARKER",
    "MG_FOR_PRESENTATION",
    "plan_sample",
    "random_splits",
    "released_image",
    "SampleImage",
    "SampleInfo",
    "SUGGESTED_VALIDATION",
    "VOI_STYLES",
    "VOIStyle",
    "window_presets",
    "write_image",
    "write_sample",
]
