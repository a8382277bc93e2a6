"""Validation of pipeline definitions: each rule, with the offending path named."""

from __future__ import annotations

import pytest
from google.protobuf import duration_pb2

from devmesh.pipeline.v1 import model_pb2
from services.pipeline import validation
from services.runtime.errors import InvalidArgument
from tests.unit.pipeline import samples


def violations(definition: model_pb2.PipelineDefinition) -> dict[str, str]:
    with pytest.raises(InvalidArgument) as caught:
        validation.validate(definition)
    return {v.field: v.description for v in caught.value.field_violations}


def test_a_definition_using_every_feature_is_valid_and_counts_its_matrix_runs() -> None:
    # 2x2 python/os, minus one excluded, plus one included: 4 test runs, deploy, notify.
    assert validation.validate(samples.everything()).job_runs == 6


def test_a_cycle_is_named_at_the_edge_that_closes_it() -> None:
    definition = samples.small()
    definition.jobs[0].needs.append("test")
    found = violations(definition)
    assert any(path in found for path in ("definition.jobs[0].needs[0]", "definition.jobs[1].needs[0]"))
    assert "cycle" in " ".join(found.values())


def test_a_job_that_needs_itself_is_a_cycle() -> None:
    definition = samples.small()
    definition.jobs[0].needs.append("build")
    assert "definition.jobs[0].needs[0]" in violations(definition)


def test_an_unknown_need_is_named_with_its_index() -> None:
    definition = samples.small()
    definition.jobs[1].needs.append("nope")
    assert "is not a job" in violations(definition)["definition.jobs[1].needs[1]"]


def test_a_finally_job_cannot_need_a_regular_job() -> None:
    definition = samples.small()
    definition.finally_jobs.add(id="cleanup", needs=["build"], steps=[samples.run("true")])
    assert "finally job" in violations(definition)["definition.finally_jobs[0].needs[0]"]


def test_duplicate_job_ids_are_named_at_the_second() -> None:
    definition = samples.small()
    definition.jobs[1].id = "build"
    definition.jobs[1].ClearField("needs")
    assert "also the id of jobs[0]" in violations(definition)["definition.jobs[1].id"]


def test_an_empty_matrix_axis_is_refused() -> None:
    definition = samples.small()
    definition.jobs[0].matrix.axes.add(name="python")
    assert "definition.jobs[0].matrix.axes[0].values" in violations(definition)


def test_a_matrix_without_axes_or_includes_is_empty() -> None:
    definition = samples.small()
    definition.jobs[0].matrix.max_parallel = 2
    assert "definition.jobs[0].matrix" in violations(definition)


def test_a_matrix_whose_excludes_leave_nothing_is_empty() -> None:
    definition = samples.small()
    definition.jobs[0].matrix.axes.add(name="python", values=["3.12"])
    definition.jobs[0].matrix.exclude.add(values={"python": "3.12"})
    assert "definition.jobs[0].matrix.exclude" in violations(definition)


def test_a_matrix_over_256_combinations_is_refused() -> None:
    definition = samples.small()
    for name in ("a", "b", "c"):
        definition.jobs[0].matrix.axes.add(name=name, values=[str(i) for i in range(7)])
    assert "343 combinations" in violations(definition)["definition.jobs[0].matrix"]


def test_a_placeholder_naming_no_axis_is_an_unknown_reference() -> None:
    definition = samples.small()
    definition.jobs[0].steps[1].run.command = "echo ${{ matrix.bogus }}"
    assert "no matrix" in violations(definition)["definition.jobs[0].steps[1].run.command"]


def test_a_placeholder_naming_no_input_is_an_unknown_reference() -> None:
    definition = samples.everything()
    definition.jobs[1].steps[1].run.command = "deploy ${{ inputs.nope }}"
    assert "names no input" in violations(definition)["definition.jobs[1].steps[1].run.command"]


