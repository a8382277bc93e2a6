"""Diagnoses and feedback in Redis, as JSON of our own.

A diagnosis is one key (`devmesh:debugger:diagnosis:{id}`, kept for `retention` seconds)
and an entry in the indexes it is listed by: every diagnosis, its job's, its category's
(sorted sets scored by creation time). Feedback is one key per signature: the category a
person gave for that failure, which later diagnoses with the signature take. A job attempt's
own diagnosis (the first made of it) is named by one key per attempt, claimed with SET NX so
that replicas following the same failures make it once.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from services.debugger import extraction
from services.debugger.diagnosis import Diagnosis, PodFindings, RootCause
from services.debugger.taxonomy import Category, Remediation, RemediationType
from services.runtime.errors import NotFound
from services.runtime.redis_client import DurableWriter, Redis

PREFIX = "devmesh:debugger"
INDEX = f"{PREFIX}:diagnoses"
FEEDBACK_PREFIX = f"{PREFIX}:feedback"


def diagnosis_key(diagnosis_id: str) -> str:
    return f"{PREFIX}:diagnosis:{diagnosis_id}"


def _job_index(job: str) -> str:
    return f"{INDEX}:job:{job}"


def _category_index(category: Category) -> str:
    return f"{INDEX}:category:{category.value}"


def attempt_key(job: str, attempt: int) -> str:
    """Which diagnosis is a job attempt's own (or `pending:{id}` while one is being made)."""
    return f"{PREFIX}:attempt:{job}#{attempt}"


PENDING = "pending:"


def to_json(diagnosis: Diagnosis) -> str:
    """A diagnosis as stored."""
    record = asdict(diagnosis)
    record["category"] = diagnosis.category.value
    record["remediations"] = [
        {"type": r.type.value, "reason": r.reason, "parameters": r.parameters} for r in diagnosis.remediations
    ]
    return json.dumps(record, separators=(",", ":"))


def from_json(raw: bytes | str) -> Diagnosis:
    """A stored diagnosis (JSON only)."""
    record: dict[str, Any] = json.loads(raw)
    record["category"] = Category(record["category"])
    record["root_causes"] = [RootCause(**r) for r in record["root_causes"]]
    record["failing_tests"] = [extraction.FailingTest(**t) for t in record["failing_tests"]]
    record["locations"] = [extraction.Location(**loc) for loc in record["locations"]]
    record["packages"] = [extraction.Package(**p) for p in record["packages"]]
    record["templates"] = [tuple(t) for t in record["templates"]]
    record["remediations"] = [
        Remediation(RemediationType(r["type"]), r["reason"], dict(r["parameters"]))
        for r in record["remediations"]
    ]
    pod = record.get("pod")
    record["pod"] = PodFindings(**{**pod, "events": tuple(pod["events"])}) if pod else None
    return Diagnosis(**record)


