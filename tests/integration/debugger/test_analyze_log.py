"""AnalyzeLog and StreamAnalyzeLog: a failed build log in, a diagnosis out."""

from __future__ import annotations

import grpc
from google.api import httpbody_pb2

from devmesh.debugger.v1 import debugger_pb2 as pb
from devmesh.debugger.v1 import debugger_pb2_grpc
from tests.helpers import error_info, refused

PYTEST_LOG = """\
$ pip install -r requirements.txt
Successfully installed requests-2.31.0
$ pytest -q
....F.
=================================== FAILURES ===================================
___________________________ test_total_is_rounded ______________________________
    def test_total_is_rounded():
>       assert total([0.1, 0.2]) == 0.3
E       assert 0.30000000000000004 == 0.3
tests/test_cart.py:12: AssertionError
FAILED tests/test_cart.py::test_total_is_rounded - assert 0.30000000000000004 == 0.3
1 failed, 5 passed in 0.12s
The command "pytest -q" exited with 1.
Done. Your build exited with 1.
"""


async def test_a_failed_test_log_is_a_test_failure_pointing_at_the_assertion(
    debugger: debugger_pb2_grpc.DebuggerServiceStub,
) -> None:
    diagnosis = await debugger.AnalyzeLog(pb.AnalyzeLogRequest(text=PYTEST_LOG, kind=pb.LOG_KIND_CI_JOB))
    assert diagnosis.category == pb.CATEGORY_TEST_FAILURE
    assert not diagnosis.transient
    assertion = PYTEST_LOG.splitlines().index("E       assert 0.30000000000000004 == 0.3") + 1
    best = diagnosis.root_causes[0]
    assert best.start_line <= assertion <= best.end_line
    assert "0.30000000000000004" in best.excerpt
    assert any(t.name == "tests/test_cart.py::test_total_is_rounded" for t in diagnosis.failing_tests)
    assert any(loc.file == "tests/test_cart.py" and loc.line == 12 for loc in diagnosis.locations)
    assert diagnosis.explanation.provider == "offline" and str(assertion) in diagnosis.explanation.text
    assert diagnosis.remediations[0].type == pb.REMEDIATION_TYPE_FIX_CODE
    assert diagnosis.name.startswith("diagnoses/") and diagnosis.line_count == len(PYTEST_LOG.splitlines())


async def test_the_same_failure_sent_twice_has_the_same_signature(
    debugger: debugger_pb2_grpc.DebuggerServiceStub,
) -> None:
    first = await debugger.AnalyzeLog(pb.AnalyzeLogRequest(text=PYTEST_LOG))
    again = await debugger.AnalyzeLog(pb.AnalyzeLogRequest(text=PYTEST_LOG.replace("0.12s", "0.31s")))
    other = await debugger.AnalyzeLog(
        pb.AnalyzeLogRequest(text=PYTEST_LOG.replace("test_total_is_rounded", "test_tax_is_added"))
    )
    assert first.signature == again.signature
    assert first.signature != other.signature
    assert first.name != again.name


async def test_the_log_as_an_http_body_is_the_same_log(
    debugger: debugger_pb2_grpc.DebuggerServiceStub,
) -> None:
    as_text = await debugger.AnalyzeLog(pb.AnalyzeLogRequest(text=PYTEST_LOG))
    as_body = await debugger.AnalyzeLog(
        pb.AnalyzeLogRequest(body=httpbody_pb2.HttpBody(content_type="text/plain", data=PYTEST_LOG.encode()))
    )
    assert as_body.signature == as_text.signature
    assert as_body.category == as_text.category


async def test_a_log_streamed_in_chunks_split_anywhere_is_the_same_log(
    debugger: debugger_pb2_grpc.DebuggerServiceStub,
) -> None:
    data = ("début ✓\n" + PYTEST_LOG).encode()
    whole = await debugger.AnalyzeLog(pb.AnalyzeLogRequest(text=data.decode()))

    async def chunks():  # type: ignore[no-untyped-def]
        yield pb.StreamAnalyzeLogRequest(kind=pb.LOG_KIND_CI_JOB, chunk=data[:3])  # inside "é"
        for start in range(3, len(data), 7):
            yield pb.StreamAnalyzeLogRequest(chunk=data[start : start + 7])

    streamed = await debugger.StreamAnalyzeLog(chunks())
    assert streamed.signature == whole.signature
    assert streamed.line_count == whole.line_count
    assert [(c.start_line, c.end_line) for c in streamed.root_causes] == [
        (c.start_line, c.end_line) for c in whole.root_causes
    ]


async def test_options_after_the_first_streamed_message_are_refused(
    debugger: debugger_pb2_grpc.DebuggerServiceStub,
) -> None:
    async def chunks():  # type: ignore[no-untyped-def]
        yield pb.StreamAnalyzeLogRequest(chunk=b"line one\n")
        yield pb.StreamAnalyzeLogRequest(kind=pb.LOG_KIND_CONTAINER, chunk=b"line two\n")

    error = await refused(debugger.StreamAnalyzeLog, chunks())
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "first message" in (error.details() or "")


async def test_an_empty_log_is_refused_with_a_reason(debugger: debugger_pb2_grpc.DebuggerServiceStub) -> None:
    error = await refused(debugger.AnalyzeLog, pb.AnalyzeLogRequest())
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(error).reason == "EMPTY_LOG"

    async def nothing():  # type: ignore[no-untyped-def]
        return
        yield

    error = await refused(debugger.StreamAnalyzeLog, nothing())
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_log_sent_twice_over_is_refused(debugger: debugger_pb2_grpc.DebuggerServiceStub) -> None:
    request = pb.AnalyzeLogRequest(text="x\n", body=httpbody_pb2.HttpBody(data=b"y\n"))
    error = await refused(debugger.AnalyzeLog, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_job_analysis_without_the_pipeline_as_a_peer_is_a_failed_precondition(
    debugger: debugger_pb2_grpc.DebuggerServiceStub,
) -> None:
    error = await refused(
        debugger.AnalyzeJob, pb.AnalyzeJobRequest(job="projects/pp/pipelines/qq/runs/r1/jobs/j")
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "DEVMESH_PEERS" in (error.details() or "")
