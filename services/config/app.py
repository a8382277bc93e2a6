"""The config service as the runtime hosts it: its spec, and how to build it."""

from __future__ import annotations

from typing import Any

from grpc import aio

from devmesh.config.v1 import (
    api_keys_pb2,
    api_keys_pb2_grpc,
    audit_pb2,
    audit_pb2_grpc,
    config_pb2,
    config_pb2_grpc,
    tokens_pb2,
    tokens_pb2_grpc,
)
from services.config.api_keys import DAY_US, ApiKeys
from services.config.api_keys_servicer import ApiKeyServicer
from services.config.audit_servicer import AuditServicer
from services.config.domain import ConfigDomain
from services.config.secrets_client import SecretResolver
from services.config.servicer import ConfigServicer
from services.config.settings import ConfigSettings
from services.config.store import ConfigStore
from services.config.tokens import TokenIssuer
from services.config.tokens_servicer import TokenServicer
from services.config.watch import WatchHub
from services.runtime.identity import roles
from services.runtime.server import Runtime, ServiceBinding
from services.runtime.spec import ServiceSpec
from services.runtime.vault import JWT_KEY, TRANSIT_MOUNT

# Least privilege, beyond what every service may (vault.RUNTIME_POLICY): sign tokens.
VAULT_POLICY = f"""
path "{TRANSIT_MOUNT}/sign/{JWT_KEY}" {{ capabilities = ["update"] }}
"""

_READS = (
    "config.namespaces.get",
    "config.namespaces.list",
    "config.environments.get",
    "config.environments.list",
    "config.environments.resolve",
    "config.environments.watch",
    "config.revisions.*",
)


def build(runtime: Runtime, settings: ConfigSettings) -> ServiceBinding:
    store = ConfigStore(
        runtime.redis, runtime.redis_mux, runtime.durable, log_retention=settings.config_log_retention
    )
    domain = ConfigDomain(store, settings)

    async def resolved_document(ns: str, env: str) -> object:
        return (await domain.resolve(ns, env)).content

    hub = WatchHub(
        store,
        queue_size=settings.config_watch_queue_size,
        progress_interval=settings.config_watch_progress_interval,
        resolve=resolved_document,
    )
    secrets = runtime.peer_channel("secrets")
    servicer = ConfigServicer(domain, hub, SecretResolver(secrets) if secrets is not None else None)

    authenticator = runtime.authenticator

    def register(server: aio.Server) -> None:
        config_pb2_grpc.add_ConfigServiceServicer_to_server(servicer, server)
        audit_pb2_grpc.add_AuditServiceServicer_to_server(AuditServicer(runtime.redis), server)
        # Keys and tokens need the authenticator's pepper and Vault: without them (DEVMESH_AUTH=off)
        # these two services are not served and their RPCs answer UNIMPLEMENTED.
        if authenticator is not None and runtime.vault is not None:
            api_keys = ApiKeys(
                runtime.redis,
                runtime.durable,
                lambda: authenticator.pepper,
                retention_us=int(settings.config_api_key_retention_days * DAY_US),
            )
            api_keys_pb2_grpc.add_ApiKeyServiceServicer_to_server(ApiKeyServicer(api_keys), server)
            issuer = TokenIssuer(runtime.vault, runtime.settings.auth_audience)
            tokens_pb2_grpc.add_TokenServiceServicer_to_server(TokenServicer(issuer), server)

    return ServiceBinding(
        register=register, dependencies=[runtime.redis_dependency], start=hub.start, stop=hub.stop
    )


def _name(file: Any, service: str) -> str:
    return str(file.DESCRIPTOR.services_by_name[service].full_name)


SPEC = ServiceSpec(
    name="config",
    summary="versioned, layered configuration with schemas, watch streams and rollback; API keys, "
    "tokens and the audit trail",
    settings=ConfigSettings,
    build=build,
    servicers={
        _name(config_pb2, "ConfigService"): ConfigServicer,
        _name(api_keys_pb2, "ApiKeyService"): ApiKeyServicer,
        _name(tokens_pb2, "TokenService"): TokenServicer,
        _name(audit_pb2, "AuditService"): AuditServicer,
    },
    grants={
        roles.OPERATOR: (
            "config.namespaces.*",
            "config.environments.*",
            "config.revisions.*",
            "config.audit.list",
            "config.tokens.exchange",
        ),
        roles.VIEWER: (*_READS, "config.tokens.exchange"),
        roles.SERVICE: (*_READS, "config.tokens.exchange"),
    },
    # Who holds credentials is decided by admin alone.
    admin_only=("config.apikeys.*",),
    read_verbs=frozenset({"get", "list", "resolve", "watch", "diff"}),
    vault_policy=VAULT_POLICY,
    # ResolveConfig(resolve_secrets) reads secret references through the secrets service.
    peers=("secrets",),
)
