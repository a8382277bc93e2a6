"""The `on: transient` classifier that asks the debugger service: a failed attempt is transient
when the debugger's diagnosis of it says a retry can help (network, timeouts, lost workers,
flaky tests, image pulls).

The pipeline calls AnalyzeJob as itself (its mesh identity); the debugger reads the attempt's
log and history back from the pipeline. `retries.Bounded` wraps it: no answer in time, or
an error, and the retry policy's own rules decide.
"""

from __future__ import annotations

from devmesh.debugger.v1 import debugger_pb2, debugger_pb2_grpc
from services.pipeline.runs.retries import Failure
from services.runtime.peers import PeerChannel


class DebuggerClassifier:
    """Asks the debugger whether a failed attempt is transient."""

    def __init__(self, debugger: PeerChannel, timeout_s: float) -> None:
        self._debugger = debugger
        self._timeout_s = timeout_s

    async def is_transient(self, failure: Failure) -> bool:
        stub = debugger_pb2_grpc.DebuggerServiceStub(self._debugger.channel())
        diagnosis = await stub.AnalyzeJob(
            debugger_pb2.AnalyzeJobRequest(job=f"{failure.run}/jobs/{failure.job}", attempt=failure.attempt),
            timeout=self._timeout_s,
        )
        return bool(diagnosis.transient)
