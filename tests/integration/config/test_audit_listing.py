"""ListAuditEvents' time range: a time before the epoch is a bad argument, not a failure."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import timestamp_pb2

from devmesh.config.v1 import audit_pb2, audit_pb2_grpc
from tests.helpers import error_info, refused
from tests.integration.conftest import Servers


@pytest.mark.parametrize("field", ["start_time", "end_time"])
async def test_a_time_before_the_epoch_is_invalid_argument_naming_it(servers: Servers, field: str) -> None:
    stub = audit_pb2_grpc.AuditServiceStub(servers.config_channel)
    request = audit_pb2.ListAuditEventsRequest(**{field: timestamp_pb2.Timestamp(seconds=-61)})
    error = await refused(stub.ListAuditEvents, request, metadata=servers.admin)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(error).reason == "INVALID_ARGUMENT"
    assert field in (error.details() or "")
