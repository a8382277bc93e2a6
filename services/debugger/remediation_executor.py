"""The background executor: executes the remediations nobody has to call ExecuteRemediation for,
and resumes the ones a stopped replica left behind.

Every replica runs one. It looks at the APPROVED remediations that are automatic (the policy
approved them) or execute on approval (a remediation policy said so), and at the EXECUTING ones
whose replica's lease has expired, when woken (a proposal or an approval in this process) and
every `interval_s` otherwise (another replica's proposals, a lease that ran out). The lease per
remediation decides which replica executes it; the others are refused (LEASED) and move on.
Each execution runs in a task of its own: a re-run's verification may take minutes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools

from services.debugger.remediation import Remediation, State
from services.debugger.remediation_execution import EXECUTOR_ACTOR, Execution
from services.debugger.remediation_store import RemediationStore
from services.runtime.errors import ServiceError
from services.runtime.logging import get_logger
from services.runtime.tasks import cancel_and_wait

SCAN_PAGE = 100  # remediations looked at per state per pass
MAX_RUNNING = 16  # executions at once in one replica
log = get_logger(__name__)


def executes_by_itself(remediation: Remediation) -> bool:
    """Whether the background executor executes it (nobody calls ExecuteRemediation)."""
    return remediation.state is State.APPROVED and (remediation.automatic or remediation.execute_on_approval)


class BackgroundExecutor:
    """Executes automatic remediations and resumes orphaned ones, in one replica."""

    def __init__(self, store: RemediationStore, execution: Execution, *, interval_s: float) -> None:
        self._store = store
        self._execution = execution
        self._interval_s = interval_s
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._running: dict[str, asyncio.Task[None]] = {}

    def wake(self) -> None:
        """Look now (a remediation was proposed or approved here)."""
        self._wake.set()

    async def start(self) -> None:
        """Start looking (the server starts)."""
        if self._loop_task is None:
            self._loop_task = asyncio.create_task(self._loop(), name="remediation-executor")

    async def stop(self) -> None:
        """Stop looking and stop the executions under way (their leases expire; another
        replica resumes them from their recorded phases)."""
        await cancel_and_wait(self._loop_task, *self._running.values())
        self._loop_task = None
        self._running.clear()

    async def _loop(self) -> None:
        while True:
            try:
                await self.look()
            except Exception as error:  # Redis away for a moment: look again next time
                log.warning("remediation.executor_look_failed", error=type(error).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval_s)
            self._wake.clear()

    async def look(self) -> int:
        """Start executing what is due; how many executions it started."""
        started = 0
        approved, _ = await self._store.page(state=State.APPROVED, target="", before_us=None, size=SCAN_PAGE)
        executing, _ = await self._store.page(
            state=State.EXECUTING, target="", before_us=None, size=SCAN_PAGE
        )
        for remediation in [*reversed(approved), *reversed(executing)]:  # oldest first
            if remediation.id in self._running or len(self._running) >= MAX_RUNNING:
                continue
            if remediation.state is State.APPROVED and not executes_by_itself(remediation):
                continue
            task = asyncio.create_task(self._execute(remediation), name=f"remediation-{remediation.id}")
            self._running[remediation.id] = task
            task.add_done_callback(functools.partial(self._ended, remediation.id))
            started += 1
        return started

    def _ended(self, remediation_id: str, _: asyncio.Task[None]) -> None:
        self._running.pop(remediation_id, None)

    async def _execute(self, remediation: Remediation) -> None:
        try:
            if remediation.state is State.APPROVED:
                done = await self._execution.execute(remediation, EXECUTOR_ACTOR)
            else:
                done = await self._execution.resume(remediation.id)
        except ServiceError as refused:
            if refused.reason == "NO_EXECUTOR" and remediation.state is State.APPROVED:
                with contextlib.suppress(ServiceError):  # moved meanwhile: its state says so
                    await self._execution.give_up(remediation, refused.message)  # or due forever
                return
            # LEASED (another replica has it), CONCURRENT_CHANGE (it moved meanwhile), an
            # action without an executor: the remediation's own state says what happened.
            log.info("remediation.executor_skipped", remediation=remediation.id, reason=refused.reason)
            return
        log.info("remediation.executed", remediation=done.id, state=done.state.value)
