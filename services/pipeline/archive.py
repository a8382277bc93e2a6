"""A `.tar.gz` of a repository as a snapshot, read in memory and never written anywhere.

The archive is read as a stream, entry by entry, under caps: its compressed size, the sum of
its entries' sizes once unpacked (a tar bomb stops there), its number of entries. Only the
files detection reads keep their contents (each bounded); every other entry is counted and
skipped. Links (symbolic or hard), devices and FIFOs, absolute names and names with `..` are
refused with the entry named. A single top-level directory (as in a tarball of a commit) is
taken off every name.
"""

from __future__ import annotations

import io
import tarfile
import zlib
from dataclasses import dataclass

from services.pipeline.snapshot import HEAD_BYTES, HEAD_ONLY, path_problem, reads
from services.runtime.errors import InvalidArgument

FIELD = "chunk"
MAX_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class ArchiveLimits:
    max_bytes: int  # compressed
    max_unpacked_bytes: int
    max_entries: int
    max_file_content: int


def _refused(description: str, reason: str) -> InvalidArgument:
    return InvalidArgument.for_field(FIELD, description, reason=reason)


def entries(data: bytes, limits: ArchiveLimits) -> list[tuple[str, int, bytes, bool]]:
    """(path, size, content, truncated) of every regular file of the archive."""
    if len(data) > limits.max_bytes:
        raise _refused(f"the archive is over {limits.max_bytes} bytes", "ARCHIVE_TOO_LARGE")
    if not data:
        raise _refused("no archive was sent", "REQUIRED")
    found: list[tuple[str, int, bytes, bool]] = []
    unpacked = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r|gz") as archive:
            for count, member in enumerate(archive, start=1):
                if count > limits.max_entries:
                    raise _refused(f"more than {limits.max_entries} entries", "ARCHIVE_TOO_MANY_ENTRIES")
                name = member.name.removeprefix("./")
                if member.isdir() or not name:
                    continue
                if member.issym() or member.islnk():
                    raise _refused(
                        f"{name[:120]!r} is a link; archives of repositories may not hold links here",
                        "ARCHIVE_LINK",
                    )
                if not member.isreg():
                    raise _refused(
                        f"{name[:120]!r} is not a regular file (a device, FIFO or the like)",
                        "ARCHIVE_SPECIAL_FILE",
                    )
                problem = path_problem(name)
                if problem:
                    raise _refused(f"entry {name[:120]!r} {problem}", "ARCHIVE_BAD_PATH")
                unpacked += member.size
                if unpacked > limits.max_unpacked_bytes:
                    raise _refused(
                        f"the entries add up to more than {limits.max_unpacked_bytes} bytes unpacked",
                        "ARCHIVE_TOO_LARGE",
                    )
                content, truncated = b"", False
                base = name.rsplit("/", 1)[-1]
                if reads(name) or reads(name.partition("/")[2]):
                    limit = HEAD_BYTES if base in HEAD_ONLY else limits.max_file_content
                    handle = archive.extractfile(member)
                    if handle is not None and (member.size <= limit or base in HEAD_ONLY):
                        content = handle.read(limit)
                        truncated = member.size > len(content)
                found.append((name, member.size, content, truncated))
    except (tarfile.TarError, zlib.error, EOFError, OSError) as exc:
        raise _refused(
            f"not a readable .tar.gz: {type(exc).__name__}: {str(exc)[:120]}", "ARCHIVE_UNREADABLE"
        ) from None
    return _without_top_directory(found)


def _without_top_directory(found: list[tuple[str, int, bytes, bool]]) -> list[tuple[str, int, bytes, bool]]:
    tops = {path.split("/", 1)[0] for path, *_ in found}
    if len(tops) != 1 or any("/" not in path for path, *_ in found):
        return found
    return [(path.split("/", 1)[1], size, content, truncated) for path, size, content, truncated in found]
