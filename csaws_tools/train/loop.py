"""One training run of the study (protocol section 5), resumable.

Adam (lr 1e-4, weight decay 1e-6), batch 12, cross-entropy, augmentation on
the device, bf16 autocast and channels-last on CUDA, ImageNet-initialised by
default. Length: 100 epochs over the run's crops (SUL ``params.json``
``epochs``), i.e. ``ceil(100 * n_crops / batch)`` iterations, unless
``iterations`` is given. Every ``val_every`` (100, SUL ``log_every``)
iterations the model is validated on the validation tiles (cancer IoU and
the cross-entropy of the cancer pixels only, SUL ``Trainer.evaluate``), the
checkpoint rule of :mod:`csaws_tools.train.selection` is applied, and
``last.pt`` is saved atomically; an interrupted run restarts from it.

An images file of ``csaws-train prepare --dataset`` (Cityscapes, VOC, folders;
paper section 5.2) trains the same way, with what :func:`run_data` reads from
it: the scheme built on the dataset's class table and target, its channels
(3: colour), void (255) ignored by the loss and the validation, and the
section 5.2 augmentation (:func:`effective_config`: no rotation, no elastic
deformation, ImageNet normalisation).

Checkpoints hold only tensors, numbers, strings, lists and dicts and are
read with ``torch.load(weights_only=True)``: nothing is unpickled.

Run folder::

    config.json    settings, seeds, tool/torch versions, data file hashes
    last.pt        model + optimiser + scheduler + history (resume point)
    best.pt        weights of the selected checkpoint
    history.csv    one row per validation
    metrics.json   written at the end: selected iteration, its validation scores
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .. import __version__
from ..atomic import atomic_path, write_text_atomic
from ..batch import settings_hash
from ..errors import InputError, OutputError, SettingsError, one_line
from ..labels import parse_scheme
from .augment import MEAN, STD, AugmentConfig, augment_batch, prepare_eval
from .data import (
    CropSource,
    Prefetcher,
    file_hash,
    is_image_set,
    iter_crops,
    read_index,
    select_rows,
)
from .metrics import CANCER, Confusion, confusion
from .model import build_model
from .progress import Progress
from .selection import RULES, TOLERANCE, WINDOW, moving_average, select_checkpoint

SCHEDULES = ("sul", "constant", "poly", "cosine")
#: Iterations (0-based) from which SUL's learning rate is 0.1x and 0.01x its start. SUL builds
#: ``MultiStepLR(milestones=[1000, 2000])`` (gamma 0.1) and steps it after iteration 1 and every
#: ``log_every`` = 100 iterations (src/trainer.py ``global_step`` -> ``epoch_step``): the 1000th step
#: follows iteration 99,900, the 2000th iteration 199,900.
SUL_LR_DROPS = (99_900, 199_900)
VAL_LOSSES = ("cancer", "all")


@dataclass
class TrainConfig:
    """Settings of one run; defaults are the study's where it states them (protocol section 5)."""

    train_file: str
    val_file: str
    scheme: str = "all"
    image_ids: list[str] | None = None
    iterations: int | None = None
    epochs: float | None = 100.0
    batch_size: int = 12
    lr: float = 1e-4
    weight_decay: float = 1e-6
    schedule: str = "sul"
    warmup: int = 0
    val_every: int = 100
    val_max_crops: int | None = None
    val_loss: str = "cancer"
    selection: str = "sul"
    eval_batch_size: int = 16
    output_stride: int = 8
    aux_loss: bool = False
    pretrained: str | None = "imagenet"
    seed: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    selection_window: int = WINDOW
    selection_tolerance: float = TOLERANCE
    # images files of the public datasets only (csaws-train prepare --dataset): the expert class, by
    # name (None: the file's), and "coarse" for Cityscapes gtCoarse complementary labels
    target: str | None = None
    labels: str = "fine"
    # execution only (not part of the settings hash)
    device: str = "auto"
    amp: bool = True
    channels_last: bool = True
    prefetch: int = 3
    cache_mb: float = 4096
    threads: int | None = None
    progress: bool = True

    EXECUTION = ("device", "amp", "channels_last", "prefetch", "cache_mb", "threads", "progress")

    def __post_init__(self) -> None:
        if self.selection not in RULES:
            raise SettingsError(f"selection={self.selection!r}: expected one of {', '.join(RULES)}", param="selection")
        if self.val_loss not in VAL_LOSSES:
            raise SettingsError(f"val_loss={self.val_loss!r}: expected one of {', '.join(VAL_LOSSES)}", param="val_loss")
        if self.iterations is None and self.epochs is None:
            raise SettingsError("give epochs=N or iterations=N", param=("epochs", "iterations"))
        if self.labels not in ("fine", "coarse"):
            raise SettingsError(f"labels={self.labels!r}: expected 'fine' or 'coarse'", param="labels")

    def total_iterations(self, n_crops: int) -> int:
        """``iterations`` when given, else ``ceil(epochs * n_crops / batch_size)`` (SUL: 100 epochs)."""
        if self.iterations is not None:
            return int(self.iterations)
        assert self.epochs is not None  # __post_init__ requires one of the two
        return max(1, math.ceil(float(self.epochs) * int(n_crops) / int(self.batch_size)))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["augment"] = self.augment.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        d = dict(d)
        if isinstance(d.get("augment"), dict):
            d["augment"] = AugmentConfig(**d["augment"])
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def settings(self) -> dict:
        """What determines the result: everything but the execution options."""
        d = self.to_dict()
        for k in self.EXECUTION:
            d.pop(k, None)
        for k, default in (("target", None), ("labels", "fine")):  # CSAW-S settings hashes stay as they were
            if d.get(k) == default:
                d.pop(k, None)
        if d.get("schedule") == "sul":  # constant before SUL_LR_DROPS[0]; plan_run records it for longer runs
            d["schedule"] = "constant"
        d["train_file"] = os.path.basename(self.train_file)
        d["val_file"] = os.path.basename(self.val_file)
        if d["image_ids"] is not None:
            d["image_ids"] = sorted(d["image_ids"])
        return d


