"""A config rollback interrupted by a replica's death, resumed against the real config service:
one that landed is found by its idempotency key in the revision's reason and not rolled back a
second time; one that did not land is executed once."""

from __future__ import annotations

import time
import uuid

from devmesh.config.v1 import config_pb2 as cpb
from services.debugger.remediation import Action, ActionKind, Remediation, Risk, State, Step, Transition
from services.debugger.remediation_config_client import ConfigRollback
from services.debugger.remediation_execution import Execution
from services.debugger.remediation_store import RemediationStore
from tests.integration.debugger.test_remediation_execution import Stack, _two_revisions, stack

__all__ = ["stack"]  # the module's fixture


async def _left_executing(
    stack: Stack, name: str, revision: int, before: int
) -> tuple[Remediation, Execution]:
    """A rollback of `name` to `revision` left EXECUTING by a dead replica, which had seen the
    environment at revision `before`; and an execution that resumes it."""
    now = time.time_ns() // 1000
    remediation_id = f"r{uuid.uuid4().hex[:20]}"
    remediation = Remediation(
        id=remediation_id,
        diagnosis="",
        plan=(Action(ActionKind.CONFIG_ROLLBACK, name, {"revision": str(revision)}),),
        risk=Risk(0.35, ("config",), "staging", False, 0.9),
        automatic=True,
        required_approvals=0,
        proposer="tests",
        create_time_us=now,
        state=State.EXECUTING,
        history=(Transition(None, State.EXECUTING, "tests", now, "left by a dead replica"),),
        steps=(Step(0, "executing", "executing", f"{remediation_id}-0", {"revision": str(before)}),),
    )
    runtime = stack.debugger.runtime
    store = RemediationStore(runtime.redis, runtime.durable)
    await store.write(remediation, None)
    peer = runtime.peer_channel("config")
    assert peer is not None
    return remediation, Execution(store, [ConfigRollback(peer)])


async def _revision(stack: Stack, name: str) -> int:
    return (await stack.config.GetEnvironment(cpb.GetEnvironmentRequest(name=name))).revision


async def test_a_rollback_that_landed_before_the_replica_died_is_recovered_not_repeated(stack: Stack) -> None:
    name, good = await _two_revisions(stack)
    before = await _revision(stack, name)
    remediation, execution = await _left_executing(stack, name, good, before)
    # What the dead replica's call did: the rollback, with the step's key as its reason.
    landed = await stack.config.RollbackEnvironment(
        cpb.RollbackEnvironmentRequest(name=name, revision=good, reason=f"remediation {remediation.id}-0")
    )
    done = await execution.resume(remediation.id)
    assert done.state is State.SUCCEEDED, done.history[-1].reason
    assert await _revision(stack, name) == landed.revision  # no second rollback
    assert done.steps[-1].status == "applied" and "recovered" in done.steps[-1].detail


async def test_a_rollback_that_never_landed_is_executed_once_on_resume(stack: Stack) -> None:
    name, good = await _two_revisions(stack)
    before = await _revision(stack, name)
    remediation, execution = await _left_executing(stack, name, good, before)
    done = await execution.resume(remediation.id)
    assert done.state is State.SUCCEEDED, done.history[-1].reason
    assert await _revision(stack, name) == before + 1
