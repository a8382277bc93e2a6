"""The worker's loop: take an attempt whose labels it has from a queue, run its job in a
workspace of its own, report the outcome under the attempt's fencing token.

While a job runs the worker heartbeats it: the heartbeat renews the attempt's lease, keeps
the queue entry from looking abandoned (XCLAIM to itself), and brings back a cancel request.
A heartbeat that finds the attempt fenced off (the coordinator reclaimed it) stops the job
at once: the new attempt is the only one that may run.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from redis import exceptions as redis_errors

from devmesh.pipeline.v1 import model_pb2, runs_pb2_grpc
from services.pipeline import expressions, names
from services.pipeline.runs import keys, scripts, states
from services.pipeline.runs.job_secrets import job_envs, reference_of, references
from services.pipeline.runs.plan import JobPlan, Plan
from services.pipeline.runs.records import JobRecord
from services.pipeline.runs.store import RunStore, block_ms, now_us
from services.pipeline.validation import duration_seconds
from services.pipeline.worker import (
    artifacts,
    caches,
    caches_client,
    process,
    secrets_client,
    setup_steps,
    worker_lease,
)
from services.pipeline.worker.log_sink import MARKER, LogSink
from services.pipeline.worker.masking import Masker
from services.pipeline.worker.settings import WorkerSettings
from services.runtime.logging import get_logger
from services.runtime.redis_client import DurableWriter, Redis
from services.runtime.tasks import cancel_and_wait

log = get_logger(__name__)

TOOLS = ("bash", "git", "python3", "node", "npm", "go", "cargo", "java", "docker", "make", "uv")
SHELLS = {
    "": ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c"],
    "bash": ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c"],
    "sh": ["sh", "-e", "-c"],
    "python": ["python3", "-c"],
    "pwsh": ["pwsh", "-command"],
}
RESOURCE_HINTS = (
    "Resource temporarily unavailable",
    "Cannot allocate memory",
    "MemoryError",
    "Too many open files",
)
QUEUE_REFRESH_S = 1.0
REDIS_AWAY = (redis_errors.ConnectionError, redis_errors.TimeoutError, redis_errors.BusyLoadingError)
REDIS_RETRY_S = 0.2
T = TypeVar("T")


def found_labels(extra: tuple[str, ...]) -> frozenset[str]:
    """os, arch, the tools on PATH, and the custom labels."""
    labels = {platform.system().lower(), platform.machine().lower()}
    labels |= {tool for tool in TOOLS if shutil.which(tool)}
    return frozenset(labels | set(extra))


@dataclass(frozen=True)
class KnownRun:
    """What a worker keeps of a run it ran a job of: nothing of it changes once it exists."""

    jobs: dict[str, JobPlan]
    definition: model_pb2.PipelineDefinition
    definition_jobs: dict[str, model_pb2.Job]
    fields: dict[str, bytes]
    inputs: dict[str, Any]


MAX_KNOWN_RUNS = 64


@dataclass
class Taken:
    queue: str
    entry_id: str
    run: str
    key: str
    fence: str


class Worker:
    """One worker: one job at a time."""

    def __init__(
        self,
        redis: Redis,
        durable: DurableWriter,
        settings: WorkerSettings,
        pipeline: runs_pb2_grpc.RunServiceStub | None = None,
        run_as: process.RunAs | None = None,
    ) -> None:
        self.run_as = run_as  # whom steps run as (a root worker's: an unprivileged user)
        self.redis = redis
        self.pipeline = pipeline  # the pipeline service, called with the worker's API key
        self.durable = durable
        self.settings = settings
        self.store = RunStore(redis)
        self.id = settings.worker_id or f"{socket.gethostname()}-{os.getpid()}"
        self.labels = found_labels(settings.worker_labels)
        self.shutting_down = asyncio.Event()
        self.hand_back = asyncio.Event()
        self._queues: list[str] = []
        self._queues_at = 0.0
        self.jobs_done = 0
        self.current: set[_Attempt] = set()
        self._runs: dict[str, KnownRun] = {}
        self.lease = worker_lease.Lease(redis)  # the coordinators' lease of a running job

    async def run_of(self, run_id: str) -> KnownRun:
        """The run's plan, definition and source (read once per run)."""
        found = self._runs.get(run_id)
        if found is None:
            fields = ("plan", "definition", "source", "ref", "inputs", "project", "pipeline")
            values = dict(zip(fields, await self.redis.hmget(keys.run(run_id), fields), strict=True))
            plan = Plan.from_json(json.loads(values["plan"] or b"{}"))
            definition = model_pb2.PipelineDefinition.FromString(values["definition"] or b"")
            found = KnownRun(
                jobs=plan.by_key(),
                definition=definition,
                definition_jobs={j.id: j for j in [*definition.jobs, *definition.finally_jobs]},
                fields={k: v or b"" for k, v in values.items()},
                inputs=json.loads(values["inputs"] or b"{}"),
            )
            self._runs[run_id] = found
            if len(self._runs) > MAX_KNOWN_RUNS:
                self._runs.pop(next(iter(self._runs)))
        return found

    def eligible(self, labels: str) -> bool:
        wanted = set() if labels == keys.ANY_LABELS else set(labels.split(","))
        return wanted <= self.labels

    async def queues(self) -> list[str]:
        if time.monotonic() - self._queues_at > QUEUE_REFRESH_S or not self._queues:
            names = sorted(raw.decode() for raw in await self.redis.smembers(keys.QUEUES))
            self._queues = [keys.queue(name) for name in names if self.eligible(name)]
            self._queues_at = time.monotonic()
        return self._queues

    async def take(self) -> Taken | None:
        queues = await self.queues()
        if not queues:
            await asyncio.sleep(0.2)
            return None
        found = await self.redis.xreadgroup(
            keys.WORKER_GROUP, self.id, {q: ">" for q in queues}, count=1, block=block_ms(self.redis, 500)
        )
        return await self._one_of(found)

    async def _one_of(self, found: Any) -> Taken | None:
        """The first entry an XREADGROUP reply holds; the others go back for another worker."""
        taken: list[Taken] = []
        for stream, entries in found or []:
            for entry_id, fields in entries:
                taken.append(
                    Taken(
                        stream.decode(),
                        entry_id.decode(),
                        fields[b"run"].decode(),
                        fields[b"job"].decode(),
                        fields[b"fence"].decode(),
                    )
                )
        for extra in taken[1:]:  # one job at a time
            await self._give_back(extra)
        return taken[0] if taken else None

    async def _give_back(self, taken: Taken) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(taken.queue, {"run": taken.run, "job": taken.key, "fence": taken.fence})
            pipe.xack(taken.queue, keys.WORKER_GROUP, taken.entry_id)
            pipe.xdel(taken.queue, taken.entry_id)
            await pipe.execute()

    async def serve(self) -> None:
        """Take and run jobs until SIGTERM (or `shutting_down`)."""
        taken: Taken | None = None
        while not self.shutting_down.is_set():
            if taken is None:
                try:
                    taken = await self.take()
                except REDIS_AWAY:
                    await asyncio.sleep(REDIS_RETRY_S)  # Redis restarting: its queues come back with it
                    continue
            if taken is not None:
                taken = await self.run_attempt(taken)
        if taken is not None:  # taken with the last report, after the shutdown began
            held = taken
            await self.reliably(lambda: self._give_back(held))

    async def reliably(self, call: Callable[[], Awaitable[T]]) -> T:
        """`call` again while Redis is away, for as long as a lease: a report the worker gave up
        on would leave its attempt to be reclaimed as lost."""
        deadline = time.monotonic() + max(self.lease.seconds, 5.0) * 3
        while True:
            try:
                return await call()
            except REDIS_AWAY:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(REDIS_RETRY_S)

    async def _ack(self, taken: Taken) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(taken.queue, keys.WORKER_GROUP, taken.entry_id)
            pipe.xdel(taken.queue, taken.entry_id)
            await pipe.execute()

    async def run_attempt(self, taken: Taken) -> Taken | None:
        """Run the attempt and report how it ended; returns the next entry, taken from the
        queues in the same round trip as the report (None: none, or shutting down)."""
        lease_ms = int(await self.lease.refreshed() * 1000)
        run_keys = [keys.jobs(taken.run), keys.attempts(taken.run), keys.events(taken.run)]
        started, number = await self.reliably(
            lambda: self.store.script(
                scripts.START,
                [*run_keys, keys.lease(taken.run, taken.key)],
                [taken.key, taken.fence, self.id, now_us(), lease_ms],
            )
        )
        if started != "ok":
            await self.reliably(lambda: self._ack(taken))  # cancelled or superseded before it started
            return None
        attempt = _Attempt(self, taken, int(number))
        self.current.add(attempt)
        if self.hand_back.is_set():
            attempt.stop.set()
        try:
            state, reason, code, message = await attempt.execute()
        except Exception as exc:  # the worker's own failure: the attempt fails, the worker lives
            log.warning(
                "pipeline.worker.attempt_failed", run=taken.run, job=taken.key, error=type(exc).__name__
            )
            state, reason, code, message = (
                states.FAILED,
                states.SETUP_FAILED,
                0,
                f"worker error: {type(exc).__name__}",
            )
        finally:
            tail = await attempt.drain_logs()
            await cancel_and_wait(attempt.heartbeat_task)
        report = [taken.key, taken.fence, state, reason, code, message[:500], now_us(), taken.run]
        following = await self.reliably(lambda: self._report(attempt, tail, report))
        attempt.clean()
        self.current.discard(attempt)
        self.jobs_done += 1
        return following

    async def _report(self, attempt: _Attempt, tail: list[str], report: list[Any]) -> Taken | None:
        """One round trip, in this order on one connection: the last log lines, how the
        attempt ended (unless it was fenced off), the queue entry acknowledged, the AOF
        confirmation of both, and the next entry taken (not while shutting down). Each script
        checks the fencing token itself, so a fenced-off report still changes nothing; the
        entry is acknowledged only after the end is written, so a worker that dies in
        between leaves it for reclaim. Scripts go as EVAL (the server caches them by SHA):
        a NOSCRIPT after a Redis restart cannot fail part of the pipeline."""
        taken = attempt.taken
        queues = [] if self.shutting_down.is_set() or self.hand_back.is_set() else await self.queues()
        replies: dict[str, Any] = {}
        names: list[str] = []
        async with self.redis.pipeline(transaction=False) as pipe:
            if not attempt.lost:
                if tail:
                    pipe.eval(scripts.APPEND_LOG, 4, *attempt.log_keys(), *attempt.log_args(tail))
                    names.append("log")
                finish_keys = [
                    keys.jobs(taken.run),
                    keys.attempts(taken.run),
                    keys.events(taken.run),
                    keys.WORK,
                    keys.lease(taken.run, taken.key),
                ]
                pipe.eval(scripts.FINISH, len(finish_keys), *finish_keys, *report)
                names.append("finish")
                if self.durable.queue_on(pipe):
                    names += ["fence", "durable"]
            pipe.xack(taken.queue, keys.WORKER_GROUP, taken.entry_id)
            pipe.xdel(taken.queue, taken.entry_id)
            names += ["ack", "del"]
            if queues:
                pipe.xreadgroup(keys.WORKER_GROUP, self.id, {q: ">" for q in queues}, count=1)
                names.append("take")
            replies = dict(zip(names, await pipe.execute(), strict=True))
        if "log" in replies and attempt.sink is not None:
            attempt.sink.sent(_text(replies["log"][0]))
        if "durable" in replies:
            self.durable.check(replies["durable"])
        return await self._one_of(replies.get("take"))


