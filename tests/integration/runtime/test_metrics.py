"""Prometheus metrics on the side HTTP port, and the per-call log line, of a real
`devmesh serve config` process."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

import grpc

from devmesh.config.v1 import config_pb2, config_pb2_grpc
from tools.stack.processes import free_port, wait_until
from tools.stack.service_process import start_service
from tools.stack.valkey import Valkey


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


def test_rpcs_are_counted_by_method_and_code(valkey: Valkey, tmp_path: Path) -> None:
    metrics_port = free_port()
    server = start_service(
        ["config"], valkey.url, tmp_path, extra_env={"DEVMESH_METRICS_ADDR": f"127.0.0.1:{metrics_port}"}
    )
    try:
        with grpc.insecure_channel(server.addr) as channel:
            stub = config_pb2_grpc.ConfigServiceStub(channel)
            try:
                stub.GetNamespace(config_pb2.GetNamespaceRequest(name="namespaces/no-such-ns"), timeout=5)
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]
        text = _scrape(metrics_port)
    finally:
        server.process.stop()
    assert (
        'devmesh_rpc_duration_seconds_count{code="NOT_FOUND",method="GetNamespace",'
        'service="devmesh.config.v1.ConfigService"} 1.0'
    ) in text
    assert 'devmesh_dependency_up{dependency="redis"} 1.0' in text


def test_open_streams_are_counted_in_flight_until_they_end(valkey: Valkey, tmp_path: Path) -> None:
    metrics_port = free_port()
    server = start_service(
        ["config"],
        valkey.url,
        tmp_path,
        extra_env={
            "DEVMESH_METRICS_ADDR": f"127.0.0.1:{metrics_port}",
            "DEVMESH_CONFIG_WATCH_PROGRESS_INTERVAL": "1",
        },
    )

    def streams() -> str | None:
        found = re.search(r'^devmesh_rpc_in_flight\{kind="stream"\} (\S+)$', _scrape(metrics_port), re.M)
        return found.group(1) if found else None

    try:
        with grpc.insecure_channel(server.addr) as channel:
            stub = config_pb2_grpc.ConfigServiceStub(channel)
            stub.CreateNamespace(config_pb2.CreateNamespaceRequest(namespace_id="gauged"), timeout=5)
            assert streams() == "0.0"
            watch = stub.WatchConfig(
                config_pb2.WatchConfigRequest(name="namespaces/gauged/environments/-", since_revision=1)
            )
            assert next(watch).HasField("progress")
            assert streams() == "1.0"
            watch.cancel()
            wait_until(lambda: streams() == "0.0", 5, "the cancelled stream to leave the gauge")
    finally:
        server.process.stop()


def test_each_call_logs_one_line_with_its_request_and_trace_ids(valkey: Valkey, tmp_path: Path) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    server = start_service(["config"], valkey.url, tmp_path)
    try:
        with grpc.insecure_channel(server.addr) as channel:
            stub = config_pb2_grpc.ConfigServiceStub(channel)
            for metadata in (
                (("traceparent", f"00-{trace_id}-00f067aa0ba902b7-01"), ("x-request-id", "req-traced")),
                (),
            ):
                try:
                    stub.GetNamespace(
                        config_pb2.GetNamespaceRequest(name="namespaces/logged"), metadata=metadata, timeout=5
                    )
                except grpc.RpcError as error:
                    assert error.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]
    finally:
        server.process.stop()
    lines = [
        json.loads(line) for line in server.process.log_path.read_text().splitlines() if line.startswith("{")
    ]
    calls = [
        line
        for line in lines
        if line.get("event") == "rpc.completed" and line["method"].endswith("/GetNamespace")
    ]
    assert len(calls) == 2
    traced, plain = calls
    assert (traced["trace_id"], traced["request_id"], traced["code"]) == (trace_id, "req-traced", "NOT_FOUND")
    assert plain["trace_id"] is None
    assert re.fullmatch(r"[0-9a-f]{32}", plain["request_id"])
    # Every line's time in one shape: the access lines' and structlog's (TimeStamper, iso, utc).
    assert all(
        re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z", line["timestamp"]) for line in lines
    )
