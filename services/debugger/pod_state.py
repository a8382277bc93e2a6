"""What a pod's state and events say, read from `kubectl get pod -o json` and
`kubectl get events -o json` as users collect them.

The reasons Kubernetes reports decide the category: a container waiting in CrashLoopBackOff
whose last run was OOMKilled ran out of memory (the container and its memory limit are
named); ImagePullBackOff, ErrImagePull and InvalidImageName are image pulls;
CreateContainerConfigError is configuration; an Unschedulable pod is configuration (its
requests fit no node); an Evicted pod is memory, disk or a lost node by the eviction's
message; failed probes (Unhealthy events) are a crash loop when the container restarts, a
timeout when the probe timed out. Events are masked of secrets like log lines (k8sgpt issue
#560: its masking skipped them). A collector that reads all this from a cluster's API would
produce the same two documents.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from services.debugger.diagnosis import Context, Diagnosis, PodFindings, diagnose
from services.debugger.log_reader import LogReader
from services.debugger.secret_masks import mask_text
from services.debugger.taxonomy import TRANSIENT, Category, RemediationType, remediations
from services.debugger.template_miner import TemplateMiner
from services.runtime.errors import InvalidArgument

MAX_EVENTS = 20

_WAITING: dict[str, Category] = {
    "CrashLoopBackOff": Category.CRASH_LOOP,
    "ImagePullBackOff": Category.IMAGE_PULL,
    "ErrImagePull": Category.IMAGE_PULL,
    "InvalidImageName": Category.IMAGE_PULL,
    "ErrImageNeverPull": Category.IMAGE_PULL,
    "CreateContainerConfigError": Category.CONFIGURATION,
    "CreateContainerError": Category.CONFIGURATION,
    "RunContainerError": Category.CRASH_LOOP,
    "PreCreateHookError": Category.CONFIGURATION,
    "PostStartHookError": Category.CRASH_LOOP,
}
_TERMINATED: dict[str, Category] = {
    "OOMKilled": Category.OUT_OF_MEMORY,
    "ContainerCannotRun": Category.CONFIGURATION,
    "DeadlineExceeded": Category.TIMEOUT,
}


@dataclass(frozen=True)
class PodVerdict:
    """The category the pod's state decides (None: the logs must), its findings, and the
    lines of evidence (state and events, masked) that count as failing lines."""

    category: Category | None
    findings: PodFindings
    evidence: list[str]


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def read_pod(pod: Mapping[str, Any], events: Mapping[str, Any] | None, container: str = "") -> PodVerdict:
    """The verdict on a pod; INVALID_ARGUMENT when `pod` is not a Pod as kubectl prints it."""
    if _text(pod.get("kind")) not in ("Pod", "") or not isinstance(pod.get("status"), Mapping):
        raise InvalidArgument.for_field(
            "pod", "is not a Pod as `kubectl get pod -o json` prints it (kind Pod, a status)"
        )
    metadata, spec, status = (
        _mapping(pod.get("metadata")),
        _mapping(pod.get("spec")),
        _mapping(pod.get("status")),
    )
    name = f"{_text(metadata.get('namespace')) or 'default'}/{_text(metadata.get('name'))}"
    statuses = [
        _mapping(s)
        for s in [*_list(status.get("initContainerStatuses")), *_list(status.get("containerStatuses"))]
    ]
    if container and not any(_text(s.get("name")) == container for s in statuses):
        raise InvalidArgument.for_field("container", f"the pod has no container named {container[:80]!r}")
    chosen = _failing(statuses, container)
    category: Category | None = None
    evidence: list[str] = []
    reason = last_reason = ""
    exit_code = restarts = 0
    if chosen is not None:
        state, last = _mapping(chosen.get("state")), _mapping(chosen.get("lastState"))
        waiting, terminated = _mapping(state.get("waiting")), _mapping(state.get("terminated"))
        last_terminated = _mapping(last.get("terminated"))
        reason = _text(waiting.get("reason")) or _text(terminated.get("reason"))
        last_reason = _text(last_terminated.get("reason"))
        exit_code = int(terminated.get("exitCode") or last_terminated.get("exitCode") or 0)
        restarts = int(chosen.get("restartCount") or 0)
        category = _WAITING.get(reason) or _TERMINATED.get(reason)
        if "OOMKilled" in (reason, last_reason):  # a crash loop of OOM kills is out of memory
            category = Category.OUT_OF_MEMORY
        for label, value in (
            ("waiting", waiting),
            ("terminated", terminated),
            ("last terminated", last_terminated),
        ):
            if value:
                evidence.append(
                    mask_text(
                        f"container {chosen.get('name')} {label}: {_text(value.get('reason'))} {_text(value.get('message'))} exit code {value.get('exitCode', '')}".strip()
                    )
                )
    pod_reason = _text(status.get("reason"))
    if pod_reason == "Evicted":
        message = _text(status.get("message"))
        evidence.append(mask_text(f"pod evicted: {message}"))
        lowered = message.lower()
        category = (
            Category.OUT_OF_MEMORY
            if "memory" in lowered
            else Category.DISK_FULL
            if "storage" in lowered or "disk" in lowered
            else Category.WORKER_LOST
        )
        reason = reason or "Evicted"
    for condition in (_mapping(c) for c in _list(status.get("conditions"))):
        if _text(condition.get("reason")) == "Unschedulable":
            evidence.append(mask_text(f"pod unschedulable: {_text(condition.get('message'))}"))
            category = category or Category.CONFIGURATION
            reason = reason or "Unschedulable"
    warnings = _warnings(events, _text(metadata.get("name")))
    evidence.extend(warnings)
    if category is None and any(w.startswith("Unhealthy:") for w in warnings):
        probe = " ".join(w for w in warnings if w.startswith("Unhealthy:")).lower()
        category = (
            Category.CRASH_LOOP
            if restarts
            else Category.TIMEOUT
            if "timeout" in probe or "deadline" in probe
            else Category.CRASH_LOOP
        )
        reason = reason or "Unhealthy"
    container_name = _text(chosen.get("name")) if chosen is not None else container
    findings = PodFindings(
        pod=name,
        container=container_name,
        reason=reason,
        last_termination_reason=last_reason,
        exit_code=exit_code,
        memory_limit=_memory_limit(spec, container_name),
        restart_count=restarts,
        events=tuple(warnings[-MAX_EVENTS:]),
    )
    return PodVerdict(category, findings, evidence)


def _failing(statuses: list[Mapping[str, Any]], container: str) -> Mapping[str, Any] | None:
    """The named container, else the first one that is not ready or restarted, else the first."""
    if container:
        return next(s for s in statuses if _text(s.get("name")) == container)
    for status in statuses:
        if not status.get("ready") or int(status.get("restartCount") or 0) > 0:
            return status
    return statuses[0] if statuses else None


def _memory_limit(spec: Mapping[str, Any], container: str) -> str:
    for entry in (_mapping(c) for c in [*_list(spec.get("initContainers")), *_list(spec.get("containers"))]):
        if _text(entry.get("name")) == container:
            return _text(_mapping(_mapping(entry.get("resources")).get("limits")).get("memory"))
    return ""


def _warnings(events: Mapping[str, Any] | None, pod_name: str) -> list[str]:
    """The pod's warning events, oldest first, masked of secrets: `reason: message`."""
    if not events:
        return []
    items = _list(events.get("items"))
    if not items and events.get("kind") not in ("List", "EventList", None):
        raise InvalidArgument.for_field(
            "events", "is not an event list as `kubectl get events -o json` prints it"
        )
    found = []
    for event in (_mapping(e) for e in items):
        involved = _text(_mapping(event.get("involvedObject")).get("name"))
        if pod_name and involved and involved != pod_name:
            continue
        if _text(event.get("type")) not in ("Warning", ""):
            continue
        found.append(
            (
                _text(event.get("lastTimestamp")) or _text(event.get("eventTime")),
                mask_text(f"{_text(event.get('reason'))}: {_text(event.get('message'))}"),
            )
        )
    return [text for _, text in sorted(found, key=lambda item: item[0])]


