"""The studies of which complementary labels help (paper section 5.3 and appendix; protocol section 6).

Each study is a grid of :class:`~csaws_tools.train.experiment.Cell` runs on the
inputs of ``csaws-train prepare --dataset`` (resumable: finished runs and
evaluations are skipped on a rerun, an interrupted run resumes), a results
table and a figure:

``leave-one-out`` (Figure 7)
    at one N, every complementary label except one (that class merged into
    background), one run per left-out class and repetition, plus the ``with``
    baseline (all labels) with the same images and seed. The relative change of the target
    IoU, ``(IoU_left_out - IoU_all) / IoU_all``, is paired per repetition and
    averaged with a 95% Student-t CI; the figure is a sorted bar chart.
``num-labels`` (Figure 8)
    at one N, k = 0, 1, 2, 4, 8, 16, 32 complementary classes drawn at random
    per repetition (``random:<k>:<seed>``; k = 0 is ``binary``, k capped at the
    complementary classes available, the full count added as the last k).
    The k = 0 and all-classes runs are the ``without`` and ``with`` runs of
    ``csaws-train run``: in the same output folder they are not trained twice.
``coarse`` (Figure 5, label quality)
    over N: fine labels (``with``), Cityscapes ``gtCoarse`` complementary
    labels with the fine target (``with-coarse``), and ``without``.
``domain-shift`` (appendix D)
    over N, ``with-by-city``/``without-by-city``, on subsets drawn city by city
    (inputs prepared with ``--ordering by-city``); the cities of each subset
    are in the results.
``merge`` (appendix C, Figure 13)
    over N, ``with-merged``/``without-merged``, the target ``human=person+rider``.

Output folder (the runs beside those of ``csaws-train run``, the study's
tables in a sub-folder of its own, so one folder can hold the grid and every study)::

    runs/<setting>/n<N>/rep<r>/       one run each (see loop.py) + test.json
    <study>/results.parquet           one row per run: study, dataset, target, setting, n_train, repetition, iou, ...
    <study>/summary.parquet, .md      the study's table
    <study>/figure7.png | figure8.png | figure5_coarse.png | figure_domain_shift.png | figure13.png
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from ..atomic import atomic_path, write_text_atomic
from ..errors import InputError, SettingsError
from .experiment import (
    DATASET_TITLES,
    Cell,
    ExperimentConfig,
    inputs_of,
    run_cells,
    subsets,
)
from .metrics import mean_ci

STUDIES = ("leave-one-out", "num-labels", "coarse", "domain-shift", "merge")
#: Figure 8: the numbers of complementary classes
K_VALUES = (0, 1, 2, 4, 8, 16, 32)
#: the paper's fixed N of the leave-one-out and num-labels studies
STUDY_N = 100
MERGE_TARGET = "human=person+rider"
FIGURES = {"leave-one-out": "figure7.png", "num-labels": "figure8.png", "coarse": "figure5_coarse.png",
           "domain-shift": "figure_domain_shift.png", "merge": "figure13.png"}


@dataclass
class StudyConfig:
    """A study on ``experiment``'s inputs. ``n``: the fixed N (leave-one-out, num-labels; default
    100 or the largest prepared size below it); ``classes``: left-out classes (default: all)."""

    experiment: ExperimentConfig
    study: str
    n: int | None = None
    ks: Sequence[int] = K_VALUES
    classes: Sequence[str] | None = None
    merge_target: str = MERGE_TARGET

    def __post_init__(self) -> None:
        if self.study not in STUDIES:
            raise SettingsError(f"unknown study {self.study!r}; expected one of {', '.join(STUDIES)}")


def setting_name(text: str) -> str:
    """A folder-safe setting name from a class name (``traffic light`` -> ``traffic_light``)."""
    return re.sub(r"[^a-z0-9_]+", "_", str(text).strip().lower()).strip("_") or "class"


def fixed_n(available: Sequence[int], wanted: int | None, splits: str | None) -> int:
    """The study's N: ``wanted`` (must be a prepared size), else 100 or the largest prepared size below."""
    have = sorted(int(n) for n in available)
    if wanted is not None:
        if int(wanted) not in have:
            raise SettingsError(f"N {wanted}: {splits} has no subset of that size (it has "
                                f"{', '.join(map(str, have))})")
        return int(wanted)
    below = [n for n in have if n <= STUDY_N]
    return below[-1] if below else have[0]


