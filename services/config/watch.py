"""Watch streams: replay from the log, then live revisions, in order, none lost or repeated.

The Redis Stream `devmesh:config:{ns}:log` is the source of truth; pub/sub only wakes the
processes that watch a namespace. Each process keeps one `Feed` per watched namespace: a
task that reads new log entries (on a wake-up, or every progress interval in case a wake-up
was lost while the pub/sub connection was down) and offers them to every local watcher.

A watcher registers with the feed *before* it replays the log, so every revision reaches
it by the replay, the feed, or both; it drops what it has already sent. What it has not
sent yet is bounded: a watcher that falls that far behind is cut off with
RESOURCE_EXHAUSTED instead of growing the server's memory.

One write wakes every open stream, so the cost of a wake-up is paid a thousand times over:
a watcher waits on nothing but one future (no queue, no timer of its own), and one beat
task per feed, not a timer per watcher, tells the quiet ones to send a progress message.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError
from redis.exceptions import RedisError

from devmesh.secrets.v1 import secrets_pb2
from services.config import models, secret_refs
from services.config.names import ALL_ENVIRONMENTS, BASE_ENVIRONMENT, namespace_name
from services.config.store import WAKE_CHANNEL, ConfigStore
from services.runtime import protos
from services.runtime.errors import NotFound, OutOfRange, ResourceExhausted, Unavailable
from services.runtime.logging import get_logger
from services.runtime.tasks import cancel_and_wait

log = get_logger(__name__)

# The secrets service announces its events here, as SecretEvent messages (its contract says).
SECRET_EVENTS = protos.channel_of(secrets_pb2.SecretEvent)

REPLAY_PAGE = 200
# Redis reads that opening streams (their checks and replays) make at once. A crowd of
# watchers reconnecting together (after a drain, say) would otherwise take every connection
# of the pool, and the reads beyond its size fail with UNAVAILABLE, theirs and other calls'.
OPENING_READS = 32


@dataclass(frozen=True)
class SecretRotated:
    """A secret the watcher's environment references became a new latest version."""

    secret: str  # the secret id
    version: int
    environment: str
    paths: tuple[str, ...]


@dataclass(frozen=True)
class Progress:
    """Every revision up to `revision` has been delivered or did not concern the watcher."""

    revision: int


