"""No secret planted in a log appears in any response, stored key or log line."""

from __future__ import annotations

import pytest

from devmesh.debugger.v1 import debugger_pb2 as pb
from devmesh.debugger.v1 import debugger_pb2_grpc
from services.runtime import redis_client
from tests.unit.debugger.test_secret_masks import PLANTED
from tools.stack.valkey import Valkey

PEM_BODY = "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onLRnrq0"
SECRETS = [
    *PLANTED.values(),
    "hunter2hunter2",
    "Sup3rS3cret",
    "Zx81kQ2vLm9PqR7sT3uW5yA1bC4dE6fG",
    PEM_BODY,
]


def planted_log() -> str:
    lines = [
        "$ ./deploy.sh",
        f"export AWS_ACCESS_KEY_ID={PLANTED['aws']}",
        f"using token {PLANTED['github']} and {PLANTED['gitlab']}",
        f"curl -H 'Authorization: Bearer {PLANTED['jwt']}' https://api.example.com",
        f"slack {PLANTED['slack']} devmesh {PLANTED['devmesh']}",
        "db password=hunter2hunter2",
        "git clone https://ci:Sup3rS3cret@git.example.com/shop.git",
        "SIGNING_KEY=Zx81kQ2vLm9PqR7sT3uW5yA1bC4dE6fG",
        "-----BEGIN RSA PRIVATE KEY-----",
        PEM_BODY,
        "-----END RSA PRIVATE KEY-----",
        f"Error: authentication failed for {PLANTED['github']}: 401 Unauthorized",
        'The command "./deploy.sh" exited with 1.',
    ]
    return "\n".join(lines) + "\n"


async def _everything_stored(valkey: Valkey) -> str:
    client = redis_client.connect(valkey.url, 2.0)
    found = []
    try:
        async for key in client.scan_iter(match="devmesh:debugger:*", count=1000):
            kind = (await client.type(key)).decode()
            if kind == "string":
                found.append(await client.get(key))
            elif kind == "hash":
                found.extend((await client.hgetall(key)).values())
            elif kind == "zset":
                found.extend(await client.zrange(key, 0, -1))
    finally:
        await client.aclose()
    return b"\n".join(found).decode(errors="replace")


async def test_planted_secrets_reach_no_response_no_stored_key_and_no_log_line(
    debugger: debugger_pb2_grpc.DebuggerServiceStub, valkey: Valkey, capfd: pytest.CaptureFixture[str]
) -> None:
    log = planted_log()
    whole = await debugger.AnalyzeLog(pb.AnalyzeLogRequest(text=log, template_set="templateSets/secrets"))

    async def chunks():  # type: ignore[no-untyped-def]
        data = log.encode()
        for start in range(0, len(data), 13):
            yield pb.StreamAnalyzeLogRequest(chunk=data[start : start + 13])

    streamed = await debugger.StreamAnalyzeLog(chunks())
    read = await debugger.GetDiagnosis(pb.GetDiagnosisRequest(name=whole.name))
    templates = await debugger.ListTemplates(
        pb.ListTemplatesRequest(parent="templateSets/secrets", page_size=1000)
    )
    assert whole.category == pb.CATEGORY_PERMISSION
    assert "[SECRET:" in whole.root_causes[0].excerpt + "".join(t.example for t in templates.templates)
    answers = "\n".join(str(m) for m in (whole, streamed, read, templates))
    stored = await _everything_stored(valkey)
    logged = "".join(capfd.readouterr())
    for secret in SECRETS:
        assert secret not in answers
        assert secret not in stored
        assert secret not in logged
