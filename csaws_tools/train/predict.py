"""Apply a trained run to whole images: sliding-window inference, one label map per image.

``predict(RUN_DIR, IMAGES, OUT)`` reads the run's selected checkpoint
(``best.pt``), cuts each greyscale PNG into tiles of the run's crop size
(``config.json``: the training crop, 448 by default), runs the model on
batches of tiles, averages the softmax probabilities where tiles overlap and
writes the argmax as a palette PNG in the run's class numbering, with
``labels.json`` beside the maps (the format merge-masks writes).

Choices, also in docs/predict.md:

* Tiles start at (0, 0) and step ``tile * (1 - overlap)`` pixels; the right
  and bottom borders are padded with black (0 on [0, 1], before
  normalisation), as the test tiles of the study are (protocol section 4).
  ``overlap=0`` therefore gives the study's non-overlapping zero-padded tiles.
* Images are scaled to [0, 1] by their bit depth (8-bit / 255, 16-bit /
  65535) and normalised with the run's mean and std, exactly as the training
  crops were (``augment.prepare_eval``).
* Memory is bounded: only a band of rows of probabilities (classes x about one
  tile height x image width) is kept; rows are turned into labels as soon as
  no later tile touches them.
* Checkpoints are read with ``torch.load(weights_only=True)``: nothing is
  unpickled; a file that needs more is refused with one line naming it.

The batch runner gives the manifest (``OUT/manifest.parquet``), atomic
writes, one-line errors per image, skipping of maps that are up to date (the
settings hash folds in the checkpoint's SHA-256 and each input's identity)
and the exit status.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import write_text_atomic
from ..batch import BatchResult, Task, ensure_writable_dir, run_batch, settings_hash
from ..classes import labels_json, split_mask_stem
from ..errors import InputError, SettingsError, one_line
from ..files import files_under
from ..guards import is_inside
from ..identity import file_identity
from ..jsonfile import read_json_object
from ..labels import LabelScheme, parse_scheme, scheme_labels_table
from ..limits import check_pixels
from ..png import SETTINGS_KEY, made_with, png_header, read_png, write_png
from .augment import MEAN, STD
from .loop import load_checkpoint

__all__ = [
    "DEFAULT_BATCH_SIZE", "DEFAULT_OVERLAP", "Builder", "RunInfo", "build_run_model", "checkpoint_weights",
    "predict", "PredictArgs", "predict_image", "predict_worker", "read_image", "read_run", "tile_starts", "to_unit",
]

#: Fraction of a tile shared with its neighbour (MONAI's sliding-window default).
DEFAULT_OVERLAP = 0.25
#: Tiles per forward pass.
DEFAULT_BATCH_SIZE = 4
#: The selected checkpoint of a finished run.
SELECTED = "best.pt"

#: ``builder(num_classes, output_stride=..., aux_loss=...)`` -> a module whose
#: forward returns logits (B, C, H, W) or ``{"out": logits, ...}``.
Builder = Callable[..., torch.nn.Module]


def deeplab_builder(num_classes: int, *, output_stride: int = 8, aux_loss: bool = False) -> torch.nn.Module:
    """The study's DeepLabv3-ResNet50 (:func:`csaws_tools.train.model.build_model`)."""
    from .model import build_model

    return build_model(num_classes, output_stride=output_stride, aux_loss=aux_loss)


# ---------------------------------------------------------------- the run

@dataclass(frozen=True)
class RunInfo:
    """What inference needs to know about a run (from ``config.json`` and the checkpoint)."""

    run_dir: str
    checkpoint: str
    checkpoint_sha256: str
    scheme: str
    names: tuple[str, ...]
    colours: tuple[tuple[int, int, int], ...]
    output_stride: int
    aux_loss: bool
    tile: int
    mean: float
    std: float

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["names"] = list(self.names)
        d["colours"] = [list(c) for c in self.colours]
        return d


