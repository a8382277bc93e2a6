"""Envelope encryption per tenant: sealed data opens after the key rotates, rewraps to the new
version, and a retired version opens nothing."""

from __future__ import annotations

import uuid

import grpc

from devmesh.secrets.v1 import secrets_pb2 as pb
from services.runtime.vault import TRANSIT_MOUNT
from services.secrets.envelope import DATA_KEY
from tests.conftest import BootstrappedVault
from tests.helpers import error_info, refused
from tests.integration.secrets.conftest import Secrets


async def test_envelope_encryption_survives_a_key_rotation(
    secrets: Secrets, openbao: BootstrappedVault
) -> None:
    admin = await secrets.key("admin")
    tenant = f"tenants/t{uuid.uuid4().hex[:8]}"
    sealed = await secrets.stub.Encrypt(
        pb.EncryptRequest(tenant=tenant, plaintext=b"card 4242"), metadata=admin
    )
    error = await refused(
        secrets.stub.Decrypt,
        pb.DecryptRequest(tenant="tenants/someone-else", ciphertext=sealed.ciphertext),
        metadata=admin,
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    transit = openbao.client().secrets.transit
    transit.rotate_key(DATA_KEY, mount_point=TRANSIT_MOUNT)
    opened = await secrets.stub.Decrypt(
        pb.DecryptRequest(tenant=tenant, ciphertext=sealed.ciphertext), metadata=admin
    )
    assert opened.plaintext == b"card 4242"
    rewrapped = await secrets.stub.Rewrap(
        pb.RewrapRequest(tenant=tenant, ciphertext=sealed.ciphertext), metadata=admin
    )
    assert rewrapped.key_version == sealed.key_version + 1
    transit.update_key_configuration(
        DATA_KEY, min_decryption_version=rewrapped.key_version, mount_point=TRANSIT_MOUNT
    )
    error = await refused(
        secrets.stub.Decrypt, pb.DecryptRequest(tenant=tenant, ciphertext=sealed.ciphertext), metadata=admin
    )
    assert error_info(error).reason == "KEY_VERSION_RETIRED"
    opened = await secrets.stub.Decrypt(
        pb.DecryptRequest(tenant=tenant, ciphertext=rewrapped.ciphertext), metadata=admin
    )
    assert opened.plaintext == b"card 4242"
