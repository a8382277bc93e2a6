"""The executors of a plan's actions, each behind one interface: execute, verify, undo.

An executor says what it did in an `Applied`: what undoing it needs, a detail for people, and
whether it was only a dry run (produced, not applied). Kubernetes actions produce the exact
patch they would apply; here there is no cluster, so the executor is a dry run and says so.
Pipeline actions run through the pipeline service (remediation_pipeline_client).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from services.debugger.remediation import Action, ActionKind
from services.debugger.remediation_plan import DEPLOYMENT, MAX_MEMORY_FACTOR, MEMORY_QUANTITY
from services.runtime.errors import FailedPrecondition, InvalidArgument

DEFAULT_MEMORY_FACTOR = 1.5
# The annotation `kubectl rollout restart` sets: a new value rolls every pod.
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
# Why a Deployment's pods changed, as `kubectl rollout history` shows it.
CHANGE_CAUSE = "kubernetes.io/change-cause"
_UNITS = {None: 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
          "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}  # fmt: skip


@dataclass(frozen=True)
class Applied:
    """What an executor did: what undoing it needs, a detail, whether it was only a dry run."""

    undo: dict[str, str] = field(default_factory=dict)
    detail: str = ""
    dry_run: bool = False


class Executor(Protocol):
    """Executes, verifies and undoes actions of some kinds."""

    kinds: frozenset[ActionKind]

    async def execute(self, action: Action, idempotency_key: str) -> Applied:
        """Apply the action (once per idempotency key: a retry with the same key applies nothing new)."""
        ...

    async def verify(self, action: Action, applied: Applied) -> str | None:
        """None when the action had its effect; otherwise why not."""
        ...

    async def undo(self, action: Action, applied: Applied, idempotency_key: str) -> None:
        """Undo what `execute` applied."""
        ...


def memory_bytes(quantity: str, field_name: str) -> int:
    """A Kubernetes memory quantity (`512Mi`, `1G`, `1073741824`) in bytes."""
    found = MEMORY_QUANTITY.match(quantity.strip())
    if not found:
        raise InvalidArgument.for_field(
            field_name, f"{quantity[:64]!r} is not a memory quantity such as 512Mi"
        )
    return int(float(found.group(1)) * _UNITS[found.group(2)])


def raised_limit(current: str, factor: float) -> str:
    """`current` times `factor` (at most MAX_MEMORY_FACTOR), rounded up to a whole MiB."""
    factor = min(factor, MAX_MEMORY_FACTOR)
    mib = -(-int(memory_bytes(current, "parameters['current_limit']") * factor) // 2**20)
    return f"{mib}Mi"


def kubernetes_patch(action: Action, now_iso: str) -> tuple[str, dict[str, Any]]:
    """The strategic-merge patch an action applies to its Deployment: (patch type, patch).

    A rollback restores the previous ReplicaSet's container image (`kubectl rollout undo`
    copies that ReplicaSet's pod template; with no cluster to read it from, the plan names the
    container and image the previous ReplicaSet ran) and records why in the change cause."""
    parameters = action.parameters
    if action.kind is ActionKind.KUBERNETES_RESTART:
        template = {"metadata": {"annotations": {RESTARTED_AT: now_iso}}}
        return "strategic-merge", {"spec": {"template": template}}
    if action.kind is ActionKind.KUBERNETES_SCALE:
        return "strategic-merge", {"spec": {"replicas": int(parameters["replicas"])}}
    if action.kind is ActionKind.KUBERNETES_RAISE_MEMORY_LIMIT:
        factor = float(parameters.get("factor", DEFAULT_MEMORY_FACTOR))
        limit = raised_limit(parameters["current_limit"], factor)
        container = {"name": parameters["container"], "resources": {"limits": {"memory": limit}}}
        return "strategic-merge", {"spec": {"template": {"spec": {"containers": [container]}}}}
    if action.kind is ActionKind.KUBERNETES_ROLLBACK:
        revision = parameters.get("revision", "")
        cause = f"rollback to revision {revision}" if revision else "rollback to the previous ReplicaSet"
        container = {"name": parameters["container"], "image": parameters["image"]}
        return "strategic-merge", {
            "metadata": {"annotations": {CHANGE_CAUSE: f"devmesh remediation: {cause}"}},
            "spec": {"template": {"spec": {"containers": [container]}}},
        }
    raise ValueError(f"{action.kind.value} is not a Kubernetes action")


def _deployment_manifest(action: Action, patch: Mapping[str, Any]) -> dict[str, Any]:
    """The Deployment the patch would produce from a minimal one (for schema validation)."""
    namespace, name = DEPLOYMENT.parse(action.target, "target")
    spec = patch.get("spec", {})
    containers = spec.get("template", {}).get("spec", {}).get("containers") or [{"name": "app"}]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, **patch.get("metadata", {})},
        "spec": {
            "replicas": spec.get("replicas", 1),
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}, **spec.get("template", {}).get("metadata", {})},
                "spec": {"containers": [{"image": "unknown", **c} for c in containers]},
            },
        },
    }


def validate_deployment(manifest: dict[str, Any]) -> str | None:
    """None when `manifest` is a valid apps/v1 Deployment for the newest Kubernetes schemas
    kubernetes-validate ships; otherwise what is wrong, and where."""
    import kubernetes_validate  # loaded when first needed: its schemas are large

    try:
        kubernetes_validate.validate(manifest, kubernetes_validate.latest_version(), strict=True)
    except kubernetes_validate.ValidationError as error:
        where = ".".join(str(p) for p in error.path)
        return f"{where}: {error.message}"[:500]
    return None


class DryRunKubernetes:
    """Kubernetes actions without a cluster: the exact patch, checked against the Deployment
    schema when `validate` is given, applied nowhere. Every result says it was a dry run."""

    idempotent = True  # nothing is applied: executing again after an interruption is harmless
    kinds = frozenset(
        {
            ActionKind.KUBERNETES_RESTART,
            ActionKind.KUBERNETES_SCALE,
            ActionKind.KUBERNETES_RAISE_MEMORY_LIMIT,
            ActionKind.KUBERNETES_ROLLBACK,
        }
    )

    def __init__(
        self,
        now_iso: Callable[[], str],
        validate: Callable[[dict[str, Any]], str | None] | None = validate_deployment,
    ) -> None:
        self._now_iso = now_iso
        self._validate = validate

    async def execute(self, action: Action, idempotency_key: str) -> Applied:
        patch_type, patch = kubernetes_patch(action, self._now_iso())
        if self._validate is not None:
            problem = await asyncio.to_thread(self._validate, _deployment_manifest(action, patch))
            if problem:
                raise FailedPrecondition(
                    f"the patch for {action.target} is not a valid Deployment: {problem}"
                )
        detail = json.dumps({"dryRun": True, "target": action.target, "patchType": patch_type, "patch": patch},
                            separators=(",", ":"), sort_keys=True)  # fmt: skip
        return Applied(detail=detail, dry_run=True)

    async def verify(self, action: Action, applied: Applied) -> str | None:
        return None  # nothing was applied: nothing to verify (the state says dry run)

    async def undo(self, action: Action, applied: Applied, idempotency_key: str) -> None:
        return None


def missing_executor(action: Action) -> FailedPrecondition:
    """The refusal for an action this deployment has no executor for."""
    what = {
        ActionKind.PIPELINE_RERUN: "the pipeline service as a peer (DEVMESH_PEERS pipeline=...)",
        ActionKind.PIPELINE_RERUN_WITH_BACKOFF: "the pipeline service as a peer (DEVMESH_PEERS pipeline=...)",
        ActionKind.PIPELINE_CANCEL_RUN: "the pipeline service as a peer (DEVMESH_PEERS pipeline=...)",
        ActionKind.CONFIG_ROLLBACK: "the config service as a peer (DEVMESH_PEERS config=...)",
        ActionKind.SECRET_ROTATE: "the secrets service as a peer (DEVMESH_PEERS secrets=...)",
        ActionKind.SECRET_PROMOTE_VERSION: "the secrets service as a peer (DEVMESH_PEERS secrets=...)",
        ActionKind.SECRET_DISABLE_VERSION: "the secrets service as a peer (DEVMESH_PEERS secrets=...)",
    }.get(action.kind, f"an executor for {action.kind.value} (not built yet)")
    return FailedPrecondition(
        f"{action.kind.value} on {action.target} needs {what}",
        reason="NO_EXECUTOR",
        metadata={"action": action.kind.value},
    )
