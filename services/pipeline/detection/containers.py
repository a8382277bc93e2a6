"""Dockerfiles (an image build per Dockerfile), Helm charts (lint and render), Kubernetes
manifests (schema validation with kubeconform). None of them is ever built or applied here."""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable

from services.pipeline.detection.report import Evidence, Report
from services.pipeline.detection.stack import BUILD, LINT, Stack
from services.pipeline.snapshot import MANIFEST_DIRS, Snapshot, display

HELM_IMAGE = "alpine/helm:3.16.2"
KUBECONFORM_IMAGE = "ghcr.io/yannh/kubeconform:v0.6.7-alpine"


def is_dockerfile(path: str) -> bool:
    name = path.rsplit("/", 1)[-1]
    return name == "Dockerfile" or name.startswith("Dockerfile.") or name.endswith(".Dockerfile")


def dockerfiles(snapshot: Snapshot, skip: Callable[[str], bool]) -> list[Stack]:
    stacks = []
    for path in sorted(p for p in snapshot.files if is_dockerfile(p) and not skip(p)):
        directory = posixpath.dirname(path)
        stack = Stack("docker", directory)
        tag = re.sub(r"[^a-z0-9_.-]", "-", (directory or "app").lower()).strip("-.") or "app"
        command = f"docker build --file {path} --tag {tag}:ci {display(directory)}"
        stack.add(BUILD, command)
        stack.tools.append(path)  # the Dockerfile: the evidence `decide` names
        stacks.append(stack)
    return stacks


def helm_charts(snapshot: Snapshot, skip: Callable[[str], bool]) -> list[Stack]:
    stacks = []
    for path in sorted(snapshot.named("Chart.yaml")):
        if skip(path):
            continue
        directory = posixpath.dirname(path)
        stack = Stack("helm", directory, container=HELM_IMAGE)
        stack.add(LINT, f"helm lint {display(directory)}")
        stack.add(BUILD, f"helm template {display(directory)} > /dev/null")
        stacks.append(stack)
    return stacks


def kubernetes_manifests(snapshot: Snapshot, skip: Callable[[str], bool], charts: list[str]) -> list[Stack]:
    found: dict[str, list[str]] = {}
    for path, file in snapshot.files.items():
        if (
            not path.endswith((".yaml", ".yml"))
            or skip(path)
            or any(path.startswith(f"{c}/") for c in charts if c)
        ):
            continue
        parts = path.split("/")
        if not any(p in MANIFEST_DIRS for p in parts[:-1]) or file.text is None:
            continue
        if re.search(r"^apiVersion:", file.text, re.MULTILINE) and re.search(
            r"^kind:", file.text, re.MULTILINE
        ):
            top = "/".join(parts[: next(i for i, p in enumerate(parts) if p in MANIFEST_DIRS) + 1])
            found.setdefault(top, []).append(path)
    stacks = []
    for directory in sorted(found):
        stack = Stack("kubernetes", directory, container=KUBECONFORM_IMAGE)
        stack.add(LINT, f"kubeconform -summary -strict -ignore-missing-schemas {directory}")
        stack.tools = sorted(found[directory])[:5]
        stacks.append(stack)
    return stacks


def decide(report: Report, stack: Stack) -> None:
    """The rationale of a container stack."""
    if stack.ecosystem == "docker":
        report.decide(
            "image build", stack.directory, stack.command(BUILD), Evidence(stack.tools[0], 0, "Dockerfile")
        )
    elif stack.ecosystem == "helm":
        report.decide(
            "chart checks",
            stack.directory,
            stack.command(LINT),
            Evidence(posixpath.join(stack.directory, "Chart.yaml")),
        )
    else:
        report.decide(
            "manifest validation",
            stack.directory,
            stack.command(LINT),
            *(Evidence(p, 0, "a Kubernetes manifest") for p in stack.tools),
        )
        stack.tools = ["kubeconform"]
