"""Where artifacts' bytes live: the `ArtifactStore` interface, and the directory that
implements it on the pipeline service's side by default.

A store keeps opaque blobs under names `<run>/<blob>`; what a blob is (its job, attempt,
SHA-256) is recorded in Redis beside the run (`runs/artifacts.py`). A blob appears whole or
not at all: `put` writes a temporary file and renames it into place, so a reader never sees
half of one. The production choice is an S3-compatible object store (one bucket, the same
names as object keys, a multipart upload that completes only when the stream ends, which is
the same all-or-nothing rule); it plugs in behind this interface and is not built here.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

READ_CHUNK_BYTES = 1 << 20
_SEGMENT = re.compile(r"[a-z0-9][a-z0-9._-]{0,160}")
_TEMP_PREFIX = ".partial-"


class BlobTooLarge(Exception):
    """The stream went past the cap it was given; nothing was kept."""

    def __init__(self, cap: int) -> None:
        super().__init__(f"more than {cap} bytes")
        self.cap = cap


class BlobNotFound(Exception):
    """No blob has that name (it was never stored, or it was deleted)."""


@dataclass(frozen=True)
class StoredBlob:
    name: str
    size: int
    sha256: str


class ArtifactStore(Protocol):
    """Blobs by name: put whole, list, read streamed, delete."""

    async def put(self, name: str, chunks: AsyncIterator[bytes], max_bytes: int) -> StoredBlob:
        """Store `chunks` under `name` (replacing a blob of that name); BlobTooLarge past
        `max_bytes`, and then nothing is kept."""
        ...

    def open(self, name: str) -> AsyncIterator[bytes]:
        """The blob's bytes in chunks; BlobNotFound (on the first read) when there is none."""
        ...

    async def list(self, prefix: str) -> list[str]:
        """The names of the blobs under `prefix` (a run's: `<run>/`)."""
        ...

    async def delete(self, name: str) -> None:
        """Remove the blob; a missing one is no error."""
        ...


def check_name(name: str) -> tuple[str, str]:
    """(run, blob) of a blob name; ValueError for anything that is not two plain segments."""
    run, sep, blob = name.partition("/")
    if not sep or not _SEGMENT.fullmatch(run) or not _SEGMENT.fullmatch(blob) or ".." in name:
        raise ValueError(f"not a blob name: {name[:80]!r}")
    return run, blob


class DirectoryArtifactStore:
    """Blobs as files `<root>/<run>/<blob>`, written under a temporary name and renamed."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, name: str) -> Path:
        run, blob = check_name(name)
        return self.root / run / blob

    async def put(self, name: str, chunks: AsyncIterator[bytes], max_bytes: int) -> StoredBlob:
        target = self._path(name)
        await asyncio.to_thread(target.parent.mkdir, parents=True, exist_ok=True)
        temp = target.parent / f"{_TEMP_PREFIX}{uuid.uuid4().hex}"
        digest = hashlib.sha256()
        size = 0
        handle = await asyncio.to_thread(open, temp, "wb")
        kept = False
        try:
            async for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise BlobTooLarge(max_bytes)
                digest.update(chunk)
                await asyncio.to_thread(handle.write, chunk)
            await asyncio.to_thread(_flush_and_sync, handle)
            handle.close()
            await asyncio.to_thread(os.replace, temp, target)
            kept = True
        finally:
            handle.close()
            if not kept:
                with contextlib.suppress(FileNotFoundError):
                    await asyncio.to_thread(temp.unlink)
        return StoredBlob(name, size, digest.hexdigest())

    async def open(self, name: str) -> AsyncIterator[bytes]:
        path = self._path(name)
        try:
            handle = await asyncio.to_thread(open, path, "rb")
        except FileNotFoundError:
            raise BlobNotFound(name) from None
        # An open file keeps its content even when a newer blob replaces or a sweep deletes it.
        with handle:
            while chunk := await asyncio.to_thread(handle.read, READ_CHUNK_BYTES):
                yield chunk

    async def list(self, prefix: str) -> list[str]:
        run = prefix.rstrip("/")
        if not _SEGMENT.fullmatch(run):
            return []
        folder = self.root / run
        try:
            entries = await asyncio.to_thread(os.listdir, folder)
        except FileNotFoundError:
            return []
        return sorted(f"{run}/{entry}" for entry in entries if not entry.startswith(_TEMP_PREFIX))

    async def delete(self, name: str) -> None:
        path = self._path(name)
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(path.unlink)
        with contextlib.suppress(OSError):  # the run's folder goes with its last blob
            await asyncio.to_thread(path.parent.rmdir)


def _flush_and_sync(handle: object) -> None:
    handle.flush()  # type: ignore[attr-defined]
    os.fsync(handle.fileno())  # type: ignore[attr-defined]
