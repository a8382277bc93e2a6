"""The Redis adapter on a real Valkey with `appendfsync everysec` (as production may run it):
an acknowledged write is confirmed on disk whichever pooled connection the confirmation runs
on, and a burst of more commands than the pool has connections waits instead of failing."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest
import redis

from services.runtime import redis_client
from services.runtime.redis_client import AOF_FENCE, DurableWriter
from tools.stack.valkey import Valkey, start_valkey


@pytest.fixture(scope="module")
def everysec(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Valkey]:
    server = start_valkey(tmp_path_factory.mktemp("everysec"), appendfsync="everysec")
    yield server
    server.process.stop()


def _monitor(url: str, seen: list[str], ready: threading.Event, stop: threading.Event) -> None:
    with redis.Redis.from_url(url).monitor() as monitor:
        ready.set()
        for command in monitor.listen():
            seen.append(f"{command['client_address']}:{command['client_port']} {command['command']}")
            if stop.is_set():
                return


async def test_every_confirmation_waits_for_a_write_of_its_own_connection(everysec: Valkey) -> None:
    seen: list[str] = []
    ready, stop = threading.Event(), threading.Event()
    watcher = threading.Thread(target=_monitor, args=(everysec.url, seen, ready, stop), daemon=True)
    watcher.start()
    ready.wait(5)
    client = redis_client.connect(everysec.url, 2.0)
    durable = DurableWriter(client, enabled=True, timeout=2.0)

    async def write(i: int) -> None:
        await client.set(f"key-{i}", "v")
        await durable.confirm()

    await asyncio.gather(*(write(i) for i in range(20)))  # confirmations land on other connections
    stop.set()
    await client.set("done", "1")  # one more command, so that the monitor thread wakes and ends
    await client.aclose()
    watcher.join(5)
    last_by_connection: dict[str, str] = {}
    waits = 0
    for line in seen:
        connection, command = line.split(" ", 1)
        if command.startswith("WAITAOF"):
            waits += 1
            assert last_by_connection.get(connection, "").startswith(f"INCRBY {AOF_FENCE}"), line
        last_by_connection[connection] = command
    assert waits == 20


async def test_a_confirmation_of_nothing_is_confirmed(everysec: Valkey) -> None:
    client = redis_client.connect(everysec.url, 2.0)
    await DurableWriter(client, enabled=True, timeout=2.0).confirm()  # raises when not durable
    await client.aclose()


async def test_a_burst_of_more_commands_than_connections_waits_for_them_instead_of_failing(
    everysec: Valkey,
) -> None:
    client = redis_client.connect(everysec.url, 5.0)
    await client.set("burst", "v")
    blocked = [
        client.execute_command("BLPOP", "nothing-comes", 0.2) for _ in range(redis_client.MAX_CONNECTIONS)
    ]
    results = await asyncio.gather(*blocked, *(client.get("burst") for _ in range(50)))
    await client.aclose()
    assert results[-50:] == [b"v"] * 50
