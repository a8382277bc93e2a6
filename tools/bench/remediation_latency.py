"""Remediation proposal-to-execution latency of an automatic action: a debugger in a process of
its own on a fresh Valkey; each round proposes a Kubernetes restart (low risk: approved by the
policy) and executes it (the dry-run patch, validated against the Deployment schema), one
target per round so the per-target rate limit never escalates. p50/p99 of the whole round.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from grpc import aio

from devmesh.debugger.v1 import remediation_pb2 as pb
from devmesh.debugger.v1 import remediation_pb2_grpc
from tools.bench import stats
from tools.stack.service_process import start_service
from tools.stack.valkey import start_valkey

ROUNDS = 300
WARMUP = 10


async def _measure(addr: str) -> dict[str, Any]:
    async with aio.insecure_channel(addr) as channel:
        stub = remediation_pb2_grpc.RemediationServiceStub(channel)
        latencies: list[float] = []
        started = time.perf_counter()
        for index in range(WARMUP + ROUNDS):
            action = pb.Action(
                kind=pb.ACTION_KIND_KUBERNETES_RESTART, target=f"namespaces/bench/deployments/d{index}"
            )
            start = time.perf_counter()
            made = await stub.ProposeRemediation(pb.ProposeRemediationRequest(plan=[action]))
            done = await stub.ExecuteRemediation(pb.ExecuteRemediationRequest(name=made.name))
            elapsed = time.perf_counter() - start
            if done.state != pb.REMEDIATION_STATE_DRY_RUN:
                raise RuntimeError(f"{made.name} ended {pb.RemediationState.Name(done.state)}")
            if index == WARMUP - 1:
                started = time.perf_counter()
            elif index >= WARMUP:
                latencies.append(elapsed)
        figures = stats.summary(latencies, time.perf_counter() - started)
    return {"automatic_proposal_to_execution": {**figures, "action": "KUBERNETES_RESTART (dry run)"}}


def measure() -> dict[str, Any]:
    """The figures, from a debugger process started and stopped here."""
    with tempfile.TemporaryDirectory(prefix="bench-remediation-") as tmp:
        state = Path(tmp)
        valkey = start_valkey(state / "valkey")
        try:
            service = start_service(
                ["debugger"], valkey.url, state, extra_env={"DEVMESH_LOG_LEVEL": "warning"}
            )
            try:
                return asyncio.run(_measure(service.addr))
            finally:
                service.process.stop()
        finally:
            valkey.process.stop()
