"""Remediation policies (`remediationPolicies/{policy}`): which diagnoses propose a remediation on
their own. A policy matches diagnoses by category and by the target they are about (a glob or
a prefix), allows some action kinds, and has risk thresholds of its own; when a diagnosis is
stored, the first enabled policy (by id) that matches it proposes a remediation from the
diagnosis's typed suggestions (`RemediationTriggers.propose_for_diagnosis`).

Policies live in Redis as JSON of our own (one hash each: `version` and `body`, plus a sorted
set of ids), changed by compare-and-set so a stale etag never overwrites a newer policy.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import cache
from typing import Any

from services.debugger import remediation_plan
from services.debugger.diagnosis import Diagnosis
from services.debugger.remediation import ActionKind, Remediation
from services.debugger.remediation_plan import FROM_SUGGESTION, PIPELINE_JOB
from services.debugger.remediation_policy import Policy
from services.debugger.remediations import Remediations
from services.debugger.taxonomy import Category
from services.runtime import etags
from services.runtime.errors import Aborted, AlreadyExists, InvalidArgument, NotFound, ServiceError
from services.runtime.logging import get_logger
from services.runtime.redis_client import DurableWriter, Redis
from services.runtime.resource_names import ResourceName

POLICY = ResourceName("remediationPolicies/{remediation_policy}")
RESOURCE_TYPE = "debugger.devmesh.io/RemediationPolicy"
PREFIX = "devmesh:debugger"
INDEX = f"{PREFIX}:remediation-policies"
MAX_POLICIES = 1000
MAX_TARGETS = 32
MAX_DESCRIPTION_CHARS = 1024
UPDATABLE = frozenset(
    {
        "description",
        "categories",
        "targets",
        "actions",
        "threshold",
        "thresholds",
        "parameters",
        "execute_on_approval",
        "disabled",
    }
)
log = get_logger(__name__)

# KEYS: record, index. ARGV: expected version ('0': must not exist), new version, body, id, limit.
_WRITE = """
local current = redis.call('HGET', KEYS[1], 'version')
if ARGV[1] == '0' then
  if current then return 'exists' end
  if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[5]) then return 'full' end
elseif current ~= ARGV[1] then
  return current and 'stale' or 'missing'
end
redis.call('HSET', KEYS[1], 'version', ARGV[2], 'body', ARGV[3])
redis.call('ZADD', KEYS[2], 0, ARGV[4])
return 'ok'
"""
# KEYS: record, index. ARGV: expected version ('' : any), id.
_DELETE = """
local current = redis.call('HGET', KEYS[1], 'version')
if not current then return 'missing' end
if ARGV[1] ~= '' and current ~= ARGV[1] then return 'stale' end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[2])
return 'ok'
"""


@dataclass(frozen=True)
class RemediationPolicy:
    """One policy; `version` grows by one with every change (its etag)."""

    id: str
    targets: tuple[str, ...]
    actions: frozenset[ActionKind]
    categories: frozenset[Category] = frozenset()
    description: str = ""
    threshold: float = 0.0  # 0: the service's default
    thresholds: Mapping[str, float] = field(default_factory=dict)
    parameters: Mapping[str, str] = field(default_factory=dict)
    execute_on_approval: bool = False
    disabled: bool = False
    create_time_us: int = 0
    update_time_us: int = 0
    version: int = 1

    @property
    def name(self) -> str:
        return POLICY.format(self.id)

    def matches(self, category: Category, target: str) -> bool:
        """Whether a diagnosis of `category` about `target` is this policy's."""
        if self.disabled or (self.categories and category not in self.categories):
            return False
        return any(target_matches(pattern, target) for pattern in self.targets)

    def risk_policy(self, default: Policy) -> Policy:
        """The service's risk policy with this policy's thresholds over it."""
        return replace(
            default,
            default_threshold=self.threshold or default.default_threshold,
            thresholds={**default.thresholds, **self.thresholds},
        )


@cache
def _glob(pattern: str) -> re.Pattern[str]:
    parts = re.split(r"(\*\*|\*)", pattern)
    regex = "".join(".*" if p == "**" else "[^/]*" if p == "*" else re.escape(p) for p in parts)
    return re.compile(regex)


def target_matches(pattern: str, target: str) -> bool:
    """`pattern` is a prefix ending in `/`, or a glob (`*` in one segment, `**` across)."""
    if pattern.endswith("/") and "*" not in pattern:
        return target.startswith(pattern)
    return _glob(pattern).fullmatch(target) is not None