class Watcher:
    """One open stream's mailbox: what its feed offered it and it has not sent yet."""

    def __init__(self, environment: str, limit: int, now: float) -> None:
        self.environment = environment
        self.limit = limit
        self.pending: deque[models.Revision | SecretRotated] = deque()
        self.overflowed = False  # more than `limit` pending: the stream is cut off
        self.closed = False  # the server is draining
        self.beat_due = False  # quiet for a progress interval: send a progress message
        self.sent_at = now  # loop time of the stream's last message, or of its start
        self._waiter: asyncio.Future[None] | None = None

    def wants(self, action: str, environment: str) -> bool:
        return (
            self.environment == ALL_ENVIRONMENTS
            or not environment  # namespace-level: created, updated, deleted
            or environment in (self.environment, BASE_ENVIRONMENT)
        )

    def offer(self, item: models.Revision | SecretRotated) -> None:
        if self.overflowed:
            return
        if len(self.pending) >= self.limit:
            self.overflowed = True
        else:
            self.pending.append(item)
        self._wake()

    def beat(self) -> None:
        """Ask for a progress message, unless there is something to send anyway."""
        if not self.pending and not self.beat_due:
            self.beat_due = True
            self._wake()

    def close(self) -> None:
        self.closed = True
        self._wake()

    async def wait(self) -> None:
        """Until the next offer, beat or close."""
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class Feed:
    """One namespace's log, read once per process and fanned out to local watchers."""

    def __init__(self, store: ConfigStore, ns: str, progress_interval: float) -> None:
        self.store = store
        self.ns = ns
        self.cursor = 0  # last revision read from the log
        self.watchers: set[Watcher] = set()
        self.wake = asyncio.Event()
        # The log is also read every progress interval, for a wake-up lost meanwhile.
        self._progress_interval = progress_interval
        self._tasks: tuple[asyncio.Task[None], ...] = ()
        self.ready = asyncio.Event()

    async def start(self) -> None:
        self.cursor = await self.store.log_head(self.ns)
        self._tasks = (
            asyncio.create_task(self._run(), name=f"watch-feed-{self.ns}"),
            asyncio.create_task(self._beat(), name=f"watch-beat-{self.ns}"),
        )
        self.ready.set()

    async def stop(self) -> None:
        await cancel_and_wait(*self._tasks)

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self._progress_interval)
            self.wake.clear()
            try:
                await self.read_new()
            except RedisError as exc:
                log.warning("config.watch.feed_read_failed", namespace=self.ns, error=type(exc).__name__)

    async def _beat(self) -> None:
        """Ask every watcher that was quiet for a progress interval for a progress message.
        Checking four times an interval, a quiet stream hears within 1.25 intervals."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._progress_interval / 4)
            quiet_since = loop.time() - self._progress_interval
            for watcher in self.watchers:
                if watcher.sent_at <= quiet_since:
                    watcher.beat()

    async def read_new(self) -> None:
        while True:
            entries = await self.store.log_after(self.ns, self.cursor, REPLAY_PAGE)
            if not entries:
                return
            records = await self.store.revisions(self.ns, [rev for rev, _, _ in entries])
            for rev, action, environment in entries:
                record = records.get(rev) or models.Revision(self.ns, rev, action, environment)
                for watcher in self.watchers:
                    if watcher.wants(action, environment):
                        watcher.offer(record)
                self.cursor = rev
            if len(entries) < REPLAY_PAGE:
                return


# (namespace, environment) -> the environment's resolved document
Resolve = Callable[[str, str], Awaitable[Any]]


class WatchHub:
    def __init__(
        self, store: ConfigStore, *, queue_size: int, progress_interval: float, resolve: Resolve | None = None
    ) -> None:
        self.store = store
        self._resolve = resolve  # set: watchers hear about rotated secrets their documents reference
        self._tasks: set[asyncio.Task[None]] = set()
        self._queue_size = queue_size
        self._progress_interval = progress_interval
        self._feeds: dict[str, Feed] = {}
        self._opening_reads = asyncio.Semaphore(OPENING_READS)
        self._listener: asyncio.Task[None] | None = None
        self._closing = False

    async def start(self) -> None:
        self._listener = asyncio.create_task(self._listen(), name="watch-wake-listener")

    async def stop(self) -> None:
        """End every open watch stream (UNAVAILABLE: resume elsewhere) and stop the feeds."""
        self._closing = True
        for task in list(self._tasks):
            task.cancel()
        for feed in list(self._feeds.values()):
            for watcher in feed.watchers:
                watcher.close()
        await cancel_and_wait(self._listener)

    async def _listen(self) -> None:
        backoff = 0.1
        while True:
            pubsub = self.store.redis.pubsub()
            try:
                await pubsub.subscribe(WAKE_CHANNEL, SECRET_EVENTS)
                backoff = 0.1
                # Wake-ups sent while we were disconnected are lost: catch up now.
                for feed in self._feeds.values():
                    feed.wake.set()
                async for message in pubsub.listen():
                    if message.get("type") == "subscribe" and message.get("channel") == WAKE_CHANNEL.encode():
                        # Redis confirmed: every change committed from now on reaches us.
                        self.store.view.subscribed(True)
                    if message.get("type") != "message":
                        continue
                    data = message["data"]
                    if message.get("channel") == SECRET_EVENTS.encode():
                        self._secret_event(data)
                        continue
                    ns = data.decode() if isinstance(data, bytes) else str(data)
                    self.store.view.changed(ns)
                    woken = self._feeds.get(ns)
                    if woken is not None:
                        woken.wake.set()
            except (RedisError, OSError) as exc:
                self.store.view.subscribed(False)  # wake-ups may be missed from here on
                log.warning("config.watch.listener_disconnected", error=type(exc).__name__, retry_s=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                self.store.view.subscribed(False)
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    def _secret_event(self, data: bytes) -> None:
        try:
            event = secrets_pb2.SecretEvent.FromString(data)
        except DecodeError:
            return
        if event.type != secrets_pb2.SecretEvent.TYPE_ROTATED or self._resolve is None or not self._feeds:
            return
        secret, version = event.secret.removeprefix("secrets/"), int(event.version)
        task = asyncio.create_task(self._tell_watchers(secret, version), name=f"watch-secret-{secret}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _tell_watchers(self, secret: str, version: int) -> None:
        """Offer SecretRotated to every local watcher whose resolved document references `secret`."""
        assert self._resolve is not None
        for feed in list(self._feeds.values()):
            environments = {w.environment for w in feed.watchers}
            if ALL_ENVIRONMENTS in environments:
                environments = set(await self.store.environment_ids(feed.ns))
            references: dict[str, tuple[str, ...]] = {}
            for env in environments - {ALL_ENVIRONMENTS}:
                try:
                    document = await self._resolve(feed.ns, env)
                except Exception:  # gone meanwhile, or Redis down: nothing to tell about it
                    continue
                paths = tuple(p for p, ref in secret_refs.find(document) if ref.partition("#")[0] == secret)
                if paths:
                    references[env] = paths
            for watcher in feed.watchers:
                for env, paths in references.items():
                    if watcher.environment in (ALL_ENVIRONMENTS, env):
                        watcher.offer(SecretRotated(secret, version, env, paths))

    async def _feed(self, ns: str) -> Feed:
        while True:
            existing = self._feeds.get(ns)
            if existing is not None:
                await existing.ready.wait()
                if self._feeds.get(ns) is existing:  # else its start failed: try again with a new one
                    return existing
                continue
            feed = self._feeds[ns] = Feed(self.store, ns, self._progress_interval)
            try:
                await feed.start()
            except BaseException:
                del self._feeds[ns]
                feed.ready.set()
                raise
            return feed

    async def _release(self, feed: Feed, watcher: Watcher) -> None:
        feed.watchers.discard(watcher)
        if not feed.watchers and self._feeds.get(feed.ns) is feed:
            del self._feeds[feed.ns]
            await feed.stop()

    async def watch(
        self, ns: str, environment: str, since: int
    ) -> AsyncIterator[models.Revision | Progress | SecretRotated]:
        """Revisions after `since` that concern `environment`, then live ones, with progress beats."""
        if self._closing:
            raise Unavailable("the server is shutting down; reconnect", reason="SHUTTING_DOWN")
        async with self._opening_reads:
            namespace = await self.store.namespace(ns)
        if namespace is None:
            raise NotFound(
                f"namespace {ns!r} does not exist",
                resource_type="Namespace",
                resource_name=namespace_name(ns),
            )
        if since > namespace.revision:
            raise OutOfRange(
                f"since_revision {since} is ahead of the namespace's latest revision, {namespace.revision}",
                reason="REVISION_IN_FUTURE",
                metadata={"latest_revision": str(namespace.revision)},
            )
        feed = await self._feed(ns)
        loop = asyncio.get_running_loop()
        watcher = Watcher(environment, self._queue_size, loop.time())
        feed.watchers.add(watcher)
        if self._closing:  # the drain began while this stream was opening
            watcher.close()
        try:
            sent = since
            async for record in self._replay(ns, watcher, since):
                sent = record.revision
                watcher.sent_at = loop.time()
                yield record
            while True:
                if watcher.overflowed:
                    raise ResourceExhausted(
                        f"the watcher fell more than {self._queue_size} revisions behind; "
                        f"resume with since_revision={sent}",
                        retry_after=1.0,
                        reason="WATCHER_TOO_SLOW",
                        metadata={"since_revision": str(sent)},
                    )
                if watcher.closed:
                    raise Unavailable(
                        f"the server is shutting down; resume with since_revision={sent}",
                        retry_after=0.1,
                        reason="SHUTTING_DOWN",
                        metadata={"since_revision": str(sent)},
                    )
                if watcher.pending:
                    item = watcher.pending.popleft()
                    watcher.beat_due = False  # not quiet after all
                    if isinstance(item, SecretRotated):
                        watcher.sent_at = loop.time()
                        yield item
                    elif item.revision > sent:
                        sent = item.revision
                        watcher.sent_at = loop.time()
                        yield item
                elif watcher.beat_due:
                    # Nothing pending: every revision the feed has read was sent or not wanted.
                    watcher.beat_due = False
                    watcher.sent_at = loop.time()
                    yield Progress(max(sent, feed.cursor))
                else:
                    await watcher.wait()
        finally:
            await self._release(feed, watcher)

    async def _replay(self, ns: str, watcher: Watcher, since: int) -> AsyncIterator[models.Revision]:
        async with self._opening_reads:
            oldest = await self.store.log_oldest(ns)
        if oldest and since + 1 < oldest:
            raise OutOfRange(
                f"revision {since} is older than the retained watch log, which starts at {oldest}; "
                "re-read the current state, then watch from its revision",
                reason="REVISION_COMPACTED",
                metadata={"oldest_revision": str(oldest)},
            )
        cursor = since
        while True:
            async with self._opening_reads:  # not held while the page is sent
                entries = await self.store.log_after(ns, cursor, REPLAY_PAGE)
                records = await self.store.revisions(ns, [rev for rev, _, _ in entries]) if entries else {}
            if not entries:
                return
            for rev, action, environment in entries:
                cursor = rev
                if watcher.wants(action, environment):
                    yield records.get(rev) or models.Revision(ns, rev, action, environment)
            if len(entries) < REPLAY_PAGE:
                return
