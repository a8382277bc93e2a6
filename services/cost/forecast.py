"""Daily spend forecasts: candidate models, the one with the smallest backtest error, and a
prediction interval from simulated paths of the fitted model.

Candidates: damped Holt-Winters with an additive trend and weekly seasonality (statsmodels'
ExponentialSmoothing(trend='add', damped_trend=True, seasonal='add', seasonal_periods=7)),
the same with multiplicative seasonality, and a seasonal naive forecast with drift (the
baseline every model must beat). The backtest holds out the last two weeks, fits each
candidate on the days before, and scores its forecast of the held-out days by MAPE; the winner
is fitted again on every day. Its interval comes from 1,000 simulated paths (errors drawn
from its residuals), widened by the ratio of the backtest's errors to the paths' spread when
the backtest erred more than the simulation expects (the paths know the noise, not the
error of the fitted parameters); their quantiles give each day's bounds and, summed, the
month-end projection's: a sum's quantiles are not the sum of the days' quantiles.

AWS Cost Explorer's defaults: an 80% interval, configurable from 51% to 99%, and no forecast
without enough history. Here: at least 28 days (four weekly cycles: two to initialise the
seasonal model, two to backtest it).
"""

from __future__ import annotations

import math
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# Imported with the service, not on the first forecast: it takes seconds, which a first
# ForecastCost through the edge (15 s) should not pay.
from services.runtime.errors import FailedPrecondition, InvalidArgument

MIN_HISTORY_DAYS = 28
MAX_HISTORY_DAYS = 400
BACKTEST_DAYS = 14
SEASON = 7
PATHS = 1000
# statsmodels' brute-force grid of starting values took a third of each fit and changed neither
# the benchmark's MAPE nor its coverage (0.0477 and 0.802 without, 0.0478 and 0.81 with).
USE_BRUTE = False
REMEMBERED = 64  # forecasts kept in memory, by their history
DEFAULT_LEVEL = 80
MAX_HORIZON = 366


@dataclass(frozen=True)
class Forecast:
    method: str
    backtest_mape: float
    mean: np.ndarray  # per day ahead
    lower: np.ndarray
    upper: np.ndarray
    paths: np.ndarray  # (PATHS, horizon) simulated totals per day
    level: int


Model = Callable[
    [np.ndarray, int, int], tuple[np.ndarray, np.ndarray]
]  # (history, horizon, seed) -> (mean, paths)


