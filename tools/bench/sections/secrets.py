"""AccessSecretVersion through the whole chain against a direct hvac KV v2 read.

The chain is API key, rate limit, access policy, audit and Vault; the baseline reads the same
KV v2 entry straight from Vault with hvac, in the same run.
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from tools.bench.load import ROUNDS, Metadata, Tls, in_threads, interleaved, measure, measure_with, ratio
from tools.bench.sections import Section
from tools.bench.seed import mint_admin_key
from tools.stack.openbao import start_openbao
from tools.stack.service_process import VaultLogin, start_service
from tools.stack.valkey import start_valkey

if TYPE_CHECKING:
    from multiprocessing.synchronize import Barrier


def _vault_client_process(
    addr: str,
    path: str,
    _payload: bytes,
    duration: float,
    tls: Tls,
    out: Any,
    in_flight: int,
    metadata: Metadata,
    start: Barrier,
) -> None:
    """KV v2 reads straight from Vault with hvac, from `in_flight` threads (a client each)."""
    import hvac

    from services.runtime.vault import KV_MOUNT

    token = dict(metadata)["x-vault-token"]

    def connect() -> Callable[[], None]:
        kv = hvac.Client(url=addr, token=token, timeout=10).secrets.kv.v2
        return lambda: kv.read_secret_version(path, mount_point=KV_MOUNT, raise_on_deleted_version=True)

    out.put(in_threads(in_flight, duration, start, connect))


def run(duration: float) -> dict[str, Any]:
    """AccessSecretVersion through the whole chain (API key, rate limit, access policy, audit,
    Vault) against reading the same KV v2 entry straight from Vault with hvac, in one run."""
    from devmesh.secrets.v1 import secrets_pb2 as spb
    from devmesh.secrets.v1 import secrets_pb2_grpc
    from services.secrets.vault_store import PATH
    from tools.stack import vault_bootstrap

    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        valkey = start_valkey(state / "valkey")
        buckets = start_valkey(state / "valkey-ratelimit", durable=False)
        bao = start_openbao(state / "openbao")
        service = None
        try:
            role = vault_bootstrap.bootstrap(bao.client(), ["secrets"], state / "vault")["secrets"]
            env = {"DEVMESH_LOG_LEVEL": "info", "DEVMESH_RATE_LIMIT_REDIS_URL": buckets.url}
            login = VaultLogin(bao.addr, role.role_id, role.secret_id_file)
            service = start_service(["secrets"], valkey.url, state, extra_env=env, vault=login)
            key = mint_admin_key(valkey.url, bao.client())
            with_key: Metadata = (("x-api-key", key),)
            with grpc.insecure_channel(service.addr) as channel:
                stub = secrets_pb2_grpc.SecretsServiceStub(channel)
                stub.CreateSecret(
                    spb.CreateSecretRequest(secret_id="bench", secret=spb.Secret()), metadata=with_key
                )
                payload = spb.SecretPayload(data=b"correct horse battery staple")
                stub.AddSecretVersion(
                    spb.AddSecretVersionRequest(parent="secrets/bench", payload=payload), metadata=with_key
                )
            request = spb.AccessSecretVersionRequest(name="secrets/bench/versions/latest").SerializeToString()
            method = "/devmesh.secrets.v1.SecretsService/AccessSecretVersion"
            vault_token: Metadata = (("x-vault-token", bao.token),)
            results = interleaved(
                {
                    "chain": functools.partial(
                        measure, service.addr, method, request, duration / ROUNDS, metadata=with_key
                    ),
                    "direct": functools.partial(
                        measure_with,
                        _vault_client_process,
                        bao.addr,
                        f"{PATH}/bench",
                        duration / ROUNDS,
                        vault_token,
                    ),
                }
            )
            chain, direct = results["chain"], results["direct"]
        finally:
            if service is not None:
                service.process.stop()
            assert bao.process is not None
            bao.process.stop()
            buckets.process.stop()
            valkey.process.stop()
    return {
        "access_secret_version": {**chain, "ratio_to_direct_kv_read": ratio(chain, direct)},
        "direct_hvac_kv_read": direct,
    }


SECTION = Section("secrets", run, order=40)
