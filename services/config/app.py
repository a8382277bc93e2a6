"""Builds the config service for the runtime to host."""

from __future__ import annotations

from grpc import aio

from devmesh.config.v1 import config_pb2, config_pb2_grpc
from services.config.domain import ConfigDomain
from services.config.servicer import ConfigServicer
from services.config.settings import ConfigSettings
from services.config.store import ConfigStore
from services.config.watch import WatchHub
from services.runtime import settings as runtime_settings
from services.runtime.server import Runtime, ServiceBinding
from services.runtime.vault import API_KEY_HMAC_KEY, JWT_KEY, TRANSIT_MOUNT

SETTINGS = ConfigSettings
SERVICE_NAME = config_pb2.DESCRIPTOR.services_by_name["ConfigService"].full_name
PROTO_SERVICES = [SERVICE_NAME]

# Least privilege: sign tokens with the JWT key, publish its public keys, hash API keys.
VAULT_POLICY = f"""
path "{TRANSIT_MOUNT}/sign/{JWT_KEY}" {{ capabilities = ["update"] }}
path "{TRANSIT_MOUNT}/keys/{JWT_KEY}" {{ capabilities = ["read"] }}
path "{TRANSIT_MOUNT}/hmac/{API_KEY_HMAC_KEY}" {{ capabilities = ["update"] }}
"""


def build(runtime: Runtime) -> ServiceBinding:
    settings = runtime_settings.load(ConfigSettings, runtime.environ)
    store = ConfigStore(
        runtime.redis,
        runtime.durable,
        log_retention=settings.config_log_retention,
        audit_retention=settings.config_audit_retention,
    )
    hub = WatchHub(
        store,
        queue_size=settings.config_watch_queue_size,
        progress_interval=settings.config_watch_progress_interval,
    )
    servicer = ConfigServicer(ConfigDomain(store, settings), hub)

    def register(server: aio.Server) -> None:
        config_pb2_grpc.add_ConfigServiceServicer_to_server(servicer, server)

    return ServiceBinding(
        name="config",
        proto_services=PROTO_SERVICES,
        register=register,
        dependencies=[runtime.redis_dependency],
        start=hub.start,
        stop=hub.stop,
    )
