"""Builds the config service for the runtime to host."""

from __future__ import annotations

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
from services.config.secret_refs import SecretResolver
from services.config.servicer import ConfigServicer
from services.config.settings import ConfigSettings
from services.config.store import ConfigStore
from services.config.tokens import TokenIssuer
from services.config.tokens_servicer import TokenServicer
from services.config.watch import WatchHub
from services.runtime import settings as runtime_settings
from services.runtime.server import Runtime, ServiceBinding
from services.runtime.tls import CertificateFiles
from services.runtime.vault import JWT_KEY, TRANSIT_MOUNT

SETTINGS = ConfigSettings
SERVICE_NAME = config_pb2.DESCRIPTOR.services_by_name["ConfigService"].full_name
API_KEY_SERVICE = api_keys_pb2.DESCRIPTOR.services_by_name["ApiKeyService"].full_name
TOKEN_SERVICE = tokens_pb2.DESCRIPTOR.services_by_name["TokenService"].full_name
AUDIT_SERVICE = audit_pb2.DESCRIPTOR.services_by_name["AuditService"].full_name
PROTO_SERVICES = [SERVICE_NAME, API_KEY_SERVICE, TOKEN_SERVICE, AUDIT_SERVICE]

# Least privilege, beyond what every service may (vault.RUNTIME_POLICY): sign tokens.
VAULT_POLICY = f"""
path "{TRANSIT_MOUNT}/sign/{JWT_KEY}" {{ capabilities = ["update"] }}
"""


def build(runtime: Runtime) -> ServiceBinding:
    settings = runtime_settings.load(ConfigSettings, runtime.environ)
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
    resolver = None
    if settings.config_secrets_addr:
        rt = runtime.settings
        tls = CertificateFiles(rt.tls_cert_file, rt.tls_key_file, rt.tls_ca_file) if rt.tls_enabled else None
        resolver = SecretResolver(settings.config_secrets_addr, tls)
    servicer = ConfigServicer(domain, hub, resolver)

    async def stop() -> None:
        await hub.stop()
        if resolver is not None:
            await resolver.close()

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
        name="config",
        proto_services=PROTO_SERVICES,
        register=register,
        dependencies=[runtime.redis_dependency],
        start=hub.start,
        stop=stop,
    )
