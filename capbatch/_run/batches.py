"""The run loop: stream batches in, solve their rows, write batches out in order.

Rows flow ``TableSource`` → (``plan_batch``, off the event loop) → journal look-up →
either an answer already paid for, a wait on an identical image already in flight,
or a new ``Job`` for the ``TaskSolver`` → ``RowResult`` → the batch's slot. A batch is
written as soon as all its rows are final and every batch before it was written, so
output order is input order while memory holds only a bounded window of batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import pyarrow as pa

from capbatch._exceptions import CapbatchError, RunFailed, RunInterrupted
from capbatch._io.inputs import TableSource
from capbatch._io.record import RowResult
from capbatch._io.task_rows import RowTask
from capbatch._providers.errors import Action, action_for_code
from capbatch._providers.profiles import ProviderProfile
from capbatch._run.gate import RunStopped
from capbatch._run.job import Job
from capbatch._run.journal import Journal, JournalEntry
from capbatch._run.plan import BatchPlan, TaskKeys, plan_batch
from capbatch._run.progress import Progress
from capbatch._run.results import (
    from_journal,
    input_failure,
    pending_result,
    shared_result,
    spend_cap_result,
)
from capbatch._run.retry import failed_for_good
from capbatch._run.tally import Tally
from capbatch._run.task import SpendCapReached, TaskSolver, solve_job

#: How many different images in a row, at any point of a run, must fail with the same
#: error that no retry can fix (a refused task type, parameters or method) before the
#: run stops: a setup problem fails every row alike, and each further row would be one
#: more refused request. 20 refusals cost nothing (refused tasks are not charged) and
#: are far below the error rates providers ban for; a run of 20 identical refusals of
#: different images by chance is implausible. README, "Promises"; docs/reliability.md.
SYSTEMATIC_RUN = 20


class ResultSink(Protocol):
    def write(
        self, batch: pa.RecordBatch, results: list[RowResult], first_row: int | None = None
    ) -> None: ...


class RunAborted(CapbatchError):
    """The run stopped itself: ``SYSTEMATIC_RUN`` different images in a row failed with
    the same error that no retry can fix."""

    error_code = "RUN_ABORTED"


@dataclass
class _Pending:
    """One input batch waiting for its rows' results."""

    batch: pa.RecordBatch
    results: list[RowResult | None]
    missing: int
    first_row: int


