"""The row results the run builds itself, and capbatch's own error codes for them.

A solver's job state becomes a ``RowResult`` (``row_result``, ``failed_result``) and a
final journal entry (``journal_result``); a journal entry becomes a result again
(``from_journal``); an identical image's answer is shared (``shared_result``); rows
that never reach a provider get theirs here too (an unreadable input, the spend cap,
an interrupted run).
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

from capbatch._exceptions import APIError, CapbatchError, RowInputError
from capbatch._io.record import RowResult, as_reused
from capbatch._providers.profiles import ProviderProfile
from capbatch._run.job import Job, JobState
from capbatch._run.journal import Journal, JournalEntry
from capbatch._run.tally import SPEND_CAP_REACHED

#: Error codes of capbatch's own for rows the run could not finish.
PENDING = "PENDING"
MAX_ATTEMPTS = "MAX_ATTEMPTS_EXCEEDED"
POLL_LIMIT = "POLL_LIMIT_REACHED"


# --- from a job's state ---------------------------------------------------------------


def confidence_of(solution: Any) -> float | None:
    """A solution's ``confidence`` when it is a number from 0 to 1 (the local solver's;
    a provider's that sends one), else None."""
    if not isinstance(solution, dict):
        return None
    value = solution.get("confidence")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) and 0.0 <= value <= 1.0 else None


def row_result(state: JobState, provider: str, status: str, **fields: Any) -> RowResult:
    """The row result of ``state``, finished now (its confidence from its solution)."""
    fields.setdefault("confidence", confidence_of(fields.get("solution")))
    finished = time.time()
    return RowResult(
        status=status,
        provider=provider,
        attempts=state.calls,
        polls=state.polls,
        submitted_at=state.submitted_at,
        finished_at=finished,
        latency_ms=_latency_ms(state.submitted_at, finished),
        queue_ms=state.queue_s * 1000.0,
        cost_usd=state.cost,
        **fields,
    )


def failed_result(state: JobState, provider: str, error: CapbatchError) -> RowResult:
    """The row result of a job that ended with ``error``."""
    task_id = state.task_id or (error.task_id if isinstance(error, APIError) else None)
    return row_result(
        state,
        provider,
        "failed",
        error_code=error.error_code,
        error_message=str(error),
        task_id=task_id,
    )


def _latency_ms(submitted: float | None, finished: float) -> float | None:
    if submitted is None:
        return None
    return max(0.0, (finished - submitted) * 1000.0)


def journal_result(
    journal: Journal, job: Job, result: RowResult, *, cost: float, provider: str
) -> None:
    """Write ``result`` as the key's final entry; ``cost`` is added to its spend."""
    final = dataclasses.replace(
        result, cost_usd=cost, provider=provider, finished_at=result.finished_at or time.time()
    )
    journal.record_result(job.key, final, owner=job.row_key)


# --- from the journal, and shared between rows ----------------------------------------


def from_journal(entry: JournalEntry, row_key: str) -> RowResult:
    """A row answered by an earlier run (or by another row with the same image)."""
    return entry.result if entry.owner == row_key else as_reused(entry.result)


def shared_result(result: RowResult, row_key: str, owner: str) -> RowResult:
    """The result of an identical image solved for another row in this run."""
    if row_key == owner or result.error_code == SPEND_CAP_REACHED:
        return result
    return as_reused(result)


# --- rows no provider answered --------------------------------------------------------


def input_failure(error: RowInputError, provider: str) -> RowResult:
    """The row result of a row whose image could not be read or was refused."""
    return RowResult(
        status="failed",
        error_code=error.error_code,
        error_message=str(error),
        provider=provider,
    )


def spend_cap_result(profile: ProviderProfile, cap: float | None) -> RowResult:
    """The row result of a row not sent because the spend cap was reached."""
    return RowResult(
        status="failed",
        error_code=SPEND_CAP_REACHED,
        error_message=f"not sent: the spend cap of ${cap:.4f} was reached"
        if cap is not None
        else "not sent: the spend cap was reached",
        provider=profile.name,
    )


def pending_result(provider: str) -> RowResult:
    """The row result of a row an interrupted run did not finish."""
    return RowResult(
        status="pending",
        error_code=PENDING,
        error_message="not finished: the run was interrupted; run the same command to resume",
        provider=provider,
    )
