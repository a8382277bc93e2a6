"""Pipeline actions through the pipeline service's RunService stubs, as the debugger's own service
identity (no caller's credentials are forwarded: the background executor has no caller).

Re-running waits out the action's `delay` (the backoff a transient failure asks for), waits for
the run to finish (RerunRun takes finished runs only), then re-runs its failed jobs
(`failed_only`: new attempts, never a rewrite). RerunRun takes no idempotency key, so the run's
`rerun_count` is: `prepare` records it before the call, and after a replica died inside the
call `recover` compares it, so a re-run that happened is never started twice. Verification
follows the run until it finishes (within the window) and wants the re-run job, or the run,
to succeed. Cancelling a stuck run is idempotent (cancelling a cancelled run changes nothing);
it verifies that the run finished. Neither has anything to undo: attempts are history.
"""

from __future__ import annotations

import asyncio
import time
from typing import TypeVar

import grpc
from google.protobuf.message import Message

from devmesh.pipeline.v1 import runs_pb2, runs_pb2_grpc
from services.debugger.remediation import Action, ActionKind
from services.debugger.remediation_actions import Applied
from services.debugger.remediation_plan import PIPELINE_JOB, PIPELINE_RUN, delay_seconds
from services.runtime.errors import FailedPrecondition
from services.runtime.peers import PeerChannel

CALL_TIMEOUT_S = 10.0
POLL_S = 0.25
RERUN_COUNT = "rerun_count"
_FINAL = frozenset(
    {
        runs_pb2.RUN_STATE_SUCCEEDED,
        runs_pb2.RUN_STATE_FAILED,
        runs_pb2.RUN_STATE_CANCELLED,
        runs_pb2.RUN_STATE_TIMED_OUT,
    }
)
_RETRIED = frozenset({grpc.StatusCode.UNAVAILABLE})
_M = TypeVar("_M", bound=Message)


def run_of(action: Action) -> tuple[str, str]:
    """(the run's name, the job's key or empty) an action acts on."""
    if action.kind is ActionKind.PIPELINE_CANCEL_RUN:
        PIPELINE_RUN.parse(action.target, "target")
        return action.target, ""
    project, pipeline, run, job = PIPELINE_JOB.parse(action.target, "target")
    return PIPELINE_RUN.format(project, pipeline, run), job


def _state(run: runs_pb2.Run) -> str:
    return runs_pb2.RunState.Name(run.state).removeprefix("RUN_STATE_")


def _job_states(run: runs_pb2.Run) -> str:
    return ", ".join(
        f"{j.key} {runs_pb2.JobState.Name(j.state).removeprefix('JOB_STATE_')}"
        for j in run.jobs
        if j.state not in (runs_pb2.JOB_STATE_SUCCEEDED, runs_pb2.JOB_STATE_SKIPPED)
    )


