"""The core's solver and batch runner, fitted for a worker among many.

* ``ClaimingSolver``: ``TaskSolver`` that claims a content key at the cluster's journal
  before solving it (``JournalService.claim``): two workers never create the same task at
  once, and a key a dead worker held is adopted from what the journal says.
* ``ClaimingCallbackSolver``: the same, its answers heard by callback (``callback_hub``).
* ``RowTally``: ``Tally`` that remembers which rows an earlier run had answered.
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass, field
from typing import Any

from capbatch._io.record import RowResult
from capbatch._ray.journal_service import DONE, GO
from capbatch._run.callback_solver import CallbackSolver
from capbatch._run.gate import RunStopped
from capbatch._run.job import Job
from capbatch._run.results import from_journal
from capbatch._run.tally import Tally
from capbatch._run.task import TaskSolver

#: Seconds between two looks at a key another worker is solving.
CLAIM_WAIT = 0.2


class ClaimingSolver(TaskSolver):
    """``TaskSolver`` that solves a key only while it holds the cluster's claim on it."""

    #: The journal actor and this worker's name; None: no claims (a free local solver).
    claims: tuple[Any, str] | None = None
    #: Entries finished at or after this wall time were finished by this run.
    started_wall: float = 0.0

    async def solve(self, job: Job) -> RowResult:
        if self.claims is None:
            return await super().solve(job)
        service, worker = self.claims
        token = uuid.uuid4().hex
        try:
            while True:
                answer, entry = await service.claim.remote(job.key, token, worker)
                if answer == DONE and (entry.result.finished_at or 0.0) >= self.started_wall:
                    return from_journal(entry, job.row_key)  # another job answered it
                if answer in (GO, DONE):
                    break
                if self.stopped is not None:
                    raise RunStopped(self.stopped)
                await self.clock.sleep(CLAIM_WAIT)
            # Adopt what the journal holds now: a task id a dead worker left is polled,
            # its intent counted as a possible double payment (``_adopt_resumed``). An
            # earlier run's final entry was already judged worth solving again.
            resumed = None if entry is None or entry.done else entry
            return await super().solve(dataclasses.replace(job, resumed=resumed))
        finally:
            service.unclaim.remote(job.key, token)


class ClaimingCallbackSolver(ClaimingSolver, CallbackSolver):
    """``ClaimingSolver`` whose answers come by callback to the cluster's receiver
    (``callback_hub``), polled only as the fallback."""


@dataclass
class RowTally(Tally):
    """``Tally`` of one part that also keeps, per row, whether an earlier run had
    answered it (the runner counts it in ``add`` just before ``on_result``)."""

    earlier_rows: dict[int, bool] = field(default_factory=dict)
    _last_earlier: bool = False

    def add(self, result: RowResult, *, earlier: bool = False, label: object = None) -> None:
        super().add(result, earlier=earlier, label=label)
        self._last_earlier = earlier

    def on_result(self, row: int, result: RowResult) -> None:
        self.earlier_rows[row] = self._last_earlier
