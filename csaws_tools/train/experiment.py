"""The with/without complementary-label grid (protocol section 5, paper Figure 1).

For every training-set size N and repetition, two runs share the very same
crops, seed, initialisation and augmentation stream and differ only in the
label scheme: "with" (default ``all``, 12 classes; any spec of
:mod:`csaws_tools.labels`, e.g. ``leave-one-out:skin``, ``random:3:0``) and
"without" (``binary``: cancer against background). Each run's selected
checkpoint is evaluated on the whole test images against every expert and
the consensus.

The same grid runs on the public datasets (paper section 5.2, Figures 5 and 6)
when the training file is an images file of ``csaws-train prepare --dataset``:
the schemes are built on that dataset's class table with its target (person),
the model gets its channels (3) and class count, void is ignored, and the
test set is its ``test.h5`` (resized full images; ``evaluated_against`` "test").

Output folder::

    runs/<setting>/n<N>/rep<r>/     one run folder each (see loop.py) + test.json
    results.parquet                 dataset, target, setting, n_train, repetition, evaluated_against, iou, ...
    summary.csv, summary.md         mean, 95% CI per setting and N, relative gain
    figure1.png                     IoU against N, both settings, shaded 95% CIs (CSAW-S;
                                    figure5.png Cityscapes, figure6.png VOC, figure_with_without.png others)

Rerunning skips finished runs and evaluations; an interrupted run resumes
from its last checkpoint. ``ExperimentConfig.jobs`` > 1 trains that many runs
at once in separate processes, each with its share of the CPU threads (on a
CPU, two 1-thread runs finish sooner than the same runs one after the other
with 2 threads each; see :func:`run_cells`).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import queue as queue_module
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..atomic import atomic_path, write_text_atomic
from ..batch import inputs_hash, settings_hash
from ..errors import CsawsError, InputError, SettingsError, one_line
from ..execution.tasks import init_pool_process
from ..labels import parse_scheme
from .data import add_known_hashes, file_hash, is_image_set, known_hashes, read_index
from .loop import (
    RunData,
    TrainConfig,
    effective_config,
    load_selected,
    resolve_device,
    run_data,
    train_run,
)
from .metrics import mean_ci, relative_gain

DEFAULT_SIZES = (25, 50, 100, 263)
DEFAULT_REPETITIONS = 5
SETTINGS = ("with", "without")


@dataclass
class ExperimentConfig:
    """Inputs and grid of the experiment; ``train`` holds the per-run settings."""

    train: TrainConfig
    test_tiles: str  # CSAW-S: test tiles; public datasets: the test images file (test.h5)
    test_maps: str | None = None  # CSAW-S: annotator_<k>/ and consensus/ label maps; None for images files
    splits: str | None = None
    sizes: Sequence[int] = DEFAULT_SIZES
    repetitions: int = DEFAULT_REPETITIONS
    with_scheme: str = "all"
    without_scheme: str = "binary"
    subset_seed: int = 0
    keep_last: bool = False
    #: runs trained at once, each in its own process with ``threads // jobs`` torch threads
    jobs: int = 1


def subsets(cfg: ExperimentConfig) -> dict[int, dict[int, list[str]]]:
    """Image ids of each (N, repetition), from the splits file or sampled at the patient level.

    Without a splits file, :func:`csaws_tools.splits.make_splits` samples them
    from the image ids of the training patches file (all its images are the
    training pool: validation lives in its own file).
    """
    from ..splits import load_splits, make_splits, select_images

    keys: dict[int, str] = {}
    if cfg.splits:
        sp = load_splits(cfg.splits)
        for n in cfg.sizes:
            if str(int(n)) not in sp.get("subsets", {}):
                have = ", ".join(sorted(sp.get("subsets", {}), key=int)) or "none"
                raise InputError(f"{cfg.splits}: no subset of size {n} (it has {have})")
            keys[int(n)] = str(int(n))
    else:
        if "{rep}" in cfg.train.train_file:
            raise InputError(f"{cfg.train.train_file}: per-repetition training files need a splits file (splits=)",
                             param="splits")
        pool = sorted(set(read_index(cfg.train.train_file)["image_id"].astype(str)))
        keys = {int(n): str(min(int(n), len(pool))) for n in cfg.sizes}
        # every image of the training patches file is in the pool (validation has its own file)
        sp = make_splits(pool, sizes=sorted({int(k) for k in keys.values()}), repetitions=cfg.repetitions,
                         seed=cfg.subset_seed, val_patients=[])
    out: dict[int, dict[int, list[str]]] = {}
    for n, key in keys.items():
        out[n] = {r: select_images(sp, key, r) for r in range(cfg.repetitions)}
    return out


def grid_from_splits(splits: str | os.PathLike | None, sizes: Sequence[int] | None,
                     repetitions: int | None) -> tuple[tuple[int, ...], int]:
    """Sizes and repetition count of the grid: the splits file's, narrowed by explicit ``sizes`` / ``repetitions``."""
    if not splits:
        return tuple(int(n) for n in (sizes or DEFAULT_SIZES)), int(repetitions or DEFAULT_REPETITIONS)
    from ..splits import load_splits

    sp = load_splits(splits)
    have = {int(n): len(reps) for n, reps in sp.get("subsets", {}).items() if str(n).isdigit()}
    if not have:
        raise SettingsError(f"{splits}: holds no training subsets")
    if sizes:
        missing = [int(n) for n in sizes if int(n) not in have]
        if missing:
            raise SettingsError(f"sizes={missing!r}: {splits} has no subset of that size "
                                f"(it has {', '.join(map(str, sorted(have)))})", param="sizes")
    chosen = tuple(int(n) for n in (sizes or sorted(have)))
    most = min(have[n] for n in chosen)
    if repetitions and repetitions > most:
        raise SettingsError(f"repetitions={repetitions!r}: {splits} has only {most} repetition(s) of "
                            f"size {min(chosen, key=lambda n: have[n])}", param="repetitions")
    return chosen, int(repetitions or most)


