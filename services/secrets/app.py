"""The secrets service as the runtime hosts it: its spec, and how to build it."""

from __future__ import annotations

from grpc import aio

from devmesh.secrets.v1 import secrets_pb2, secrets_pb2_grpc
from services.runtime.health import Dependency
from services.runtime.identity import roles
from services.runtime.server import Runtime, ServiceBinding
from services.runtime.settings import SettingsError
from services.runtime.spec import ServiceSpec
from services.runtime.vault import KV_MOUNT, TRANSIT_MOUNT
from services.secrets.domain import SecretsDomain
from services.secrets.envelope import DATA_KEY, Envelope
from services.secrets.events import Events
from services.secrets.policies import Policies
from services.secrets.scheduler import RotationScheduler
from services.secrets.servicer import SecretsServicer
from services.secrets.settings import SecretsSettings
from services.secrets.vault_store import PATH, SecretStore

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


def build(runtime: Runtime, settings: SecretsSettings) -> ServiceBinding:
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
        delegates=settings.secrets_delegates,
    )

    def register(server: aio.Server) -> None:
        secrets_pb2_grpc.add_SecretsServiceServicer_to_server(servicer, server)

    async def stop() -> None:
        events.closing = True  # event streams end within a second instead of holding the drain
        await scheduler.stop()

    return ServiceBinding(
        register=register,
        dependencies=[runtime.redis_dependency, Dependency("vault", vault.probe)],
        start=scheduler.start,
        stop=stop,
    )


SPEC = ServiceSpec(
    name="secrets",
    summary="versioned secrets in Vault, access policies, rotation, envelope encryption",
    settings=SecretsSettings,
    build=build,
    servicers={secrets_pb2.DESCRIPTOR.services_by_name["SecretsService"].full_name: SecretsServicer},
    grants={
        roles.OPERATOR: (
            "secrets.secrets.*",
            "secrets.versions.*",
            "secrets.events.watch",
            "secrets.crypto.*",
            "secrets.policies.get",
            "secrets.policies.list",
        ),
        # Metadata, never a value.
        roles.VIEWER: (
            "secrets.secrets.get",
            "secrets.secrets.list",
            "secrets.versions.list",
            "secrets.events.watch",
        ),
        # Values its access policies allow, and envelope encryption.
        roles.SERVICE: (
            "secrets.secrets.get",
            "secrets.secrets.list",
            "secrets.versions.list",
            "secrets.versions.access",
            "secrets.events.watch",
            "secrets.crypto.encrypt",
            "secrets.crypto.decrypt",
        ),
    },
    # Who may read which secret is decided by admin alone.
    admin_only=("secrets.policies.set", "secrets.policies.delete"),
    # Reading a value (versions.access) and decrypting are audited like changes.
    read_verbs=frozenset({"get", "list", "watch"}),
    vault_policy=VAULT_POLICY,
    transit_keys={DATA_KEY: {"key_type": "aes256-gcm96", "derived": True}},
)
