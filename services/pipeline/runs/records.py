"""The stored form of a run's jobs and attempts: small JSON objects, one per hash field, that
both the coordinator (Python) and the transition scripts (Lua, cjson) read and write."""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass, replace
from typing import Any

from services.pipeline.runs import states


@dataclass(frozen=True)
class JobRecord:
    """A job's current state. Field names are short: the scripts share them."""

    s: str = states.PENDING  # state
    n: int = 0  # attempts made so far (the current one's number)
    f: int = 0  # fencing token of the current attempt: only its worker may report
    r: str = ""  # why it was skipped, cancelled or failed
    c: int = 0  # 1: its current attempt is asked to stop (cancel)
    d: int = 1  # 0: an attempt just ended and the coordinator has not decided on a retry
    due: int = 0  # ms: RETRY_WAIT until then; WAITING_FOR_APPROVAL expires then (0: never)
    rs: str = ""  # the last attempt's reason (an AttemptReason name)
    x: int = 0  # the last attempt's exit status
    ap: int = 0  # 1: its gate was approved

    def dump(self) -> str:
        return json.dumps(self.__dict__, separators=(",", ":"))

    @classmethod
    def load(cls, raw: bytes | str | None) -> JobRecord:
        if not raw:
            return _PENDING
        return _load_job(raw if isinstance(raw, str) else raw.decode())

    def but(self, **changes: Any) -> JobRecord:
        return replace(self, **changes)


@dataclass(frozen=True)
class AttemptRecord:
    """One attempt; written when it is queued, completed once when it ends, then never again."""

    state: str = states.QUEUED
    reason: str = ""
    exit: int = 0
    msg: str = ""
    worker: str = ""
    qt: int = 0  # us: queued
    st: int = 0  # us: started
    et: int = 0  # us: ended
    trunc: int = 0  # 1: the log reached its cap

    def dump(self) -> str:
        data: dict[str, Any] = asdict(self)
        for name in _TIMES:
            data[name] = str(data[name])
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def load(cls, raw: bytes | str | None) -> AttemptRecord:
        if not raw:
            return cls()
        data = {k: v for k, v in json.loads(raw).items() if k in cls.__dataclass_fields__}
        for name in _TIMES:
            data[name] = int(data.get(name) or 0)
        return cls(**data)


_TIMES = ("qt", "st", "et")  # us: kept as strings in JSON (cjson keeps 14 digits of a number)


PENDING = JobRecord()  # a job no attempt was made of: shared, as records are immutable
_PENDING = PENDING
_JOB_FIELDS = frozenset(JobRecord.__dataclass_fields__)


@functools.lru_cache(maxsize=1 << 16)
def _load_job(raw: str) -> JobRecord:
    # Records are immutable and a run's jobs share few distinct ones (1,000 `SUCCEEDED`
    # attempts #1 are one string): one parse each, not one per job per decision.
    return JobRecord(**{k: v for k, v in json.loads(raw).items() if k in _JOB_FIELDS})


def attempt_field(key: str, number: int) -> str:
    return f"{key}#{number}"
