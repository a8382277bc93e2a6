"""What other code reacts to when the debugger makes a diagnosis (remediation triggers, for one).

Every new diagnosis, once stored, is handed to each subscribed callback (in process, on the
replica that made it) and appended to the Redis stream `STREAM` (for any replica or service:
read it with a consumer group of your own). A failing callback is logged and does not stop
the others, nor the call that made the diagnosis.

Stream entries' fields: `diagnosis` (`diagnoses/{id}`), `source` (`log`, `pod`, `job`),
`job` and `attempt` (for `job`), `first_of_attempt` (`1`: the attempt's own diagnosis, made
once: a remediation trigger wants these, not every AnalyzeJob), `automatic` (`1`: made from
the pipeline's failures stream, not asked for), `category`, `transient` (`1`/`0`),
`confidence`, `signature`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from services.debugger.diagnosis import Diagnosis
from services.runtime.logging import get_logger
from services.runtime.redis_client import Redis

log = get_logger(__name__)

STREAM = "devmesh:debugger:events:diagnoses"
MAX_LEN = 10_000
LOG = "log"
POD = "pod"
JOB = "job"


@dataclass(frozen=True)
class NewDiagnosis:
    """A diagnosis just made and stored."""

    diagnosis: Diagnosis
    source: str  # LOG, POD or JOB
    job: str = ""  # the job's resource name (JOB)
    attempt: int = 0  # the job's attempt (JOB)
    first_of_attempt: bool = False  # the attempt's own diagnosis, made once (JOB)
    automatic: bool = False  # made from the pipeline's failures stream


Callback = Callable[[NewDiagnosis], Awaitable[None]]


class DiagnosisHooks:
    """The subscribers to new diagnoses, and the stream they are appended to."""

    def __init__(self, redis: Redis | None) -> None:
        self._redis = redis
        self._callbacks: list[Callback] = []

    def subscribe(self, callback: Callback) -> None:
        """Call `callback` with every new diagnosis from now on."""
        self._callbacks.append(callback)

    async def fire(self, new: NewDiagnosis) -> None:
        """Tell the subscribers and the stream about `new`."""
        if self._redis is not None:
            try:
                await self._redis.xadd(STREAM, _fields(new), maxlen=MAX_LEN, approximate=True)
            except Exception as exc:
                log.warning("debugger.hooks.stream_failed", error=type(exc).__name__)
        for callback in list(self._callbacks):
            try:
                await callback(new)
            except Exception as exc:
                log.warning(
                    "debugger.hooks.callback_failed",
                    callback=getattr(callback, "__qualname__", "?"),
                    error=type(exc).__name__,
                )


def _fields(new: NewDiagnosis) -> dict[str | bytes, str | bytes | int | float]:
    d = new.diagnosis
    return {
        "diagnosis": f"diagnoses/{d.id}",
        "source": new.source,
        "job": new.job,
        "attempt": new.attempt,
        "first_of_attempt": int(new.first_of_attempt),
        "automatic": int(new.automatic),
        "category": d.category.value,
        "transient": int(d.transient),
        "confidence": d.confidence,
        "signature": d.signature,
    }
