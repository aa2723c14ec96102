"""The end-of-run summary: what happened, what it cost, what to look at.

``format`` says what earlier runs of the journal had done and what this run did, one
spend figure (this run's: the progress bar shows the same) with the provider's own
balance change beside it, labelled as such, and every count in words that fit it
("1 request", no rate when nothing was sent).
"""

from __future__ import annotations

import json
from array import array
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc


@dataclass
class RunSummary:
    provider: str
    task_type: str
    output: str | None = None
    journal: str | None = None
    rows: int = 0
    solved: int = 0
    failed: int = 0
    #: Rows an interrupted run did not finish (written with status "pending").
    pending: int = 0
    failed_by_code: dict[str, int] = field(default_factory=dict)
    #: Rows answered by an identical image in this run (no request of their own).
    from_cache: int = 0
    #: Rows whose result an earlier run of the journal had found (and of them, solved).
    resumed: int = 0
    earlier_solved: int = 0
    #: Spent by this run.
    spend_usd: float = 0.0
    #: Spent (or possibly spent, on sends with lost replies) by earlier runs of the journal.
    spend_before_usd: float = 0.0
    spend_cap_usd: float | None = None
    #: The price of one task the run counted at its end (raised if the provider charged more).
    price_usd: float = 0.0
    balance_checks: int = 0
    #: Provider-reported costs that were not a usable amount; counted at the price instead.
    bad_costs: int = 0
    #: False when the run was interrupted and rows are pending.
    complete: bool = True
    #: Rows failed in earlier runs for a passing reason, sent again by this run.
    retried_failed: int = 0
    #: Rows failed for good in earlier runs, kept (``--retry-failed`` sends them again).
    kept_failed: int = 0
    #: Times the provider was taken to be down (the run paused and probed).
    outages: int = 0
    balance_before: float | None = None
    balance_after: float | None = None
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    requests: int = 0
    creates: int = 0
    polls: int = 0
    #: The first-poll delay the run had learned by its end (None: nothing deferred).
    first_poll_s: float | None = None
    #: The median age of deferred tasks at their first poll: the delay really used.
    first_poll_median_s: float | None = None
    rate_limited: int = 0
    #: Callbacks (``--callback-url``): see ``Tally``.
    callbacks_received: int = 0
    callbacks_used: int = 0
    callbacks_refused: int = 0
    callbacks_ignored: int = 0
    fallback_polls: int = 0
    achieved_rate: float = 0.0
    possible_double_payments: int = 0
    spend_cap_reached: bool = False
    rows_not_sent: int = 0
    started_at: str = ""
    finished_at: str = ""
    duration_s: float = 0.0
    stopped_by: str | None = None
    #: The input's label column (``--label-column``, or a ``label`` column) and the
    #: rows it scored: labelled rows that ran, and of them those answered right.
    label_column: str | None = None
    case_sensitive: bool = False
    labelled: int = 0
    correct: int = 0
    accuracy: float | None = None
    #: The cascade (``--local-first``): ``cascade.CascadeCounts`` as a dict, else None.
    cascade: dict[str, Any] | None = None
    notices: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def format(self) -> str:
        """The summary as a few human-readable lines."""
        lines = [self._rows_line()]
        if self.resumed:
            lines.append(self._earlier_line())
        if self.failed_by_code:
            codes = ", ".join(f"{c} {n}" for c, n in sorted(self.failed_by_code.items()))
            lines.append(f"failed by code: {codes}")
        if self.cascade is not None:
            lines.append(self._cascade_line())
        lines.append(self._spend_line())
        if self.label_column is not None:
            lines.append(self._accuracy_line())
        if self.latency_p50_ms is not None:
            lines.append(
                f"latency p50 {self.latency_p50_ms:.0f} ms, p95 {self.latency_p95_ms or 0:.0f} ms"
            )
        lines.append(self._requests_line())
        if self.callbacks_received or self.fallback_polls:
            lines.append(
                f"callbacks: {self.callbacks_received} received, {self.callbacks_used} used, "
                f"{self.callbacks_refused} refused, {self.callbacks_ignored} ignored; "
                f"{counted(self.fallback_polls, 'fallback poll')}"
            )
        lines.append(
            f"possible double payments: {self.possible_double_payments} "
            "(requests in flight at a crash or with a lost reply, over all runs of this output)"
        )
        lines += self._other_lines()
        if self.output:
            lines.append(f"results: {self.output}")
        return "\n".join(lines)

    def _cascade_line(self) -> str:
        cascade = self.cascade or {}
        kept, sent = int(cascade.get("kept", 0)), int(cascade.get("sent_on", 0))
        read, reused = int(cascade.get("read", 0)), int(cascade.get("reused", 0))
        return (
            f"cascade at confidence {cascade.get('threshold')}: {counted(kept, 'row')} "
            f"answered locally, {sent} sent on to {self.provider}; "
            f"{read} read by the local solver, {reused} readings reused from the journal"
        )

    def _other_lines(self) -> list[str]:
        """The lines only some runs need: earlier failures, outages, odd costs, the cap."""
        lines = []
        if self.retried_failed or self.kept_failed:
            lines.append(
                f"failed rows of earlier runs: {self.retried_failed} sent again (passing "
                f"errors), {self.kept_failed} kept as failed for good"
                + (" (--retry-failed sends them again)" if self.kept_failed else "")
            )
        if self.outages:
            lines.append(
                f"the provider was unreachable {counted(self.outages, 'time')}: the run "
                "paused and probed until it answered"
            )
        if self.bad_costs:
            lines.append(
                f"{counted(self.bad_costs, 'cost')} reported by the provider "
                f"{'was' if self.bad_costs == 1 else 'were'} not a usable amount: counted at "
                "the price instead"
            )
        if self.spend_cap_reached:
            lines.append(f"spend cap reached: {counted(self.rows_not_sent, 'row')} not sent")
        return lines

    @property
    def this_run(self) -> int:
        """Rows this run finished itself (neither pending nor done by an earlier run)."""
        return self.rows - self.resumed - self.pending

    def _rows_line(self) -> str:
        """How the rows ended: solved, failed, and only the other outcomes that happened."""
        return (
            f"rows {self.rows}: {self.solved} solved, {self.failed} failed"
            + (f", {self.pending} pending" if self.pending else "")
            + (f", {self.from_cache} from cache (identical images)" if self.from_cache else "")
        )

    def _earlier_line(self) -> str:
        """What earlier runs of the journal had done, and what was left to this one."""
        return (
            f"{counted(self.resumed, 'row')} done by earlier runs ({self.earlier_solved} "
            f"solved, cost ${self.spend_before_usd:.4f}); {self.this_run or 'none'} by this run"
        )

    def _spend_line(self) -> str:
        """This run's spend (the figure the bar shows), the cap over every run when
        there is one, and the provider's own balance change, said to be that."""
        earlier = self.resumed or self.spend_before_usd
        spend = f"spend ${self.spend_usd:.4f}" + (" this run" if earlier else "")
        if self.spend_cap_usd is not None:
            total = self.spend_usd + self.spend_before_usd
            spend += (
                f"; ${total:.4f} with earlier runs, of the ${self.spend_cap_usd:.4f} cap"
                if self.spend_before_usd
                else f" of the ${self.spend_cap_usd:.4f} cap"
            )
        if self.balance_before is not None and self.balance_after is not None:
            change = round(self.balance_after - self.balance_before, 4)
            sign = "-" if change < 0 else "+" if change > 0 else ""
            spend += (
                f" (provider balance change during this run: {sign}${abs(change):.4f}, "
                f"${self.balance_before:.4f} -> ${self.balance_after:.4f})"
            )
        return spend

    def _accuracy_line(self) -> str:
        """Answers against the input's label column, by the report's rule."""
        how = "case-sensitive" if self.case_sensitive else "case-insensitive"
        where = f"column {self.label_column!r}, {how}"
        if not self.labelled:
            return f"accuracy: no labelled rows ran ({where})"
        return (
            f"accuracy {100.0 * self.correct / self.labelled:.1f}% ({self.correct} of "
            f"{counted(self.labelled, 'labelled row')} right; {where})"
        )

    def _requests_line(self) -> str:
        """Requests by kind, the first-poll delay used and learned, duration and rate."""
        if not self.requests:
            return f"no requests sent, in {self.duration_s:.1f} s"
        polling = ""
        if self.first_poll_median_s is not None:
            polling = f"; first poll a median {self.first_poll_median_s:.1f} s after createTask"
            if self.first_poll_s is not None:
                polling += f", {self.first_poll_s:.1f} s learned by the end"
        return (
            f"{counted(self.requests, 'request')} ({self.creates} createTask, "
            f"{counted(self.polls, 'poll')}{polling}) in {self.duration_s:.1f} s: "
            f"{self.achieved_rate:.1f} req/s"
            + (f", {self.rate_limited} rate-limited" if self.rate_limited else "")
        )


def counted(n: int, noun: str) -> str:
    """``n`` and ``noun``, plural unless ``n`` is 1: "1 request", "2 requests"."""
    return f"{n} {noun}" + ("" if n == 1 else "s")


def percentiles(values: array[float], qs: tuple[float, ...]) -> list[float | None]:
    """``percentile`` of packed doubles for each of ``qs``, computed by Arrow over the
    same buffer (no Python float per value, no sorted copy as a list)."""
    if not values:
        return [None] * len(qs)
    column = pa.Array.from_buffers(pa.float64(), len(values), [None, pa.py_buffer(values)])
    found: list[float | None] = []
    for q in qs:
        found += pc.quantile(column, q=q / 100.0, interpolation="linear").to_pylist()
    return found
