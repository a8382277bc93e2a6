"""Finding anomalous days in a daily spend series, and what explains them.

Method: a robust seasonal decomposition (statsmodels STL, weekly period, robust=True so that
a spike does not bend the trend towards itself; a 15-day seasonal and 29-day trend smoother,
chosen on generated series: the defaults follow the noise so closely that a third of the
flagged days were false) gives each day an expected value (trend plus weekly seasonality) and
a residual. A day is anomalous when its residual's robust z-score reaches the threshold: 3.5
by default, Iglewicz and Hoaglin's cut-off for the modified z-score and the one OpenCost's
proposal (issue #3979) names. The scale is the median absolute deviation (MAD) of the
week-over-week differences, divided by 0.6745 x sqrt(2): a robust estimate of the day-to-day
noise that, unlike the MAD of the residuals themselves, the decomposition cannot shrink by
fitting the noise. Only increases count (what a cost anomaly is: AWS Cost Anomaly Detection
alerts on spend above the expected). A day whose actual and expected spend are both under
the minimum cost floor is never an anomaly, nor is one with less than 14 days of history
before it (two weekly cycles: less does not tell a weekly pattern from noise).

Root cause: the values of other dimensions ranked by their contribution to the day's delta,
the day's spend minus the mean of the seven days before, largest first (AWS's root causes
are the same idea over service, account, region and usage type).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

MIN_HISTORY_DAYS = 14
DEFAULT_Z = 3.5
MAD_SCALE = 0.6745  # the median absolute deviation of a standard normal
SEASON = 7
MAX_ROOT_CAUSES = 5


@dataclass(frozen=True)
class Finding:
    index: int  # day index in the series
    actual: float
    expected: float
    z_score: float

    @property
    def impact(self) -> float:
        return self.actual - self.expected

    @property
    def impact_percent(self) -> float:
        return self.impact / self.expected * 100 if self.expected > 0 else 100.0


SEASONAL_SMOOTHER = 15
TREND_SMOOTHER = 29


def decompose(series: np.ndarray) -> np.ndarray:
    """The expected value of each day: trend plus weekly seasonality, robustly fitted."""
    from statsmodels.tsa.seasonal import STL  # seconds to import: the service does it at start

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitted = STL(
            series, period=SEASON, seasonal=SEASONAL_SMOOTHER, trend=TREND_SMOOTHER, robust=True
        ).fit()
    return np.asarray(fitted.trend + fitted.seasonal, dtype=float)


def noise_scale(series: np.ndarray) -> float:
    """The day-to-day noise's standard deviation, robustly: from week-over-week differences."""
    differences = series[SEASON:] - series[:-SEASON]
    mad = float(np.median(np.abs(differences - np.median(differences))))
    if mad <= 1e-12:  # a flat series: any change stands out, but never divide by zero
        mad = float(np.mean(np.abs(differences))) or 1e-9
    return float(mad / MAD_SCALE / np.sqrt(2))


def robust_z(series: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """Each day's robust z-score: its residual over the noise scale."""
    residuals = series - expected
    return np.asarray((residuals - np.median(residuals)) / noise_scale(series), dtype=float)


def detect(
    series: np.ndarray, *, z_threshold: float = DEFAULT_Z, min_daily_cost: float = 1.0
) -> list[Finding]:
    """The anomalous days of `series` (a day's spend each, oldest first)."""
    values = np.asarray(series, dtype=float)
    if len(values) < MIN_HISTORY_DAYS + 1:
        return []
    expected = np.maximum(decompose(values), 0.0)
    z = robust_z(values, expected)
    found = []
    for index in range(MIN_HISTORY_DAYS, len(values)):
        if z[index] < z_threshold:
            continue
        if values[index] < min_daily_cost and expected[index] < min_daily_cost:
            continue
        found.append(Finding(index, float(values[index]), float(expected[index]), float(z[index])))
    return found


@dataclass(frozen=True)
class Contribution:
    dimension: str
    value: str
    delta: float
    share: float


def root_causes(
    day: Mapping[tuple[str, str], float], before: Mapping[tuple[str, str], Sequence[float]], impact: float
) -> list[Contribution]:
    """The (dimension, value) pairs whose spend rose most on the day over their mean of the days
    before; `day` and `before` are keyed by (dimension, value)."""
    deltas = []
    for key, actual in day.items():
        history = before.get(key, ())
        baseline = float(np.mean(history)) if len(history) else 0.0
        deltas.append((actual - baseline, key))
    deltas.sort(key=lambda item: (-item[0], item[1]))
    return [
        Contribution(dimension, value, delta, delta / impact if impact else 0.0)
        for delta, (dimension, value) in deltas[:MAX_ROOT_CAUSES]
        if delta > 0
    ]
