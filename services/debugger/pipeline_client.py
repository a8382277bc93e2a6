"""Reading jobs, their logs and their history from the pipeline service (RunService), with the
credentials the caller of AnalyzeJob presented (forwarded as they came), or as the debugger
(its mesh identity) when there are none.

The pipeline's refusals become the debugger's: NOT_FOUND for an unknown run, job or attempt,
PERMISSION_DENIED when the credentials may not read them, UNAVAILABLE when the pipeline
service is down or slow.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

import grpc

from devmesh.pipeline.v1 import runs_pb2, runs_pb2_grpc
from services.debugger.diagnosis import PreviousAttempt
from services.debugger.jobs import Attempt, Credentials, JobView
from services.runtime.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ServiceError,
    Unauthenticated,
    Unavailable,
)
from services.runtime.peers import PeerChannel

TIMEOUT_S = 10.0
LOG_PAGE = 10_000
HISTORY_RUNS = 50  # earlier runs of the pipeline looked at
HISTORY_READS = 10  # of them read whole (their jobs), at most
_FINAL_RUNS = frozenset(
    {runs_pb2.RUN_STATE_SUCCEEDED, runs_pb2.RUN_STATE_FAILED, runs_pb2.RUN_STATE_TIMED_OUT}
)


def _refusal(error: grpc.aio.AioRpcError, name: str) -> ServiceError:
    code = error.code()
    said = (error.details() or "")[:300]
    metadata = {"peer": "pipeline", "code": code.name}
    if code == grpc.StatusCode.NOT_FOUND:
        return NotFound(
            f"{name} not found: {said}", resource_type="pipeline.devmesh.io/Job", resource_name=name
        )
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return PermissionDenied(
            f"the pipeline service refused to show {name}: {said}",
            reason="PIPELINE_PERMISSION_DENIED",
            metadata=metadata,
        )
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return Unauthenticated(
            f"the pipeline service did not accept the credentials: {said}",
            reason="PIPELINE_UNAUTHENTICATED",
            metadata=metadata,
        )
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidArgument.for_field("job", f"the pipeline service refused {name}: {said}")
    if code in (
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    ):
        return Unavailable(
            f"the pipeline service is unavailable ({code.name}); try again",
            reason="PIPELINE_UNAVAILABLE",
            metadata=metadata,
        )
    return FailedPrecondition(
        f"the pipeline service answered {code.name}: {said}", reason="PIPELINE_REFUSED", metadata=metadata
    )


def _state(value: int) -> str:
    return (
        runs_pb2.JobState.Name(runs_pb2.JobState.ValueType(value)).removeprefix("JOB_STATE_")
        if value in runs_pb2.JobState.values()
        else ""
    )


def _reason(value: int) -> str:
    if value == runs_pb2.ATTEMPT_REASON_UNSPECIFIED or value not in runs_pb2.AttemptReason.values():
        return ""
    return runs_pb2.AttemptReason.Name(runs_pb2.AttemptReason.ValueType(value)).removeprefix(
        "ATTEMPT_REASON_"
    )


class PipelineJobs:
    """A `jobs.JobSource` over the pipeline service's RunService."""

    def __init__(self, pipeline: PeerChannel) -> None:
        self._pipeline = pipeline

    def _stub(self) -> runs_pb2_grpc.RunServiceStub:
        return runs_pb2_grpc.RunServiceStub(self._pipeline.channel())

    async def _get_run(self, run: str, credentials: Credentials, name: str) -> runs_pb2.Run:
        try:
            found: runs_pb2.Run = await self._stub().GetRun(
                runs_pb2.GetRunRequest(name=run), metadata=tuple(credentials), timeout=TIMEOUT_S
            )
        except grpc.aio.AioRpcError as error:
            raise _refusal(error, name) from None
        return found

    async def job(self, name: str, credentials: Credentials) -> JobView:
        run_name, _, key = name.rpartition("/jobs/")
        run = await self._get_run(run_name, credentials, name)
        found = next((j for j in run.jobs if j.key == key), None)
        if found is None:
            raise NotFound(
                f"{name} not found: its run has no job {key!r}",
                resource_type="pipeline.devmesh.io/Job",
                resource_name=name,
            )
        return JobView(
            name=name,
            run=run_name,
            pipeline=run_name.rsplit("/runs/", 1)[0],
            key=key,
            commit=run.ref,
            attempts=tuple(
                Attempt(a.number, a.name, _state(a.state), _reason(a.reason), a.exit_code, a.message)
                for a in found.attempts
            ),
        )

    async def log(self, attempt: Attempt, credentials: Credentials) -> AsyncGenerator[list[str], None]:
        token = ""
        while True:
            try:
                page = await self._stub().GetJobLog(
                    runs_pb2.GetJobLogRequest(name=attempt.name, page_size=LOG_PAGE, page_token=token),
                    metadata=tuple(credentials),
                    timeout=TIMEOUT_S,
                )
            except grpc.aio.AioRpcError as error:
                raise _refusal(error, attempt.name) from None
            yield list(page.lines)
            if not page.next_page_token or not page.lines:
                return
            token = page.next_page_token

    async def earlier_runs(self, job: JobView, credentials: Credentials) -> tuple[PreviousAttempt, ...]:
        """A history the credentials may not read, or that the pipeline fails to give, is none."""
        try:
            listed = await self._stub().ListRuns(
                runs_pb2.ListRunsRequest(parent=job.pipeline, page_size=HISTORY_RUNS),
                metadata=tuple(credentials),
                timeout=TIMEOUT_S,
            )
        except grpc.aio.AioRpcError:
            return ()
        found: list[PreviousAttempt] = []
        candidates = [
            r for r in listed.runs if r.name != job.run and r.ref == job.commit and r.state in _FINAL_RUNS
        ]
        for run in candidates[:HISTORY_READS]:
            try:
                whole = await self._stub().GetRun(
                    runs_pb2.GetRunRequest(name=run.name), metadata=tuple(credentials), timeout=TIMEOUT_S
                )
            except grpc.aio.AioRpcError:
                continue
            same = next((j for j in whole.jobs if j.key == job.key), None)
            if same is not None and same.state in (runs_pb2.JOB_STATE_SUCCEEDED, runs_pb2.JOB_STATE_FAILED):
                found.append(PreviousAttempt(job.commit, same.state == runs_pb2.JOB_STATE_SUCCEEDED))
                if found[-1].passed:
                    break
        return tuple(found)
