"""Pipeline runs on 4 worker processes: 1,000 independent `true` jobs against a local process pool, a 200-job chain, log lines to a StreamRunEvents client.

Scheduling: a run of 1,000 independent jobs (four matrix jobs of 250 combinations) on 4
`devmesh pipeline worker` processes, from RunPipeline to the run's end, against the same
1,000 `true` processes run by a plain pool of 4 in this process, in interleaved rounds (the
pool is the limit of this machine for starting processes). A chain of 200 jobs, each needing
the one before, measures the path from one job's end to the next one's start when workers are
idle. Queue-to-start is each attempt's time from queued to started (the attempts' own stamps).
Goals: ratio >= 0.5; queue-to-start p99 < 50 ms with idle workers. `cpu_ms_per_job`: the CPU
each part spent per independent job (the workers' own, their steps' processes, the service
with the coordinator, Valkey), beside the pool's: on 2 cores the rate is bounded by
2 / total.

Log streaming: one step prints lines carrying their print time; a StreamRunEvents client
counts them and takes each line's delay to its arrival: as fast as the step prints (the
throughput; the delay there is the backlog), and paced at the goal's 100,000 lines/s (the
delay). Goals: 100,000 lines/s without losing a line; p99 delay < 250 ms.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from tools.bench.sections import Section
from tools.stack.processes import ManagedProcess, spawn
from tools.stack.service_process import start_service
from tools.stack.valkey import start_valkey

WORKERS = 4
INDEPENDENT = 1000
CHAIN = 200
ROUNDS = 2
LOG_LINES = 200_000
GOAL_RATIO = 0.5
GOAL_IDLE_P99_MS = 50.0
GOAL_LINES_PER_S = 100_000
GOAL_LINE_P99_MS = 250.0


def _quantiles_ms(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    cuts = statistics.quantiles(ordered, n=100)
    return {"p50_ms": round(cuts[49] * 1000, 3), "p99_ms": round(cuts[98] * 1000, 3), "n": len(ordered)}


def _definition(jobs: list[dict[str, Any]]) -> Any:
    from google.protobuf import json_format

    from devmesh.pipeline.v1 import model_pb2

    return json_format.ParseDict({"jobs": jobs}, model_pb2.PipelineDefinition())


class _Mesh:
    def __init__(self, addr: str) -> None:
        import grpc

        from devmesh.pipeline.v1 import pipeline_pb2, pipeline_pb2_grpc, runs_pb2_grpc

        self.channel = grpc.insecure_channel(addr, options=[("grpc.max_receive_message_length", 64 << 20)])
        self.pipelines = pipeline_pb2_grpc.PipelineServiceStub(self.channel)
        self.runs = runs_pb2_grpc.RunServiceStub(self.channel)
        self.project = f"bench-{uuid.uuid4().hex[:8]}"
        self.pipelines.CreateProject(pipeline_pb2.CreateProjectRequest(project_id=self.project))

    def pipeline(self, pipeline_id: str, jobs: list[dict[str, Any]]) -> str:
        from devmesh.pipeline.v1 import pipeline_pb2

        created = self.pipelines.CreatePipeline(
            pipeline_pb2.CreatePipelineRequest(
                parent=f"projects/{self.project}",
                pipeline_id=pipeline_id,
                pipeline=pipeline_pb2.Pipeline(definition=_definition(jobs)),
            )
        )
        return str(created.name)

    def run_to_end(self, pipeline: str) -> tuple[float, Any]:
        """Seconds from RunPipeline to the run's end, and the run."""
        from devmesh.pipeline.v1 import runs_pb2

        started = time.perf_counter()
        run = self.runs.RunPipeline(runs_pb2.RunPipelineRequest(parent=pipeline))
        for _ in self.runs.StreamRunEvents(runs_pb2.StreamRunEventsRequest(name=run.name, skip_logs=True)):
            pass  # the stream ends with the run
        elapsed = time.perf_counter() - started
        return elapsed, self.runs.GetRun(runs_pb2.GetRunRequest(name=run.name))


def _queue_to_start(run: Any) -> list[float]:
    return [
        (a.start_time.ToNanoseconds() - a.queue_time.ToNanoseconds()) / 1e9
        for job in run.jobs
        for a in job.attempts
    ]


