"""Checkpoint selection: validation cancer IoU together with the smoothed validation loss.

The study picks "the best validation checkpoint, judged by validation IoU of
the main class together with a moving average (window 5) of the validation
loss" (protocol section 5). The exact rule used here:

1. ``ma[k]`` = mean of the validation losses at validations ``k-4 .. k``
   (trailing window of 5; fewer at the start of training).
2. Validation ``k`` is *eligible* when ``ma[k] <= (1 + tolerance) * min(ma[0..k])``:
   the smoothed loss has not drifted more than ``tolerance`` (default 5%)
   above the best smoothed loss seen so far, i.e. the model is not over-fitting
   yet (cross-entropy does not measure IoU, so the loss only vetoes).
3. Among eligible validations, the one with the highest cancer IoU is chosen;
   ties go to the lower ``ma``, then to the earlier validation.

Eligibility of a validation depends only on the history up to it, so the
choice can be made while training (the best checkpoint is saved as soon as it
is chosen) and recomputing it from the full history gives the same answer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

WINDOW = 5
TOLERANCE = 0.05


def moving_average(values: Sequence[float], window: int = WINDOW) -> list[float]:
    """Trailing moving average: element k is the mean of values[max(0, k-window+1) .. k]."""
    out, acc = [], 0.0
    for k, v in enumerate(values):
        acc += v
        if k >= window:
            acc -= values[k - window]
        out.append(acc / min(k + 1, window))
    return out


def eligible(losses: Sequence[float], window: int = WINDOW, tolerance: float = TOLERANCE) -> list[bool]:
    """Rule step 2 for every validation."""
    ma = moving_average(losses, window)
    best, flags = math.inf, []
    for m in ma:
        best = min(best, m)
        flags.append(m <= (1.0 + tolerance) * best)
    return flags


def select_checkpoint(history: Sequence[Mapping[str, float]], window: int = WINDOW,
                      tolerance: float = TOLERANCE) -> int | None:
    """Index into ``history`` (records with ``val_loss`` and ``val_iou``) of the chosen validation.

    NaN IoUs (no cancer in prediction or reference) count as 0. Returns None for an empty history.
    """
    if not history:
        return None
    losses = [float(h["val_loss"]) for h in history]
    ma = moving_average(losses, window)
    flags = eligible(losses, window, tolerance)
    best_key, best_i = None, None
    for i, (h, ok) in enumerate(zip(history, flags)):
        if not ok:
            continue
        score = float(h["val_iou"])
        score = 0.0 if math.isnan(score) else score
        key = (score, -ma[i])  # higher IoU, then lower smoothed loss; strict '>' keeps the earlier
        if best_key is None or key > best_key:
            best_key, best_i = key, i
    return best_i
