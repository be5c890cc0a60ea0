"""Check a dataset before a long run, reading only file names and image headers (writes nothing).

Like nnU-Net's ``--verify_dataset_integrity``, for the inputs of
``merge-masks``: the CSAW-S release layout (protocol section 1) or plain
folders of images ``<image>.png`` with masks ``<image>_<class>.png`` beside
them. Every problem is one :class:`Finding`; :func:`check_dataset` returns
them all with counts, and nothing is ever decoded beyond a header: PNG sizes
come from the IHDR chunk and the chunk chain is followed (by seeking) to
``IEND`` to catch truncated files; other formats are opened lazily by Pillow.

What is found (``Finding.kind``):

``missing_masks``       an image lacks some of the expected class masks (all 11; annotator 3 of
                        the test set: cancer only)
``extra_masks``         masks a folder should not hold (complementary masks of annotator 3,
                        masks among the test images)
``duplicate_masks``     two files for one class of one image (``.png`` and ``.tif``, two spellings)
``duplicate_images``    two files for one image id
``unknown_tokens``      ``<image>_<token>`` where ``token`` is no CSAW-S class
``size_mismatch``       a mask whose size differs from its image's
``image_without_masks`` an image with no class masks (per test annotator in the release)
``masks_without_image`` class masks with no image
``unreadable``          a file or folder that cannot be read: truncated or corrupt header, too large
                        (``csaws_tools.limits``), broken symbolic link, symbolic-link loop
``bad_name``            a file name that is not valid UTF-8
``missing_annotators``  a test set without all of ``annotator_1`` .. ``annotator_3``
``patient_overlap``     a patient with images both in train/val and in test
"""

from __future__ import annotations

import errno
import os
import re
import struct
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import InputError, one_line
from ..execution.manifests import escape_text
from ..files import IMAGE_SUFFIXES, MAP_SUFFIXES
from ..limits import check_pixels
from ..masks.classes import MAIN_CLASS, MASK_CLASSES, split_mask_stem
from ..png import png_size

#: Finding kinds in the order of the summary table, with their table labels.
KINDS: dict[str, str] = {
    "missing_masks": "images missing class masks",
    "extra_masks": "masks that do not belong",
    "duplicate_masks": "duplicate masks",
    "duplicate_images": "duplicate images",
    "unknown_tokens": "unknown class tokens",
    "size_mismatch": "mask/image size mismatches",
    "image_without_masks": "images without masks",
    "masks_without_image": "masks without an image",
    "unreadable": "unreadable files or folders",
    "bad_name": "file names not UTF-8",
    "missing_annotators": "test annotators missing",
    "patient_overlap": "patients in train/val and test",
}
#: Binary class masks: the lossless image suffixes (:data:`csaws_tools.files.MAP_SUFFIXES`).
MASK_SUFFIXES = MAP_SUFFIXES
TEST_FOLDERS = frozenset({"test_data", "test"})
TEST_ANNOTATORS = ("1", "2", "3")
CANCER_ONLY_ANNOTATORS = ("3",)
_RELEASE_IMAGE = re.compile(r"^[^_]+_\d{1,2}$")


def printable(path: str | os.PathLike) -> str:
    """A path as text that can always be printed: bytes that are not UTF-8 become ``\\xNN`` (manifests' escaping)."""
    return escape_text(os.fspath(path))


@dataclass
class Finding:
    """One problem: its kind (see the module docstring), the file or folder, and a one-line message."""

    kind: str
    path: str
    message: str
    image_id: str | None = None


