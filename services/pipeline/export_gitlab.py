"""A pipeline definition as a GitLab CI file (a plain dict, for the YAML serializer).

Degradations, each said in a warning: `retry.max` is at most 2 and has no backoff (a bounded
loop in the script retries run steps instead when the model asks for more, or for a backoff);
a job runs in one image, so only its first toolchain picks the image; cache paths must lie in
the checkout; a schedule's cron is set in GitLab's settings, not in the file; approval gates
are `when: manual` jobs of an environment whose approvers GitLab's settings name; step-level
conditions and timeouts do not exist.
"""

from __future__ import annotations

import re
from typing import Any

from devmesh.pipeline.v1 import model_pb2
from services.pipeline import expressions
from services.pipeline.export_common import (
    RETRYABLE_SHELLS,
    Warnings,
    env_value,
    levels,
    loop_retries,
    minutes,
    quote,
    retried_command,
    tolerated_command,
)

PATH = ".gitlab-ci.yml"
SECRET = "${name}"
EVENTS = {"push": "push", "pull_request": "merge_request_event", "schedule": "schedule", "manual": "web"}
MAX_RETRY = 2
KEYWORDS = frozenset(
    {"image", "services", "stages", "types", "before_script", "after_script", "variables", "cache", "include",
     "workflow", "default", "pages", "spec"}
)  # fmt: skip
IMAGES = {
    "python": "python:{v}",
    "node": "node:{v}",
    "go": "golang:{v}",
    "java": "eclipse-temurin:{v}",
    "rust": "rust:{v}",
    "dotnet": "mcr.microsoft.com/dotnet/sdk:{v}",
    "ruby": "ruby:{v}",
    "php": "php:{v}-cli",
    "bun": "oven/bun:{v}",
}
MANAGER_INSTALLS = {
    "uv": "pip install uv",
    "poetry": "pip install poetry",
    "pdm": "pip install pdm",
    "pipenv": "pip install pipenv",
    "hatch": "pip install hatch",
    "tox": "pip install tox",
    "nox": "pip install nox",
    "pnpm": "corepack enable",
    "yarn": "corepack enable",
    "composer": "apt-get update -qq && apt-get install -y -qq unzip git >/dev/null && "
    "curl -sS https://getcomposer.org/installer | php -- --install-dir=/usr/local/bin --filename=composer",
}
PLACEHOLDERS = {"matrix": "${name}", "inputs": "${name}"}


def variables(text: str) -> str:
    """Placeholders as GitLab variables (matrix axes and inputs are variables there)."""
    return expressions.substitute(text, PLACEHOLDERS)


def _glob_regex(patterns: list[str]) -> str:
    parts = [re.escape(p).replace(r"\*\*", ".*").replace(r"\*", "[^/]*") for p in patterns]
    return "/^(" + "|".join(parts) + ")$/"


def _simplify(expr: expressions.Expr) -> expressions.Expr | bool:
    """The expression with literal comparisons and `true`/`false` folded away (GitLab rules
    compare variables with strings, nothing else)."""
    if isinstance(expr, expressions.Truthy) and isinstance(expr.operand, expressions.Literal):
        return bool(expr.operand.value)
    if isinstance(expr, expressions.Compare) and all(
        isinstance(s, expressions.Literal) for s in (expr.left, expr.right)
    ):
        same = expr.left == expr.right
        return same if expr.op == "==" else not same
    if isinstance(expr, expressions.And | expressions.Or):
        left, right = _simplify(expr.left), _simplify(expr.right)
        is_and = isinstance(expr, expressions.And)
        for a, b in ((left, right), (right, left)):
            if isinstance(a, bool):
                if is_and:
                    return b if a else False
                return True if a else b
        assert not isinstance(left, bool) and not isinstance(right, bool)
        return (expressions.And if is_and else expressions.Or)(left, right)
    return expr


