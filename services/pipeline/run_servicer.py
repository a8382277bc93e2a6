"""RunService over gRPC: converts protos to run-domain calls and back."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from google.protobuf import struct_pb2
from grpc import aio

from devmesh.pipeline.v1 import runs_pb2, runs_pb2_grpc
from services.pipeline import names
from services.pipeline.runs import caches_servicer, states
from services.pipeline.runs.artifacts import ArtifactDomain, ArtifactRecord, Upload
from services.pipeline.runs.caches import CacheDomain
from services.pipeline.runs.job_secrets import JobSecrets
from services.pipeline.runs.records import attempt_field
from services.pipeline.runs.service import RunDomain, RunView
from services.pipeline.runs.store import RunRecord
from services.runtime import protos
from services.runtime.errors import InvalidArgument
from services.runtime.request_context import note_audit, principal_name


def _struct(data: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(data)
    return message


def run_proto(run: RunRecord, view: RunView | None = None) -> runs_pb2.Run:
    message = runs_pb2.Run(
        name=names.run_name(run.project, run.pipeline, run.id),
        revision=run.revision,
        state=runs_pb2.RunState.Value(f"RUN_STATE_{run.state}"),
        trigger=run.trigger,
        inputs=_struct(run.inputs),
        source=run.source,
        ref=run.ref,
        started_by=run.started_by,
        concurrency_group=run.group,
        cancel_requested=run.cancel,
        rerun_count=run.reruns,
        create_time=protos.timestamp(run.create_time_us),
    )
    if run.end_time_us:
        message.end_time.CopyFrom(protos.timestamp(run.end_time_us))
    if view is None:
        return message
    message.summary = view.summary
    for job in run.plan.jobs:
        record = view.jobs.get(job.key)
        if record is None:
            continue
        job_run = message.jobs.add(
            key=job.key,
            job_id=job.job_id,
            matrix=job.matrix,
            state=runs_pb2.JobState.Value(f"JOB_STATE_{record.s}"),
            skip_reason=record.r if record.s in (states.SKIPPED, states.CANCELLED, states.REJECTED) else "",
        )
        setattr(job_run, "finally", job.finally_job)
        for number in range(1, record.n + 1):
            attempt = view.attempts.get(attempt_field(job.key, number))
            if attempt is None:
                continue
            item = job_run.attempts.add(
                name=names.attempt_name(run.project, run.pipeline, run.id, job.key, number),
                number=number,
                state=runs_pb2.JobState.Value(f"JOB_STATE_{attempt.state}"),
                reason=runs_pb2.AttemptReason.Value(f"ATTEMPT_REASON_{attempt.reason}")
                if attempt.reason
                else runs_pb2.ATTEMPT_REASON_UNSPECIFIED,
                exit_code=attempt.exit,
                message=attempt.msg,
                worker=attempt.worker,
                log_truncated=bool(attempt.trunc),
            )
            for field, us in (
                ("queue_time", attempt.qt),
                ("start_time", attempt.st),
                ("end_time", attempt.et),
            ):
                if us:
                    getattr(item, field).CopyFrom(protos.timestamp(us))
    return message


def event_proto(event_id: str, fields: dict[bytes, bytes]) -> runs_pb2.RunEvent:
    ms = int(event_id.split("-")[0])
    message = runs_pb2.RunEvent(id=event_id, time=protos.timestamp(ms * 1000))
    if b"l" in fields:
        message.log.job = fields[b"k"].decode()
        message.log.attempt = int(fields[b"n"])
        message.log.lines.extend(fields[b"l"].decode(errors="replace").split("\n"))
        return message
    data = json.loads(fields[b"e"])
    change = message.state
    change.job = data["k"]
    change.attempt = int(data["n"])
    change.message = data.get("m", "")
    if data["k"]:
        change.job_state = runs_pb2.JobState.Value(f"JOB_STATE_{data['s']}")
    else:
        change.run_state = runs_pb2.RunState.Value(f"RUN_STATE_{data['s']}")
    return message


def _state_filter(value: int) -> str:
    if value == runs_pb2.RUN_STATE_UNSPECIFIED:
        return ""
    if value not in runs_pb2.RunState.values():
        raise InvalidArgument.for_field("state", f"{value} is not a RunState value")
    return runs_pb2.RunState.Name(runs_pb2.RunState.ValueType(value)).removeprefix("RUN_STATE_")


def _event_id(value: str) -> str:
    if not value:
        return ""
    ms, sep, seq = value.partition("-")
    fits = sep and ms.isdigit() and seq.isdigit() and len(value) <= 41 and max(int(ms), int(seq)) < 1 << 64
    if not fits:
        raise InvalidArgument.for_field(
            "after_event_id", "an event id as StreamRunEvents sends them (`<ms>-<n>`)"
        )
    return value


def artifact_proto(run: RunRecord, record: ArtifactRecord) -> runs_pb2.Artifact:
    return runs_pb2.Artifact(
        name=names.artifact_name(run.project, run.pipeline, run.id, record.id),
        size_bytes=record.size,
        job=record.job,
        sha256=record.sha256,
        attempt=record.attempt,
        create_time=protos.timestamp(record.ct),
        file_count=record.files,
    )


_FENCE_MAX = 20  # digits of a fencing token


def _upload(first: runs_pb2.UploadArtifactRequest) -> Upload:
    artifact_id = names.ARTIFACT_ID.check(first.artifact_id, "artifact_id")
    if not names.JOB_KEY.matches(first.job):
        raise InvalidArgument.for_field("job", "a job key (`build`, `test.2`)")
    if first.attempt <= 0:
        raise InvalidArgument.for_field("attempt", "an attempt number, from 1")
    if not (first.fence.isdigit() and len(first.fence) <= _FENCE_MAX):
        raise InvalidArgument.for_field("fence", "the attempt's fencing token (digits)")
    if first.file_count < 0:
        raise InvalidArgument.for_field("file_count", "must not be negative")
    return Upload(artifact_id, first.job, first.attempt, first.fence, first.file_count)


class RunServicer(runs_pb2_grpc.RunServiceServicer):
    def __init__(
        self, domain: RunDomain, artifacts: ArtifactDomain, job_secrets: JobSecrets, caches: CacheDomain
    ) -> None:
        self.caches = caches
        self.job_secrets = job_secrets
        self.domain = domain
        self.artifacts = artifacts

    async def _run(self, name: str) -> RunRecord:
        project, pipeline, run_id = names.parse_run(name)
        return await self.domain.run_of(project, pipeline, run_id, name)

    async def _full(self, run: RunRecord) -> runs_pb2.Run:
        view = await self.domain.view(run.id, names.run_name(run.project, run.pipeline, run.id))
        return run_proto(view.record, view)

    async def RunPipeline(
        self, request: runs_pb2.RunPipelineRequest, context: aio.ServicerContext
    ) -> runs_pb2.Run:
        project, pipeline = names.parse_pipeline(request.parent, "parent")
        run_id = await self.domain.run_pipeline(
            project,
            pipeline,
            revision=request.revision,
            source=request.source,
            ref=request.ref,
            inputs=protos.document(request.inputs, "inputs"),
            trigger=request.trigger,
            request_id=request.request_id,
            started_by=principal_name(),
        )
        note_audit(resource=names.run_name(project, pipeline, run_id))
        view = await self.domain.view(run_id, names.run_name(project, pipeline, run_id))
        return run_proto(view.record, view)

    async def GetRun(self, request: runs_pb2.GetRunRequest, context: aio.ServicerContext) -> runs_pb2.Run:
        return await self._full(await self._run(request.name))

    async def ListRuns(
        self, request: runs_pb2.ListRunsRequest, context: aio.ServicerContext
    ) -> runs_pb2.ListRunsResponse:
        project, pipeline = names.parse_pipeline(request.parent, "parent")
        if len(request.trigger) > 32:
            raise InvalidArgument.for_field("trigger", "at most 32 characters")
        found, token = await self.domain.list_runs(
            project,
            pipeline,
            request.page_size,
            request.page_token,
            _state_filter(request.state),
            request.trigger,
        )
        return runs_pb2.ListRunsResponse(runs=[run_proto(r) for r in found], next_page_token=token)

    async def CancelRun(
        self, request: runs_pb2.CancelRunRequest, context: aio.ServicerContext
    ) -> runs_pb2.Run:
        run = await self._run(request.name)
        note_audit(resource=request.name)
        await self.domain.cancel(run)
        return await self._full(run)

    async def RerunRun(self, request: runs_pb2.RerunRunRequest, context: aio.ServicerContext) -> runs_pb2.Run:
        run = await self._run(request.name)
        note_audit(resource=request.name)
        await self.domain.rerun(run, request.failed_only)
        return await self._full(run)

    def _job(self, job: str) -> str:
        if not names.JOB_KEY.matches(job):
            raise InvalidArgument.for_field("job", "a job key (`build`, `test.2`)")
        return job

    async def ApproveGate(
        self, request: runs_pb2.ApproveGateRequest, context: aio.ServicerContext
    ) -> runs_pb2.Run:
        run = await self._run(request.name)
        job = self._job(request.job)
        note_audit(resource=f"{request.name}/jobs/{job}")
        await self.domain.approve(run, job, principal_name(), request.comment)
        return await self._full(run)

    async def RejectGate(
        self, request: runs_pb2.RejectGateRequest, context: aio.ServicerContext
    ) -> runs_pb2.Run:
        run = await self._run(request.name)
        job = self._job(request.job)
        note_audit(resource=f"{request.name}/jobs/{job}")
        await self.domain.reject(run, job, principal_name(), request.comment)
        return await self._full(run)

    async def StreamRunEvents(
        self, request: runs_pb2.StreamRunEventsRequest, context: aio.ServicerContext
    ) -> AsyncIterator[runs_pb2.RunEvent]:
        run = await self._run(request.name)
        after = _event_id(request.after_event_id)
        async for event_id, fields in self.domain.events(run.id, after, request.skip_logs):
            yield event_proto(event_id, fields)

    async def GetJobLog(
        self, request: runs_pb2.GetJobLogRequest, context: aio.ServicerContext
    ) -> runs_pb2.GetJobLogResponse:
        project, pipeline, run_id, job, number = names.ATTEMPT.parse(request.name)
        run = await self.domain.run_of(project, pipeline, run_id, request.name)
        page = await self.domain.log_page(
            run, job, int(number), request.page_size, request.page_token, request.name
        )
        return runs_pb2.GetJobLogResponse(
            lines=page.lines, next_page_token=page.next_token, truncated=page.truncated
        )

    async def ResolveJobSecrets(
        self, request: runs_pb2.ResolveJobSecretsRequest, context: aio.ServicerContext
    ) -> runs_pb2.ResolveJobSecretsResponse:
        note_audit(resource=request.name)
        resolved = await self.job_secrets.resolve(request.name, request.fence)
        if resolved.unresolved:
            note_audit(unresolved=",".join(ref for ref, _ in resolved.unresolved))
        return runs_pb2.ResolveJobSecretsResponse(
            values=resolved.values,
            unresolved=[
                runs_pb2.UnresolvedSecret(reference=ref, reason=reason) for ref, reason in resolved.unresolved
            ],
        )

    async def ListArtifacts(
        self, request: runs_pb2.ListArtifactsRequest, context: aio.ServicerContext
    ) -> runs_pb2.ListArtifactsResponse:
        run = await self._run_named(request.parent, "parent")
        if request.job and not names.JOB_KEY.matches(request.job):
            raise InvalidArgument.for_field("job", "a job key (`build`, `test.2`)")
        found, token = await self.artifacts.page(run, request.job, request.page_size, request.page_token)
        return runs_pb2.ListArtifactsResponse(
            artifacts=[artifact_proto(run, r) for r in found], next_page_token=token
        )

    async def GetArtifact(
        self, request: runs_pb2.GetArtifactRequest, context: aio.ServicerContext
    ) -> AsyncIterator[runs_pb2.ArtifactChunk]:
        project, pipeline, run_id, artifact_id = names.ARTIFACT.parse(request.name)
        run = await self.domain.run_of(project, pipeline, run_id, request.name)
        record, chunks = await self.artifacts.read(run, artifact_id, request.name)
        first = True
        async for chunk in chunks:
            if first:
                yield runs_pb2.ArtifactChunk(data=chunk, size_bytes=record.size, sha256=record.sha256)
                first = False
            else:
                yield runs_pb2.ArtifactChunk(data=chunk)
        if first:  # an empty artifact still says what it is
            yield runs_pb2.ArtifactChunk(size_bytes=record.size, sha256=record.sha256)

    async def UploadArtifact(
        self, request_iterator: AsyncIterator[runs_pb2.UploadArtifactRequest], context: aio.ServicerContext
    ) -> runs_pb2.Artifact:
        messages = request_iterator.__aiter__()
        try:
            first = await messages.__anext__()
        except StopAsyncIteration:
            raise InvalidArgument.for_field("parent", "is required: the stream carried no message") from None
        run = await self._run_named(first.parent, "parent")
        upload = _upload(first)
        note_audit(resource=names.artifact_name(run.project, run.pipeline, run.id, upload.artifact_id))

        async def chunks() -> AsyncIterator[bytes]:
            yield first.data
            async for message in messages:
                yield message.data

        record = await self.artifacts.upload(run, upload, chunks())
        return artifact_proto(run, record)

    async def RestoreCache(
        self, request: runs_pb2.RestoreCacheRequest, context: aio.ServicerContext
    ) -> AsyncIterator[runs_pb2.CacheChunk]:
        async for chunk in caches_servicer.restore(self.caches, self._run_named, request):
            yield chunk

    async def SaveCache(
        self, request_iterator: AsyncIterator[runs_pb2.SaveCacheRequest], context: aio.ServicerContext
    ) -> runs_pb2.CacheEntry:
        return await caches_servicer.save(self.caches, self._run_named, request_iterator)

    async def _run_named(self, name: str, field: str) -> RunRecord:
        project, pipeline, run_id = names.parse_run(name, field)
        return await self.domain.run_of(project, pipeline, run_id, name)
