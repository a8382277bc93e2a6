"""The local worker's own identity: a certificate that only admits its connections (its SPIFFE
id, in namespace `workers`, maps to no role) and an API key of role `worker`, which holds what
running a job needs and nothing else. The key lives in a 0600 file the worker reads
(DEVMESH_WORKER_API_KEY_FILE); it is never printed or logged.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from services.runtime.identity import keys
from services.runtime.tls import spiffe_id
from tools.stack.certs import CertPaths, Identity
from tools.stack.channels import grpc_channel

WORKER = Identity("worker", spiffe_id("workers", "local-worker"), ("worker.devmesh.local",))
WORKER_KEY_FILE = "worker-api-key"  # in the state dir, mode 0600


def keep_worker_key(config_addr: str, operator: CertPaths, key_file: Path) -> Path:
    """`key_file`, holding a worker key: the one kept there while it is an active `worker` key,
    else a new one created by the local operator (an admin). A restarted stack reuses it."""
    import grpc

    from devmesh.config.v1 import api_keys_pb2, api_keys_pb2_grpc

    with grpc_channel(config_addr, operator) as channel:
        stub = api_keys_pb2_grpc.ApiKeyServiceStub(channel)
        with contextlib.suppress(FileNotFoundError, keys.MalformedKey, keys.BadChecksum):
            key_id = keys.parse(key_file.read_text().strip()).key_id
            try:
                kept = stub.GetApiKey(api_keys_pb2.GetApiKeyRequest(name=f"apiKeys/{key_id}"), timeout=10)
                if kept.role == "worker" and kept.state == api_keys_pb2.ApiKey.STATE_ACTIVE:
                    return key_file
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.NOT_FOUND:
                    raise
        created = stub.CreateApiKey(
            api_keys_pb2.CreateApiKeyRequest(
                api_key=api_keys_pb2.ApiKey(
                    role="worker", display_name="make run: the local worker", owner="local-worker"
                )
            ),
            timeout=10,
        )
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(created.key)
    return key_file