def _operand(operand: expressions.Ref | expressions.Literal, event_side: bool) -> str:
    if isinstance(operand, expressions.Ref):
        return {"event": "$CI_PIPELINE_SOURCE", "branch": "$CI_COMMIT_BRANCH"}.get(
            operand.scope
        ) or f"${operand.name}"
    text = str(operand.value).lower() if isinstance(operand.value, bool) else operand.value
    text = EVENTS.get(text, text) if event_side else text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_expression(expr: expressions.Expr) -> str:
    """A simplified, negation-normal expression in GitLab's `rules:if` syntax."""
    if isinstance(expr, expressions.Compare):
        event_side = any(
            isinstance(s, expressions.Ref) and s.scope == "event" for s in (expr.left, expr.right)
        )
        return f"{_operand(expr.left, event_side)} {expr.op} {_operand(expr.right, event_side)}"
    if isinstance(expr, expressions.Truthy):
        return f'{_operand(expr.operand, False)} == "true"'
    if isinstance(expr, expressions.Not):  # after negation_normal_form: only around a Truthy
        assert isinstance(expr.operand, expressions.Truthy)
        return f'{_operand(expr.operand.operand, False)} != "true"'
    op = "&&" if isinstance(expr, expressions.And) else "||"
    return f"({render_expression(expr.left)}) {op} ({render_expression(expr.right)})"


def condition_rule(text: str) -> str | bool:
    """The `if:` of a condition, or True/False when it folds to a constant."""
    folded = _simplify(expressions.negation_normal_form(expressions.parse(text)))
    return folded if isinstance(folded, bool) else render_expression(folded)


WHEN: dict[int, str] = {
    model_pb2.WHEN_UNSPECIFIED: "on_success",
    model_pb2.WHEN_ON_SUCCESS: "on_success",
    model_pb2.WHEN_ON_FAILURE: "on_failure",
    model_pb2.WHEN_ALWAYS: "always",
}