def train_file_of(cfg: ExperimentConfig, repetition: int) -> str:
    """The training crops of one repetition: ``{rep}`` in the file name is the repetition."""
    return cfg.train.train_file.format(rep=int(repetition)) if "{rep}" in cfg.train.train_file else cfg.train.train_file


def run_seed(base: int, n: int, rep: int) -> int:
    """Seed shared by the two settings of one grid cell."""
    return int(base) * 100_003 + int(n) * 101 + int(rep)


@dataclass(frozen=True)
class Cell:
    """One run of a grid: its setting (folder name), label scheme, N, repetition and training images.

    ``overrides``: TrainConfig fields of this run (e.g. ``labels="coarse"``, ``target``);
    ``columns``: extra columns of its result rows (e.g. the left-out class, k).
    """

    setting: str
    scheme: str
    n: int
    rep: int
    ids: tuple[str, ...]
    overrides: tuple[tuple[str, object], ...] = ()
    columns: tuple[tuple[str, object], ...] = ()


#: figure file of the with/without plot per dataset (paper Figure 1 CSAW-S, 5 Cityscapes, 6 VOC)
FIGURES = {"csaws": "figure1.png", "cityscapes": "figure5.png", "voc": "figure6.png"}
DATASET_TITLES = {"csaws": "CSAW-S", "cityscapes": "Cityscapes", "voc": "PASCAL VOC 2012"}


def figure_name(dataset: str) -> str:
    """The with/without figure's file name for ``dataset``."""
    return FIGURES.get(dataset, "figure_with_without.png")


def inputs_of(cfg: ExperimentConfig) -> RunData:
    """Dataset facts of the experiment's training file (CSAW-S patches, or a public images file)."""
    return run_data(replace(cfg.train, train_file=train_file_of(cfg, 0)))


