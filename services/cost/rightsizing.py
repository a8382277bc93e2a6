"""Request rightsizing for Kubernetes containers: how much CPU and memory to request.

The method is Kubecost's request right-sizing: recommended = usage / target utilisation, with
CPU usage taken at a high percentile (p95 by default: Kubecost and the GKE recommender look at
p90-p95; below that a busy hour gets throttled) and memory at its highest daily peak (memory
cannot be throttled, only killed). Kubecost's default target is 0.7, and its profiles are
development 0.8, production 0.65 and high availability 0.5. Floors are Kubecost's: 10
millicores and 20 MiB. A recommendation is made only when it saves at least 10% of the
container's cost and at least a minimum per month (default 1 in the workload's currency), so
that nobody is asked to redeploy for cents.

Savings are priced at the workload's cost per millicore-hour and per GiB-hour (what its
EffectiveCost works out to per unit; by default OpenCost's list prices, $0.031611 per vCPU-hour
and $0.004237 per GiB-hour), over a month of 730 hours:
savings = price x (current request - recommended request).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal

DEFAULT_TARGET = 0.7
PROFILES = {"development": 0.8, "production": 0.65, "high-availability": 0.5}
CPU_FLOOR_MILLICORES = 10.0
MEMORY_FLOOR_BYTES = 20 * 1024**2
CPU_PERCENTILE = 95.0
MIN_SAVINGS_FRACTION = 0.10
HOURS_PER_MONTH = 730
GIB = 1024**3
DEFAULT_CPU_MILLICORE_HOUR = Decimal("0.031611") / 1000
DEFAULT_MEMORY_GIB_HOUR = Decimal("0.004237")


@dataclass(frozen=True)
class Prices:
    cpu_millicore_hour: Decimal
    memory_gib_hour: Decimal
    currency: str


DEFAULT_PRICES = Prices(DEFAULT_CPU_MILLICORE_HOUR, DEFAULT_MEMORY_GIB_HOUR, "USD")


@dataclass(frozen=True)
class Usage:
    """What a container's samples say, over the window."""

    container: str
    cpu_at_percentile: float  # millicores
    memory_peak: float  # bytes: the highest daily peak
    cpu_request: float  # millicores, as of the newest sample
    memory_request: float  # bytes
    samples: int
    window_start_us: int
    window_end_us: int


@dataclass(frozen=True)
class Sizing:
    usage: Usage
    target: float
    cpu: float  # recommended millicores
    memory: float  # recommended bytes
    current_monthly: Decimal
    recommended_monthly: Decimal

    @property
    def savings(self) -> Decimal:
        return self.current_monthly - self.recommended_monthly

    @property
    def savings_percent(self) -> float:
        if self.current_monthly <= 0:
            return 0.0
        return float(self.savings / self.current_monthly * 100)

    def fingerprint(self) -> str:
        """What the recommendation says, coarsely: a dismissed one comes back when this changes."""
        return f"{round(self.cpu)}m/{round(self.memory / 1024**2)}Mi"


def target_of(profile: str) -> float:
    """The target utilisation of a profile name (empty: the default)."""
    return PROFILES[profile] if profile else DEFAULT_TARGET


def monthly(cpu_millicores: float, memory_bytes: float, prices: Prices) -> Decimal:
    hourly = (
        Decimal(str(cpu_millicores)) * prices.cpu_millicore_hour
        + Decimal(str(memory_bytes / GIB)) * prices.memory_gib_hour
    )
    return (hourly * HOURS_PER_MONTH).quantize(Decimal("0.000001"), ROUND_HALF_EVEN)


def size(usage: Usage, target: float, prices: Prices) -> Sizing:
    """The requests that would run `usage` at `target` utilisation, and what they cost."""
    cpu = max(usage.cpu_at_percentile / target, CPU_FLOOR_MILLICORES)
    memory = max(usage.memory_peak / target, float(MEMORY_FLOOR_BYTES))
    return Sizing(
        usage=usage,
        target=target,
        cpu=round(cpu, 1),
        memory=float(round(memory)),
        current_monthly=monthly(usage.cpu_request, usage.memory_request, prices),
        recommended_monthly=monthly(round(cpu, 1), float(round(memory)), prices),
    )


def worth_it(sizing: Sizing, min_monthly_savings: Decimal) -> bool:
    """Whether the saving is at least 10% of the current cost and at least the minimum."""
    return sizing.savings >= min_monthly_savings and sizing.savings_percent >= MIN_SAVINGS_FRACTION * 100