def _holt_winters(seasonal: str) -> Model:
    def fit(history: np.ndarray, horizon: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        from statsmodels.tsa.holtwinters import ExponentialSmoothing  # imported at the service's start

        series = history if seasonal == "add" else np.maximum(history, 1e-6)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence chatter on short series
            model = ExponentialSmoothing(
                series,
                trend="add",
                damped_trend=True,
                seasonal=seasonal,
                seasonal_periods=SEASON,
                initialization_method="estimated",
            ).fit(use_brute=USE_BRUTE)
            mean = np.asarray(model.forecast(horizon), dtype=float)
            paths = np.asarray(
                model.simulate(
                    horizon,
                    repetitions=PATHS,
                    error="add",
                    anchor="end",
                    random_errors="bootstrap",
                    random_state=seed,
                ),
                dtype=float,
            ).reshape(horizon, PATHS)
        return mean, paths.T

    return fit


def _seasonal_naive(history: np.ndarray, horizon: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Last week repeated, plus the mean weekly drift; errors bootstrapped from its residuals."""
    weeks = len(history) // SEASON
    drift = (history[-SEASON:].mean() - history[:SEASON].mean()) / max(weeks - 1, 1) / SEASON
    steps = np.arange(1, horizon + 1)
    mean = np.array([history[-SEASON + (h - 1) % SEASON] for h in steps]) + drift * steps
    residuals = history[SEASON:] - history[:-SEASON] - drift * SEASON
    rng = np.random.default_rng(seed)
    # A random walk of weekly errors: uncertainty grows with each week ahead.
    draws = rng.choice(residuals, size=(PATHS, horizon))
    paths = mean + np.cumsum(draws, axis=1) / np.sqrt(np.maximum(1, (steps - 1) // SEASON + 1))
    return mean, paths


CANDIDATES: dict[str, Model] = {
    "holt_winters_damped_weekly": _holt_winters("add"),
    "holt_winters_damped_weekly_multiplicative": _holt_winters("mul"),
    "seasonal_naive_drift": _seasonal_naive,
}


def mape(actual: np.ndarray, predicted: np.ndarray) -> float:
    """Mean absolute percentage error over the days with spend."""
    mask = np.abs(actual) > 1e-9
    if not mask.any():
        return 0.0
    return float(np.mean(np.abs((actual[mask] - predicted[mask]) / actual[mask])))


def check_level(level: int) -> int:
    level = level or DEFAULT_LEVEL
    if not 51 <= level <= 99:
        raise InvalidArgument.for_field("prediction_interval_level", "must be from 51 to 99 (percent)")
    return level


def forecast(history: np.ndarray, horizon: int, level: int, *, seed: int = 0) -> Forecast:
    """Forecast `horizon` days after `history` (a day's spend each, oldest first)."""
    if len(history) < MIN_HISTORY_DAYS:
        raise FailedPrecondition(
            f"a forecast needs at least {MIN_HISTORY_DAYS} days of history; the spend selected has "
            f"{len(history)}",
            reason="NOT_ENOUGH_HISTORY",
            metadata={"needed_days": str(MIN_HISTORY_DAYS), "history_days": str(len(history))},
        )
    if not 1 <= horizon <= MAX_HORIZON:
        raise InvalidArgument.for_field("horizon_days", f"must be from 1 to {MAX_HORIZON}")
    history = np.asarray(history[-MAX_HISTORY_DAYS:], dtype=float)
    train, held = history[:-BACKTEST_DAYS], history[-BACKTEST_DAYS:]
    scores: dict[str, float] = {}
    widening: dict[str, float] = {}
    for name, model in CANDIDATES.items():
        try:
            predicted, backtest_paths = model(train, BACKTEST_DAYS, seed)
        except (ValueError, np.linalg.LinAlgError, ZeroDivisionError):
            continue
        if np.all(np.isfinite(predicted)):
            scores[name] = mape(held, predicted)
            # Simulated paths know the noise but not the model's own error (its parameters are
            # estimates): widen them by how much larger the backtest's errors were.
            spread = float(np.mean(np.std(backtest_paths, axis=0))) or 1e-9
            error = float(np.sqrt(np.mean((held - predicted) ** 2)))
            widening[name] = min(max(error / spread, 1.0), 3.0)
    method = min(scores, key=lambda n: (scores[n], n)) if scores else "seasonal_naive_drift"
    mean, paths = CANDIDATES[method](history, horizon, seed)
    paths = np.maximum(mean + widening.get(method, 1.0) * (paths - mean), 0.0)
    tail = (100 - level) / 2
    lower, upper = np.percentile(paths, [tail, 100 - tail], axis=0)
    return Forecast(
        method=method,
        backtest_mape=scores.get(method, math.nan),
        mean=np.maximum(mean, 0.0),
        lower=lower,
        upper=upper,
        paths=paths,
        level=level,
    )


def total_bounds(result: Forecast, days: int) -> tuple[float, float, float]:
    """The forecast sum of the first `days` days: mean, lower and upper (from the paths)."""
    if days <= 0:
        return 0.0, 0.0, 0.0
    sums = result.paths[:, :days].sum(axis=1)
    tail = (100 - result.level) / 2
    low, high = np.percentile(sums, [tail, 100 - tail])
    return float(result.mean[:days].sum()), float(low), float(high)


_remembered: OrderedDict[tuple[bytes, int, int], Forecast] = OrderedDict()
_remembered_lock = threading.Lock()


def remembered(history: np.ndarray, horizon: int, level: int) -> Forecast:
    """`forecast(history, horizon, level)`, computed once per history: a forecast is
    deterministic and takes seconds, and a budget's creation, its reads and a ForecastCost of
    the same spend ask for the same one until an import changes the history."""
    key = (np.asarray(history, dtype=float).tobytes(), horizon, level)
    with _remembered_lock:
        if key in _remembered:
            _remembered.move_to_end(key)
            return _remembered[key]
    result = forecast(history, horizon, level)
    with _remembered_lock:
        _remembered[key] = result
        while len(_remembered) > REMEMBERED:
            _remembered.popitem(last=False)
    return result