class BatchRunner:
    """Drives one run over a ``TableSource`` into a ``ResultSink``."""

    #: The current run of identical non-retryable failures: its code (its different
    #: images are ``_streak_images``); see ``_check_systematic``.
    _streak_code: str | None = None

    def __init__(
        self,
        source: TableSource,
        sink: ResultSink,
        solver: TaskSolver,
        journal: Journal,
        profile: ProviderProfile,
        *,
        keys: TaskKeys,
        progress: Progress,
        counters: Tally,
        max_pending_jobs: int,
        max_buffered_rows: int,
        make_task: Callable[[RowTask], dict[str, Any]],
        on_result: Callable[[int, RowResult], None] | None = None,
        drain_timeout: float = 30.0,
        retry_failed: bool = False,
        solve: Callable[[Job], Awaitable[RowResult]] | None = None,
        annotate: Callable[[str, RowResult], RowResult] | None = None,
        row_offset: int = 0,
        started_wall: float | None = None,
    ) -> None:
        self.source, self.sink, self.solver = source, sink, solver
        self.journal, self.profile, self.keys = journal, profile, keys
        self.progress, self.counters = progress, counters
        self.make_task, self.on_result = make_task, on_result
        # The cascade's hooks: its local stage first; its reading beside journaled answers.
        self._solve = solve or functools.partial(solve_job, solver)
        self._annotate = annotate
        self._jobs = asyncio.Semaphore(max_pending_jobs)
        self._max_buffered_rows = max_buffered_rows
        self._buffered_rows = 0
        self._room = asyncio.Event()
        self._window: deque[_Pending] = deque()
        self._tasks: set[asyncio.Task[None]] = set()
        self._settled = asyncio.Event()  # the last job finished, or the run failed
        # key -> rows waiting on the job already solving that key (the in-run cache)
        self._waiting: dict[str, list[tuple[_Pending, int, str]]] = {}
        self._streak_images: set[str] = set()  # see _streak_code
        self.failure: CapbatchError | None = None
        #: True after ``interrupt``: the output is still written, unfinished rows pending.
        self.interrupted = False
        self.drain_timeout = drain_timeout  # an interrupted run's wait for replies out
        self.retry_failed = retry_failed
        # With the cache off: how often each content key (and id) was seen.
        self._occurrences: dict[str, int] = {}
        # Keys of failed entries this run sent again (each gets one more chance a run).
        self._retried: set[str] = set()
        self._jobs_finished = 0
        self.kept_failed = 0  # rows failed for good in earlier runs, kept as they were
        self.spend_capped = 0
        # The progress bar starts at the rows earlier runs finished (``Tally.shown``).
        counters.expected_earlier = journal.counts().get("done", 0)
        # A Ray worker runs a part of the input (row keys and error rows are the whole
        # input's) in a run that started before it: an entry finished earlier is an
        # earlier run's.
        self._row_offset = row_offset
        self._started_wall = time.time() if started_wall is None else started_wall

    @property
    def retried_failed(self) -> int:
        """Rows failed in earlier runs for a passing reason, sent again by this run."""
        return self.counters.retried_failed

    # --- the run ----------------------------------------------------------------------

    async def run(self) -> None:
        first_row = 0
        # Each batch is read in a worker thread too: decoding a Parquet batch of images
        # takes tens of milliseconds, and a stalled loop sends late requests in a bunch.
        batches = iter(self.source.batches())
        unread: pa.RecordBatch | None = None
        try:
            while (batch := await asyncio.to_thread(next, batches, None)) is not None:
                if self.failure is None and self.solver.stopped is not None:
                    self._fail_run(self.solver.stopped)
                if self.failure is not None:
                    unread = batch
                    break
                plan = await asyncio.to_thread(self._plan_batch, batch, first_row)
                pending = self._append(batch, first_row)
                await self._schedule(pending, plan)
                first_row += batch.num_rows
                self._flush()
                await self._wait_for_room()
            # Jobs flush their own batches; wait for the last one (not for each one in
            # turn: asyncio.wait over every pending job costs O(jobs) per completion).
            while self._tasks and self.failure is None:
                self._settled.clear()
                await self._settled.wait()
                self._flush()
            if self.interrupted:
                await self._drain()
        finally:
            await self._cancel_jobs()
        if self.failure is None:
            self._flush()
            return
        if self.interrupted:
            # Every input row goes into the output: the unfinished ones as pending.
            self._finish_pending()
            while unread is not None:
                self._append(unread, first_row)
                first_row += unread.num_rows
                self._finish_pending()
                unread = await asyncio.to_thread(next, batches, None)
        raise self.failure

    def _append(self, batch: pa.RecordBatch, first_row: int) -> _Pending:
        pending = _Pending(batch, [None] * batch.num_rows, batch.num_rows, first_row)
        self._window.append(pending)
        self._buffered_rows += batch.num_rows
        return pending

    async def _cancel_jobs(self) -> None:
        if self._tasks:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # --- a graceful stop (SIGINT, SIGTERM) --------------------------------------------

    def interrupt(self, error: RunInterrupted) -> None:
        """Stop sending; requests already out come back and are journaled (``_drain``),
        then every row not finished is written as pending."""
        self.interrupted = True
        self._fail_run(error)

    async def _drain(self) -> None:
        """Wait, at most ``drain_timeout`` seconds, for the replies to requests in
        flight: a reply holds a task id (or an answer) already paid for."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.solver.wait_idle(), self.drain_timeout)
        # Jobs whose reply came back may still be writing it down: let them finish
        # their step (they raise RunStopped at their next request).
        for _ in range(3):
            await asyncio.sleep(0)

    def _finish_pending(self) -> None:
        """Give every row without a result a pending one, and write the window out."""
        for pending in self._window:
            for i, result in enumerate(pending.results):
                if result is None:
                    self._deliver(pending, i, pending_result(self.profile.name))
        self._flush()

    async def _wait_for_room(self) -> None:
        while self._buffered_rows > self._max_buffered_rows and self.failure is None:
            self._room.clear()
            await self._room.wait()

    # --- planning (runs in a worker thread: file reads, base64, hashing) -------------

    def _plan_batch(self, batch: pa.RecordBatch, first_row: int) -> BatchPlan:
        return plan_batch(
            batch,
            first_row + self._row_offset,
            self.source,
            self.profile,
            self.keys,
            occurrences=self._occurrences,
        )

    # --- scheduling -------------------------------------------------------------------

    async def _schedule(self, pending: _Pending, plan: BatchPlan) -> None:
        known = self.journal.get_many(k for k in plan.keys if k is not None)
        finished = self._jobs_finished
        for i, key in enumerate(plan.keys):
            if self.failure is not None:
                return
            row_key = plan.row_keys[i]
            if key is None:
                error = plan.errors[i]
                self._deliver(pending, i, input_failure(error, self.profile.name))
                continue
            if key in self._waiting:
                self._waiting[key].append((pending, i, row_key))
                continue
            entry = known.get(key)
            if self._jobs_finished != finished and (entry is None or not entry.done):
                # A job of this run may have finished this key since ``known`` was read
                # (a job forgets its waiting rows when it ends): read it again, or an
                # identical image later in the batch would be sent and paid again.
                entry = self.journal.get_many([key]).get(key)
            if entry is not None and entry.done:
                if self._keep(key, entry):
                    result = from_journal(entry, row_key)
                    if self._annotate is not None:
                        result = self._annotate(key, result)
                    self._deliver(pending, i, result, earlier=self._by_earlier_run(entry))
                    continue
                # It failed for a passing reason (or --retry-failed): solve it again.
                self._retried.add(key)
                self.counters.retried_failed += 1
                entry = None
            self._waiting[key] = []
            job = Job(
                key=key,
                row_key=row_key,
                task=self.make_task(plan.tasks[i]),
                resumed=entry,
            )
            await self._jobs.acquire()
            task = asyncio.create_task(self._run_job(job, pending, i))
            self._tasks.add(task)
            task.add_done_callback(self._job_done)

    def _by_earlier_run(self, entry: JournalEntry) -> bool:
        """Whether an earlier run finished ``entry`` (not a job of this one, whose answer
        a later row with the same image found in the journal)."""
        finished = entry.result.finished_at
        return finished is None or finished < self._started_wall

    def _keep(self, key: str, entry: JournalEntry) -> bool:
        """Whether a final journal entry stands as the row's result (else: solve again)."""
        if entry.result.status == "solved" or key in self._retried:
            return True  # answered, or already given its second chance in this run
        if not self.retry_failed and failed_for_good(entry.result.error_code, self.profile):
            self.kept_failed += 1
            return True
        return False

    async def _run_job(self, job: Job, pending: _Pending, index: int) -> None:
        row = pending.first_row + index
        try:
            try:
                result = await self._solve(job)
            except SpendCapReached:
                self.spend_capped += 1
                result = spend_cap_result(self.profile, self.solver.spend.cap)
            except RunStopped as stopped:
                self._fail_run(stopped.error)
                return
            except CapbatchError as error:
                self._fail_run(error)
                return
            except Exception as exc:
                # Anything else is a fault (a bug, the machine): stop the whole run, or the
                # row would vanish from the output while the run looks finished.
                self._fail_run(RunFailed.of(exc, row=row))
                return
        finally:
            self._jobs.release()
            self._jobs_finished += 1
        try:
            self._deliver(pending, index, result)
            for other, j, row_key in self._waiting.pop(job.key, []):
                self._deliver(other, j, shared_result(result, row_key, job.row_key))
            self._check_systematic(job, result)
            self._flush()
        except CapbatchError as error:
            self._fail_run(error)
        except Exception as exc:
            self._fail_run(RunFailed.of(exc, row=row))

    def _job_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not self._tasks:
            self._settled.set()

    def _fail_run(self, error: CapbatchError) -> None:
        if self.failure is None:
            self.failure = error
            self.solver.stop(error)
        self._room.set()
        self._settled.set()

    def _check_systematic(self, job: Job, result: RowResult) -> None:
        """Stop when ``SYSTEMATIC_RUN`` different images in a row fail with the same
        error that no retry can fix (RECORD), at any point of the run. An answer, or
        any other outcome, in between starts the count again; answers reused from the
        journal say nothing about the provider now and count for nothing."""
        if result.from_cache:
            return
        code = result.error_code
        if (
            result.status != "failed"
            or code is None
            or action_for_code(code, self.profile) is not Action.RECORD
        ):
            self._streak_code, self._streak_images = None, set()
            return
        if code != self._streak_code:
            self._streak_code, self._streak_images = code, set()
        # With --no-cache one image can be several jobs: the image is the key's head.
        self._streak_images.add(job.key.split(":", 1)[0])
        if len(self._streak_images) < SYSTEMATIC_RUN:
            return
        message = result.error_message or code
        self._fail_run(
            RunAborted(
                f"{SYSTEMATIC_RUN} different images in a row failed the same way ({message}): "
                "a setup problem (task type, parameters, provider or account), not the "
                "images; stopped instead of sending the rest of the table (once it is "
                "fixed, --retry-failed sends these rows again)"
            )
        )

    # --- results and output -----------------------------------------------------------

    def _deliver(
        self, pending: _Pending, index: int, result: RowResult, *, earlier: bool = False
    ) -> None:
        if pending.results[index] is not None:
            return
        pending.results[index] = result
        pending.missing -= 1
        self.counters.add(result, earlier=earlier, label=self._label(pending, index))
        if self.on_result is not None:
            self.on_result(pending.first_row + index, result)
        self.progress.update(self.counters, result)

    def _label(self, pending: _Pending, index: int) -> object:
        """The row's label as text, when the run counts accuracy (``Tally.labels``)."""
        rule = self.counters.labels
        if rule is None:
            return None
        value = pending.batch.column(rule.column)[index].as_py()
        return value if value is None or isinstance(value, str) else str(value)

    def _flush(self) -> None:
        """Write every complete batch at the head of the window, in input order."""
        while self._window and self._window[0].missing == 0:
            pending = self._window.popleft()
            results = [r for r in pending.results if r is not None]
            # The first row's number lets the writer prove order and that none is missing.
            self.sink.write(pending.batch, results, first_row=pending.first_row)
            self._buffered_rows -= pending.batch.num_rows
            self._room.set()
