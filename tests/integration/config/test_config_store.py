"""The config store's commits against a real Valkey: a plan's writes apply only while what it
read is unchanged, and nothing else it did not read can make it run again."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.config import models
from services.config.store import Change, ConfigStore, Snapshot
from services.runtime import redis_client
from services.runtime.redis_mux import MultiplexedRedis


@pytest.fixture
async def store(valkey: Any) -> AsyncIterator[ConfigStore]:
    redis = redis_client.connect(valkey.url, 2.0)
    mux = MultiplexedRedis(redis)
    yield ConfigStore(redis, mux, redis_client.DurableWriter(redis, True, 2.0), log_retention=100)
    await mux.aclose()
    await redis.aclose()


async def write(store: ConfigStore, ns: str, env: str, content: dict[str, Any]) -> int:
    async def plan(snap: Snapshot) -> Change:
        previous = await snap.environment(env)
        return Change(models.ENVIRONMENT_UPDATED, environment=env, content=content, previous=previous)

    return (await store.commit(ns, "test", plan)).revision.revision


async def created(store: ConfigStore, ns: str) -> None:
    async def plan(snap: Snapshot) -> Change:
        assert await snap.namespace() is None
        return Change(models.NAMESPACE_CREATED, namespace=models.Namespace(id=ns))

    await store.commit(ns, "test", plan)


async def test_a_write_to_another_environment_meanwhile_does_not_make_a_plan_run_again(
    store: ConfigStore, ns: str
) -> None:
    await created(store, ns)
    runs = 0

    async def plan(snap: Snapshot) -> Change:
        nonlocal runs
        runs += 1
        await snap.namespace()
        previous = await snap.environment("a")
        if runs == 1:
            await write(store, ns, "b", {"other": True})  # lands between this plan's reads and writes
        return Change(models.ENVIRONMENT_CREATED, environment="a", content={"mine": True}, previous=previous)

    committed = await store.commit(ns, "test", plan)
    assert runs == 1
    assert committed.revision.revision == 3  # after the namespace (1) and the other write (2)


async def test_a_plan_whose_environment_changed_meanwhile_runs_again_on_fresh_state(
    store: ConfigStore, ns: str
) -> None:
    await created(store, ns)
    await write(store, ns, "a", {"v": 1})
    seen: list[int | None] = []

    async def plan(snap: Snapshot) -> Change:
        previous = await snap.environment("a")
        seen.append(previous.revision if previous else None)
        if len(seen) == 1:
            await write(store, ns, "a", {"v": 2})
        return Change(models.ENVIRONMENT_UPDATED, environment="a", content={"v": 3}, previous=previous)

    committed = await store.commit(ns, "test", plan)
    assert seen == [2, 3]
    assert committed.revision.revision == 4
    environment, _ = await store.environment(ns, "a")
    assert environment is not None and environment.content == {"v": 3}


async def test_a_plan_that_listed_the_environments_runs_again_when_one_is_added(
    store: ConfigStore, ns: str
) -> None:
    await created(store, ns)
    listed: list[list[str]] = []

    async def plan(snap: Snapshot) -> Change:
        await snap.namespace()
        listed.append(await snap.environment_ids())
        if len(listed) == 1:
            await write(store, ns, "late", {})
        return Change(models.NAMESPACE_DELETED, deleted_environments=tuple(listed[-1]))

    await store.commit(ns, "test", plan)
    assert listed == [[], ["late"]]
    assert await store.environment_ids(ns) == []
    assert not await store.namespace_exists(ns)


async def test_a_namespace_change_meanwhile_makes_an_environment_plan_run_again(
    store: ConfigStore, ns: str
) -> None:
    await created(store, ns)
    schemas: list[Any] = []

    async def plan(snap: Snapshot) -> Change:
        namespace = await snap.namespace()
        assert namespace is not None
        schemas.append(namespace.schema)
        if len(schemas) == 1:

            async def set_schema(inner: Snapshot) -> Change:
                current = await inner.namespace()
                assert current is not None
                current.schema = {"type": "object"}
                return Change(models.NAMESPACE_UPDATED, namespace=current)

            await store.commit(ns, "test", set_schema)
        return Change(models.ENVIRONMENT_CREATED, environment="a", content={})

    await store.commit(ns, "test", plan)
    assert schemas == [None, {"type": "object"}]


async def test_a_commit_after_redis_forgot_its_scripts_sends_the_script_again(
    store: ConfigStore, ns: str
) -> None:
    await created(store, ns)
    await store.redis.script_flush()
    assert await write(store, ns, "a", {"v": 1}) == 2
