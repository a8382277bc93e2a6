"""Redis keys of runs (one source for the coordinator and the workers).

devmesh:pipeline:run:{r}                 hash: the run (plan, definition, state, ...)
devmesh:pipeline:run:{r}:jobs            hash: job key -> JobRecord (JSON)
devmesh:pipeline:run:{r}:attempts        hash: `key#n` -> AttemptRecord (JSON); `key#n/bytes`,
                                         `key#n/trunc`: the log's size and whether it was cut
devmesh:pipeline:run:{r}:events          stream: state changes (`e`) and log lines (`k n l`)
devmesh:pipeline:run:{r}:log:{key#n}     list: an attempt's log lines
devmesh:pipeline:run:{r}:lease:{key}     the running attempt's lease (its fencing token)
devmesh:pipeline:run:{r}:artifacts       hash: artifact id -> ArtifactRecord (JSON)
devmesh:pipeline:{p}:pipeline:{id}:runs  zset: the pipeline's runs by creation time
devmesh:pipeline:runs:work               stream (group `coordinators`): runs to decide on
devmesh:pipeline:runs:timers             zset: run id -> when to decide on it again (ms)
devmesh:pipeline:runs:queues             set: label sets that have a queue
devmesh:pipeline:runs:queue:{labels}     stream (group `workers`): attempts to run
devmesh:pipeline:runs:group:{group}      list: the runs of a concurrency group; the head runs
devmesh:pipeline:runs:request:{id}       the run a request id started (a day)
devmesh:pipeline:runs:workers            hash: worker id -> its labels and last heartbeat
devmesh:pipeline:runs:by_creation        zset: every run by creation time (retention)
devmesh:pipeline:runs:worker_terms       hash: the coordinators' lease and artifact caps
devmesh:pipeline:runs:retention          the lease of the replica sweeping expired runs
"""

from __future__ import annotations

from services.pipeline.store import PREFIX, pipeline_key

WORK = f"{PREFIX}:runs:work"
TIMERS = f"{PREFIX}:runs:timers"
QUEUES = f"{PREFIX}:runs:queues"
WORKERS = f"{PREFIX}:runs:workers"
COORDINATORS = "coordinators"
WORKER_GROUP = "workers"
ANY_LABELS = "-"


def run(run_id: str) -> str:
    return f"{PREFIX}:run:{{{run_id}}}"


def jobs(run_id: str) -> str:
    return f"{run(run_id)}:jobs"


def attempts(run_id: str) -> str:
    return f"{run(run_id)}:attempts"


def events(run_id: str) -> str:
    return f"{run(run_id)}:events"


def log(run_id: str, attempt_field: str) -> str:
    return f"{run(run_id)}:log:{attempt_field}"


def lease(run_id: str, key: str) -> str:
    return f"{run(run_id)}:lease:{key}"


def pipeline_runs(project: str, pipeline: str) -> str:
    return f"{pipeline_key(project, pipeline)}:runs"


def labels_of(runs_on: tuple[str, ...] | list[str]) -> str:
    """The queue name of a job's labels (sorted, comma-joined; `-` for none)."""
    return ",".join(sorted(set(runs_on))) or ANY_LABELS


def queue(labels: str) -> str:
    return f"{PREFIX}:runs:queue:{labels}"


def group(name: str) -> str:
    return f"{PREFIX}:runs:group:{name}"


def request(request_id: str) -> str:
    return f"{PREFIX}:runs:request:{request_id}"


def artifacts(run_id: str) -> str:
    """hash: artifact id -> its ArtifactRecord (JSON)."""
    return f"{run(run_id)}:artifacts"


# zset: run id -> its creation time (us); the retention sweeper walks it oldest first.
RUNS_BY_CREATION = f"{PREFIX}:runs:by_creation"
# hash: what the coordinators tell the workers (the lease, the artifact caps).
WORKER_TERMS = f"{PREFIX}:runs:worker_terms"
# The lease a replica holds while it sweeps expired runs (one sweep at a time).
RETENTION_LEASE = f"{PREFIX}:runs:retention"
