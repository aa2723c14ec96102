"""The tally: the one place a run is counted.

The per-task solver counts requests here as it sends them; the batch runner counts
each row here once, as its result is delivered. The progress bar, the notebook panel,
the end-of-run summary and the output's metadata all read this one object, so no
figure is kept twice and none can disagree with another.
"""

from __future__ import annotations

import time
from array import array
from collections import Counter
from dataclasses import dataclass, field

from capbatch._io.record import RowResult
from capbatch._run.summary import RunSummary, percentiles

#: Row codes of rows that were not sent because the spend cap was reached.
SPEND_CAP_REACHED = "SPEND_CAP_REACHED"


@dataclass
class Tally:
    """Live counts of one run."""

    #: Rows in the input, when known.
    total: int | None = None
    #: Rows an earlier run of the same output had finished (the bar starts there).
    resumed: int = 0
    started: float = field(default_factory=time.monotonic)

    # --- rows, counted once each as its result is delivered ----------------------------
    done: int = 0
    solved: int = 0
    failed: int = 0
    pending: int = 0
    from_cache: int = 0
    not_sent: int = 0
    spend: float = 0.0
    failed_by_code: Counter[str] = field(default_factory=Counter)
    #: Latencies of rows that were sent (cache hits have none), as packed doubles:
    #: 8 bytes a row, not a float object and its list slot.
    latencies: array[float] = field(default_factory=lambda: array("d"))

    # --- requests, counted by the solver as they leave ----------------------------------
    requests: int = 0
    creates: int = 0
    polls: int = 0
    rate_limited: int = 0
    #: createTask sends of this run whose outcome is unknown (possible double payments).
    lost_sends: int = 0

    # --- callbacks (``--callback-url``), counted by the receiver and the solver ---------
    callbacks_received: int = 0
    callbacks_used: int = 0
    #: Answered with a 4xx: wrong path or token, not JSON, too large, unknown task.
    callbacks_refused: int = 0
    #: Authentic but not used: the task was already answered, or it said nothing final.
    callbacks_ignored: int = 0
    #: Polls of tasks whose callback had not come by the fallback delay.
    fallback_polls: int = 0

    def add(self, result: RowResult) -> None:
        """Count one row's result (called once per row)."""
        self.done += 1
        if result.status == "solved":
            self.solved += 1
        elif result.status == "pending":
            self.pending += 1
        else:
            self.failed += 1
            self.failed_by_code[result.error_code or "UNKNOWN"] += 1
            if result.error_code == SPEND_CAP_REACHED:
                self.not_sent += 1
        if result.from_cache:
            self.from_cache += 1
        elif result.latency_ms is not None:
            self.latencies.append(result.latency_ms)
        self.spend += result.cost_usd

    # --- what displays read ------------------------------------------------------------

    @property
    def shown(self) -> int:
        """Rows to show as done: earlier runs' rows count from the start (``resumed``)."""
        return max(self.done, self.resumed)

    @property
    def elapsed(self) -> float:
        return max(1e-9, time.monotonic() - self.started)

    @property
    def request_rate(self) -> float:
        return self.requests / self.elapsed

    @property
    def row_rate(self) -> float:
        return max(0, self.done - self.resumed) / self.elapsed

    def eta(self) -> float | None:
        """Seconds left at the current row rate, when the total is known."""
        if self.total is None or self.row_rate <= 0:
            return None
        return max(0.0, (self.total - self.shown) / self.row_rate)

    def fill(self, summary: RunSummary) -> None:
        """Copy the counts into the end-of-run summary."""
        summary.rows = self.done
        summary.solved = self.solved
        summary.failed = self.failed
        summary.pending = self.pending
        summary.failed_by_code = dict(self.failed_by_code)
        summary.from_cache = self.from_cache
        summary.rows_not_sent = self.not_sent
        summary.latency_p50_ms, summary.latency_p95_ms = percentiles(self.latencies, (50, 95))
        summary.resumed = min(self.resumed, self.done)
        summary.requests = self.requests
        summary.creates = self.creates
        summary.polls = self.polls
        summary.rate_limited = self.rate_limited
        summary.callbacks_received = self.callbacks_received
        summary.callbacks_used = self.callbacks_used
        summary.callbacks_refused = self.callbacks_refused
        summary.callbacks_ignored = self.callbacks_ignored
        summary.fallback_polls = self.fallback_polls
        summary.duration_s = time.monotonic() - self.started
        summary.achieved_rate = self.requests / max(summary.duration_s, 1e-9)
