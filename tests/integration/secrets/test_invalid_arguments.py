"""Requests the secrets service refuses with INVALID_ARGUMENT, naming the field at fault."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from devmesh.secrets.v1 import secrets_pb2 as pb
from tests.helpers import refused, violated_fields
from tests.integration.secrets.conftest import READ, Secrets

BAD_INPUT = [
    ("CreateSecret", pb.CreateSecretRequest(secret_id="9starts-with-a-digit"), "secret_id"),
    ("CreateSecret", pb.CreateSecretRequest(secret_id="ok", secret=pb.Secret(labels={"Bad Key": "v"})), "secret.labels['Bad Key']"),
    ("CreateSecret", pb.CreateSecretRequest(secret_id="ok", secret=pb.Secret(rotation=pb.RotationPolicy(interval={"seconds": 60}))), "secret.rotation"),
    ("CreateSecret", pb.CreateSecretRequest(secret_id="ok", secret=pb.Secret(rotation=pb.RotationPolicy(
        interval={"seconds": 60}, random=pb.RandomGenerator(length=4)))), "secret.rotation.random.length"),
    ("CreateSecret", pb.CreateSecretRequest(secret_id="ok", secret=pb.Secret(rotation=pb.RotationPolicy(
        interval={"seconds": 60}, random=pb.RandomGenerator(alphabet="aa")))), "secret.rotation.random.alphabet"),
    ("CreateSecret", pb.CreateSecretRequest(secret_id="ok", secret=pb.Secret(rotation=pb.RotationPolicy(
        interval={"seconds": 0}, manual=pb.ManualGenerator()))), "secret.rotation.interval"),
    ("GetSecret", pb.GetSecretRequest(name="secrets/a/b"), "name"),
    ("AddSecretVersion", pb.AddSecretVersionRequest(parent="secrets/ok", payload=pb.SecretPayload()), "payload.data"),
    ("AddSecretVersion", pb.AddSecretVersionRequest(parent="secrets/ok", payload=pb.SecretPayload(data=b"x" * 70000)), "payload.data"),
    ("AccessSecretVersion", pb.AccessSecretVersionRequest(name="secrets/ok/versions/0"), "name"),
    ("AccessSecretVersion", pb.AccessSecretVersionRequest(name="secrets/ok/versions/newest"), "name"),
    ("DisableSecretVersion", pb.DisableSecretVersionRequest(name="secrets/ok/versions/latest"), "name"),
    ("ListSecrets", pb.ListSecretsRequest(page_size=-1), "page_size"),
    ("ListSecrets", pb.ListSecretsRequest(page_token="forged"), "page_token"),
    ("UpdateSecret", pb.UpdateSecretRequest(secret=pb.Secret(name="secrets/ok"), update_mask={"paths": ["name"]}), "update_mask"),
    ("Encrypt", pb.EncryptRequest(tenant="tenant-without-prefix", plaintext=b"x"), "tenant"),
    ("Encrypt", pb.EncryptRequest(tenant="tenants/t"), "plaintext"),
    ("Decrypt", pb.DecryptRequest(tenant="tenants/t", ciphertext="not-a-ciphertext"), "ciphertext"),
    ("SetAccessPolicy", pb.SetAccessPolicyRequest(policy=pb.AccessPolicy(name="accessPolicies/p", bindings=[
        pb.Binding(member="role:emperor", level=READ)])), "policy.bindings[0].member"),
    ("SetAccessPolicy", pb.SetAccessPolicyRequest(policy=pb.AccessPolicy(name="accessPolicies/p", bindings=[
        pb.Binding(member="*")])), "policy.bindings[0].level"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "request_", "field"), BAD_INPUT, ids=[f"{m}:{f}" for m, _, f in BAD_INPUT]
)
async def test_bad_input_is_invalid_argument_naming_the_field(
    secrets: Secrets, method: str, request_: Any, field: str
) -> None:
    admin = await secrets.key("admin")
    error = await refused(getattr(secrets.stub, method), request_, metadata=admin)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert field in violated_fields(error)
