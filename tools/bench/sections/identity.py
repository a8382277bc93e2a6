"""ResolveConfig with API-key authentication and the Redis rate limiter on, against auth off and echo.

Under the same load in one run; then one call at a time, whose p50 difference is what
authentication plus rate limiting cost, and the access interceptor's own time per call from
its histogram in the service. Goals: >= 0.7 of echo, and < 150 µs per call at p50.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path
from typing import Any

from tools.bench.echo import ECHO_METHOD, spawn_echo_server, wait_for_echo_server
from tools.bench.load import ROUNDS, Metadata, interleaved, measure, ratio
from tools.bench.sections import Section
from tools.bench.seed import mint_admin_key, seed_bench_namespace
from tools.bench.stats import histogram, quantile
from tools.stack.openbao import start_openbao
from tools.stack.processes import LOOPBACK, free_port
from tools.stack.service_process import VaultLogin, start_service
from tools.stack.valkey import start_valkey


def run(duration: float) -> dict[str, Any]:
    """ResolveConfig with API-key authentication and the Redis rate limiter on, against the same
    call with both off and against the bare echo server, under the same load in one run; then
    one call at a time, whose p50 difference is what authentication plus rate limiting cost."""
    from tools.stack import vault_bootstrap

    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        valkey = start_valkey(state / "valkey")
        buckets = start_valkey(state / "valkey-ratelimit", durable=False)  # as `make run` does
        bao = start_openbao(state / "openbao")
        echo, echo_addr = spawn_echo_server(state)
        started: list[Any] = []
        try:
            role = vault_bootstrap.bootstrap(bao.client(), ["config"], state / "vault")["config"]
            log_env = {"DEVMESH_LOG_LEVEL": "info"}
            started.append(off := start_service(["config"], valkey.url, state, extra_env=log_env))
            login = VaultLogin(bao.addr, role.role_id, role.secret_id_file)
            metrics = f"{LOOPBACK}:{free_port()}"
            on_env = {**log_env, "DEVMESH_RATE_LIMIT_REDIS_URL": buckets.url, "DEVMESH_METRICS_ADDR": metrics}
            access_check = functools.partial(
                histogram, f"http://{metrics}/metrics", "devmesh_access_check_seconds"
            )
            started.append(on := start_service(["config"], valkey.url, state, extra_env=on_env, vault=login))
            wait_for_echo_server(echo, echo_addr)
            resolve, _ = seed_bench_namespace(off.addr)
            key = mint_admin_key(valkey.url, bao.client())
            with_key: Metadata = (("x-api-key", key),)
            method = "/devmesh.config.v1.ConfigService/ResolveConfig"
            once = functools.partial(measure, duration=duration / ROUNDS)
            before_load = access_check()  # only the guarded load reaches `on` until after_load
            results = interleaved(
                {
                    "echo": functools.partial(once, echo_addr, ECHO_METHOD, resolve),
                    "plain": functools.partial(once, off.addr, method, resolve),
                    "guarded": functools.partial(once, on.addr, method, resolve, metadata=with_key),
                }
            )
            after_load = access_check()
            echo_result, plain, guarded = results["echo"], results["plain"], results["guarded"]
            one = functools.partial(measure, duration=duration, processes=1, in_flight=1)
            plain_serial = one(off.addr, method, resolve)
            guarded_serial = one(on.addr, method, resolve, metadata=with_key)
            after_serial = access_check()
        finally:
            for service in started:
                service.process.stop()
            echo.stop()
            assert bao.process is not None
            bao.process.stop()
            buckets.process.stop()
            valkey.process.stop()
    return {
        "echo_bare": echo_result,
        "resolve_auth_off": {**plain, "ratio_to_echo": ratio(plain, echo_result)},
        "resolve_api_key_and_rate_limit": {
            **guarded,
            "ratio_to_echo": ratio(guarded, echo_result),
            "ratio_to_auth_off": ratio(guarded, plain),
        },
        "goal_ratio_to_echo": 0.7,
        "one_call_at_a_time": {
            "auth_off": plain_serial,
            "api_key_and_rate_limit": guarded_serial,
            "p50_difference_us": round((guarded_serial["p50_ms"] - plain_serial["p50_ms"]) * 1000),
        },
        # Measured inside the service: the time the access interceptor (authentication,
        # authorization, rate limit) took per call, from its histogram.
        "auth_and_rate_limit_in_process": {
            "one_call_at_a_time_p50_us": round(quantile(after_load, after_serial, 0.5) * 1e6),
            "one_call_at_a_time_p99_us": round(quantile(after_load, after_serial, 0.99) * 1e6),
            "under_load_p50_us": round(quantile(before_load, after_load, 0.5) * 1e6),
            "goal_p50_us": 150,
        },
    }


SECTION = Section("identity", run, order=30)
