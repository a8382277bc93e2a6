"""Artifacts through the real edge: the stack's worker stores an artifact step's files, and
they come back byte for byte over REST (NDJSON, base64 chunks) and over gRPC."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import random
import tarfile
import time
import uuid
from typing import Any

import grpc

from devmesh.pipeline.v1 import runs_pb2, runs_pb2_grpc
from tests.e2e.conftest import Rest

# Bytes the step writes and the test knows: seeded pseudo-random, so they do not compress and
# come back in several chunks.
SEED, SIZE = 18, 1_500_000


def _finished(rest: Rest, name: str) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        run = rest("GET", f"/v1/{name}").json()
        if run["state"] not in ("RUN_STATE_QUEUED", "RUN_STATE_RUNNING"):
            return dict(run)
        time.sleep(0.1)  # between two polls of the run's state
    raise AssertionError(f"run {name} did not finish")


def test_an_artifact_comes_back_byte_identical_over_rest_and_grpc_through_the_edge(
    rest: Rest, edge_channel: grpc.Channel
) -> None:
    project = f"e2e-{uuid.uuid4().hex[:10]}"
    assert rest("POST", "/v1/projects", params={"projectId": project}, json={}).status_code == 200
    make = f"import random, sys; sys.stdout.buffer.write(random.Random({SEED}).randbytes({SIZE}))"
    steps = [
        {"run": {"command": f"python3 -c '{make}' > data.bin"}},
        {"artifact": {"name": "data", "paths": ["data.bin"]}},
    ]
    created = rest("POST", f"/v1/projects/{project}/pipelines", params={"pipelineId": "ci"},
                   json={"definition": {"jobs": [{"id": "build", "steps": steps}]}})  # fmt: skip
    assert created.status_code == 200, created.text
    started = rest("POST", f"/v1/projects/{project}/pipelines/ci/runs", json={})
    assert started.status_code == 200, started.text
    run = _finished(rest, started.json()["name"])
    assert run["state"] == "RUN_STATE_SUCCEEDED", run
    listed = rest("GET", f"/v1/{run['name']}/artifacts").json()
    (artifact,) = listed["artifacts"]
    assert artifact["name"] == f"{run['name']}/artifacts/data"

    with rest.session.get(f"{rest.base}/v1/{artifact['name']}", stream=True, timeout=60) as response:
        assert response.status_code == 200
        chunks = [json.loads(line) for line in response.iter_lines() if line]
    over_rest = b"".join(base64.b64decode(c.get("data", "")) for c in chunks)
    assert len(chunks) > 1
    assert chunks[0]["sha256"] == hashlib.sha256(over_rest).hexdigest() == artifact["sha256"]
    assert int(chunks[0]["sizeBytes"]) == len(over_rest)

    stub = runs_pb2_grpc.RunServiceStub(edge_channel)
    over_grpc = b"".join(c.data for c in stub.GetArtifact(runs_pb2.GetArtifactRequest(name=artifact["name"])))
    assert over_grpc == over_rest
    with tarfile.open(fileobj=io.BytesIO(over_rest)) as archive:
        expected = random.Random(SEED).randbytes(SIZE)
        assert archive.extractfile("data.bin").read() == expected  # type: ignore[union-attr]

    missing = rest("GET", f"/v1/{run['name']}/artifacts/nothing")
    assert missing.status_code == 404
