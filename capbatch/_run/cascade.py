"""The confidence-gated cascade (``--local-first MIN_CONFIDENCE``): each row is read by
the local solver first; an answer whose confidence is at or above the threshold is
kept, free; the rest, and rows the local solver could not read, go on to the paid
provider.

Both stages are journaled. The local stage's outcome is a task of its own, keyed by the
row's key with the ``local|`` prefix (provider ``local``, cost 0), written before the
paid stage starts; the paid stage is journaled as any task. So a resume reads with the
local solver only rows it never read and pays only for rows never paid, and a re-run
with another threshold decides again from the journaled confidences. The spend cap,
the rate limit and the cache see only the paid stage: the local stage never touches
them, and runs on every core (``LocalSolver``) while the paid stage sends.

Every row carries ``local_answer`` and ``local_confidence``, what the gate saw, so the
threshold can be tuned again from any run's output (``capbatch compare``'s cascade
curve). A row answered from the journal by an earlier run's paid stage gets them from
the local stage's journal entry (``annotate_reused``).
"""

from __future__ import annotations

import dataclasses
import functools
import random
from collections.abc import Callable
from typing import Any

from capbatch._exceptions import CapbatchError, ConfigError
from capbatch._io.record import RowResult
from capbatch._providers.client import TaskService
from capbatch._run.job import Job, JobState
from capbatch._run.journal import LOCAL_READING_PREFIX, Journal
from capbatch._run.results import (
    failed_result,
    from_journal,
    journal_result,
    row_result,
)
from capbatch._run.task import TaskSolver, solve_job

#: Prefix of the local stage's journal keys (the paid stage's key follows it).
LOCAL_PREFIX = LOCAL_READING_PREFIX
#: The provider name of rows the local stage answered.
LOCAL = "local"
#: Task types whose local answers carry a confidence the gate can use.
GATED_TYPES = frozenset({"ImageToTextTask"})


def check_threshold(value: float | None, task_type: str, *, provider_is_local: bool) -> None:
    """``--local-first``: a confidence in [0, 1], a paid provider behind it, and a task
    type whose local answers have a confidence; else a ConfigError before anything."""
    if value is None:
        return
    if not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise ConfigError(f"--local-first must be a confidence from 0 to 1, not {value!r}")
    if provider_is_local:
        raise ConfigError("--local-first needs a paid provider behind the local solver")
    if task_type not in GATED_TYPES:
        raise ConfigError(
            f"--local-first: the local solver gives no confidence for {task_type} "
            f"(it does for {', '.join(sorted(GATED_TYPES))})"
        )


class LocalStage:
    """The cascade's first stage: the local solver's journaled reading of each task,
    and the gate that keeps it or sends the row on."""

    def __init__(
        self, service: TaskService, journal: Journal, threshold: float, counts: CascadeCounts
    ) -> None:
        self.service = service
        self.journal = journal
        self.threshold = float(threshold)
        self.counts = counts

    async def read(self, job: Job) -> RowResult:
        """The local solver's outcome for ``job``: from the journal, or read now and
        journaled before anything is paid."""
        key = LOCAL_PREFIX + job.key
        entry = self.journal.get_many([key]).get(key)
        if entry is not None and entry.done:
            self.counts.reused += 1
            return from_journal(entry, job.row_key)
        state = JobState()
        try:
            reply = await self.service.create_task(job.task)
        except CapbatchError as exc:
            local = failed_result(state, LOCAL, exc)
        else:
            answer = reply.answer or None
            local = row_result(
                state,
                LOCAL,
                "solved" if reply.ready and answer else "failed",
                answer=answer,
                solution=reply.solution,
                error_code=None if answer else "LOCAL_NO_ANSWER",
                error_message=None if answer else "the local solver read no text",
            )
        self.counts.read += 1
        journal_result(
            self.journal, dataclasses.replace(job, key=key), local, cost=0.0, provider=LOCAL
        )
        return local

    def passes(self, local: RowResult) -> bool:
        return (
            local.status == "solved"
            and bool(local.answer)
            and local.confidence is not None
            and local.confidence >= self.threshold
        )

    def annotate(self, result: RowResult, local: RowResult) -> RowResult:
        """``result`` with what the gate saw beside it."""
        return dataclasses.replace(
            result, local_answer=local.answer, local_confidence=local.confidence
        )

    def annotate_reused(self, key: str, result: RowResult) -> RowResult:
        """A row answered from the journal: the local stage's reading, if one was made."""
        local_key = LOCAL_PREFIX + key
        entry = self.journal.get_many([local_key]).get(local_key)
        if entry is None or not entry.done:
            return result
        return self.annotate(result, entry.result)