def _text(part: Any) -> str:
    return part.decode() if isinstance(part, bytes) else str(part)


class _Attempt:
    def __init__(self, worker: Worker, taken: Taken, number: int) -> None:
        self.worker = worker
        self.settings = worker.settings
        self.taken = taken
        self.number = number
        self.stop = asyncio.Event()
        self.cancelled = False
        self.lost = False
        self.workspace = Path(
            tempfile.mkdtemp(prefix=f"{taken.run}-{taken.key}-", dir=self.settings.worker_dir or None)
        )
        process.hand_over(str(self.workspace), worker.run_as)
        self.heartbeat_task: asyncio.Task[None] | None = None
        self.sink: LogSink | None = None
        self.artifact_bytes = 0

    def log_keys(self) -> list[str]:
        run = self.taken.run
        return [keys.jobs(run), keys.attempts(run), keys.events(run), keys.log(run, "")]

    def log_args(self, lines: list[str]) -> list[Any]:
        cap = self.settings.worker_log_cap_bytes
        return [self.taken.key, self.taken.fence, cap, MARKER.format(cap=cap), *lines]

    async def _send(self, lines: list[str]) -> str:
        result, _ = await self.worker.reliably(
            lambda: self.worker.store.script(scripts.APPEND_LOG, self.log_keys(), self.log_args(lines))
        )
        if result == "stale":
            self.lost = True
            self.stop.set()
        return result

    async def _heartbeat(self) -> None:
        run, key = self.taken.run, self.taken.key
        interval = self.worker.lease.seconds / 3
        lease_ms = int(self.worker.lease.seconds * 1000)
        while True:
            await asyncio.sleep(interval)
            try:
                result, cancel = await self.worker.store.script(
                    scripts.HEARTBEAT,
                    [keys.jobs(run), keys.lease(run, key)],
                    [key, self.taken.fence, lease_ms],
                )
                await self.worker.redis.xclaim(
                    self.taken.queue, keys.WORKER_GROUP, self.worker.id, 0, [self.taken.entry_id], justid=True
                )
            except Exception:
                continue  # Redis away a moment: the lease outlasts a few missed beats
            if result != "ok":
                self.lost = True  # fenced off: another attempt owns the job now
                self.stop.set()
                return
            if cancel == "1":
                self.cancelled = True
                self.stop.set()

    async def execute(self) -> tuple[str, str, int, str]:
        known = await self.worker.run_of(self.taken.run)
        job_plan = known.jobs[self.taken.key]
        job = known.definition_jobs[job_plan.job_id]
        definition = known.definition
        text = known.fields
        inputs = known.inputs
        self.sink = LogSink(self._send, Masker([]), self.settings.worker_log_cap_bytes)
        self.sink.start()
        self.heartbeat_task = asyncio.create_task(self._heartbeat())
        wanted = references(job_envs(definition, job))
        secrets: dict[str, str] = {}
        if wanted:
            attempt = names.attempt_name(
                text["project"].decode(),
                text["pipeline"].decode(),
                self.taken.run,
                self.taken.key,
                self.number,
            )
            secrets, problem = await secrets_client.resolve(
                self.worker.pipeline, attempt, self.taken.fence, wanted
            )
            if problem:
                self.sink.line(problem)
                return states.FAILED, states.SETUP_FAILED, 0, problem
            self.sink.masker = Masker(list(secrets.values()))  # before any step's output
        env = await self._environment(definition, job, job_plan, inputs, secrets)
        source = text.get("source", b"").decode()
        ref = text.get("ref", b"").decode()
        deadline = time.monotonic() + job_plan.timeout_s
        failed: tuple[str, str, int, str] | None = None
        checkout = self.workspace / "src"
        cwd = self.workspace
        saves: list[caches.PendingSave] = []
        cache_context = caches.CacheContext(
            self.worker.pipeline,
            caches_client.CacheCall(
                names.run_name(text["project"].decode(), text["pipeline"].decode(), self.taken.run),
                self.taken.key,
                self.number,
                self.taken.fence,
            ),
            self.workspace,
            self.sink.line,
            deadline,
            self.worker.run_as,
        )
        for index, step in enumerate(job.steps):
            kind = step.WhichOneof("action")
            when = (
                model_pb2.WHEN_ALWAYS if kind == "artifact" and step.artifact.always else step.condition.when
            )
            if failed and when not in (model_pb2.WHEN_ON_FAILURE, model_pb2.WHEN_ALWAYS):
                continue
            if not failed and when == model_pb2.WHEN_ON_FAILURE:
                continue
            if self.stop.is_set():
                break
            name = step.name or step.id or f"step {index + 1}"
            self.sink.line(f"== {name}")
            if kind == "checkout":
                outcome = await self._checkout(source, ref, checkout, deadline)
                if outcome is not None:
                    failed = failed or outcome
                    continue
                cwd = checkout
                continue
            if kind == "artifact":
                context = artifacts.StepContext(
                    self.worker.pipeline, self.worker.redis, self.sink.line, deadline
                )
                artifact_name = _substitute(step.artifact.name, job_plan, inputs)
                outcome = await artifacts.run_step(step.artifact, artifact_name, self, job_plan, cwd, context)
                if outcome is not None and not step.continue_on_error:
                    failed = failed or outcome
                continue
            if kind == "cache":  # restored here, saved after the job's steps all succeeded
                saves.append(await caches.restore_step(step.cache, cwd, cache_context))
                continue
            if kind == "setup":
                version = _substitute(step.setup.version, job_plan, inputs)
                outcome = await setup_steps.run_step(step.setup, version, env, self.sink.line)
                if outcome is not None and not step.continue_on_error:
                    failed = failed or outcome
                continue
            if kind != "run":
                self.sink.line(f"({kind} steps are not run by this worker; skipped)")
                continue
            step_env = dict(env)
            for name_, value in step.env.items():
                step_env[name_] = _env_value(value, secrets, job_plan, inputs)
            workdir = step.run.working_directory or job.working_directory
            step_cwd = (cwd / workdir) if workdir else cwd
            command = _substitute(step.run.command, job_plan, inputs)
            timeout = deadline - time.monotonic()
            if step.HasField("timeout"):
                timeout = min(timeout, duration_seconds(step.timeout) or timeout)
            result = await process.run(
                [*SHELLS.get(step.run.shell, SHELLS[""]), command],
                cwd=str(step_cwd),
                env=step_env,
                limits=self._limits(),
                timeout_s=timeout,
                grace_s=self.settings.worker_kill_grace_seconds,
                stop=self.stop,
                output=self.sink.output,
                user=self.worker.run_as,
            )
            self.sink.end_of_step()
            outcome = self._outcome(name, result)
            if outcome is not None and not step.continue_on_error:
                failed = failed or outcome
        if failed is None and not self.stop.is_set():
            for pending in saves:
                await caches.save_step(pending, cache_context)
        return failed or (states.SUCCEEDED, "", 0, "")

    def _outcome(self, name: str, result: process.Outcome) -> tuple[str, str, int, str] | None:
        if result.stopped:
            if self.worker.hand_back.is_set():
                return (
                    states.FAILED,
                    states.HANDED_BACK,
                    result.exit_code,
                    "the worker shut down; handed back",
                )
            return states.CANCELLED, states.CANCELLED_REASON, result.exit_code, f"{name}: stopped (cancelled)"
        if result.timed_out:
            return (
                states.TIMED_OUT,
                states.TIMEOUT,
                result.exit_code,
                f"{name}: ran out of time (SIGTERM, then SIGKILL)",
            )
        if result.exit_code == 0:
            return None
        if result.exit_code == -signal.SIGXCPU:
            return states.FAILED, states.RESOURCE_LIMIT, result.exit_code, f"{name}: CPU time limit reached"
        tail = "\n".join(self.sink.recent) if self.sink else ""
        if any(hint in tail for hint in RESOURCE_HINTS) or result.exit_code == -signal.SIGKILL:
            return (
                states.FAILED,
                states.RESOURCE_LIMIT,
                result.exit_code,
                (
                    f"{name}: exit status {result.exit_code}; a resource limit was reached (processes, memory or files)"
                ),
            )
        return states.FAILED, states.EXIT_CODE, result.exit_code, f"{name}: exit status {result.exit_code}"

    def _limits(self) -> process.Limits:
        return process.Limits(
            cpu_seconds=self.settings.worker_cpu_seconds,
            memory_bytes=self.settings.worker_memory_bytes,
            open_files=self.settings.worker_open_files,
            processes=process.user_process_count(self.worker.run_as.uid if self.worker.run_as else None)
            + self.settings.worker_processes,
        )

    async def _checkout(
        self, source: str, ref: str, target: Path, deadline: float
    ) -> tuple[str, str, int, str] | None:
        assert self.sink is not None
        if not source:
            self.sink.line("no source to check out")
            return states.FAILED, states.SETUP_FAILED, 0, "checkout: the run has no source"
        argv = ["git", "clone", "--quiet", "--no-hardlinks", "--", source, str(target)]
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.workspace),
            "GIT_TERMINAL_PROMPT": "0",
        }
        for command in [argv, *([["git", "-C", str(target), "checkout", "--quiet", ref]] if ref else [])]:
            result = await process.run(
                command,
                cwd=str(self.workspace),
                env=env,
                limits=self._limits(),
                timeout_s=deadline - time.monotonic(),
                grace_s=self.settings.worker_kill_grace_seconds,
                stop=self.stop,
                output=self.sink.output,
            )
            self.sink.end_of_step()
            if result.exit_code != 0:
                return (
                    states.FAILED,
                    states.SETUP_FAILED,
                    result.exit_code,
                    f"checkout failed (exit status {result.exit_code})",
                )
        process.hand_over(str(target), self.worker.run_as)  # cloned by the worker, run by the steps' user
        return None

    async def _environment(
        self,
        definition: model_pb2.PipelineDefinition,
        job: model_pb2.Job,
        job_plan: JobPlan,
        inputs: dict[str, Any],
        secrets: dict[str, str],
    ) -> dict[str, str]:
        """What the steps see: a small base, then the pipeline's and the job's env."""
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.workspace),
            "LANG": "C.UTF-8",
            "CI": "true",
            "DEVMESH_RUN": self.taken.run,
            "DEVMESH_JOB": self.taken.key,
            "DEVMESH_ATTEMPT": str(self.number),
        }
        if job_plan.finally_job:
            env["DEVMESH_RUN_STATUS"] = await self._run_status(job_plan)
        for source in (definition.env, job.env):
            for name, value in source.items():
                env[name] = _env_value(value, secrets, job_plan, inputs)
        return env

    async def _run_status(self, job_plan: JobPlan) -> str:
        raw = await self.worker.store.jobs_raw(self.taken.run)
        records = [JobRecord.load(v) for k, v in raw.items()]
        if any(r.s == states.CANCELLED for r in records):
            return "Cancelled"
        return "Failed" if any(r.s in states.FAILURES for r in records) else "Succeeded"

    async def finish_logs(self) -> None:
        if self.sink is not None:
            await self.sink.close()

    async def drain_logs(self) -> list[str]:
        """The log lines left to send with the report (the others are sent)."""
        if self.sink is None:
            return []
        tail = await self.sink.drain()
        if self.sink.stale:
            self.lost = True
        return tail

    def clean(self) -> None:
        try:
            self.workspace.rmdir()  # most jobs leave nothing: one syscall, not rmtree's walk
        except OSError:
            shutil.rmtree(self.workspace, ignore_errors=True)


def _env_text(value: Any) -> str:
    kind = value.WhichOneof("kind")
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    if kind == "number_value":
        number = value.number_value
        return str(int(number)) if float(number).is_integer() else str(number)
    return str(value.string_value)


def _env_value(value: Any, secrets: dict[str, str], job_plan: JobPlan, inputs: dict[str, Any]) -> str:
    """An env value as a step sees it: a secret's value as it is (no placeholder in it is
    substituted), anything else as text with its placeholders substituted."""
    reference = reference_of(value)
    if reference:
        return secrets[reference]
    return _substitute(_env_text(value), job_plan, inputs)


def _substitute(text: str, job_plan: JobPlan, inputs: dict[str, Any]) -> str:
    for placeholder in expressions.placeholders(text):
        if placeholder.scope == "matrix":
            text = text.replace(placeholder.text, job_plan.matrix.get(placeholder.name, ""))
        elif placeholder.scope == "inputs":
            value = inputs.get(placeholder.name, "")
            text = text.replace(
                placeholder.text, "true" if value is True else "false" if value is False else str(value)
            )
    return text
