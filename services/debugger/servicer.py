"""DebuggerService over gRPC: converts protos to domain calls and domain results to protos."""

from __future__ import annotations

from collections.abc import AsyncIterator

from grpc import aio

from devmesh.debugger.v1 import debugger_pb2 as pb
from devmesh.debugger.v1 import debugger_pb2_grpc
from services.debugger import diagnosis as model
from services.debugger.domain import DIAGNOSIS, TEMPLATE_SET, Debugger, LogOptions, template_name
from services.debugger.jobs import Credentials, JobAnalyzer, parse_job
from services.debugger.pod_collector import PodDiagnostics
from services.debugger.taxonomy import Category
from services.debugger.template_miner import Template
from services.runtime import pagination, protos, request_context
from services.runtime.errors import FailedPrecondition, InvalidArgument, PermissionDenied, ResourceExhausted

_KINDS: dict[int, str] = {
    pb.LOG_KIND_UNSPECIFIED: "CI_JOB",
    pb.LOG_KIND_CI_JOB: "CI_JOB",
    pb.LOG_KIND_CONTAINER: "CONTAINER",
    pb.LOG_KIND_BUILD_TOOL: "BUILD_TOOL",
}
MAX_CONTEXT_CHARS = 1024
MAX_PREVIOUS_ATTEMPTS = 100
# What a caller needs in the pipeline to have a job analysed when its credentials cannot be
# forwarded (a mesh identity): the debugger then reads as itself, on the caller's behalf.
JOB_READS = ("pipeline.runs.get", "pipeline.runs.list", "pipeline.logs.get")


def _kind(value: int, field: str) -> str:
    if value not in _KINDS:
        raise InvalidArgument.for_field(field, f"{value} is not a LogKind value")
    return _KINDS[value]


def _category(value: int, field: str) -> Category:
    if value == pb.CATEGORY_UNSPECIFIED or value not in pb.Category.values():
        raise InvalidArgument.for_field(field, "must be a Category value other than CATEGORY_UNSPECIFIED")
    return Category(pb.Category.Name(pb.Category.ValueType(value)).removeprefix("CATEGORY_"))


def _context(message: pb.AnalysisContext, field: str) -> model.Context:
    for name in ("job", "commit"):
        if len(getattr(message, name)) > MAX_CONTEXT_CHARS:
            raise InvalidArgument.for_field(f"{field}.{name}", f"longer than {MAX_CONTEXT_CHARS} characters")
    if len(message.previous_attempts) > MAX_PREVIOUS_ATTEMPTS:
        raise InvalidArgument.for_field(f"{field}.previous_attempts", f"at most {MAX_PREVIOUS_ATTEMPTS}")
    return model.Context(
        job=message.job,
        commit=message.commit,
        previous_attempts=tuple(
            model.PreviousAttempt(a.commit[:MAX_CONTEXT_CHARS], a.passed) for a in message.previous_attempts
        ),
    )


def diagnosis_proto(d: model.Diagnosis) -> pb.Diagnosis:
    message = pb.Diagnosis(
        name=DIAGNOSIS.format(d.id),
        category=pb.Category.Value(f"CATEGORY_{d.category.value}"),
        confidence=d.confidence,
        transient=d.transient,
        root_causes=[
            pb.RootCause(start_line=c.start_line, end_line=c.end_line, excerpt=c.excerpt, score=c.score)
            for c in d.root_causes
        ],
        failing_tests=[pb.FailingTest(name=t.name, file=t.file, line=t.line) for t in d.failing_tests],
        locations=[pb.SourceLocation(file=loc.file, line=loc.line) for loc in d.locations],
        packages=[pb.PackageVersion(name=p.name, version=p.version) for p in d.packages],
        templates=[
            pb.TemplateRef(name=template_name(TEMPLATE_SET.parse(d.template_set)[0], tid), template=text)
            for tid, text in d.templates
        ],
        signature=d.signature,
        explanation=pb.Explanation(
            text=d.explanation,
            provider=d.explanation_provider,
            model=d.explanation_model,
            cached=d.explanation_cached,
            fallback=d.explanation_fallback,
        ),
        remediations=[
            pb.Remediation(
                type=pb.RemediationType.Value(f"REMEDIATION_TYPE_{r.type.value}"),
                reason=r.reason,
                parameters=r.parameters,
            )
            for r in d.remediations
        ],
        kind=pb.LogKind.Value(f"LOG_KIND_{d.kind}"),
        job=d.job,
        line_count=d.line_count,
        create_time=protos.timestamp(d.create_time_us),
        from_feedback=d.from_feedback,
        template_set=d.template_set,
        attempt=d.attempt,
    )
    if d.pod is not None:
        pod = d.pod
        message.pod.CopyFrom(
            pb.PodFindings(
                pod=pod.pod,
                container=pod.container,
                reason=pod.reason,
                last_termination_reason=pod.last_termination_reason,
                exit_code=pod.exit_code,
                memory_limit=pod.memory_limit,
                restart_count=pod.restart_count,
                events=list(pod.events),
            )
        )
    return message