def k_values(ks: Sequence[int], n_complementary: int) -> list[int]:
    """The ks that exist on this dataset: ``ks`` capped at the complementary count, which ends the list."""
    out = sorted({int(k) for k in ks if 0 <= int(k) <= n_complementary})
    if n_complementary not in out and any(int(k) > n_complementary for k in ks):
        out.append(n_complementary)
    return out


def _splits_doc(cfg: ExperimentConfig) -> dict:
    from ..splits import load_splits

    if not cfg.splits:
        raise SettingsError("the studies need a splits file (splits=; INPUTS/splits.json written by "
                            "'csaws-train prepare --dataset')", param="splits")
    doc = load_splits(cfg.splits)
    if "classes" not in doc:
        raise InputError(f"{cfg.splits}: not the splits of 'csaws-train prepare --dataset' (no class table)")
    return doc


def study_cells(sc: StudyConfig) -> list[Cell]:
    """The runs of the study (module docstring), in the order they are trained."""
    cfg = sc.experiment
    data = inputs_of(cfg)
    if not data.images:
        raise SettingsError(f"{cfg.train.train_file}: the studies run on the inputs of 'csaws-train prepare "
                            "--dataset' (Cityscapes, VOC, folders); CSAW-S crops use 'csaws-train run'")
    doc = _splits_doc(cfg)
    info = {"classes": doc["classes"], "background": doc["background"], "void": doc["void"],
            "target": cfg.train.target or doc["target"]}
    from .datasets.schemes import build_scheme, parse_target

    names = list(info["classes"])
    _, target_ids = parse_target(info["target"], names)
    complementary = [c for i, c in enumerate(names) if i != int(info["background"]) and i not in target_ids]
    study = sc.study
    if study in ("leave-one-out", "num-labels"):
        n = fixed_n(cfg.sizes, sc.n, cfg.splits)
        grid = subsets(replace(cfg, sizes=(n,)))[n]
        cells: list[Cell] = []
        if study == "leave-one-out":
            chosen = complementary if sc.classes is None else [names[_class_id(names, c, complementary)]
                                                                 for c in sc.classes]
            for rep, ids in grid.items():
                cells.append(Cell("with", "all", n, rep, tuple(ids), columns=(("left_out", ""),)))
                for c in chosen:
                    cells.append(Cell(f"loo-{setting_name(c)}", f"leave-one-out:{c}", n, rep, tuple(ids),
                                      columns=(("left_out", c),)))
        else:
            for k in k_values(sc.ks, len(complementary)):
                for rep, ids in grid.items():
                    seed = int(cfg.train.seed) * 1000 + int(rep)
                    spec = "binary" if k == 0 else ("all" if k == len(complementary) else f"random:{k}:{seed}")
                    kept = build_scheme(spec, names, target=info["target"], background=int(info["background"]),
                                        void=info["void"]).names[2:]
                    name = "without" if k == 0 else ("with" if k == len(complementary) else f"k{k}")
                    cells.append(Cell(name, spec, n, rep, tuple(ids),
                                      columns=(("k", k), ("kept", ",".join(kept)))))
        return cells
    settings: list[tuple[str, str, dict]] = [("with", "all", {}), ("without", "binary", {})]
    if study == "coarse":
        if data.dataset != "cityscapes":
            raise SettingsError(f"the coarse study needs Cityscapes gtCoarse; these inputs are {data.dataset}")
        from .datasets.store import read_attrs

        path = cfg.train.train_file.replace("{rep}", "0")
        if not (read_attrs(path) or {}).get("has_coarse"):
            raise InputError(f"{path}: holds no coarse label maps; prepare the inputs with them: csaws-train "
                             "prepare --dataset cityscapes ROOT -o INPUTS --coarse (needs gtCoarse/)")
        settings.insert(1, ("with-coarse", "all", {"labels": "coarse"}))
    elif study == "domain-shift":
        settings = [(f"{s}-by-city", spec, over) for s, spec, over in settings]
        if doc.get("ordering") != "by-city":
            raise InputError(f"{cfg.splits}: the training subsets were drawn in random order; the domain-shift "
                             "study needs city-ordered ones: csaws-train prepare --dataset cityscapes ROOT -o "
                             "INPUTS_BY_CITY --ordering by-city")
    elif study == "merge":
        parse_target(sc.merge_target, names)  # a one-line error when a member class does not exist
        settings = [(f"{s}-merged", spec, {"target": sc.merge_target}) for s, spec, _ in settings]
    cells = []
    for n, reps in subsets(cfg).items():
        for rep, ids in reps.items():
            groups = doc["subsets"][str(n)][str(rep)].get("patients", [])
            for setting, spec, over in settings:
                cells.append(Cell(setting, spec, int(n), int(rep), tuple(ids), tuple(sorted(over.items())),
                                  columns=(("groups", ",".join(groups)), ("n_groups", len(groups)))))
    return cells


