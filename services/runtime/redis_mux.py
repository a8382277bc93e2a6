"""One Redis connection shared by every concurrent caller, for the commands on the hot path.

redis-py's asyncio client lends each concurrent command a connection of its own from a pool:
a checkout, a write, a wake-up of that connection's reader, a check-in, all of it in Python, for
every command. Under load a service issues many small independent commands at once (the
revision check of every strongly consistent read, for one): with the pool, that GET cost a
service about 140 us of CPU per call, nearly what grpc.aio spends on the whole call. Here the
commands share one connection instead: the commands issued in one turn of
the event loop leave in a single write, Redis answers them in order, and each reply read goes
to the caller that waits for it (pipelining without a pipeline object, as ioredis and
StackExchange.Redis do it). `make bench` compares the two (`redis_get`).

Under load that alone batches little: calls reach the handler one loop turn at a time, and
Redis answers each GET before the next arrives. So writes go through an adaptive
`WriteWindow`: a command leaves at once when each of the last few writes carried one command
(a caller alone never waits), or when the last write was longer ago than `batch_window`
seconds (DEVMESH_REDIS_BATCH_WINDOW: 2 ms). Otherwise it waits until as many commands are
queued as the largest of the last few writes carried, or until the window ends. A busy
service then makes one write (and Redis one read) out of several commands, and the replies
wake their callers together. Measured on strongly consistent reads with 96 calls in flight
(the load of `make bench`): 15 to 30 % more calls a second than with a fixed half-millisecond
window, and about a fifth less CPU per call on the main thread. One call at a time, and a
steady 1,000 calls a second, keep their latency.

Only single, non-blocking commands belong here. A blocking one (XREAD BLOCK, BLPOP) would hold
up every reply behind it, and a WATCH or MULTI would be shared with every other caller:
transactions and blocking reads stay on the pooled client.

Failures are redis-py's exceptions, so `redis_client.translate_error` maps them to UNAVAILABLE
as it does for the pool. A command unanswered after `timeout` seconds fails with TimeoutError
and takes the connection down with it (nothing behind it in the queue would be answered
sooner); every caller still waiting gets ConnectionError, and the next command connects again.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import Any

import hiredis
from redis import exceptions as redis_errors
from redis._parsers.base import BaseParser
from redis.asyncio import Redis
from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection

from services.runtime.write_window import WriteWindow

__all__ = ["MultiplexedRedis"]


def _pack(args: tuple[str | bytes | int | float, ...]) -> bytes:
    """A command in RESP, packed in C (hiredis's stub declares a one-element tuple)."""
    return hiredis.pack_command(args)  # type: ignore[arg-type,no-any-return]


@dataclass
class Counts:
    """What the connections of one client have sent: `commands / writes` is how well they batch."""

    commands: int = 0
    writes: int = 0


class _ErrorReply(Exception):
    """An error reply from Redis, as hiredis hands it over; turned into redis-py's exception."""


class _Connection(asyncio.Protocol):
    """The socket, the commands waiting to be written, and the callers waiting for replies."""

    def __init__(self, timeout: float, batch_window: float, counts: Counts) -> None:
        self._timeout = timeout
        self._counts = counts
        self._reader = hiredis.Reader(replyError=_ErrorReply)
        self._transport: asyncio.Transport | None = None
        self._outgoing: list[bytes] = []  # queued for the next write
        self._window = WriteWindow(batch_window, self._flush, adaptive=True)
        # Callers in the order of their commands, with the loop time at which each gives up.
        self._waiting: deque[tuple[asyncio.Future[Any], float]] = deque()
        self._watchdog: asyncio.TimerHandle | None = None
        self.lost: BaseException | None = None

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        if self.lost is not None:  # dropped: nobody waits for what is still arriving
            return
        self._reader.feed(data)
        while True:
            try:
                reply = self._reader.gets()
            except hiredis.ProtocolError as exc:
                self.abort(redis_errors.InvalidResponse(f"Redis sent a malformed reply: {exc}"))
                return
            if reply is False:
                return
            if not self._waiting:
                self.abort(redis_errors.InvalidResponse("Redis sent a reply nothing was waiting for"))
                return
            future, _deadline = self._waiting.popleft()
            if future.done():  # its caller was cancelled
                continue
            if isinstance(reply, _ErrorReply):
                future.set_exception(BaseParser.parse_error(str(reply)))
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(redis_errors.ConnectionError("the connection to Redis closed"))

    # -- the callers' side -----------------------------------------------------------------
    def send(self, command: bytes) -> asyncio.Future[Any]:
        """Queue `command` for the next write (see `WriteWindow`); the future gets its reply."""
        if self.lost is not None:
            raise self.lost
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._outgoing.append(command)
        self._window.queued(loop)
        self._waiting.append((future, loop.time() + self._timeout))
        if self._watchdog is None:
            self._watchdog = loop.call_later(self._timeout, self._check_deadline)
        return future

    def _flush(self) -> None:
        if self._transport is not None and self._outgoing and self.lost is None:
            self._transport.write(b"".join(self._outgoing))
            self._counts.commands += len(self._outgoing)
            self._counts.writes += 1
        self._outgoing.clear()

    def _check_deadline(self) -> None:
        """Replies come in order, so only the oldest waiting caller can be overdue first."""
        self._watchdog = None
        if not self._waiting or self.lost is not None:
            return
        loop = asyncio.get_running_loop()
        deadline = self._waiting[0][1]
        if loop.time() >= deadline:
            self.abort(redis_errors.TimeoutError(f"Redis did not answer within {self._timeout} s"))
            return
        self._watchdog = loop.call_at(deadline, self._check_deadline)

    def abort(self, exc: BaseException) -> None:
        """Drop the connection: the oldest caller gets `exc`, every other ConnectionError."""
        if self._waiting:
            future, _ = self._waiting.popleft()
            if not future.done():
                future.set_exception(exc)
        self._fail(exc if isinstance(exc, redis_errors.ConnectionError) else None)
        if self._transport is not None:
            self._transport.abort()

    def _fail(self, exc: BaseException | None) -> None:
        self.lost = self.lost or exc or redis_errors.ConnectionError("the connection to Redis was dropped")
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        self._window.cancel()
        self._outgoing.clear()
        while self._waiting:
            future, _ = self._waiting.popleft()
            if not future.done():
                future.set_exception(redis_errors.ConnectionError(str(self.lost)))

    def close(self) -> None:
        self._fail(redis_errors.ConnectionError("the client was closed"))
        if self._transport is not None:
            self._transport.close()


class MultiplexedRedis:
    """Commands from every caller over one connection, made from a pooled client's settings
    (host or socket path, TLS, credentials, database, timeout), so both reach the same Redis."""

    def __init__(self, pooled: Redis, batch_window: float = 0.0) -> None:
        pool = pooled.connection_pool
        self._batch_window = batch_window
        self._kwargs: dict[str, Any] = dict(pool.connection_kwargs)
        self._class = pool.connection_class
        self._timeout = float(self._kwargs.get("socket_timeout") or 5.0)
        self._connection: _Connection | None = None
        self._connecting: asyncio.Future[_Connection] | None = None
        self._closed = False
        self.counts = Counts()

    async def execute(self, *args: str | bytes | int | float) -> Any:
        """Run one command and return its reply (bytes, int, list, None), or raise redis-py's
        exception for an error reply, a timeout or a lost connection."""
        connection = self._connection
        if connection is None or connection.lost is not None:
            connection = await self._connect()
        return await connection.send(_pack(args))

    async def execute_repeatable(self, *args: str | bytes | int | float) -> Any:
        """`execute`, asked once more on a new connection when the connection was lost under
        it (a Redis restart, an idle connection closed), as redis-py's pool does: for commands
        that are safe to run twice."""
        try:
            return await self.execute(*args)
        except redis_errors.ConnectionError:
            if self._closed:
                raise
            return await self.execute(*args)

    async def get(self, key: str) -> bytes | None:
        result: bytes | None = await self.execute_repeatable("GET", key)
        return result

    async def _connect(self) -> _Connection:
        """The live connection, opening one when there is none; concurrent callers share one
        attempt and its outcome."""
        if self._closed:
            raise redis_errors.ConnectionError("the client was closed")
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._open())
            self._connecting.add_done_callback(self._connected)
        return await asyncio.shield(self._connecting)

    def _connected(self, attempt: asyncio.Future[_Connection]) -> None:
        self._connecting = None
        if attempt.cancelled() or attempt.exception() is not None:
            return
        if self._closed:  # closed while connecting
            attempt.result().close()
        else:
            self._connection = attempt.result()

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        kwargs = self._kwargs

        def protocol() -> _Connection:
            return _Connection(self._timeout, self._batch_window, self.counts)

        try:
            async with asyncio.timeout(float(kwargs.get("socket_connect_timeout") or self._timeout)):
                if issubclass(self._class, UnixDomainSocketConnection):
                    _, connection = await loop.create_unix_connection(protocol, kwargs["path"])
                else:
                    ssl = (
                        self._class(**kwargs).ssl_context.get()
                        if issubclass(self._class, SSLConnection)
                        else None
                    )
                    _, connection = await loop.create_connection(
                        protocol, kwargs.get("host", "localhost"), kwargs.get("port", 6379), ssl=ssl
                    )
                await self._handshake(connection)
        except TimeoutError:
            raise redis_errors.TimeoutError("timed out connecting to Redis") from None
        except OSError as exc:
            raise redis_errors.ConnectionError(f"cannot connect to Redis: {exc.strerror or exc}") from None
        return connection

    async def _handshake(self, connection: _Connection) -> None:
        """Authenticate and select the database, as the pooled client does on connect."""
        password, username = self._kwargs.get("password"), self._kwargs.get("username")
        try:
            if password:
                auth = ("AUTH", username, password) if username else ("AUTH", password)
                await connection.send(_pack(auth))
            if int(self._kwargs.get("db") or 0):
                await connection.send(_pack(("SELECT", int(self._kwargs["db"]))))
        except BaseException:
            connection.close()
            raise

    async def aclose(self) -> None:
        self._closed = True
        if self._connection is not None:
            self._connection.close()
            self._connection = None
