"""The debugger: template grouping on Loghub against drain3, and the in-process mining rate.

Grouping accuracy per Loghub-2k system and its mean with the miner's one generic
configuration, against drain3 (defaults and generic masks) in the same run; lines mined per
second in process (`tools.bench.log_grouping`). Goals: mean GA >= 0.92, >= 50,000 lines/s.
Needs ../shared/data (skipped with a reason when it is absent).
"""

from __future__ import annotations

from typing import Any

from tools.bench import log_grouping
from tools.bench.sections import Section


def run(_duration: float) -> dict[str, Any]:
    """Every debugger figure whose data is present."""
    if not log_grouping.LOGHUB.is_dir():
        return {"skipped": f"no Loghub data at {log_grouping.LOGHUB}"}
    return {
        "grouping_accuracy": log_grouping.measure(),
        "mining": log_grouping.mining_rate(),
    }


SECTION = Section("debugger", run, order=60)
