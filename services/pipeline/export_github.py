"""A pipeline definition as a GitHub Actions workflow (a plain dict, for the YAML serializer).

What GitHub Actions cannot express is degraded and said: no native retry (a bounded retry
loop inside the run step, same limit, backoff and exit codes; timeouts and lost runners are
not retried), no path filter per job, no pipeline-wide timeout, a concurrency queue that
keeps only the newest pending run, approvers configured on the environment, not in the file.
"""

from __future__ import annotations

from typing import Any

from devmesh.pipeline.v1 import model_pb2
from services.pipeline import expressions
from services.pipeline.export_common import (
    RETRYABLE_SHELLS,
    Warnings,
    env_value,
    loop_retries,
    minutes,
    retried_command,
)

PATH = ".github/workflows/ci.yml"
DEFAULT_RUNNER = "ubuntu-latest"
EVENTS = {
    "push": "push",
    "pull_request": "pull_request",
    "schedule": "schedule",
    "manual": "workflow_dispatch",
}
INPUT_TYPES = {
    model_pb2.INPUT_TYPE_UNSPECIFIED: "string",
    model_pb2.INPUT_TYPE_STRING: "string",
    model_pb2.INPUT_TYPE_BOOLEAN: "boolean",
    model_pb2.INPUT_TYPE_NUMBER: "number",
    model_pb2.INPUT_TYPE_CHOICE: "choice",
}
SECRET = "${{{{ secrets.{name} }}}}"
SETUP_ACTIONS = {
    "python": ("actions/setup-python@v5", "python-version"),
    "node": ("actions/setup-node@v4", "node-version"),
    "go": ("actions/setup-go@v5", "go-version"),
    "java": ("actions/setup-java@v4", "java-version"),
    "dotnet": ("actions/setup-dotnet@v4", "dotnet-version"),
    "ruby": ("ruby/setup-ruby@v1", "ruby-version"),
    "php": ("shivammathur/setup-php@v2", "php-version"),
    "bun": ("oven-sh/setup-bun@v2", "bun-version"),
}
PIPX_TOOLS = ("poetry", "pdm", "pipenv", "hatch", "tox", "nox")


def _operand(operand: expressions.Ref | expressions.Literal, event_side: bool) -> str:
    if isinstance(operand, expressions.Ref):
        return {"event": "github.event_name", "branch": "github.ref_name"}.get(operand.scope) or (
            f"inputs.{operand.name}"
        )
    if isinstance(operand.value, bool):
        return "true" if operand.value else "false"
    text = EVENTS.get(operand.value, operand.value) if event_side else operand.value
    return "'" + text.replace("'", "''") + "'"


def render_expression(expr: expressions.Expr) -> str:
    """The condition in GitHub's expression syntax."""
    if isinstance(expr, expressions.Compare):
        event_side = any(
            isinstance(s, expressions.Ref) and s.scope == "event" for s in (expr.left, expr.right)
        )
        return f"{_operand(expr.left, event_side)} {expr.op} {_operand(expr.right, event_side)}"
    if isinstance(expr, expressions.Truthy):
        return _operand(expr.operand, False)
    if isinstance(expr, expressions.Not):
        return f"!({render_expression(expr.operand)})"
    op = "&&" if isinstance(expr, expressions.And) else "||"
    return f"({render_expression(expr.left)}) {op} ({render_expression(expr.right)})"


def _condition(condition: model_pb2.Condition | None, *, finally_job: bool = False) -> str:
    statuses: dict[int, str] = {model_pb2.WHEN_ON_FAILURE: "failure()", model_pb2.WHEN_ALWAYS: "always()"}
    status = statuses.get(condition.when if condition else 0, "")
    if finally_job:
        status = "always()"
    expression = (
        render_expression(expressions.parse(condition.expression))
        if condition and condition.expression
        else ""
    )
    if status and expression:
        return f"{status} && ({expression})"
    return status or expression


