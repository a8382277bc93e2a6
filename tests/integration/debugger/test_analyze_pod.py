"""AnalyzePod: a pod's state, events and logs as kubectl prints them, diagnosed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2

from devmesh.debugger.v1 import debugger_pb2 as pb
from devmesh.debugger.v1 import debugger_pb2_grpc
from tests.helpers import refused

PODS = Path(__file__).resolve().parents[2] / "fixtures" / "debugger" / "pods"


def _struct(name: str) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(json.loads((PODS / name).read_text()))
    return message


def _request(case: str, **fields: Any) -> pb.AnalyzePodRequest:
    request = pb.AnalyzePodRequest(pod=_struct(f"{case}.pod.json"), **fields)
    if (PODS / f"{case}.events.json").exists():
        request.events.CopyFrom(_struct(f"{case}.events.json"))
    return request


async def test_an_oom_killed_crash_loop_is_out_of_memory_naming_the_container_and_limit(
    debugger: debugger_pb2_grpc.DebuggerServiceStub,
) -> None:
    previous = (PODS / "oomkilled.previous.log").read_text()
    diagnosis = await debugger.AnalyzePod(_request("oomkilled", previous_log=previous))
    assert diagnosis.category == pb.CATEGORY_OUT_OF_MEMORY
    assert diagnosis.pod.container == "api" and diagnosis.pod.memory_limit == "128Mi"
    assert diagnosis.pod.last_termination_reason == "OOMKilled" and diagnosis.pod.exit_code == 137
    assert diagnosis.pod.restart_count == 6
    memory = diagnosis.remediations[0]
    assert memory.type == pb.REMEDIATION_TYPE_RAISE_MEMORY_LIMIT
    assert memory.parameters["container"] == "api" and memory.parameters["current_limit"] == "128Mi"
    assert "128Mi" in diagnosis.explanation.text and "'api'" in diagnosis.explanation.text
    assert "S3cretPassw0rd" not in str(diagnosis)


@pytest.mark.parametrize(
    ("case", "category"),
    [
        ("crashloop", pb.CATEGORY_CRASH_LOOP),
        ("imagepull", pb.CATEGORY_IMAGE_PULL),
        ("configerror", pb.CATEGORY_CONFIGURATION),
        ("unschedulable", pb.CATEGORY_CONFIGURATION),
        ("evicted", pb.CATEGORY_DISK_FULL),
        ("unhealthy", pb.CATEGORY_TIMEOUT),
    ],
)
async def test_each_kubernetes_failure_reason_has_its_category(
    debugger: debugger_pb2_grpc.DebuggerServiceStub, case: str, category: int
) -> None:
    diagnosis = await debugger.AnalyzePod(_request(case))
    assert diagnosis.category == category, diagnosis.pod


async def test_a_secret_in_an_event_is_masked(debugger: debugger_pb2_grpc.DebuggerServiceStub) -> None:
    diagnosis = await debugger.AnalyzePod(_request("unhealthy"))
    assert any("Readiness probe failed" in event for event in diagnosis.pod.events)
    assert "eyJhbGciOiJIUzI1NiJ9" not in str(diagnosis)


async def test_what_is_not_a_pod_or_an_unknown_container_is_refused(
    debugger: debugger_pb2_grpc.DebuggerServiceStub,
) -> None:
    not_a_pod = struct_pb2.Struct()
    not_a_pod.update({"kind": "Service", "spec": {}})
    error = await refused(debugger.AnalyzePod, pb.AnalyzePodRequest(pod=not_a_pod))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    error = await refused(debugger.AnalyzePod, pb.AnalyzePodRequest())
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    error = await refused(debugger.AnalyzePod, _request("oomkilled", container="sidecar"))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
