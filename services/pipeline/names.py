"""Resource names of the pipeline service (AIP-122) and the ids inside them."""

from __future__ import annotations

from services.runtime.resource_names import NUMBER, IdRule, ResourceName

PROJECT = ResourceName("projects/{project}")
PIPELINE = ResourceName("projects/{project}/pipelines/{pipeline}")
REVISION = ResourceName("projects/{project}/pipelines/{pipeline}/revisions/{revision}", {"revision": NUMBER})


def parse_project(name: str, field: str = "name") -> str:
    (project,) = PROJECT.parse(name, field)
    return project


def parse_pipeline(name: str, field: str = "name") -> tuple[str, str]:
    """(project, pipeline)."""
    project, pipeline = PIPELINE.parse(name, field)
    return project, pipeline


def project_name(project: str) -> str:
    return PROJECT.format(project)


def pipeline_name(project: str, pipeline: str) -> str:
    return PIPELINE.format(project, pipeline)


def revision_name(project: str, pipeline: str, revision: int) -> str:
    return REVISION.format(project, pipeline, str(revision))


RUN = ResourceName("projects/{project}/pipelines/{pipeline}/runs/{run}")
JOB_KEY = IdRule(r"[a-z][a-z0-9_-]{0,62}(\.[0-9]{1,3})?", "a job id, and `.<n>` for a matrix combination")
ATTEMPT = ResourceName(
    "projects/{project}/pipelines/{pipeline}/runs/{run}/jobs/{job}/attempts/{attempt}",
    {"job": JOB_KEY, "attempt": NUMBER},
)


def parse_run(name: str, field: str = "name") -> tuple[str, str, str]:
    """(project, pipeline, run)."""
    project, pipeline, run = RUN.parse(name, field)
    return project, pipeline, run


def run_name(project: str, pipeline: str, run: str) -> str:
    return RUN.format(project, pipeline, run)


def attempt_name(project: str, pipeline: str, run: str, job: str, number: int) -> str:
    return ATTEMPT.format(project, pipeline, run, job, str(number))


ARTIFACT_ID = IdRule(r"[a-z0-9][a-z0-9._-]{0,127}", "an artifact id, `[a-z0-9][a-z0-9._-]{0,127}`")
ARTIFACT = ResourceName(
    "projects/{project}/pipelines/{pipeline}/runs/{run}/artifacts/{artifact}", {"artifact": ARTIFACT_ID}
)


def artifact_name(project: str, pipeline: str, run: str, artifact: str) -> str:
    return ARTIFACT.format(project, pipeline, run, artifact)