def test_a_condition_naming_an_unknown_input_is_refused() -> None:
    definition = samples.everything()
    definition.jobs[1].condition.expression = "inputs.nope == 'x'"
    assert "definition.jobs[1].condition.expression" in violations(definition)


def test_a_condition_that_does_not_parse_says_why() -> None:
    definition = samples.small()
    definition.jobs[1].condition.expression = "event == "
    assert "ends too early" in violations(definition)["definition.jobs[1].condition.expression"]


@pytest.mark.parametrize("seconds", [0, 72 * 3600 + 1, -5])
def test_a_job_timeout_out_of_range_is_refused(seconds: int) -> None:
    definition = samples.small()
    definition.jobs[0].timeout.CopyFrom(duration_pb2.Duration(seconds=seconds))
    assert "out of range" in violations(definition)["definition.jobs[0].timeout"]


def test_a_step_timeout_longer_than_its_job_is_refused() -> None:
    definition = samples.small()
    definition.jobs[0].timeout.CopyFrom(samples.minutes(10))
    definition.jobs[0].steps[1].timeout.CopyFrom(samples.minutes(11))
    assert "definition.jobs[0].steps[1].timeout" in violations(definition)


def test_a_malformed_secret_reference_is_refused() -> None:
    definition = samples.small()
    definition.env["TOKEN"].CopyFrom(samples.value({"$secret": "not a secret!"}))
    assert "definition.env.TOKEN.$secret" in violations(definition)


def test_an_object_env_value_that_is_not_a_secret_reference_is_refused() -> None:
    definition = samples.small()
    definition.env["X"].CopyFrom(samples.value({"a": 1}))
    assert "definition.env.X" in violations(definition)


def test_a_job_without_steps_is_refused() -> None:
    definition = samples.small()
    del definition.jobs[0].steps[:]
    assert "definition.jobs[0].steps" in violations(definition)


def test_a_pipeline_without_jobs_is_refused() -> None:
    assert "definition.jobs" in violations(model_pb2.PipelineDefinition())


def test_paths_that_leave_the_checkout_are_refused() -> None:
    definition = samples.small()
    definition.jobs[0].steps[1].run.working_directory = "../elsewhere"
    definition.jobs[0].paths.append("/etc/passwd")
    found = violations(definition)
    assert "'..'" in found["definition.jobs[0].steps[1].run.working_directory"]
    assert "absolute" in found["definition.jobs[0].paths[0]"]


def test_a_bad_retry_limit_and_backoff_are_refused() -> None:
    definition = samples.small()
    definition.jobs[0].retry.limit = 11
    definition.jobs[0].retry.backoff.factor = 50
    found = violations(definition)
    assert {"definition.jobs[0].retry.limit", "definition.jobs[0].retry.backoff.factor"} <= set(found)


def test_every_violation_is_reported_at_once() -> None:
    definition = samples.small()
    definition.jobs[0].id = "Bad Id"
    definition.jobs[1].needs.append("ghost")
    definition.triggers.add(schedule=model_pb2.ScheduleTrigger(cron="every day"))
    assert len(violations(definition)) >= 3


def test_unknown_enum_values_are_refused() -> None:
    definition = samples.small()
    definition.jobs[0].condition.when = 40  # type: ignore[assignment]
    assert "definition.jobs[0].condition.when" in violations(definition)


def test_a_choice_input_without_options_is_refused() -> None:
    definition = samples.small()
    definition.triggers.add(
        manual=model_pb2.ManualTrigger(inputs=[model_pb2.Input(name="x", type=model_pb2.INPUT_TYPE_CHOICE)])
    )
    assert "definition.triggers[1].manual.inputs[0].options" in violations(definition)


def test_the_prefix_names_the_request_field() -> None:
    definition = samples.small()
    definition.jobs[1].needs[0] = "ghost"
    with pytest.raises(InvalidArgument) as caught:
        validation.validate(definition, "pipeline.definition")
    assert caught.value.field_violations[0].field == "pipeline.definition.jobs[1].needs[0]"
