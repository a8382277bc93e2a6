"""The worker's `cache` steps, with GitHub Actions' semantics.

Where the step stands in the job, it computes the key (`<prefix>-<os>-<arch>-<hash of the key
files>`) and restores the project's entry of that key, or else the newest whose key starts
with `<prefix>-<os>-<arch>-` (a restore-key prefix). After the job's steps all succeeded, it
saves the paths under the key unless the key was an exact hit (an entry is immutable). A cache
that cannot be restored or saved (none, over the cap, refused) is said in the log and never
fails the job, as on GitHub.

Paths are relative to the checkout (or `~/...`: the workspace, the steps' HOME); the archive
names members relative to the workspace. Packing follows the artifact steps' rules (nothing
outside the workspace, no symlink out of it). Unpacking checks every member before it writes
one: a member that is absolute, climbs with `..`, is a device, or links out of the workspace
refuses the whole archive; then tarfile's `data` filter extracts it, which checks again.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import platform
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from devmesh.pipeline.v1 import model_pb2
from devmesh.pipeline.v1.runs_pb2_grpc import RunServiceStub
from services.pipeline.worker import artifacts, caches_client, pipeline_client, process

UNKNOWN_CAP = 1 << 40  # the service did not say its cap: it refuses past it itself


class ArchiveRefused(Exception):
    """The archive holds a member that would land outside the workspace; nothing was written."""


def platform_tag() -> str:
    return f"{platform.system().lower()}-{platform.machine().lower()}"


def key_of(step: model_pb2.CacheStep, base: Path, tag: str) -> tuple[str, str]:
    """(the key, the restore-key prefix): the files the key_files globs match under `base`,
    hashed by name and content."""
    prefix = step.key_prefix.lstrip("._-") or "cache"
    digest = hashlib.sha256()
    matched = sorted({p for pattern in step.key_files for p in base.glob(pattern) if p.is_file()})
    for path in matched:
        digest.update(str(path.relative_to(base)).encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    restore_prefix = f"{prefix}-{tag}-"
    return f"{restore_prefix}{digest.hexdigest()[:32]}", restore_prefix


def workspace_patterns(paths: list[str], workspace: Path, cwd: Path) -> list[str]:
    """The step's paths as patterns relative to the workspace (`~/x` is the workspace's)."""
    below = cwd.resolve().relative_to(workspace.resolve())
    found = []
    for path in paths:
        if path.startswith("~/"):
            found.append(path[2:])
        else:
            found.append(str(below / path) if str(below) != "." else path)
    return found


def check_members(archive: tarfile.TarFile, root: Path, limit: int) -> list[tarfile.TarInfo]:
    """Every member, each checked to stay inside `root`; ArchiveRefused for the first that
    does not."""
    members = []
    for member in archive:
        members.append(member)
        if len(members) > limit:
            raise ArchiveRefused(f"more than {limit} members")
        pure = PurePosixPath(member.name)
        if pure.is_absolute() or ".." in pure.parts or not member.name:
            raise ArchiveRefused(f"member {member.name[:120]!r} escapes the workspace")
        if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
            raise ArchiveRefused(f"member {member.name[:120]!r} is not a file, directory or link")
        if member.issym() or member.islnk():
            link = PurePosixPath(member.linkname)
            start = root / pure.parent if member.issym() else root
            target = Path(os.path.normpath(start / link))
            if link.is_absolute() or not (target == root or root in target.parents):
                raise ArchiveRefused(f"member {member.name[:120]!r} links outside the workspace")
    return members


def unpack(archive_path: Path, root: Path) -> int:
    """Extract the archive into `root` after checking all of its members; how many."""
    with tarfile.open(archive_path, mode="r:gz") as archive:
        members = check_members(archive, root.resolve(), artifacts.MAX_FILES)
        archive.extractall(root, members=members, filter="data")
    return len(members)


@dataclass
class CacheContext:
    runs: RunServiceStub | None
    call: caches_client.CacheCall
    workspace: Path
    line: Callable[[str], None]
    deadline: float  # monotonic
    run_as: process.RunAs | None


@dataclass
class PendingSave:
    """A cache step's save after the job, unless its key was an exact hit."""

    key: str
    patterns: list[str]
    exact_hit: bool
    max_bytes: int


def _scratch(context: CacheContext) -> Path:
    handle, temp = tempfile.mkstemp(prefix=".cache-", suffix=".tar.gz", dir=context.workspace.parent)
    os.close(handle)
    return Path(temp)  # beside the workspace, never in it (a `**` would pack it)


async def restore_step(step: model_pb2.CacheStep, cwd: Path, context: CacheContext) -> PendingSave:
    """Restore the step's cache into the workspace (if an entry matches); what to save later."""
    key, prefix = await asyncio.to_thread(key_of, step, cwd, platform_tag())
    pending = PendingSave(
        key, workspace_patterns(list(step.paths), context.workspace, cwd), False, UNKNOWN_CAP
    )
    if context.runs is None:
        context.line(f"cache {key}: not restored, the worker has no connection to the pipeline service")
        return pending
    scratch = _scratch(context)
    try:
        header = await caches_client.restore(
            context.runs, context.call, key, [prefix], scratch, context.deadline - time.monotonic()
        )
        pending.max_bytes = header.max_size_bytes or UNKNOWN_CAP
        if not header.key:
            context.line(f"cache {key}: no entry (a miss)")
            return pending
        count = await asyncio.to_thread(unpack, scratch, context.workspace)
        await asyncio.to_thread(process.hand_over, str(context.workspace), context.run_as)
        pending.exact_hit = header.exact_match
        how = "exact match" if header.exact_match else f"restore-key prefix {prefix}"
        context.line(f"cache {header.key}: restored ({how}), {count} entries, {header.size_bytes} bytes")
    except (pipeline_client.UploadRefused, ArchiveRefused, tarfile.TarError, OSError) as problem:
        context.line(f"cache {key}: not restored: {problem}")
    finally:
        await asyncio.to_thread(scratch.unlink, missing_ok=True)
    return pending


async def save_step(pending: PendingSave, context: CacheContext) -> None:
    """Save the cache after the job succeeded; every outcome is a log line, never a failure."""
    if pending.exact_hit:
        context.line(f"cache {pending.key}: restored by its exact key; not saved again")
        return
    if context.runs is None:
        context.line(f"cache {pending.key}: not saved, the worker has no connection to the pipeline service")
        return
    scratch = _scratch(context)
    try:
        files = await asyncio.to_thread(
            artifacts.collect, context.workspace, context.workspace, pending.patterns
        )
        if not [f for f in files if f[1] != "."]:
            context.line(f"cache {pending.key}: not saved, no file matches {', '.join(pending.patterns)}")
            return
        size = await asyncio.to_thread(artifacts.pack, files, scratch, pending.max_bytes, "the cache")
        entry = await caches_client.save(
            context.runs, context.call, pending.key, scratch, context.deadline - time.monotonic()
        )
        context.line(f"cache {entry.key}: saved, {len(files)} entries, {size} bytes")
    except (artifacts.ArtifactStepFailed, pipeline_client.UploadRefused, OSError) as problem:
        context.line(f"cache {pending.key}: not saved: {problem}")
    finally:
        await asyncio.to_thread(scratch.unlink, missing_ok=True)