def job_credentials() -> Credentials:
    """The credentials to read a job with, as the caller: the API key or token it presented,
    forwarded; for a caller that presented none (a mesh identity, or auth off), none (the
    debugger reads as itself) once the caller is seen to hold the pipeline reads it needs."""
    forwarded = request_context.forwardable.get()
    if forwarded:
        return forwarded
    caller = request_context.current_caller()
    missing = [permission for permission in JOB_READS if not caller.allows(permission)]
    if missing:
        raise PermissionDenied(
            f"{caller.name} lacks permission {', '.join(missing)} to have a pipeline job analysed",
            metadata={"permission": missing[0]},
        )
    return ()


def parse_log_response(template_set: str, found: list[Template | None]) -> pb.ParseLogResponse:
    """One ParsedLine per line, in order. A batch holds few templates, so each is encoded once
    and the response is read back from the encoded lines joined: a repeated field's entries
    are just concatenated on the wire, and a message per line cost more than mining the line."""
    encoded: dict[str, bytes] = {}
    parts = []
    for template in found:
        key = template.id if template is not None else ""
        part = encoded.get(key)
        if part is None:
            line = (
                pb.ParsedLine(template_name=template_name(template_set, template.id), template=template.text)
                if template is not None
                else pb.ParsedLine()
            )
            part = encoded[key] = pb.ParseLogResponse(lines=[line]).SerializeToString()
        parts.append(part)
    return pb.ParseLogResponse.FromString(b"".join(parts))