def run_cells(cfg: ExperimentConfig, cells: Sequence[Cell], out: str | os.PathLike, *,
              log: Callable[[str], None] | None = None, overwrite: bool = False) -> pd.DataFrame:
    """Train (or skip, or resume) and evaluate each cell under ``out/runs/<setting>/n<N>/rep<r>``;
    return one row per run and reference. The runs of one (N, repetition) share their seed.

    With ``cfg.jobs`` > 1 the cells are trained and evaluated ``jobs`` at a
    time in separate processes (see :func:`_run_in_processes`), then read
    back here in order; the results are those of the same cells run one
    after the other (up to floating-point differences between thread counts).
    """
    log = log or print
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.test_maps is None and not is_image_set(cfg.test_tiles):
        raise SettingsError(f"{cfg.test_tiles}: CSAW-S test tiles need the test label maps (test_maps=)",
                            param="test_maps")
    if cfg.jobs < 1:
        raise SettingsError(f"jobs={cfg.jobs}: give 1 or more", param="jobs")
    tiles_hash = file_hash(cfg.test_tiles)
    if cfg.jobs > 1 and len(cells) > 1:
        for path in {cfg.train.val_file, *(train_file_of(cfg, c.rep) for c in cells)}:
            file_hash(path)  # once here, not once per run process
        _run_in_processes(cfg, cells, out, log, overwrite)
        log, overwrite = (lambda msg: None), False  # every cell is done: read them back quietly
    device = resolve_device(cfg.train.device)
    rows: list[dict] = []
    for k, cell in enumerate(cells, start=1):
        rows.extend(_run_cell(cfg, cell, k, len(cells), out, log, overwrite, device, tiles_hash))
    return pd.DataFrame(rows)


def _run_cell(cfg: ExperimentConfig, cell: Cell, k: int, total: int, out: Path, log: Callable[[str], None],
              overwrite: bool, device, tiles_hash: str) -> list[dict]:
    """Train (or skip, or resume) and evaluate cell ``k`` of ``total``; its result rows."""
    n, rep, setting, ids = cell.n, cell.rep, cell.setting, cell.ids
    run_dir = out / "runs" / setting / f"n{n}" / f"rep{rep}"
    overrides: dict[str, Any] = dict(cell.overrides)
    tcfg = replace(cfg.train, scheme=cell.scheme, image_ids=list(ids),
                   seed=run_seed(cfg.train.seed, n, rep), train_file=train_file_of(cfg, rep), **overrides)
    data = run_data(tcfg)
    log(f"run {k} of {total}: {setting} N={n} rep={rep}, {len(ids)} images")
    metrics = train_run(tcfg, run_dir, log=log, overwrite=overwrite,
                        progress_name=f"run {k}/{total} {setting} N={n} rep={rep}")
    if not cfg.keep_last:
        (run_dir / "last.pt").unlink(missing_ok=True)
    test = _evaluate_run(run_dir, cfg, device, metrics["settings_hash"], tiles_hash, overwrite,
                         data, effective_config(tcfg, data))
    return [{"setting": setting, "n_train": n, "repetition": rep, **r,
             "n_images_train": len(ids), "scheme": data.scheme.spec,
             "num_classes": data.scheme.num_classes,
             "selected_iteration": metrics.get("selected_iteration"),
             "selected_val_iou": metrics.get("selected_val_iou"),
             "iterations": metrics.get("iterations"),
             "initialisation": metrics.get("initialisation"),
             "weights_sha256": metrics.get("weights_sha256"),
             "protocol": _protocol_label(effective_config(tcfg, data), data.target),
             "run": str(run_dir.relative_to(out)),
             "dataset": data.dataset, "target": data.target, **dict(cell.columns)} for r in test]


class _QueueStream:
    """A text stream (not a terminal) that sends each whole line to the parent process."""

    def __init__(self, messages: Any) -> None:
        self.messages, self.pending = messages, ""

    def write(self, text: str) -> int:
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            self.messages.put(("line", line))
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


def _cell_process(cfg: ExperimentConfig, cell: Cell, k: int, total: int, out: str, overwrite: bool,
                  messages: Any, parent: int, hashes: dict[tuple, str]) -> None:
    """Body of one process of :func:`_run_in_processes`: run one cell, report through ``messages``.

    Like a batch pool process it ignores Ctrl-C (the parent stops it) and ends with its parent.
    ``hashes``: the input files' content hashes the parent already computed.
    """
    init_pool_process(parent)
    add_known_hashes(hashes)
    sys.stderr = _QueueStream(messages)  # progress lines (not a bar: several runs share the terminal)
    try:
        _run_cell(cfg, cell, k, total, Path(out), lambda msg: messages.put(("log", msg)), overwrite,
                  resolve_device(cfg.train.device), file_hash(cfg.test_tiles))
        messages.put(("done", k))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which stops the grid
        messages.put(("error", f"run {k} of {total} ({cell.setting} N={cell.n} rep={cell.rep}): {one_line(exc)}"))


