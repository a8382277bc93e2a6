"""Builds the secrets service for the runtime to host."""

from __future__ import annotations

from grpc import aio

from devmesh.secrets.v1 import secrets_pb2, secrets_pb2_grpc
from services.runtime import settings as runtime_settings
from services.runtime.health import Dependency
from services.runtime.server import Runtime, ServiceBinding
from services.runtime.settings import SettingsError
from services.runtime.vault import DATA_KEY, KV_MOUNT, TRANSIT_MOUNT
from services.secrets.domain import SecretsDomain
from services.secrets.envelope import Envelope
from services.secrets.events import Events
from services.secrets.policies import Policies
from services.secrets.scheduler import RotationScheduler
from services.secrets.servicer import SecretsServicer
from services.secrets.settings import SecretsSettings
from services.secrets.vault_store import PATH, SecretStore

SETTINGS = SecretsSettings
PROTO_SERVICES = [secrets_pb2.DESCRIPTOR.services_by_name["SecretsService"].full_name]

# Least privilege: the secrets' values and metadata under one KV prefix, and envelope
# encryption with the derived data key.
VAULT_POLICY = f"""
path "{KV_MOUNT}/data/{PATH}/*" {{ capabilities = ["create", "update", "read"] }}
path "{KV_MOUNT}/metadata/{PATH}/*" {{ capabilities = ["create", "update", "read", "delete", "list"] }}
path "{KV_MOUNT}/metadata/{PATH}" {{ capabilities = ["list"] }}
path "{KV_MOUNT}/metadata/{PATH}/" {{ capabilities = ["list"] }}
path "{KV_MOUNT}/delete/{PATH}/*" {{ capabilities = ["update"] }}
path "{KV_MOUNT}/undelete/{PATH}/*" {{ capabilities = ["update"] }}
path "{KV_MOUNT}/destroy/{PATH}/*" {{ capabilities = ["update"] }}
path "{TRANSIT_MOUNT}/encrypt/{DATA_KEY}" {{ capabilities = ["update"] }}
path "{TRANSIT_MOUNT}/decrypt/{DATA_KEY}" {{ capabilities = ["update"] }}
path "{TRANSIT_MOUNT}/rewrap/{DATA_KEY}" {{ capabilities = ["update"] }}
"""


def build(runtime: Runtime) -> ServiceBinding:
    settings = runtime_settings.load(SecretsSettings, runtime.environ)
    vault = runtime.vault
    if vault is None:
        raise SettingsError("the secrets service keeps every value in Vault: set DEVMESH_VAULT_ADDR")
    events = Events(runtime.redis, settings.secrets_events_retention)
    policies = Policies(runtime.redis, runtime.durable)
    domain = SecretsDomain(
        SecretStore(vault), policies, events, runtime.redis, max_payload=settings.secrets_max_payload_bytes
    )
    scheduler = RotationScheduler(
        domain,
        runtime.redis,
        interval=settings.secrets_rotation_check_interval,
        lease=settings.secrets_rotation_lease,
    )
    servicer = SecretsServicer(
        domain,
        policies,
        events,
        Envelope(vault, settings.secrets_max_payload_bytes),
        progress_interval=settings.secrets_watch_progress_interval,
    )

    def register(server: aio.Server) -> None:
        secrets_pb2_grpc.add_SecretsServiceServicer_to_server(servicer, server)

    async def stop() -> None:
        events.closing = True  # event streams end within a second instead of holding the drain
        await scheduler.stop()

    return ServiceBinding(
        name="secrets",
        proto_services=PROTO_SERVICES,
        register=register,
        dependencies=[runtime.redis_dependency, Dependency("vault", vault.probe)],
        start=scheduler.start,
        stop=stop,
    )
