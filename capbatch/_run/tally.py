"""The tally: the one place a run is counted.

The per-task solver counts requests here as it sends them; the batch runner counts
each row here once, as its result is delivered, saying whether an earlier run of the
journal had finished it (``earlier``) and, when the input has labels, the row's label.
The progress bar, the notebook panel, the end-of-run summary and the output's metadata
all read this one object, so no figure is kept twice and none can disagree with
another: the money shown is the spend guard's own (``money``), not a second sum.
"""

from __future__ import annotations

import time
from array import array
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from capbatch._exceptions import ConfigError
from capbatch._io.labels import answer_is_wrong, case_sensitive_run, is_labelled
from capbatch._io.record import RowResult
from capbatch._run.spend import SpendGuard
from capbatch._run.summary import RunSummary, percentiles

#: Row codes of rows that were not sent because the spend cap was reached.
SPEND_CAP_REACHED = "SPEND_CAP_REACHED"
#: The column a run checks answers against when none is named (the report's default).
DEFAULT_LABEL_COLUMN = "label"
#: Task types whose answer is text, compared with its label as text.
TEXT_TASK_TYPES = frozenset({"ImageToTextTask"})


@dataclass(frozen=True)
class LabelRule:
    """Which input column holds the true answers, and how answers are compared
    (``_io.labels``: the report's rule, row by row)."""

    column: str
    case_sensitive: bool = False

    def correct(self, result: RowResult, label: object) -> bool | None:
        """True/False for a labelled row that ran; None when it does not count."""
        if result.status == "pending" or result.error_code == SPEND_CAP_REACHED:
            return None
        if not is_labelled(label):
            return None
        return not answer_is_wrong(result.answer, label, case_sensitive=self.case_sensitive)


class LabelOptions(Protocol):
    """What ``label_rule`` reads of the run's options (``RunOptions``)."""

    @property
    def label_column(self) -> str | None: ...

    @property
    def task_params(self) -> Mapping[str, Any]: ...

    @property
    def task_type(self) -> str: ...


def label_rule(options: LabelOptions, names: Sequence[str]) -> LabelRule | None:
    """The run's label column: the one named (it must exist), else a ``label`` column
    when the input has one, else none (no accuracy in the summary). Only text answers
    are scored here: other task types' answers (tiles, distances) are judged by kind
    in the report (``capbatch report``), not as text."""
    column, task_params = options.label_column, options.task_params
    if column is not None and column not in names:
        listed = ", ".join(map(repr, names))
        raise ConfigError(f"--label-column {column!r} is not in the input; columns: {listed}")
    if options.task_type not in TEXT_TASK_TYPES:
        return None
    chosen = column or (DEFAULT_LABEL_COLUMN if DEFAULT_LABEL_COLUMN in names else None)
    return None if chosen is None else LabelRule(chosen, case_sensitive_run(task_params))


@dataclass
class Tally:
    """Live counts of one run."""

    #: Rows in the input, when known.
    total: int | None = None
    #: Rows the journal says earlier runs finished, before any row is read: where the
    #: bar starts (``shown``). The true count is ``earlier``, known as rows arrive.
    expected_earlier: int = 0
    #: The run's money (``SpendGuard``): the one spend figure every display shows.
    money: SpendGuard | None = field(default=None, repr=False)
    #: The label column, when the input has one: the summary's accuracy.
    labels: LabelRule | None = None
    started: float = field(default_factory=time.monotonic)

    # --- rows, counted once each as its result is delivered ----------------------------
    done: int = 0
    solved: int = 0
    failed: int = 0
    pending: int = 0
    #: Rows answered by an identical image in this run (no request of their own).
    from_cache: int = 0
    #: Rows whose result an earlier run of the journal had found, and how many solved.
    earlier: int = 0
    earlier_solved: int = 0
    #: Rows failed in earlier runs for a passing reason, sent again by this run.
    retried_failed: int = 0
    not_sent: int = 0
    #: What this run's rows cost, by their ``cost_usd`` (``spend`` prefers ``money``).
    row_spend: float = 0.0
    labelled: int = 0
    correct: int = 0
    failed_by_code: Counter[str] = field(default_factory=Counter)
    #: Latencies of rows this run sent (cache hits have none), as packed doubles:
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

    def add(self, result: RowResult, *, earlier: bool = False, label: object = None) -> None:
        """Count one row's result (called once per row); ``earlier``: an earlier run of
        the journal had found it; ``label``: the row's label (``labels``)."""
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
        if earlier:
            self.earlier += 1
            self.earlier_solved += result.status == "solved"
        else:
            # An earlier run's cost is in ``SpendGuard.spent_before``, not this run's.
            self.row_spend += result.cost_usd
            if result.from_cache:
                self.from_cache += 1
            elif result.latency_ms is not None:
                self.latencies.append(result.latency_ms)
        correct = self.labels.correct(result, label) if self.labels is not None else None
        if correct is not None:
            self.labelled += 1
            self.correct += correct

    # --- what displays read ------------------------------------------------------------

    @property
    def this_run(self) -> int:
        """Rows this run finished itself (not pending, not an earlier run's)."""
        return self.done - self.earlier - self.pending

    @property
    def shown(self) -> int:
        """Rows to show as done: the earlier runs' rows from the start (as the journal
        said, less those found failed and sent again, or as counted, when more), then
        one more for each row this run finishes."""
        start = max(self.expected_earlier - self.retried_failed, self.earlier)
        shown = start + self.this_run
        return shown if self.total is None else min(shown, self.total)

    @property
    def spend(self) -> float:
        """This run's spend: the spend guard's figure, which the summary shows too."""
        return self.money.spent if self.money is not None else self.row_spend

    @property
    def elapsed(self) -> float:
        return max(1e-9, time.monotonic() - self.started)

    @property
    def request_rate(self) -> float:
        return self.requests / self.elapsed

    @property
    def row_rate(self) -> float:
        return max(0, self.this_run) / self.elapsed

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
        summary.resumed = self.earlier
        summary.earlier_solved = self.earlier_solved
        summary.retried_failed = self.retried_failed
        if self.money is not None:
            summary.spend_usd = self.money.spent
            # Final: tasks of earlier runs this run finished moved out of it (``adopt``).
            summary.spend_before_usd = self.money.spent_before
        if self.labels is not None:
            summary.label_column = self.labels.column
            summary.case_sensitive = self.labels.case_sensitive
            summary.labelled, summary.correct = self.labelled, self.correct
            summary.accuracy = self.correct / self.labelled if self.labelled else None
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
