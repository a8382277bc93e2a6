"""The watch fan-out alone, on a fresh Valkey and config service (the config section measures it too).

One write delivered to 1,000 open WatchConfig streams, against the same fan-out from a bare
grpc.aio server; latency from the write's sending to each receipt (`tools.bench.fanout`).
Goal: p99 < 250 ms. Not part of `make bench`, whose config section includes it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from tools.bench.fanout import FANOUT_GOAL_P99_MS, FANOUT_SERVICE_ENV, watch_fanout
from tools.bench.sections import Section
from tools.stack.service_process import start_service
from tools.stack.valkey import start_valkey


def run(_duration: float) -> dict[str, Any]:
    """The watch fan-out alone (`python -m tools.bench watch`), on a fresh Valkey and service."""
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        valkey = start_valkey(state / "valkey")
        config = None
        try:
            config = start_service(["config"], valkey.url, state, extra_env=FANOUT_SERVICE_ENV)
            return {**watch_fanout(config.addr), "goal_p99_ms": FANOUT_GOAL_P99_MS}
        finally:
            if config is not None:
                config.process.stop()
            valkey.process.stop()


SECTION = Section("watch", run, order=None)
