"""``capbatch feedback``: report the wrong answers of a results file, once per task.

The caller says which rows are wrong (the CLI scores them with the report's rule,
``_reports.metrics.score``); ``feedback`` reports their tasks through
``WrongAnswers`` (journal, window, rate limiter), then writes what became of each
report into the file's ``reported`` column (``_io.reported``). Rows that share a task
(identical images) share its one report.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from capbatch._io.reported import read_reported, write_reported
from capbatch._providers.client import ProviderClient
from capbatch._providers.profiles import ProviderProfile
from capbatch._providers.secrets import Secret
from capbatch._run.journal import Journal
from capbatch._run.limits import RateLimiter
from capbatch._run.wrong_answers import Candidate, ReportCounts, ReportService, WrongAnswers


@dataclass(frozen=True)
class Rows:
    """The rows of a results file, as feedback needs them (one entry per row)."""

    wrong: Sequence[bool]
    task_ids: Sequence[str | None]
    #: Unix seconds each row's task finished (None when unknown).
    finished_at: Sequence[float | None]


@dataclass
class FeedbackResult:
    counts: ReportCounts
    #: Rows whose answer does not match the label.
    wrong_rows: int
    #: The ``reported`` column as written.
    reported: list[str | None]

    def line(self) -> str:
        return "feedback: " + self.counts.line(self.wrong_rows)


def candidates(rows: Rows) -> list[Candidate]:
    """One candidate per task with a wrong answer; its finish time from the row that
    paid for it (rows that reuse an answer have none)."""
    found: dict[str, float | None] = {}
    for wrong, task_id, finished in zip(rows.wrong, rows.task_ids, rows.finished_at, strict=True):
        if not wrong or not task_id:
            continue
        usable = finished if finished is not None and math.isfinite(finished) else None
        if found.get(task_id) is None:
            found[task_id] = usable
    return [Candidate(task_id, finished) for task_id, finished in found.items()]


async def report_all(reporter: WrongAnswers, todo: list[Candidate], *, in_flight: int) -> None:
    """Report every candidate, at most ``in_flight`` at once (each through the limiter)."""
    slots = asyncio.Semaphore(max(1, in_flight))

    async def one(candidate: Candidate) -> None:
        async with slots:
            await reporter.report(candidate)

    outcomes = await asyncio.gather(*(one(c) for c in todo), return_exceptions=True)
    # The first error that stopped reporting (the rest were not sent after it).
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome


def feedback(
    path: Path,
    rows: Rows,
    *,
    profile: ProviderProfile,
    key: Secret | None,
    base_url: str | None,
    journal_path: Path,
    rate: float | None = None,
    service: ReportService | None = None,
) -> FeedbackResult:
    """Report the wrong rows' tasks not reported before; write the ``reported`` column."""
    journal = Journal(journal_path)
    try:
        return asyncio.run(_feedback(path, rows, profile, key, base_url, journal, rate, service))
    finally:
        journal.close()


async def _feedback(
    path: Path,
    rows: Rows,
    profile: ProviderProfile,
    key: Secret | None,
    base_url: str | None,
    journal: Journal,
    rate: float | None,
    service: ReportService | None,
) -> FeedbackResult:
    todo_all = candidates(rows)
    limiter = RateLimiter(rate or profile.default_rate)
    own: ProviderClient | None = None
    if service is None and not profile.is_local and todo_all:
        assert key is not None
        own = ProviderClient(profile, key, base_url=base_url)
    try:
        reporter = WrongAnswers(service or own or _NoService(), profile, journal, limiter)
        todo = reporter.skip_known(todo_all)
        await report_all(reporter, todo, in_flight=profile.default_max_in_flight)
    finally:
        if own is not None:
            await own.aclose()
    reported = read_reported(path)
    wrong_rows = 0
    for i, (wrong, task_id) in enumerate(zip(rows.wrong, rows.task_ids, strict=True)):
        if not wrong:
            continue
        wrong_rows += 1
        if task_id:
            reported[i] = reporter.outcomes.get(task_id, reported[i])
        else:
            reported[i] = "not_reportable"
            reporter.counts.add("not_reportable", f"row {i}", "no task id")
    write_reported(path, reported)
    return FeedbackResult(reporter.counts, wrong_rows, reported)


class _NoService:
    """The local solver's stand-in: nothing to report to (every row not reportable)."""

    async def report_incorrect(self, task_id: str, *, message: str | None = None) -> bool:
        raise AssertionError("the local provider has no report call")