@dataclass(frozen=True)
class RunData:
    """What a training file implies for a run: its label scheme, channels, void id, and reader options."""

    scheme: Any
    images: bool = False
    channels: int = 1
    ignore_index: int | None = None
    size: int = 0
    dataset: str = "csaws"
    target: str = "cancer"
    reader_options: dict = field(default_factory=dict)

    @property
    def ce_ignore(self) -> int:
        """``ignore_index`` of the cross-entropy (torch's default -100 when nothing is void)."""
        return -100 if self.ignore_index is None else int(self.ignore_index)


def run_data(cfg: TrainConfig) -> RunData:
    """The scheme and input facts of ``cfg``: CSAW-S patches (:func:`csaws_tools.labels.parse_scheme`,
    one channel, no void) or a public-dataset images file (its class table, ``cfg.target``, void ignored)."""
    path = cfg.train_file.format(rep=0) if "{rep}" in cfg.train_file else cfg.train_file
    if not is_image_set(path):
        if cfg.target is not None or cfg.labels != "fine":
            raise SettingsError(f"{path}: target= and labels='coarse' apply to images files of "
                                f"'csaws-train prepare --dataset' only", param=("target", "labels"))
        return RunData(scheme=parse_scheme(cfg.scheme))
    from .datasets.store import ImageSetReader

    with ImageSetReader(path, cfg.scheme, target=cfg.target, labels=cfg.labels) as r:
        scheme = r.scheme
        return RunData(scheme=scheme, images=True, channels=r.channels, ignore_index=r.ignore_index,
                       size=r.size, dataset=str(r.attrs.get("dataset", "")), target=scheme.target_name,
                       reader_options={"target": cfg.target, "labels": cfg.labels})