def diagnose_pod(
    miner: TemplateMiner,
    pod: Mapping[str, Any],
    events: Mapping[str, Any] | None,
    *,
    current_log: str,
    previous_log: str,
    container: str,
    diagnosis_id: str,
    template_set: str,
    now_us: int,
) -> Diagnosis:
    """The diagnosis of a pod: its state decides the category when it can; the previous and
    the current container's logs (in that order) give the root-cause lines; with no logs the
    state and events are the lines."""
    verdict = read_pod(pod, events, container)
    reader = LogReader(miner, now_us=now_us)
    for log in (previous_log, current_log):
        if log:
            reader.feed_text(log if log.endswith("\n") else log + "\n")
    if reader.line_count == 0:
        for line in verdict.evidence:
            reader.feed_text(line + "\n")
    diagnosis = diagnose(
        reader.finish(),
        diagnosis_id=diagnosis_id,
        kind="CONTAINER",
        context=Context(job=verdict.findings.pod),
        template_set=template_set,
        now_us=now_us,
        extra_evidence=verdict.evidence,
    )
    if verdict.category is not None:
        diagnosis = replace(
            diagnosis,
            category=verdict.category,
            confidence=0.95,
            transient=verdict.category in TRANSIENT,
            remediations=remediations(verdict.category),
        )
    findings = verdict.findings
    suggestions = []
    for suggestion in diagnosis.remediations:
        if suggestion.type is RemediationType.RAISE_MEMORY_LIMIT:
            parameters = {"container": findings.container, "pod": findings.pod}
            if findings.memory_limit:
                parameters["current_limit"] = findings.memory_limit
            suggestion = replace(suggestion, parameters=parameters)
        suggestions.append(suggestion)
    return replace(diagnosis, pod=findings, remediations=suggestions)
