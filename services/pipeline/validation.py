"""Validation of a pipeline definition: every rule the model states, every offending path named.

The definition is the generated `PipelineDefinition` message itself (model.proto): a second,
hand-written copy of that tree would be one more thing to keep in step. `validate` walks it
once, collects a violation per offending path (`definition.jobs[3].needs[0]`) and raises one
INVALID_ARGUMENT with all of them (the first MAX_VIOLATIONS), or returns what a valid
definition expands to.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from google.protobuf import duration_pb2, struct_pb2

from devmesh.pipeline.v1 import model_pb2
from services.pipeline import expressions
from services.runtime.errors import FieldViolation, InvalidArgument

JOB_ID = re.compile(r"[a-z][a-z0-9_-]{0,62}")
SERVICE_ID = re.compile(r"[a-z][a-z0-9-]{0,62}")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
SECRET_REFERENCE = re.compile(r"[A-Za-z][A-Za-z0-9._-]{0,199}(#[A-Za-z0-9_.-]{1,128})?")
LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/-]{0,63}")
CRON_FIELD = re.compile(r"[0-9*/,\-A-Za-z?]+")
SECRET_KEY = "$secret"

MAX_JOBS = 200
MAX_STEPS = 100
MAX_SERVICES = 32
MAX_INPUTS = 25
MAX_MATRIX_COMBINATIONS = 256
MAX_AXIS_VALUES = 256
MAX_COMMAND = 64 * 1024
MAX_TEXT = 256
MAX_PATH = 512
MAX_VIOLATIONS = 100
MIN_TIMEOUT_S = 1
MAX_TIMEOUT_S = 72 * 3600
DEFAULT_JOB_TIMEOUT_S = 3600
MAX_BACKOFF_S = 3600
SHELLS = ("bash", "sh", "pwsh", "python")
TOOLS = ("python", "node", "go", "java", "rust", "dotnet", "ruby", "php", "bun")
GATES = ("secret-scan", "dependency-audit")


@dataclass(frozen=True)
class Validated:
    """What a valid definition amounts to."""

    job_runs: int  # job instances once the matrices are expanded
    warnings: list[tuple[str, str, str]]  # (code, message, path)


def duration_seconds(value: duration_pb2.Duration) -> float | None:
    """The duration in seconds; None for one that is not a valid Duration."""
    if not -999_999_999 <= value.nanos <= 999_999_999 or (value.seconds * value.nanos < 0):
        return None
    return value.seconds + value.nanos / 1e9


@dataclass
class _Collector:
    prefix: str
    violations: list[FieldViolation] = field(default_factory=list)
    warnings: list[tuple[str, str, str]] = field(default_factory=list)

    def add(self, path: str, description: str, reason: str = "") -> None:
        if len(self.violations) < MAX_VIOLATIONS:
            self.violations.append(FieldViolation(f"{self.prefix}{path}", description, reason))

    def warn(self, code: str, message: str, path: str) -> None:
        self.warnings.append((code, message, f"{self.prefix}{path}"))


def _safe_relative(value: str) -> str | None:
    """Why `value` is not a safe path relative to the checkout (None when it is)."""
    if not value:
        return "must not be empty"
    if len(value) > MAX_PATH:
        return f"longer than {MAX_PATH} characters"
    if value.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", value):
        return "must be relative to the checkout, not absolute"
    if ".." in re.split(r"[/\\]", value):
        return "must not contain '..'"
    if "\x00" in value or "\n" in value:
        return "must not contain NUL or line breaks"
    return None


class _Validator:
    def __init__(self, definition: model_pb2.PipelineDefinition, prefix: str) -> None:
        self.d = definition
        self.c = _Collector(prefix)
        self.inputs: dict[str, model_pb2.Input] = {}

    # -- values ---------------------------------------------------------------------------

    def text(self, path: str, value: str, *, required: bool = False, limit: int = MAX_TEXT) -> None:
        if required and not value.strip():
            self.c.add(path, "must not be empty", "REQUIRED")
        elif len(value) > limit:
            self.c.add(path, f"longer than {limit} characters", "TOO_LONG")

    def placeholders(self, path: str, text: str, axes: Iterable[str] | None) -> None:
        """Each `${{ }}` in `text` must name an input, or an axis when `axes` is given."""
        known_axes = set(axes) if axes is not None else None
        for placeholder in expressions.placeholders(text):
            if placeholder.scope == "inputs":
                if placeholder.name not in self.inputs:
                    self.c.add(
                        path, f"{placeholder.text} names no input of a manual trigger", "UNKNOWN_REFERENCE"
                    )
            elif placeholder.scope == "matrix":
                if known_axes is None:
                    self.c.add(path, f"{placeholder.text}: there is no matrix here", "UNKNOWN_REFERENCE")
                elif placeholder.name not in known_axes:
                    self.c.add(
                        path, f"{placeholder.text} names no axis of the job's matrix", "UNKNOWN_REFERENCE"
                    )
            else:
                self.c.add(
                    path,
                    f"{placeholder.text[:80]} is not ${{{{ matrix.<axis> }}}} or ${{{{ inputs.<name> }}}}",
                    "UNKNOWN_REFERENCE",
                )

    def env(self, path: str, env: Mapping[str, struct_pb2.Value], axes: Iterable[str] | None) -> None:
        axes = list(axes) if axes is not None else None
        if len(env) > 200:
            self.c.add(path, "at most 200 variables", "TOO_MANY")
        for name in sorted(env):
            value = env[name]
            where = f"{path}[{name[:64]!r}]" if not ENV_NAME.fullmatch(name) else f"{path}.{name}"
            if not ENV_NAME.fullmatch(name):
                self.c.add(where, "is not a variable name ([A-Za-z_][A-Za-z0-9_]*)", "BAD_NAME")
                continue
            kind = value.WhichOneof("kind")
            if kind == "string_value":
                self.text(where, value.string_value, limit=MAX_COMMAND)
                self.placeholders(where, value.string_value, axes)
            elif kind == "number_value":
                if not math.isfinite(value.number_value):
                    self.c.add(where, "must be a finite number", "NUMBER_NOT_FINITE")
            elif kind == "bool_value":
                pass
            elif kind == "struct_value":
                self.secret(where, value.struct_value)
            else:
                self.c.add(where, 'must be a string, number, boolean or {"$secret": "<id>#<field>"}')

    def secret(self, path: str, value: struct_pb2.Struct) -> None:
        keys = list(value.fields)
        reference = value.fields.get(SECRET_KEY)
        if keys != [SECRET_KEY] or reference is None or reference.WhichOneof("kind") != "string_value":
            self.c.add(
                path, 'an object value must be exactly {"$secret": "<secret id>#<field>"}', "BAD_SECRET"
            )
        elif not SECRET_REFERENCE.fullmatch(reference.string_value):
            self.c.add(
                f"{path}.$secret",
                f"{reference.string_value[:80]!r} is not <secret id>[#<field>]",
                "BAD_SECRET",
            )

    def timeout(self, path: str, value: duration_pb2.Duration, limit_s: float = MAX_TIMEOUT_S) -> float:
        seconds = duration_seconds(value)
        if seconds is None:
            self.c.add(path, "is not a valid duration", "BAD_DURATION")
            return limit_s
        if not MIN_TIMEOUT_S <= seconds <= limit_s:
            self.c.add(
                path,
                f"{seconds:g} s is out of range: {MIN_TIMEOUT_S} s to {limit_s:g} s",
                "TIMEOUT_OUT_OF_RANGE",
            )
            return limit_s
        return seconds

    def condition(self, path: str, condition: model_pb2.Condition) -> None:
        if condition.when not in model_pb2.When.values():
            self.c.add(f"{path}.when", f"{condition.when} is not a When value", "BAD_ENUM")
        if not condition.expression:
            return
        try:
            tree = expressions.parse(condition.expression)
        except expressions.ExpressionError as exc:
            self.c.add(f"{path}.expression", str(exc), "BAD_EXPRESSION")
            return
        for ref in expressions.references(tree):
            if ref.scope == "inputs" and ref.name not in self.inputs:
                self.c.add(f"{path}.expression", f"inputs.{ref.name} names no input", "UNKNOWN_REFERENCE")
        for event in expressions.literals_compared_with_event(tree):
            if event not in expressions.EVENTS:
                self.c.add(
                    f"{path}.expression",
                    f"event is one of {', '.join(expressions.EVENTS)}, never {event[:40]!r}",
                    "UNKNOWN_REFERENCE",
                )

    def retry(self, path: str, retry: model_pb2.Retry) -> None:
        if not 1 <= retry.limit <= 10:
            self.c.add(f"{path}.limit", "must be 1 to 10 attempts after the first", "OUT_OF_RANGE")
        if retry.HasField("backoff"):
            backoff = retry.backoff
            initial = duration_seconds(backoff.initial) if backoff.HasField("initial") else 1.0
            if initial is None or not 1 <= initial <= MAX_BACKOFF_S:
                self.c.add(f"{path}.backoff.initial", "must be 1 second to 1 hour", "OUT_OF_RANGE")
            if not (backoff.factor == 0 or 1 <= backoff.factor <= 10):
                self.c.add(f"{path}.backoff.factor", "must be 1 to 10 (0 means 2)", "OUT_OF_RANGE")
            if backoff.HasField("max"):
                longest = duration_seconds(backoff.max)
                if longest is None or not (initial or 1) <= longest <= MAX_BACKOFF_S:
                    self.c.add(
                        f"{path}.backoff.max", "must be at least `initial`, at most 1 hour", "OUT_OF_RANGE"
                    )
        for i, code in enumerate(retry.on.exit_codes):
            if not 1 <= code <= 255:
                self.c.add(f"{path}.on.exit_codes[{i}]", f"{code} is not an exit code of a failure (1-255)")

    def concurrency(self, path: str, concurrency: model_pb2.Concurrency, axes: Iterable[str] | None) -> None:
        self.text(f"{path}.group", concurrency.group, required=True)
        self.placeholders(f"{path}.group", concurrency.group, axes)
        if concurrency.mode not in model_pb2.ConcurrencyMode.values():
            self.c.add(f"{path}.mode", f"{concurrency.mode} is not a ConcurrencyMode value", "BAD_ENUM")

    def globs(self, path: str, globs: Iterable[str]) -> None:
        for i, glob in enumerate(globs):
            problem = _safe_relative(glob.removeprefix("!"))
            if problem:
                self.c.add(f"{path}[{i}]", problem, "BAD_PATH")

    def patterns(self, path: str, patterns: Iterable[str]) -> None:
        for i, pattern in enumerate(patterns):
            if not pattern.strip() or len(pattern) > MAX_TEXT or any(ch in pattern for ch in "\x00\n\r"):
                self.c.add(f"{path}[{i}]", "must be a non-empty pattern on one line", "BAD_PATTERN")

    # -- the tree -------------------------------------------------------------------------

    def triggers(self) -> None:
        seen_inputs: set[str] = set()
        for trigger in self.d.triggers:
            if trigger.HasField("manual"):
                for spec in trigger.manual.inputs:
                    if _is_name(spec.name) and spec.name not in seen_inputs:
                        seen_inputs.add(spec.name)
                        self.inputs[spec.name] = spec
        for t, trigger in enumerate(self.d.triggers):
            path = f".triggers[{t}]"
            event = trigger.WhichOneof("event")
            if event is None:
                self.c.add(path, "names no event (push, pull_request, schedule or manual)", "REQUIRED")
            elif event == "push":
                self.patterns(f"{path}.push.branches", trigger.push.branches)
                self.patterns(f"{path}.push.tags", trigger.push.tags)
                self.globs(f"{path}.push.paths", trigger.push.paths)
            elif event == "pull_request":
                self.patterns(f"{path}.pull_request.branches", trigger.pull_request.branches)
                self.globs(f"{path}.pull_request.paths", trigger.pull_request.paths)
            elif event == "schedule":
                fields = trigger.schedule.cron.split()
                if len(fields) != 5 or not all(CRON_FIELD.fullmatch(f) for f in fields):
                    self.c.add(f"{path}.schedule.cron", "is not a five-field cron expression", "BAD_CRON")
            else:
                self.manual(path, trigger.manual)

    def manual(self, path: str, manual: model_pb2.ManualTrigger) -> None:
        if len(manual.inputs) > MAX_INPUTS:
            self.c.add(f"{path}.manual.inputs", f"at most {MAX_INPUTS} inputs", "TOO_MANY")
        names: set[str] = set()
        for i, spec in enumerate(manual.inputs):
            where = f"{path}.manual.inputs[{i}]"
            if not _is_name(spec.name):
                self.c.add(f"{where}.name", "must match [A-Za-z_][A-Za-z0-9_]{0,63}", "BAD_NAME")
            elif spec.name in names:
                self.c.add(f"{where}.name", f"{spec.name!r} is a duplicate input", "DUPLICATE_ID")
            names.add(spec.name)
            self.text(f"{where}.description", spec.description, limit=1024)
            if spec.type not in model_pb2.InputType.values():
                self.c.add(f"{where}.type", f"{spec.type} is not an InputType value", "BAD_ENUM")
                continue
            choice = spec.type == model_pb2.INPUT_TYPE_CHOICE
            if choice and not spec.options:
                self.c.add(f"{where}.options", "a CHOICE input needs at least one option", "REQUIRED")
            if not choice and spec.options:
                self.c.add(f"{where}.options", "only a CHOICE input has options")
            self.patterns(f"{where}.options", spec.options)
            if spec.HasField("default_value"):
                self.default(f"{where}.default_value", spec)

    def default(self, path: str, spec: model_pb2.Input) -> None:
        kind = spec.default_value.WhichOneof("kind")
        expected = {
            model_pb2.INPUT_TYPE_BOOLEAN: "bool_value",
            model_pb2.INPUT_TYPE_NUMBER: "number_value",
        }.get(spec.type, "string_value")
        if kind != expected:
            self.c.add(path, f"does not fit the input's type ({expected.removesuffix('_value')})")
        elif kind == "number_value" and not math.isfinite(spec.default_value.number_value):
            self.c.add(path, "must be a finite number", "NUMBER_NOT_FINITE")
        elif spec.type == model_pb2.INPUT_TYPE_CHOICE and spec.default_value.string_value not in spec.options:
            self.c.add(path, "is not one of the options")

    def jobs(self) -> int:
        all_jobs = [("jobs", i, job) for i, job in enumerate(self.d.jobs)]
        all_jobs += [("finally_jobs", i, job) for i, job in enumerate(self.d.finally_jobs)]
        if not self.d.jobs:
            self.c.add(".jobs", "a pipeline has at least one job", "REQUIRED")
        if len(all_jobs) > MAX_JOBS:
            self.c.add(".jobs", f"at most {MAX_JOBS} jobs (finally jobs included)", "TOO_MANY")
        ids: dict[str, str] = {}
        for group, i, job in all_jobs:
            path = f".{group}[{i}].id"
            if not JOB_ID.fullmatch(job.id):
                self.c.add(path, f"{job.id[:80]!r} is not a job id ([a-z][a-z0-9_-]{{0,62}})", "BAD_ID")
            elif job.id in ids:
                self.c.add(path, f"{job.id!r} is also the id of {ids[job.id]}", "DUPLICATE_ID")
            else:
                ids[job.id] = f"{group}[{i}]"
        pipeline_limit = (
            self.timeout(".timeout", self.d.timeout) if self.d.HasField("timeout") else MAX_TIMEOUT_S
        )
        runs = 0
        for group, i, job in all_jobs:
            runs += self.job(f".{group}[{i}]", job, pipeline_limit)
        self.needs("jobs", list(self.d.jobs))
        self.needs("finally_jobs", list(self.d.finally_jobs))
        return runs

    def needs(self, group: str, jobs: list[model_pb2.Job]) -> None:
        index = {job.id: i for i, job in enumerate(jobs)}
        other = {job.id for job in (self.d.finally_jobs if group == "jobs" else self.d.jobs)}
        for i, job in enumerate(jobs):
            seen: set[str] = set()
            for n, need in enumerate(job.needs):
                path = f".{group}[{i}].needs[{n}]"
                if need == job.id:
                    self.c.add(path, "a job cannot need itself", "CYCLE")
                elif need in seen:
                    self.c.add(path, f"{need!r} is listed twice", "DUPLICATE_ID")
                elif need not in index:
                    where = (
                        " (a finally job runs after every job; it needs none of them)"
                        if need in other
                        else ""
                    )
                    self.c.add(path, f"{need[:80]!r} is not a job of `{group}`{where}", "UNKNOWN_NEED")
                seen.add(need)
        # Cycles: a depth-first walk; the edge that closes a cycle is the one reported.
        state: dict[str, int] = {}  # 1: on the stack, 2: done

        def visit(job_id: str) -> None:
            state[job_id] = 1
            i = index[job_id]
            for n, need in enumerate(jobs[i].needs):
                if need not in index or need == job_id:
                    continue
                if state.get(need) == 1:
                    self.c.add(
                        f".{group}[{i}].needs[{n}]",
                        f"needing {need!r} closes a cycle through {job_id!r}",
                        "CYCLE",
                    )
                elif need not in state:
                    visit(need)
            state[job_id] = 2

        for job in jobs:
            if job.id in index and job.id not in state:
                visit(job.id)

    def job(self, path: str, job: model_pb2.Job, pipeline_limit: float) -> int:
        self.text(f"{path}.name", job.name)
        runs, axes = self.matrix(f"{path}.matrix", job.matrix) if job.HasField("matrix") else (1, None)
        for i, label in enumerate(job.runs_on):
            if expressions.placeholders(label):
                self.placeholders(f"{path}.runs_on[{i}]", label, axes)
            elif not LABEL.fullmatch(label):
                self.c.add(f"{path}.runs_on[{i}]", f"{label[:80]!r} is not a runner label", "BAD_LABEL")
        if not job.steps:
            self.c.add(f"{path}.steps", "a job has at least one step", "REQUIRED")
        if len(job.steps) > MAX_STEPS:
            self.c.add(f"{path}.steps", f"at most {MAX_STEPS} steps", "TOO_MANY")
        job_limit = (
            self.timeout(f"{path}.timeout", job.timeout, pipeline_limit)
            if job.HasField("timeout")
            else min(DEFAULT_JOB_TIMEOUT_S, pipeline_limit)
        )
        step_ids: set[str] = set()
        checkout = False
        for s, step in enumerate(job.steps):
            checkout |= step.HasField("checkout")
            self.step(f"{path}.steps[{s}]", step, axes, job_limit, step_ids)
        if job.steps and not checkout and any(step.HasField("run") for step in job.steps):
            self.c.warn(
                "NO_CHECKOUT", "the job runs commands without checking the repository out", f"{path}.steps"
            )
        if len(job.services) > MAX_SERVICES:
            self.c.add(f"{path}.services", f"at most {MAX_SERVICES} services", "TOO_MANY")
        service_ids: set[str] = set()
        for v, service in enumerate(job.services):
            where = f"{path}.services[{v}]"
            if not SERVICE_ID.fullmatch(service.id):
                self.c.add(f"{where}.id", f"{service.id[:80]!r} is not a service id ([a-z][a-z0-9-]{{0,62}})")
            elif service.id in service_ids:
                self.c.add(f"{where}.id", f"{service.id!r} is a duplicate service", "DUPLICATE_ID")
            service_ids.add(service.id)
            self.text(f"{where}.image", service.image, required=True)
            self.placeholders(f"{where}.image", service.image, axes)
            self.env(f"{where}.env", service.env, axes)
            for p, port in enumerate(service.ports):
                if not 1 <= port <= 65535:
                    self.c.add(f"{where}.ports[{p}]", f"{port} is not a port (1-65535)", "OUT_OF_RANGE")
        self.env(f"{path}.env", job.env, axes)
        if job.HasField("condition"):
            self.condition(f"{path}.condition", job.condition)
        if job.HasField("retry"):
            self.retry(f"{path}.retry", job.retry)
        if job.HasField("concurrency"):
            self.concurrency(f"{path}.concurrency", job.concurrency, axes)
        if job.HasField("approval"):
            self.text(f"{path}.approval.environment", job.approval.environment, required=True, limit=64)
            self.patterns(f"{path}.approval.reviewers", job.approval.reviewers)
            self.text(f"{path}.approval.description", job.approval.description, limit=1024)
        self.globs(f"{path}.paths", job.paths)
        if job.working_directory:
            problem = _safe_relative(job.working_directory)
            if problem:
                self.c.add(f"{path}.working_directory", problem, "BAD_PATH")
        self.text(f"{path}.container", job.container)
        self.placeholders(f"{path}.container", job.container, axes)
        return runs

    def matrix(self, path: str, matrix: model_pb2.Matrix) -> tuple[int, list[str]]:
        axes: dict[str, list[str]] = {}
        for a, axis in enumerate(matrix.axes):
            where = f"{path}.axes[{a}]"
            if not _is_name(axis.name):
                self.c.add(f"{where}.name", "must match [A-Za-z_][A-Za-z0-9_]{0,63}", "BAD_NAME")
                continue
            if axis.name in axes:
                self.c.add(f"{where}.name", f"{axis.name!r} is a duplicate axis", "DUPLICATE_ID")
                continue
            if not axis.values:
                self.c.add(f"{where}.values", "an axis has at least one value", "EMPTY_MATRIX")
            if len(axis.values) > MAX_AXIS_VALUES:
                self.c.add(f"{where}.values", f"at most {MAX_AXIS_VALUES} values", "TOO_MANY")
            for v, value in enumerate(axis.values):
                if not value or len(value) > MAX_TEXT:
                    self.c.add(f"{where}.values[{v}]", "must be 1 to 256 characters")
                elif value in axis.values[:v]:
                    self.c.add(f"{where}.values[{v}]", f"{value[:80]!r} is listed twice", "DUPLICATE_VALUE")
            axes[axis.name] = list(dict.fromkeys(axis.values))
        if not matrix.axes and not matrix.include:
            self.c.add(path, "a matrix has at least one axis or one include", "EMPTY_MATRIX")
        extra: set[str] = set()
        for i, combo in enumerate(matrix.include):
            if not combo.values:
                self.c.add(
                    f"{path}.include[{i}]", "an include combination sets at least one value", "EMPTY_MATRIX"
                )
            for key in combo.values:
                if not _is_name(key):
                    self.c.add(f"{path}.include[{i}].values", f"{key[:64]!r} is not an axis name", "BAD_NAME")
                extra.add(key)
        excluded = 0
        product = list(itertools.product(*axes.values())) if axes else []
        if len(product) > 100_000:  # the count alone is refused below; no need to look at each
            product = product[:0]
            self.c.add(path, f"more than {MAX_MATRIX_COMBINATIONS} combinations", "MATRIX_TOO_LARGE")
        for e, combo in enumerate(matrix.exclude):
            if not combo.values:
                self.c.add(
                    f"{path}.exclude[{e}]", "an exclude combination names at least one value", "EMPTY_MATRIX"
                )
            for key, value in combo.values.items():
                if key not in axes:
                    self.c.add(
                        f"{path}.exclude[{e}].values", f"{key[:64]!r} is not an axis", "UNKNOWN_REFERENCE"
                    )
                elif value not in axes[key]:
                    self.c.add(
                        f"{path}.exclude[{e}].values",
                        f"{value[:64]!r} is not a value of {key!r}",
                        "UNKNOWN_REFERENCE",
                    )
        names = list(axes)
        remaining = [
            combo
            for combo in product
            if not any(
                all(dict(zip(names, combo, strict=True)).get(k) == v for k, v in ex.values.items())
                for ex in matrix.exclude
                if ex.values
            )
        ]
        excluded = len(product) - len(remaining)
        count = len(remaining) + len(matrix.include)
        if matrix.axes and product and not remaining and not matrix.include:
            self.c.add(f"{path}.exclude", "excludes every combination: the matrix is empty", "EMPTY_MATRIX")
        if count > MAX_MATRIX_COMBINATIONS:
            self.c.add(path, f"{count} combinations; at most {MAX_MATRIX_COMBINATIONS}", "MATRIX_TOO_LARGE")
        if matrix.max_parallel < 0:
            self.c.add(f"{path}.max_parallel", "must not be negative", "OUT_OF_RANGE")
        del excluded
        return max(count, 1), [*names, *sorted(extra - set(names))]

    def step(
        self, path: str, step: model_pb2.Step, axes: list[str] | None, job_limit: float, ids: set[str]
    ) -> None:
        if step.id:
            if not JOB_ID.fullmatch(step.id):
                self.c.add(f"{path}.id", f"{step.id[:80]!r} is not a step id", "BAD_ID")
            elif step.id in ids:
                self.c.add(f"{path}.id", f"{step.id!r} is a duplicate step id", "DUPLICATE_ID")
            ids.add(step.id)
        self.text(f"{path}.name", step.name)
        action = step.WhichOneof("action")
        if action is None:
            self.c.add(path, "names no action (run, checkout, cache, artifact or setup)", "REQUIRED")
        elif action == "run":
            run = step.run
            self.text(f"{path}.run.command", run.command, required=True, limit=MAX_COMMAND)
            self.placeholders(f"{path}.run.command", run.command, axes)
            if run.shell and run.shell not in SHELLS:
                self.c.add(f"{path}.run.shell", f"{run.shell[:40]!r} is not one of {', '.join(SHELLS)}")
            if run.working_directory:
                problem = _safe_relative(run.working_directory)
                if problem:
                    self.c.add(f"{path}.run.working_directory", problem, "BAD_PATH")
        elif action == "checkout":
            if step.checkout.fetch_depth < 0:
                self.c.add(f"{path}.checkout.fetch_depth", "must not be negative", "OUT_OF_RANGE")
        elif action == "cache":
            if not step.cache.paths:
                self.c.add(f"{path}.cache.paths", "a cache keeps at least one path", "REQUIRED")
            for i, cached in enumerate(step.cache.paths):
                problem = _safe_relative(cached.removeprefix("~/"))
                if problem:
                    self.c.add(f"{path}.cache.paths[{i}]", problem, "BAD_PATH")
            if not step.cache.key_files:
                self.c.add(f"{path}.cache.key_files", "a cache is keyed by at least one file", "REQUIRED")
            self.globs(f"{path}.cache.key_files", step.cache.key_files)
            if step.cache.key_prefix and not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", step.cache.key_prefix):
                self.c.add(f"{path}.cache.key_prefix", "must be 1-64 letters, digits, '_', '.', '-'")
        elif action == "artifact":
            self.text(f"{path}.artifact.name", step.artifact.name, required=True, limit=128)
            if not step.artifact.paths:
                self.c.add(f"{path}.artifact.paths", "an artifact uploads at least one path", "REQUIRED")
            self.globs(f"{path}.artifact.paths", step.artifact.paths)
            if not 0 <= step.artifact.retention_days <= 90:
                self.c.add(f"{path}.artifact.retention_days", "must be 0 to 90", "OUT_OF_RANGE")
        else:
            if step.setup.tool not in TOOLS:
                self.c.add(f"{path}.setup.tool", f"{step.setup.tool[:40]!r} is not one of {', '.join(TOOLS)}")
            self.text(f"{path}.setup.version", step.setup.version, limit=64)
            self.placeholders(f"{path}.setup.version", step.setup.version, axes)
            self.text(f"{path}.setup.package_manager", step.setup.package_manager, limit=64)
        self.env(f"{path}.env", step.env, axes)
        if step.HasField("timeout"):
            self.timeout(f"{path}.timeout", step.timeout, job_limit)
        if step.HasField("condition"):
            self.condition(f"{path}.condition", step.condition)
        if step.HasField("retry"):
            self.retry(f"{path}.retry", step.retry)

    def run(self) -> Validated:
        self.triggers()
        runs = self.jobs()
        self.env(".env", self.d.env, None)
        if self.d.HasField("concurrency"):
            self.concurrency(".concurrency", self.d.concurrency, None)
        if self.c.violations:
            first = self.c.violations[0]
            more = f" (and {len(self.c.violations) - 1} more)" if len(self.c.violations) > 1 else ""
            raise InvalidArgument(
                f"{first.field}: {first.description}{more}", self.c.violations, reason="INVALID_PIPELINE"
            )
        return Validated(runs, self.c.warnings)


def _is_name(name: str) -> bool:
    return expressions.NAME.fullmatch(name) is not None


def validate(definition: model_pb2.PipelineDefinition, prefix: str = "definition") -> Validated:
    """What `definition` expands to, or INVALID_ARGUMENT naming every offending path."""
    return _Validator(definition, prefix).run()