class PipelineActions:
    """Executes PIPELINE_RERUN, PIPELINE_RERUN_WITH_BACKOFF and PIPELINE_CANCEL_RUN."""

    kinds = frozenset(
        {ActionKind.PIPELINE_RERUN, ActionKind.PIPELINE_RERUN_WITH_BACKOFF, ActionKind.PIPELINE_CANCEL_RUN}
    )

    def __init__(self, peer: PeerChannel, *, verify_window_s: float) -> None:
        self._peer = peer
        self._window_s = verify_window_s

    async def _call(self, method: str, request: Message, response: type[_M]) -> _M:
        stub = runs_pb2_grpc.RunServiceStub(self._peer.channel())
        for attempt in range(3):
            try:
                found = await getattr(stub, method)(request, timeout=CALL_TIMEOUT_S)
            except grpc.aio.AioRpcError as error:
                if error.code() in _RETRIED and attempt < 2:
                    await asyncio.sleep(0.5 * (attempt + 1))
                    continue
                raise FailedPrecondition(
                    f"pipeline {method} refused: {error.code().name}: {(error.details() or '')[:300]}",
                    reason="PEER_REFUSED",
                    metadata={"peer": "pipeline", "code": error.code().name},
                ) from None
            assert isinstance(found, response)
            return found
        raise AssertionError("unreachable")

    async def _get(self, name: str) -> runs_pb2.Run:
        return await self._call("GetRun", runs_pb2.GetRunRequest(name=name), runs_pb2.Run)

    async def _finished(self, name: str, *, reruns_at_least: int = 0) -> runs_pb2.Run | None:
        """The run once it has finished (after at least that many re-runs); None after the window."""
        end = time.monotonic() + self._window_s
        while True:
            run = await self._get(name)
            if run.state in _FINAL and run.rerun_count >= reruns_at_least:
                return run
            if time.monotonic() > end:
                return None
            await asyncio.sleep(POLL_S)

    async def prepare(self, action: Action) -> dict[str, str]:
        name, _ = run_of(action)
        run = await self._get(name)
        return {RERUN_COUNT: str(run.rerun_count)}

    async def recover(self, action: Action, prepared: dict[str, str], idempotency_key: str) -> Applied | None:
        if action.kind is ActionKind.PIPELINE_CANCEL_RUN or RERUN_COUNT not in prepared:
            return None  # cancelling again changes nothing; nothing recorded: nothing was called
        name, _ = run_of(action)
        run = await self._get(name)
        if run.rerun_count <= int(prepared[RERUN_COUNT]):
            return None
        return Applied(
            undo={RERUN_COUNT: str(int(prepared[RERUN_COUNT]) + 1)},
            detail=f"{name} had been re-run (re-run {run.rerun_count}) before the replica stopped",
        )

    async def execute(self, action: Action, idempotency_key: str) -> Applied:
        name, _ = run_of(action)
        if action.kind is ActionKind.PIPELINE_CANCEL_RUN:
            run = await self._call("CancelRun", runs_pb2.CancelRunRequest(name=name), runs_pb2.Run)
            return Applied(detail=f"asked {name} to cancel (it was {_state(run)})")
        if "delay" in action.parameters:
            await asyncio.sleep(delay_seconds(action.parameters["delay"], "parameters['delay']"))
        finished = await self._finished(name)
        if finished is None:
            raise FailedPrecondition(
                f"{name} did not finish within {self._window_s:.0f} s: it cannot be re-run",
                reason="RUN_NOT_FINISHED",
            )
        if finished.state == runs_pb2.RUN_STATE_SUCCEEDED:
            raise FailedPrecondition(
                f"{name} has succeeded meanwhile: nothing to re-run", reason="NOTHING_FAILED"
            )
        run = await self._call(
            "RerunRun", runs_pb2.RerunRunRequest(name=name, failed_only=True), runs_pb2.Run
        )
        return Applied(
            undo={RERUN_COUNT: str(run.rerun_count)},
            detail=f"re-ran the failed jobs of {name} (re-run {run.rerun_count}) after it ended {_state(finished)}",
        )

    async def verify(self, action: Action, applied: Applied) -> str | None:
        name, job = run_of(action)
        reruns = int(applied.undo.get(RERUN_COUNT, "0"))
        run = await self._finished(name, reruns_at_least=reruns)
        if run is None:
            return f"{name} did not finish within {self._window_s:.0f} s"
        if action.kind is ActionKind.PIPELINE_CANCEL_RUN:
            return None  # finished: cancelled, or it ended by itself meanwhile
        target = [j for j in run.jobs if j.key == job or j.job_id == job]
        if target and all(j.state == runs_pb2.JOB_STATE_SUCCEEDED for j in target):
            return None
        if not target and run.state == runs_pb2.RUN_STATE_SUCCEEDED:
            return None
        return f"the re-run of {name} ended {_state(run)}: {_job_states(run)}"[:1000]

    async def undo(self, action: Action, applied: Applied, idempotency_key: str) -> None:
        return None  # a re-run's attempts and a cancellation are history: nothing to take back
