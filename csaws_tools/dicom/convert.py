"""DICOM to 8/16-bit PNG, the way the CSAW-S study prepared its images (protocol section 2).

Python API:

* :func:`convert` - a batch: files and folders in, PNGs and ``manifest.parquet`` out
  (what ``csaws-prepare dicom2png`` runs);
* :func:`convert_file` - one DICOM file (or one frame of it) to one PNG, returning its manifest row;
* :func:`to_array` - one DICOM file to a rendered numpy array and what was applied,
  for training code that wants pixels without files;
* :func:`load_image` - the checked, decoded stored values and the header;
* :func:`find_inputs`, :func:`is_dicom`, :class:`NameTemplate` - input discovery and output naming.

The pixel steps themselves (Modality LUT, VOI window or LUT, output range,
MONOCHROME1 inversion) are in :mod:`csaws_tools.voi`. Greyscale images
follow PS3.3 C.11; colour images (RGB, YBR, PALETTE COLOR) become 8-bit RGB
PNGs with no VOI step.

Example::

    from csaws_tools.dicom2png import convert, to_array
    result = convert(["raw/"], "png/", voi="auto", bits=8, workers=4)
    print(result.summary())                     # "120 converted, 3 skipped, 1 failed"
    image, info = to_array("raw/p1/img.dcm")    # uint8 array, {"voi_kind": "window", ...}
"""
from __future__ import annotations

import functools
import json
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import defaults
from ..errors import CsawsError, InputError, OutputError, one_line
from ..execution.options import RunOptions, run_options
from ..execution.runner import (
    BatchResult,
    ensure_writable_dir,
    in_shard,
    run_batch,
    settings_hash,
)
from ..execution.tasks import Task
from ..identity import file_identity
from ..png import SETTINGS_KEY, read_text, write_png
from . import voi as voi_mod
from .discovery import (
    DICOM_SUFFIXES,
    NameTemplate,
    _printable,
    default_output_name,
    find_inputs,
    is_dicom,
)
from .header import (
    HEADER_COLUMNS,
    NotAnImage,
    _dcmread,
    _int,
    captured,
    header_fields,
    read_header,
    transfer_syntax,
)
from .pixels import _clean, load_image
from .render import (
    FRAME_ALL,
    MANIFEST_NAME,
    PIPELINE_VERSION,
    VOI_KEY,
    Options,
    _frame_setting,
    render_dataset,
)

# --------------------------------------------------------------------------- one file


_VOI_FIELDS = ("voi_kind", "voi_index", "window_center", "window_width", "voi_function", "voi_explanation",
               "fallback_reason", "modality_kind", "inverted", "frame", "bits", "padding_pixels")


def _empty_row() -> dict:
    row: dict[str, Any] = {"reason": None, "warnings": None}
    row.update({c: None for c in HEADER_COLUMNS})
    row["TransferSyntaxUID"] = None
    row.update({c: None for c in _VOI_FIELDS})
    return row


def is_own_output(text: dict[str, str]) -> bool:
    """Whether PNG text chunks (:func:`csaws_tools.png.read_text`) are those of a dicom2png output."""
    return SETTINGS_KEY in text and VOI_KEY in text


def file_digest(run_digest: str, source: str | os.PathLike, frame: int | None) -> str:
    """The settings hash one output records: the run's settings, the input's identity and the frame.

    An edited input (new size or modification time, or content with
    ``CSAWS_HASH_INPUTS=1``) gets a new hash, so a rerun redoes its PNG.
    """
    return settings_hash({"run": run_digest, "input": file_identity(source), "frame": frame})


def convert_file(
    source: str | os.PathLike,
    output: str | os.PathLike,
    options: Options | None = None,
    *,
    settings_digest: str | None = None,
    overwrite: bool = False,
    frame: int | None = None,
) -> dict:
    """Convert one DICOM file (frame ``frame`` of a multi-frame file) to a PNG at ``output``; return its manifest row.

    ``frame`` defaults to ``options.frame`` when that is a number. The PNG
    is written atomically and records a hash of ``settings_digest``, the
    input's identity and the frame (tEXt ``csaws:settings``) and the VOI used
    (``csaws:voi``). When ``output`` already records the same hash, nothing
    is done and the row says ``skipped`` (unless ``overwrite``). An existing
    file at ``output`` that this tool did not write is never replaced (the
    row is an error). A bad input gives a row with ``status="error"`` and a
    one-line ``error``; a DICOMDIR a ``skipped`` row. Warnings of pydicom
    and of the codecs are collected into the row's ``warnings``.
    """
    options = options or Options()
    if frame is None and isinstance(options.frame, int):
        frame = options.frame
    run_digest = settings_digest or settings_hash(options.settings())
    start = time.perf_counter()
    row = _empty_row()
    row.update(source=str(source), output=str(output), status="ok", error=None)
    notes: list[str] = []
    try:
        with captured(notes):
            _convert(source, output, options, run_digest, overwrite, frame, row, notes)
    except NotAnImage as exc:
        row.update(status="skipped", reason=str(exc), output=None)
    except CsawsError as exc:
        row.update(status="error", error=one_line(exc))
    except MemoryError:
        row.update(status="error", error="out of memory while decoding (lower max_pixels= or workers=)")
    except Exception as exc:  # noqa: BLE001 - one bad file never stops a batch
        row.update(status="error", error=_clean(f"cannot read the file ({one_line(exc)})")[:500])
    row["warnings"] = "; ".join(notes) or None
    row["seconds"] = time.perf_counter() - start
    return row


