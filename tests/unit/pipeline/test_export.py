"""ExportPipeline's renderers: what each target gets, what it cannot express (and says), and
every export passes the target's schema (in the exporter) and, for GitHub, actionlint."""

from __future__ import annotations

import pytest
from ruamel.yaml import YAML

from devmesh.pipeline.v1 import model_pb2
from services.pipeline import exporter
from services.pipeline.exporter import Target
from services.runtime.errors import InvalidArgument
from tests.unit.pipeline import samples
from tools.actionlint import Actionlint


def exported(
    definition: model_pb2.PipelineDefinition, target: Target, actionlint: Actionlint
) -> exporter.Exported:
    """The export, after checking that both validators accept it."""
    result = exporter.export(definition, target)
    assert exporter.check(target, result.content) == []
    if target is Target.GITHUB_ACTIONS:
        assert actionlint.lint(result.content) == []
    return result


def load(content: str) -> dict:  # type: ignore[type-arg]
    return YAML(typ="safe", pure=True).load(content)  # type: ignore[no-any-return]


def codes(result: exporter.Exported) -> set[str]:
    return {w.code for w in result.warnings}


@pytest.mark.parametrize("target", list(Target))
@pytest.mark.parametrize("sample", [samples.small, samples.everything])
def test_every_sample_exports_to_every_target_and_passes_its_validators(
    target: Target, sample: object, actionlint: Actionlint
) -> None:
    exported(sample(), target, actionlint)  # type: ignore[operator]


def test_the_github_trigger_key_stays_the_string_on(actionlint: Actionlint) -> None:
    document = load(exported(samples.small(), Target.GITHUB_ACTIONS, actionlint).content)
    assert "on" in document and True not in document
    assert document["on"]["push"] == {"branches": ["main"]}


def test_github_gets_a_bounded_retry_loop_with_the_backoff(actionlint: Actionlint) -> None:
    result = exported(samples.everything(), Target.GITHUB_ACTIONS, actionlint)
    steps = load(result.content)["jobs"]["test"]["steps"]
    pytest_step = next(s for s in steps if s.get("id") == "pytest")
    assert "for delay in 5 10 20 stop" in pytest_step["run"]
    assert 'case " 75 "' in pytest_step["run"]
    assert "RETRY_DEGRADED" in codes(result)


def test_a_job_retry_on_lost_runners_only_adds_no_loop_on_github(actionlint: Actionlint) -> None:
    steps = load(exported(samples.everything(), Target.GITHUB_ACTIONS, actionlint).content)["jobs"]["test"][
        "steps"
    ]
    install = next(s for s in steps if s.get("name") == "Install")
    assert install["run"] == "pip install -r requirements.txt"


def test_github_approval_is_an_environment_and_the_reviewers_a_warning(actionlint: Actionlint) -> None:
    result = exported(samples.everything(), Target.GITHUB_ACTIONS, actionlint)
    assert load(result.content)["jobs"]["deploy"]["environment"] == {"name": "production"}
    assert "APPROVAL_REVIEWERS" in codes(result)


def test_finally_jobs_need_every_job_and_always_run(actionlint: Actionlint) -> None:
    github = load(exported(samples.everything(), Target.GITHUB_ACTIONS, actionlint).content)
    assert github["jobs"]["notify"]["needs"] == ["test", "deploy"]
    assert github["jobs"]["notify"]["if"] == "always()"
    gitlab = load(exported(samples.everything(), Target.GITLAB_CI, actionlint).content)
    assert gitlab["notify"]["stage"] == ".post" and gitlab["notify"]["when"] == "always"


def test_gitlab_caps_retry_at_two_and_says_so(actionlint: Actionlint) -> None:
    definition = samples.small()
    definition.jobs[0].retry.limit = 5
    result = exported(definition, Target.GITLAB_CI, actionlint)
    assert load(result.content)["build"]["retry"]["max"] == 2
    assert "RETRY_DEGRADED" in codes(result)
    assert "for delay in" in load(result.content)["build"]["script"][0]


