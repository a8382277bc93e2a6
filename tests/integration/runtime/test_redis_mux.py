"""The multiplexed Redis connection against a real Valkey: every caller gets its own reply,
failures are redis-py's exceptions, and the connection comes back after Redis does."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis import exceptions as redis_errors

from services.runtime import redis_client
from services.runtime.redis_mux import MultiplexedRedis
from tools.stack.valkey import Valkey, start_valkey

Clients = tuple[MultiplexedRedis, redis_client.Redis]


@contextlib.asynccontextmanager
async def multiplexed(url: str, redis_timeout: float, batch_window: float = 0.0) -> AsyncIterator[Clients]:
    """A multiplexed client and the pooled client it is made from, both closed afterwards."""
    pooled = redis_client.connect(url, timeout=redis_timeout)
    mux = MultiplexedRedis(pooled, batch_window=batch_window)
    try:
        yield mux, pooled
    finally:
        await mux.aclose()
        await pooled.aclose()


@pytest.fixture
async def clients(valkey: Valkey) -> AsyncIterator[Clients]:
    async with multiplexed(valkey.url, redis_timeout=2) as both:
        yield both


def keys(n: int) -> list[str]:
    prefix = f"t-mux-{uuid.uuid4().hex[:8]}"
    return [f"{prefix}:{i}" for i in range(n)]


async def test_concurrent_callers_each_get_their_own_reply(
    clients: Clients,
) -> None:
    mux, pooled = clients
    names = keys(500)
    await pooled.mset({name: f"value-{i}" for i, name in enumerate(names)})

    replies = await asyncio.gather(*(mux.get(name) for name in names))

    assert replies == [f"value-{i}".encode() for i in range(len(names))]
    assert await mux.get(f"{names[0]}:missing") is None


async def test_a_cancelled_caller_does_not_shift_the_replies_of_the_others(
    clients: Clients,
) -> None:
    mux, pooled = clients
    first, second = keys(2)
    await pooled.mset({first: "first", second: "second"})
    await mux.get(first)  # connected, so that both commands below go out in one write

    abandoned = asyncio.ensure_future(mux.get(first))
    kept = asyncio.ensure_future(mux.get(second))
    await asyncio.sleep(0)  # one loop turn: both are queued
    abandoned.cancel()

    assert await kept == b"second"
    assert await mux.get(first) == b"first"


async def test_a_lone_caller_never_waits_and_a_busy_one_shares_writes(valkey: Valkey) -> None:
    (name,) = keys(1)

    async def one_get_per_loop_turn(mux: MultiplexedRedis, n: int) -> list[bytes | None]:
        calls = []
        for _ in range(n):
            calls.append(asyncio.ensure_future(mux.get(name)))
            await asyncio.sleep(0)  # the next GET comes in a later turn, as calls do under load
        return await asyncio.gather(*calls)

    for window, most_writes in ((60.0, 5), (0.0, None)):
        async with multiplexed(valkey.url, redis_timeout=5, batch_window=window) as (mux, pooled):
            await pooled.set(name, "v")
            async with asyncio.timeout(5):  # far less than the window: nothing waited for it
                for _ in range(5):  # one caller, one command at a time
                    assert await mux.get(name) == b"v"
            assert (mux.counts.commands, mux.counts.writes) == (5, 5)
            # Twenty GETs, one per loop turn but for the first four, which arrive together:
            # their write carries four, so the GETs after them leave four at a time.
            first = [asyncio.ensure_future(mux.get(name)) for _ in range(3)]
            assert await one_get_per_loop_turn(mux, 17) + await asyncio.gather(*first) == [b"v"] * 20
            writes = mux.counts.writes - 5
            if most_writes is None:
                assert writes == 17  # no window: one write per loop turn
            else:
                assert writes <= most_writes


async def test_error_replies_are_redis_py_exceptions(
    clients: Clients,
) -> None:
    mux, pooled = clients
    (name,) = keys(1)
    await pooled.set(name, "not a number")

    with pytest.raises(redis_errors.ResponseError, match="not an integer"):
        await mux.execute("INCR", name)
    with pytest.raises(redis_errors.NoScriptError):
        await mux.execute("EVALSHA", "0" * 40, 0)
    assert await mux.execute("INCRBY", f"{name}:n", 5) == 5  # the connection is still in step


async def test_the_database_in_the_url_is_selected(clients: Clients, valkey: Valkey) -> None:
    _, database_0 = clients
    (name,) = keys(1)
    async with multiplexed(valkey.url.rsplit("/", 1)[0] + "/3", redis_timeout=2) as (mux, pooled):
        assert await mux.execute("SET", name, "in three") == b"OK"
        assert await pooled.get(name) == b"in three"
        assert await database_0.get(name) is None


async def test_a_redis_that_does_not_answer_times_out_and_the_connection_recovers(
    clients: Clients, valkey: Valkey
) -> None:
    _, pooled = clients
    (name,) = keys(1)
    await pooled.set(name, "after the pause")
    async with multiplexed(valkey.url, redis_timeout=0.2) as (mux, _):
        await mux.get(name)
        await pooled.execute_command("CLIENT", "PAUSE", 1000, "ALL")  # Valkey answers nobody for 1 s
        waiting = [asyncio.ensure_future(mux.execute("GET", name)) for _ in range(3)]
        outcomes = await asyncio.gather(*waiting, return_exceptions=True)
        # The oldest caller learns of the timeout; the others, that the connection was dropped.
        assert isinstance(outcomes[0], redis_errors.TimeoutError)
        assert all(isinstance(o, redis_errors.ConnectionError) for o in outcomes[1:])

        await pooled.execute_command("CLIENT", "UNPAUSE")
        assert await mux.get(name) == b"after the pause"


async def test_redis_down_is_a_connection_error_and_the_next_command_reconnects(tmp_path: Path) -> None:
    server = start_valkey(tmp_path / "valkey", durable=False)
    try:
        async with multiplexed(server.url, redis_timeout=1) as (mux, _):
            assert await mux.execute("SET", "k", "before") == b"OK"
            server.process.kill()
            with pytest.raises(redis_errors.ConnectionError):
                await mux.get("k")
            with pytest.raises(redis_errors.ConnectionError):  # refused while down, no hang
                await mux.get("k")
            assert redis_client.translate_error(redis_errors.ConnectionError()) is not None

            server = start_valkey(tmp_path / "valkey", port=server.port, durable=False)
            assert await mux.execute("SET", "k", "after") == b"OK"
            assert await mux.get("k") == b"after"
    finally:
        server.process.stop()


async def test_a_read_survives_a_redis_restart_between_two_calls(tmp_path: Path) -> None:
    server = start_valkey(tmp_path / "valkey")
    try:
        async with multiplexed(server.url, redis_timeout=1) as (mux, _):
            assert await mux.execute("SET", "k", "kept") == b"OK"
            server.process.stop()  # the connection the next GET would use is gone with it
            server = start_valkey(tmp_path / "valkey", port=server.port)  # AOF replay
            assert await mux.get("k") == b"kept"
    finally:
        server.process.stop()


async def test_password_from_the_url_is_sent_and_a_wrong_one_refused(tmp_path: Path) -> None:
    server = start_valkey(tmp_path / "valkey", durable=False)
    admin = redis_client.connect(server.url, timeout=1)
    try:
        await admin.config_set("requirepass", "s3cret-for-test")
        base = f"redis://:{{}}@127.0.0.1:{server.port}/0"
        for password, works in (("s3cret-for-test", True), ("wrong", False)):
            async with multiplexed(base.format(password), redis_timeout=1) as (mux, _):
                if works:
                    assert await mux.execute("PING") == b"PONG"
                else:
                    with pytest.raises(redis_errors.AuthenticationError):
                        await mux.execute("PING")
    finally:
        await admin.aclose()
        server.process.stop()


async def test_a_closed_client_refuses_commands(clients: Clients) -> None:
    mux, _ = clients
    await mux.execute("PING")
    await mux.aclose()
    with pytest.raises(redis_errors.ConnectionError, match="closed"):
        await mux.execute("PING")