def _run_in_processes(cfg: ExperimentConfig, cells: Sequence[Cell], out: Path, log: Callable[[str], None],
                      overwrite: bool) -> None:
    """Train and evaluate ``cells``, ``cfg.jobs`` at a time, each in a fresh (spawned) process.

    Each process gets ``threads // jobs`` torch threads (``threads``: the
    run's setting, else all cores). Log messages reach ``log``; what the
    processes write to stderr (progress lines, which name their run) goes to
    this process's stderr, line by line. The first failure stops the others
    and is raised here as a :class:`~csaws_tools.errors.CsawsError`; Ctrl-C
    (which they ignore) and any other exception here kill them (a run
    resumes from its last checkpoint next time), and so does the death of
    this process, even by SIGKILL.
    """
    import torch

    threads = max(1, (cfg.train.threads or torch.get_num_threads()) // cfg.jobs)
    job_cfg = replace(cfg, train=replace(cfg.train, threads=threads), jobs=1)
    context = multiprocessing.get_context("spawn")  # torch's threads do not survive fork
    messages = context.Queue()
    hashes = known_hashes()
    todo = list(enumerate(cells, start=1))
    running: dict[int, Any] = {}
    finished: set[int] = set()

    def handle(kind: str, value: Any) -> None:
        if kind == "log":
            log(value)
        elif kind == "line":
            print(value, file=sys.stderr, flush=True)
        elif kind == "done":
            finished.add(value)
        else:
            raise CsawsError(value)

    try:
        while todo or running:
            while todo and len(running) < cfg.jobs:
                k, cell = todo.pop(0)
                proc = context.Process(target=_cell_process, args=(job_cfg, cell, k, len(cells), str(out),
                                                                   overwrite, messages, os.getpid(), hashes),
                                       daemon=True)
                proc.start()
                running[k] = proc
            try:
                handle(*messages.get(timeout=0.5))
            except queue_module.Empty:
                pass
            for k, proc in list(running.items()):
                if proc.is_alive():
                    continue
                proc.join()
                while k not in finished:  # what it sent before it ended
                    try:
                        handle(*messages.get(timeout=1.0))
                    except queue_module.Empty:
                        raise CsawsError(f"run {k} of {len(cells)}: its process ended with status "
                                         f"{proc.exitcode} without finishing") from None
                del running[k]
    finally:
        for proc in running.values():
            proc.kill()
            proc.join()


def grid_cells(cfg: ExperimentConfig, settings: Sequence[tuple[str, str, dict]] | None = None) -> list[Cell]:
    """Cells of the with/without grid: for each N and repetition, each ``(setting, scheme, overrides)``
    (default: ``with`` = ``cfg.with_scheme``, ``without`` = ``cfg.without_scheme``)."""
    if settings is None:
        settings = [("with", cfg.with_scheme, {}), ("without", cfg.without_scheme, {})]
    cells = []
    for n, reps in subsets(cfg).items():
        for rep, ids in reps.items():
            for setting, spec, over in settings:
                cells.append(Cell(setting, spec, int(n), int(rep), tuple(ids), tuple(sorted(over.items()))))
    return cells


def run_grid(cfg: ExperimentConfig, out: str | os.PathLike, *, log: Callable[[str], None] | None = None,
             overwrite: bool = False, settings: Sequence[tuple[str, str, dict]] | None = None,
             title: str | None = None) -> pd.DataFrame:
    """Train and evaluate every (setting, N, repetition); write results, summary and figure.

    ``settings``: the grid's (name, scheme, TrainConfig overrides), default with/without;
    summary and figure compare the first two (named ``with`` and ``without`` in the table).
    """
    log = log or print
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = inputs_of(cfg)
    spec_of: Callable = (lambda spec: scheme_for_file(cfg, spec)) if data.images else parse_scheme
    if settings is None:
        schemes = {"with": spec_of(cfg.with_scheme), "without": spec_of(cfg.without_scheme)}
        if schemes["without"].num_classes >= schemes["with"].num_classes:
            log("note: the 'without' scheme has no fewer classes than the 'with' scheme")
        # on images files the target travels as TrainConfig.target: the spec without its " target=" note
        settings = [(name, schemes[name].spec.split(" target=")[0], {}) for name in SETTINGS]
    results = run_cells(cfg, grid_cells(cfg, settings), out, log=log, overwrite=overwrite)
    with atomic_path(out / "results.parquet") as tmp:
        results.to_parquet(tmp, index=False)
    table = summarise(results)
    with atomic_path(out / "summary.csv") as tmp:
        table.to_csv(tmp, index=False)
    write_text_atomic(out / "summary.md", summary_markdown(table) + "\n\n" + _settings_note(results, cfg) + "\n")
    plot_figure1(results, out / figure_name(data.dataset), title=title or figure_title(data))
    return results


def figure_title(data: RunData) -> str:
    """``CSAW-S: complementary labels``, ``Cityscapes, person: complementary labels`` ..."""
    if not data.images:
        return "CSAW-S: complementary labels"
    name = DATASET_TITLES.get(data.dataset, data.dataset or "dataset")
    return f"{name}, {data.target}: complementary labels"


def scheme_for_file(cfg: ExperimentConfig, spec: str):
    """The scheme ``spec`` on the class table of the experiment's images file (with ``cfg.train.target``)."""
    return run_data(replace(cfg.train, train_file=train_file_of(cfg, 0), scheme=spec)).scheme


def _protocol_label(t: TrainConfig, target: str = "cancer") -> str:
    """Short description of the protocol items that decide the result (also in results.parquet)."""
    length = f"{t.iterations} iterations" if t.iterations is not None else f"{t.epochs:g} epochs"
    rot = "" if t.augment.rotate90 else "no rotation, "
    loss = t.val_loss if target == "cancer" or t.val_loss != "cancer" else f"{target} only"
    return (f"selection {t.selection}, val loss {loss}, augment {t.augment.protocol} "
            f"({rot}elastic p {t.augment.elastic_p:g} sigma {t.augment.elastic_sigma:g}, crop {t.augment.crop}), "
            f"{length}, batch {t.batch_size}, lr {t.lr:g} ({t.schedule} schedule), val every {t.val_every}")


def _settings_note(results: pd.DataFrame, cfg: ExperimentConfig) -> str:
    inits = sorted({f"{r.initialisation} (weights SHA-256 {r.weights_sha256})" if r.weights_sha256
                    else str(r.initialisation) for r in results.itertuples()}) if len(results) else []
    proto = str(results["protocol"].iloc[0]) if len(results) else _protocol_label(cfg.train)
    return (f"Initialisation: {'; '.join(inits) or 'n/a'}.\n\nProtocol: {proto}.")


def _evaluate_run(run_dir: Path, cfg: ExperimentConfig, device, run_hash: str, tiles_hash: str,
                  overwrite: bool, data: RunData | None = None, tcfg: TrainConfig | None = None) -> list[dict]:
    from .evaluate import evaluate_image_set, evaluate_model

    path = run_dir / "test.json"
    images = data if data is not None and data.images else None
    if images is not None:
        key = settings_hash({"run": run_hash, "tiles": tiles_hash, "test": "images"})
    else:
        if cfg.test_maps is None:
            raise SettingsError(f"{cfg.test_tiles}: CSAW-S test tiles need the test label maps (test_maps=)",
                                param="test_maps")
        maps = Path(cfg.test_maps).resolve()
        # the consensus/annotator maps are read too: an edited map makes the evaluation stale
        key = settings_hash({"run": run_hash, "tiles": tiles_hash, "maps": str(maps),
                             "maps_identity": inputs_hash(sorted(maps.rglob("*.png")))})
    if path.is_file() and not overwrite:
        done = json.loads(path.read_text())
        if done.get("settings_hash") == key:
            return done["rows"]
    model = load_selected(run_dir, device)
    use_cl = cfg.train.channels_last and device.type == "cuda"
    if use_cl:
        model = model.to(memory_format=__import__("torch").channels_last)
    if images is not None:
        aug = (tcfg or cfg.train).augment
        rows = evaluate_image_set(model, cfg.test_tiles, images.scheme.lut, device,
                                  batch_size=cfg.train.eval_batch_size, amp=cfg.train.amp, channels_last=use_cl,
                                  mean=aug.mean, std=aug.std, ignore_index=images.ignore_index)
    else:
        rows = evaluate_model(model, cfg.test_tiles, str(cfg.test_maps), device,
                              batch_size=cfg.train.eval_batch_size, amp=cfg.train.amp, channels_last=use_cl)
    write_text_atomic(path, json.dumps({"settings_hash": key, "rows": rows}, indent=1) + "\n")
    return rows


def summarise(results: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Mean and CI of ``iou`` per (evaluated_against, n_train, setting), with the relative gain per N."""
    out = []
    for (ref, n), grp in results.groupby(["evaluated_against", "n_train"], sort=True):
        row = {"evaluated_against": ref, "n_train": int(n)}
        means = {}
        for setting in SETTINGS:
            vals = grp.loc[grp["setting"] == setting, "iou"].to_numpy(float)
            ci = mean_ci(vals, level)
            means[setting] = ci.mean
            row.update({f"{setting}_mean": ci.mean, f"{setting}_ci_low": ci.low, f"{setting}_ci_high": ci.high,
                        f"{setting}_runs": ci.n})
        row["relative_gain"] = relative_gain(means["with"], means["without"])
        out.append(row)
    return pd.DataFrame(out)


def summary_markdown(table: pd.DataFrame) -> str:
    """The summary as a markdown table (IoU mean [95% CI])."""
    def fmt(r, s):
        m, lo, hi = r[f"{s}_mean"], r[f"{s}_ci_low"], r[f"{s}_ci_high"]
        if not np.isfinite(m):
            return "n/a"
        return f"{m:.3f} [{lo:.3f}, {hi:.3f}]" if np.isfinite(lo) else f"{m:.3f}"

    lines = ["| evaluated against | N | with: IoU [95% CI] | without: IoU [95% CI] | relative gain |",
             "|---|---|---|---|---|"]
    for _, r in table.iterrows():
        gain = f"{100 * r['relative_gain']:+.0f}%" if np.isfinite(r["relative_gain"]) else "n/a"
        lines.append(f"| {r['evaluated_against']} | {r['n_train']} | {fmt(r, 'with')} | {fmt(r, 'without')} | {gain} |")
    return "\n".join(lines)


def plot_figure1(results: pd.DataFrame, path: str | os.PathLike, evaluated_against: str = "consensus",
                 title: str | None = None) -> Path:
    """IoU against N for both settings with 95% CIs (like the paper's Figure 1; Figures 5 and 6 for
    Cityscapes and VOC with ``title``), as PNG. The y label names the target of the results."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    refs = results["evaluated_against"].unique().tolist() if len(results) else []
    ref = evaluated_against if evaluated_against in refs else (refs[0] if refs else evaluated_against)
    table = summarise(results[results["evaluated_against"] == ref]) if len(results) else pd.DataFrame()
    fig, ax = plt.subplots(figsize=(5, 3.6), dpi=120)
    colours = {"with": "#d62728", "without": "#1f77b4"}
    labels = {"with": "with complementary labels", "without": "without complementary labels"}
    styles = {"with": ("o", "-", -1), "without": ("s", "--", 1)}  # marker, line, side of the small x offset
    top = 0.0
    if len(table):
        x = table["n_train"].to_numpy(float)
        xs = np.arange(len(x), dtype=float)  # evenly spaced positions, labelled with N
        for s in SETTINGS:
            m = table[f"{s}_mean"].to_numpy(float)
            lo = table[f"{s}_ci_low"].to_numpy(float)
            hi = table[f"{s}_ci_high"].to_numpy(float)
            marker, line, side = styles[s]
            pos = xs + side * 0.06
            ok = np.isfinite(lo) & np.isfinite(hi)
            err = np.vstack([np.where(ok, m - lo, 0.0), np.where(ok, hi - m, 0.0)])
            ax.errorbar(pos, m, yerr=err, fmt=marker + line, color=colours[s], label=labels[s], capsize=3,
                        markersize=6, markerfacecolor="white" if s == "without" else colours[s])
            vals = np.concatenate([m[np.isfinite(m)], hi[np.isfinite(hi)]])
            top = max(top, float(vals.max()) if vals.size else 0.0)
        ax.set_xticks(xs)
        ax.set_xticklabels([str(int(v)) for v in x])
        ax.set_xlim(xs[0] - 0.5, xs[-1] + 0.5)
    ax.set_ylim(0, max(0.05, min(1.0, top * 1.15)))
    ax.set_xlabel("training-set size N")
    target = str(results["target"].iloc[0]) if len(results) and "target" in results else "cancer"
    ax.set_ylabel(f"{target} IoU ({ref.replace('_', ' ')})")
    ax.set_title(title or "CSAW-S: complementary labels")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
