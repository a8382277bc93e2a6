"""Typed, validated settings loaded once from `DEVMESH_*` environment variables.

Each setting is a dataclass field declared with `setting(...)`: its environment name is
derived from the field name (`redis_url` -> `DEVMESH_REDIS_URL`), and it carries a default
and a description that `devmesh serve --help` prints. `load()` parses and validates every
field and raises `SettingsError` listing every bad value at once, so a process refuses to
start with a readable message instead of failing later.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

from services.runtime import ratelimit
from services.runtime.identity import roles

ENV_PREFIX = "DEVMESH_"

T = TypeVar("T")
S = TypeVar("S")


class SettingsError(Exception):
    """One or more settings are invalid; the message names each of them."""


def setting(
    default: T, description: str, *, parse: Callable[[str], T] | None = None, shown: str | None = None
) -> T:
    """Declare a settings field: its default, what it means, and how to parse it from a string.
    A setting parsed into a structure (a mapping, pairs) shows its default as written (`shown`)."""
    metadata = {"description": description, "parse": parse, "shown": shown}
    return dataclasses.field(default=default, metadata=metadata)


def env_name(field_name: str) -> str:
    return ENV_PREFIX + field_name.upper()


def parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError("expected one of 1/0, true/false, yes/no, on/off")


def parse_positive_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise ValueError("must be a positive integer")
    return value


def parse_positive_float(raw: str) -> float:
    value = float(raw)
    if not value > 0:
        raise ValueError("must be a positive number")
    return value


def parse_batch_window(raw: str) -> float:
    """Seconds, from 0 to 0.1: a longer wait would add more latency than batching saves CPU."""
    value = float(raw)
    if not 0 <= value <= 0.1:
        raise ValueError("must be between 0 and 0.1 seconds")
    return value


def parse_host_port(raw: str) -> str:
    """`host:port` with a numeric port; IPv6 hosts in brackets. Port 0 asks for a free port."""
    host, sep, port = raw.rpartition(":")
    if not sep or not host:
        raise ValueError("expected host:port")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("port must be a number between 0 and 65535")
    if host.startswith("["):
        if not host.endswith("]"):
            raise ValueError("unbalanced brackets around an IPv6 host")
        ipaddress.IPv6Address(host[1:-1])
    return raw


def parse_optional_host_port(raw: str) -> str:
    return parse_host_port(raw) if raw else ""


def is_loopback_addr(addr: str) -> bool:
    """Whether a host:port binds only to the loopback interface."""
    host = addr.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_redis_url(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in {"redis", "rediss", "unix"}:
        raise ValueError("expected a redis://, rediss:// or unix:// URL")
    if parts.scheme != "unix" and not parts.hostname:
        raise ValueError("the URL has no host")
    return raw


def parse_optional_redis_url(raw: str) -> str:
    return parse_redis_url(raw) if raw else ""


def parse_log_level(raw: str) -> str:
    level = raw.strip().lower()
    if level not in {"debug", "info", "warning", "error"}:
        raise ValueError("expected debug, info, warning or error")
    return level


def parse_choice(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return value

    return parse


def parse_rate_limits(raw: str) -> tuple[tuple[str, ratelimit.Limit], ...]:
    """`role=rate/burst,...` -> (role, limit) pairs (a settings value cannot be a mutable dict)."""
    return tuple(ratelimit.parse_limits(raw).items())


def parse_names(raw: str) -> frozenset[str]:
    """Comma-separated names; blanks ignored."""
    return frozenset(filter(None, (name.strip() for name in raw.split(","))))


def parse_peers(raw: str) -> tuple[tuple[str, str], ...]:
    """`name=host:port,name=host:port` -> pairs; each address checked like any host:port."""
    pairs = []
    for entry in filter(None, (e.strip() for e in raw.split(","))):
        name, sep, addr = entry.partition("=")
        if not sep or not name:
            raise ValueError(f"expected <service>=<host:port>, got {entry!r}")
        pairs.append((name.strip(), parse_host_port(addr.strip())))
    if len({name for name, _ in pairs}) != len(pairs):
        raise ValueError("a service is named twice")
    return tuple(pairs)


_DEFAULT_PARSERS: dict[type, Callable[[str], Any]] = {
    str: str,
    int: int,
    float: float,
    bool: parse_bool,
}


def describe(cls: type) -> list[tuple[str, str, str]]:
    """(environment name, default, description) for each field of a settings class."""
    rows = []
    for field in dataclasses.fields(cls):
        shown = field.metadata.get("shown")
        default = repr(shown) if shown is not None else repr(field.default)
        rows.append((env_name(field.name), default, field.metadata.get("description", "")))
    return rows


def load(cls: type[S], environ: Mapping[str, str] | None = None) -> S:
    """Build `cls` from the environment; raise SettingsError naming every invalid value."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    problems: list[str] = []
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        name = env_name(field.name)
        if name not in environ:
            continue
        raw = environ[name]
        parse = field.metadata.get("parse") or _DEFAULT_PARSERS[type(field.default)]
        try:
            values[field.name] = parse(raw)
        except ValueError as exc:
            problems.append(f"{name}={raw!r}: {exc}")
    if problems:
        raise SettingsError("invalid settings:\n  " + "\n  ".join(problems))
    loaded = cls(**values)
    # Rules that tie several settings together live in the class's `problems()`.
    check = getattr(loaded, "problems", None)
    if check is not None and (cross := check()):
        raise SettingsError("invalid settings:\n  " + "\n  ".join(cross))
    return loaded