@dataclass
class CheckReport:
    """Everything :func:`check_dataset` found."""

    root: str
    layout: str
    findings: list[Finding] = field(default_factory=list)
    images: int = 0
    masks: int = 0
    annotators: list[str] = field(default_factory=list)
    trainval_patients: int = 0
    test_patients: int = 0

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def exit_code(self) -> int:
        """0 when nothing is wrong, 1 otherwise."""
        return 0 if self.ok else 1

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(KINDS, 0)
        for f in self.findings:
            out[f.kind] = out.get(f.kind, 0) + 1
        return out

    def add(self, kind: str, path: str | os.PathLike, message: str, image_id: str | None = None) -> None:
        self.findings.append(Finding(kind, printable(path), message, printable(image_id) if image_id else None))

    def to_dict(self) -> dict:
        return {"root": self.root, "layout": self.layout, "ok": self.ok, "images": self.images,
                "masks": self.masks, "annotators": self.annotators,
                "trainval_patients": self.trainval_patients, "test_patients": self.test_patients,
                "counts": self.counts(), "findings": [asdict(f) for f in self.findings]}

    def format(self, per_kind: int = 10) -> str:
        """The summary table and the findings (at most ``per_kind`` lines of each kind)."""
        lines = [f"checked {self.root} ({self.layout} layout): {self.images} images, {self.masks} masks, "
                 f"{self.trainval_patients} train/val and {self.test_patients} test patients"
                 + (f", test annotators {', '.join(self.annotators)}" if self.layout == "release" else "")]
        counts = self.counts()
        width = max(len(v) for v in KINDS.values())
        lines.append("")
        lines.append(f"  {'check':<{width}}  found")
        for kind, label in KINDS.items():
            lines.append(f"  {label:<{width}}  {counts[kind]:>5}")
        shown: dict[str, int] = {}
        details = []
        for f in self.findings:
            shown[f.kind] = shown.get(f.kind, 0) + 1
            if shown[f.kind] <= per_kind:
                details.append(f"{f.kind}: {f.path}: {f.message}")
        for kind, n in shown.items():
            if n > per_kind:
                details.append(f"{kind}: ... and {n - per_kind} more (the JSON report lists them all)")
        if details:
            lines.append("")
            lines.extend(details)
        lines.append("")
        lines.append("OK: nothing wrong found" if self.ok else
                     f"{len(self.findings)} problem{'s' if len(self.findings) != 1 else ''} found")
        return "\n".join(lines)


# ---------------------------------------------------------------- headers

def header_size(path: str | os.PathLike) -> tuple[int, int]:
    """(rows, columns) from an image's header, without decoding its pixels.

    PNG: the IHDR chunk, and the chunk chain followed by seeking to ``IEND``
    so that a truncated file is caught; other formats: Pillow's lazy open.
    The size is checked against :func:`csaws_tools.limits.check_pixels`.
    """
    path = os.fspath(path)
    if path.lower().endswith(".png"):
        try:
            total = os.path.getsize(path)
            with open(path, "rb") as fh:
                try:
                    height, width = png_size(path)
                except ValueError:
                    raise InputError(f"{printable(path)}: not a PNG file (or truncated before its header)") from None
                pos = 8
                while True:
                    fh.seek(pos)
                    chunk = fh.read(8)
                    if len(chunk) < 8:
                        raise InputError(f"{printable(path)}: truncated PNG (no IEND chunk; the file ends at byte "
                                         f"{total})")
                    length, kind = struct.unpack(">I4s", chunk)
                    pos += 12 + length
                    if kind == b"IEND":
                        break
                    if pos > total:
                        raise InputError(f"{printable(path)}: truncated PNG (a {kind.decode('latin-1')!r} chunk "
                                         f"runs past the end of the file at byte {total})")
        except OSError as exc:
            raise InputError(f"{printable(path)}: cannot read ({exc.strerror or one_line(exc)})") from None
    else:
        try:
            from PIL import Image

            with Image.open(path) as im:
                width, height = im.size
        except Exception as exc:  # noqa: BLE001 - any reader failure is an unreadable file
            raise InputError(f"{printable(path)}: cannot read the image header ({one_line(exc)})") from None
    check_pixels((height, width), printable(path))
    return int(height), int(width)


# ---------------------------------------------------------------- walking

def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


class _Walker:
    """Depth-first, sorted, hidden entries skipped; links followed once; every failure one finding."""

    def __init__(self, report: CheckReport):
        self.report = report
        self.seen: set[tuple[int, int]] = set()

    def walk(self, top: Path) -> Iterator[tuple[Path, list[Path]]]:
        try:
            st = os.stat(top)
            entries = sorted(os.scandir(top), key=lambda e: e.name)
        except OSError as exc:
            self.report.add("unreadable", top, f"cannot read folder ({exc.strerror or one_line(exc)})")
            return
        key = (st.st_dev, st.st_ino)
        if key in self.seen:
            self.report.add("unreadable", top, "links to a folder already walked (a symbolic-link loop); not "
                                               "walked again")
            return
        self.seen.add(key)
        files: list[Path] = []
        dirs: list[Path] = []
        for e in entries:
            if e.name.startswith("."):
                continue
            if not _utf8(e.name):
                self.report.add("bad_name", e.path, "file name is not valid UTF-8; rename it")
                continue
            try:
                if e.is_dir():
                    dirs.append(Path(e.path))
                elif e.is_file():
                    files.append(Path(e.path))
                elif e.is_symlink():
                    os.stat(e.path)
            except OSError as exc:
                what = ("symbolic-link loop" if exc.errno == errno.ELOOP else
                        "broken symbolic link" if exc.errno == errno.ENOENT else exc.strerror or one_line(exc))
                self.report.add("unreadable", e.path, f"cannot follow ({what})")
        yield top, files
        for d in dirs:
            yield from self.walk(d)


# ---------------------------------------------------------------- grouping

