"""The worker's `artifact` steps: collect the declared paths from the workspace, pack them
into a .tar.gz (tarfile), and store it on the pipeline service (UploadArtifact).

Nothing outside the job's workspace leaves the machine: a pattern that is absolute or climbs
with `..` is refused, and so is any match or file under a matched directory whose real path
(symlinks followed) is outside the workspace. Symlinks that stay inside are packed as links.
The archive is capped while it is written (the coordinators' caps, per artifact and per
attempt): packing stops at the cap, and the step fails the job with ARTIFACT_FAILED and says
which cap, as it does for any other reason the artifact could not be stored.
"""

from __future__ import annotations

import asyncio
import os
import re
import tarfile
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, Protocol

from devmesh.pipeline.v1 import model_pb2, runs_pb2
from devmesh.pipeline.v1.runs_pb2_grpc import RunServiceStub
from services.pipeline.runs import keys, states, worker_terms
from services.pipeline.runs.plan import JobPlan
from services.pipeline.worker import pipeline_client
from services.runtime.redis_client import Redis

if TYPE_CHECKING:
    from services.pipeline.worker.agent import Taken

MAX_FILES = 100_000
_NOT_ID = re.compile(r"[^a-z0-9._-]+")


class ArtifactStepFailed(Exception):
    """The artifact could not be stored; the message is the attempt's reason."""


class ArchiveTooLarge(ArtifactStepFailed):
    pass


def artifact_id(name: str, job: JobPlan, varies_with_matrix: bool) -> str:
    """The artifact's id in the run: its name (placeholders replaced already) made an id, and
    for a matrix combination whose name does not vary with the matrix, `.<index>` after it."""
    found = _NOT_ID.sub("-", name.lower()).strip("-._")[:120] or "artifact"
    if job.matrix and "." in job.key and not varies_with_matrix:
        found = f"{found}.{job.key.rsplit('.', 1)[1]}"
    while ".." in found:
        found = found.replace("..", ".")
    return found


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def collect(workspace: Path, base: Path, patterns: Sequence[str]) -> list[tuple[Path, str]]:
    """(path, name in the archive) of every file, directory and link the patterns match under
    `base` (a `!pattern` leaves out what it matches), in order; ArtifactStepFailed for anything
    that would leave the workspace."""
    root = workspace.resolve()
    base = base.resolve()
    if not _inside(base, root):
        raise ArtifactStepFailed("the artifact's base directory is outside the workspace")
    found: dict[str, Path] = {}
    negatives = [n[1:] for n in patterns if n.startswith("!") and _relative(n[1:])]
    excluded = {str(p.relative_to(base)) for neg in negatives for p in base.glob(neg)}
    for pattern in patterns:
        if pattern.startswith("!"):
            continue
        if not _relative(pattern):
            raise ArtifactStepFailed(f"path {pattern!r} escapes the workspace (absolute or `..`)")
        matches = sorted(base.glob(pattern)) if pattern not in ("", ".") else [base]
        for match in matches:
            for path in _walk(match):
                if not _inside(path.resolve(), root) or (path.is_symlink() and not _link_inside(path, root)):
                    raise ArtifactStepFailed(
                        f"path {_shown(path, base)!r} leads outside the workspace (a symlink out of it)"
                    )
                name = _shown(path, base)
                if name in excluded or any(name.startswith(f"{e}/") for e in excluded):
                    continue
                found.setdefault(name, path)
                if len(found) > MAX_FILES:
                    raise ArtifactStepFailed(f"the artifact holds more than {MAX_FILES} files")
    return [(path, name) for name, path in found.items()]


def _relative(pattern: str) -> bool:
    pure = PurePosixPath(pattern)
    return not (pure.is_absolute() or ".." in pure.parts or pattern.startswith("~"))


def _link_inside(link: Path, root: Path) -> bool:
    target = Path(os.readlink(link))
    resolved = (link.parent / target).resolve() if not target.is_absolute() else target.resolve()
    return _inside(resolved, root)


def _walk(match: Path) -> list[Path]:
    if match.is_symlink() or not match.is_dir():
        return [match]
    found = [match]
    for folder, dirs, files in os.walk(match, followlinks=False):
        dirs.sort()
        for entry in [*sorted(dirs), *sorted(files)]:
            found.append(Path(folder) / entry)
    return found


def _shown(path: Path, base: Path) -> str:
    try:
        return str(path.relative_to(base)) or "."
    except ValueError:
        return str(path)


