"""Redis crashes: acknowledged writes survive, callers get UNAVAILABLE with RetryInfo, health follows."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from google.protobuf import json_format
from google.rpc import error_details_pb2
from grpc import aio
from grpc_health.v1 import health_pb2

from devmesh.config.v1 import config_pb2 as pb
from devmesh.config.v1 import config_pb2_grpc
from tests.conftest import ServerFactory
from tests.helpers import detail, error_info, health_becomes
from tests.integration.config.conftest import create, env_name, put
from tools.stack.valkey import start_valkey

SERVICE = "devmesh.config.v1.ConfigService"


async def test_redis_crash_unavailable_then_recovery_without_losing_writes(
    tmp_path: Path, start_config_server: ServerFactory, ns: str
) -> None:
    valkey = start_valkey(tmp_path / "valkey")
    try:
        _, addr = await start_config_server(valkey.url, redis_timeout=0.5)
        async with aio.insecure_channel(addr) as channel:
            stub = config_pb2_grpc.ConfigServiceStub(channel)
            await create(stub, ns)
            await put(stub, ns, "default", {"acknowledged": True})

            valkey.process.kill()  # SIGKILL: no chance to flush anything on the way down
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.GetEnvironment(pb.GetEnvironmentRequest(name=env_name(ns, "default")))
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert error_info(caught.value).reason == "REDIS_UNAVAILABLE"
            assert isinstance(detail(caught.value, error_details_pb2.RetryInfo), error_details_pb2.RetryInfo)

            await health_becomes(channel, SERVICE, health_pb2.HealthCheckResponse.NOT_SERVING)

            valkey = start_valkey(tmp_path / "valkey", port=valkey.port)  # same data directory: AOF replay
            await health_becomes(channel, SERVICE, health_pb2.HealthCheckResponse.SERVING)
            current = await stub.GetEnvironment(pb.GetEnvironmentRequest(name=env_name(ns, "default")))
            assert json_format.MessageToDict(current.content) == {"acknowledged": True}
    finally:
        valkey.process.stop()


async def test_a_server_refuses_to_start_on_redis_without_aof(
    tmp_path: Path, start_config_server: ServerFactory
) -> None:
    import redis

    from services.runtime.settings import SettingsError

    valkey = start_valkey(tmp_path / "valkey")
    try:
        redis.Redis(port=valkey.port).config_set("appendonly", "no")
        with pytest.raises(SettingsError, match="appendonly"):
            await start_config_server(valkey.url)
    finally:
        valkey.process.stop()
