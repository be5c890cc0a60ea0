"""Checkpoint selection: validation cancer IoU together with the smoothed validation loss.

Two rules, both decided online (a validation's fate depends only on the
history up to it):

``sul`` (default; SUL ``src/trainer.py`` ``Trainer.evaluate``): validation k
is saved when its cancer IoU beats every earlier IoU (a strict new record,
records start at 0) AND its raw loss is at most the best 5-point moving
average of the losses seen before it. The moving average is ``inf`` until
five losses exist (SUL seeds its window with ``inf``), so early records are
always kept. The selected checkpoint is the last one saved.

``smoothed-loss`` (this tool's earlier rule, kept as an option):

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
RULES = ("sul", "smoothed-loss")


def sul_saves(history: Sequence[Mapping[str, float]], window: int = WINDOW) -> list[bool]:
    """For every validation, whether SUL's rule saves its checkpoint (NaN IoU counts as 0, NaN loss never passes)."""
    best_iou, best_ma = 0.0, math.inf
    losses: list[float] = []
    flags = []
    for h in history:
        loss = float(h["val_loss"])
        score = float(h["val_iou"])
        score = 0.0 if math.isnan(score) else score
        losses.append(loss)
        ma = sum(losses[-window:]) / window if len(losses) >= window else math.inf
        flags.append(score > best_iou and loss <= best_ma)
        best_iou = max(best_iou, score)
        if ma <= best_ma:
            best_ma = ma
    return flags


def select_sul(history: Sequence[Mapping[str, float]], window: int = WINDOW) -> int | None:
    """Index of the last validation SUL's rule saved, or None when it saved none."""
    flags = sul_saves(history, window)
    saved = [i for i, f in enumerate(flags) if f]
    return saved[-1] if saved else None


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
                      tolerance: float = TOLERANCE, rule: str = "smoothed-loss") -> int | None:
    """Index into ``history`` (records with ``val_loss`` and ``val_iou``) of the chosen validation.

    ``rule``: ``"sul"`` (:func:`select_sul`) or ``"smoothed-loss"`` (steps 1-3 above).
    NaN IoUs (no cancer in prediction or reference) count as 0. Returns None for an empty history.
    """
    if rule == "sul":
        return select_sul(history, window)
    if rule != "smoothed-loss":
        raise ValueError(f"unknown selection rule {rule!r}; expected one of {', '.join(RULES)}")
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
