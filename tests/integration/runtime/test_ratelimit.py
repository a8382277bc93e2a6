"""The rate limiter on a real Valkey: its script over the multiplexed connection, and the limits
callers meet on a real config server with auth on (under load, over the limit, Redis down)."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc import aio

from devmesh.config.v1 import config_pb2_grpc
from services.runtime import redis_client
from services.runtime.ratelimit import Limit, RateLimiter
from services.runtime.redis_mux import MultiplexedRedis
from tests.conftest import BootstrappedVault, ServerFactory
from tests.helpers import detail, error_info, eventually, key_metadata, refused
from tests.integration.conftest import Mesh, resolve_request
from tools.stack.valkey import Valkey


async def test_the_script_is_sent_whole_when_redis_has_forgotten_it(valkey: Valkey) -> None:
    pooled = redis_client.connect(valkey.url, timeout=2)
    mux = MultiplexedRedis(pooled)
    limiter = RateLimiter(mux)
    limit = Limit(per_second=1, burst=2)
    try:
        first = await limiter.check(f"p-{uuid.uuid4()}", limit, 1)
        await pooled.script_flush()  # as after a restart without persistence
        principal = f"p-{uuid.uuid4()}"
        second = await limiter.check(principal, limit, 1)
        third = await limiter.check(principal, limit, 1)
        fourth = await limiter.check(principal, limit, 1)
    finally:
        await mux.aclose()
        await pooled.aclose()
    assert (first.admitted, first.backend) == (True, "redis")
    assert (second.admitted, second.backend, second.remaining) == (True, "redis", 1)
    assert (third.admitted, third.remaining) == (True, 0)
    assert (fourth.admitted, fourth.backend) == (False, "redis")  # the shared bucket, not a fallback
    assert not limiter.degraded


async def test_a_limit_holds_under_concurrent_load_from_many_clients(mesh: Mesh, ns: str) -> None:
    key = key_metadata(await mesh.mint("viewer", rate_per_second=5.0, rate_burst=10))
    admitted = limited = 0
    started = time.monotonic()
    channels = [aio.insecure_channel(mesh.addr) for _ in range(8)]
    try:

        async def client(channel: aio.Channel) -> None:
            nonlocal admitted, limited
            stub = config_pb2_grpc.ConfigServiceStub(channel)
            for _ in range(15):
                try:
                    await stub.ResolveConfig(resolve_request(ns), metadata=key)
                except grpc.aio.AioRpcError as error:
                    if error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                        limited += 1
                        continue
                    assert error.code() == grpc.StatusCode.NOT_FOUND
                admitted += 1

        await asyncio.gather(*(client(c) for c in channels))
    finally:
        for c in channels:
            await c.close()
    elapsed = time.monotonic() - started
    assert admitted + limited == 120
    assert 10 <= admitted <= 10 + 5 * elapsed + 1, (admitted, elapsed)


async def test_over_the_limit_the_answer_says_when_to_retry(mesh: Mesh, ns: str) -> None:
    key = key_metadata(await mesh.mint("viewer", rate_per_second=1.0, rate_burst=2))
    call = mesh.config().ResolveConfig(resolve_request(ns), metadata=key)
    with pytest.raises(grpc.aio.AioRpcError):
        await call
    headers = dict(await call.trailing_metadata())
    assert headers["x-ratelimit-limit"] == "2" and headers["x-ratelimit-remaining"] == "1"
    await refused(mesh.config().ResolveConfig, resolve_request(ns), metadata=key)
    error = await refused(mesh.config().ResolveConfig, resolve_request(ns), metadata=key)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_info(error).reason == "RATE_LIMITED"
    retry = detail(error, error_details_pb2.RetryInfo)
    assert 0 < retry.retry_delay.ToNanoseconds() <= 1_000_000_000  # type: ignore[attr-defined]
    quota = detail(error, error_details_pb2.QuotaFailure)
    assert quota.violations[0].subject.startswith("apikey:")  # type: ignore[attr-defined]
    trailers = dict(error.trailing_metadata())
    assert trailers["x-ratelimit-remaining"] == "0" and int(trailers["x-ratelimit-reset"]) >= 1


@pytest.mark.parametrize("fallback", ["local", "refuse"])
async def test_when_redis_dies_the_limiter_falls_back_and_recovers(
    tmp_path: Any, openbao: BootstrappedVault, start_config_server: ServerFactory, fallback: str
) -> None:
    from prometheus_client import REGISTRY

    from tools.stack.valkey import start_valkey

    valkey = start_valkey(tmp_path / "valkey")
    port = int(valkey.url.rpartition(":")[2].split("/")[0])
    try:
        server, addr = await start_config_server(
            valkey.url, **openbao.settings(), rate_limit_fallback=fallback, redis_timeout=0.5
        )
        async with aio.insecure_channel(addr) as channel:
            mesh = Mesh(server, addr, channel)
            key = key_metadata(await mesh.mint("viewer", rate_per_second=0.2, rate_burst=3))
            assert (await refused(mesh.config().ResolveConfig, resolve_request(), metadata=key)).code() == (
                grpc.StatusCode.NOT_FOUND  # authenticated: the key's record is now cached
            )
            valkey.process.kill()
            outcomes = []
            for _ in range(6):
                error = await refused(mesh.config().ResolveConfig, resolve_request(), metadata=key)
                outcomes.append(error_info(error).reason)
            if fallback == "local":
                # Three admitted by the in-process limiter (then failing in the handler, which
                # needs Redis), the rest refused by it.
                assert outcomes == ["REDIS_UNAVAILABLE"] * 3 + ["RATE_LIMITED"] * 3
            else:
                assert outcomes == ["RATE_LIMITER_UNAVAILABLE"] * 6
            assert REGISTRY.get_sample_value("devmesh_ratelimit_degraded") == 1
            valkey = start_valkey(tmp_path / "valkey", port)

            async def admitted_by_redis() -> bool:
                error = await refused(mesh.config().ResolveConfig, resolve_request(), metadata=key)
                return error_info(error).reason == "NOT_FOUND"  # its bucket still had tokens left

            await eventually(admitted_by_redis, "the limiter to recover with Redis", within=20)
            assert REGISTRY.get_sample_value("devmesh_ratelimit_degraded") == 0
    finally:
        valkey.process.stop()
