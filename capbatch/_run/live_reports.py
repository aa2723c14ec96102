"""``run --label-column L --report-wrong``: each wrong answer reported as it arrives.

Anti-Captcha takes a report only within 60 s of the task's completion, too soon for a
``capbatch feedback`` after a long run. ``LiveReports.on_result`` wraps the run's
per-row callback: a solved row the run paid for whose answer does not match its label
(``_io.labels``: the report's rule, by the row's kind, so a grid's tiles compare as a
set and a slider's distance within the report's default tolerance, as in ``capbatch
feedback``) starts one report in the background, through the run's rate limiter at
polls' priority (``WrongAnswers``), so the run never waits for a report. At the end
(``finish``) the reports still out get ``drain`` seconds, their outcomes go into the
output's ``reported`` column, and the counts into a summary line.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from capbatch._exceptions import CapbatchError, ConfigError, RunFailed
from capbatch._io.inputs import TableSource
from capbatch._io.labels import answer_is_wrong, case_sensitive_run, row_kind
from capbatch._io.record import RowResult
from capbatch._io.reported import read_reported, write_reported
from capbatch._run.options import RunOptions
from capbatch._run.wrong_answers import Candidate, WrongAnswers


def read_labels(table: TableSource, column: str) -> list[object]:
    """The label column of the input table, one value per row (a pass over the table)."""
    if column not in table.schema.names:
        names = ", ".join(map(repr, table.schema.names))
        raise ConfigError(f"--label-column {column!r} is not in the input; columns: {names}")
    if table.format == "parquet" and table.path is not None:
        import pyarrow.parquet as pq  # the one column, not the images beside it

        return list(pq.read_table(table.path, columns=[column])[column].to_pylist())
    labels: list[object] = []
    for batch in table.batches():
        labels.extend(batch.column(column).to_pylist())
    return labels


class LiveReports:
    """Reports the run's wrong answers while it runs (see the module docstring)."""

    def __init__(
        self,
        reporter: WrongAnswers,
        labels: list[object],
        *,
        case_sensitive: bool,
        on_result: Callable[[int, RowResult], None] | None = None,
        task_type: str | None = None,
        task_params: Mapping[str, Any] | None = None,
    ) -> None:
        self.reporter = reporter
        self.labels = labels
        self.case_sensitive = case_sensitive
        #: The run's task, for the kind of a row whose solution does not say it.
        self.task = (task_type, dict(task_params or {}))
        self.user_on_result = on_result
        self._tasks: set[asyncio.Task[str]] = set()
        #: Row number -> task id of each wrong row reported (or found not reportable).
        self.rows: dict[int, str] = {}
        self.wrong = 0
        self.failure: CapbatchError | None = None

    def on_result(self, row: int, result: RowResult) -> None:
        if self.user_on_result is not None:
            self.user_on_result(row, result)
        if result.status != "solved" or result.from_cache or not result.task_id:
            return
        label = self.labels[row] if row < len(self.labels) else None
        kind = row_kind(result.solution, *self.task)
        if not answer_is_wrong(result.answer, label, case_sensitive=self.case_sensitive, kind=kind):
            return
        self.wrong += 1
        self.rows[row] = result.task_id
        if self.failure is not None:
            return
        candidate = Candidate(result.task_id, result.finished_at)
        task = asyncio.get_running_loop().create_task(self.reporter.report(candidate))
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[str]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is not None and self.failure is None:
            # A bad key or a ban (or a fault of capbatch's): stop reporting, say so at
            # the end, rather than lose the reason with the task.
            self.failure = error if isinstance(error, CapbatchError) else RunFailed.of(error)

    async def drain(self, timeout: float) -> None:
        """Wait at most ``timeout`` seconds for the reports still out; cancel the rest
        (not sent: the journal has no outcome for them, ``capbatch feedback`` can)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def finish(
        self, output: Path | None, timeout: float, tell: Callable[[str], None]
    ) -> None:
        """Drain, write the ``reported`` column into ``output``, say the counts."""
        await self.drain(timeout)
        outcomes = self.reporter.outcomes
        if output is not None and self.rows and output.exists():
            values = read_reported(output)
            for row, task_id in self.rows.items():
                outcome = outcomes.get(task_id)
                if row < len(values) and outcome not in (None, "pending"):
                    values[row] = outcome
            await asyncio.to_thread(write_reported, output, values)
        tell("reports: " + self.reporter.counts.line(self.wrong))
        if self.failure is not None:
            tell(f"reporting stopped: {self.failure}")


async def live_reports(
    options: RunOptions, table: TableSource, reporter: WrongAnswers
) -> LiveReports:
    """The run's ``LiveReports``: its labels read (in a worker thread), the case rule
    from its task parameters, the user's own ``on_result`` kept."""
    assert options.label_column is not None  # resolve() checked it
    labels = await asyncio.to_thread(read_labels, table, options.label_column)
    return LiveReports(
        reporter,
        labels,
        case_sensitive=case_sensitive_run(options.task_params),
        on_result=options.on_result,
        task_type=options.task_type,
        task_params=options.task_params,
    )
