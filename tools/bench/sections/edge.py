"""Cold start of the whole local stack; ResolveConfig direct over mTLS and through the edge (gRPC, REST).

Cold start: Valkey, OpenBao and its bootstrap, certificates, the config service, Envoy
healthy. Then ResolveConfig straight to the service over mTLS, through the edge over gRPC, and
through the edge over REST (HTTP/1.1 keep-alive clients), with the same client load; and one
call at a time, for the latency the edge adds without queueing. Goals: cold start < 15 s;
edge >= 0.85 of direct throughput with p99 overhead < 2 ms.
"""

from __future__ import annotations

import functools
import tempfile
import time
from pathlib import Path
from typing import Any

from tools.bench.load import ROUNDS, Metadata, Tls, interleaved, measure, ratio
from tools.bench.sections import Section
from tools.bench.seed import seed_bench_namespace
from tools.stack.local import local_stack


def run(duration: float) -> dict[str, Any]:
    """The whole stack from cold, then ResolveConfig straight to the service (mTLS) and through
    the edge over gRPC and REST, one after the other with the same client load."""
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        # Every call carries the admin key; its role's limit is set out of the benchmark's reach.
        env = {"DEVMESH_LOG_LEVEL": "info", "DEVMESH_RATE_LIMITS": "admin=1000000/1000000,*=20/40"}
        with local_stack(Path(tmp), ["config"], service_env=env) as stack:
            cold_start = time.perf_counter() - started
            assert stack.envoy is not None
            tls = stack.operator_tls
            paths: Tls = (str(tls.ca), str(tls.cert), str(tls.key))
            key: Metadata = (("x-api-key", stack.admin_api_key),)
            direct_addr = stack.services["config"].addr
            resolve, _ = seed_bench_namespace(direct_addr, tls)
            method = "/devmesh.config.v1.ConfigService/ResolveConfig"
            edge_addr, rest_path = stack.envoy.edge_addr, "/v1/namespaces/bench/environments/prod:resolve"
            once = functools.partial(measure, duration=duration / ROUNDS, tls=paths, metadata=key)
            results = interleaved(
                {
                    "direct": functools.partial(once, direct_addr, method, resolve),
                    "grpc": functools.partial(once, edge_addr, method, resolve),
                    "rest": functools.partial(once, edge_addr, rest_path, b"", rest=True, in_flight=16),
                }
            )
            direct, via_grpc, via_rest = results["direct"], results["grpc"], results["rest"]
            # Latency added by the edge, without queueing: one call at a time.
            one = functools.partial(
                measure, duration=duration, tls=paths, processes=1, in_flight=1, metadata=key
            )
            direct_serial = one(direct_addr, method, resolve)
            grpc_serial = one(edge_addr, method, resolve)
            rest_serial = one(edge_addr, rest_path, b"", rest=True)

    def overhead(result: dict[str, float]) -> dict[str, float]:
        return {
            **result,
            "p50_overhead_ms": round(result["p50_ms"] - direct_serial["p50_ms"], 3),
            "p99_overhead_ms": round(result["p99_ms"] - direct_serial["p99_ms"], 3),
        }

    return {
        "cold_start_s": round(cold_start, 2),
        "goal_cold_start_s": 15,
        "throughput": {
            "direct_mtls": direct,
            "edge_grpc": {**via_grpc, "ratio_to_direct": ratio(via_grpc, direct)},
            "edge_rest": {**via_rest, "ratio_to_direct": ratio(via_rest, direct)},
            "goal_ratio_to_direct": 0.85,
        },
        "one_call_at_a_time": {
            "direct_mtls": direct_serial,
            "edge_grpc": overhead(grpc_serial),
            "edge_rest": overhead(rest_serial),
            "goal_p99_overhead_ms": 2,
        },
    }


SECTION = Section("edge", run, order=50)
