"""One etag style and one stale-etag error for every service: an etag changes with everything a
conditional update depends on, and a stale one is ABORTED quoting both etags."""

from __future__ import annotations

import re
import uuid

import grpc
from google.protobuf import field_mask_pb2

from devmesh.config.v1 import api_keys_pb2, api_keys_pb2_grpc, config_pb2, config_pb2_grpc
from devmesh.secrets.v1 import secrets_pb2, secrets_pb2_grpc
from tests.helpers import error_info, refused
from tests.integration.conftest import Servers

ETAG = re.compile(r'^"r\d+(-[0-9a-z]+)*"$')


def secrets_stub(servers: Servers) -> secrets_pb2_grpc.SecretsServiceStub:
    return secrets_pb2_grpc.SecretsServiceStub(servers.secrets_channel)


async def test_a_secret_s_etag_changes_when_a_version_is_added(servers: Servers) -> None:
    stub, sid = secrets_stub(servers), f"e{uuid.uuid4().hex[:8]}"
    created = await stub.CreateSecret(
        secrets_pb2.CreateSecretRequest(secret_id=sid, secret=secrets_pb2.Secret()), metadata=servers.admin
    )
    await stub.AddSecretVersion(
        secrets_pb2.AddSecretVersionRequest(
            parent=created.name, payload=secrets_pb2.SecretPayload(data=b"v1")
        ),
        metadata=servers.admin,
    )
    after = await stub.GetSecret(secrets_pb2.GetSecretRequest(name=created.name), metadata=servers.admin)
    assert after.etag != created.etag
    stale = secrets_pb2.UpdateSecretRequest(
        secret=secrets_pb2.Secret(name=created.name, labels={"team": "a"}, etag=created.etag),
        update_mask=field_mask_pb2.FieldMask(paths=["labels"]),
    )
    error = await refused(stub.UpdateSecret, stale, metadata=servers.admin)
    assert error.code() == grpc.StatusCode.ABORTED
    info = error_info(error)
    assert info.reason == "ETAG_MISMATCH"
    assert info.metadata["current_etag"] == after.etag
    assert info.metadata["given_etag"] == created.etag
    unchanged = await stub.GetSecret(secrets_pb2.GetSecretRequest(name=created.name), metadata=servers.admin)
    assert dict(unchanged.labels) == {}


async def test_every_service_s_etags_have_one_style(servers: Servers) -> None:
    config = config_pb2_grpc.ConfigServiceStub(servers.config_channel)
    ns = f"e{uuid.uuid4().hex[:8]}"
    namespace = await config.CreateNamespace(
        config_pb2.CreateNamespaceRequest(namespace_id=ns, namespace=config_pb2.Namespace()),
        metadata=servers.admin,
    )
    key = await api_keys_pb2_grpc.ApiKeyServiceStub(servers.config_channel).CreateApiKey(
        api_keys_pb2.CreateApiKeyRequest(api_key=api_keys_pb2.ApiKey(role="viewer")), metadata=servers.admin
    )
    secret = await secrets_stub(servers).CreateSecret(
        secrets_pb2.CreateSecretRequest(secret_id=ns, secret=secrets_pb2.Secret()), metadata=servers.admin
    )
    policy = await secrets_stub(servers).SetAccessPolicy(
        secrets_pb2.SetAccessPolicyRequest(
            policy=secrets_pb2.AccessPolicy(name=f"accessPolicies/{ns}", prefix=ns)
        ),
        metadata=servers.admin,
    )
    for etag in (namespace.etag, key.api_key.etag, secret.etag, policy.etag):
        assert ETAG.fullmatch(etag), etag


async def test_a_stale_environment_etag_says_which_etag_was_sent_and_which_is_current(
    servers: Servers,
) -> None:
    config = config_pb2_grpc.ConfigServiceStub(servers.config_channel)
    ns = f"e{uuid.uuid4().hex[:8]}"
    await config.CreateNamespace(
        config_pb2.CreateNamespaceRequest(namespace_id=ns, namespace=config_pb2.Namespace()),
        metadata=servers.admin,
    )
    name = f"namespaces/{ns}/environments/default"

    async def write(etag: str) -> config_pb2.Environment:
        request = config_pb2.UpdateEnvironmentRequest(
            environment=config_pb2.Environment(name=name, etag=etag), allow_missing=True
        )
        return await config.UpdateEnvironment(request, metadata=servers.admin)

    first = await write("")
    second = await write(first.etag)
    error = await refused(write, first.etag)
    assert error.code() == grpc.StatusCode.ABORTED
    assert first.etag in (error.details() or "") and second.etag in (error.details() or "")
    assert error_info(error).metadata["current_etag"] == second.etag
    assert error_info(error).metadata["given_etag"] == first.etag


async def test_an_access_policy_s_stale_etag_is_aborted_with_the_current_one(servers: Servers) -> None:
    stub, pid = secrets_stub(servers), f"e{uuid.uuid4().hex[:8]}"
    policy = secrets_pb2.AccessPolicy(name=f"accessPolicies/{pid}", prefix=pid)
    first = await stub.SetAccessPolicy(
        secrets_pb2.SetAccessPolicyRequest(policy=policy), metadata=servers.admin
    )
    second = await stub.SetAccessPolicy(
        secrets_pb2.SetAccessPolicyRequest(
            policy=secrets_pb2.AccessPolicy(name=policy.name, etag=first.etag)
        ),
        metadata=servers.admin,
    )
    stale = secrets_pb2.AccessPolicy(name=policy.name, etag=first.etag)
    error = await refused(
        stub.SetAccessPolicy, secrets_pb2.SetAccessPolicyRequest(policy=stale), metadata=servers.admin
    )
    assert error.code() == grpc.StatusCode.ABORTED
    assert error_info(error).metadata["current_etag"] == second.etag