def _convert(source, output, options: Options, run_digest: str, overwrite: bool, frame: int | None,
             row: dict, notes: list[str]) -> None:
    digest = file_digest(run_digest, source, frame)
    text = read_text(output)
    if os.path.lexists(output) and not is_own_output(text):
        raise OutputError(f"{output} exists and was not written by dicom2png; not overwriting it (remove it, "
                          "or choose another output folder)")
    if not overwrite and text.get(SETTINGS_KEY) == digest:
        row.update(status="skipped", reason="output exists with the same settings")
        try:
            row.update(json.loads(text.get(VOI_KEY, "{}")))
        except ValueError:
            pass
        row.update(header_fields(read_header(source)))
        return
    image, ds = load_image(source, frame=frame, on_header=lambda d: row.update(header_fields(d)),
                           colour=options.colour, notes=notes)
    out, info = render_dataset(image, ds, options)
    del image
    info["frame"] = frame if int(ds.get("NumberOfFrames") or 1) > 1 else None
    row.update(info)
    voi_text = json.dumps({k: info.get(k) for k in _VOI_FIELDS}, sort_keys=True)
    try:
        write_png(output, out, text={SETTINGS_KEY: digest, VOI_KEY: voi_text})
    except OSError as exc:
        raise OutputError(f"cannot write {output} ({exc.strerror or one_line(exc)})") from None


@dataclass(frozen=True)
class ConvertArgs:
    """One conversion task's own settings."""

    #: The frame of a multi-frame file to render (0-based, PS3.3 C.7.6.6 Number of Frames);
    #: None: a single-frame file, or no frame asked for.
    frame: int | None = None


def _task_worker(task: Task[ConvertArgs], *, options: Options, digest: str, overwrite: bool) -> dict:
    """Batch worker: one :class:`Task` -> one manifest row."""
    assert task.output is not None
    return convert_file(task.source, task.output, options, settings_digest=digest, overwrite=overwrite,
                        frame=task.args.frame)


# --------------------------------------------------------------------------- batch