class _GitHub:
    def __init__(self, definition: model_pb2.PipelineDefinition, name: str) -> None:
        self.d = definition
        self.name = name
        self.w = Warnings()

    def env(self, env: Any, path: str) -> dict[str, str]:
        return {k: env_value(env[k], SECRET, self.w, f"{path}.{k}") for k in sorted(env)}

    def triggers(self) -> dict[str, Any]:
        on: dict[str, Any] = {}
        for t, trigger in enumerate(self.d.triggers):
            path = f"triggers[{t}]"
            event = trigger.WhichOneof("event")
            if event == "push":
                push = trigger.push
                filters = {
                    k: list(v)
                    for k, v in (("branches", push.branches), ("tags", push.tags), ("paths", push.paths))
                    if v
                }
                self._merge(on, "push", filters, path)
            elif event == "pull_request":
                pr = trigger.pull_request
                filters = {k: list(v) for k, v in (("branches", pr.branches), ("paths", pr.paths)) if v}
                self._merge(on, "pull_request", filters, path)
            elif event == "schedule":
                on.setdefault("schedule", []).append({"cron": trigger.schedule.cron})
            elif event == "manual":
                inputs: dict[str, Any] = {}
                for spec in trigger.manual.inputs:
                    entry: dict[str, Any] = {
                        "description": spec.description or spec.name,
                        "required": spec.required,
                        "type": INPUT_TYPES[spec.type],
                    }
                    if spec.HasField("default_value"):
                        kind = spec.default_value.WhichOneof("kind")
                        entry["default"] = getattr(spec.default_value, kind) if kind else ""
                        if isinstance(entry["default"], float) and entry["default"].is_integer():
                            entry["default"] = int(entry["default"])
                    if spec.options:
                        entry["options"] = list(spec.options)
                    inputs[spec.name] = entry
                self._merge(on, "workflow_dispatch", {"inputs": inputs} if inputs else {}, path)
        return on or {"workflow_dispatch": None}

    def _merge(self, on: dict[str, Any], event: str, entry: dict[str, Any], path: str) -> None:
        if event not in on:
            on[event] = entry or None
            return
        self.w.add(
            "TRIGGERS_MERGED",
            f"a GitHub workflow has one `{event}` trigger: this one's filters are merged with the first's",
            path,
        )
        merged = on[event] or {}
        for key, values in entry.items():
            if isinstance(values, list):
                merged[key] = list(dict.fromkeys([*merged.get(key, []), *values]))
            else:
                merged.setdefault(key, {}).update(values)
        on[event] = merged or None

    def concurrency(self, concurrency: model_pb2.Concurrency, path: str) -> dict[str, Any]:
        cancel = concurrency.mode == model_pb2.CONCURRENCY_MODE_CANCEL_IN_PROGRESS
        if not cancel:
            self.w.add(
                "CONCURRENCY_DEGRADED",
                "GitHub queues at most one pending run per concurrency group: an older pending run is "
                "cancelled when a newer one arrives, not kept in the queue",
                path,
            )
        return {"group": concurrency.group, "cancel-in-progress": cancel}

    def job(self, job: model_pb2.Job, path: str, finally_needs: list[str] | None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if job.name:
            out["name"] = job.name
        labels = list(job.runs_on) or [DEFAULT_RUNNER]
        out["runs-on"] = labels[0] if len(labels) == 1 else labels
        needs = list(job.needs) + (finally_needs or [])
        if needs:
            out["needs"] = needs
        condition = _condition(
            job.condition if job.HasField("condition") else None, finally_job=finally_needs is not None
        )
        if condition:
            out["if"] = condition
        if job.HasField("approval"):
            out["environment"] = {"name": job.approval.environment}
            if job.approval.reviewers:
                self.w.add(
                    "APPROVAL_REVIEWERS",
                    f"GitHub takes the reviewers of environment {job.approval.environment!r} from its "
                    f"protection rules: add {', '.join(job.approval.reviewers)} there",
                    f"{path}.approval.reviewers",
                )
        if job.HasField("concurrency"):
            out["concurrency"] = self.concurrency(job.concurrency, f"{path}.concurrency")
        if job.HasField("timeout"):
            out["timeout-minutes"] = minutes(job.timeout, self.w, f"{path}.timeout")
        else:
            out["timeout-minutes"] = 60  # the model's default; GitHub's own is 360
        if job.allow_failure:
            out["continue-on-error"] = True
        if job.container:
            out["container"] = job.container
        if job.HasField("matrix"):
            out["strategy"] = self.strategy(job.matrix)
        if job.services:
            out["services"] = {}
            for s, service in enumerate(job.services):
                entry: dict[str, Any] = {"image": service.image}
                if service.env:
                    entry["env"] = self.env(service.env, f"{path}.services[{s}].env")
                if service.ports:
                    entry["ports"] = [f"{p}:{p}" for p in service.ports]
                out["services"][service.id] = entry
            if not job.container:
                self.w.add(
                    "SERVICE_HOST",
                    "on a GitHub runner (no job container) the steps reach services at localhost and their "
                    "mapped ports, not by the service id",
                    f"{path}.services",
                )
        if job.env:
            out["env"] = self.env(job.env, f"{path}.env")
        if job.working_directory:
            out["defaults"] = {"run": {"working-directory": job.working_directory}}
        if job.paths:
            self.w.add(
                "PATH_FILTER_DEGRADED",
                "GitHub Actions filters paths per workflow, not per job: this job runs on every change "
                f"the triggers let through (it asked for {', '.join(job.paths[:5])})",
                f"{path}.paths",
            )
        if job.HasField("retry"):
            self.w.add(
                "RETRY_DEGRADED",
                "GitHub Actions cannot retry a job: its run steps retry instead (a bounded loop with the "
                "same limit and backoff)",
                f"{path}.retry",
            )
        out["steps"] = [
            s
            for i, step in enumerate(job.steps)
            for s in self.step(step, f"{path}.steps[{i}]", job.retry if job.HasField("retry") else None)
        ]
        return out

    def strategy(self, matrix: model_pb2.Matrix) -> dict[str, Any]:
        values: dict[str, Any] = {axis.name: list(axis.values) for axis in matrix.axes}
        if matrix.include:
            values["include"] = [dict(sorted(c.values.items())) for c in matrix.include]
        if matrix.exclude:
            values["exclude"] = [dict(sorted(c.values.items())) for c in matrix.exclude]
        strategy: dict[str, Any] = {"matrix": values}
        strategy["fail-fast"] = matrix.fail_fast if matrix.HasField("fail_fast") else True
        if matrix.max_parallel:
            strategy["max-parallel"] = matrix.max_parallel
        return strategy

    def step(
        self, step: model_pb2.Step, path: str, job_retry: model_pb2.Retry | None
    ) -> list[dict[str, Any]]:
        common: dict[str, Any] = {}
        if step.id:
            common["id"] = step.id
        if step.name:
            common["name"] = step.name
        if step.HasField("condition"):
            condition = _condition(step.condition)
            if condition:
                common["if"] = condition
        action = step.WhichOneof("action")
        before: list[dict[str, Any]] = []
        body: dict[str, Any]
        if action == "checkout":
            with_: dict[str, Any] = {"fetch-depth": step.checkout.fetch_depth}
            if step.checkout.submodules:
                with_["submodules"] = "recursive"
            body = {"uses": "actions/checkout@v4", "with": with_}
        elif action == "setup":
            before, body = self.setup(step.setup)
        elif action == "cache":
            cache = step.cache
            files = ", ".join("'" + f.replace("'", "''") + "'" for f in cache.key_files)
            prefix = f"${{{{ runner.os }}}}-{cache.key_prefix or 'cache'}-"
            body = {
                "uses": "actions/cache@v4",
                "with": {
                    "path": "\n".join(cache.paths),
                    "key": f"{prefix}${{{{ hashFiles({files}) }}}}",
                    "restore-keys": prefix,
                },
            }
        elif action == "artifact":
            artifact = step.artifact
            with_ = {"name": artifact.name, "path": "\n".join(artifact.paths)}
            if artifact.retention_days:
                with_["retention-days"] = artifact.retention_days
            body = {"uses": "actions/upload-artifact@v4", "with": with_}
            if artifact.always and "if" not in common:
                common["if"] = "always()"
        else:
            body = self.run(step, path, job_retry)
        if step.env:
            common["env"] = self.env(step.env, f"{path}.env")
        if step.HasField("timeout"):
            common["timeout-minutes"] = minutes(step.timeout, self.w, f"{path}.timeout")
        if step.continue_on_error:
            common["continue-on-error"] = True
        if step.HasField("retry") and action != "run":
            self.w.add(
                "RETRY_DROPPED",
                "GitHub Actions retries only run steps here: this retry is dropped",
                f"{path}.retry",
            )
        return [*before, {**common, **body}]

    def run(self, step: model_pb2.Step, path: str, job_retry: model_pb2.Retry | None) -> dict[str, Any]:
        run = step.run
        command = run.command
        retry = step.retry if step.HasField("retry") else job_retry
        if retry is not None:
            where = f"{path}.retry" if step.HasField("retry") else path
            if retry.on.timeout or retry.on.infrastructure:
                self.w.add(
                    "RETRY_DEGRADED",
                    "a retry inside the step cannot catch a timeout or a lost runner; those are not retried",
                    where,
                )
            if not loop_retries(retry):
                pass
            elif run.shell in RETRYABLE_SHELLS:
                command = retried_command(command, retry)
            else:
                self.w.add(
                    "RETRY_DROPPED", f"no retry loop for a {run.shell} step: the retry is dropped", path
                )
        body: dict[str, Any] = {"run": command}
        if run.shell:
            body["shell"] = run.shell
        if run.working_directory:
            body["working-directory"] = run.working_directory
        return body

    def setup(self, setup: model_pb2.SetupStep) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        before: list[dict[str, Any]] = []
        manager = setup.package_manager
        if setup.tool == "rust":
            version = setup.version or "stable"
            command = (
                f"rustup toolchain install {version} --profile minimal --component clippy,rustfmt\n"
                f"rustup default {version}"
            )
            return before, {"run": command}
        action, key = SETUP_ACTIONS[setup.tool]
        with_: dict[str, Any] = {key: setup.version} if setup.version else {}
        if setup.tool == "java":
            with_["distribution"] = "temurin"
        if setup.tool == "node" and manager in ("pnpm", "yarn"):
            before.append({"run": "corepack enable"})
        body = {"uses": action, **({"with": with_} if with_ else {})}
        if setup.tool == "python" and manager == "uv":
            return before, {
                "uses": "astral-sh/setup-uv@v5",
                "with": {"python-version": setup.version} if setup.version else {},
            }
        if setup.tool == "python" and manager in PIPX_TOOLS:
            return [], body | {"name": f"Python {setup.version}".strip()}
        return before, body

    def workflow(self) -> dict[str, Any]:
        workflow: dict[str, Any] = {"name": self.name, "on": self.triggers()}
        if self.d.env:
            workflow["env"] = self.env(self.d.env, "env")
        if self.d.HasField("concurrency"):
            workflow["concurrency"] = self.concurrency(self.d.concurrency, "concurrency")
        if self.d.HasField("timeout"):
            self.w.add(
                "TIMEOUT_DEGRADED",
                "GitHub Actions has no timeout for a whole workflow run; each job keeps its own",
                "timeout",
            )
        jobs: dict[str, Any] = {}
        for i, job in enumerate(self.d.jobs):
            jobs[job.id] = self.job(job, f"jobs[{i}]", None)
        regular = [job.id for job in self.d.jobs]
        for i, job in enumerate(self.d.finally_jobs):
            jobs[job.id] = self.job(job, f"finally_jobs[{i}]", regular)
        workflow["jobs"] = jobs
        self._pipx_installs(jobs)
        return workflow

    def _pipx_installs(self, jobs: dict[str, Any]) -> None:
        """Python package managers other than pip and uv come from pipx, right after Python."""
        for i, job in enumerate([*self.d.jobs, *self.d.finally_jobs]):
            rendered = jobs[job.id]["steps"]
            for step in job.steps:
                if (
                    step.HasField("setup")
                    and step.setup.tool == "python"
                    and step.setup.package_manager in PIPX_TOOLS
                ):
                    at = next(
                        (
                            n
                            for n, s in enumerate(rendered)
                            if s.get("uses", "").startswith("actions/setup-python")
                        ),
                        -1,
                    )
                    rendered.insert(at + 1, {"run": f"pipx install {step.setup.package_manager}"})
            del i


def export(definition: model_pb2.PipelineDefinition, name: str) -> tuple[dict[str, Any], Warnings]:
    """The workflow and what had to be degraded."""
    github = _GitHub(definition, name)
    return github.workflow(), github.w