class DiagnosisStore:
    """Diagnoses and feedback of the debugger."""

    def __init__(self, redis: Redis, durable: DurableWriter, *, retention_s: int) -> None:
        self._redis = redis
        self._durable = durable
        self._retention_s = retention_s

    async def save(self, diagnosis: Diagnosis) -> None:
        """Keep a diagnosis and list it (one transaction)."""
        score = {diagnosis.id: diagnosis.create_time_us}
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(diagnosis_key(diagnosis.id), to_json(diagnosis), ex=self._retention_s)
            pipe.zadd(INDEX, score)
            pipe.zadd(_category_index(diagnosis.category), score)
            if diagnosis.job:
                pipe.zadd(_job_index(diagnosis.job), score)
            await pipe.execute()
        await self._durable.confirm()

    async def get(self, diagnosis_id: str) -> Diagnosis:
        """A diagnosis, or NOT_FOUND."""
        raw = await self._redis.get(diagnosis_key(diagnosis_id))
        if raw is None:
            raise NotFound(
                f"diagnoses/{diagnosis_id} does not exist (or has expired)",
                resource_type="debugger.devmesh.io/Diagnosis",
                resource_name=f"diagnoses/{diagnosis_id}",
            )
        return from_json(raw)

    async def page(
        self, *, job: str, category: Category | None, before_us: int | None, size: int
    ) -> tuple[list[Diagnosis], int | None]:
        """Up to `size` diagnoses older than `before_us`, newest first, and where the next page
        starts (None on the last page). Expired diagnoses leave their index entries behind;
        they are skipped and removed here."""
        index = _job_index(job) if job else _category_index(category) if category is not None else INDEX
        found: list[Diagnosis] = []
        top = f"({before_us}" if before_us is not None else "+inf"
        while len(found) < size:
            entries = await self._redis.zrevrangebyscore(
                index, top, "-inf", start=0, num=size + 1, withscores=True
            )
            if not entries:
                return found, None
            ids = [member.decode() if isinstance(member, bytes) else member for member, _ in entries]
            raws = await self._redis.mget([diagnosis_key(i) for i in ids])
            for diagnosis_id, raw in zip(ids, raws, strict=True):
                if raw is None:
                    await self._redis.zrem(index, diagnosis_id)
                    continue
                diagnosis = from_json(raw)
                if job and category is not None and diagnosis.category is not category:
                    continue
                if len(found) == size:
                    return found, int(found[-1].create_time_us)
                found.append(diagnosis)
            top = f"({int(entries[-1][1])}"
            if len(entries) <= size:
                return found, None
        return found, None

    async def record_feedback(self, signature: str, feedback: dict[str, Any]) -> None:
        """Keep the feedback for a signature (the latest wins)."""
        await self._redis.set(f"{FEEDBACK_PREFIX}:{signature}", json.dumps(feedback, separators=(",", ":")))
        await self._durable.confirm()

    async def feedback(self, signature: str) -> dict[str, Any] | None:
        """The feedback given for a signature, if any."""
        raw = await self._redis.get(f"{FEEDBACK_PREFIX}:{signature}")
        return json.loads(raw) if raw is not None else None

    async def claim_attempt(self, job: str, attempt: int, diagnosis_id: str, lease_s: int) -> str | None:
        """Claim the making of an attempt's own diagnosis (as `diagnosis_id`, for `lease_s` seconds
        unless it is attached sooner). None: claimed; else what holds the attempt (a diagnosis
        id, or `pending:{id}` while another replica makes it)."""
        key = attempt_key(job, attempt)
        if await self._redis.set(key, PENDING + diagnosis_id, nx=True, ex=lease_s):
            return None
        held = await self._redis.get(key)
        if held is None:  # expired in between: try once more
            if await self._redis.set(key, PENDING + diagnosis_id, nx=True, ex=lease_s):
                return None
            held = await self._redis.get(key)
        return held.decode() if isinstance(held, bytes) else str(held or "")

    async def release_attempt(self, job: str, attempt: int, diagnosis_id: str) -> None:
        """Give up a claim (the diagnosis could not be made)."""
        key = attempt_key(job, attempt)
        if await self._redis.get(key) == (PENDING + diagnosis_id).encode():
            await self._redis.delete(key)

    async def attach(self, job: str, attempt: int, diagnosis_id: str, *, only_if_free: bool) -> bool:
        """Make `diagnosis_id` the attempt's own diagnosis (`only_if_free`: unless it has one or
        one is being made); whether it now is."""
        done = await self._redis.set(
            attempt_key(job, attempt), diagnosis_id, nx=only_if_free, ex=self._retention_s
        )
        if done:
            await self._durable.confirm()
        return bool(done)

    async def of_attempt(self, job: str, attempt: int) -> str:
        """The id of the attempt's own diagnosis, `pending:{id}` while it is made, or ''."""
        held = await self._redis.get(attempt_key(job, attempt))
        return held.decode() if isinstance(held, bytes) else ""
