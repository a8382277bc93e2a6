"""Rightsizing arithmetic: usage over the target, the floors, the savings and the gates."""

from __future__ import annotations

from decimal import Decimal

from services.cost import rightsizing
from services.cost.rightsizing import DEFAULT_PRICES, Usage, size, worth_it

GIB = 1024**3


def _usage(cpu: float, memory: float, cpu_request: float = 1000, memory_request: float = 2 * GIB) -> Usage:
    return Usage("web", cpu, memory, cpu_request, memory_request, 100, 0, 1)


def test_requests_are_the_usage_divided_by_the_target() -> None:
    sizing = size(_usage(350, 0.7 * GIB), 0.7, DEFAULT_PRICES)
    assert (sizing.cpu, sizing.memory) == (500.0, float(GIB))


def test_an_idle_container_gets_the_floors() -> None:
    sizing = size(_usage(0.1, 1024), 0.7, DEFAULT_PRICES)
    assert (sizing.cpu, sizing.memory) == (
        rightsizing.CPU_FLOOR_MILLICORES,
        float(rightsizing.MEMORY_FLOOR_BYTES),
    )


def test_savings_are_the_price_of_what_is_no_longer_requested_over_730_hours() -> None:
    sizing = size(_usage(350, 0.7 * GIB), 0.7, DEFAULT_PRICES)
    expected = (500 * DEFAULT_PRICES.cpu_millicore_hour + 1 * DEFAULT_PRICES.memory_gib_hour) * 730
    assert abs(sizing.savings - expected) < Decimal("0.00001")


def test_profiles_have_kubecosts_targets() -> None:
    assert rightsizing.target_of("") == 0.7
    assert rightsizing.target_of("high-availability") == 0.5


def test_a_saving_under_ten_percent_is_not_worth_a_recommendation() -> None:
    sizing = size(_usage(665, 1.33 * GIB), 0.7, DEFAULT_PRICES)  # 950 m and 1.9 GiB: 5% less
    assert not worth_it(sizing, Decimal(0))


def test_a_saving_under_the_monthly_minimum_is_not_worth_a_recommendation() -> None:
    sizing = size(_usage(35, 0.07 * GIB, cpu_request=100, memory_request=0.2 * GIB), 0.7, DEFAULT_PRICES)
    assert sizing.savings_percent > 10
    assert not worth_it(sizing, Decimal(5))