def _class_id(names: Sequence[str], name: str, complementary: Sequence[str]) -> int:
    from .datasets.schemes import norm

    for i, c in enumerate(names):
        if norm(c) == norm(name):
            if c not in complementary:
                raise SettingsError(f"classes: {name!r} is the background or the target, not a complementary class",
                                    param="classes")
            return i
    raise SettingsError(f"classes: unknown class {name!r}; classes: {', '.join(complementary)}", param="classes")


def run_study(sc: StudyConfig, out: str | os.PathLike, *, log: Callable[[str], None] | None = None,
              overwrite: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run (or resume) the study; write results, summary and figure under ``out/<study>``; return
    (results, summary)."""
    log = log or print
    out = Path(out)
    tables = out / sc.study
    cells = study_cells(sc)
    data = inputs_of(sc.experiment)
    shown = sc.merge_target if sc.study == "merge" else data.target
    done = sum((out / "runs" / c.setting / f"n{c.n}" / f"rep{c.rep}" / "metrics.json").is_file() for c in cells)
    log(f"{sc.study}: {len(cells)} runs on {data.dataset} ({shown}), {study_iterations(sc, cells)} training "
        f"iterations in all" + (f"; {done} runs finished before (skipped when their settings match)" if done else ""))
    results = run_cells(sc.experiment, cells, out, log=log, overwrite=overwrite)
    results.insert(0, "study", sc.study)
    tables.mkdir(parents=True, exist_ok=True)
    with atomic_path(tables / "results.parquet") as tmp:
        results.to_parquet(tmp, index=False)
    summary = summarise_study(results, sc.study)
    with atomic_path(tables / "summary.parquet") as tmp:
        summary.to_parquet(tmp, index=False)
    title = f"{DATASET_TITLES.get(data.dataset, data.dataset)}"
    write_text_atomic(tables / "summary.md", f"# {sc.study} study, {title}\n\n" + study_markdown(summary, sc.study)
                      + "\n")
    plot_study(results, summary, sc.study, tables / FIGURES[sc.study], title)
    return results, summary


def study_iterations(sc: StudyConfig, cells: Sequence[Cell]) -> int:
    """Training iterations of all the study's runs (``--iterations``, or 100 epochs over each run's
    images at the batch size); the compute estimate of docs/studies.md multiplies this by s/step."""
    return sum(sc.experiment.train.total_iterations(len(c.ids)) for c in cells)


# --------------------------------------------------------------------------- tables


def _ci_row(values: Sequence[float], prefix: str) -> dict:
    ci = mean_ci(values)
    return {f"{prefix}mean": ci.mean, f"{prefix}ci_low": ci.low, f"{prefix}ci_high": ci.high, f"{prefix}runs": ci.n}


def summarise_study(results: pd.DataFrame, study: str) -> pd.DataFrame:
    """The study's table: per left-out class (relative change, paired per repetition), per k, or per
    setting and N (mean target IoU with 95% CI)."""
    if not len(results):
        return pd.DataFrame()
    res = results[results["evaluated_against"] == "test"]
    if study == "leave-one-out":
        base = res[res["setting"] == "with"].set_index("repetition")["iou"]
        rows = []
        for cls, grp in res[res["setting"] != "with"].groupby("left_out", sort=False):
            g = grp.set_index("repetition")["iou"]
            reps = [r for r in g.index if r in base.index]
            change = [(g[r] - base[r]) / base[r] if base[r] > 0 else math.nan for r in reps]
            rows.append({"left_out": cls, "n_train": int(grp["n_train"].iloc[0]), **_ci_row(g.tolist(), "iou_"),
                         "baseline_iou": float(base[reps].mean()) if reps else math.nan,
                         **_ci_row(change, "change_")})
        table = pd.DataFrame(rows)
        return table.sort_values("change_mean", na_position="last", kind="stable").reset_index(drop=True)
    if study == "num-labels":
        rows = [{"k": int(k), "n_train": int(g["n_train"].iloc[0]), **_ci_row(g["iou"].tolist(), "iou_")}
                for k, g in res.groupby("k", sort=True)]
        return pd.DataFrame(rows)
    rows = []
    for (n, setting), g in res.groupby(["n_train", "setting"], sort=False):
        rows.append({"n_train": int(n), "setting": setting, **_ci_row(g["iou"].tolist(), "iou_"),
                     "n_groups": float(g["n_groups"].mean()) if "n_groups" in g else math.nan})
    table = pd.DataFrame(rows).sort_values(["n_train"], kind="stable").reset_index(drop=True)
    without = {int(r.n_train): r.iou_mean for r in table.itertuples() if str(r.setting).startswith("without")}
    table["change_vs_without"] = [
        (r.iou_mean - without[int(r.n_train)]) / without[int(r.n_train)]
        if without.get(int(r.n_train)) and not str(r.setting).startswith("without") else math.nan
        for r in table.itertuples()]
    return table


def _fmt(m: float, lo: float, hi: float, pct: bool = False) -> str:
    if not np.isfinite(m):
        return "n/a"
    f = (lambda v: f"{100 * v:+.1f}%") if pct else (lambda v: f"{v:.3f}")
    return f"{f(m)} [{f(lo)}, {f(hi)}]" if np.isfinite(lo) else f(m)


def study_markdown(table: pd.DataFrame, study: str) -> str:
    """The summary as a markdown table (means with 95% CIs)."""
    if not len(table):
        return "(no runs)"
    if study == "leave-one-out":
        lines = ["| left-out class | N | target IoU [95% CI] | relative change [95% CI] | runs |", "|---|---|---|---|---|"]
        for r in table.itertuples():
            lines.append(f"| {r.left_out} | {r.n_train} | {_fmt(r.iou_mean, r.iou_ci_low, r.iou_ci_high)} | "
                         f"{_fmt(r.change_mean, r.change_ci_low, r.change_ci_high, True)} | {r.iou_runs} |")
        return "\n".join(lines)
    if study == "num-labels":
        lines = ["| k | N | target IoU [95% CI] | runs |", "|---|---|---|---|"]
        for r in table.itertuples():
            lines.append(f"| {r.k} | {r.n_train} | {_fmt(r.iou_mean, r.iou_ci_low, r.iou_ci_high)} | {r.iou_runs} |")
        return "\n".join(lines)
    lines = ["| N | setting | target IoU [95% CI] | change vs without | cities/groups per subset | runs |",
             "|---|---|---|---|---|---|"]
    for r in table.itertuples():
        ch = f"{100 * r.change_vs_without:+.0f}%" if np.isfinite(r.change_vs_without) else ""
        grp = f"{r.n_groups:g}" if np.isfinite(r.n_groups) else ""
        lines.append(f"| {r.n_train} | {r.setting} | {_fmt(r.iou_mean, r.iou_ci_low, r.iou_ci_high)} | {ch} | "
                     f"{grp} | {r.iou_runs} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- figures


def _err(m: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    ok = np.isfinite(lo) & np.isfinite(hi)
    return np.vstack([np.where(ok, m - lo, 0.0), np.where(ok, hi - m, 0.0)])


def plot_study(results: pd.DataFrame, table: pd.DataFrame, study: str, path: str | os.PathLike,
               dataset_title: str) -> Path:
    """Figure 7 (sorted bars of the relative change per left-out class, 95% CIs), Figure 8 (IoU
    against k) or target IoU against N per setting, as PNG."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    target = str(results["target"].iloc[0]) if len(results) else "target"
    path = Path(path)
    if study == "leave-one-out":
        n = max(len(table), 1)
        fig, ax = plt.subplots(figsize=(6, 1.2 + 0.28 * n), dpi=120)
        if len(table):
            m = 100 * table["change_mean"].to_numpy(float)
            lo = 100 * table["change_ci_low"].to_numpy(float)
            hi = 100 * table["change_ci_high"].to_numpy(float)
            y = np.arange(len(table))
            colours = np.where(np.nan_to_num(m) >= 0, "#2ca02c", "#d62728")
            ax.barh(y, np.nan_to_num(m), xerr=_err(np.nan_to_num(m), lo, hi), color=colours, capsize=2)
            ax.set_yticks(y)
            ax.set_yticklabels(table["left_out"].astype(str).tolist(), fontsize=7)
            ax.invert_yaxis()
            for yi in y[~np.isfinite(m)]:  # no change defined: the "with" baseline IoU was 0
                ax.text(0, yi, "  n/a (baseline IoU 0)", va="center", fontsize=7, color="grey")
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_xlabel(f"relative change of {target} IoU when left out (%); below 0: the label helps", fontsize=9)
        ax.set_title(f"{dataset_title}: leave one complementary label out (N={_n_of(results)})", fontsize=9)
    elif study == "num-labels":
        fig, ax = plt.subplots(figsize=(5, 3.6), dpi=120)
        if len(table):
            xs = np.arange(len(table), dtype=float)
            m = table["iou_mean"].to_numpy(float)
            ax.errorbar(xs, m, yerr=_err(m, table["iou_ci_low"].to_numpy(float), table["iou_ci_high"].to_numpy(float)),
                        fmt="o-", color="#d62728", capsize=3)
            ax.set_xticks(xs)
            ax.set_xticklabels([str(k) for k in table["k"]])
        ax.set_xlabel("number of complementary labels k")
        ax.set_ylabel(f"{target} IoU (test)")
        ax.set_ylim(bottom=0)
        ax.set_title(f"{dataset_title}: number of complementary labels (N={_n_of(results)})", fontsize=9)
    else:
        fig, ax = plt.subplots(figsize=(5, 3.6), dpi=120)
        sizes = sorted(table["n_train"].unique().tolist()) if len(table) else []
        pos = {n: i for i, n in enumerate(sizes)}
        styles = {"with": ("o-", "#d62728"), "with-coarse": ("^-.", "#ff7f0e"), "without": ("s--", "#1f77b4")}
        names = list(dict.fromkeys(table["setting"])) if len(table) else []
        for j, s in enumerate(names):
            g = table[table["setting"] == s]
            xs = np.asarray([pos[n] for n in g["n_train"]], float) + (j - (len(names) - 1) / 2) * 0.06
            m = g["iou_mean"].to_numpy(float)
            fmt, colour = styles.get(s, styles.get(s.split("-")[0], ("d:", None)))
            ax.errorbar(xs, m, yerr=_err(m, g["iou_ci_low"].to_numpy(float), g["iou_ci_high"].to_numpy(float)),
                        fmt=fmt, color=colour, capsize=3, label=s, markerfacecolor="white" if s.startswith("without") else colour)
        if sizes:
            ax.set_xticks(range(len(sizes)))
            ax.set_xticklabels([str(n) for n in sizes])
            ax.set_xlim(-0.5, len(sizes) - 0.5)
        ax.set_ylim(bottom=0)
        ax.set_xlabel("training-set size N")
        ax.set_ylabel(f"{target} IoU (test)")
        label = {"coarse": "coarse complementary labels", "domain-shift": "domain shift (city-ordered subsets)",
                 "merge": f"merged target {target}"}[study]
        ax.set_title(f"{dataset_title}: {label}", fontsize=9)
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def _n_of(results: pd.DataFrame) -> str:
    return ",".join(str(int(n)) for n in sorted(results["n_train"].unique())) if len(results) else "?"
