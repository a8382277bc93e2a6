"""Remediation webhooks reach a real local HTTP receiver, signed; a forged signature is detectable."""

from __future__ import annotations

import http.server
import json
import pathlib
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import pytest
from grpc import aio

from devmesh.debugger.v1 import remediation_pb2 as pb
from devmesh.debugger.v1 import remediation_pb2_grpc
from services.debugger import app as debugger_app
from services.runtime import notifications
from tests.conftest import ServerFactory
from tests.helpers import eventually
from tools.stack.valkey import Valkey

SECRET = "whsec-test-only-signing-secret"


@dataclass
class Receiver:
    """A loopback HTTP server that keeps every POST it gets: (headers, body)."""

    url: str
    posts: list[tuple[dict[str, str], bytes]] = field(default_factory=list)


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    posts: list[tuple[dict[str, str], bytes]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            posts.append((dict(self.headers.items()), body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return None

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Receiver(f"http://127.0.0.1:{server.server_address[1]}/hooks", posts)
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture(scope="module")
async def remediations(
    valkey: Valkey,
    start_config_server: ServerFactory,
    receiver: Receiver,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[remediation_pb2_grpc.RemediationServiceStub]:
    secret_file = pathlib.Path(tmp_path_factory.mktemp("webhook")) / "secret"
    secret_file.write_text(SECRET)
    env = {
        "DEVMESH_DEBUGGER_REMEDIATION_WEBHOOK_URL": receiver.url,
        "DEVMESH_DEBUGGER_REMEDIATION_WEBHOOK_SECRET_FILE": str(secret_file),
        "DEVMESH_DEBUGGER_REMEDIATION_EXECUTOR": "off",  # the test calls ExecuteRemediation
    }
    _, addr = await start_config_server(valkey.url, env=env, specs=[debugger_app.SPEC])
    async with aio.insecure_channel(addr) as channel:
        yield remediation_pb2_grpc.RemediationServiceStub(channel)


def _of(receiver: Receiver, name: str) -> list[tuple[dict[str, str], bytes]]:
    return [(h, b) for h, b in list(receiver.posts) if json.loads(b).get("remediation") == name]


async def test_every_change_of_a_remediation_is_posted_signed(
    remediations: remediation_pb2_grpc.RemediationServiceStub, receiver: Receiver
) -> None:
    action = pb.Action(kind=pb.ACTION_KIND_KUBERNETES_RESTART, target="namespaces/shop/deployments/hooked")
    made = await remediations.ProposeRemediation(pb.ProposeRemediationRequest(plan=[action]))
    await remediations.ExecuteRemediation(pb.ExecuteRemediationRequest(name=made.name))

    async def all_four() -> bool:
        return len(_of(receiver, made.name)) >= 4

    await eventually(all_four, "the proposal, the execution, its step and its outcome to be posted")
    posts = _of(receiver, made.name)
    assert sorted(json.loads(b)["type"] for _, b in posts) == [
        "remediation.dry_run",
        "remediation.executing",
        "remediation.proposed",
        "remediation.step",
    ]
    for headers, body in posts:
        assert notifications.verify(SECRET, headers[notifications.SIGNATURE_HEADER], body)
        assert SECRET not in body.decode()


async def test_a_forged_or_tampered_post_is_detectable(
    remediations: remediation_pb2_grpc.RemediationServiceStub, receiver: Receiver
) -> None:
    action = pb.Action(kind=pb.ACTION_KIND_KUBERNETES_RESTART, target="namespaces/shop/deployments/forged")
    made = await remediations.ProposeRemediation(pb.ProposeRemediationRequest(plan=[action]))

    async def posted() -> bool:
        return bool(_of(receiver, made.name))

    await eventually(posted, "the proposal to be posted")
    headers, body = _of(receiver, made.name)[0]
    signature = headers[notifications.SIGNATURE_HEADER]
    assert notifications.verify(SECRET, signature, body)
    assert not notifications.verify(SECRET, signature, body.replace(b"APPROVED", b"REJECTED"))
    timestamp = int(signature.split(",")[0].removeprefix("t="))
    forged = notifications.sign("someone-elses-secret", timestamp, body)
    assert not notifications.verify(SECRET, forged, body)
