"""grpc.health.v1 as the protocol defines it, on a real server: Check, List and Watch."""

from __future__ import annotations

import asyncio

import grpc
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import ServerFactory
from tests.helpers import refused
from tools.stack.valkey import Valkey

CONFIG = "devmesh.config.v1.ConfigService"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def test_list_reports_every_hosted_service_and_the_server(channel: aio.Channel) -> None:
    listed = await health_pb2_grpc.HealthStub(channel).List(health_pb2.HealthListRequest())
    assert listed.statuses[""].status == SERVING
    assert listed.statuses[CONFIG].status == SERVING


async def test_checking_a_service_nobody_reports_is_not_found(channel: aio.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    error = await refused(stub.Check, health_pb2.HealthCheckRequest(service="devmesh.nothing.v1.Nothing"))
    assert error.code() == grpc.StatusCode.NOT_FOUND


async def test_watch_tells_the_status_then_not_serving_when_the_server_drains(
    valkey: Valkey, start_config_server: ServerFactory
) -> None:
    server, addr = await start_config_server(valkey.url)
    async with aio.insecure_channel(addr) as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=CONFIG))
        first = await watch.read()
        assert first.status == SERVING
        draining = asyncio.create_task(server.stop(2.0))
        second = await watch.read()
        assert second.status == NOT_SERVING
        ended = await refused(watch.read)
        assert ended.code() == grpc.StatusCode.UNAVAILABLE
        await draining


async def test_watching_an_unknown_service_says_so_and_stays_open(channel: aio.Channel) -> None:
    watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service="nobody"))
    first = await watch.read()
    assert first.status == health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
    watch.cancel()