EDGE_IDENTITY = "spiffe://devmesh.local/ns/devmesh/sa/edge"
MESH_ROLES = "spiffe://devmesh.local/ns/ops/sa/*=admin,spiffe://devmesh.local/ns/devmesh/sa/*=service"
RATE_LIMITS = "admin=500/1000,operator=200/400,service=1000/2000,viewer=50/100,*=20/40"


@dataclass(frozen=True)
class RuntimeSettings:
    """Settings every devmesh process reads, whichever services it hosts."""

    grpc_addr: str = setting(
        "127.0.0.1:50051",
        "Address the gRPC server listens on (host:port; port 0 picks a free one).",
        parse=parse_host_port,
    )
    redis_url: str = setting(
        "redis://127.0.0.1:6379/0", "Redis/Valkey URL holding shared state.", parse=parse_redis_url
    )
    redis_timeout: float = setting(
        2.0, "Seconds before a Redis call fails with UNAVAILABLE.", parse=parse_positive_float
    )
    redis_batch_window: float = setting(
        0.002,
        "Longest wait, in seconds, of a command on the hot-path Redis connection (the revision "
        "check of every STRONG read, the rate limiter's script) for others to share its write. "
        "A command leaves at once when each of the last few writes carried one command (a "
        "caller alone never waits) or when the last write was longer ago than this; otherwise "
        "as soon as as many commands are queued as the largest of the last few writes "
        "carried. Under load one write then carries several commands and the service spends "
        "less CPU per call. 0 sends every command at once.",
        parse=parse_batch_window,
    )
    redis_wait_aof: bool = setting(
        True,
        "After every write, wait until Redis has fsynced it to its append-only file (WAITAOF), "
        "so an acknowledged write survives a Redis restart. Requires appendonly yes.",
        parse=parse_bool,
    )
    metrics_addr: str = setting(
        "",
        "host:port of the Prometheus /metrics HTTP endpoint; empty disables it.",
        parse=parse_optional_host_port,
    )
    otlp_endpoint: str = setting(
        "", "OTLP/gRPC endpoint to export traces to (e.g. http://127.0.0.1:4317); empty: no export."
    )
    log_level: str = setting("info", "debug, info, warning or error.", parse=parse_log_level)
    peers: tuple[tuple[str, str], ...] = setting(
        (),
        "Addresses of the other services this process calls, `<service>=<host:port>` separated by "
        "commas (the services its specs name as peers; `make run` and the manifests set it). "
        "They are called over mTLS with this process's certificate.",
        parse=parse_peers,
        shown="",
    )
    max_concurrent_rpcs: int = setting(
        512, "Unary RPCs served at once; more fail fast with RESOURCE_EXHAUSTED.", parse=parse_positive_int
    )
    max_concurrent_streams: int = setting(
        10000, "Streaming RPCs open at once; more fail with RESOURCE_EXHAUSTED.", parse=parse_positive_int
    )
    max_message_bytes: int = setting(
        4 * 1024 * 1024, "Largest gRPC message accepted or sent.", parse=parse_positive_int
    )
    shutdown_grace: float = setting(
        10.0, "Seconds in-flight RPCs get to finish after SIGTERM.", parse=parse_positive_float
    )
    health_interval: float = setting(
        2.0, "Seconds between dependency health probes.", parse=parse_positive_float
    )
    tls_cert_file: str = setting(
        "",
        "PEM certificate chain the server presents (its SPIFFE identity). With the key and CA files "
        "set, the server requires mTLS and re-reads all three when they change (no restart).",
    )
    tls_key_file: str = setting("", "PEM private key of DEVMESH_TLS_CERT_FILE.")
    tls_ca_file: str = setting("", "PEM bundle of the mesh CA that client certificates must chain to.")
    data_dir: str = setting(
        "",
        "Directory for the files of the services this process hosts, each in a subdirectory named "
        "after it (services that keep files refuse to start without it). `make run` keeps it under "
        ".devmesh/data.",
    )
    insecure: bool = setting(
        False,
        "Serve plaintext gRPC without certificates. Allowed only when DEVMESH_GRPC_ADDR is a "
        "loopback address; for tests and local debugging.",
        parse=parse_bool,
    )
    vault_addr: str = setting(
        "", "Vault/OpenBao URL. Empty: this process uses no Vault (services that need it refuse to start)."
    )
    vault_role_id: str = setting("", "AppRole role_id this service logs in to Vault with.")
    vault_secret_id_file: str = setting(
        "", "File holding the AppRole secret_id (a file, so the secret stays out of the environment)."
    )
    vault_timeout: float = setting(
        2.0,
        "Seconds before a Vault call fails with UNAVAILABLE. Keep it, like DEVMESH_REDIS_TIMEOUT, "
        "well below the edge's per-try timeout (5 s), so that callers get the service's "
        "UNAVAILABLE with RetryInfo rather than the edge's timeout.",
        parse=parse_positive_float,
    )
    vault_ca_file: str = setting(
        "",
        "PEM bundle that an https DEVMESH_VAULT_ADDR's certificate must chain to; empty: the CA "
        "bundle requests ships (certifi). Proxy variables and ~/.netrc never apply to Vault calls.",
    )

    auth: str = setting(
        "required",
        "`required`: every non-public RPC needs an API key, a token or a mesh identity. `off`: "
        "every caller is an anonymous admin; allowed only on a loopback address (local debugging).",
        parse=parse_choice("required", "off"),
    )
    auth_audience: str = setting("devmesh", "The `aud` tokens are issued for and must carry.")
    auth_edge_identities: frozenset[str] = setting(
        frozenset({EDGE_IDENTITY}),
        "Comma-separated SPIFFE ids of the edge proxies: never principals themselves; callers through "
        "the edge authenticate with the API key or token the edge forwards.",
        parse=parse_names,
        shown=EDGE_IDENTITY,
    )
    auth_mesh_roles: tuple[tuple[str, str], ...] = setting(
        roles.parse_mesh_roles(MESH_ROLES),
        "Roles of mesh identities: comma-separated `<SPIFFE id glob>=<role>`, first match wins; an "
        "identity that matches none is authenticated but holds no permission.",
        parse=roles.parse_mesh_roles,
        shown=MESH_ROLES,
    )
    auth_cache_ttl: float = setting(
        5.0,
        "Seconds an API key's record is cached in process (revocations arrive at once over pub/sub; "
        "this bounds staleness if that feed is down).",
        parse=parse_positive_float,
    )
    auth_jwks_refresh: float = setting(
        60.0,
        "Seconds between JWKS refreshes; a retired signing key stops verifying within this time.",
        parse=parse_positive_float,
    )
    rate_limits: tuple[tuple[str, ratelimit.Limit], ...] = setting(
        parse_rate_limits(RATE_LIMITS),
        "Per-principal limits by role, `<role>=<requests per second>/<burst>`; `*` for other roles. "
        "An API key may override its own; an RPC's contract may declare a higher cost.",
        parse=parse_rate_limits,
        shown=RATE_LIMITS,
    )
    rate_limit_enabled: bool = setting(True, "Enforce per-principal rate limits.", parse=parse_bool)
    rate_limit_redis_url: str = setting(
        "",
        "Redis/Valkey URL for rate-limit buckets; empty: DEVMESH_REDIS_URL. Buckets change on every "
        "call and need no persistence: give them an instance without AOF fsync, or every call pays one.",
        parse=parse_optional_redis_url,
    )
    rate_limit_fallback: str = setting(
        "local",
        "When Redis is unreachable: `local` limits in process (per replica), `refuse` fails calls "
        "with UNAVAILABLE.",
        parse=parse_choice("local", "refuse"),
    )
    audit_retention: int = setting(
        100000, "Events kept in the audit stream (approximate; never fewer).", parse=parse_positive_int
    )

    @property
    def tls_enabled(self) -> bool:
        return bool(self.tls_cert_file)

    def problems(self) -> list[str]:
        """Rules across settings; each problem names the variables involved."""
        found = []
        tls = {"DEVMESH_TLS_CERT_FILE": self.tls_cert_file, "DEVMESH_TLS_KEY_FILE": self.tls_key_file,
               "DEVMESH_TLS_CA_FILE": self.tls_ca_file}  # fmt: skip
        if any(tls.values()) and not all(tls.values()):
            missing = ", ".join(name for name, value in tls.items() if not value)
            found.append(f"mTLS needs a certificate, its key and the CA; missing {missing}")
        if not any(tls.values()):
            if not self.insecure:
                found.append(
                    "no certificates: set DEVMESH_TLS_CERT_FILE, DEVMESH_TLS_KEY_FILE and "
                    "DEVMESH_TLS_CA_FILE, or DEVMESH_INSECURE=1 for plaintext on loopback"
                )
            elif not is_loopback_addr(self.grpc_addr):
                found.append(
                    f"DEVMESH_INSECURE=1 serves plaintext, which is allowed only on loopback; "
                    f"DEVMESH_GRPC_ADDR={self.grpc_addr} is not"
                )
        if self.auth == "off" and not is_loopback_addr(self.grpc_addr):
            found.append(
                f"DEVMESH_AUTH=off is allowed only on a loopback address; DEVMESH_GRPC_ADDR={self.grpc_addr} is not"
            )
        if self.auth == "required" and not self.vault_addr:
            found.append(
                "DEVMESH_AUTH=required verifies keys and tokens with Vault: set DEVMESH_VAULT_ADDR "
                "(or DEVMESH_AUTH=off for local plaintext debugging)"
            )
        if self.vault_addr and not (self.vault_role_id and self.vault_secret_id_file):
            found.append("DEVMESH_VAULT_ADDR needs DEVMESH_VAULT_ROLE_ID and DEVMESH_VAULT_SECRET_ID_FILE")
        if self.vault_ca_file and not os.path.isfile(self.vault_ca_file):
            found.append(f"DEVMESH_VAULT_CA_FILE={self.vault_ca_file} is not a file")
        return found
