"""READ_CONSISTENCY_CACHED: reads served from a replica's view of each namespace's revision,
kept fresh by the wake-ups every commit publishes; STRONG (the default) asks Redis each time."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis
from grpc import aio

from devmesh.config.v1 import config_pb2 as pb
from devmesh.config.v1 import config_pb2_grpc
from services.config.store import WAKE_CHANNEL, counter_key
from tests.conftest import ServerFactory
from tests.helpers import eventually, violated_fields
from tests.integration.config.conftest import create, env_name, put

Stub = config_pb2_grpc.ConfigServiceStub
CACHED = pb.READ_CONSISTENCY_CACHED


async def cached_revision(stub: Stub, name: str) -> int:
    return (await stub.ResolveConfig(pb.ResolveConfigRequest(name=name, consistency=CACHED))).revision


async def eventually_cached_revision(stub: Stub, name: str, revision: int) -> None:
    async def reached() -> bool:
        return await cached_revision(stub, name) == revision

    await eventually(reached, f"a cached read of {name} to reach revision {revision}")


async def view_revision(stub: Stub, redis: aioredis.Redis, ns: str) -> int | None:
    """The revision of `ns` that `stub`'s replica answers CACHED reads with from its view, or
    None while it asks Redis instead. Nothing the replica says tells when Redis has confirmed
    its wake-up subscription, or when a wake-up has reached it; so probe with a commit that is
    never announced (the counter moves on, nothing is published): the view answers as before,
    a read of Redis sees the move. The counter never goes back, so what the view learns from it
    stays true; after a probe that answers, the counter is one past what the view holds."""
    name = env_name(ns, "default")
    before = await cached_revision(stub, name)  # the view learns it, if the replica is subscribed
    await redis.incr(counter_key(ns))
    return before if await cached_revision(stub, name) == before else None


@pytest.fixture
async def replicas(valkey: Any, start_config_server: ServerFactory) -> Any:
    _, addr_a = await start_config_server(valkey.url)
    _, addr_b = await start_config_server(valkey.url)
    async with aio.insecure_channel(addr_a) as ch_a, aio.insecure_channel(addr_b) as ch_b:
        yield Stub(ch_a), Stub(ch_b)


async def test_cached_reads_see_own_writes_at_once_and_other_replicas_writes_once_notified(
    replicas: tuple[Stub, Stub], ns: str
) -> None:
    a, b = replicas
    name = env_name(ns, "default")
    await create(a, ns)
    first = await put(a, ns, "default", {"v": 1})
    assert await cached_revision(a, name) == await cached_revision(b, name) == first.revision

    second = await put(a, ns, "default", {"v": 2})
    assert await cached_revision(a, name) == second.revision  # the writing replica knows at once
    await eventually_cached_revision(b, name, second.revision)  # once the wake-up arrives
    strong = await b.ResolveConfig(pb.ResolveConfigRequest(name=name))
    assert (strong.revision, strong.content["v"]) == (second.revision, 2)

    env = await b.GetEnvironment(pb.GetEnvironmentRequest(name=name, consistency=CACHED))
    assert env.content["v"] == 2


async def test_a_cached_read_answers_from_the_view_until_the_change_is_announced(
    valkey: Any, start_config_server: ServerFactory, config: Stub, ns: str
) -> None:
    name = env_name(ns, "default")
    await create(config, ns)
    await put(config, ns, "default", {"v": 1})
    # A replica that subscribes after those writes: no wake-up of theirs is still on its way
    # to it, to clear its view in the middle of what follows.
    _, addr = await start_config_server(valkey.url)
    redis = aioredis.from_url(valkey.url)
    try:
        async with aio.insecure_channel(addr) as channel:
            b = Stub(channel)
            # A commit whose wake-up has not arrived yet (the probe's) leaves cached reads at
            # what the view holds; a STRONG read sees it.
            held = await eventually(
                lambda: view_revision(b, redis, ns), "Redis to confirm the wake-up subscription"
            )
            assert await cached_revision(b, name) == held
            assert (await b.ResolveConfig(pb.ResolveConfigRequest(name=name))).revision == held + 1

            # Announced, the commit is forgotten and the next read learns the latest revision.
            await redis.publish(WAKE_CHANNEL, ns)

            async def past_the_announced_commit() -> int | None:
                revision = await view_revision(b, redis, ns)
                return revision if revision is not None and revision > held else None

            held = await eventually(past_the_announced_commit, "the announcement to reach the replica")

            # Cut off from the wake-ups, a replica forgets what it knew instead of serving it.
            assert await cached_revision(b, name) == held
            await redis.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
            await eventually_cached_revision(b, name, held + 1)
    finally:
        await redis.aclose()


async def test_an_unknown_consistency_is_invalid_argument(config: Stub, ns: str) -> None:
    await create(config, ns)
    await put(config, ns, "default", {"v": 1})
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await config.ResolveConfig(pb.ResolveConfigRequest(name=env_name(ns, "default"), consistency=7))  # type: ignore[arg-type]
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(raised.value) == ["consistency"]
