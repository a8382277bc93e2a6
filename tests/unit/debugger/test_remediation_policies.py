"""Which diagnoses a remediation policy matches: by category, by target glob or prefix, never
when disabled; its thresholds over the service's."""

from __future__ import annotations

import pytest

from services.debugger.remediation import ActionKind
from services.debugger.remediation_policies import RemediationPolicy, target_matches
from services.debugger.remediation_policy import Policy
from services.debugger.taxonomy import Category

JOB = "projects/web/pipelines/ci/runs/r1/jobs/fetch"


@pytest.mark.parametrize(
    ("pattern", "matched"),
    [
        ("projects/web/", True),
        ("projects/we/", False),
        ("projects/web/pipelines/*/runs/*/jobs/*", True),
        ("projects/web/pipelines/*/jobs/*", False),  # `*` stays within one segment
        ("projects/web/**/jobs/fetch", True),  # `**` crosses segments
        ("projects/*/pipelines/ci/runs/*/jobs/test", False),
        (JOB, True),
        ("projects/web.pipelines/**", False),  # a dot is a dot, not any character
    ],
)
def test_a_target_pattern_is_a_prefix_or_a_glob(pattern: str, matched: bool) -> None:
    assert target_matches(pattern, JOB) is matched


def _policy(**fields: object) -> RemediationPolicy:
    defaults: dict[str, object] = {
        "id": "p",
        "targets": ("projects/web/",),
        "actions": frozenset({ActionKind.PIPELINE_RERUN}),
    }
    return RemediationPolicy(**{**defaults, **fields})  # type: ignore[arg-type]


def test_a_policy_matches_its_categories_only_and_every_category_when_it_names_none() -> None:
    assert _policy().matches(Category.TIMEOUT, JOB)
    assert _policy(categories=frozenset({Category.NETWORK})).matches(Category.NETWORK, JOB)
    assert not _policy(categories=frozenset({Category.NETWORK})).matches(Category.TIMEOUT, JOB)


def test_a_disabled_policy_matches_nothing() -> None:
    assert not _policy(disabled=True).matches(Category.NETWORK, JOB)


def test_a_policys_thresholds_go_over_the_services() -> None:
    service = Policy(0.3, {"prod": 0.05, "staging": 0.4}, frozenset({"prod"}), 3600, 3, 3600)
    mine = _policy(threshold=0.5, thresholds={"staging": 0.6}).risk_policy(service)
    assert (
        mine.threshold("dev") == 0.5 and mine.threshold("staging") == 0.6 and mine.threshold("prod") == 0.05
    )
    assert _policy().risk_policy(service).threshold("dev") == 0.3  # 0: the service's default