def _frames_in(path: Path, template: NameTemplate | None):
    """The header fields planning needs (name fields, Number of Frames) and the checked frame count."""
    tags = [0x00280008, 0x00280010, 0x00280011, 0x00280100, 0x00280002, 0x00020010]
    tags += list(template.tags) if template is not None else []
    try:
        ds = _dcmread(path, stop_before_pixels=True, specific_tags=tags)
    except OSError as exc:
        raise InputError(f"cannot read the file ({exc.strerror or one_line(exc)})") from None
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"cannot parse the DICOM header ({one_line(exc)})") from None
    try:
        frames = _int(ds, "NumberOfFrames", 1) or 1
    except InputError:
        return ds, 1  # reported by the worker, with the rest of the file's checks
    if frames > 1:
        # Every frame takes at least a few bytes: a header claiming more frames than the
        # file can hold would otherwise make millions of tasks out of one small file.
        size = path.stat().st_size
        try:
            frame_bytes = max(1, ((_int(ds, "Rows", 1) or 1) * (_int(ds, "Columns", 1) or 1)
                                  * (_int(ds, "SamplesPerPixel", 1) or 1) * (_int(ds, "BitsAllocated", 8) or 8)) // 8)
        except InputError:
            frame_bytes = 1
        tsyntax = transfer_syntax(ds)
        if tsyntax is not None and tsyntax.is_transfer_syntax and tsyntax.is_encapsulated:
            frame_bytes = 8  # an item header per frame at least
        if frames * frame_bytes > size:
            raise InputError(f"Number of Frames {frames} is more than the file ({size} bytes) can hold")
    return ds, frames


def plan(
    inputs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    name: str | NameTemplate | None = None,
    shard: tuple[int, int] | None = None,
    frame: int | str | None = None,
) -> tuple[list[Task[ConvertArgs]], list[dict]]:
    """Tasks for every DICOM file (or frame) under ``inputs`` and rows for the rest.

    Non-DICOM files become ``skipped`` rows (reason ``not a DICOM file``);
    empty and unreadable files, and files whose ``name`` template cannot be
    filled, become ``error`` rows. With ``frame`` set, multi-frame files
    give one task per frame (``"all"``) or for frame ``frame``, named
    ``<stem>_f<k>.png``. This tool's own outputs inside ``out`` (when ``out``
    is an input folder) are left out. With ``shard``, files of other shards
    are left unopened (a job of a job array reads only its own part).
    """
    out = Path(out)
    out_resolved = out.resolve()
    template = NameTemplate(name) if isinstance(name, str) else name
    frame = _frame_setting(frame)
    tasks: list[Task[ConvertArgs]] = []
    rows: list[dict] = []
    for found in find_inputs(inputs, exclude=out):
        key = _printable(found.relative.as_posix())
        if not in_shard(key, shard):
            continue
        base = {"source": str(found.path), "output": None}
        if found.note is not None:
            rows.append({**base, "status": "skipped", "error": None, "reason": found.note})
            continue
        if _is_own_file(found.path, out_resolved):
            continue
        try:
            if not is_dicom(found.path):
                rows.append({**base, "status": "skipped", "error": None, "reason": "not a DICOM file"})
                continue
            stem = found.relative.name
            if found.relative.suffix.lower() in DICOM_SUFFIXES:
                stem = found.relative.stem
            ds, frames = (None, 1)
            if template is not None or frame is not None:
                with warnings.catch_warnings():  # invalid values are reported by the file's own row
                    warnings.simplefilter("ignore")
                    ds, frames = _frames_in(found.path, template)
            if frames > 1 and frame is not None:
                wanted = range(frames) if frame == FRAME_ALL else [int(frame)]
            else:
                wanted = [None]  # type: ignore[list-item]
            for k in wanted:
                if template is not None:
                    rel = template.render(ds, stem, k, frames)
                else:
                    rel = default_output_name(found.relative, k, frames)
                # frames of one file share its key, so that they fall in the same shard
                tasks.append(Task(key=key, source=str(found.path),
                                  output=str(out / rel), args=ConvertArgs(frame=k)))
        except InputError as exc:
            rows.append({**base, "status": "error", "error": one_line(exc), "reason": None})
            continue
    return tasks, rows


def _is_own_file(path: Path, out_resolved: Path) -> bool:
    """Whether ``path`` is something this tool wrote into the output folder (a rerun into an input folder)."""
    try:
        resolved = path.resolve()
    except OSError:
        return False
    if out_resolved not in resolved.parents:
        return False
    name = path.name
    if name.startswith("manifest") and name.endswith(".parquet") and resolved.parent == out_resolved:
        return True
    return name.lower().endswith(".png") and is_own_output(read_text(path))


def nothing_found(result: BatchResult) -> bool:
    """True when a run converted nothing, found nothing up to date and failed nothing: no DICOM image at all."""
    if result.interrupted or result.failed:
        return False
    return not any(r.get("status") == "ok" or r.get("reason") == "output exists with the same settings"
                   for r in result.rows)


def convert(
    inputs: Sequence[str | os.PathLike] | str | os.PathLike,
    out: str | os.PathLike,
    *,
    voi: str = defaults.VOI,
    voi_index: int | None = None,
    bits: int = defaults.BITS,
    fallback: str = defaults.FALLBACK,
    frame: int | str | None = None,
    name: str | None = None,
    percentiles: tuple[float, float] = voi_mod.DEFAULT_PERCENTILES,
    colour: str = defaults.COLOUR,
    run: RunOptions | None = None,
    **run_keywords: Any,
) -> BatchResult:
    """Convert every DICOM file under ``inputs`` to a PNG under ``out``; write ``out/manifest.parquet``.

    Outputs are ``out/<path relative to the input folder>.png`` (``a.dcm``
    becomes ``a.png``; a file given directly becomes ``out/<stem>.png``;
    frame ``k`` of a multi-frame file ``<stem>_f<k>.png``), or ``out/<name
    template>.png``. See :func:`convert_file` for one file and
    :mod:`csaws_tools.voi` for the pixel steps. Returns the
    :class:`~csaws_tools.batch.BatchResult` (rows, counts, exit code);
    :func:`nothing_found` tells whether any DICOM image was found.
    """
    run = run_options(run, run_keywords, "convert")
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    options = Options(voi=voi, voi_index=voi_index, bits=bits, fallback=fallback, frame=frame,
                      percentiles=tuple(float(p) for p in percentiles), colour=colour)  # type: ignore[arg-type]
    template = NameTemplate(name) if name else None
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: output folder cannot be written (it is a file, not a folder)")
    ensure_writable_dir(out)
    tasks, extra = plan(inputs, out, name=template, shard=run.shard, frame=options.frame)
    settings = {"command": "dicom2png", "pipeline": PIPELINE_VERSION, "name": name, **options.settings()}
    digest = settings_hash(settings)
    worker = functools.partial(_task_worker, options=options, digest=digest, overwrite=run.overwrite)
    return run_batch(
        tasks,
        worker,
        manifest=out / MANIFEST_NAME,
        settings=settings,
        run=run,
        label="dicom2png",
        extra_rows=extra,
        output_dir=out,
    )


__all__ = ["convert", "ConvertArgs", "convert_file", "file_digest", "is_own_output", "nothing_found", "plan"]
