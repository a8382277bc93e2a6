"""Config rollbacks through the config service's stubs (RollbackEnvironment), with verify and undo,
as the caller who executes them.

Execute reads the environment (its revision and etag), then rolls it back with that etag: the
write is conditional, so a change that lands in between is never overwritten (the config
service answers ABORTED and the step fails). The config service takes no idempotency key; the
remediation's key for the step goes into the revision's reason, where a resuming replica finds
it: `prepare` records the environment's revision before the call, and after a replica died
inside it `recover` looks for a newer revision with that reason (the rollback landed) or
finds none (execute again). Verify reads the environment
back and, when the action names an `expect`ation (`path.to.key=JSON value`), checks the
resolved config holds it (what the consumer needs to be healthy). Undo rolls forward to the
revision that was replaced.
"""

from __future__ import annotations

import json

import grpc
from google.protobuf import json_format

from devmesh.config.v1 import config_pb2, config_pb2_grpc
from services.debugger.remediation import Action, ActionKind
from services.debugger.remediation_actions import Applied
from services.debugger.remediation_plan import ENVIRONMENT, EXPECT, parse_expectation
from services.runtime import request_context
from services.runtime.errors import FailedPrecondition
from services.runtime.peers import PeerChannel

CALL_TIMEOUT_S = 10.0


def _lookup(document: object, path: list[str]) -> object:
    for key in path:
        if not isinstance(document, dict) or key not in document:
            return _MISSING
        document = document[key]
    return document


_MISSING = object()


class ConfigRollback:
    """Executes CONFIG_ROLLBACK on the config service."""

    kinds = frozenset({ActionKind.CONFIG_ROLLBACK})

    def __init__(self, peer: PeerChannel) -> None:
        self._peer = peer

    def _stub(self) -> config_pb2_grpc.ConfigServiceStub:
        return config_pb2_grpc.ConfigServiceStub(self._peer.channel())

    async def _call(self, method: str, request: object) -> object:
        try:
            return await getattr(self._stub(), method)(
                request, metadata=request_context.forwardable.get(), timeout=CALL_TIMEOUT_S
            )
        except grpc.aio.AioRpcError as error:
            raise FailedPrecondition(
                f"config {method} refused: {error.code().name}: {(error.details() or '')[:300]}",
                reason="PEER_REFUSED",
                metadata={"peer": "config", "code": error.code().name},
            ) from None

    async def prepare(self, action: Action) -> dict[str, str]:
        now = await self._call("GetEnvironment", config_pb2.GetEnvironmentRequest(name=action.target))
        assert isinstance(now, config_pb2.Environment)
        return {"revision": str(now.revision)}

    async def recover(self, action: Action, prepared: dict[str, str], idempotency_key: str) -> Applied | None:
        namespace, environment = ENVIRONMENT.parse(action.target, "target")
        before = int(prepared["revision"])
        token = ""
        while True:  # newest first: stop at the revision the rollback started from
            page = await self._call(
                "ListRevisions",
                config_pb2.ListRevisionsRequest(
                    parent=f"namespaces/{namespace}", environment=environment, page_size=100, page_token=token
                ),
            )
            assert isinstance(page, config_pb2.ListRevisionsResponse)
            for revision in page.revisions:
                if revision.revision <= before:
                    return None
                if revision.reason == f"remediation {idempotency_key}":
                    return Applied(
                        undo={"replaced_revision": str(before), "revision": str(revision.revision)},
                        detail=f"{action.target} had been rolled back (revision {revision.revision})",
                    )
            token = page.next_page_token
            if not token:
                return None

    async def execute(self, action: Action, idempotency_key: str) -> Applied:
        target_revision = int(action.parameters["revision"])
        before = await self._call("GetEnvironment", config_pb2.GetEnvironmentRequest(name=action.target))
        assert isinstance(before, config_pb2.Environment)
        request = config_pb2.RollbackEnvironmentRequest(
            name=action.target,
            revision=target_revision,
            etag=before.etag,
            reason=f"remediation {idempotency_key}",
        )
        after = await self._call("RollbackEnvironment", request)
        assert isinstance(after, config_pb2.Environment)
        return Applied(
            undo={"replaced_revision": str(before.revision), "revision": str(after.revision)},
            detail=f"rolled {action.target} back to revision {target_revision}: now revision {after.revision}",
        )

    async def verify(self, action: Action, applied: Applied) -> str | None:
        now = await self._call("GetEnvironment", config_pb2.GetEnvironmentRequest(name=action.target))
        assert isinstance(now, config_pb2.Environment)
        if str(now.revision) != applied.undo["revision"]:
            return f"{action.target} changed again after the rollback (revision {now.revision})"
        if EXPECT not in action.parameters:
            return None
        path, wanted = parse_expectation(action.parameters[EXPECT], "parameters['expect']")
        resolved = await self._call("ResolveConfig", config_pb2.ResolveConfigRequest(name=action.target))
        assert isinstance(resolved, config_pb2.ResolvedConfig)
        found = _lookup(json_format.MessageToDict(resolved.content), path)
        if found != wanted:
            shown = "nothing" if found is _MISSING else json.dumps(found)[:100]
            return f"{action.target} resolves {'.'.join(path)} to {shown}, not {json.dumps(wanted)[:100]}"
        return None

    async def undo(self, action: Action, applied: Applied, idempotency_key: str) -> None:
        request = config_pb2.RollbackEnvironmentRequest(
            name=action.target,
            revision=int(applied.undo["replaced_revision"]),
            reason=f"undo of remediation {idempotency_key}",
        )
        await self._call("RollbackEnvironment", request)
