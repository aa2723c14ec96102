"""The end-of-run summary: what happened, what it cost, what to look at."""

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
    from_cache: int = 0
    resumed: int = 0
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
    notices: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def format(self) -> str:
        """The summary as a few human-readable lines."""
        lines = [self._rows_line()]
        if self.failed_by_code:
            codes = ", ".join(f"{c} {n}" for c, n in sorted(self.failed_by_code.items()))
            lines.append(f"failed by code: {codes}")
        lines.append(self._spend_line())
        if self.latency_p50_ms is not None:
            lines.append(
                f"latency p50 {self.latency_p50_ms:.0f} ms, p95 {self.latency_p95_ms or 0:.0f} ms"
            )
        lines.append(self._requests_line())
        if self.callbacks_received or self.fallback_polls:
            lines.append(
                f"callbacks: {self.callbacks_received} received, {self.callbacks_used} used, "
                f"{self.callbacks_refused} refused, {self.callbacks_ignored} ignored; "
                f"{self.fallback_polls} fallback polls"
            )
        lines.append(
            f"possible double payments: {self.possible_double_payments} "
            "(requests in flight at a crash or with a lost reply, over all runs of this output)"
        )
        if self.retried_failed or self.kept_failed:
            lines.append(
                f"failed rows of earlier runs: {self.retried_failed} sent again (passing "
                f"errors), {self.kept_failed} kept as failed for good"
                + (" (--retry-failed sends them again)" if self.kept_failed else "")
            )
        if self.outages:
            lines.append(
                f"the provider was unreachable {self.outages} time"
                f"{'s' if self.outages != 1 else ''}: the run paused and probed until it answered"
            )
        if self.bad_costs:
            lines.append(
                f"{self.bad_costs} cost{'s' if self.bad_costs != 1 else ''} reported by the "
                "provider were not a usable amount: counted at the price instead"
            )
        if self.spend_cap_reached:
            lines.append(f"spend cap reached: {self.rows_not_sent} rows not sent")
        if self.output:
            lines.append(f"results: {self.output}")
        return "\n".join(lines)

    def _rows_line(self) -> str:
        """How the rows ended: solved, failed, and only the other outcomes that happened."""
        return (
            f"rows {self.rows}: {self.solved} solved, {self.failed} failed"
            + (f", {self.pending} pending" if self.pending else "")
            + (f", {self.from_cache} from cache" if self.from_cache else "")
            + (f", {self.resumed} done by earlier runs" if self.resumed else "")
        )

    def _spend_line(self) -> str:
        """This run's spend, with earlier runs', the cap and the provider's balance
        change when there are any."""
        spend = f"spend ${self.spend_usd:.4f}"
        if self.spend_before_usd:
            spend += (
                f" this run + ${self.spend_before_usd:.4f} earlier = "
                f"${self.spend_usd + self.spend_before_usd:.4f}"
            )
        if self.spend_cap_usd is not None:
            spend += f" of the ${self.spend_cap_usd:.4f} cap"
        if self.balance_before is not None and self.balance_after is not None:
            spend += (
                f" (balance ${self.balance_before:.4f} -> ${self.balance_after:.4f}, "
                f"provider says ${self.balance_before - self.balance_after:.4f})"
            )
        return spend

    def _requests_line(self) -> str:
        """Requests by kind, the learned first-poll delay, duration and rate."""
        return (
            f"{self.requests} requests ({self.creates} createTask, {self.polls} polls"
            + (f"; first poll after {self.first_poll_s:.1f} s" if self.first_poll_s else "")
            + ") "
            f"in {self.duration_s:.1f} s: {self.achieved_rate:.1f} req/s"
            + (f", {self.rate_limited} rate-limited" if self.rate_limited else "")
        )


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
