"""A replica keeps a bounded number of template sets in memory; the rest stay in Redis."""

from __future__ import annotations

import uuid

from services.debugger.template_store import SAVE_BATCH, TemplateStore
from services.runtime import redis_client
from tools.stack.valkey import Valkey


async def test_many_template_sets_hold_few_miners_and_an_evicted_set_loses_nothing(valkey: Valkey) -> None:
    redis = redis_client.connect(valkey.url, 5.0)
    try:
        store = TemplateStore(redis, max_templates=100, max_cached_sets=3)
        sets = [f"s-{uuid.uuid4().hex[:8]}" for _ in range(8)]
        for name in sets:
            miner = await store.miner(name)
            miner.add(f"build of {name} failed with code 2")
            await store.save(name, miner)
        assert store.cached_sets == 3
        again = await store.miner(sets[0])
        assert [t.text for t in again.templates.values()] == [f"build of {sets[0]} failed with code <*>"]
    finally:
        await redis.aclose()


async def test_a_set_evicted_while_its_miner_is_in_use_saves_what_that_miner_learnt(valkey: Valkey) -> None:
    redis = redis_client.connect(valkey.url, 5.0)
    try:
        store = TemplateStore(redis, max_templates=100, max_cached_sets=1)
        first, other = f"s-{uuid.uuid4().hex[:8]}", f"s-{uuid.uuid4().hex[:8]}"
        held = await store.miner(first)
        await store.miner(other)  # evicts `first`: nothing of it was unsaved yet
        held.add("worker lost: heartbeat missed")
        assert await store.save(first, held) == 1
        assert [t.text for t in await store.listing(first)] == ["worker lost: heartbeat missed"]
    finally:
        await redis.aclose()


async def test_a_replica_reads_back_what_others_saved_but_not_its_own_save(valkey: Valkey) -> None:
    redis = redis_client.connect(valkey.url, 5.0)
    try:
        name = f"s-{uuid.uuid4().hex[:8]}"
        mine, theirs = TemplateStore(redis, max_templates=100), TemplateStore(redis, max_templates=100)
        miner = await mine.miner(name)
        merged: list[str] = []
        original_merge = miner.merge
        miner.merge = lambda template: (merged.append(template.id), original_merge(template))[1]  # type: ignore[method-assign]
        miner.add("disk /dev/sda1 is full")
        await mine.save(name, miner)
        await mine.miner(name)
        assert merged == []
        other = await theirs.miner(name)
        other.add("worker lost: heartbeat missed")
        await theirs.save(name, other)
        await mine.miner(name)
        assert [miner.templates[i].text for i in merged] == ["worker lost: heartbeat missed"]
    finally:
        await redis.aclose()


async def test_a_save_larger_than_one_batch_stores_every_template_and_reads_none_back(valkey: Valkey) -> None:
    redis = redis_client.connect(valkey.url, 5.0)
    try:
        name = f"s-{uuid.uuid4().hex[:8]}"
        mine, theirs = TemplateStore(redis, max_templates=10_000), TemplateStore(redis, max_templates=10_000)
        miner = await mine.miner(name)
        words = [
            f"step{chr(97 + i % 26)}{chr(97 + i // 26 % 26)}{chr(97 + i // 676)}"
            for i in range(SAVE_BATCH * 2 + 5)
        ]
        for word in words:
            miner.add(f"{word} finished")
        merged: list[str] = []
        original_merge = miner.merge
        miner.merge = lambda template: (merged.append(template.id), original_merge(template))[1]  # type: ignore[method-assign]
        assert await mine.save(name, miner) == len(words)
        await mine.miner(name)
        assert merged == []  # its own save, in several calls, is not read back
        other = await theirs.miner(name)
        assert sorted(t.text for t in other.templates.values()) == sorted(f"{w} finished" for w in words)
    finally:
        await redis.aclose()
