"""The Ray Data UDF: a long-lived actor that solves the batches it is given with the
core's ``BatchRunner`` and ``TaskSolver``, drawing on the cluster's budget and journal.

Its ``__call__`` is a coroutine, so Ray runs several batches of one actor at once on one
event loop (one HTTP pool, one solver, one local model), as ``capbatch run`` runs its
batches. One actor per worker process; a local-solver actor loads its model once.

When the driver's first signal stops the run (``Budget.stop``), the actor interrupts
every runner it has going, as ``capbatch run`` interrupts its one runner: nothing new is
sent, replies to requests out are awaited and journaled, and each batch still comes
back whole, its unfinished rows pending; a batch handed over later sends nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import pickle
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa

from capbatch._exceptions import CapbatchError, RunInterrupted
from capbatch._io.frame_index import result_schema
from capbatch._io.inputs import TableSource
from capbatch._io.record import RowResult, results_to_arrays
from capbatch._io.task_rows import task_body
from capbatch._providers.secrets import redact
from capbatch._ray.callback_hub import HubBox
from capbatch._ray.leases import LeasedFlights, LeasedLimiter, LeasedSpend, PacedService
from capbatch._ray.remote_journal import RemoteJournal
from capbatch._ray.settings import ROW_COLUMN, WIRE_COLUMN, WorkerSettings
from capbatch._ray.solver import ClaimingCallbackSolver, ClaimingSolver, RowTally
from capbatch._run.batches import BatchRunner
from capbatch._run.cascade import CascadeCounts, LocalStage, runner_hooks
from capbatch._run.limits import Clock, RateLimiter
from capbatch._run.outage import OutageGate
from capbatch._run.plan import TaskKeys
from capbatch._run.progress import SilentProgress
from capbatch._run.results import pending_result
from capbatch._run.spend import SpendGuard
from capbatch._run.spend_watch import SpendWatch
from capbatch._run.tally import Tally

#: Seconds between a worker's heartbeats (``budget.SILENT_AFTER`` declares it dead).
HEARTBEAT = 1.0
#: Row keys of inputs without ``ROW_COLUMN``: worker ``n`` numbers its rows from
#: ``n * ROW_BASE``, so two workers never give two rows the same key.
ROW_BASE = 1 << 40
#: Prefix of the cascade's counts among a worker's request counts (``_report``).
CASCADE = "cascade_"
_COUNTED = (
    *("requests", "creates", "polls", "rate_limited", "lost_sends"),
    *("callbacks_used", "callbacks_ignored", "fallback_polls"),  # --callback-url
)


class SolveBatches:
    """``map_batches`` callable class: input batch in, the same rows with results out."""

    def __init__(
        self,
        settings: WorkerSettings,
        budget: Any,
        journal: Any,
        callbacks: tuple[Any, str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.budget = budget
        self.journal_actor = journal
        #: ``--callback-url``: the cluster's receiver, its token and URL prefix.
        self.callbacks = callbacks
        self.worker = uuid.uuid4().hex[:12]
        self._solver: ClaimingSolver | None = None
        self._journal: RemoteJournal | None = None
        self._spend: SpendGuard | None = None
        self._flights: LeasedFlights | None = None
        self._stage: LocalStage | None = None
        self._setup_lock: asyncio.Lock | None = None
        self._heart: asyncio.Task[None] | None = None
        self._watch: asyncio.Task[None] | None = None
        #: The run's stop once the driver asked for it (``Budget.stop``).
        self.stopped: RunInterrupted | None = None
        self._runners: set[BatchRunner] = set()
        self._rows = 0
        self._row_base = 0

    async def __call__(self, batch: pa.Table) -> pa.Table:
        solver = await self._ready()
        outputs = []
        try:
            for part, first_row in self._parts(batch):
                outputs.append(await self._solve_part(solver, part, first_row))
        except CapbatchError as exc:
            # Ray gives the driver a wrapper without this error: tell the journal.
            key = self.settings.key
            message = redact(exc.message, key.secret() if key is not None else None)
            kind = type(exc)
            failure = (kind.__module__, kind.__qualname__, message, exc.error_code)
            await self.journal_actor.record_failure.remote(failure)
            raise
        assert self._journal is not None
        self._journal.flush()  # a batch's answers are in the journal before they go on
        self._report()
        return pa.concat_tables(outputs) if len(outputs) > 1 else outputs[0]

    # --- set-up, once per actor, on its event loop ---------------------------------------

    async def _ready(self) -> ClaimingSolver:
        if self._setup_lock is None:
            self._setup_lock = asyncio.Lock()
        async with self._setup_lock:
            if self._solver is None:
                self._solver = await self._build()
                # Started after the run's stop: heard before this batch sends anything.
                _, stop = await self._report()
                if stop is not None:
                    self.stop(*stop)
                loop = asyncio.get_running_loop()
                self._heart = loop.create_task(self._heartbeats())
                self._watch = loop.create_task(self._watch_stop())
        return self._solver

    async def _build(self) -> ClaimingSolver:
        import ray

        s = self.settings
        here = ray.get_runtime_context().current_actor
        index = await self.journal_actor.register.remote(self.worker, here)
        self._row_base = index * ROW_BASE
        local = s.profile.is_local
        self._journal = RemoteJournal(self.journal_actor, buffered=local)
        clock = Clock()
        limiter: RateLimiter
        spend: SpendGuard
        if local:
            # Nothing to share and nothing to pay: this worker's own limits.
            limiter, spend = RateLimiter(s.limits.rate, clock=clock), SpendGuard(None)
        else:
            limiter = LeasedLimiter(self.budget, self.worker, s.limits.rate, clock=clock)
            spend = LeasedSpend(self.budget, self.worker, cap=s.limits.max_spend, price=s.price)
        spend.price_confirmed = s.price_confirmed
        self._spend = spend
        watch = SpendWatch(
            spend,
            balance_before=None,
            check_balance=None,
            cost_in_reply=s.profile.cost_in_reply,
            clock=clock,
        )
        service = self._service()
        if isinstance(limiter, LeasedLimiter):
            service = PacedService(service, limiter)
        kind, hub = self._solver_kind()
        solver = kind(
            service,
            s.profile,
            self._journal,
            s.limits,
            limiter,
            spend,
            price=s.price,
            clock=clock,
            policy=s.retry,
            watch=watch,
            outage=OutageGate(clock, max_outage=s.outage_timeout),
            tally=Tally(),
            **hub,
        )
        solver.claims = None if local else (self.journal_actor, self.worker)
        solver.started_wall = s.started_wall
        if not local:
            # The in-flight cap is the cluster's: the gate's semaphore leases its slots.
            self._flights = LeasedFlights(self.budget, self.worker)
            solver.gate.share_in_flight(self._flights)
        self._stage = self._cascade()
        return solver

    def _solver_kind(self) -> tuple[type[ClaimingSolver], dict[str, Any]]:
        """The worker's solver class, and its callback arguments when answers come by
        callback to the cluster's receiver (``callback_hub``)."""
        if self.callbacks is None:
            return ClaimingSolver, {}
        hub, token, url = self.callbacks
        box = HubBox(hub, token, url)
        return ClaimingCallbackSolver, {"callback_url": url, "listen": "", "key": None, "box": box}

    def _local_service(self) -> Any:
        """The local solver: this worker's threads, one model each, loaded once."""
        from capbatch.local import LocalService, LocalSolver

        return LocalService(LocalSolver(workers=self.settings.local_threads))

    def _cascade(self) -> LocalStage | None:
        """``--local-first``: the cascade's local stage, journaled at the cluster's
        journal like every task (``_run.cascade``)."""
        threshold = self.settings.local_first
        if threshold is None:
            return None
        assert self._journal is not None
        counts = CascadeCounts(threshold)
        return LocalStage(self._local_service(), self._journal, threshold, counts)

    def _service(self) -> Any:
        s = self.settings
        if s.profile.is_local:
            return self._local_service()
        from capbatch._providers.client import ProviderClient

        assert s.key is not None
        return ProviderClient(
            s.profile,
            s.key.secret(),
            base_url=s.base_url,
            app_id=s.app_id,
            max_connections=s.limits.max_in_flight,
        )

    async def _heartbeats(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                share, stop = await self._report()
                if self._flights is not None:
                    self._flights.fair_share = int(share)
                if stop is not None:
                    self.stop(*stop)
            await asyncio.sleep(HEARTBEAT)

    async def _watch_stop(self) -> None:
        """Wait for the run's stop at the budget (one call, answered when it comes)."""
        with contextlib.suppress(Exception):
            self.stop(*await self.budget.until_stopped.remote())

    def stop(self, message: str, signal_number: int) -> None:
        """The driver's first signal: interrupt every runner of this actor (no new
        request leaves; replies to those out are awaited, then rows left are pending)."""
        if self.stopped is not None:
            return
        self.stopped = RunInterrupted(message, signal_number=signal_number)
        for runner in list(self._runners):
            runner.interrupt(self.stopped)
        limiter = self._solver.limiter if self._solver is not None else None
        if isinstance(limiter, LeasedLimiter):
            limiter.stop(self.stopped)  # after the gate: requests out take the next slots
        if self._solver is not None:
            self._report()  # the requests this worker has out: the driver's notice

    def _report(self) -> Any:
        """Tell both actors this worker lives; hand in money moves and request counts.
        The budget's answer (this worker's fair share of in-flight slots, the run's
        stop) is returned as a reference: awaited by the heartbeat, ignored at a
        batch's end."""
        solver = self._solver
        assert solver is not None
        limiter = solver.limiter
        successes = 0
        if isinstance(limiter, LeasedLimiter):
            successes, limiter.successes = limiter.successes, 0
        spare = 0.0
        if isinstance(self._spend, LeasedSpend):
            if solver.gate.sending == 0:
                self._spend.give_back()  # idle: spare money may serve another worker
            else:
                self._spend.flush()
            spare = self._spend.spare()
        counts = {name: int(getattr(solver.tally, name)) for name in _COUNTED}
        if self._stage is not None:
            cascade = self._stage.counts.to_dict()
            counts.update({CASCADE + k: int(v) for k, v in cascade.items() if k != "threshold"})
        self.journal_actor.heartbeat.remote(self.worker)
        return self.budget.heartbeat.remote(
            self.worker, spare, successes, counts, solver.gate.sending
        )

    # --- one batch ----------------------------------------------------------------------

    def _parts(self, batch: pa.Table) -> list[tuple[pa.Table, int]]:
        """The batch as runs of consecutive input rows, each with its first row number."""
        if ROW_COLUMN not in batch.column_names:
            first = self._row_base + self._rows
            self._rows += batch.num_rows
            return [(batch, first)]
        rows = [int(row or 0) for row in batch.column(ROW_COLUMN).to_pylist()]
        parts, start = [], 0
        for i in range(1, len(rows) + 1):
            if i == len(rows) or rows[i] != rows[i - 1] + 1:
                parts.append((batch.slice(start, i - start), int(rows[start])))
                start = i
        return parts

    async def _solve_part(self, solver: ClaimingSolver, part: pa.Table, first_row: int) -> pa.Table:
        s = self.settings
        inputs = part.drop_columns([ROW_COLUMN]) if ROW_COLUMN in part.column_names else part
        source = TableSource(
            inputs,
            image_column=s.image_column,
            id_column=s.id_column,
            batch_rows=max(1, inputs.num_rows),
            origin=s.origin,
        )
        source.base_dir = Path(s.base_dir)
        tally = RowTally()
        if self.stopped is not None:
            # Handed over after the stop: every row pending, nothing sent or read.
            results = [pending_result(s.profile.name) for _ in range(inputs.num_rows)]
        else:
            results = await self._run_part(solver, source, tally, first_row)
        if s.wire:
            wire = [
                pickle.dumps((r, tally.earlier_rows.get(i, False))) for i, r in enumerate(results)
            ]
            return part.append_column(WIRE_COLUMN, pa.array(wire, pa.binary()))
        arrays = list(inputs.columns) + results_to_arrays(results)
        return pa.Table.from_arrays(arrays, schema=result_schema(inputs.schema))

    async def _run_part(
        self, solver: ClaimingSolver, source: TableSource, tally: RowTally, first_row: int
    ) -> list[RowResult]:
        """One part through the core's runner; a result for every row, also when the
        run's stop interrupted it (the drained rows answered, the rest pending)."""
        s = self.settings
        sink = _Collect()
        assert self._journal is not None
        limits, rows = s.limits, source.num_rows or 0
        runner = BatchRunner(
            source,
            sink,
            solver,
            self._journal,
            s.profile,
            keys=TaskKeys(s.task_type, s.params, s.scope, s.cache, s.fields),
            progress=SilentProgress(),
            counters=tally,
            max_pending_jobs=max(4 * limits.max_in_flight, 64),
            max_buffered_rows=max(16 * rows, 65_536),
            make_task=functools.partial(task_body, s.task_type, s.params),
            on_result=tally.on_result,
            drain_timeout=s.drain_timeout,
            retry_failed=s.retry_failed,
            row_offset=first_row,
            started_wall=s.started_wall,
            **runner_hooks(self._stage, solver),
        )
        self._runners.add(runner)  # no await since ``stopped`` was read: none is missed
        try:
            await runner.run()
        except RunInterrupted:
            if runner.failure is not self.stopped:
                raise
        finally:
            self._runners.discard(runner)
        return sink.results


class _Collect:
    """The runner's sink for one part: the results, in row order."""

    def __init__(self) -> None:
        self.results: list[RowResult] = []

    def write(
        self, batch: pa.RecordBatch, results: list[RowResult], first_row: int | None = None
    ) -> None:
        self.results.extend(results)