def checkpoint_weights(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """(state dict, other entries) of a checkpoint, read with ``weights_only=True``.

    A checkpoint is either ``{"model": state_dict, ...}`` (what training
    writes) or the state dict itself. Anything that would need unpickling
    arbitrary objects is refused without running it.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: checkpoint not found")
    raw = load_checkpoint(path)  # torch.load(weights_only=True)
    meta: dict = {}
    if isinstance(raw, dict) and isinstance(raw.get("model"), dict):
        meta = {k: v for k, v in raw.items() if k != "model"}
        raw = raw["model"]
    if not isinstance(raw, dict) or not raw or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in raw.items()):
        raise InputError(f"{path}: not a model checkpoint (expected a state dict of tensors or "
                         "{'model': state dict, ...})")
    return raw, meta


def _sha256(path: Path) -> str:
    ident = file_identity(path, content=True)
    return str(ident[2])


def _config(run_dir: Path) -> dict:
    path = run_dir / "config.json"
    if not path.is_file():
        return {}
    return read_json_object(path, "a run's config.json")


def _section(doc: dict, key: str) -> dict:
    value = doc.get(key)
    return value if isinstance(value, dict) else {}


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def _scheme_from(meta: dict, config: dict, state: dict[str, torch.Tensor], where: Path) -> LabelScheme:
    """The run's label scheme: checkpoint, else config.json, else from the classifier's width."""
    train_cfg = _section(config, "config")
    rec = config.get("scheme")
    spec = _first(meta.get("scheme") if isinstance(meta.get("scheme"), str) else None,
                  rec.get("spec") if isinstance(rec, dict) else rec if isinstance(rec, str) else None,
                  train_cfg.get("scheme"))
    if spec is None:
        head = state.get("classifier.4.weight")
        n = int(head.shape[0]) if head is not None else None
        spec = {2: "binary", 12: "all"}.get(n) if n else None
        if spec is None:
            raise InputError(f"{where}: the run's label scheme is not recorded (config.json 'scheme') and "
                             "cannot be told from the model")
    try:
        return parse_scheme(str(spec))
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"{where}: the run's label scheme {spec!r} is not valid ({one_line(exc)})") from None


def read_run(run_dir: str | os.PathLike, *, checkpoint: str | os.PathLike | None = None,
             tile: int | None = None) -> tuple[RunInfo, dict[str, torch.Tensor]]:
    """The run's settings and the checkpoint's state dict.

    ``checkpoint``: default ``RUN_DIR/best.pt`` (the selected checkpoint); a
    bare file name is looked up in ``run_dir``. ``tile``: default the run's
    training crop size (``config.json``, ``config.augment.crop``).
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise InputError(f"{run}: run folder not found")
    if checkpoint is None:
        ckpt = run / SELECTED
        if not ckpt.is_file():
            raise InputError(f"{ckpt}: no selected checkpoint (run not finished?); checkpoint='last.pt' "
                             "uses the last one", param="checkpoint")
    else:
        ckpt = Path(checkpoint)
        if not ckpt.is_file() and (run / ckpt).is_file():
            ckpt = run / ckpt
    state, meta = checkpoint_weights(ckpt)
    config = _config(run)
    inputs = config.get("inputs")
    if isinstance(inputs, dict) or int(_first(meta.get("in_channels"), 1)) != 1:
        what = inputs.get("dataset", "public-dataset") if isinstance(inputs, dict) else "colour"
        raise InputError(f"{run}: a run trained on {what} images ({int(_first(meta.get('in_channels'), 3))} "
                         "channels); predict labels grey mammograms with CSAW-S runs only")
    train_cfg = _section(config, "config")
    augment = _section(train_cfg, "augment")
    scheme = _scheme_from(meta, config, state, run / "config.json")
    recorded = meta.get("num_classes")
    if recorded is not None and int(recorded) != scheme.num_classes:
        raise InputError(f"{ckpt}: {int(recorded)} classes, but the run's scheme {scheme.spec!r} has "
                         f"{scheme.num_classes}")
    if tile is None:
        tile = augment.get("crop")
        if tile is None:
            raise SettingsError(f"{run / 'config.json'}: no training crop size recorded; give tile=N", param="tile")
    tile = int(tile)
    if tile < 8:
        raise SettingsError(f"tile={tile!r} must be at least 8 pixels", param="tile")
    info = RunInfo(
        run_dir=str(run), checkpoint=str(ckpt), checkpoint_sha256=_sha256(ckpt), scheme=scheme.spec,
        names=tuple(scheme.names), colours=tuple((int(c[0]), int(c[1]), int(c[2])) for c in scheme.colours()),
        output_stride=int(_first(meta.get("output_stride"), train_cfg.get("output_stride"), 8)),
        aux_loss=any(k.startswith("aux_classifier.") for k in state),
        tile=tile, mean=float(_first(augment.get("mean"), MEAN)), std=float(_first(augment.get("std"), STD)),
    )
    return info, state


def build_run_model(info: RunInfo, state: dict[str, torch.Tensor], *, builder: Builder | None = None,
                    device: torch.device | str = "cpu") -> torch.nn.Module:
    """The run's model with the checkpoint's weights, in eval mode on ``device``."""
    builder = builder or deeplab_builder
    model = builder(info.num_classes, output_stride=info.output_stride, aux_loss=info.aux_loss)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        text = " ".join(str(exc).split())
        raise InputError(f"{info.checkpoint}: weights do not fit the run's model "
                         f"({info.num_classes} classes, output stride {info.output_stride}): {text[:300]}") from None
    return model.to(device).eval()


# ---------------------------------------------------------------- sliding window

def tile_starts(length: int, tile: int, stride: int) -> list[int]:
    """Tile offsets along one axis: 0, stride, 2 stride, ... until the tiles cover ``length``.

    >>> tile_starts(530, 64, 64)[-1], tile_starts(530, 64, 48)[-1], tile_starts(50, 64, 48)
    (512, 480, [0])
    """
    if length <= tile:
        return [0]
    n = -(-(length - tile) // stride) + 1
    return [i * stride for i in range(n)]


def stride_of(tile: int, overlap: float) -> int:
    """Step between tiles: ``tile * (1 - overlap)`` rounded, at least 1 pixel."""
    if not 0.0 <= overlap < 1.0:
        raise SettingsError(f"overlap={overlap!r} must be in [0, 1)", param="overlap")
    return max(1, round(tile * (1.0 - overlap)))


def _autocast(device: torch.device, enabled: bool):
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    if isinstance(out, dict):
        out = out["out"]
    return out


@torch.inference_mode()
def predict_image(model: torch.nn.Module, image: np.ndarray, *, tile: int, overlap: float = DEFAULT_OVERLAP,
                  batch_size: int = DEFAULT_BATCH_SIZE, mean: float = MEAN, std: float = STD,
                  device: torch.device | str | None = None, amp: bool = True) -> tuple[np.ndarray, int]:
    """Label map (uint8, same rows x columns as ``image``) and the number of tiles run.

    ``image``: 2-D, on [0, 1]. The padded image is normalised with ``mean`` /
    ``std``; tiles are run ``batch_size`` at a time; softmax probabilities
    are summed where tiles overlap (the argmax of the sum is the argmax of
    the average) in a band of rows that moves down the image.
    """
    image = np.asarray(image)
    if image.ndim != 2:
        raise InputError(f"expected a 2-D image, got shape {image.shape}")
    if batch_size < 1:
        raise SettingsError(f"batch_size={batch_size!r} must be at least 1", param="batch_size")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    h, w = image.shape
    stride = stride_of(tile, overlap)
    ys, xs = tile_starts(h, tile, stride), tile_starts(w, tile, stride)
    hp, wp = ys[-1] + tile, xs[-1] + tile
    padded = torch.zeros((hp, wp), dtype=torch.float32, device=device)
    padded[:h, :w] = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).to(device)
    padded = (padded - mean) / std
    positions = [(y, x) for y in ys for x in xs]
    # the band must hold every tile of one batch: at most (b - 1) // nx + 1 rows of tiles below its top
    cap = min(hp, tile + stride * ((batch_size - 1) // len(xs) + 1))
    acc: torch.Tensor | None = None
    out = np.empty((h, w), dtype=np.uint8)
    top = 0
    for b0 in range(0, len(positions), batch_size):
        batch = positions[b0:b0 + batch_size]
        x = torch.stack([padded[y:y + tile, x0:x0 + tile] for y, x0 in batch]).unsqueeze(1)
        with _autocast(device, amp):
            logits = _logits(model, x)
        if logits.ndim != 4 or logits.shape[0] != len(batch) or tuple(logits.shape[2:]) != (tile, tile):
            raise InputError(f"the model returned logits of shape {tuple(logits.shape)} for tiles of "
                             f"{tuple(x.shape)}")
        prob = logits.float().softmax(dim=1)
        if acc is None:
            if prob.shape[1] > 256:
                raise InputError(f"{prob.shape[1]} classes do not fit an 8-bit label map")
            acc = torch.zeros((prob.shape[1], cap, wp), dtype=torch.float32, device=device)
        for (y, x0), p in zip(batch, prob):
            acc[:, y - top:y - top + tile, x0:x0 + tile] += p
        nxt = positions[b0 + batch_size][0] if b0 + batch_size < len(positions) else hp
        if nxt > top:  # rows [top, nxt) get no more tiles: labels now, then move the band down
            end = min(nxt, h)
            if end > top:
                out[top:end] = acc[:, :end - top, :w].argmax(dim=0).to(torch.uint8).cpu().numpy()
            n = nxt - top
            acc[:, :cap - n] = acc[:, n:].clone()
            acc[:, cap - n:] = 0
            top = nxt
    return out, len(positions)


# ---------------------------------------------------------------- images

def _png_header(path: str) -> tuple[int, int, int, int]:
    """(rows, columns, bit depth, colour type) from the IHDR chunk, without decoding."""
    try:
        return png_header(path)
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except ValueError:
        raise InputError(f"{path}: not a PNG file") from None


def read_image(path: str | os.PathLike) -> np.ndarray:
    """A greyscale PNG as it is stored (uint8 or uint16, 2-D); RGB(A) gives its first channel.

    The header is checked against the pixel limit (:mod:`csaws_tools.limits`)
    before anything is decoded; palette PNGs (label maps) are refused.
    """
    path = str(path)
    h, w, depth, ctype = _png_header(path)
    check_pixels((h, w), path)
    if ctype == 3:
        raise InputError(f"{path}: a palette PNG (a label map?), not a greyscale image")
    try:
        image = read_png(path)
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"{path}: cannot decode ({one_line(exc)})") from None
    if image.ndim == 3:
        image = np.ascontiguousarray(image[:, :, 0])
    if image.ndim != 2 or image.dtype not in (np.uint8, np.uint16):
        raise InputError(f"{path}: {depth}-bit PNG of colour type {ctype} decodes to {image.dtype}; "
                         "expected 8- or 16-bit greyscale")
    return image


def to_unit(image: np.ndarray) -> np.ndarray:
    """[0, 1] float32 by bit depth: 8-bit / 255, 16-bit / 65535 (training divides its 8-bit crops by 255)."""
    scale = 255.0 if image.dtype == np.uint8 else 65535.0
    return image.astype(np.float32) / np.float32(scale)


# ---------------------------------------------------------------- batch

#: Models already built in this process, by (checkpoint SHA-256, builder, device, threads).
_MODELS: dict[tuple, torch.nn.Module] = {}


def _model_for(info: RunInfo, builder: Builder | None, device: str, threads: int | None,
               state: dict[str, torch.Tensor] | None = None) -> tuple[torch.nn.Module, torch.device]:
    from .loop import resolve_device

    dev = resolve_device(device)
    key = (info.checkpoint_sha256, getattr(builder, "__qualname__", None), getattr(builder, "__module__", None),
           str(dev), info.output_stride)
    model = _MODELS.get(key)
    if model is None:
        if threads:
            torch.set_num_threads(int(threads))
        if state is None:
            state, _ = checkpoint_weights(info.checkpoint)
            if _sha256(Path(info.checkpoint)) != info.checkpoint_sha256:
                raise InputError(f"{info.checkpoint}: changed while predicting")
        model = build_run_model(info, state, builder=builder, device=dev)
        _MODELS.clear()  # one model per process
        _MODELS[key] = model
    return model, dev


def _output_hash(base: str, source: str) -> str:
    return settings_hash({"settings": base, "input": file_identity(source)})


@dataclass(frozen=True)
class PredictArgs:
    """One image's own settings for predict: its id, where its overlay goes, a planning error."""

    image_id: str
    #: the overlay PNG to write; None: no overlays asked for
    overlay: str | None = None
    #: a problem found while planning (missing input, output onto the input), reported as the task's error
    error: str | None = None


def predict_worker(task: Task[PredictArgs], *, info: dict, base_hash: str, overlap: float, batch_size: int, device: str,
                   amp: bool, threads: int | None, overwrite: bool, overlay_dir: str | None,
                   overlay_max_size: int | None, builder: Builder | None = None) -> dict:
    """Predict one image: write its label map (and overlay); return its manifest row."""
    run = RunInfo(**{**info, "names": tuple(info["names"]), "colours": tuple(tuple(c) for c in info["colours"])})
    a = task.args
    row: dict = {"image_id": a.image_id, "overlay": a.overlay}
    if a.error:
        raise InputError(a.error)
    out = Path(str(task.output))
    map_hash = _output_hash(base_hash, task.source)
    ov_path = Path(a.overlay) if a.overlay else None
    ov_hash = settings_hash({"map": map_hash, "overlay_max_size": overlay_max_size})
    map_done = not overwrite and made_with(out, map_hash)
    ov_done = ov_path is None or (not overwrite and made_with(ov_path, ov_hash))
    if map_done and ov_done:
        row["status"] = "skipped"
        return row
    try:
        stored = read_image(task.source)
    except InputError as exc:  # the runner names the file: do not name it twice
        prefix = f"{task.source}: "
        text = str(exc)
        raise InputError(text.removeprefix(prefix)) from None
    labels = None
    if map_done:
        try:
            labels = read_png(out)
        except Exception:  # noqa: BLE001 - unreadable: predict again
            labels = None
        if labels is not None and labels.shape != stored.shape:
            labels = None
    if labels is None:
        model, dev = _model_for(run, builder, device, threads)
        labels, n_tiles = predict_image(model, to_unit(stored), tile=run.tile, overlap=overlap,
                                        batch_size=batch_size, mean=run.mean, std=run.std, device=dev, amp=amp)
        write_png(out, labels, palette=list(run.colours), text={SETTINGS_KEY: map_hash})
        row["tiles"] = n_tiles
    if ov_path is not None and (overwrite or not ov_done):
        from ..preview import overlay

        rgb = overlay(stored, labels, names=list(run.names), colours=list(run.colours),
                      max_size=overlay_max_size, title=a.image_id)
        write_png(ov_path, rgb, text={SETTINGS_KEY: ov_hash})
    row["height"], row["width"] = int(labels.shape[0]), int(labels.shape[1])
    counts = np.bincount(labels.ravel(), minlength=run.num_classes)
    for name, c in zip(run.names, counts):
        row[f"px_{name}"] = int(c)
    return row


def _is_mask_beside_its_image(path: Path) -> bool:
    """``<image>_<class>.png`` next to ``<image>.png`` (the release layout): a mask, not an image."""
    image_id, token = split_mask_stem(path.stem)
    return token is not None and (path.parent / f"{image_id}{path.suffix}").is_file()


def plan_tasks(images: Iterable[str | os.PathLike], out: Path,
               overlay_dir: Path | None) -> list[Task[PredictArgs]]:
    """One task per PNG: files as given (``OUT/<name>``), folders searched recursively (same sub-folders).

    In folders, the class masks of the release layout (``<image>_<class>.png``
    beside ``<image>.png``) are not images and are passed over.

    A path that does not exist, or whose output would be the input itself,
    becomes a task that fails with one line (the batch goes on).
    """
    tasks: list[Task[PredictArgs]] = []
    for arg in images:
        p = Path(arg)
        if p.is_dir():
            found = files_under(p, (".png",), lambda f: is_inside(f, out) or is_inside(f, overlay_dir))
            pairs = [(f, f.relative_to(p)) for f in found if not _is_mask_beside_its_image(f)]
        else:
            pairs = [(p, Path(p.name).with_suffix(".png"))]
        for src, rel in pairs:
            rel = rel.with_suffix(".png")
            output = out / rel
            error = None
            if not src.exists():
                error = f"{src}: no such file or folder"
            elif output.resolve() == src.resolve():
                error = f"{src}: its label map would overwrite it; choose another output folder"
            args = PredictArgs(image_id=src.stem, overlay=str(overlay_dir / rel) if overlay_dir is not None else None,
                               error=error)
            tasks.append(Task(key=rel.as_posix(), source=str(src), output=str(output), args=args))
    return tasks


def labels_json_text(scheme: LabelScheme) -> str:
    """The ``labels.json`` for maps in ``scheme``'s numbering, as merge-masks writes it."""
    if scheme.is_identity:
        return labels_json("standard")
    return json.dumps({"numbering": "standard", "scheme": scheme.to_dict(),
                       "classes": scheme_labels_table(scheme, "standard")}, indent=2)


def predict(
    run_dir: str | os.PathLike,
    images: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    checkpoint: str | os.PathLike | None = None,
    tile: int | None = None,
    overlap: float = DEFAULT_OVERLAP,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: str = "auto",
    amp: bool = True,
    threads: int | None = None,
    overlay_dir: str | os.PathLike | None = None,
    overlay_max_size: int | None = 1024,
    workers: int = 1,
    overwrite: bool = False,
    fail_fast: bool = False,
    progress: bool = True,
    shard: tuple[int, int] | None = None,
    builder: Builder | None = None,
) -> BatchResult:
    """Label maps of ``images`` (PNG files or folders of them) by the run in ``run_dir``, under ``out``.

    Writes ``OUT/<name>.png`` (palette PNG, ids of the run's scheme),
    ``OUT/labels.json`` and ``OUT/manifest.parquet``; with ``overlay_dir``
    also overlays (:func:`csaws_tools.preview.overlay`). ``workers``:
    processes (default 1: torch already uses every core for one image; with
    more, each gets ``threads`` torch threads). ``builder`` makes the model
    from (num_classes, output_stride, aux_loss); default the study's DeepLabv3.
    """
    stride_of(8, overlap)  # checks the setting before any work
    if batch_size < 1:
        raise SettingsError(f"batch_size={batch_size!r} must be at least 1", param="batch_size")
    info, state = read_run(run_dir, checkpoint=checkpoint, tile=tile)
    out_dir = ensure_writable_dir(out)
    ov_dir = ensure_writable_dir(overlay_dir) if overlay_dir is not None else None
    if ov_dir is not None and ov_dir.resolve() == out_dir.resolve():
        raise SettingsError("overlay_dir= must be another folder than the label maps' (out=)",
                            param=("overlay_dir", "out"))
    tasks = plan_tasks(images, out_dir, ov_dir)
    if not tasks:
        raise InputError(f"no PNG images found in {', '.join(str(i) for i in images) or 'the arguments'}")
    scheme = parse_scheme(info.scheme)
    settings = {"command": "train predict", "checkpoint_sha256": info.checkpoint_sha256, "scheme": info.scheme,
                "names": list(info.names), "colours": [list(c) for c in info.colours],
                "output_stride": info.output_stride, "aux_loss": info.aux_loss, "tile": info.tile,
                "overlap": float(overlap), "mean": info.mean, "std": info.std,
                "builder": None if builder is None else f"{builder.__module__}.{builder.__qualname__}"}
    base_hash = settings_hash(settings)
    write_text_atomic(out_dir / "labels.json", labels_json_text(scheme) + "\n")
    if workers <= 1:  # build the model once here (one process: the worker finds it)
        _model_for(info, builder, device, threads, state)
    else:  # only check that the weights fit; each worker process builds its own (no CUDA before fork)
        build_run_model(info, state, builder=builder, device="cpu")
    del state
    worker = functools.partial(predict_worker, info=info.to_dict(), base_hash=base_hash, overlap=float(overlap),
                               batch_size=int(batch_size), device=device, amp=amp,
                               threads=threads if workers <= 1 else (threads or _threads_each(workers)),
                               overwrite=overwrite, overlay_dir=str(ov_dir) if ov_dir else None,
                               overlay_max_size=overlay_max_size, builder=builder)
    manifest_settings = dict(settings, run_dir=str(info.run_dir), checkpoint=info.checkpoint)
    return run_batch(tasks, worker, manifest=out_dir / "manifest.parquet", settings=manifest_settings,
                     workers=max(1, int(workers)), fail_fast=fail_fast, progress=progress, label="predicting",
                     shard=shard)


def _threads_each(workers: int) -> int:
    from ..batch import default_workers

    return max(1, default_workers() // max(1, workers))

