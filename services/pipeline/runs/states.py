"""Run and job states as they are stored (the names of the contract's enum values, without
their prefix), and which of them are final."""

from __future__ import annotations

# Runs.
QUEUED = "QUEUED"
RUNNING = "RUNNING"
SUCCEEDED = "SUCCEEDED"
FAILED = "FAILED"
CANCELLED = "CANCELLED"
TIMED_OUT = "TIMED_OUT"
RUN_FINAL = frozenset({SUCCEEDED, FAILED, CANCELLED, TIMED_OUT})

# Jobs (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED and TIMED_OUT as for runs).
PENDING = "PENDING"
WAITING_FOR_APPROVAL = "WAITING_FOR_APPROVAL"
RETRY_WAIT = "RETRY_WAIT"
SKIPPED = "SKIPPED"
REJECTED = "REJECTED"
# An attempt ended in one of these; the coordinator then decides: retry, or final.
ATTEMPT_ENDS = frozenset({SUCCEEDED, FAILED, CANCELLED, TIMED_OUT})
JOB_ENDS = ATTEMPT_ENDS | {SKIPPED, REJECTED}
# Ends that fail a run (unless the job allows failure).
FAILURES = frozenset({FAILED, TIMED_OUT, REJECTED})
ACTIVE = frozenset({QUEUED, RUNNING})

# Why an attempt ended (the contract's AttemptReason names, without their prefix).
EXIT_CODE = "EXIT_CODE"
TIMEOUT = "TIMEOUT"
WORKER_LOST = "WORKER_LOST"
CANCELLED_REASON = "CANCELLED"
SETUP_FAILED = "SETUP_FAILED"
RESOURCE_LIMIT = "RESOURCE_LIMIT"
HANDED_BACK = "HANDED_BACK"
ARTIFACT_FAILED = "ARTIFACT_FAILED"
