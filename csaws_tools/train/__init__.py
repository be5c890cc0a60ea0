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
"""

from __future__ import annotations

try:
    import torch  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    from ..errors import DependencyError

    raise DependencyError("csaws_tools.train needs torch: pip install 'csaws-tools[train]'") from exc

from .augment import AugmentConfig, augment_batch, normalise
from .evaluate import evaluate_model
from .experiment import ExperimentConfig, plot_figure1, run_grid, summarise, summary_markdown
from .loop import TrainConfig, load_selected, resolve_device, train_run, validate
from .metrics import Confusion, confusion, iou, mean_ci, relative_gain, t_quantile
from .model import DeepLabV3, build_model, load_pretrained
from .prepare import PreparedInputs, prepare_inputs
from .selection import eligible, moving_average, select_checkpoint

__all__ = [
    "AugmentConfig", "Confusion", "DeepLabV3", "ExperimentConfig", "PreparedInputs", "TrainConfig",
    "augment_batch", "build_model", "confusion", "eligible", "evaluate_model", "iou", "load_pretrained",
    "load_selected", "mean_ci", "moving_average", "normalise", "plot_figure1", "prepare_inputs",
    "relative_gain", "resolve_device", "run_grid", "select_checkpoint", "summarise", "summary_markdown",
    "t_quantile", "train_run", "validate",
]
