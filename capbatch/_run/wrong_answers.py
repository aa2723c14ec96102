"""Reporting wrong answers to the provider (``capbatch feedback``, ``run --report-wrong``).

``WrongAnswers.report`` sends one task's report through the profile's report call
(``report_endpoint``/``report_style``, via ``TaskService.report_incorrect``), at most
once per task: every outcome that may have reached the provider is journaled (the
journal's ``reports`` table, keyed by task id) before the next report, and a task the
journal already holds is never sent again. A report outside the provider's window
(``ProviderProfile.report_window``: Anti-Captcha takes reports within 60 s of the
task's completion) is not sent and is recorded as not reportable, with the reason.

Each report waits for a slot of the rate limiter it is given (the run's own during a
run, polls' priority: a report has a deadline), so reporting never pushes the request
rate past the run's.

Refunds: no provider confirms one in its report reply (Anti-Captcha refunds after its
moderators agree, 2Captcha after a review; CapSolver and CapMonster use reports for
quality), so a report never changes a row's ``cost_usd``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from capbatch._exceptions import CapbatchError, TransportError
from capbatch._providers.errors import Action, classify
from capbatch._providers.profiles import ProviderProfile
from capbatch._run.journal import Journal
from capbatch._run.limits import POLL, RateLimiter

#: The outcomes counted in the summary line, in its order.
_COUNTED = ("reported", "refused", "uncertain", "not_reportable", "unsent")


class ReportService(Protocol):
    """What reporting needs of a provider (``ProviderClient`` has it)."""

    async def report_incorrect(self, task_id: str, *, message: str | None = None) -> bool: ...


@dataclass(frozen=True)
class Candidate:
    """One task whose answer does not match its label."""

    task_id: str
    #: Unix seconds the task finished (the row's ``finished_at``), if known.
    finished_at: float | None


@dataclass
class ReportCounts:
    """How the reports of one command or run came out (one count per task)."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_COUNTED, 0))
    #: Tasks an earlier command or run already reported: not sent again.
    before: int = 0
    #: task id -> why it was not reportable (first few, for the user).
    reasons: dict[str, str] = field(default_factory=dict)

    def add(self, outcome: str, task_id: str, detail: str | None) -> None:
        self.counts[outcome] = self.counts.get(outcome, 0) + 1
        if outcome == "not_reportable" and detail is not None:
            self.reasons[task_id] = detail

    def line(self, wrong: int) -> str:
        """The summary line: how many wrong answers, and what became of their reports."""
        parts = ", ".join(f"{self.counts[o]} {o.replace('_', ' ')}" for o in _COUNTED)
        return f"wrong answers: {wrong}; reports: {parts}; already reported before: {self.before}"


class WrongAnswers:
    """Reports wrong answers of one provider, at most once per task, into one journal."""

    def __init__(
        self,
        service: ReportService,
        profile: ProviderProfile,
        journal: Journal,
        limiter: RateLimiter | None = None,
        *,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.service = service
        self.profile = profile
        self.journal = journal
        self.limiter = limiter
        self.now = now
        self.counts = ReportCounts()
        #: task id -> outcome, for every task seen (this time or journaled before).
        self.outcomes: dict[str, str] = {}
        #: What stopped reporting (a bad key, no balance, a ban): no report is sent after.
        self.stopped: CapbatchError | None = None

    def skip_known(self, candidates: list[Candidate]) -> list[Candidate]:
        """``candidates`` less the tasks the journal already holds a report for (their
        outcome kept in ``outcomes``), each task once."""
        known = self.journal.reports(c.task_id for c in candidates)
        fresh: dict[str, Candidate] = {}
        for candidate in candidates:
            if candidate.task_id in known:
                if candidate.task_id not in self.outcomes:
                    self.counts.before += 1
                self.outcomes[candidate.task_id] = known[candidate.task_id][0]
            else:
                fresh.setdefault(candidate.task_id, candidate)
        return list(fresh.values())

    def not_reportable(self, candidate: Candidate) -> str | None:
        """Why ``candidate`` cannot be reported now; None when it can."""
        profile = self.profile
        if profile.report_endpoint is None or profile.report_style == "none":
            return f"{profile.name} has no call to report a wrong answer"
        window = profile.report_window
        if window is None:
            return None
        if candidate.finished_at is None:
            return f"finish time unknown; {profile.name} takes reports within {window:g} s of it"
        age = self.now() - candidate.finished_at
        if age > window:
            return f"finished {age:.0f} s ago; {profile.name} takes reports within {window:g} s"
        return None

    async def report(self, candidate: Candidate) -> str:
        """Report one task (unless journaled already or not reportable); its outcome."""
        task_id = candidate.task_id
        if task_id in self.outcomes:
            return self.outcomes[task_id]
        known = self.journal.reports([task_id])
        if task_id in known:
            self.outcomes[task_id] = known[task_id][0]
            self.counts.before += 1
            return known[task_id][0]
        if self.stopped is not None:
            raise self.stopped
        self.outcomes[task_id] = "pending"  # a second row of the same task waits for none
        if self.limiter is not None and self.not_reportable(candidate) is None:
            await self.limiter.acquire(POLL)
        reason = self.not_reportable(candidate)  # again: the wait may have taken the window
        if reason is not None:
            return self._record(task_id, "not_reportable", reason)
        try:
            accepted = await self.service.report_incorrect(task_id)
        except CapbatchError as exc:
            if classify(exc) is Action.FATAL:
                self.outcomes.pop(task_id, None)
                self.stopped = self.stopped or exc
                raise
            if isinstance(exc, TransportError):
                outcome = "uncertain" if exc.maybe_sent else "unsent"
                return self._record(task_id, outcome, exc.error_code)
            return self._record(task_id, "refused", exc.error_code)
        if accepted:
            return self._record(task_id, "reported", None)
        return self._record(task_id, "refused", "not accepted")

    def _record(self, task_id: str, outcome: str, detail: str | None) -> str:
        """Journal the outcome (not "unsent": nothing reached the provider, so a later
        command may try again), then count it."""
        if outcome != "unsent":
            self.journal.record_report(
                task_id, provider=self.profile.name, outcome=outcome, detail=detail, at=self.now()
            )
        self.outcomes[task_id] = outcome
        self.counts.add(outcome, task_id, detail)
        return outcome
