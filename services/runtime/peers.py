"""Channels to the other devmesh services a service calls (its spec's `peers`).

A service never imports another's Python: it calls it through the generated stubs, over
the mesh's mTLS with its own certificate, at the address DEVMESH_PEERS gives. When the
certificate is renewed (its files change) the next call opens a new channel, so that new
connections present the new certificate; the old channel closes a little later, once calls
already on it are done.
"""

from __future__ import annotations

import asyncio

import grpc
from grpc import aio

from services.runtime.tasks import cancel_and_wait
from services.runtime.tls import CertificateFiles

OLD_CHANNEL_GRACE_S = 30.0


class PeerChannel:
    """The channel to one peer, opened on first use."""

    def __init__(self, name: str, addr: str, tls: CertificateFiles | None) -> None:
        self.name = name
        self.addr = addr
        self._tls = tls
        self._channel: aio.Channel | None = None
        self._retired: dict[aio.Channel, asyncio.Task[None]] = {}  # old channels, closed later

    def channel(self) -> aio.Channel:
        """The channel to call the peer on (plaintext only when this process serves plaintext)."""
        if self._channel is None or (self._tls is not None and self._tls.refresh()):
            old, self._channel = self._channel, self._open()
            if old is not None:
                self._retired[old] = asyncio.create_task(self._close_later(old), name=f"peer-{self.name}")
        return self._channel

    def _open(self) -> aio.Channel:
        if self._tls is None:
            return aio.insecure_channel(self.addr)
        pem = self._tls.pem
        return aio.secure_channel(self.addr, grpc.ssl_channel_credentials(pem.ca, pem.key, pem.cert_chain))

    async def _close_later(self, channel: aio.Channel) -> None:
        await asyncio.sleep(OLD_CHANNEL_GRACE_S)
        self._retired.pop(channel, None)
        await channel.close()

    async def close(self) -> None:
        """Close every channel now (the server has stopped calling)."""
        await cancel_and_wait(*self._retired.values())
        for channel in [*self._retired, *([self._channel] if self._channel else [])]:
            await channel.close()
        self._retired.clear()
        self._channel = None
