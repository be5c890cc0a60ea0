"""Cancer IoU, mean with a 95% confidence interval, relative gain (protocol section 5).

The Student t quantile is computed here (regularised incomplete beta by a
continued fraction, inverted by bisection) so that no SciPy is needed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

CANCER = 1  # id of the cancer class in every label scheme (background 0, cancer 1)


@dataclass(frozen=True)
class Confusion:
    """Pixel counts for one class: true positives, false positives, false negatives, total pixels."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    total: int = 0

    def __add__(self, other: Confusion) -> Confusion:
        return Confusion(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.total + other.total)

    @property
    def iou(self) -> float:
        """tp / (tp + fp + fn); NaN when the class is absent from both prediction and reference."""
        union = self.tp + self.fp + self.fn
        return self.tp / union if union else float("nan")


def confusion(pred, target, cls: int = CANCER, valid=None) -> Confusion:
    """Counts of class ``cls`` in ``pred`` against ``target`` (numpy arrays or torch tensors)."""
    p = _np(pred) == cls
    t = _np(target) == cls
    if valid is not None:
        v = _np(valid).astype(bool)
        p, t = p & v, t & v
        total = int(v.sum())
    else:
        total = int(p.size)
    tp = int(np.count_nonzero(p & t))
    return Confusion(tp, int(np.count_nonzero(p)) - tp, int(np.count_nonzero(t)) - tp, total)


def _np(a) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.asarray(a)


def iou(pred, target, cls: int = CANCER) -> float:
    """IoU of class ``cls``."""
    return confusion(pred, target, cls).iou


# --- Student t quantile ---------------------------------------------------------------------------

def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    lbeta = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    front = math.exp(lbeta + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """Cumulative distribution function of Student's t with ``df`` degrees of freedom."""
    x = df / (df + t * t)
    tail = 0.5 * betainc(df / 2.0, 0.5, x)
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t (e.g. ``t_quantile(0.975, 4) = 2.776``)."""
    if not 0.0 < p < 1.0:
        raise ValueError("p must be in (0, 1)")
    if df <= 0:
        raise ValueError("df must be positive")
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
        if hi > 1e12:
            return math.inf
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


@dataclass(frozen=True)
class MeanCI:
    """Mean of n values and its two-sided confidence interval (Student t)."""

    mean: float
    low: float
    high: float
    n: int
    std: float

    @property
    def half_width(self) -> float:
        return self.high - self.mean


def mean_ci(values: Sequence[float], level: float = 0.95) -> MeanCI:
    """Mean +- t_{(1+level)/2, n-1} * s / sqrt(n) over the finite values.

    With one value the interval is the point itself (width unknown: NaN bounds).
    """
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    n = v.size
    if n == 0:
        return MeanCI(math.nan, math.nan, math.nan, 0, math.nan)
    m = float(v.mean())
    if n == 1:
        return MeanCI(m, math.nan, math.nan, 1, math.nan)
    s = float(v.std(ddof=1))
    h = t_quantile(0.5 + level / 2.0, n - 1) * s / math.sqrt(n)
    return MeanCI(m, m - h, m + h, n, s)


def relative_gain(with_value: float, without_value: float) -> float:
    """(with - without) / without: the gain of complementary labels, as in the paper (57% at N = 50)."""
    if not without_value or not np.isfinite(without_value):
        return math.nan
    return (with_value - without_value) / without_value