class DebuggerServicer(debugger_pb2_grpc.DebuggerServiceServicer):
    def __init__(self, debugger: Debugger, jobs: JobAnalyzer | None = None) -> None:
        self.debugger = debugger
        self.jobs = jobs

    def _options(self, kind: int, context: pb.AnalysisContext, template_set: str) -> LogOptions:
        return LogOptions(
            kind=_kind(kind, "kind"),
            context=_context(context, "context"),
            template_set=self.debugger.template_set_id(template_set),
        )

    async def AnalyzeLog(self, request: pb.AnalyzeLogRequest, context: aio.ServicerContext) -> pb.Diagnosis:
        has_body = request.HasField("body") and len(request.body.data) > 0
        if request.text and has_body:
            raise InvalidArgument.for_field("body", "send the log as text or as the body, not both")
        if not request.text and not has_body:
            raise InvalidArgument.for_field(
                "text", "no log: send it as text (or as the HTTP body)", reason="EMPTY_LOG"
            )
        options = self._options(request.kind, request.context, request.template_set)
        analysis = await self.debugger.start(options)
        if has_body:
            await analysis.feed(request.body.data)
        else:
            await analysis.feed_text(request.text)
        diagnosis = await analysis.finish()
        request_context.note_audit(resource=DIAGNOSIS.format(diagnosis.id))
        return diagnosis_proto(diagnosis)

    async def StreamAnalyzeLog(
        self, request_iterator: AsyncIterator[pb.StreamAnalyzeLogRequest], context: aio.ServicerContext
    ) -> pb.Diagnosis:
        analysis = None
        index = 0
        async for message in request_iterator:
            if analysis is None:
                analysis = await self.debugger.start(
                    self._options(message.kind, message.context, message.template_set)
                )
            elif message.kind or message.HasField("context") or message.template_set:
                raise InvalidArgument.for_field(
                    f"requests[{index}]", "kind, context and template_set go in the first message only"
                )
            await analysis.feed(message.chunk)
            index += 1
        if analysis is None:
            raise InvalidArgument.for_field(
                "chunk", "no log: the stream ended before its first message", reason="EMPTY_LOG"
            )
        diagnosis = await analysis.finish()
        request_context.note_audit(resource=DIAGNOSIS.format(diagnosis.id))
        return diagnosis_proto(diagnosis)

    async def AnalyzeJob(self, request: pb.AnalyzeJobRequest, context: aio.ServicerContext) -> pb.Diagnosis:
        parse_job(request.job)
        if request.attempt < 0:
            raise InvalidArgument.for_field("attempt", "an attempt number from 1 (0: the latest)")
        if self.jobs is None:
            raise FailedPrecondition(
                "this debugger has no pipeline service to read jobs from (DEVMESH_PEERS)",
                reason="PIPELINE_NOT_CONFIGURED",
            )
        diagnosis = await self.jobs.analyze(
            request.job, request.attempt, job_credentials(), fresh=request.fresh
        )
        request_context.note_audit(resource=DIAGNOSIS.format(diagnosis.id))
        return diagnosis_proto(diagnosis)

    async def AnalyzePod(self, request: pb.AnalyzePodRequest, context: aio.ServicerContext) -> pb.Diagnosis:
        if not request.HasField("pod"):
            raise InvalidArgument.for_field("pod", "required: the output of `kubectl get pod NAME -o json`")
        for name in ("current_log", "previous_log"):
            if len(getattr(request, name)) > self.debugger.max_log_bytes:
                raise ResourceExhausted(f"{name} is larger than {self.debugger.max_log_bytes} bytes")
        pod = protos.document(request.pod, "pod")
        events = protos.document(request.events, "events") if request.HasField("events") else None
        uploaded = PodDiagnostics(
            pod, events, request.current_log, request.previous_log, request.container[:253]
        )
        diagnosis = await self.debugger.analyze_pod(uploaded)
        request_context.note_audit(resource=DIAGNOSIS.format(diagnosis.id))
        return diagnosis_proto(diagnosis)

    async def ParseLog(
        self, request: pb.ParseLogRequest, context: aio.ServicerContext
    ) -> pb.ParseLogResponse:
        template_set = TEMPLATE_SET.parse(request.template_set, "template_set")[0]
        found, _missing = await self.debugger.parse(template_set, list(request.lines))
        return parse_log_response(template_set, found)

    async def ListTemplates(
        self, request: pb.ListTemplatesRequest, context: aio.ServicerContext
    ) -> pb.ListTemplatesResponse:
        template_set = TEMPLATE_SET.parse(request.parent, "parent")[0]
        size = pagination.page_size(request.page_size)
        query = ("templates", template_set)
        offset = int(pagination.decode_token(request.page_token, query) or 0)
        templates = await self.debugger.templates.listing(template_set)
        page = templates[offset : offset + size]
        more = offset + size < len(templates)
        return pb.ListTemplatesResponse(
            templates=[
                pb.Template(
                    name=template_name(template_set, t.id),
                    template=t.text,
                    count=t.count,
                    first_seen_time=protos.optional_timestamp(t.first_seen_us),
                    last_seen_time=protos.optional_timestamp(t.last_seen_us),
                    example=t.example,
                )
                for t in page
            ],
            next_page_token=pagination.encode_token(str(offset + size), query) if more else "",
        )

    async def GetDiagnosis(
        self, request: pb.GetDiagnosisRequest, context: aio.ServicerContext
    ) -> pb.Diagnosis:
        (diagnosis_id,) = DIAGNOSIS.parse(request.name)
        return diagnosis_proto(await self.debugger.diagnoses.get(diagnosis_id))

    async def ListDiagnoses(
        self, request: pb.ListDiagnosesRequest, context: aio.ServicerContext
    ) -> pb.ListDiagnosesResponse:
        size = pagination.page_size(request.page_size)
        category = _category(request.category, "category") if request.category else None
        if len(request.job) > MAX_CONTEXT_CHARS:
            raise InvalidArgument.for_field("job", f"longer than {MAX_CONTEXT_CHARS} characters")
        query = ("diagnoses", request.job, request.category)
        cursor = pagination.decode_token(request.page_token, query)
        found, next_before = await self.debugger.diagnoses.page(
            job=request.job, category=category, before_us=int(cursor) if cursor else None, size=size
        )
        return pb.ListDiagnosesResponse(
            diagnoses=[diagnosis_proto(d) for d in found],
            next_page_token=pagination.encode_token(str(next_before), query)
            if next_before is not None
            else "",
        )

    async def SubmitFeedback(
        self, request: pb.SubmitFeedbackRequest, context: aio.ServicerContext
    ) -> pb.Feedback:
        (diagnosis_id,) = DIAGNOSIS.parse(request.name)
        category = _category(request.category, "category")
        if len(request.root_cause_lines) > 100:
            raise InvalidArgument.for_field("root_cause_lines", "at most 100 ranges")
        record = await self.debugger.feedback(
            diagnosis_id,
            category,
            [(r.start_line, r.end_line) for r in request.root_cause_lines],
            request.comment,
            request_context.principal_name(),
        )
        return pb.Feedback(
            diagnosis=record["diagnosis"],
            signature=record["signature"],
            category=request.category,
            root_cause_lines=request.root_cause_lines,
            author=record["author"],
            create_time=protos.timestamp(record["create_time_us"]),
        )