class _GitLab:
    def __init__(self, definition: model_pb2.PipelineDefinition) -> None:
        self.d = definition
        self.w = Warnings()
        self.job_names: dict[str, str] = {}

    def env(self, env: Any, path: str) -> dict[str, str]:
        return {k: variables(env_value(env[k], SECRET, self.w, f"{path}.{k}")) for k in sorted(env)}

    def workflow_rules(self) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        rules: list[dict[str, Any]] = []
        inputs: dict[str, Any] = {}
        for t, trigger in enumerate(self.d.triggers):
            path = f"triggers[{t}]"
            event = trigger.WhichOneof("event")
            if event == "push":
                push = trigger.push
                parts = ['$CI_PIPELINE_SOURCE == "push"']
                refs = []
                if push.branches:
                    refs.append(f"$CI_COMMIT_BRANCH =~ {_glob_regex(list(push.branches))}")
                if push.tags:
                    refs.append(f"$CI_COMMIT_TAG =~ {_glob_regex(list(push.tags))}")
                if refs:
                    parts.append("(" + " || ".join(refs) + ")" if len(refs) > 1 else refs[0])
                elif not push.branches:
                    parts.append("$CI_COMMIT_BRANCH")
                rule: dict[str, Any] = {"if": " && ".join(parts)}
                if push.paths:
                    rule["changes"] = list(push.paths)
                rules.append(rule)
            elif event == "pull_request":
                pr = trigger.pull_request
                condition = '$CI_PIPELINE_SOURCE == "merge_request_event"'
                if pr.branches:
                    condition += (
                        f" && $CI_MERGE_REQUEST_TARGET_BRANCH_NAME =~ {_glob_regex(list(pr.branches))}"
                    )
                rule = {"if": condition}
                if pr.paths:
                    rule["changes"] = list(pr.paths)
                rules.append(rule)
            elif event == "schedule":
                rules.append({"if": '$CI_PIPELINE_SOURCE == "schedule"'})
                self.w.add(
                    "SCHEDULE_DEGRADED",
                    f"GitLab keeps schedules in the project's settings, not in the file: create one with cron "
                    f"{trigger.schedule.cron!r}",
                    path,
                )
            elif event == "manual":
                rules.append({"if": '$CI_PIPELINE_SOURCE == "web" || $CI_PIPELINE_SOURCE == "api"'})
                for spec in trigger.manual.inputs:
                    entry: dict[str, Any] = {"description": spec.description or spec.name}
                    if spec.HasField("default_value"):
                        kind = spec.default_value.WhichOneof("kind")
                        value = getattr(spec.default_value, kind) if kind else ""
                        if isinstance(value, bool):
                            value = "true" if value else "false"
                        elif isinstance(value, float):
                            value = str(int(value)) if value.is_integer() else repr(value)
                        entry["value"] = value
                    else:
                        entry["value"] = spec.options[0] if spec.options else ""
                    if spec.options:
                        entry["options"] = list(spec.options)
                    inputs[spec.name] = entry
        return rules, inputs

    def job_name(self, job_id: str) -> str:
        return self.job_names.get(job_id, job_id)

    def job(self, job: model_pb2.Job, path: str, stage: str, finally_job: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"stage": stage}
        variables_: dict[str, str] = {}
        image = variables(job.container) if job.container else ""
        before: list[str] = []
        script: list[str] = []
        cache: list[dict[str, Any]] = []
        artifacts: dict[str, Any] | None = None
        checkout = False
        setups = [s for s in job.steps if s.HasField("setup")]
        for s, step in enumerate(job.steps):
            where = f"{path}.steps[{s}]"
            action = step.WhichOneof("action")
            self.step_limits(step, where, action)
            if action == "checkout":
                checkout = True
                variables_["GIT_DEPTH"] = str(step.checkout.fetch_depth)
                if step.checkout.submodules:
                    variables_["GIT_SUBMODULE_STRATEGY"] = "recursive"
            elif action == "setup":
                setup = step.setup
                if not image:
                    image = IMAGES[setup.tool].format(v=variables(setup.version) or "latest")
                    if setup.tool == "rust" and setup.version in ("", "stable"):
                        image = "rust:latest"
                elif setup is not setups[0].setup or job.container:
                    self.w.add(
                        "SETUP_DEGRADED",
                        f"a GitLab job runs in one image ({image}): {setup.tool} {setup.version} is not installed "
                        "by this export; add it to the image or the script",
                        where,
                    )
                if setup.tool == "rust":
                    before.append("rustup component add clippy rustfmt")
                if setup.package_manager in MANAGER_INSTALLS:
                    before.append(MANAGER_INSTALLS[setup.package_manager])
            elif action == "cache":
                cached = self.cache(step.cache, where)
                if cached:
                    cache.append(cached)
            elif action == "artifact":
                artifacts = self.artifact(step.artifact, artifacts, where)
            elif action == "run":
                script.extend(self.run(step, where, job.retry if job.HasField("retry") else None))
        if image:
            out["image"] = image
        if job.runs_on:
            out["tags"] = [variables(label) for label in job.runs_on]
        if job.HasField("matrix"):
            out["parallel"] = {"matrix": self.matrix(job.matrix, f"{path}.matrix")}
        if job.needs:
            out["needs"] = [self.job_name(n) for n in job.needs]
        elif not finally_job:
            out["needs"] = []
        if job.services:
            out["services"] = []
            for v, service in enumerate(job.services):
                container: dict[str, Any] = {"name": variables(service.image), "alias": service.id}
                if service.env:
                    container["variables"] = self.env(service.env, f"{path}.services[{v}].env")
                out["services"].append(container)
        if not checkout:
            variables_["GIT_STRATEGY"] = "none"
        variables_.update(self.env(job.env, f"{path}.env"))
        if variables_:
            out["variables"] = variables_
        if job.working_directory:
            before.insert(0, f'cd "$CI_PROJECT_DIR"/{quote(job.working_directory)}')
        if before:
            out["before_script"] = before
        out["script"] = script or ['echo "nothing to run"']
        if cache:
            out["cache"] = cache
        if artifacts:
            out["artifacts"] = artifacts
        if job.HasField("timeout"):
            out["timeout"] = f"{minutes(job.timeout, self.w, f'{path}.timeout')} minutes"
        else:
            out["timeout"] = "60 minutes"
        if job.HasField("retry"):
            out["retry"] = self.retry(job.retry, f"{path}.retry")
        if job.HasField("concurrency"):
            out["resource_group"] = variables(job.concurrency.group)
            if job.concurrency.mode == model_pb2.CONCURRENCY_MODE_CANCEL_IN_PROGRESS:
                out["interruptible"] = True
                self.w.add(
                    "CONCURRENCY_DEGRADED",
                    "GitLab runs a resource group's jobs one at a time but does not cancel the running one; "
                    "the job is marked interruptible (a newer pipeline on the branch may cancel it)",
                    f"{path}.concurrency",
                )
        if job.allow_failure:
            out["allow_failure"] = True
        self.when(out, job, path, finally_job)
        return out

    def when(self, out: dict[str, Any], job: model_pb2.Job, path: str, finally_job: bool) -> None:
        when = "always" if finally_job else WHEN[job.condition.when if job.HasField("condition") else 0]
        if job.HasField("approval"):
            approval = job.approval
            out["environment"] = {"name": approval.environment}
            when = "manual"
            out["allow_failure"] = False  # a manual job blocks what needs it until someone runs it
            if approval.reviewers:
                self.w.add(
                    "APPROVAL_REVIEWERS",
                    f"GitLab takes the approvers of environment {approval.environment!r} from its protected "
                    f"environment settings: add {', '.join(approval.reviewers)} there",
                    f"{path}.approval.reviewers",
                )
        rule: dict[str, Any] = {}
        expression = job.condition.expression if job.HasField("condition") else ""
        if expression:
            folded = condition_rule(expression)
            if folded is False:
                out["rules"] = [{"when": "never"}]
                return
            if folded is not True:
                rule["if"] = folded
        if job.paths:
            rule["changes"] = list(job.paths)
        if rule:
            out["rules"] = [{**rule, "when": when}]
        elif when != "on_success":
            out["when"] = when

    def step_limits(self, step: model_pb2.Step, path: str, action: str | None) -> None:
        if step.HasField("timeout"):
            self.w.add(
                "STEP_TIMEOUT_DROPPED",
                "GitLab has no timeout per script line; the job's applies",
                f"{path}.timeout",
            )
        if step.HasField("condition") and action != "artifact":
            self.w.add(
                "STEP_CONDITION_DROPPED",
                "GitLab has no condition per script line; the step runs with the rest of the script",
                f"{path}.condition",
            )
        if step.env:
            self.w.add(
                "STEP_ENV_DEGRADED",
                "the step's env is exported for the rest of the job's script",
                f"{path}.env",
            )

    def run(self, step: model_pb2.Step, path: str, job_retry: model_pb2.Retry | None) -> list[str]:
        run = step.run
        command = variables(run.command)
        lines = [f"export {k}={quote(v)}" for k, v in self.env(step.env, f"{path}.env").items()]
        retry = step.retry if step.HasField("retry") else None
        needs_loop = retry is not None or (
            job_retry is not None and (job_retry.limit > MAX_RETRY or job_retry.HasField("backoff"))
        )
        if needs_loop and retry is None:
            retry = job_retry
        if retry is not None and needs_loop and loop_retries(retry):
            if run.shell in RETRYABLE_SHELLS:
                command = retried_command(command, retry)
            else:
                self.w.add(
                    "RETRY_DROPPED", f"no retry loop for a {run.shell} step: the retry is dropped", path
                )
        if run.shell and run.shell not in ("bash", "sh"):
            self.w.add(
                "SHELL_DEGRADED", f"GitLab runs the script in the image's shell, not {run.shell}", path
            )
        if step.continue_on_error:
            command = tolerated_command(command)
        if run.working_directory:
            lines.append(f'cd "$CI_PROJECT_DIR"/{quote(run.working_directory)}')
        lines.append(command)
        if run.working_directory:
            lines.append('cd "$CI_PROJECT_DIR"')
        return lines

    def cache(self, cache: model_pb2.CacheStep, path: str) -> dict[str, Any] | None:
        paths = [variables(p) for p in cache.paths if not p.startswith("~")]
        if len(paths) < len(cache.paths):
            self.w.add(
                "CACHE_PATH_DROPPED",
                "GitLab caches only paths inside the checkout: the paths outside it are not cached",
                f"{path}.paths",
            )
        if not paths:
            return None
        key: dict[str, Any] = {"files": list(cache.key_files)[:10]}
        if cache.key_prefix:
            key["prefix"] = cache.key_prefix
        return {"key": key, "paths": paths}

    def artifact(
        self, artifact: model_pb2.ArtifactStep, current: dict[str, Any] | None, path: str
    ) -> dict[str, Any]:
        if current is not None:
            self.w.add(
                "ARTIFACTS_MERGED",
                "a GitLab job has one artifact archive: this artifact's paths join the first's",
                path,
            )
            current["paths"] = list(
                dict.fromkeys([*current["paths"], *(variables(p) for p in artifact.paths)])
            )
            return current
        out: dict[str, Any] = {
            "name": variables(artifact.name),
            "paths": [variables(p) for p in artifact.paths],
        }
        if artifact.retention_days:
            out["expire_in"] = f"{artifact.retention_days} days"
        if artifact.always:
            out["when"] = "always"
        return out

    def retry(self, retry: model_pb2.Retry, path: str) -> dict[str, Any]:
        out: dict[str, Any] = {"max": min(retry.limit, MAX_RETRY)}
        if retry.limit > MAX_RETRY or retry.HasField("backoff"):
            self.w.add(
                "RETRY_DEGRADED",
                f"GitLab retries a job at most {MAX_RETRY} times and without backoff: the job retries "
                f"{min(retry.limit, MAX_RETRY)} time(s) at once, and its run steps loop with the asked limit and backoff",
                path,
            )
        when = []
        if retry.HasField("on"):
            if retry.on.exit_codes:
                when.append("script_failure")
                out["exit_codes"] = list(dict.fromkeys(retry.on.exit_codes))
            if retry.on.timeout:
                when += ["job_execution_timeout", "stuck_or_timeout_failure"]
            if retry.on.infrastructure:
                when += ["runner_system_failure", "api_failure", "scheduler_failure"]
        out["when"] = when or ["always"]
        return out

    def matrix(self, matrix: model_pb2.Matrix, path: str) -> list[dict[str, Any]]:
        if matrix.max_parallel:
            self.w.add(
                "MATRIX_DEGRADED",
                "GitLab has no limit on how many matrix jobs run at once",
                f"{path}.max_parallel",
            )
        if matrix.HasField("fail_fast") and matrix.fail_fast:
            self.w.add(
                "MATRIX_DEGRADED",
                "GitLab does not cancel the other matrix jobs when one fails",
                f"{path}.fail_fast",
            )
        axes = {axis.name: list(axis.values) for axis in matrix.axes}
        entries: list[dict[str, Any]] = []
        if matrix.exclude and axes:
            # GitLab has no exclude: list what remains, one combination per entry.
            import itertools

            names = list(axes)
            for combo in itertools.product(*axes.values()):
                values = dict(zip(names, combo, strict=True))
                if any(all(values.get(k) == v for k, v in ex.values.items()) for ex in matrix.exclude):
                    continue
                entries.append({k: [v] for k, v in values.items()})
        elif axes:
            entries.append(axes)
        entries += [{k: [v] for k, v in sorted(c.values.items())} for c in matrix.include]
        return entries

    def document(self) -> dict[str, Any]:
        regular = list(self.d.jobs)
        for job in [*regular, *self.d.finally_jobs]:
            if job.id in KEYWORDS:
                self.job_names[job.id] = f"job-{job.id}"
                self.w.add(
                    "JOB_RENAMED", f"{job.id!r} is a GitLab keyword: the job is named job-{job.id}", ""
                )
        depth = levels(regular)
        stage_count = max(depth.values(), default=0) + 1
        stages = [f"stage-{n + 1}" for n in range(stage_count)]
        document: dict[str, Any] = {}
        rules, inputs = self.workflow_rules()
        workflow: dict[str, Any] = {}
        if rules:
            workflow["rules"] = rules
        if self.d.HasField("concurrency"):
            if self.d.concurrency.mode == model_pb2.CONCURRENCY_MODE_CANCEL_IN_PROGRESS:
                workflow["auto_cancel"] = {"on_new_commit": "interruptible"}
            else:
                self.w.add(
                    "CONCURRENCY_DEGRADED",
                    "GitLab cannot queue whole pipelines: each job's resource_group serializes that job only",
                    "concurrency",
                )
        if workflow:
            document["workflow"] = workflow
        document["stages"] = [*stages, ".post"] if self.d.finally_jobs else stages
        top_variables: dict[str, Any] = dict(inputs)
        top_variables.update(self.env(self.d.env, "env"))
        if top_variables:
            document["variables"] = top_variables
        if self.d.HasField("timeout"):
            self.w.add(
                "TIMEOUT_DEGRADED",
                "GitLab sets a pipeline's timeout in the project's settings, not in the file",
                "timeout",
            )
        cancel = (
            self.d.HasField("concurrency")
            and self.d.concurrency.mode == model_pb2.CONCURRENCY_MODE_CANCEL_IN_PROGRESS
        )
        for i, job in enumerate(regular):
            rendered = self.job(job, f"jobs[{i}]", stages[depth[job.id]], False)
            if cancel:
                rendered.setdefault("interruptible", True)
            document[self.job_name(job.id)] = rendered
        for i, job in enumerate(self.d.finally_jobs):
            document[self.job_name(job.id)] = self.job(job, f"finally_jobs[{i}]", ".post", True)
        return document


def export(definition: model_pb2.PipelineDefinition) -> tuple[dict[str, Any], Warnings]:
    """The GitLab CI document and what had to be degraded."""
    gitlab = _GitLab(definition)
    return gitlab.document(), gitlab.w
