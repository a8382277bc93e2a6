"""Settings of the pipeline service (`DEVMESH_PIPELINE_*`): the caps on what a caller may hand
the generator, the runs' leases, the artifacts' caps, and how long finished runs are kept."""

from __future__ import annotations

from dataclasses import dataclass

from services.runtime.settings import parse_positive_float, parse_positive_int, setting


@dataclass(frozen=True)
class PipelineSettings:
    pipeline_max_snapshot_files: int = setting(
        20000, "Files a repository snapshot (or archive) may list.", parse=parse_positive_int
    )
    pipeline_max_file_content_bytes: int = setting(
        256 * 1024, "Largest content of one snapshot file detection reads.", parse=parse_positive_int
    )
    pipeline_max_snapshot_content_bytes: int = setting(
        3 * 1024 * 1024, "Contents of all snapshot files together, in bytes.", parse=parse_positive_int
    )
    pipeline_max_archive_bytes: int = setting(
        64 * 1024 * 1024,
        "Largest .tar.gz GeneratePipelineFromArchive accepts, compressed.",
        parse=parse_positive_int,
    )
    pipeline_max_archive_unpacked_bytes: int = setting(
        512 * 1024 * 1024,
        "Largest total size of an archive's entries once unpacked (a tar bomb stops here). Only "
        "the files detection reads are kept in memory; the rest is counted and skipped.",
        parse=parse_positive_int,
    )
    pipeline_lease_seconds: float = setting(
        10.0,
        "A worker that has not heartbeated its job for this long is lost: the job is reclaimed and "
        "retried as a new attempt (WORKER_LOST). Workers heartbeat at a third of it.",
        parse=parse_positive_float,
    )
    pipeline_claim_idle_seconds: float = setting(
        5.0,
        "Run decisions a replica took but did not finish (it died) are taken over by another "
        "replica after this long.",
        parse=parse_positive_float,
    )
    pipeline_classifier_timeout: float = setting(
        10.0,
        "Seconds the debugger may take to say whether a failed attempt of a job whose retry policy "
        "has `on: transient` is transient; past it (or without the debugger) the policy's own rules "
        "decide.",
        parse=parse_positive_float,
    )
    pipeline_artifact_max_bytes: int = setting(
        100 * 1024 * 1024,
        "Largest artifact (its .tar.gz) an artifact step may store; past it the step fails the job "
        "(ARTIFACT_FAILED). Workers learn it from the coordinators.",
        parse=parse_positive_int,
    )
    pipeline_job_artifacts_max_bytes: int = setting(
        500 * 1024 * 1024,
        "Largest total of the artifacts one attempt of a job may store.",
        parse=parse_positive_int,
    )
    pipeline_cache_max_bytes: int = setting(
        500 * 1024 * 1024,
        "Largest cache entry (its .tar.gz) a cache step may save; past it the entry is not saved "
        "and the job goes on (the log says so).",
        parse=parse_positive_int,
    )
    pipeline_project_caches_max_bytes: int = setting(
        5 * 1024 * 1024 * 1024,
        "Largest total of a project's cache entries; past it the least recently used go.",
        parse=parse_positive_int,
    )
    pipeline_cache_retention_seconds: float = setting(
        7 * 86400.0,
        "How long a cache entry nobody restores is kept (GitHub Actions: 7 days).",
        parse=parse_positive_float,
    )
    pipeline_run_retention_seconds: float = setting(
        30 * 86400.0,
        "How long a finished run is kept (its jobs, attempts, events and artifacts); then it is "
        "deleted and GetRun answers NOT_FOUND.",
        parse=parse_positive_float,
    )
    pipeline_log_retention_seconds: float = setting(
        30 * 86400.0,
        "How long the logs of a finished run are kept (at most as long as the run); then "
        "GetJobLog answers NOT_FOUND and StreamRunEvents replays state changes only.",
        parse=parse_positive_float,
    )
    pipeline_retention_sweep_seconds: float = setting(
        60.0, "How often a replica looks for runs past their retention.", parse=parse_positive_float
    )
