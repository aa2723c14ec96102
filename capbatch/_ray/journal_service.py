"""The cluster's one journal: an actor on the driver's node that owns the run's SQLite
``Journal`` (the same class and file as ``capbatch run``), and the claims that keep two
workers from creating the same task at once.

Why an actor on the driver's node: the journal must outlive any worker (a worker's death
is exactly what it guards against), it must be one file the next run of the same command
finds (the driver's disk, where ``capbatch run`` keeps it, so both engines resume each
other's journals), and SQLite must be written by one process (it is opened in exclusive
mode, which also refuses a second run on the same journal). Every worker's paid step
(intent before ``createTask``, the task id after it, the result) is committed here, by
this one process, before the worker takes the next step.

Why claims: the core's in-run cache shares an image between rows of one process; on a
cluster two workers may meet the same image at the same moment. A worker claims a
content key before its job starts; a key claimed by a live worker makes the other wait
for the answer; a key whose claimant went silent (killed) is handed over, and the new
claimant adopts the journal entry the dead one left (a task id is polled, an intent is
counted as a possible double payment): the journal decides, not Ray's retries.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from capbatch._ray.budget import SILENT_AFTER
from capbatch._run.journal import Journal, JournalEntry
from capbatch._run.workspace import Workspace

#: The ``Journal`` methods a worker or the driver may call through the actor.
ALLOWED = frozenset(
    {
        "get_many",
        "counts",
        "record_intent",
        "record_uncertain",
        "record_created",
        "record_result",
        "record_spent",
        "total_uncertain",
        "total_spent",
        "get_meta",
        "set_meta",
        "reports",  # --report-wrong: the driver's reports (``driver_reports``)
        "record_report",
    }
)

#: Answers of ``claim``.
GO, WAIT, DONE = "go", "wait", "done"


class JournalService:
    """One run's journal and workspace (locks), served to every worker."""

    def __init__(self, output: str | None, journal: str, source: str | None = None) -> None:
        self._workspace = Workspace.open(
            Path(output) if output is not None else None,
            journal,
            source=Path(source) if source is not None else None,
        )
        self.journal: Journal = self._workspace.journal
        #: key -> (token of the job solving it, its worker)
        self._claims: dict[str, tuple[str, str]] = {}
        self._seen: dict[str, float] = {}
        self._workers: dict[str, Any] = {}
        self.calls = 0
        self.failure: tuple[str, str, str, str] | None = None

    def first_failure(self) -> tuple[str, str, str, str] | None:
        return self.failure

    def ready(self) -> str:
        """The path of the journal, once it is open (the driver waits for this)."""
        return self.journal.path

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """One ``Journal`` method, committed before the answer goes back."""
        if method not in ALLOWED:
            raise ValueError(f"not a journal method a worker may call: {method}")
        self.calls += 1
        result = getattr(self.journal, method)(*args, **kwargs)
        if method == "record_result":
            self._claims.pop(args[0], None)
        return result

    def apply(self, calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]]) -> None:
        """Several journal calls in order (a worker's buffered writes for free tasks)."""
        for method, args, kwargs in calls:
            self.call(method, *args, **kwargs)

    # --- workers and claims -----------------------------------------------------------

    def register(self, worker: str, handle: Any = None) -> int:
        """A new worker: its number (a base for its row keys) and, for tests and
        operators, its actor handle."""
        self._seen[worker] = time.monotonic()
        self._workers[worker] = handle
        return len(self._workers) - 1

    def workers(self) -> dict[str, Any]:
        """Every worker registered in this run, by name: its actor handle."""
        return dict(self._workers)

    def heartbeat(self, worker: str) -> None:
        self._seen[worker] = time.monotonic()

    def _alive(self, worker: str) -> bool:
        return self._seen.get(worker, 0.0) > time.monotonic() - SILENT_AFTER

    def claim(self, key: str, token: str, worker: str) -> tuple[str, JournalEntry | None]:
        """Whether the job ``token`` of ``worker`` may solve ``key``: ``GO`` with the
        journal's entry (which it must adopt), ``DONE`` with the final entry, or ``WAIT``
        while another live worker's job holds it."""
        self._seen[worker] = time.monotonic()
        entry = self.journal.get_many([key]).get(key)
        if entry is not None and entry.done:
            self._claims.pop(key, None)
            return DONE, entry
        holder = self._claims.get(key)
        if holder is None or holder[0] == token or not self._alive(holder[1]):
            self._claims[key] = (token, worker)
            return GO, entry
        return WAIT, None

    def unclaim(self, key: str, token: str) -> None:
        holder = self._claims.get(key)
        if holder is not None and holder[0] == token:
            del self._claims[key]

    def record_failure(self, failure: tuple[str, str, str, str]) -> None:
        """A worker's run-stopping error (module, class, message, code): the first is
        kept for the driver, since Ray hands the driver only a wrapper of it."""
        if self.failure is None:
            self.failure = failure

    def close(self) -> None:
        """Close the journal, then let go of the locks."""
        self._workspace.close()
