"""Executing remediations against the real config service: a rollback that verifies succeeds, one
that does not is rolled forward again and FAILS with the reason; Kubernetes actions are
validated dry runs that never claim success; one replica executes at a time."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
from google.protobuf import json_format
from grpc import aio

from devmesh.config.v1 import config_pb2 as cpb
from devmesh.config.v1 import config_pb2_grpc
from devmesh.debugger.v1 import remediation_pb2 as pb
from devmesh.debugger.v1 import remediation_pb2_grpc
from services.debugger import app as debugger_app
from services.debugger.remediation_store import RemediationStore
from services.runtime import audit
from services.runtime.server import Server
from tests.conftest import ServerFactory
from tests.helpers import error_info, refused
from tests.integration.config.conftest import create, env_name, put
from tools.stack.valkey import Valkey

# Config rollbacks are automatic here: with auth off every caller is the same principal, who
# may not approve their own proposals (approvals are tested with auth on elsewhere). These
# tests execute by calling ExecuteRemediation: the background executor is off
# (test_remediation_executor.py tests it).
AUTOMATIC = {"DEVMESH_DEBUGGER_REMEDIATION_THRESHOLD": "0.9", "DEVMESH_DEBUGGER_REMEDIATION_EXECUTOR": "off"}


@dataclass(frozen=True)
class Stack:
    """A config server, and a debugger that has it as its peer."""

    config: config_pb2_grpc.ConfigServiceStub
    remediations: remediation_pb2_grpc.RemediationServiceStub
    debugger: Server


@pytest.fixture(scope="module")
async def stack(valkey: Valkey, start_config_server: ServerFactory) -> AsyncIterator[Stack]:
    _, config_addr = await start_config_server(valkey.url)
    debugger, debugger_addr = await start_config_server(
        valkey.url, env=AUTOMATIC, specs=[debugger_app.SPEC], peers=(("config", config_addr),)
    )
    async with aio.insecure_channel(config_addr) as c, aio.insecure_channel(debugger_addr) as d:
        yield Stack(
            config_pb2_grpc.ConfigServiceStub(c), remediation_pb2_grpc.RemediationServiceStub(d), debugger
        )


async def _two_revisions(stack: Stack) -> tuple[str, int]:
    """An environment whose last change broke it, and the revision before that change."""
    ns = f"n{uuid.uuid4().hex[:10]}"
    await create(stack.config, ns)
    good = await put(stack.config, ns, "staging", {"db": {"host": "good"}})
    await put(stack.config, ns, "staging", {"db": {"host": "broken"}})
    return env_name(ns, "staging"), good.revision


async def _content(stack: Stack, name: str) -> object:
    env = await stack.config.GetEnvironment(cpb.GetEnvironmentRequest(name=name))
    return json_format.MessageToDict(env.content)


async def _propose_rollback(stack: Stack, name: str, revision: int, expect: str) -> pb.RemediationRecord:
    action = pb.Action(
        kind=pb.ACTION_KIND_CONFIG_ROLLBACK,
        target=name,
        parameters={"revision": str(revision), "expect": expect},
    )
    made = await stack.remediations.ProposeRemediation(pb.ProposeRemediationRequest(plan=[action]))
    assert made.state == pb.REMEDIATION_STATE_APPROVED
    return made


async def test_a_config_rollback_executes_verifies_and_succeeds(stack: Stack) -> None:
    name, good = await _two_revisions(stack)
    made = await _propose_rollback(stack, name, good, 'db.host="good"')
    done = await stack.remediations.ExecuteRemediation(pb.ExecuteRemediationRequest(name=made.name))
    assert done.state == pb.REMEDIATION_STATE_SUCCEEDED, done.history[-1].reason
    assert [s.status for s in done.steps] == ["executing", "applied"]
    assert await _content(stack, name) == {"db": {"host": "good"}}
    assert [t.to_state for t in done.history][-2:] == [
        pb.REMEDIATION_STATE_EXECUTING,
        pb.REMEDIATION_STATE_SUCCEEDED,
    ]


async def test_a_failed_verification_is_undone_and_the_remediation_fails_with_the_reason(
    stack: Stack,
) -> None:
    name, good = await _two_revisions(stack)
    made = await _propose_rollback(stack, name, good, 'db.host="elsewhere"')
    done = await stack.remediations.ExecuteRemediation(pb.ExecuteRemediationRequest(name=made.name))
    assert done.state == pb.REMEDIATION_STATE_FAILED
    assert "verification of action 0 failed" in done.history[-1].reason
    assert "undone in reverse order: [0]" in done.history[-1].reason
    assert [s.status for s in done.steps] == ["executing", "applied", "undoing", "undone"]
    assert await _content(stack, name) == {"db": {"host": "broken"}}  # rolled forward again


async def test_the_proposal_execution_each_step_and_the_undo_are_audit_events(stack: Stack) -> None:
    name, good = await _two_revisions(stack)
    made = await _propose_rollback(stack, name, good, 'db.host="elsewhere"')
    await stack.remediations.ExecuteRemediation(pb.ExecuteRemediationRequest(name=made.name))
    entries = await stack.debugger.runtime.redis.xrevrange(audit.STREAM, count=1000)
    events = [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in reversed(entries)]
    mine = [e for e in events if e["resource"] == made.name and e["method"] == ""]
    assert [(e["action"], e.get("detail.step_status", "")) for e in mine] == [
        ("debugger.remediations.proposed", ""),
        ("debugger.remediations.executing", ""),
        ("debugger.remediations.step", "executing"),
        ("debugger.remediations.step", "applied"),
        ("debugger.remediations.step", "undoing"),
        ("debugger.remediations.step", "undone"),
        ("debugger.remediations.failed", ""),
    ]
    assert "verification of action 0 failed" in mine[-1]["reason"]


async def test_a_memory_limit_patch_runs_as_a_validated_dry_run_and_never_claims_success(
    stack: Stack,
) -> None:
    action = pb.Action(
        kind=pb.ACTION_KIND_KUBERNETES_RAISE_MEMORY_LIMIT,
        target="namespaces/shop/deployments/api",
        parameters={"container": "app", "current_limit": "256Mi", "factor": "2"},
    )
    made = await stack.remediations.ProposeRemediation(pb.ProposeRemediationRequest(plan=[action]))
    done = await stack.remediations.ExecuteRemediation(pb.ExecuteRemediationRequest(name=made.name))
    assert done.state == pb.REMEDIATION_STATE_DRY_RUN and "nothing was applied" in done.history[-1].reason
    (step,) = done.steps
    assert step.status == "dry_run"
    detail = json.loads(step.detail)
    assert detail["dryRun"] is True and detail["patchType"] == "strategic-merge"
    container = detail["patch"]["spec"]["template"]["spec"]["containers"][0]
    assert container == {"name": "app", "resources": {"limits": {"memory": "512Mi"}}}


async def test_a_remediation_executes_once(stack: Stack) -> None:
    action = pb.Action(kind=pb.ACTION_KIND_KUBERNETES_SCALE, target="namespaces/shop/deployments/api",
                       parameters={"replicas": "3"})  # fmt: skip
    made = await stack.remediations.ProposeRemediation(pb.ProposeRemediationRequest(plan=[action]))
    store = RemediationStore(stack.debugger.runtime.redis, stack.debugger.runtime.durable)
    held = store.lease(made.name.removeprefix("remediations/"), 30)
    assert await held.acquire()  # another replica is executing it
    error = await refused(stack.remediations.ExecuteRemediation, pb.ExecuteRemediationRequest(name=made.name))
    assert error.code() == grpc.StatusCode.ABORTED and error_info(error).reason == "LEASED"
    await held.release()
    done = await stack.remediations.ExecuteRemediation(pb.ExecuteRemediationRequest(name=made.name))
    assert done.state == pb.REMEDIATION_STATE_DRY_RUN
    error = await refused(stack.remediations.ExecuteRemediation, pb.ExecuteRemediationRequest(name=made.name))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and error_info(error).reason == "NOT_APPROVED"


async def test_an_action_without_an_executor_is_refused_before_anything_runs(stack: Stack) -> None:
    action = pb.Action(kind=pb.ACTION_KIND_SECRET_ROTATE, target="secrets/db-password")
    made = await stack.remediations.ProposeRemediation(pb.ProposeRemediationRequest(plan=[action]))
    error = await refused(stack.remediations.ExecuteRemediation, pb.ExecuteRemediationRequest(name=made.name))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and error_info(error).reason == "NO_EXECUTOR"
    read = await stack.remediations.GetRemediation(pb.GetRemediationRequest(name=made.name))
    assert read.state == pb.REMEDIATION_STATE_APPROVED and not read.steps


async def _events_of(stack: Stack, name: str, after: str, count: int) -> list[pb.RemediationEvent]:
    """The first `count` events of remediation `name` after event `after`."""
    found: list[pb.RemediationEvent] = []
    call = stack.remediations.WatchRemediations(pb.WatchRemediationsRequest(after_event_id=after))
    async for event in call:
        if event.remediation.name == name:
            found.append(event)
            if len(found) == count:
                break
    call.cancel()
    return found


async def test_every_transition_is_on_the_watch_which_resumes_after_an_event(stack: Stack) -> None:
    action = pb.Action(kind=pb.ACTION_KIND_KUBERNETES_RESTART, target="namespaces/shop/deployments/web")
    made = await stack.remediations.ProposeRemediation(pb.ProposeRemediationRequest(plan=[action]))
    (proposed,) = await _events_of(stack, made.name, "0-0", 1)
    assert proposed.remediation.state == pb.REMEDIATION_STATE_APPROVED
    await stack.remediations.ExecuteRemediation(pb.ExecuteRemediationRequest(name=made.name))
    later = await _events_of(stack, made.name, proposed.event_id, 3)
    assert [e.remediation.state for e in later] == [
        pb.REMEDIATION_STATE_EXECUTING,
        pb.REMEDIATION_STATE_EXECUTING,  # the step, written before the verification
        pb.REMEDIATION_STATE_DRY_RUN,
    ]
    assert [len(e.remediation.steps) for e in later] == [0, 1, 1]
    assert later[-1].transition.to_state == pb.REMEDIATION_STATE_DRY_RUN


async def test_a_watch_from_a_malformed_event_id_is_refused(stack: Stack) -> None:
    call = stack.remediations.WatchRemediations(pb.WatchRemediationsRequest(after_event_id="yesterday"))
    error = await refused(call.read)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