def check(policy: RemediationPolicy) -> None:
    """INVALID_ARGUMENT naming the field of `policy` that is wrong."""
    if len(policy.description) > MAX_DESCRIPTION_CHARS:
        raise InvalidArgument.for_field(
            "remediation_policy.description", f"longer than {MAX_DESCRIPTION_CHARS} characters"
        )
    if not policy.targets:
        raise InvalidArgument.for_field("remediation_policy.targets", "needs at least one target pattern")
    if len(policy.targets) > MAX_TARGETS:
        raise InvalidArgument.for_field("remediation_policy.targets", f"at most {MAX_TARGETS}")
    for index, pattern in enumerate(policy.targets):
        if not pattern or len(pattern) > remediation_plan.MAX_PARAMETER_CHARS or "***" in pattern:
            raise InvalidArgument.for_field(
                f"remediation_policy.targets[{index}]",
                f"must be a glob or a prefix ending in '/', 1-{remediation_plan.MAX_PARAMETER_CHARS} characters",
            )
    if not policy.actions:
        raise InvalidArgument.for_field("remediation_policy.actions", "needs at least one action kind")
    for name, value in [("threshold", policy.threshold), *policy.thresholds.items()]:
        path = (
            "remediation_policy.threshold"
            if name == "threshold"
            else f"remediation_policy.thresholds[{name[:64]!r}]"
        )
        if not 0.0 <= value <= 1.0 or value != value:
            raise InvalidArgument.for_field(path, "must be a number from 0 to 1")
        if name != "threshold" and not 0 < len(name) <= 63:
            raise InvalidArgument.for_field(path, "an environment name of 1-63 characters")
    if len(policy.parameters) > remediation_plan.MAX_PARAMETERS:
        raise InvalidArgument.for_field(
            "remediation_policy.parameters", f"at most {remediation_plan.MAX_PARAMETERS}"
        )
    for parameter, text in policy.parameters.items():
        if len(parameter) > 64 or len(text) > remediation_plan.MAX_PARAMETER_CHARS:
            raise InvalidArgument.for_field(f"remediation_policy.parameters[{parameter[:64]!r}]", "too long")
    if "delay" in policy.parameters:
        remediation_plan.delay_seconds(policy.parameters["delay"], "remediation_policy.parameters['delay']")


def to_json(policy: RemediationPolicy) -> str:
    record = asdict(policy)
    record["actions"] = sorted(a.value for a in policy.actions)
    record["categories"] = sorted(c.value for c in policy.categories)
    record["targets"] = list(policy.targets)
    return json.dumps(record, separators=(",", ":"))


def from_json(raw: bytes | str) -> RemediationPolicy:
    record: dict[str, Any] = json.loads(raw)
    record["actions"] = frozenset(ActionKind(a) for a in record["actions"])
    record["categories"] = frozenset(Category(c) for c in record["categories"])
    record["targets"] = tuple(record["targets"])
    return RemediationPolicy(**record)


def _key(policy_id: str) -> str:
    return f"{PREFIX}:remediation-policy:{policy_id}"


def _not_found(policy_id: str) -> NotFound:
    return NotFound(
        f"remediationPolicies/{policy_id} does not exist",
        resource_type=RESOURCE_TYPE,
        resource_name=POLICY.format(policy_id),
    )


def _now_us() -> int:
    return time.time_ns() // 1000