@dataclass
class _Group:
    image_id: str
    split: str  # "trainval" or "test"
    annotator: str | None
    folder: Path
    masks: dict[str, list[Path]] = field(default_factory=dict)
    unknown: dict[str, Path] = field(default_factory=dict)
    geojson: Path | None = None


def _classify(files: list[Path], image_pattern: re.Pattern | None = None
              ) -> tuple[dict[str, list[Path]], dict[str, dict[str, list[Path]]], dict[str, dict[str, Path]],
                         dict[str, Path]]:
    """Split one folder's files into images, masks by image and class, unknown-token masks, GeoJSON files."""
    images: dict[str, list[Path]] = {}
    masks: dict[str, dict[str, list[Path]]] = {}
    rest: list[Path] = []
    geojson: dict[str, Path] = {}
    for f in files:
        suffix = f.suffix.lower()
        if suffix == ".geojson":
            geojson[f.stem] = f
            continue
        if suffix not in IMAGE_SUFFIXES:
            continue
        image_id, token = split_mask_stem(f.stem) if suffix in MASK_SUFFIXES else (f.stem, None)
        if token is not None:
            masks.setdefault(image_id, {}).setdefault(token, []).append(f)
        else:
            rest.append(f)
    candidates = [f for f in rest if image_pattern is None or image_pattern.match(f.stem)]
    ids = {f.stem for f in candidates}
    prefixes = sorted(set(masks) | ids, key=len, reverse=True)
    unknown: dict[str, dict[str, Path]] = {}
    for f in rest:
        owner = next((p for p in prefixes if f.stem.startswith(p + "_")), None)
        if owner is not None and f.suffix.lower() in MASK_SUFFIXES:
            unknown.setdefault(owner, {})[f.stem[len(owner) + 1:]] = f
        elif f in candidates or image_pattern is None:
            images.setdefault(f.stem, []).append(f)
        else:
            unknown.setdefault(f.stem, {})[""] = f
    return images, masks, unknown, geojson


def find_layout(root: Path) -> tuple[str, Path]:
    """``("release", CsawS folder)`` or ``("plain", root)``."""
    for cand in (root, root / "CsawS", root / "CSAW-S", root / "csaws"):
        try:
            if (cand / "anonymized_dataset").is_dir() or (cand / "test_data").is_dir():
                return "release", cand
        except OSError:
            continue
    return "plain", root


