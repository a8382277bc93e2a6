"""Who may read a secret: access policies decide before existence, values never reach logs or
the audit trail, and config resolves secret references as its caller."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
from grpc import aio

from devmesh.secrets.v1 import secrets_pb2 as pb
from services.runtime.audit import STREAM as AUDIT_STREAM
from services.runtime.identity import keys
from tests.conftest import BootstrappedVault, ServerFactory
from tests.helpers import refused
from tests.integration.secrets.conftest import MANAGE, READ, Secrets, access, add, version
from tools.stack.valkey import Valkey


async def test_access_policies_decide_before_existence(secrets: Secrets, sid: str) -> None:
    admin = await secrets.key("admin")
    reader, manager, stranger = [await secrets.key("service") for _ in range(3)]
    who = {
        name: f"apikey:{keys.parse(md[0][1]).key_id}"
        for name, md in (("reader", reader), ("manager", manager))
    }
    name = f"db-{sid}"
    await secrets.stub.SetAccessPolicy(
        pb.SetAccessPolicyRequest(
            policy=pb.AccessPolicy(
                name=f"accessPolicies/p-{sid}", prefix=name,
                bindings=[pb.Binding(member=who["reader"], level=READ), pb.Binding(member=who["manager"], level=MANAGE)],
            )
        ),
        metadata=admin,
    )  # fmt: skip
    await secrets.stub.CreateSecret(
        pb.CreateSecretRequest(secret_id=name, secret=pb.Secret()), metadata=admin
    )
    await add(secrets, admin, name, b"s3cret")
    assert (await access(secrets, reader, version(name, "latest"))).payload.data == b"s3cret"

    def denied(error: grpc.aio.AioRpcError) -> bool:
        return error.code() == grpc.StatusCode.PERMISSION_DENIED

    # The stranger learns nothing: an existing and a missing secret are refused alike.
    assert denied(await refused(access, secrets, stranger, version(name, "latest")))
    assert denied(await refused(access, secrets, stranger, version(f"{name}-missing", "latest")))
    assert denied(await refused(access, secrets, reader, version(f"other-{sid}", "latest")))
    # READ is not MANAGE; MANAGE is not ADMIN; the service role may not add versions at all.
    assert denied(await refused(add, secrets, reader, name, b"x"))
    assert denied(await refused(
        secrets.stub.DisableSecretVersion, pb.DisableSecretVersionRequest(name=version(name, 1)), metadata=reader
    ))  # fmt: skip
    error = await refused(
        secrets.stub.DeleteSecret, pb.DeleteSecretRequest(name=f"secrets/{name}"), metadata=manager
    )
    assert denied(error)
    listed = await secrets.stub.ListSecrets(pb.ListSecretsRequest(prefix="db-"), metadata=reader)
    assert [s.name for s in listed.secrets] == [f"secrets/{name}"]
    assert (
        await secrets.stub.ListSecrets(pb.ListSecretsRequest(prefix="db-"), metadata=stranger)
    ).secrets == []


async def test_values_never_reach_logs_or_the_audit_trail(secrets: Secrets, sid: str, capfd: Any) -> None:
    admin = await secrets.key("admin")
    value = f"hunter2-{uuid.uuid4().hex}".encode()
    await secrets.stub.CreateSecret(pb.CreateSecretRequest(secret_id=sid, secret=pb.Secret()), metadata=admin)
    await add(secrets, admin, sid, value)
    assert (await access(secrets, admin, version(sid, "latest"))).payload.data == value
    await refused(access, secrets, await secrets.key("viewer"), version(sid, 1))
    entries = await secrets.server.runtime.redis.xrevrange(AUDIT_STREAM, count=20)
    mine = [
        {k.decode(): v.decode() for k, v in f.items()}
        for _, f in entries
        if f[b"resource"].decode().endswith(sid) or sid in f[b"resource"].decode()
    ]
    actions = [(e["action"], e["result"], e.get("detail.version", "")) for e in mine]
    assert ("secrets.versions.access", "OK", "1") in actions
    assert ("secrets.versions.access", "PERMISSION_DENIED", "") in actions
    assert ("secrets.versions.add", "OK", "1") in actions
    captured = capfd.readouterr()
    assert value.decode() not in captured.out + captured.err
    assert all(value not in v for _, f in entries for v in f.values())


async def test_config_resolves_secret_references_as_the_caller(
    secrets: Secrets, valkey: Valkey, openbao: BootstrappedVault, start_config_server: ServerFactory, sid: str
) -> None:
    from google.protobuf import json_format

    from devmesh.config.v1 import config_pb2 as cpb
    from devmesh.config.v1 import config_pb2_grpc

    _, config_addr = await start_config_server(
        valkey.url, peers=(("secrets", secrets.addr),), **openbao.settings("config")
    )
    admin = await secrets.key("admin")
    allowed, stranger = await secrets.key("service"), await secrets.key("service")
    await secrets.stub.CreateSecret(pb.CreateSecretRequest(secret_id=sid, secret=pb.Secret()), metadata=admin)
    await add(secrets, admin, sid, b'{"user": "app", "password": "pw-123"}')
    member = f"apikey:{keys.parse(allowed[0][1]).key_id}"
    await secrets.stub.SetAccessPolicy(
        pb.SetAccessPolicyRequest(policy=pb.AccessPolicy(name=f"accessPolicies/{sid}", prefix=sid,
                                                          bindings=[pb.Binding(member=member, level=READ)])),
        metadata=admin,
    )  # fmt: skip
    ns = f"n{sid}"
    async with aio.insecure_channel(config_addr) as channel:
        config = config_pb2_grpc.ConfigServiceStub(channel)
        await config.CreateNamespace(
            cpb.CreateNamespaceRequest(namespace_id=ns, namespace=cpb.Namespace()), metadata=admin
        )
        env = cpb.Environment(name=f"namespaces/{ns}/environments/default")
        env.content.update(
            {"db": {"password": {"$secret": f"{sid}#password"}, "dsn": {"$secret": sid}, "host": "h"}}
        )
        await config.UpdateEnvironment(
            cpb.UpdateEnvironmentRequest(environment=env, allow_missing=True), metadata=admin
        )
        name = f"namespaces/{ns}/environments/default"

        async def resolve(md: Any, **kwargs: Any) -> tuple[dict[str, Any], list[tuple[str, str]]]:
            got = await config.ResolveConfig(cpb.ResolveConfigRequest(name=name, **kwargs), metadata=md)
            return json_format.MessageToDict(got.content), [(s.path, s.redacted_reason) for s in got.secrets]

        content, report = await resolve(allowed, resolve_secrets=True)
        assert content["db"]["password"] == "pw-123" and content["db"]["host"] == "h"
        assert content["db"]["dsn"] == '{"user": "app", "password": "pw-123"}'
        assert report == [("/db/dsn", ""), ("/db/password", "")]
        content, report = await resolve(stranger, resolve_secrets=True)
        assert content["db"]["password"] == {"$secret": f"{sid}#password", "redacted": "SECRET_ACCESS_DENIED"}
        assert report == [("/db/dsn", "SECRET_ACCESS_DENIED"), ("/db/password", "SECRET_ACCESS_DENIED")]
        content, report = await resolve(allowed)  # without resolve_secrets, references stay as written
        assert content["db"]["password"] == {"$secret": f"{sid}#password"} and report == []
        # The cached (unresolved) answer was not polluted by the caller-specific one.
        content, _ = await resolve(stranger)
        assert "pw-123" not in str(content)
