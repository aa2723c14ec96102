"""One job of a run: the content key it solves (``Job``) and what it knows while it
runs (``JobState``). Plain data, shared by the solver, its request gate and the
results built from it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from capbatch._exceptions import CapbatchError
from capbatch._run.journal import JournalEntry


@dataclass(frozen=True)
class Job:
    """One content key to solve, on behalf of the row ``row_key``."""

    key: str
    row_key: str
    task: Mapping[str, Any]
    #: An earlier run's unfinished journal entry for this key, if any.
    resumed: JournalEntry | None = None


@dataclass
class JobState:
    """Everything one job knows while it runs: its attempts, its task, its money."""

    calls: int = 0  # createTask calls (the ``attempts`` column)
    budget: int = 0  # attempts counted against --max-attempts
    failures: int = 0  # consecutive transient failures, for backoff
    rate_limited: int = 0
    polls: int = 0
    queue_s: float = 0.0
    cost: float = 0.0
    task_id: str | None = None
    created_wall: float | None = None
    created_mono: float | None = None
    submitted_at: float | None = None
    last_error: CapbatchError | None = None
    reserved: float = 0.0
    #: This job's createTask went as the spend cap's price probe (see ``SpendWatch``).
    probe: bool = False
    #: When the task may be polled next (run clock), once it has a task id.
    next_poll: float | None = None
    #: The next poll is the task's first: its outcome teaches the ``PollPacer``.
    paced: bool = False
    #: When this task's last poll came back (run clock): the provider's floor between
    #: two polls of one task counts from it.
    last_poll: float | None = None

    def forget_task(self) -> None:
        """The provider's task is gone (or given up): the next step creates a new one."""
        self.task_id = None
        self.created_mono = self.created_wall = self.next_poll = self.last_poll = None
        self.paced = False
