"""A worker's view of the cluster's journal: the core's ``Journal`` interface over the
``JournalService`` actor, so the core's ``TaskSolver`` and ``BatchRunner`` journal
through it unchanged.

Each write waits for the actor's answer, which comes after SQLite's commit: the step it
guards (a paid ``createTask``, the next poll) is taken only once the cluster's journal
holds it. The one exception is a free provider (the local solver): nothing is paid, so
its writes are buffered and sent with ``flush``, which the worker calls before it hands
a batch's results on; a killed worker then costs a re-solve, never money.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from capbatch._io.record import RowResult
from capbatch._run.journal import Journal, JournalEntry


class RemoteJournal(Journal):
    """``Journal`` whose every call goes to the run's ``JournalService`` actor."""

    def __init__(self, service: Any, *, buffered: bool = False) -> None:
        # No super().__init__: the file is the service's; this object only forwards.
        self.path = "<ray journal actor>"
        self._service = service
        self._buffered = buffered
        self._pending: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        import ray

        self.flush()
        return ray.get(self._service.call.remote(method, *args, **kwargs))

    def _write(self, method: str, *args: Any, **kwargs: Any) -> None:
        if self._buffered:
            self._pending.append((method, args, kwargs))
        else:
            self._call(method, *args, **kwargs)

    def flush(self) -> None:
        """Send buffered writes and wait until they are committed."""
        if self._pending:
            import ray

            pending, self._pending = self._pending, []
            ray.get(self._service.apply.remote(pending))

    # --- reads ------------------------------------------------------------------------

    def get_many(self, keys: Iterable[str]) -> dict[str, JournalEntry]:
        found: dict[str, JournalEntry] = self._call("get_many", list(keys))
        return found

    def counts(self) -> dict[str, int]:
        found: dict[str, int] = self._call("counts")
        return found

    def total_uncertain(self) -> int:
        return int(self._call("total_uncertain"))

    def total_spent(self) -> float:
        return float(self._call("total_spent"))

    def get_meta(self, key: str) -> str | None:
        value: str | None = self._call("get_meta", key)
        return value

    def set_meta(self, key: str, value: str) -> None:
        self._call("set_meta", key, value)

    def reports(self, task_ids: Iterable[str]) -> dict[str, tuple[str, str | None]]:
        found: dict[str, tuple[str, str | None]] = self._call("reports", list(task_ids))
        return found

    # --- writes -----------------------------------------------------------------------

    def record_report(
        self, task_id: str, *, provider: str, outcome: str, detail: str | None, at: float
    ) -> None:
        self._write(
            "record_report", task_id, provider=provider, outcome=outcome, detail=detail, at=at
        )

    def record_intent(self, key: str, *, owner: str, provider: str, submitted_at: float) -> None:
        self._write("record_intent", key, owner=owner, provider=provider, submitted_at=submitted_at)

    def record_uncertain(self, key: str) -> None:
        self._write("record_uncertain", key)

    def record_created(self, key: str, task_id: str, *, created_at: float) -> None:
        self._write("record_created", key, task_id, created_at=created_at)

    def record_result(self, key: str, result: RowResult, *, owner: str | None = None) -> None:
        self._write("record_result", key, result, owner=owner)

    def record_spent(self, key: str, cost: float) -> None:
        self._write("record_spent", key, cost)

    def close(self) -> None:
        self.flush()
