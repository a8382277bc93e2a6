"""Remediation proposal-to-execution latency of an automatic action: a debugger in a process of
its own on a fresh Valkey; each round proposes a Kubernetes restart (low risk: approved by the
policy; the dry-run patch, validated against the Deployment schema), one target per round so the
per-target rate limit never escalates. p50/p99 of the whole round.

`automatic_proposal_to_execution` is the path nobody calls ExecuteRemediation on: the proposal
wakes the background executor, and the round ends when WatchRemediations shows the remediation
executed (DRY_RUN); `to_executing` is how long the executor took to pick it up. The baseline of
the same run, `called_proposal_to_execution`, is a second debugger process with the background
executor off, where the client calls ExecuteRemediation itself.
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
ROUND_TIMEOUT_S = 30.0


def _restart(index: int, run: str) -> pb.ProposeRemediationRequest:
    action = pb.Action(
        kind=pb.ACTION_KIND_KUBERNETES_RESTART, target=f"namespaces/bench/deployments/{run}{index}"
    )
    return pb.ProposeRemediationRequest(plan=[action])


async def _called(addr: str) -> dict[str, Any]:
    async with aio.insecure_channel(addr) as channel:
        stub = remediation_pb2_grpc.RemediationServiceStub(channel)
        latencies: list[float] = []
        started = time.perf_counter()
        for index in range(WARMUP + ROUNDS):
            start = time.perf_counter()
            made = await stub.ProposeRemediation(_restart(index, "c"))
            done = await stub.ExecuteRemediation(pb.ExecuteRemediationRequest(name=made.name))
            elapsed = time.perf_counter() - start
            if done.state != pb.REMEDIATION_STATE_DRY_RUN:
                raise RuntimeError(f"{made.name} ended {pb.RemediationState.Name(done.state)}")
            if index == WARMUP - 1:
                started = time.perf_counter()
            elif index >= WARMUP:
                latencies.append(elapsed)
        return {
            **stats.summary(latencies, time.perf_counter() - started),
            "action": "KUBERNETES_RESTART (dry run)",
        }


async def _automatic(addr: str) -> dict[str, Any]:
    async with aio.insecure_channel(addr) as channel:
        stub = remediation_pb2_grpc.RemediationServiceStub(channel)
        watch = stub.WatchRemediations(pb.WatchRemediationsRequest())
        events = aiter(watch)
        to_final: list[float] = []
        to_executing: list[float] = []
        started = time.perf_counter()
        for index in range(WARMUP + ROUNDS):
            start = time.perf_counter()
            made = await stub.ProposeRemediation(_restart(index, "a"))
            executing_at = 0.0
            async with asyncio.timeout(ROUND_TIMEOUT_S):
                while True:
                    event = await anext(events)
                    if event.remediation.name != made.name:
                        continue
                    state = event.remediation.state
                    if state == pb.REMEDIATION_STATE_EXECUTING and not executing_at:
                        executing_at = time.perf_counter()
                    if state in (pb.REMEDIATION_STATE_DRY_RUN, pb.REMEDIATION_STATE_FAILED):
                        break
            elapsed = time.perf_counter() - start
            if state != pb.REMEDIATION_STATE_DRY_RUN:
                raise RuntimeError(f"{made.name} ended {pb.RemediationState.Name(state)}")
            if index == WARMUP - 1:
                started = time.perf_counter()
            elif index >= WARMUP:
                to_final.append(elapsed)
                to_executing.append(executing_at - start)
        watch.cancel()
        duration = time.perf_counter() - started
        picked_up = stats.summary(to_executing, duration)
        return {
            **stats.summary(to_final, duration),
            "to_executing_p50_ms": picked_up["p50_ms"],
            "to_executing_p99_ms": picked_up["p99_ms"],
            "action": "KUBERNETES_RESTART (dry run), executed by the background executor",
        }


def measure() -> dict[str, Any]:
    """The figures, from debugger processes started and stopped here."""
    with tempfile.TemporaryDirectory(prefix="bench-remediation-") as tmp:
        state = Path(tmp)
        valkey = start_valkey(state / "valkey")
        try:
            figures: dict[str, Any] = {}
            automatic = start_service(
                ["debugger"], valkey.url, state, extra_env={"DEVMESH_LOG_LEVEL": "warning"}
            )
            try:
                figures["automatic_proposal_to_execution"] = asyncio.run(_automatic(automatic.addr))
            finally:
                automatic.process.stop()
            called = start_service(
                ["debugger"],
                valkey.url,
                state,
                extra_env={"DEVMESH_LOG_LEVEL": "warning", "DEVMESH_DEBUGGER_REMEDIATION_EXECUTOR": "off"},
            )
            try:
                figures["called_proposal_to_execution"] = asyncio.run(_called(called.addr))
            finally:
                called.process.stop()
            return figures
        finally:
            valkey.process.stop()
