"""What every export target shares: the warnings it collects, how a secret reference, an env
value and a retried command are rendered, and the order in which a DAG's jobs run."""

from __future__ import annotations

import math
import re
import shlex
from dataclasses import dataclass, field

from google.protobuf import duration_pb2, struct_pb2

from devmesh.pipeline.v1 import model_pb2
from services.pipeline.validation import SECRET_KEY, duration_seconds

DEFAULT_RETRY_DELAY_S = 0
RETRYABLE_SHELLS = ("", "bash", "sh")


@dataclass(frozen=True)
class ExportWarning:
    code: str
    message: str
    path: str


@dataclass
class Warnings:
    """The degradations of one export, each said once."""

    found: list[ExportWarning] = field(default_factory=list)
    _seen: set[tuple[str, str]] = field(default_factory=set)

    def add(self, code: str, message: str, path: str = "") -> None:
        if (code, path or message) not in self._seen:
            self._seen.add((code, path or message))
            self.found.append(ExportWarning(code, message, path))


def secret_variable(reference: str) -> str:
    """The CI variable a secret reference reads from: `deploy-token#value` -> DEPLOY_TOKEN_VALUE."""
    return re.sub(r"[^A-Z0-9_]", "_", reference.upper().replace("#", "_"))


def env_value(value: struct_pb2.Value, render_secret: str, warnings: Warnings, path: str) -> str:
    """An env value as the target's string; a secret reference as `render_secret` names it."""
    kind = value.WhichOneof("kind")
    if kind == "struct_value":
        reference = value.struct_value.fields[SECRET_KEY].string_value
        variable = secret_variable(reference)
        warnings.add(
            "SECRET_MAPPED",
            f"the devmesh secret {reference!r} is read from the CI secret variable {variable}: "
            "create it in the CI system (devmesh resolves it only when it runs the pipeline itself)",
            path,
        )
        return render_secret.format(name=variable)
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    if kind == "number_value":
        number = value.number_value
        return str(int(number)) if number.is_integer() else repr(number)
    return value.string_value


def minutes(value: duration_pb2.Duration, warnings: Warnings, path: str) -> int:
    """A timeout in whole minutes (rounded up, with a warning when that changes it)."""
    seconds = duration_seconds(value) or 60.0
    whole = max(1, math.ceil(seconds / 60))
    if whole * 60 != seconds:
        warnings.add("TIMEOUT_ROUNDED", f"{seconds:g} s is rounded up to {whole} minute(s)", path)
    return whole


def backoff_delays(retry: model_pb2.Retry) -> list[int]:
    """The waits before each retry, in whole seconds."""
    if not retry.HasField("backoff"):
        return [DEFAULT_RETRY_DELAY_S] * retry.limit
    backoff = retry.backoff
    delay = duration_seconds(backoff.initial) if backoff.HasField("initial") else 1.0
    longest = duration_seconds(backoff.max) if backoff.HasField("max") else 3600.0
    factor = backoff.factor or 2.0
    delays = []
    for _ in range(retry.limit):
        delays.append(math.ceil(min(delay or 1.0, longest or 3600.0)))
        delay = (delay or 1.0) * factor
    return delays


def loop_retries(retry: model_pb2.Retry) -> bool:
    """Whether a retry loop around a command can do what `retry` asks: retry on any failure, or
    on exit codes. Timeouts and lost runners happen outside the command: a loop cannot see them."""
    return not retry.HasField("on") or bool(retry.on.exit_codes)


def retried_command(command: str, retry: model_pb2.Retry) -> str:
    """`command` inside a bounded retry loop with the retry's backoff, for a POSIX shell: a
    target without native retry still retries, as many times, on the same exit codes."""
    codes = " ".join(str(c) for c in retry.on.exit_codes)
    delays = " ".join(str(d) for d in backoff_delays(retry))
    only_codes = (
        f'  case " {codes} " in *" $status "*) ;; *) exit "$status" ;; esac\n' if retry.on.exit_codes else ""
    )
    return (
        f"# devmesh retry: up to {retry.limit} more attempt(s)\n"
        f"for delay in {delays} stop; do\n"
        "  status=0\n"
        f"  ( {command.strip()}\n  ) || status=$?\n"
        '  if [ "$status" -eq 0 ]; then break; fi\n'
        '  if [ "$delay" = stop ]; then exit "$status"; fi\n'
        f"{only_codes}"
        '  echo "attempt failed with exit code $status; retrying in ${delay}s" >&2\n'
        '  sleep "$delay"\n'
        "done\n"
    )


def tolerated_command(command: str) -> str:
    """`command` whose failure does not fail what runs it."""
    return f'( {command.strip()}\n) || echo "this step failed (exit code $?); continuing as asked" >&2\n'


def levels(jobs: list[model_pb2.Job]) -> dict[str, int]:
    """Each job's depth in the DAG (0: needs nothing): the stage it can run in."""
    by_id = {job.id: job for job in jobs}
    depth: dict[str, int] = {}

    def of(job_id: str) -> int:
        if job_id not in depth:
            depth[job_id] = 0  # validated acyclic; this only stops a bad caller from looping
            depth[job_id] = 1 + max((of(n) for n in by_id[job_id].needs if n in by_id), default=-1)
        return depth[job_id]

    for job in jobs:
        of(job.id)
    return depth


def quote(text: str) -> str:
    return shlex.quote(text)
