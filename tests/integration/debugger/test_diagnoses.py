"""Diagnoses are stored, listed by job and category, and corrected by feedback."""

from __future__ import annotations

import uuid

import grpc

from devmesh.debugger.v1 import debugger_pb2 as pb
from devmesh.debugger.v1 import debugger_pb2_grpc
from tests.helpers import refused
from tests.integration.debugger.test_analyze_log import PYTEST_LOG

NETWORK_LOG = """\
$ npm install
npm ERR! code ECONNRESET
npm ERR! network request to https://registry.npmjs.org/left-pad failed, reason: socket hang up
npm ERR! network This is a problem related to network connectivity.
The command "npm install" exited with 1.
"""


async def test_a_diagnosis_reads_back_as_it_was_made(debugger: debugger_pb2_grpc.DebuggerServiceStub) -> None:
    made = await debugger.AnalyzeLog(pb.AnalyzeLogRequest(text=PYTEST_LOG))
    read = await debugger.GetDiagnosis(pb.GetDiagnosisRequest(name=made.name))
    assert read == made


async def test_an_unknown_diagnosis_is_not_found(debugger: debugger_pb2_grpc.DebuggerServiceStub) -> None:
    error = await refused(debugger.GetDiagnosis, pb.GetDiagnosisRequest(name="diagnoses/dnothere"))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    error = await refused(debugger.GetDiagnosis, pb.GetDiagnosisRequest(name="diagnoses/Bad Name"))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_diagnoses_list_by_job_newest_first_page_by_page(
    debugger: debugger_pb2_grpc.DebuggerServiceStub,
) -> None:
    job = f"build-{uuid.uuid4().hex[:8]}"
    made = [
        await debugger.AnalyzeLog(pb.AnalyzeLogRequest(text=log, context=pb.AnalysisContext(job=job)))
        for log in (PYTEST_LOG, NETWORK_LOG, PYTEST_LOG)
    ]
    first = await debugger.ListDiagnoses(pb.ListDiagnosesRequest(job=job, page_size=2))
    second = await debugger.ListDiagnoses(
        pb.ListDiagnosesRequest(job=job, page_size=2, page_token=first.next_page_token)
    )
    listed = [d.name for d in (*first.diagnoses, *second.diagnoses)]
    assert listed == [d.name for d in reversed(made)]
    assert second.next_page_token == ""
    network = await debugger.ListDiagnoses(
        pb.ListDiagnosesRequest(category=pb.CATEGORY_NETWORK, page_size=1000)
    )
    assert made[1].name in [d.name for d in network.diagnoses]
    assert made[1].transient


async def test_a_page_token_for_another_query_is_refused(
    debugger: debugger_pb2_grpc.DebuggerServiceStub,
) -> None:
    page = await debugger.ListDiagnoses(pb.ListDiagnosesRequest(page_size=1))
    assert page.next_page_token
    error = await refused(
        debugger.ListDiagnoses,
        pb.ListDiagnosesRequest(page_size=1, job="other", page_token=page.next_page_token),
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_feedback_changes_the_category_of_the_next_diagnosis_with_the_signature(
    debugger: debugger_pb2_grpc.DebuggerServiceStub,
) -> None:
    log = PYTEST_LOG.replace("test_total_is_rounded", f"test_{uuid.uuid4().hex[:8]}")
    before = await debugger.AnalyzeLog(pb.AnalyzeLogRequest(text=log))
    assert before.category == pb.CATEGORY_TEST_FAILURE and not before.from_feedback
    feedback = await debugger.SubmitFeedback(
        pb.SubmitFeedbackRequest(
            name=before.name,
            category=pb.CATEGORY_CONFIGURATION,
            root_cause_lines=[pb.LineRange(start_line=8, end_line=9)],
        )
    )
    assert feedback.signature == before.signature
    after = await debugger.AnalyzeLog(pb.AnalyzeLogRequest(text=log))
    assert after.signature == before.signature
    assert after.category == pb.CATEGORY_CONFIGURATION and after.from_feedback
    assert after.remediations[0].type == pb.REMEDIATION_TYPE_ROLLBACK_CONFIG


async def test_feedback_with_lines_outside_the_log_or_no_category_is_refused(
    debugger: debugger_pb2_grpc.DebuggerServiceStub,
) -> None:
    made = await debugger.AnalyzeLog(pb.AnalyzeLogRequest(text=PYTEST_LOG))
    outside = pb.SubmitFeedbackRequest(
        name=made.name,
        category=pb.CATEGORY_LINT,
        root_cause_lines=[pb.LineRange(start_line=1, end_line=10_000)],
    )
    assert (await refused(debugger.SubmitFeedback, outside)).code() == grpc.StatusCode.INVALID_ARGUMENT
    unspecified = pb.SubmitFeedbackRequest(name=made.name)
    assert (await refused(debugger.SubmitFeedback, unspecified)).code() == grpc.StatusCode.INVALID_ARGUMENT