def _chain_parts(run: Any) -> dict[str, Any]:
    """Where a chain's time goes: an attempt's run on its worker (start to end, the process and
    the reports), and the decision from one job's end to the next one queued."""
    attempts = [job.attempts[0] for job in run.jobs]
    running = [(a.end_time.ToNanoseconds() - a.start_time.ToNanoseconds()) / 1e9 for a in attempts]
    deciding = [
        (later.queue_time.ToNanoseconds() - earlier.end_time.ToNanoseconds()) / 1e9
        for earlier, later in itertools.pairwise(attempts)
    ]
    return {"attempt_start_to_end": _quantiles_ms(running), "end_to_next_queued": _quantiles_ms(deciding)}


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu_s(pid: int) -> tuple[float, float]:
    """A process's CPU seconds: its own, and its waited-for children's (a worker's steps)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    user, system, children_user, children_system = (int(x) for x in fields[11:15])
    return (user + system) / _TICK, (children_user + children_system) / _TICK


class _CpuMeter:
    """CPU per job of each part of the mesh over the independent rounds: what bounds the rate
    on a machine whose cores are all busy."""

    def __init__(self, valkey: int, service: int, workers: list[int]) -> None:
        self.parts = {"valkey": [valkey], "service": [service], "workers": workers}
        self.spent = {"valkey": 0.0, "service": 0.0, "workers": 0.0, "worker_steps": 0.0, "pool": 0.0}
        self.jobs = self.pool_jobs = 0
        self._before: dict[str, tuple[float, float]] = {}

    def _now(self) -> dict[str, tuple[float, float]]:
        found = {}
        for part, pids in self.parts.items():
            samples = [_cpu_s(pid) for pid in pids]
            found[part] = (sum(s[0] for s in samples), sum(s[1] for s in samples))
        return found

    def start(self) -> None:
        self._before = self._now()

    def stop(self, jobs: int) -> None:
        after = self._now()
        for part in self.parts:
            self.spent[part] += after[part][0] - self._before[part][0]
        self.spent["worker_steps"] += after["workers"][1] - self._before["workers"][1]
        self.jobs += jobs

    def pool(self, count: int) -> float:
        before = os.times()
        seconds = _pool(count)
        after = os.times()
        spent = after.user + after.system + after.children_user + after.children_system
        self.spent["pool"] += spent - (
            before.user + before.system + before.children_user + before.children_system
        )
        self.pool_jobs += count
        return seconds

    def figures(self) -> dict[str, float]:
        mesh = {k: v for k, v in self.spent.items() if k != "pool"}
        per_job = {k: round(v * 1000 / max(1, self.jobs), 2) for k, v in mesh.items()}
        per_job["total"] = round(sum(mesh.values()) * 1000 / max(1, self.jobs), 2)
        per_job["pool_total"] = round(self.spent["pool"] * 1000 / max(1, self.pool_jobs), 2)
        return per_job


def _pool(count: int) -> float:
    """Seconds for a pool of WORKERS to run `count` `true` processes."""
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(lambda _: subprocess.run(["true"], check=True), range(count)))
    return time.perf_counter() - started


def _independent_jobs() -> list[dict[str, Any]]:
    per_job = INDEPENDENT // 4
    axis = {"axes": [{"name": "n", "values": [str(i) for i in range(per_job)]}], "failFast": False}
    return [{"id": f"j{k}", "steps": [{"run": {"command": "true"}}], "matrix": axis} for k in range(4)]


def _chain_jobs() -> list[dict[str, Any]]:
    return [
        {"id": f"c{i}", "steps": [{"run": {"command": "true"}}], **({"needs": [f"c{i - 1}"]} if i else {})}
        for i in range(CHAIN)
    ]


def _log_lines(mesh: _Mesh, pipeline: str) -> dict[str, Any]:
    from devmesh.pipeline.v1 import runs_pb2

    run = mesh.runs.RunPipeline(runs_pb2.RunPipelineRequest(parent=pipeline))
    delays: list[float] = []
    first = last = 0.0
    for event in mesh.runs.StreamRunEvents(runs_pb2.StreamRunEventsRequest(name=run.name)):
        if not event.HasField("log"):
            continue
        now = time.time_ns()
        for line in event.log.lines:
            if line.isdigit():
                delays.append((now - int(line)) / 1e9)
        if delays:
            first = first or time.perf_counter()
            last = time.perf_counter()
    span = max(last - first, 1e-9)
    return {
        "lines_printed": LOG_LINES,
        "lines_received": len(delays),
        "lines_per_s": round(len(delays) / span),
        "delay": _quantiles_ms(delays),
    }


def _printer() -> str:
    """As fast as Python prints: the throughput."""
    return (
        "python3 -c 'import sys, time\n"
        f"for _ in range({LOG_LINES}): sys.stdout.write(str(time.time_ns()) + chr(10))'"
    )


def _paced_printer() -> str:
    """GOAL_LINES_PER_S, 1,000 lines every 10 ms: the delay at the goal's rate."""
    ticks = LOG_LINES // 1000
    return (
        "python3 -c 'import sys, time\n"
        "start = time.monotonic()\n"
        f"for tick in range({ticks}):\n"
        "    sys.stdout.write(chr(10).join([str(time.time_ns())] * 1000) + chr(10)); sys.stdout.flush()\n"
        "    time.sleep(max(0.0, start + (tick + 1) * 0.01 - time.monotonic()))'"
    )


