"""Rerun the CSAW-S with/without complementary-label experiment (protocol section 5).

Needs the ``[train]`` extra (torch, matplotlib). Modules, one per stage:

* :mod:`~csaws_tools.train.model` - DeepLabv3-ResNet50 with GroupNorm, torchvision names
* :mod:`~csaws_tools.train.augment` - batch augmentation on the device
* :mod:`~csaws_tools.train.data` - batches from a patches file, read ahead
* :mod:`~csaws_tools.train.metrics` - cancer IoU, mean with Student-t CI, relative gain
* :mod:`~csaws_tools.train.selection` - checkpoint selection rule
* :mod:`~csaws_tools.train.loop` - one resumable training run
* :mod:`~csaws_tools.train.evaluate` - whole-image test IoU against each expert and the consensus
* :mod:`~csaws_tools.train.experiment` - the grid, results.parquet, summary, Figure 1
* :mod:`~csaws_tools.train.prepare` - splits, crops and test tiles from label maps
* :mod:`~csaws_tools.train.datasets` - Cityscapes, VOC, CSAW-S and folder datasets resized to 512 x 512
* :mod:`~csaws_tools.train.studies` - leave-one-out, number of labels, coarse, domain shift, merge

Importing this package does not import torch: the names below are loaded on
first use (``from csaws_tools.train import train_run`` imports torch then),
so dataset preparation (:mod:`~csaws_tools.train.datasets`) runs without it.
"""

from __future__ import annotations

import importlib
from typing import Any

#: public name -> submodule that defines it
_EXPORTS = {
    "AugmentConfig": "augment", "augment_batch": "augment", "normalise": "augment",
    "evaluate_model": "evaluate", "evaluate_image_set": "evaluate",
    "ExperimentConfig": "experiment", "plot_figure1": "experiment", "run_grid": "experiment",
    "summarise": "experiment", "summary_markdown": "experiment",
    "TrainConfig": "loop", "load_selected": "loop", "resolve_device": "loop", "train_run": "loop",
    "validate": "loop",
    "Confusion": "metrics", "confusion": "metrics", "iou": "metrics", "mean_ci": "metrics",
    "relative_gain": "metrics", "t_quantile": "metrics",
    "DeepLabV3": "model", "build_model": "model", "load_pretrained": "model",
    "PreparedInputs": "prepare", "prepare_inputs": "prepare",
    "eligible": "selection", "moving_average": "selection", "select_checkpoint": "selection",
    "StudyConfig": "studies", "run_study": "studies",
}

__all__ = [
    "AugmentConfig",
    "Confusion",
    "DeepLabV3",
    "ExperimentConfig",
    "PreparedInputs",
    "StudyConfig",
    "TrainConfig",
    "augment_batch",
    "build_model",
    "confusion",
    "eligible",
    "evaluate_image_set",
    "evaluate_model",
    "iou",
    "load_pretrained",
    "load_selected",
    "mean_ci",
    "moving_average",
    "normalise",
    "plot_figure1",
    "prepare_inputs",
    "relative_gain",
    "resolve_device",
    "run_grid",
    "run_study",
    "select_checkpoint",
    "summarise",
    "summary_markdown",
    "t_quantile",
    "train_run",
    "validate",
]


def __getattr__(name: str) -> Any:
    """Load ``name`` from its submodule on first use (those need torch: pip install 'csaws-tools[train]')."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        import torch  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the environment
        from ..errors import DependencyError

        raise DependencyError("csaws_tools.train needs torch: pip install 'csaws-tools[train]'") from exc
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