def check_dataset(root: str | os.PathLike) -> CheckReport:
    """Check the dataset under ``root`` (release layout or plain folders); read headers only, write nothing."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{printable(root)}: not a folder")
    layout, base = find_layout(root)
    report = CheckReport(root=printable(root), layout=layout)
    walker = _Walker(report)
    images: dict[tuple[str, str], list[Path]] = {}  # (split, image id) -> image files
    groups: list[_Group] = []

    def collect(folder: Path, files: list[Path], split: str, annotator: str | None, pattern=None,
                masks_allowed: bool = True, images_allowed: bool = True) -> None:
        imgs, masks, unknown, geojson = _classify(files, pattern)
        if images_allowed:
            for image_id, paths in imgs.items():
                images.setdefault((split, image_id), []).extend(paths)
        else:
            for paths in imgs.values():
                for p in paths:
                    report.add("extra_masks", p, "an image file in an annotator folder (masks only belong here)")
        for image_id in sorted(set(masks) | set(unknown) | set(geojson)):
            if not masks_allowed:
                for paths in masks.get(image_id, {}).values():
                    for p in paths:
                        report.add("extra_masks", p, "a class mask among the test images; test masks belong "
                                                     "under test_data/annotator_<k>/", image_id)
                continue
            groups.append(_Group(image_id, split, annotator, folder, masks.get(image_id, {}),
                                 unknown.get(image_id, {}), geojson.get(image_id)))

    if layout == "release":
        for folder, files in walker.walk(base / "anonymized_dataset") if (base / "anonymized_dataset").exists() else ():
            collect(folder, files, "trainval", None, _RELEASE_IMAGE)
        test = base / "test_data"
        if test.is_dir():
            for folder, files in walker.walk(test / "anonymized_dataset") if (test / "anonymized_dataset").exists() else ():
                collect(folder, files, "test", None, _RELEASE_IMAGE, masks_allowed=False)
            try:
                annotator_dirs = sorted(d for d in test.iterdir() if d.name.startswith("annotator_") and d.is_dir())
            except OSError as exc:
                report.add("unreadable", test, f"cannot read folder ({exc.strerror or one_line(exc)})")
                annotator_dirs = []
            report.annotators = [d.name for d in annotator_dirs]
            missing = [f"annotator_{k}" for k in TEST_ANNOTATORS if f"annotator_{k}" not in report.annotators]
            if missing:
                report.add("missing_annotators", test, f"no {', '.join(missing)} folder(s): the consensus needs "
                                                       "the cancer masks of all three experts")
            for adir in annotator_dirs:
                k = adir.name[len("annotator_"):]
                for folder, files in walker.walk(adir):
                    collect(folder, files, "test", k, images_allowed=False)
    else:
        for folder, files in walker.walk(root):
            rel = folder.relative_to(root).parts
            split = "test" if TEST_FOLDERS.intersection(rel) else "trainval"
            annotator = next((p[len("annotator_"):] for p in reversed(rel) if p.startswith("annotator_")), None)
            collect(folder, files, split, annotator)

    _judge(report, images, groups)
    return report


def _judge(report: CheckReport, images: dict[tuple[str, str], list[Path]], groups: list[_Group]) -> None:
    """Turn what was found into findings."""
    from ..splits import patient_of

    sizes: dict[Path, tuple[int, int] | None] = {}

    def size(p: Path) -> tuple[int, int] | None:
        if p not in sizes:
            try:
                sizes[p] = header_size(p)
            except InputError as exc:
                msg, prefix = str(exc), printable(p) + ": "
                report.add("unreadable", p, msg.removeprefix(prefix))
                sizes[p] = None
        return sizes[p]

    report.images = sum(len(v) for v in images.values())
    for (_split, image_id), paths in sorted(images.items()):
        if len(paths) > 1:
            report.add("duplicate_images", paths[1], f"image {image_id} is also {printable(paths[0])}", image_id)
        for p in paths:
            size(p)
    with_masks: dict[tuple[str, str], set[str | None]] = {}
    for g in groups:
        key = (g.split, g.image_id)
        where = g.folder
        label = f"annotator {g.annotator}" if g.annotator else None
        expected = (MAIN_CLASS,) if g.annotator in CANCER_ONLY_ANNOTATORS else MASK_CLASSES
        report.masks += sum(len(v) for v in g.masks.values()) + len(g.unknown)
        if g.masks or g.geojson:
            with_masks.setdefault(key, set()).add(g.annotator)
        for token, raw in sorted(g.unknown.items()):
            report.add("unknown_tokens", raw, f"{token!r} is no CSAW-S class (valid: {', '.join(MASK_CLASSES)})"
                       if token else "neither an image nor a class mask", g.image_id)
        for token, paths in sorted(g.masks.items()):
            if len(paths) > 1:
                report.add("duplicate_masks", paths[1], f"second {token} mask of image {g.image_id} "
                                                        f"(also {printable(paths[0])})", g.image_id)
            if token not in expected:
                for p in paths:
                    report.add("extra_masks", p, f"annotator {g.annotator} gives {', '.join(expected)} only",
                               g.image_id)
        if g.masks and not g.geojson:
            missing = [c for c in expected if c not in g.masks]
            if missing:
                report.add("missing_masks", where, f"image {g.image_id}{' (' + label + ')' if label else ''} has no "
                           f"mask of: {', '.join(missing)}", g.image_id)
        image_paths = images.get(key)
        if not image_paths:
            if g.masks or g.geojson:
                report.add("masks_without_image", where, f"masks of image {g.image_id} but no image "
                           f"{g.image_id}.png|tif|jpg" + (" in the test images" if g.split == "test" else " beside them"),
                           g.image_id)
            continue
        ref = size(image_paths[0])
        if ref is None:
            continue
        for paths in g.masks.values():
            for p in paths:
                got = size(p)
                if got is not None and got != ref:
                    report.add("size_mismatch", p, f"mask is {got[0]}x{got[1]} but image "
                               f"{printable(image_paths[0])} is {ref[0]}x{ref[1]} (rows x columns)", g.image_id)
    for (split, image_id), paths in sorted(images.items()):
        annotated = with_masks.get((split, image_id), set())
        if split == "test" and report.layout == "release":
            for k in sorted(set(report.annotators) - {f"annotator_{a}" for a in annotated if a}):
                report.add("image_without_masks", paths[0], f"test image {image_id} has no masks of {k}", image_id)
        elif not annotated:
            report.add("image_without_masks", paths[0], f"image {image_id} has no class masks "
                       "(expected <image>_<class>.png beside it)", image_id)
    trainval = {patient_of(i) for s, i in images if s == "trainval"}
    test = {patient_of(i) for s, i in images if s == "test"}
    report.trainval_patients, report.test_patients = len(trainval), len(test)
    for pid in sorted(trainval & test):
        report.add("patient_overlap", pid, f"patient {pid} has images both in train/val and in test: the test "
                                           "images are not independent of training")


__all__ = ["KINDS", "CheckReport", "Finding", "check_dataset", "find_layout", "header_size", "printable"]
