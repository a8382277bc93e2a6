"""Resuming a remediation from each action's recorded phase, on the real Valkey store: an action
interrupted inside its execute is recovered when its executor can tell what happened, executed
again when it is idempotent, and otherwise compensated (what was applied undone, FAILED saying
the effect is unknown); an undo that was under way is carried on. The states are the ones a
replica leaves when it dies at that point (the kill -9 test shows one for real)."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import pytest

from services.debugger import app as debugger_app
from services.debugger.remediation import Action, ActionKind, Remediation, Risk, State, Step, Transition
from services.debugger.remediation_actions import Applied
from services.debugger.remediation_execution import Execution
from services.debugger.remediation_executor import BackgroundExecutor
from services.debugger.remediation_store import RemediationStore
from services.runtime.errors import Aborted
from services.runtime.server import Server
from tests.conftest import ServerFactory
from tests.helpers import eventually
from tools.stack.valkey import Valkey


class Recording:
    """An executor of config rollbacks that records every call (the effect a real one has)."""

    kinds = frozenset({ActionKind.CONFIG_ROLLBACK})

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    async def execute(self, action: Action, idempotency_key: str) -> Applied:
        self.calls.append(("execute", action.target))
        return Applied(undo={"replaced_revision": "1"}, detail=f"rolled {action.target} back")

    async def verify(self, action: Action, applied: Applied) -> str | None:
        self.calls.append(("verify", action.target))
        return None

    async def undo(self, action: Action, applied: Applied, idempotency_key: str) -> None:
        self.calls.append(("undo", action.target))


class Recoverable(Recording):
    """One that can tell whether an interrupted execute took effect (it did, for `took/...`)."""

    async def prepare(self, action: Action) -> dict[str, str]:
        return {"revision": "7"}

    async def recover(self, action: Action, prepared: dict[str, str], idempotency_key: str) -> Applied | None:
        self.calls.append(("recover", action.target))
        assert prepared == {"revision": "7"}
        return Applied(undo={"replaced_revision": "7"}, detail="it did") if "took" in action.target else None


@pytest.fixture(scope="module")
async def server(valkey: Valkey, start_config_server: ServerFactory) -> AsyncIterator[Server]:
    found, _ = await start_config_server(
        valkey.url, env={"DEVMESH_DEBUGGER_REMEDIATION_EXECUTOR": "off"}, specs=[debugger_app.SPEC]
    )
    yield found


def _target(name: str) -> str:
    return f"namespaces/n{uuid.uuid4().hex[:8]}/environments/{name}"


async def _left_executing(
    store: RemediationStore, targets: list[str], steps: list[tuple[int, str]]
) -> Remediation:
    """A remediation as a replica that died leaves it: EXECUTING, with these steps recorded."""
    now = time.time_ns() // 1000
    plan = tuple(Action(ActionKind.CONFIG_ROLLBACK, t, {"revision": "1"}) for t in targets)
    remediation = Remediation(
        id=f"r{uuid.uuid4().hex[:20]}",
        diagnosis="",
        plan=plan,
        risk=Risk(0.1, ("low",), "", False, 0.3),
        automatic=True,
        required_approvals=0,
        proposer="tests",
        create_time_us=now,
        state=State.EXECUTING,
        history=(Transition(None, State.EXECUTING, "tests", now, "left by a dead replica"),),
        steps=tuple(
            Step(
                i,
                status,
                status,
                f"k-{i}",
                {"revision": "7"} if status == "executing" else {"replaced_revision": "1"},
            )
            for i, status in steps
        ),
    )
    await store.write(remediation, None)
    return remediation


def _store(server: Server) -> RemediationStore:
    return RemediationStore(server.runtime.redis, server.runtime.durable)


async def test_an_interrupted_execute_that_took_effect_is_recovered_not_repeated(server: Server) -> None:
    executor, store = Recoverable(), _store(server)
    left = await _left_executing(store, [_target("took")], [(0, "executing")])
    done = await Execution(store, [executor], replica="executor/b").resume(left.id)
    assert done.state is State.SUCCEEDED
    assert [c for c, _ in executor.calls] == ["recover", "verify"]
    assert done.steps[-1].status == "applied" and "recovered" in done.steps[-1].detail
    assert done.history[-2].reason.startswith("resumed by executor/b")


async def test_an_interrupted_execute_that_did_not_take_effect_is_executed_once(server: Server) -> None:
    executor, store = Recoverable(), _store(server)
    left = await _left_executing(store, [_target("missed")], [(0, "executing")])
    done = await Execution(store, [executor]).resume(left.id)
    assert done.state is State.SUCCEEDED
    assert [c for c, _ in executor.calls] == ["recover", "execute", "verify"]


async def test_an_interrupted_execute_nobody_can_account_for_is_compensated(server: Server) -> None:
    executor, store = Recording(), _store(server)
    first, second = _target("first"), _target("second")
    left = await _left_executing(store, [first, second], [(0, "executing"), (0, "applied"), (1, "executing")])
    done = await Execution(store, [executor]).resume(left.id)
    assert done.state is State.FAILED
    assert executor.calls == [("undo", first)]  # the second is never executed again
    assert "cannot tell whether it took effect" in done.history[-1].reason
    assert "undone in reverse order: [0]" in done.history[-1].reason


async def test_an_applied_action_is_verified_not_executed_again(server: Server) -> None:
    executor, store = Recording(), _store(server)
    target = _target("applied")
    left = await _left_executing(store, [target], [(0, "executing"), (0, "applied")])
    done = await Execution(store, [executor]).resume(left.id)
    assert done.state is State.SUCCEEDED and executor.calls == [("verify", target)]


async def test_an_undo_under_way_is_carried_on_and_the_remediation_fails(server: Server) -> None:
    executor, store = Recording(), _store(server)
    first, second = _target("first"), _target("second")
    steps = [(0, "executing"), (0, "applied"), (1, "executing"), (1, "failed"), (0, "undoing")]
    left = await _left_executing(store, [first, second], steps)
    done = await Execution(store, [executor]).resume(left.id)
    assert done.state is State.FAILED and executor.calls == [("undo", first)]
    assert [s.status for s in done.steps][-2:] == ["undoing", "undone"]


async def test_a_remediation_whose_lease_is_held_is_not_resumed(server: Server) -> None:
    executor, store = Recording(), _store(server)
    left = await _left_executing(store, [_target("held")], [(0, "executing"), (0, "applied")])
    held = store.lease(left.id, 30)
    assert await held.acquire()
    try:
        with pytest.raises(Aborted, match="another replica"):
            await Execution(store, [executor]).resume(left.id)
    finally:
        await held.release()
    assert executor.calls == [] and (await store.get(left.id)).state is State.EXECUTING
    assert (await Execution(store, [executor]).resume(left.id)).state is State.SUCCEEDED  # leave no orphan


async def test_the_background_executor_resumes_an_orphan_and_fails_what_it_cannot_execute(
    server: Server,
) -> None:
    executor, store = Recording(), _store(server)
    orphan = await _left_executing(store, [_target("orphan")], [(0, "executing"), (0, "applied")])
    now = time.time_ns() // 1000
    job = f"projects/web/pipelines/ci/runs/r{uuid.uuid4().hex[:8]}/jobs/test"
    rerun = Remediation(
        id=f"r{uuid.uuid4().hex[:20]}",
        diagnosis="",
        plan=(Action(ActionKind.PIPELINE_RERUN, job, {}),),
        risk=Risk(0.05, ("low",), "", False, 0.3),
        automatic=True,
        required_approvals=0,
        proposer="tests",
        create_time_us=now,
        state=State.APPROVED,
        history=(Transition(None, State.APPROVED, "policy", now, "automatic"),),
    )
    await store.write(rerun, None)
    # Other tests' remediations on the shared Valkey are due too: it works through them all.
    background = BackgroundExecutor(store, Execution(store, [executor]), interval_s=0.1)
    await background.start()
    try:

        async def finished() -> bool:
            states = [(await store.get(r.id)).state for r in (orphan, rerun)]
            return states == [State.SUCCEEDED, State.FAILED]

        await eventually(finished, "the orphan resumed and the re-run given up")
    finally:
        await background.stop()
    failed = await store.get(rerun.id)
    assert "DEVMESH_PEERS pipeline=" in failed.history[-1].reason and not failed.steps
