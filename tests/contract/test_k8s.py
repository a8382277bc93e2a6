"""The Kubernetes manifests stay true to the code: they are what the specs make, and every
Deployment runs a service the catalog knows, with settings that service reads."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from services import catalog
from services.runtime.settings import RuntimeSettings, env_name
from tools import k8s_manifests

K8S = Path(__file__).resolve().parents[2] / "k8s"
DOCUMENTS = [
    doc
    for path in sorted([*K8S.glob("base/*.yaml"), *K8S.glob("overlays/*/*.yaml")])
    for doc in yaml.safe_load_all(path.read_text())
    if doc
]
DEPLOYMENTS = [d for d in DOCUMENTS if d.get("kind") == "Deployment"]


def test_every_service_has_a_deployment() -> None:
    assert sorted(d["metadata"]["name"] for d in DEPLOYMENTS) == sorted(catalog.SERVICES)


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=[d["metadata"]["name"] for d in DEPLOYMENTS])
def test_a_deployment_sets_only_settings_its_service_reads(deployment: dict) -> None:  # type: ignore[type-arg]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][0] == "serve"
    specs = catalog.resolve(container["args"][1:])
    known = {
        env_name(f.name)
        for cls in (RuntimeSettings, *(spec.settings for spec in specs))
        for f in dataclasses.fields(cls)
    }
    names = {e["name"] for e in container["env"]}
    assert names <= known, names - known
    volumes = {v["name"] for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert {m["name"] for m in container["volumeMounts"]} <= volumes


def test_the_manifests_are_what_the_specs_make() -> None:
    assert k8s_manifests.stale() == [], "run `make gen`"