class RemediationPolicies:
    """The remediation policies: create, read, list, update (etag), delete."""

    def __init__(self, redis: Redis, durable: DurableWriter) -> None:
        self._redis = redis
        self._durable = durable

    async def create(self, policy_id: str, policy: RemediationPolicy) -> RemediationPolicy:
        """A new policy; ALREADY_EXISTS for a taken id."""
        POLICY.parse(POLICY.format(policy_id), "remediation_policy_id")
        now = _now_us()
        created = replace(policy, id=policy_id, create_time_us=now, update_time_us=now, version=1)
        check(created)
        await self._write(created, None)
        return created

    async def get(self, name: str, field: str = "name") -> RemediationPolicy:
        """A policy by name."""
        (policy_id,) = POLICY.parse(name, field)
        raw = await self._redis.hget(_key(policy_id), "body")
        if raw is None:
            raise _not_found(policy_id)
        return from_json(raw)

    async def page(self, after_id: str, size: int) -> tuple[list[RemediationPolicy], str | None]:
        """Up to `size` policies after `after_id` (by id), and the id the next page starts after."""
        low = f"({after_id}" if after_id else "-"
        ids = await self._redis.zrangebylex(INDEX, low, "+", start=0, num=size + 1)
        found: list[RemediationPolicy] = []
        for raw_id in ids[:size]:
            policy_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
            raw = await self._redis.hget(_key(policy_id), "body")
            if raw is not None:
                found.append(from_json(raw))
        more = len(ids) > size and found
        return found, (found[-1].id if more else None)

    async def every(self) -> list[RemediationPolicy]:
        """Every policy, by id (at most MAX_POLICIES)."""
        found, _ = await self.page("", MAX_POLICIES)
        return found

    async def update(
        self, name: str, changes: RemediationPolicy, paths: Sequence[str], etag: str
    ) -> RemediationPolicy:
        """The policy with the fields `paths` names taken from `changes`; ABORTED for a stale etag."""
        unknown = [p for p in paths if p not in UPDATABLE]
        if unknown:
            raise InvalidArgument.for_field("update_mask", f"{unknown[0][:64]!r} is not an updatable field")
        before = await self.get(name, "remediation_policy.name")
        etags.check(etag, etags.of(before.version), before.name)
        after = replace(
            before,
            **{p: getattr(changes, p) for p in paths},
            update_time_us=_now_us(),
            version=before.version + 1,
        )
        check(after)
        await self._write(after, before)
        return after

    async def delete(self, name: str, etag: str) -> None:
        """Delete a policy (the remediations it proposed stay)."""
        policy = await self.get(name)
        etags.check(etag, etags.of(policy.version), policy.name)
        result = await self._redis.eval(_DELETE, 2, _key(policy.id), INDEX, str(policy.version), policy.id)
        outcome = result.decode() if isinstance(result, bytes) else str(result)
        if outcome == "missing":
            raise _not_found(policy.id)
        if outcome == "stale":
            raise Aborted(f"{policy.name} changed meanwhile; read it again", reason="CONCURRENT_CHANGE")
        await self._durable.confirm()

    async def _write(self, after: RemediationPolicy, before: RemediationPolicy | None) -> None:
        result = await self._redis.eval(
            _WRITE,
            2,
            _key(after.id),
            INDEX,
            str(before.version) if before is not None else "0",
            str(after.version),
            to_json(after),
            after.id,
            str(MAX_POLICIES),
        )
        outcome = result.decode() if isinstance(result, bytes) else str(result)
        if outcome == "exists":
            raise AlreadyExists(
                f"{after.name} already exists", resource_type=RESOURCE_TYPE, resource_name=after.name
            )
        if outcome == "full":
            raise InvalidArgument.for_field("remediation_policy_id", f"at most {MAX_POLICIES} policies")
        if outcome == "missing":
            raise _not_found(after.id)
        if outcome == "stale":
            raise Aborted(f"{after.name} changed meanwhile; read it again", reason="CONCURRENT_CHANGE")
        await self._durable.confirm()


class RemediationTriggers:
    """Proposes remediations for new diagnoses, as the policies say."""

    def __init__(self, policies: RemediationPolicies, remediations: Remediations) -> None:
        self._policies = policies
        self._remediations = remediations

    async def propose_for_diagnosis(self, diagnosis: Diagnosis) -> Remediation | None:
        """THE trigger: call it once a new diagnosis is stored. The first enabled policy (by id)
        that matches the diagnosis's category and target (its pipeline job) proposes a
        remediation from the suggestions whose action kinds it allows; None when no policy
        matches or nothing it allows is suggested. Never raises for the caller's sake: a
        diagnosis is stored whether or not a remediation follows."""
        target = diagnosis.job
        try:
            PIPELINE_JOB.parse(target, "job")
        except InvalidArgument:
            return None  # only diagnoses of pipeline jobs name a target a policy can act on
        try:
            for policy in await self._policies.every():
                if not policy.matches(diagnosis.category, target):
                    continue
                allowed = [s for s in diagnosis.remediations if FROM_SUGGESTION.get(s.type) in policy.actions]
                if not allowed:
                    continue
                plan = remediation_plan.from_suggestions(
                    f"diagnoses/{diagnosis.id}", allowed, target, dict(policy.parameters)
                )
                made = await self._remediations.propose(
                    policy.name,
                    diagnosis=f"diagnoses/{diagnosis.id}",
                    target=target,
                    parameters={},
                    plan=plan,
                    reason=f"{policy.name} matched a {diagnosis.category.value} diagnosis of {target}",
                    risk_policy=policy.risk_policy(self._remediations.policy),
                    policy=policy.name,
                    execute_on_approval=policy.execute_on_approval,
                )
                log.info(
                    "remediation.triggered", remediation=made.id, policy=policy.id, diagnosis=diagnosis.id
                )
                return made
        except ServiceError as error:
            log.warning("remediation.trigger_failed", diagnosis=diagnosis.id, reason=error.reason)
        return None