def effective_config(cfg: TrainConfig, data: RunData) -> TrainConfig:
    """``cfg`` as it runs: on images files the section 5.2 augmentation (:func:`image_set_augment`)."""
    if not data.images:
        return cfg
    from dataclasses import replace

    from .augment import image_set_augment

    return replace(cfg, augment=image_set_augment(cfg.augment, data.channels, data.size))


def resolve_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA when available, else CPU. ``cuda`` without a GPU is an error."""
    name = (name or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("device='cuda' requested but torch sees no CUDA device", param="device")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise SettingsError(f"device={name!r}: expected 'auto', 'cpu' or 'cuda'", param="device")
    return torch.device(name)


def lr_lambda(schedule: str, total: int, warmup: int = 0) -> Callable[[int], float]:
    """Multiplier of the base learning rate at step t (0-based), after an optional linear warmup.

    ``sul``: as the authors' code, 1 until iteration 99,900, then 0.1, from 199,900 on 0.01
    (:data:`SUL_LR_DROPS`; constant for any shorter run); ``constant``; ``poly`` (power 0.9);
    ``cosine``.

    >>> f = lr_lambda("sul", 250_000)
    >>> [f(t) for t in (0, 99_899, 99_900, 199_900)]
    [1.0, 1.0, 0.1, 0.01]
    """
    if schedule not in SCHEDULES:
        raise InputError(f"unknown schedule {schedule!r}; expected one of {', '.join(SCHEDULES)}")

    def f(t: int) -> float:
        if warmup and t < warmup:
            return (t + 1) / warmup
        if schedule == "sul":
            drops = sum(t >= d for d in SUL_LR_DROPS)
            return (1.0, 0.1, 0.01)[drops]
        x = min(max(t - warmup, 0) / max(total - warmup, 1), 1.0)
        if schedule == "poly":
            return (1.0 - x) ** 0.9
        if schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * x))
        return 1.0

    return f


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on CUDA; a no-op elsewhere (CPU runs stay in float32)."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _to_device(x: torch.Tensor, device: torch.device, channels_last: bool = False) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    if channels_last and x.ndim == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def _seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def _generator(device: torch.device, seed: int, iteration: int) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed((int(seed) * 1_000_003 + int(iteration)) % (2**63 - 1))
    return g


@torch.no_grad()
def validate(model: torch.nn.Module, path: str, lut: np.ndarray, device: torch.device, *,
             batch_size: int = 16, max_crops: int | None = None, amp: bool = True,
             channels_last: bool = False, augment: AugmentConfig | None = None, loss: str = "cancer",
             ignore_index: int | None = None) -> dict:
    """Validation loss and cancer confusion over the validation tiles (``max_crops`` evenly spaced ones).

    The target class is id 1 of every scheme (cancer; the expert class of the public datasets).
    ``ignore_index`` (void, 255): those pixels count in neither the loss nor the confusion.

    ``loss="cancer"`` (SUL ``Trainer.evaluate``: cross-entropy weighted 1 on
    the target class, 0 elsewhere): the mean cross-entropy of the pixels whose
    reference is cancer, pooled over all tiles (NaN when there is none);
    ``"all"``: the mean cross-entropy of every pixel.
    """
    model.eval()
    mean = augment.mean if augment else MEAN
    std = augment.std if augment else STD
    rows = None
    if max_crops is not None:
        n = len(read_index(path))
        rows = np.linspace(0, n - 1, min(max_crops, n)).round().astype(np.int64)
    loss_sum, pixels, conf = 0.0, 0, Confusion()
    for _, img, msk in iter_crops(path, lut, batch_size, rows):
        x = _to_device(prepare_eval(torch.from_numpy(img), mean, std), device, channels_last)
        y = torch.from_numpy(msk).long().to(device, non_blocking=True)
        with autocast(device, amp):
            logits = model(x)["out"]
        logits = logits.float()
        if ignore_index is None:
            ce = F.cross_entropy(logits, y, reduction="none")
            if loss == "cancer":
                keep = y == CANCER
                loss_sum += float(ce[keep].sum())
                pixels += int(keep.sum())
            else:
                loss_sum += float(ce.sum())
                pixels += y.numel()
            conf = conf + confusion(logits.argmax(1), y, CANCER)
        else:
            valid = y != ignore_index
            ce = F.cross_entropy(logits, y, reduction="none", ignore_index=int(ignore_index))
            keep = (y == CANCER) if loss == "cancer" else valid
            loss_sum += float(ce[keep].sum())
            pixels += int(keep.sum())
            conf = conf + confusion(logits.argmax(1), y, CANCER, valid=valid)
    model.train()
    return {"val_loss": loss_sum / pixels if pixels else float("nan"), "val_iou": conf.iou, "val_tp": conf.tp,
            "val_fp": conf.fp, "val_fn": conf.fn}


def check_no_shared_patients(train_index: pd.DataFrame, val_index: pd.DataFrame, val_file: str = "") -> None:
    """Training and validation crops must come from different patients (protocol section 5)."""
    shared = sorted(set(train_index["patient_id"].astype(str)) & set(val_index["patient_id"].astype(str)))
    if shared:
        more = f" and {len(shared) - 5} more" if len(shared) > 5 else ""
        raise InputError(f"{val_file}: validation crops of training patient(s) {', '.join(shared[:5])}{more}; "
                         "training and validation must not share patients (use the splits of csaws-prepare splits)")


def check_no_shared_images(train_index: pd.DataFrame, val_index: pd.DataFrame, val_file: str = "") -> None:
    """Public datasets: training and validation images must differ (their groups - cities - may not)."""
    shared = sorted(set(train_index["image_id"].astype(str)) & set(val_index["image_id"].astype(str)))
    if shared:
        raise InputError(f"{val_file}: {len(shared)} validation image(s) are also training images, e.g. {shared[0]}")


def check_crop(cfg: TrainConfig) -> None:
    """``crop`` must fit in the training crops (a one-line error naming the parameter and the file)."""
    from .data import open_patches

    with open_patches(cfg.train_file) as r:
        size = int(r.size)
    if cfg.augment.crop is not None and int(cfg.augment.crop) > size:
        raise SettingsError(f"crop={cfg.augment.crop!r} is larger than the {size}-px crops of {cfg.train_file}; "
                            f"use crop={size} or less", param="crop")


def run_status(run_dir: str | os.PathLike) -> str:
    """``done`` (metrics.json present), ``partial`` (last.pt present) or ``new``."""
    run_dir = Path(run_dir)
    if (run_dir / "metrics.json").is_file():
        return "done"
    if (run_dir / "last.pt").is_file():
        return "partial"
    return "new"


def _save(obj: Any, path: Path) -> None:
    """Write a checkpoint atomically; a failed write is one :class:`OutputError` naming ``path``.

    torch's zip writer reports a short write (a disk that fills up) as a
    ``RuntimeError`` ("unexpected pos", "PytorchStreamWriter failed writing"),
    not an ``OSError``: that too becomes the one-line error, with the free space.
    """
    try:
        with atomic_path(path) as tmp:
            torch.save(obj, tmp)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write the checkpoint ({exc.strerror or exc})") from None
    except RuntimeError as exc:
        text = str(exc)
        if "inline_container" not in text and "PytorchStreamWriter" not in text:
            raise
        try:
            free = f"{shutil.disk_usage(path.parent).free / 2**30:.1f} GiB free there now"
        except OSError:
            free = "free space unknown"
        raise OutputError(f"{path}: cannot write the checkpoint: the write came out short (disk full? {free}; "
                          f"torch: {one_line(exc)})") from None


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu", required: tuple[str, ...] = ()) -> dict:
    """A checkpoint read with ``torch.load(weights_only=True)`` (never unpickles objects).

    Anything else (a pickle with code in it, a truncated file, keys missing) is
    an :class:`InputError` naming the file.
    """
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - every unreadable checkpoint ends the same way
        text = str(exc)
        first = " ".join((text.strip().splitlines() or [type(exc).__name__])[0].split())
        if "weights_only" in text or "Unsupported global" in text or "Weights only" in text:
            raise InputError(f"{path}: refused: not a plain weights file (reading it would unpickle other "
                             f"objects: {first[:160]})") from None
        raise InputError(f"{path}: not a checkpoint this tool can read safely ({type(exc).__name__}: "
                         f"{first[:160]})") from None
    if not isinstance(ckpt, dict):
        raise InputError(f"{path}: not a checkpoint (expected a dict, found {type(ckpt).__name__})")
    missing = [k for k in required if k not in ckpt]
    if missing:
        raise InputError(f"{path}: checkpoint lacks {', '.join(missing)}")
    return ckpt


@dataclass
class RunPlan:
    """What a run will do, worked out before anything is trained (:func:`plan_run`)."""

    cfg: TrainConfig
    data: RunData
    rows: np.ndarray
    n_images: int
    total: int
    weights: str | None
    init: dict
    settings: dict
    settings_hash: str


def plan_run(cfg: TrainConfig, log: Callable[[str], None]) -> RunPlan:
    """Check the inputs and settings of ``cfg``, resolve the initial weights, hash the settings.

    Raises :class:`InputError` / :class:`SettingsError` naming the file or option
    (a per-repetition pattern, crops of validation patients, a crop too large).
    """
    if "{rep}" in cfg.train_file:
        raise InputError(f"{cfg.train_file}: a per-repetition pattern; give one repetition's training file")
    data = run_data(cfg)
    cfg = effective_config(cfg, data)
    train_index = read_index(cfg.train_file)
    rows = select_rows(train_index, cfg.image_ids, cfg.train_file)
    if data.images:
        check_no_shared_images(train_index.iloc[rows], read_index(cfg.val_file), cfg.val_file)
    else:
        check_no_shared_patients(train_index.iloc[rows], read_index(cfg.val_file), cfg.val_file)
    check_crop(cfg)
    total = cfg.total_iterations(rows.size)
    hashes = {"train_file": file_hash(cfg.train_file), "val_file": file_hash(cfg.val_file)}
    from .model import resolve_pretrained

    weights = resolve_pretrained(cfg.pretrained)
    init: dict[str, Any] = {"initialisation": "scratch" if weights is None else
            ("imagenet" if str(cfg.pretrained).lower() == "imagenet" else "file"),
            "weights_file": weights, "weights_sha256": file_hash(weights) if weights else None}
    if weights:
        hashes["pretrained"] = init["weights_sha256"]
    if init["initialisation"] == "imagenet":
        from .model import IMAGENET_FILE, IMAGENET_HASH_PREFIX

        if not init["weights_sha256"].startswith(IMAGENET_HASH_PREFIX):
            init["weights_note"] = (f"SHA-256 does not start with {IMAGENET_HASH_PREFIX}: not torchvision's "
                                    f"{IMAGENET_FILE}")
            log(f"warning: {weights}: {init['weights_note']}")
    settings = dict(cfg.settings(), data=hashes, total_iterations=total)
    if cfg.schedule == "sul" and total > SUL_LR_DROPS[0]:  # the learning rate drops within this run
        settings["schedule"] = "sul"
    return RunPlan(cfg=cfg, data=data, rows=rows, n_images=int(train_index.loc[rows, "image_id"].nunique()),
                   total=total, weights=weights, init=init, settings=settings,
                   settings_hash=settings_hash(settings))


def finished_or_cleared(plan: RunPlan, run_dir: Path, overwrite: bool) -> dict | None:
    """The metrics of a finished run with the same settings (``status`` "skipped"), else ``None``.

    A finished run with other settings is an :class:`InputError` unless
    ``overwrite``, which removes the run's files first.
    """
    metrics_path = run_dir / "metrics.json"
    if metrics_path.is_file() and not overwrite:
        done = json.loads(metrics_path.read_text())
        if done.get("settings_hash") == plan.settings_hash:
            done["status"] = "skipped"
            return done
        raise InputError(f"{run_dir}: holds a finished run made with other settings; use overwrite=True or "
                         f"another output folder", param="overwrite")
    if overwrite:
        for name in ("metrics.json", "last.pt", "best.pt", "history.csv"):
            (run_dir / name).unlink(missing_ok=True)
    return None


class RunState:
    """Model, optimiser, schedule and validation history of one run, and their checkpoints.

    ``last.pt`` is the resume point; ``best.pt`` holds the selected weights with
    what :func:`load_selected` needs to rebuild the model.
    """

    def __init__(self, plan: RunPlan, run_dir: Path, device: torch.device, log: Callable[[str], None]) -> None:
        cfg = plan.cfg
        self.plan, self.run_dir, self.device = plan, run_dir, device
        _seed_all(cfg.seed)
        model = build_model(plan.data.scheme.num_classes, output_stride=cfg.output_stride,
                            aux_loss=cfg.aux_loss, in_channels=plan.data.channels)
        self.load_report = None
        if plan.weights:
            from .model import load_pretrained
            self.load_report = load_pretrained(model, plan.weights, require_backbone=True).summary()
            log(self.load_report)
        self.channels_last = cfg.channels_last and device.type == "cuda"
        model = model.to(device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        # the fused Adam kernel: the same update in one pass over the 40 M weights (about 0.2 s of a CPU step less)
        self.opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                    fused=device.type in ("cpu", "cuda") or None)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lr_lambda(cfg.schedule, plan.total, cfg.warmup))
        self.start = 0
        self.history: list[dict] = []
        self.best_index: int | None = None

    @property
    def last_path(self) -> Path:
        return self.run_dir / "last.pt"

    def resume(self, log: Callable[[str], None]) -> None:
        """Continue from ``last.pt`` when there is one (same settings only)."""
        if not self.last_path.is_file():
            return
        ckpt = load_checkpoint(self.last_path, self.device, ("model", "optimizer", "scheduler", "iteration",
                                                             "history", "settings_hash", "torch_rng"))
        if ckpt.get("settings_hash") != self.plan.settings_hash:
            raise InputError(f"{self.last_path}: checkpoint of a run with other settings; use overwrite=True or "
                             f"another output folder", param="overwrite")
        self.model.load_state_dict(ckpt["model"])
        self.opt.load_state_dict(ckpt["optimizer"])
        self.sched.load_state_dict(ckpt["scheduler"])
        self.start, self.history = int(ckpt["iteration"]), list(ckpt["history"])
        self.best_index = ckpt.get("best_index")
        torch.set_rng_state(ckpt["torch_rng"].cpu())
        log(f"resuming {self.run_dir} at iteration {self.start}")

    def step(self, it: int, img: torch.Tensor, msk: torch.Tensor) -> torch.Tensor:
        """One optimisation step on a batch: augment on the device, forward, cross-entropy, Adam."""
        cfg, device, ignore = self.plan.cfg, self.device, self.plan.data.ce_ignore
        x = img.to(device, non_blocking=True)
        y = msk.to(device, non_blocking=True)
        x, y = augment_batch(x, y, cfg.augment, generator=_generator(device, cfg.seed, it))
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, cfg.amp):
            out = self.model(x)
            loss = F.cross_entropy(out["out"].float(), y, ignore_index=ignore)
            if "aux" in out:
                loss = loss + 0.5 * F.cross_entropy(out["aux"].float(), y, ignore_index=ignore)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.sched.step()
        return loss

    def validate(self, done_its: int, loss: torch.Tensor, seconds: float) -> tuple[dict, bool]:
        """Validate, apply the selection rule, save ``best.pt`` when chosen and ``last.pt`` always."""
        cfg, data = self.plan.cfg, self.plan.data
        rec = {"iteration": done_its, "train_loss": float(loss.detach()),
               "lr": self.opt.param_groups[0]["lr"], "seconds": seconds}
        rec.update(validate(self.model, cfg.val_file, data.scheme.lut, self.device,
                            batch_size=cfg.eval_batch_size, max_crops=cfg.val_max_crops, amp=cfg.amp,
                            channels_last=self.channels_last, augment=cfg.augment, loss=cfg.val_loss,
                            ignore_index=data.ignore_index))
        self.history.append(rec)
        chosen = select_checkpoint(self.history, cfg.selection_window, cfg.selection_tolerance, cfg.selection)
        saved = chosen == len(self.history) - 1
        if saved:
            self.best_index = chosen
            self.save_best(done_its)
        self.save_last(done_its)
        _write_history(self.run_dir, self.history, cfg)
        return rec, saved

    def save_last(self, iteration: int) -> None:
        """The resume point: model, optimiser, scheduler, history and RNG state after ``iteration``."""
        _save({"model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
               "scheduler": self.sched.state_dict(), "iteration": iteration, "history": self.history,
               "best_index": self.best_index, "settings_hash": self.plan.settings_hash,
               "torch_rng": torch.get_rng_state()}, self.last_path)

    def save_best(self, iteration: int) -> None:
        """The selected weights and what rebuilding the model needs."""
        cfg, data = self.plan.cfg, self.plan.data
        extra = {"in_channels": data.channels} if data.channels != 1 else {}
        _save({"model": self.model.state_dict(), "iteration": iteration, "settings_hash": self.plan.settings_hash,
               "num_classes": data.scheme.num_classes, "output_stride": cfg.output_stride,
               "aux_loss": cfg.aux_loss, "scheme": data.scheme.spec, **extra}, self.run_dir / "best.pt")


def _write_config(plan: RunPlan, state: RunState) -> None:
    """``config.json``: settings, seeds, versions, device, initialisation and inputs of the run."""
    cfg, data, device = plan.cfg, plan.data, state.device
    info = {
        "settings_hash": plan.settings_hash, "settings": plan.settings, "config": cfg.to_dict(),
        "seeds": {"run": cfg.seed, "batch_order": "numpy default_rng([seed, epoch])",
                  "augmentation": "torch Generator seeded with seed*1000003 + iteration"},
        "tool_version": __version__, "torch_version": torch.__version__, "python": platform.python_version(),
        "device": str(device), "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "scheme": data.scheme.to_dict(), "n_crops": int(plan.rows.size), "n_images": plan.n_images,
        "iterations": plan.total, "pretrained_report": state.load_report, **plan.init,
        "length": ("iterations" if cfg.iterations is not None else f"{cfg.epochs:g} epochs"),
    }
    if data.images:
        info["inputs"] = {"dataset": data.dataset, "target": data.target, "channels": data.channels,
                          "image_size": data.size, "ignore_index": data.ignore_index, "labels": cfg.labels}
    write_text_atomic(state.run_dir / "config.json", json.dumps(info, indent=1, default=str) + "\n")


def _setup_device(cfg: TrainConfig) -> torch.device:
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    if device.type == "cpu":
        # denormal floats (tiny gradients, Adam moments) slow CPU steps several-fold
        torch.set_flush_denormal(True)
    return device


def train_run(cfg: TrainConfig, run_dir: str | os.PathLike, *, stop_after: int | None = None,
              log: Callable[[str], None] | None = None, overwrite: bool = False,
              progress_name: str | None = None) -> dict:
    """Train (or resume, or skip) one run; return its metrics dict.

    Setup (:func:`plan_run`, :func:`finished_or_cleared`), resume
    (:meth:`RunState.resume`), steps (:meth:`RunState.step`) and checkpoints
    (:meth:`RunState.validate`). ``stop_after``: stop once this many iterations
    are done in total (leaves a resumable ``last.pt``; used to test resumption).
    Raises :class:`InputError` when ``run_dir`` holds a run made with other
    settings (unless ``overwrite``).
    """
    log = log or (lambda msg: None)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    plan = plan_run(cfg, log)
    cfg = plan.cfg
    done = finished_or_cleared(plan, run_dir, overwrite)
    if done is not None:
        return done
    state = RunState(plan, run_dir, _setup_device(cfg), log)
    state.resume(log)
    _write_config(plan, state)
    total, start = plan.total, state.start
    source = CropSource(cfg.train_file, plan.rows, plan.data.scheme.lut, seed=cfg.seed, batch_size=cfg.batch_size,
                        cache_mb=cfg.cache_mb, reader_options=plan.data.reader_options)
    end = total if stop_after is None else min(total, int(stop_after))
    val_every = max(1, int(cfg.val_every))
    state.model.train()
    t0, seen = time.perf_counter(), 0
    bar = Progress(progress_name or run_dir.name, start, end, enabled=cfg.progress)
    pre = Prefetcher(source, start, end, depth=cfg.prefetch, pin=state.device.type == "cuda")
    try:
        for it, img, msk in pre:
            loss = state.step(it, img, msk)
            seen += 1
            done_its = it + 1
            bar.update(done_its)
            if done_its % val_every == 0 or done_its == total:
                rec, saved = state.validate(done_its, loss, time.perf_counter() - t0)
                bar.note(f"loss {rec['train_loss']:.4f} val_loss ({cfg.val_loss}) {rec['val_loss']:.4f} "
                         f"val_iou {rec['val_iou']:.4f}" + (" (saved)" if saved else ""))
    finally:
        bar.close()
        pre.close()
        source.close()
    elapsed = time.perf_counter() - t0
    if end < total:
        if end > start and end % val_every:  # stopped between validations: keep the progress
            state.save_last(end)
        return {"status": "interrupted", "iteration": end, "settings_hash": plan.settings_hash}
    return _finish(plan, state, elapsed, seen)


def _finish(plan: RunPlan, state: RunState, elapsed: float, seen: int) -> dict:
    """Write ``metrics.json`` (selected iteration and its scores); keep the last weights when none was selected."""
    history, fallback = state.history, None
    if state.best_index is None and history:
        # the rule never saved (no IoU above 0): keep the last validation's weights, and say so
        state.best_index, fallback = len(history) - 1, "last validation (the selection rule saved none)"
        state.save_best(history[-1]["iteration"])
    best = history[state.best_index] if state.best_index is not None else None
    metrics = {
        "status": "done", "settings_hash": plan.settings_hash, "iterations": plan.total,
        "selected_iteration": best["iteration"] if best else None,
        "selected_val_iou": best["val_iou"] if best else None,
        "selected_val_loss": best["val_loss"] if best else None,
        "final_val_iou": history[-1]["val_iou"] if history else None,
        "selection": plan.cfg.selection, "selection_fallback": fallback, **plan.init,
        "train_seconds_this_session": elapsed, "steps_per_second_this_session": seen / elapsed if elapsed else None,
        "history": history,
    }
    write_text_atomic(state.run_dir / "metrics.json", json.dumps(metrics, indent=1, default=float) + "\n")
    return metrics


def _write_history(run_dir: Path, history: list[dict], cfg: TrainConfig) -> None:
    df = pd.DataFrame(history)
    df["val_loss_ma"] = moving_average(df["val_loss"].tolist(), cfg.selection_window)
    with atomic_path(run_dir / "history.csv") as tmp:
        df.to_csv(tmp, index=False)


def load_selected(run_dir: str | os.PathLike, device: torch.device | str = "cpu") -> torch.nn.Module:
    """The selected checkpoint (``best.pt``) of a finished run, as an eval-mode model."""
    path = Path(run_dir) / "best.pt"
    if not path.is_file():
        raise InputError(f"{path}: no selected checkpoint (run not finished?)")
    ckpt = load_checkpoint(path, "cpu", ("model", "num_classes", "output_stride"))
    model = build_model(int(ckpt["num_classes"]), output_stride=int(ckpt["output_stride"]),
                        aux_loss=bool(ckpt.get("aux_loss", False)), in_channels=int(ckpt.get("in_channels", 1)))
    try:
        model.load_state_dict(ckpt["model"])
    except (RuntimeError, TypeError) as exc:
        raise InputError(f"{path}: weights do not fit the model ({str(exc).splitlines()[0][:160]})") from None
    return model.to(device).eval()