@dataclasses.dataclass
class CascadeCounts:
    """What the cascade did in this run (the summary's cascade line)."""

    threshold: float
    #: Rows the local solver read now, and rows whose reading came from the journal.
    read: int = 0
    reused: int = 0
    #: Rows the gate kept (answered locally), and rows it sent on to the provider.
    kept: int = 0
    sent_on: int = 0

    def to_dict(self) -> dict[str, float | int]:
        return dataclasses.asdict(self)


async def cascade_job(stage: LocalStage, solver: TaskSolver, job: Job) -> RowResult:
    """One row through the cascade: the local reading, kept if the gate passes it, else
    the paid stage (``solve_job``: failures come back as failed rows), with the local
    reading beside its result."""
    local = await stage.read(job)
    if stage.passes(local):
        stage.counts.kept += 1
        return stage.annotate(local, local)
    stage.counts.sent_on += 1
    return stage.annotate(await solve_job(solver, job), local)


def local_stage(threshold: float | None, journal: Journal) -> LocalStage | None:
    """The run's local stage when ``--local-first`` is set (its ddddocr models load on
    first use, one per core)."""
    if threshold is None:
        return None
    from capbatch.local import LocalService

    return LocalStage(LocalService(), journal, threshold, CascadeCounts(float(threshold)))


def runner_hooks(stage: LocalStage | None, solver: TaskSolver) -> dict[str, Any]:
    """The batch runner's ``solve`` and ``annotate`` for a cascade; none without one."""
    if stage is None:
        return {}
    return {
        "solve": functools.partial(cascade_job, stage, solver),
        "annotate": stage.annotate_reused,
    }


async def close_stage(stage: LocalStage | None) -> None:
    if stage is not None:
        await stage.service.aclose()


#: Rows the dry run reads locally to estimate how many the gate passes.
DRY_RUN_SAMPLE = 50


class GateSample:
    """``--dry-run --local-first``: a uniform sample (reservoir, seeded) of the tasks a
    run would send, read by the local solver to estimate the share the gate keeps.
    Readings already in the journal are used as they are (nothing read twice)."""

    def __init__(self, threshold: float, size: int = DRY_RUN_SAMPLE, seed: int = 0) -> None:
        self.threshold = threshold
        self.size = size
        self.seen = 0
        self.kept: list[tuple[str, dict[str, Any]]] = []
        self._rng = random.Random(seed)

    def offer(self, key: str, make_task: Callable[[], dict[str, Any]]) -> None:
        """One task a run would send; ``make_task`` builds it only if it is sampled."""
        self.seen += 1
        if len(self.kept) < self.size:
            self.kept.append((key, make_task()))
            return
        slot = self._rng.randrange(self.seen)
        if slot < self.size:
            self.kept[slot] = (key, make_task())

    def passing(self, journal: Journal) -> tuple[int, int]:
        """(rows of the sample the gate would keep, rows sampled)."""
        if not self.kept:
            return 0, 0
        from capbatch.local import LocalSolver

        solver: LocalSolver | None = None
        passed = 0
        for key, task in self.kept:
            entry = journal.get_many([LOCAL_PREFIX + key]).get(LOCAL_PREFIX + key)
            if entry is not None and entry.done:
                confidence = entry.result.confidence if entry.result.answer else None
            else:
                solver = solver or LocalSolver(workers=1)
                confidence = _read_confidence(solver, task)
            passed += confidence is not None and confidence >= self.threshold
        if solver is not None:
            solver.close()
        return passed, len(self.kept)


def _read_confidence(solver: Any, task: dict[str, Any]) -> float | None:
    from capbatch.local import decode_body

    try:
        text, confidence = solver.read(decode_body(task), task.get("charset"))
    except CapbatchError:
        return None
    return float(confidence) if text else None
