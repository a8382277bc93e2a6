"""Pipeline definitions the pipeline tests share: a small valid one, and one that uses every
feature of the model."""

from __future__ import annotations

from google.protobuf import duration_pb2, json_format, struct_pb2

from devmesh.pipeline.v1 import model_pb2


def value(v: object) -> struct_pb2.Value:
    return json_format.ParseDict(v, struct_pb2.Value())


def minutes(n: int) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=60 * n)


def run(command: str, *, shell: str = "", working_directory: str = "", **fields: object) -> model_pb2.Step:
    action = model_pb2.RunStep(command=command, shell=shell, working_directory=working_directory)
    return model_pb2.Step(run=action, **fields)  # type: ignore[arg-type]


def checkout() -> model_pb2.Step:
    return model_pb2.Step(checkout=model_pb2.CheckoutStep(fetch_depth=1))


def small() -> model_pb2.PipelineDefinition:
    """Two jobs, one needing the other."""
    return model_pb2.PipelineDefinition(
        triggers=[model_pb2.Trigger(push=model_pb2.PushTrigger(branches=["main"]))],
        jobs=[
            model_pb2.Job(id="build", steps=[checkout(), run("make build")]),
            model_pb2.Job(id="test", needs=["build"], steps=[checkout(), run("make test")]),
        ],
    )


def everything() -> model_pb2.PipelineDefinition:
    """Every feature of the model at least once."""
    retry = model_pb2.Retry(
        limit=3,
        backoff=model_pb2.Backoff(initial=duration_pb2.Duration(seconds=5), factor=2, max=minutes(1)),
        on=model_pb2.RetryOn(exit_codes=[75], timeout=True, infrastructure=True),
    )
    return model_pb2.PipelineDefinition(
        triggers=[
            model_pb2.Trigger(push=model_pb2.PushTrigger(branches=["main"], tags=["v*"], paths=["src/**"])),
            model_pb2.Trigger(pull_request=model_pb2.PullRequestTrigger(branches=["main"], paths=["src/**"])),
            model_pb2.Trigger(schedule=model_pb2.ScheduleTrigger(cron="0 3 * * 1")),
            model_pb2.Trigger(
                manual=model_pb2.ManualTrigger(
                    inputs=[
                        model_pb2.Input(
                            name="target",
                            type=model_pb2.INPUT_TYPE_CHOICE,
                            options=["staging", "production"],
                            default_value=value("staging"),
                            description="where to deploy",
                        ),
                        model_pb2.Input(
                            name="dry_run", type=model_pb2.INPUT_TYPE_BOOLEAN, default_value=value(True)
                        ),
                    ]
                )
            ),
        ],
        env={"CI": value("true"), "LEVEL": value(2), "TOKEN": value({"$secret": "deploy-token#value"})},
        timeout=duration_pb2.Duration(seconds=7200),
        concurrency=model_pb2.Concurrency(
            group="ci-main", mode=model_pb2.CONCURRENCY_MODE_CANCEL_IN_PROGRESS
        ),
        jobs=[
            model_pb2.Job(
                id="test",
                name="Tests",
                matrix=model_pb2.Matrix(
                    axes=[
                        model_pb2.MatrixAxis(name="python", values=["3.11", "3.12"]),
                        model_pb2.MatrixAxis(name="os", values=["ubuntu-latest", "macos-latest"]),
                    ],
                    include=[model_pb2.MatrixCombination(values={"python": "3.13", "os": "ubuntu-latest"})],
                    exclude=[model_pb2.MatrixCombination(values={"python": "3.11", "os": "macos-latest"})],
                    max_parallel=2,
                    fail_fast=False,
                ),
                runs_on=["${{ matrix.os }}"],
                services=[
                    model_pb2.ServiceContainer(
                        id="postgres",
                        image="postgres:16",
                        env={"POSTGRES_PASSWORD": value("postgres")},
                        ports=[5432],
                    )
                ],
                env={"PGHOST": value("postgres")},
                timeout=minutes(30),
                retry=model_pb2.Retry(limit=2, on=model_pb2.RetryOn(infrastructure=True)),
                paths=["src/**", "tests/**"],
                steps=[
                    checkout(),
                    model_pb2.Step(setup=model_pb2.SetupStep(tool="python", version="${{ matrix.python }}")),
                    model_pb2.Step(
                        cache=model_pb2.CacheStep(
                            paths=["~/.cache/pip"], key_prefix="pip", key_files=["requirements*.txt"]
                        )
                    ),
                    run("pip install -r requirements.txt", name="Install"),
                    run(
                        "pytest -q --junitxml=report.xml",
                        id="pytest",
                        timeout=minutes(20),
                        retry=retry,
                        env={"PYTHONHASHSEED": value("0")},
                    ),
                    model_pb2.Step(
                        artifact=model_pb2.ArtifactStep(
                            name="report-${{ matrix.python }}-${{ matrix.os }}",
                            paths=["report.xml"],
                            retention_days=7,
                            always=True,
                        )
                    ),
                ],
            ),
            model_pb2.Job(
                id="deploy",
                needs=["test"],
                runs_on=["ubuntu-latest"],
                condition=model_pb2.Condition(
                    when=model_pb2.WHEN_ON_SUCCESS, expression="event == 'manual' && !inputs.dry_run"
                ),
                approval=model_pb2.Approval(environment="production", reviewers=["release-team"]),
                concurrency=model_pb2.Concurrency(
                    group="deploy-${{ inputs.target }}", mode=model_pb2.CONCURRENCY_MODE_QUEUE
                ),
                steps=[checkout(), run("./deploy.sh ${{ inputs.target }}", working_directory="ops")],
            ),
        ],
        finally_jobs=[
            model_pb2.Job(
                id="notify",
                condition=model_pb2.Condition(when=model_pb2.WHEN_ALWAYS),
                steps=[run("echo finished", shell="sh")],
            )
        ],
    )