def test_gitlab_expresses_an_exclude_by_listing_what_remains(actionlint: Actionlint) -> None:
    matrix = load(exported(samples.everything(), Target.GITLAB_CI, actionlint).content)["test"]["parallel"][
        "matrix"
    ]
    combos = {(m["python"][0], m["os"][0]) for m in matrix}
    assert ("3.11", "macos-latest") not in combos
    assert len(combos) == 4


def test_gitlab_approval_is_a_manual_job_that_blocks(actionlint: Actionlint) -> None:
    deploy = load(exported(samples.everything(), Target.GITLAB_CI, actionlint).content)["deploy"]
    assert deploy["rules"][0]["when"] == "manual"
    assert deploy["allow_failure"] is False
    assert deploy["rules"][0]["if"] == '($CI_PIPELINE_SOURCE == "web") && ($dry_run != "true")'


def test_gitlab_placeholders_become_variables(actionlint: Actionlint) -> None:
    document = load(exported(samples.everything(), Target.GITLAB_CI, actionlint).content)
    assert document["test"]["image"] == "python:$python"
    assert document["deploy"]["resource_group"] == "deploy-$target"


def test_a_job_path_filter_is_a_rule_on_gitlab_and_a_warning_on_github(actionlint: Actionlint) -> None:
    gitlab = exported(samples.everything(), Target.GITLAB_CI, actionlint)
    assert load(gitlab.content)["test"]["rules"][0]["changes"] == ["src/**", "tests/**"]
    assert "PATH_FILTER_DEGRADED" in codes(exported(samples.everything(), Target.GITHUB_ACTIONS, actionlint))


def test_secret_references_become_ci_secret_variables(actionlint: Actionlint) -> None:
    github = exported(samples.everything(), Target.GITHUB_ACTIONS, actionlint)
    assert load(github.content)["env"]["TOKEN"] == "${{ secrets.DEPLOY_TOKEN_VALUE }}"
    gitlab = exported(samples.everything(), Target.GITLAB_CI, actionlint)
    assert load(gitlab.content)["variables"]["TOKEN"] == "$DEPLOY_TOKEN_VALUE"
    assert "SECRET_MAPPED" in codes(github) and "SECRET_MAPPED" in codes(gitlab)


def test_a_multi_line_command_is_a_literal_block_that_reads_back_the_same(actionlint: Actionlint) -> None:
    definition = samples.small()
    definition.jobs[0].steps[1].run.command = "pip install -e .[test]\npytest -q: 'x'"
    for target in Target:
        content = exported(definition, target, actionlint).content
        assert "|" in content
    gitlab = load(exported(definition, Target.GITLAB_CI, actionlint).content)
    assert gitlab["build"]["script"] == ["pip install -e .[test]\npytest -q: 'x'\n"]


def test_a_job_named_like_a_gitlab_keyword_is_renamed(actionlint: Actionlint) -> None:
    definition = samples.small()
    definition.jobs[0].id = "variables"
    definition.jobs[1].needs[0] = "variables"
    document = load(exported(definition, Target.GITLAB_CI, actionlint).content)
    assert document["test"]["needs"] == ["job-variables"]


def test_a_render_its_schema_refuses_is_never_returned() -> None:
    assert exporter.check(Target.GITLAB_CI, "job:\n  script: [x]\n  retry: {max: 5}\n")
    assert exporter.check(Target.GITHUB_ACTIONS, "on: push\njobs:\n  a:\n    runs-on: x\n    stepz: []\n")


def test_an_invalid_definition_is_refused_before_rendering() -> None:
    definition = samples.small()
    definition.jobs[1].needs[0] = "ghost"
    with pytest.raises(InvalidArgument):
        exporter.export(definition, Target.GITHUB_ACTIONS)


def test_strings_a_yaml_11_reader_would_take_for_booleans_are_quoted(actionlint: Actionlint) -> None:
    definition = samples.small()
    definition.env["FEATURE"].string_value = "on"
    content = exported(definition, Target.GITLAB_CI, actionlint).content
    assert "FEATURE: 'on'" in content
