"""GeneratePipeline's core: a snapshot in, a validated pipeline definition out, with the stacks
found, the rationale of every decision, the warnings, and where the proposal differs from the
repository's own CI. Nothing of the repository is executed: files are only read."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

from google.protobuf import duration_pb2

from devmesh.pipeline.v1 import model_pb2
from services.pipeline import commands, validation
from services.pipeline.detection import ci_preference, containers, discovery, existing_ci
from services.pipeline.detection.report import Evidence, Report
from services.pipeline.detection.stack import AUDIT, BUILD, CHECKS, INSTALL, TEST, Stack
from services.pipeline.snapshot import Snapshot, display
from services.runtime.errors import FailedPrecondition, InvalidArgument, PreconditionViolation

SECRET_SCAN = "secret-scan"
DEPENDENCY_AUDIT = "dependency-audit"
GITLEAKS = "go run github.com/zricethezav/gitleaks/v8@v8.21.2 detect --source . --no-git --redact --verbose"
BRANCH = re.compile(r"[A-Za-z0-9._/*-]{1,255}")
MAX_DIFFERENCES = 50
PURPOSE_NAMES = {"install": "Install", "format": "Format check", "lint": "Lint", "typecheck": "Type check",
                 "test": "Test", "build": "Build", "audit": "Audit"}  # fmt: skip


@dataclass(frozen=True)
class Options:
    skip_gates: frozenset[str] = frozenset()
    default_branch: str = "main"

    @classmethod
    def checked(cls, skip_gates: list[str], default_branch: str, field: str = "options") -> Options:
        for i, gate in enumerate(skip_gates):
            if gate not in validation.GATES:
                raise InvalidArgument.for_field(
                    f"{field}.skip_gates[{i}]", f"{gate[:40]!r} is not a gate ({', '.join(validation.GATES)})"
                )
        if default_branch and not BRANCH.fullmatch(default_branch):
            raise InvalidArgument.for_field(f"{field}.default_branch", "is not a branch name")
        return cls(frozenset(skip_gates), default_branch or "main")


@dataclass(frozen=True)
class Difference:
    only_in_existing: bool
    command: str
    evidence: Evidence


@dataclass
class Generated:
    definition: model_pb2.PipelineDefinition
    stacks: list[Stack]
    report: Report
    differences: list[Difference] = field(default_factory=list)
    file_count: int = 0


def _slug(stack: Stack) -> str:
    """A job id prefix: the ecosystem at the root, `<directory>-<ecosystem>` in a monorepo (and
    a Dockerfile's own name when it is not plain `Dockerfile`)."""
    directory = stack.directory
    if (
        stack.ecosystem == "docker"
        and stack.tools
        and not stack.tools[0].endswith("/Dockerfile")
        and stack.tools[0] != "Dockerfile"
    ):
        directory = stack.tools[0]
    base = re.sub(r"[^a-z0-9]+", "-", directory.lower()).strip("-")
    slug = f"{base}-{stack.ecosystem}" if base else stack.ecosystem
    if not slug[0].isalpha():
        slug = f"p-{slug}"
    if len(slug) > 50:  # room for `-lint`, `-audit`: shortened, kept unique by a hash
        slug = slug[:41].rstrip("-") + "-" + hashlib.sha1(slug.encode()).hexdigest()[:8]
    return slug


def _run(command: str, name: str) -> model_pb2.Step:
    return model_pb2.Step(name=name, run=model_pb2.RunStep(command=command))


class _Builder:
    def __init__(self, stacks: list[Stack], options: Options, report: Report) -> None:
        self.stacks = stacks
        self.options = options
        self.report = report
        self.monorepo = len({s.directory for s in stacks}) > 1 or any(s.directory for s in stacks)

    def preamble(self, stack: Stack, version: str) -> list[model_pb2.Step]:
        steps = [model_pb2.Step(checkout=model_pb2.CheckoutStep(fetch_depth=1))]
        if stack.tool:
            setup = model_pb2.SetupStep(tool=stack.tool, version=version)
            if stack.package_manager in ("uv", "poetry", "pdm", "pipenv", "pnpm", "yarn"):
                setup.package_manager = stack.package_manager
            steps.append(model_pb2.Step(setup=setup))
        if stack.cache is not None:
            steps.append(
                model_pb2.Step(
                    cache=model_pb2.CacheStep(
                        paths=list(stack.cache.paths),
                        key_files=list(stack.cache.key_files),
                        key_prefix=stack.cache.prefix,
                    )
                )
            )
        steps += [_run(c, PURPOSE_NAMES[INSTALL]) for c in stack.commands.get(INSTALL, [])]
        return steps

    def job(
        self, job_id: str, name: str, stack: Stack, steps: list[model_pb2.Step], **fields: object
    ) -> model_pb2.Job:
        job = model_pb2.Job(id=job_id, name=name, steps=steps, **fields)  # type: ignore[arg-type]
        if stack.directory:
            job.working_directory = stack.directory
        if self.monorepo:
            job.paths.extend([f"{stack.directory}/**" if stack.directory else "**", *stack.shared_paths])
        for key, value in sorted(stack.env.items()):
            job.env[key].string_value = value
        if stack.container:
            job.container = stack.container
        job.timeout.CopyFrom(duration_pb2.Duration(seconds=30 * 60))
        return job

    def jobs_of(self, stack: Stack) -> list[model_pb2.Job]:
        slug = _slug(stack)
        where = display(stack.directory)
        label = f"{stack.ecosystem} ({where})" if self.monorepo else stack.ecosystem
        jobs: list[model_pb2.Job] = []
        newest = stack.versions[-1] if stack.versions else ""
        checks = [(p, c) for p in CHECKS for c in stack.commands.get(p, [])]
        if checks:
            steps = self.preamble(stack, newest) + [_run(c, PURPOSE_NAMES[p]) for p, c in checks]
            jobs.append(self.job(f"{slug}-lint", f"Lint {label}", stack, steps))
        test_id = ""
        if stack.commands.get(TEST):
            matrix = None
            version = newest
            if len(stack.versions) > 1 and stack.tool:
                axis = stack.tool
                matrix = model_pb2.Matrix(
                    axes=[model_pb2.MatrixAxis(name=axis, values=stack.versions)], fail_fast=False
                )
                version = f"${{{{ matrix.{axis} }}}}"
            steps = self.preamble(stack, version) + [
                _run(c, PURPOSE_NAMES[TEST]) for c in stack.commands[TEST]
            ]
            test = self.job(f"{slug}-test", f"Test {label}", stack, steps)
            if matrix is not None:
                test.matrix.CopyFrom(matrix)
                if stack.cache is not None:
                    for step in test.steps:
                        if step.HasField("cache"):
                            step.cache.key_prefix = f"{stack.cache.prefix}-{axis}{len(stack.versions)}"
            jobs.append(test)
            test_id = test.id
        if stack.commands.get(BUILD):
            steps = self.preamble(stack, newest) + [
                _run(c, PURPOSE_NAMES[BUILD]) for c in stack.commands[BUILD]
            ]
            name = {"docker": "Image", "helm": "Chart"}.get(stack.ecosystem, "Build")
            jobs.append(
                self.job(f"{slug}-build", f"{name} {label}", stack, steps, needs=[test_id] if test_id else [])
            )
        if stack.commands.get(AUDIT) and DEPENDENCY_AUDIT not in self.options.skip_gates:
            steps = self.preamble(stack, newest) + [
                _run(c, PURPOSE_NAMES[AUDIT]) for c in stack.commands[AUDIT]
            ]
            jobs.append(self.job(f"{slug}-audit", f"Dependency audit {label}", stack, steps))
        return jobs

    def definition(self) -> model_pb2.PipelineDefinition:
        branch = self.options.default_branch
        definition = model_pb2.PipelineDefinition(
            triggers=[
                model_pb2.Trigger(push=model_pb2.PushTrigger(branches=[branch])),
                model_pb2.Trigger(pull_request=model_pb2.PullRequestTrigger()),
            ]
        )
        taken: set[str] = set()
        for stack in self.stacks:
            for job in self.jobs_of(stack):
                base, n = job.id, 1
                while job.id in taken:  # two projects that slug alike
                    n += 1
                    job.id = f"{base[:58]}-{n}"
                taken.add(job.id)
                definition.jobs.append(job)
        if SECRET_SCAN not in self.options.skip_gates:
            definition.jobs.append(
                model_pb2.Job(
                    id=SECRET_SCAN,
                    name="Secret scan",
                    timeout=duration_pb2.Duration(seconds=15 * 60),
                    steps=[
                        model_pb2.Step(checkout=model_pb2.CheckoutStep(fetch_depth=1)),
                        model_pb2.Step(setup=model_pb2.SetupStep(tool="go", version="stable")),
                        _run(GITLEAKS, "Scan the checkout for secrets"),
                    ],
                )
            )
            self.report.decide(
                "security gate",
                "",
                "secret scan of the checkout (gitleaks)",
                Evidence("", 0, "every repository"),
            )
        else:
            self.report.decide(
                "security gate", "", "secret scan skipped", Evidence("", 0, "options.skip_gates")
            )
        if DEPENDENCY_AUDIT in self.options.skip_gates:
            self.report.decide(
                "security gate", "", "dependency audit skipped", Evidence("", 0, "options.skip_gates")
            )
        return definition


def _differences(ci: existing_ci.CiEvidence, definition: model_pb2.PipelineDefinition) -> list[Difference]:
    if not ci:
        return []
    existing = {commands.signature(c.command): c for c in ci.commands if commands.interesting(c.command)}
    existing.pop("", None)
    generated: dict[str, str] = {}
    for job in definition.jobs:
        for step in job.steps:
            if step.HasField("run") and not step.name.startswith(("Install", "Audit", "Scan")):
                signature = commands.signature(step.run.command)
                if signature:
                    generated.setdefault(signature, job.id)
    found = [
        Difference(True, c.command, c.evidence) for s, c in sorted(existing.items()) if s not in generated
    ][:MAX_DIFFERENCES]
    found += [
        Difference(False, signature, Evidence("", 0, job_id))
        for signature, job_id in sorted(generated.items())
        if signature not in existing
    ][:MAX_DIFFERENCES]
    return found


def generate(snapshot: Snapshot, options: Options) -> Generated:
    """Detect the snapshot's stacks and propose a pipeline; FAILED_PRECONDITION when nothing is
    recognised."""
    report = Report()
    ci = existing_ci.read(snapshot, report)
    if ci:
        report.decide(
            "existing CI", "", ", ".join(ci.files), *(Evidence(p, 0, "read as evidence") for p in ci.files)
        )
    stacks: list[Stack] = []
    for ecosystem, directory in discovery.projects(snapshot, report):
        stack = ecosystem.detect(snapshot, directory, ci, report)
        if stack is not None:
            ci_preference.prefer(stack, ci, snapshot, report)
            stacks.append(stack)
    charts = containers.helm_charts(snapshot, discovery.skipped)
    for stack in [
        *containers.dockerfiles(snapshot, discovery.skipped),
        *charts,
        *containers.kubernetes_manifests(snapshot, discovery.skipped, [c.directory for c in charts]),
    ]:
        containers.decide(report, stack)
        stacks.append(stack)
    if not stacks:
        raise FailedPrecondition(
            f"nothing in the repository's {len(snapshot)} files was recognised; looked for {discovery.LOOKED_FOR}",
            [PreconditionViolation("NOTHING_RECOGNISED", "repository", f"looked for {discovery.LOOKED_FOR}")],
            reason="NOTHING_RECOGNISED",
        )
    for stack in stacks:
        if stack.ecosystem == "docker":
            report.warn(
                "DOCKER_NEEDS_DAEMON",
                f"building {stack.tools[0] if stack.tools else 'the image'} needs a Docker daemon: GitHub's hosted "
                "runners have one; on GitLab use a runner with Docker (or docker:dind)",
            )
    builder = _Builder(stacks, options, report)
    definition = builder.definition()
    try:
        validation.validate(definition, "definition")
    except InvalidArgument as exc:  # a proposal that does not validate is our bug, not the caller's
        raise RuntimeError(f"the generated pipeline does not validate: {exc.message}") from exc
    return Generated(definition, stacks, report, _differences(ci, definition), len(snapshot))