class _CappedFile:
    """What tarfile writes the compressed archive through: it stops at the cap."""

    def __init__(self, handle: IO[bytes], cap: int, what: str) -> None:
        self.handle = handle
        self.cap = cap
        self.what = what
        self.size = 0

    def write(self, data: bytes) -> int:
        self.size += len(data)
        if self.size > self.cap:
            raise ArchiveTooLarge(f"{self.what} is over the cap of {self.cap} bytes")
        return self.handle.write(data)

    def flush(self) -> None:
        self.handle.flush()


def pack(files: Sequence[tuple[Path, str]], target: Path, cap: int, what: str) -> int:
    """Write `files` as a .tar.gz to `target`, at most `cap` bytes; its size."""
    with target.open("wb") as handle:
        capped = _CappedFile(handle, cap, what)
        with tarfile.open(fileobj=capped, mode="w:gz") as archive:  # type: ignore[call-overload]
            for path, name in files:
                if name == ".":
                    continue
                archive.add(str(path), arcname=name, recursive=False)
    return target.stat().st_size


class AttemptLike(Protocol):
    """What an artifact step needs of the attempt that runs it."""

    workspace: Path
    number: int
    artifact_bytes: int  # stored by this attempt so far
    taken: Taken


@dataclass(frozen=True)
class StepContext:
    runs: RunServiceStub | None  # the pipeline service (None: the worker has no address)
    redis: Redis
    line: Callable[[str], None]  # a line for the job's log
    deadline: float  # monotonic


async def run_step(
    step: model_pb2.ArtifactStep,
    name: str,
    attempt: AttemptLike,
    job: JobPlan,
    base: Path,
    context: StepContext,
) -> tuple[str, str, int, str] | None:
    """Collect, pack and store one artifact (`name`: the step's, placeholders replaced); the
    attempt's failure, or None when it is stored."""
    wanted = artifact_id(name, job, "matrix." in step.name)
    try:
        stored, size, entries = await _store(step, wanted, attempt, base, context)
    except (ArtifactStepFailed, pipeline_client.UploadRefused) as failure:
        context.line(f"artifact {wanted} not stored: {failure}")
        return states.FAILED, states.ARTIFACT_FAILED, 0, f"artifact {wanted}: {failure}"
    attempt.artifact_bytes += size
    context.line(f"artifact {stored.name}: {entries} entries, {size} bytes, sha256 {stored.sha256}")
    return None


async def _store(
    step: model_pb2.ArtifactStep, wanted: str, attempt: AttemptLike, base: Path, context: StepContext
) -> tuple[runs_pb2.Artifact, int, int]:
    terms = await worker_terms.read(context.redis)
    files = await asyncio.to_thread(collect, attempt.workspace, base, list(step.paths))
    if not [f for f in files if f[1] != "."]:
        raise ArtifactStepFailed(f"no file matches {', '.join(step.paths)}")
    room = terms.job_artifacts_bytes - attempt.artifact_bytes
    cap, what = (
        (terms.artifact_bytes, "the archive")
        if terms.artifact_bytes <= room
        else (max(room, 0), f"the artifacts of attempt {attempt.number} together")
    )
    handle, temp = tempfile.mkstemp(prefix=".artifact-", suffix=".tar.gz", dir=attempt.workspace.parent)
    os.close(handle)
    archive = Path(temp)  # beside the workspace, never in it (a `**` would pack it)
    try:
        size = await asyncio.to_thread(pack, files, archive, cap, what)
        project, pipeline = await context.redis.hmget(keys.run(attempt.taken.run), ["project", "pipeline"])
        if project is None or pipeline is None:
            raise ArtifactStepFailed("the run no longer exists")
        parent = f"projects/{project.decode()}/pipelines/{pipeline.decode()}/runs/{attempt.taken.run}"
        upload = pipeline_client.ArtifactUpload(
            parent, wanted, attempt.taken.key, attempt.number, attempt.taken.fence, len(files)
        )
        if context.runs is None:
            raise ArtifactStepFailed(
                "this worker has no connection to the pipeline service (DEVMESH_WORKER_PIPELINE_ADDR)"
            )
        stored = await pipeline_client.upload_artifact(
            context.runs, upload, archive, context.deadline - time.monotonic()
        )
    finally:
        await asyncio.to_thread(archive.unlink, missing_ok=True)
    return stored, size, len(files)
