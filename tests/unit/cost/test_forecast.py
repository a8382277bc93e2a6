"""Forecasts: the same history is fitted once."""

from __future__ import annotations

import pytest

from services.cost import forecast
from tools.focus_generator import daily_series


def test_a_history_seen_before_is_not_fitted_again(monkeypatch: pytest.MonkeyPatch) -> None:
    series = daily_series(40, seed=3, noise=0.05)
    fits: list[int] = []
    real = forecast.forecast

    def counted(*args: object, **kwargs: object) -> forecast.Forecast:
        fits.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(forecast, "forecast", counted)
    first = forecast.remembered(series, 10, 80)
    again = forecast.remembered(series.copy(), 10, 80)
    other = forecast.remembered(series, 11, 80)
    assert again is first and len(other.mean) == 11
    assert len(fits) == 2
