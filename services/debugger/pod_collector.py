"""Where a pod's diagnostics come from: what a user uploads (`kubectl get pod -o json`,
`kubectl get events -o json`, the current and previous containers' logs), or, later, a
collector that reads the same from a cluster's Kubernetes API (a `PodCollector`). Both hand
the domain a `PodDiagnostics`; only the upload (AnalyzePod's request) exists so far."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class PodDiagnostics:
    """What a user would collect about one failing pod."""

    pod: Mapping[str, Any]  # `kubectl get pod NAME -o json`
    events: Mapping[str, Any] | None  # `kubectl get events -o json` (a List), when given
    current_log: str = ""  # `kubectl logs NAME -c CONTAINER`
    previous_log: str = ""  # `kubectl logs NAME -c CONTAINER --previous`
    container: str = ""  # empty: the pod's failing (or only) container


class PodCollector(Protocol):
    """Collects a pod's diagnostics (a cluster reader implements this with the Kubernetes API)."""

    async def collect(self, namespace: str, pod: str, container: str) -> PodDiagnostics:
        """The pod's object, its events, and its container's current and previous logs."""
        ...
