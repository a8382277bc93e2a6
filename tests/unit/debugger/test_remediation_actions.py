"""Kubernetes actions produce the exact patch they would apply, bounded and schema-checked."""

from __future__ import annotations

from services.debugger.remediation import Action, ActionKind
from services.debugger.remediation_actions import (
    CHANGE_CAUSE,
    RESTARTED_AT,
    _deployment_manifest,
    kubernetes_patch,
    raised_limit,
    validate_deployment,
)

TARGET = "namespaces/shop/deployments/api"
NOW = "2026-12-02T00:00:00Z"


def test_a_restart_patches_the_pod_template_annotation_as_kubectl_rollout_restart_does() -> None:
    patch_type, patch = kubernetes_patch(Action(ActionKind.KUBERNETES_RESTART, TARGET, {}), NOW)
    assert patch_type == "strategic-merge"
    assert patch == {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: NOW}}}}}


def test_a_memory_limit_is_raised_by_a_bounded_factor_rounded_up_to_a_mebibyte() -> None:
    assert raised_limit("256Mi", 1.5) == "384Mi"
    assert raised_limit("1G", 1.1) == "1050Mi"
    assert raised_limit("256Mi", 100.0) == "1024Mi"  # at most four times


def test_the_patched_deployment_is_valid_and_a_broken_one_is_caught_with_its_path() -> None:
    action = Action(ActionKind.KUBERNETES_SCALE, TARGET, {"replicas": "3"})
    manifest = _deployment_manifest(action, kubernetes_patch(action, NOW)[1])
    assert validate_deployment(manifest) is None
    manifest["spec"]["replicas"] = "three"
    problem = validate_deployment(manifest)
    assert problem is not None and problem.startswith("spec.replicas")


def test_a_rollback_restores_the_previous_replica_sets_image_and_says_why() -> None:
    parameters = {"container": "app", "image": "registry.local/shop/api:1.4.2", "revision": "7"}
    action = Action(ActionKind.KUBERNETES_ROLLBACK, TARGET, parameters)
    patch_type, patch = kubernetes_patch(action, NOW)
    assert patch_type == "strategic-merge"
    assert patch["spec"] == {
        "template": {"spec": {"containers": [{"name": "app", "image": "registry.local/shop/api:1.4.2"}]}}
    }
    assert "revision 7" in patch["metadata"]["annotations"][CHANGE_CAUSE]
    assert validate_deployment(_deployment_manifest(action, patch)) is None


def test_a_rollback_whose_patch_is_not_a_valid_deployment_is_caught() -> None:
    action = Action(ActionKind.KUBERNETES_ROLLBACK, TARGET, {"container": "app", "image": "a:1"})
    patch = kubernetes_patch(action, NOW)[1]
    patch["spec"]["template"]["spec"]["containers"][0]["image"] = 42
    problem = validate_deployment(_deployment_manifest(action, patch))
    assert problem is not None and "image" in problem
