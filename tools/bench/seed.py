"""What the sections put into a fresh stack before they measure: the `bench` namespace that
the ResolveConfig sections read, and an admin API key for the sections that authenticate."""

from __future__ import annotations

import asyncio
from typing import Any

from tools.stack.certs import CertPaths
from tools.stack.channels import grpc_channel


def seed_bench_namespace(addr: str, tls: CertPaths | None = None) -> tuple[bytes, bytes]:
    """A namespace with a ~1 KiB base and an overlay; the serialized Resolve/Get requests."""
    from devmesh.config.v1 import config_pb2 as pb
    from devmesh.config.v1 import config_pb2_grpc

    with grpc_channel(addr, tls) as channel:
        stub = config_pb2_grpc.ConfigServiceStub(channel)
        stub.CreateNamespace(pb.CreateNamespaceRequest(namespace_id="bench", namespace=pb.Namespace()))
        base: dict[str, Any] = {
            f"service{i}": {"host": f"svc{i}.internal", "port": 8000 + i, "tags": ["a", "b"]}
            for i in range(12)
        }
        overlay: dict[str, Any] = {"service3": {"port": 9003}, "debug": False}
        for env, content in (("default", base), ("prod", overlay)):
            message = pb.Environment(name=f"namespaces/bench/environments/{env}")
            message.content.update(content)
            stub.UpdateEnvironment(pb.UpdateEnvironmentRequest(environment=message, allow_missing=True))
    name = "namespaces/bench/environments/prod"
    return (
        pb.ResolveConfigRequest(name=name).SerializeToString(),
        pb.GetEnvironmentRequest(name=name).SerializeToString(),
    )


def mint_admin_key(redis_url: str, vault: Any) -> str:
    """An admin key whose own limit the benchmark cannot reach, minted as `make run` would,
    with the pepper the services read from `vault` (an hvac client)."""
    from services.runtime.vault import API_KEY_PEPPER_PATH, KV_MOUNT

    secret = vault.secrets.kv.v2.read_secret_version(
        API_KEY_PEPPER_PATH, mount_point=KV_MOUNT, raise_on_deleted_version=True
    )
    return asyncio.run(_mint_key(redis_url, bytes.fromhex(secret["data"]["data"]["pepper"])))


async def _mint_key(redis_url: str, pepper: bytes) -> str:
    from services.config.api_keys import ApiKeys, NewKey
    from services.runtime import redis_client
    from services.runtime.identity.principal import Principal

    redis = redis_client.connect(redis_url, 2.0)
    try:
        api_keys = ApiKeys(redis, redis_client.DurableWriter(redis, True, 2.0), lambda: pepper)
        new = NewKey("bench", "bench", "admin", (), 0, rate_per_second=1_000_000, rate_burst=10_000_000)
        _, key = await api_keys.create(Principal("bench", role="admin"), new)
        return key
    finally:
        await redis.aclose()