def _start_workers(redis_url: str, state: Path) -> list[ManagedProcess]:
    state.chmod(0o711)  # a root worker runs steps as nobody, who must reach their workspaces
    env = {
        "PATH": os.environ.get("PATH", ""),
        "DEVMESH_REDIS_URL": redis_url,
        "DEVMESH_WORKER_DIR": str(state),
        "DEVMESH_LOG_LEVEL": "warning",
    }
    return [
        spawn(f"worker-{i}", [sys.executable, "-m", "services.pipeline.worker"], state, {**env, "DEVMESH_WORKER_ID": f"bench-{i}"})
        for i in range(WORKERS)
    ]  # fmt: skip


def run(duration: float) -> dict[str, Any]:
    """Scheduling and log streaming figures of pipeline runs."""
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        valkey = start_valkey(state / "valkey")
        service = None
        workers: list[ManagedProcess] = []
        try:
            service = start_service(
                ["pipeline"], valkey.url, state, extra_env={"DEVMESH_LOG_LEVEL": "warning"}
            )
            workers = _start_workers(valkey.url, state)
            mesh = _Mesh(service.addr)
            independent = mesh.pipeline("independent", _independent_jobs())
            chain = mesh.pipeline("chain", _chain_jobs())
            logs = mesh.pipeline("logs", [{"id": "print", "steps": [{"run": {"command": _printer()}}]}])
            paced = mesh.pipeline(
                "paced", [{"id": "print", "steps": [{"run": {"command": _paced_printer()}}]}]
            )
            mesh.run_to_end(chain)  # warm: every worker has started a process and read its queue
            service_s: list[float] = []
            pool_s: list[float] = []
            latencies: list[float] = []
            meter = _CpuMeter(valkey.process.pid, service.process.pid, [w.pid for w in workers])
            for _ in range(ROUNDS):  # interleaved: both see the same machine
                meter.start()
                elapsed, done = mesh.run_to_end(independent)
                meter.stop(INDEPENDENT)
                service_s.append(elapsed)
                latencies.extend(_queue_to_start(done))
                pool_s.append(meter.pool(INDEPENDENT))
            chain_s, chain_run = mesh.run_to_end(chain)
            streaming = _log_lines(mesh, logs)
            at_goal_rate = _log_lines(mesh, paced)
        finally:
            for worker in workers:
                worker.stop()
            if service is not None:
                service.process.stop()
            valkey.process.stop()
    service_rate = INDEPENDENT / statistics.median(service_s)
    pool_rate = INDEPENDENT / statistics.median(pool_s)
    chain_latency = _queue_to_start(chain_run)
    return {
        "workers": WORKERS,
        "independent": {
            "jobs": INDEPENDENT,
            "jobs_per_s": round(service_rate, 1),
            "pool_jobs_per_s": round(pool_rate, 1),
            "ratio_to_pool": round(service_rate / pool_rate, 3),
            "queue_to_start": _quantiles_ms(latencies),
            "rounds_s": [round(s, 3) for s in service_s],
            "pool_rounds_s": [round(s, 3) for s in pool_s],
            "cpu_ms_per_job": meter.figures(),
        },
        "chain": {
            "jobs": CHAIN,
            "seconds": round(chain_s, 3),
            "jobs_per_s": round(CHAIN / chain_s, 1),
            "queue_to_start_idle": _quantiles_ms(chain_latency),
            **_chain_parts(chain_run),
        },
        "log_streaming": streaming,
        "log_streaming_at_100k_lines_per_s": at_goal_rate,
        "goals": {
            "ratio_to_pool": GOAL_RATIO,
            "queue_to_start_idle_p99_ms": GOAL_IDLE_P99_MS,
            "lines_per_s": GOAL_LINES_PER_S,
            "line_delay_p99_ms": GOAL_LINE_P99_MS,
        },
    }


SECTION = Section("pipeline_runs", run, order=90)
