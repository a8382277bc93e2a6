"""Whether a failed attempt is tried again, and after how long.

Only failures the pipeline declares transient are retried: the exit codes it lists, timeouts,
lost workers; or, with `on: transient`, what the failure classifier says. The classifier is
an interface so that the debugger service's diagnosis plugs in (`debugger_client`); the
default one has no opinion, so nothing beyond the declared rules is transient. A classifier
that asks another service is wrapped in `Bounded`: it answers within a timeout or has no
opinion, so a slow or missing debugger never holds a run up.
"""

from __future__ import annotations

import asyncio
import random
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

from services.pipeline.runs import states
from services.pipeline.runs.plan import RetryPolicy
from services.pipeline.runs.records import JobRecord
from services.runtime.logging import get_logger

log = get_logger(__name__)

# A worker that shut down handed its job back: not the job's fault, so tried again whatever
# the policy says, this many times at most.
HAND_BACKS = 3


@dataclass(frozen=True)
class Failure:
    """What the classifier is shown of a failed attempt."""

    run: str  # the run's resource name
    job: str  # the job's key
    attempt: int
    state: str
    reason: str
    exit_code: int
    message: str


class FailureClassifier(Protocol):
    """Decides whether a failure is transient (worth a retry) for `on: transient` policies."""

    async def is_transient(self, failure: Failure) -> bool: ...


class NoClassifier:
    """The default: no failure is transient beyond what the policy's own rules say."""

    async def is_transient(self, failure: Failure) -> bool:
        return False


class Bounded:
    """A classifier's verdict within `timeout_s`, else none (False: the rules alone decide).

    A decision on a run can be made several times (conflicts, a replica taking over): each
    attempt's verdict is kept (the last `keep`), so the classifier is asked once per attempt
    when it answered, and again only when it did not."""

    def __init__(self, inner: FailureClassifier, timeout_s: float, keep: int = 4096) -> None:
        self.inner = inner
        self.timeout_s = timeout_s
        self.keep = keep
        self._verdicts: OrderedDict[tuple[str, str, int], bool] = OrderedDict()

    async def is_transient(self, failure: Failure) -> bool:
        key = (failure.run, failure.job, failure.attempt)
        if key in self._verdicts:
            return self._verdicts[key]
        try:
            verdict = await asyncio.wait_for(self.inner.is_transient(failure), self.timeout_s)
        except Exception as exc:  # TimeoutError included: no opinion
            log.warning(
                "pipeline.runs.classifier_failed",
                run=failure.run,
                job=failure.job,
                attempt=failure.attempt,
                error=type(exc).__name__,
            )
            return False
        self._verdicts[key] = verdict
        while len(self._verdicts) > self.keep:
            self._verdicts.popitem(last=False)
        return verdict


def matches_rules(policy: RetryPolicy, record: JobRecord) -> bool:
    """Whether the policy's declared rules call this failed attempt transient."""
    if record.s not in (states.FAILED, states.TIMED_OUT):
        return False
    if policy.any_failure:
        return True
    if record.rs == states.TIMEOUT or record.s == states.TIMED_OUT:
        return policy.timeout
    if record.rs == states.WORKER_LOST:
        return policy.infrastructure
    if record.rs == states.EXIT_CODE:
        return record.x in policy.exit_codes
    return False


def should_retry(policy: RetryPolicy, record: JobRecord, classified_transient: bool) -> bool:
    """Whether to make another attempt after `record`'s ended one."""
    if record.rs == states.HANDED_BACK:
        return record.n <= policy.limit + HAND_BACKS
    if record.n > policy.limit:
        return False
    if matches_rules(policy, record):
        return True
    return policy.transient and record.s in (states.FAILED, states.TIMED_OUT) and classified_transient


def wants_classifier(policy: RetryPolicy, record: JobRecord) -> bool:
    """Whether deciding needs the classifier's verdict (the rules alone do not retry)."""
    return (
        policy.transient
        and record.n <= policy.limit
        and record.s in (states.FAILED, states.TIMED_OUT)
        and not matches_rules(policy, record)
    )


def backoff_s(policy: RetryPolicy, attempt: int, rng: random.Random) -> float:
    """The wait before attempt `attempt + 1`: `initial * factor^(attempt-1)`, at most `max`,
    with ±20% jitter (so retries of many jobs do not arrive together), never above `max`."""
    if policy.initial_s <= 0:
        return 0.0
    base = min(policy.max_s, policy.initial_s * policy.factor ** max(0, attempt - 1))
    return min(policy.max_s, base * rng.uniform(0.8, 1.2))
