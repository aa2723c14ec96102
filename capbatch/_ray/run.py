"""``capbatch run INPUT --engine ray``: the same run as ``engine.execute``, its batches
solved by Ray workers, its output written by the driver.

The driver prepares the run exactly as ``capbatch run`` does (``engine._prepare``: the
options resolved, the input opened, the output and journal named), opens the journal
in an actor on its own node, starts the budget, streams the input through the workers
and writes each result batch, in input order, with the core's ``ResultWriter``. The
summary, the output's metadata, the exit statuses and the journal are the core's, so
either engine resumes the other's run.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import pickle
import time
from pathlib import Path
from typing import Any

import pyarrow as pa

from capbatch._exceptions import CapbatchError, ConfigError, RunFailed
from capbatch._io.outputs import ResultWriter
from capbatch._io.record import RowResult
from capbatch._providers.errors import Action, classify
from capbatch._providers.secrets import redact
from capbatch._ray.driver_reports import DriverReports
from capbatch._ray.pipeline import (
    DEFAULT_BATCH_ROWS,
    Actors,
    solve_stage,
    start_actors,
    unwrap,
    worker_failure,
)
from capbatch._ray.settings import ROW_COLUMN, WIRE_COLUMN, ShippedKey, WorkerSettings
from capbatch._ray.stops import DriverStops
from capbatch._ray.worker import CASCADE
from capbatch._run import engine
from capbatch._run.journal import note_endpoint
from capbatch._run.metadata import output_metadata
from capbatch._run.options import RunOptions, make_progress
from capbatch._run.remote_files import shown_output
from capbatch._run.spend import SpendGuard
from capbatch._run.summary import RunSummary
from capbatch._run.tally import SPEND_CAP_REACHED, Tally, label_rule


def refuse_unsupported(options: RunOptions) -> None:
    """Options the Ray engine does not carry to its workers: refused before anything
    is sent, rather than ignored."""
    refused = {
        "control": "control",
        "service": "service",
        "http_client": "http_client",
    }
    for name, flag in refused.items():
        if getattr(options, name, None):
            raise ConfigError(f"{flag} is not supported with the Ray engine (--engine ray)")


def settings_for(setup: Any, *, wire: bool) -> WorkerSettings:
    """The workers' settings from a prepared run (``engine._prepare``)."""
    options, resolved, table = setup.options, setup.resolved, setup.table
    if not options.cache and table.id_column is None:
        raise ConfigError(
            "--no-cache with the Ray engine needs an id column (--id-column): rows are "
            "told apart by their id, not by their position among the workers"
        )
    return WorkerSettings(
        profile=resolved.profile,
        key=ShippedKey.of(resolved.key),
        base_url=options.base_url,
        app_id=options.app_id,
        limits=resolved.limits,
        price=resolved.price,
        price_confirmed=options.price is not None or resolved.profile.is_local,
        task_type=options.task_type,
        fields=setup.fields,
        scope=setup.scope,
        cache=options.cache,
        image_column=table.image_column,
        id_column=table.id_column,
        base_dir=str(table.base_dir),
        origin=table.origin,
        local_first=options.local_first,
        callback_url=options.callback_url,
        callback_listen=options.callback_listen,
        retry=options.retry,
        outage_timeout=options.outage_timeout,
        drain_timeout=options.drain_timeout,
        retry_failed=options.retry_failed,
        wire=wire,
        started_wall=time.time(),
    )


def connect(address: str | None) -> bool:
    """Join the cluster at ``address`` (or the one ``RAY_ADDRESS`` names), else start a
    local one; True when this call started Ray (and so must shut it down)."""
    import ray

    if ray.is_initialized():
        return False
    ray.init(
        address=address,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.ERROR,
    )
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # capbatch's own bar and summary say it
    context.print_on_execution_start = False
    # capbatch says what stopped a run in one line of its own (``command_errors``).
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    return True


def execute_on_ray(
    source: Path | str, options: RunOptions, *, address: str | None, workers: int | None = None
) -> engine.RunOutcome:
    """One ``capbatch run`` on Ray, from its options to its summary."""
    if options.dry_run:
        return asyncio.run(engine.execute(source, options))  # sends nothing: no cluster
    refuse_unsupported(options)
    setup = engine._prepare(source, options)
    settings = settings_for(setup, wire=True)
    drain = options.drain_timeout
    stops = DriverStops(setup.notice, enabled=options.handle_signals, drain_timeout=drain)
    started = connect(address)
    try:
        stops.install()  # after ray.init, which puts in a SIGTERM handler of its own
        outcome = _RayRun(setup, settings, stops).run(workers)
        stops.raise_if_interrupted(outcome.summary)  # the output is written: exit 130
        return outcome
    except BaseException as exc:
        if stops.aborted is not None:  # a second signal: stopped at once
            raise stops.aborted from None
        error = unwrap(exc)
        if isinstance(error, CapbatchError):
            error.message = redact(error.message, setup.resolved.key)
            error.args = (error.message,)
            raise error from None
        if isinstance(error, Exception):
            failed = RunFailed.of(error)
            failed.message = redact(failed.message, setup.resolved.key)
            raise failed from None
        raise
    finally:
        stops.close()
        if started:
            import ray

            ray.shutdown()


class _RayRun:
    """The driver's part of one run: actors, the stream of results, the summary."""

    def __init__(self, setup: Any, settings: WorkerSettings, stops: DriverStops) -> None:
        self.setup = setup
        self.settings = settings
        self.stops = stops
        #: ``--report-wrong``: the driver's reports of wrong answers (``driver_reports``).
        self.reports: DriverReports | None = None
        resolved = setup.resolved
        self.summary = RunSummary(
            provider=resolved.profile.name,
            task_type=setup.options.task_type,
            output=shown_output(setup.output, setup.remote),
            journal=setup.journal_path if setup.journal_path != ":memory:" else None,
            notices=list(setup.notices),
            started_at=engine._now_iso(),
        )

    def run(self, workers: int | None) -> engine.RunOutcome:
        setup, summary = self.setup, self.summary
        table = setup.table
        actors, spent_before = start_actors(
            self.settings,
            output=str(setup.output) if setup.output is not None else None,
            journal=setup.journal_path,
            source=str(table.path) if table.path is not None else None,
        )
        try:
            summary.spend_before_usd = spent_before
            summary.spend_cap_usd = setup.resolved.limits.max_spend
            name, endpoint = setup.resolved.profile.name, setup.endpoint
            here = f"{name} at {endpoint}" if endpoint else name
            if (other := note_endpoint(actors.remote, here)) is not None:
                setup.tell(summary, other)
            summary.balance_before = self._balance(actors.budget)
            if setup.options.report_wrong:
                self.reports = DriverReports(setup, actors.budget, actors.remote)
            assert setup.output is not None  # a file input always has an output path
            writer = ResultWriter(setup.output, table.schema)
            with writer:
                try:
                    tally = self._stream(actors, writer, workers)
                except Exception:
                    failure = worker_failure(actors)
                    if failure is None:
                        raise
                    raise failure from None
                self._fill(tally, actors)
                if summary.balance_before is not None:
                    summary.balance_after = self._balance(actors.budget)
                writer.finish(
                    output_metadata(summary, setup.options, setup.resolved, table),
                    expected_rows=table.count_rows(),
                )
            if self.reports is not None:
                self.reports.finish(setup.output, functools.partial(setup.tell, summary))
            if setup.remote is not None:
                setup.remote.publish()  # an object-store output: uploaded now, whole
            return engine.RunOutcome(summary)
        finally:
            if self.reports is not None:
                self.reports.close()
            actors.close()

    def _dataset(self) -> Any:
        """The input as a Ray dataset, each row carrying its input position."""
        import ray

        tables, first = [], 0
        # Blocks of at most a worker's batch, at least eight per worker on small inputs:
        # they stream, and spread over the workers.
        rows = self.setup.table.num_rows or DEFAULT_BATCH_ROWS * 16
        block = max(4, min(DEFAULT_BATCH_ROWS, -(-rows // 16)))
        for batch in self.setup.table.batches():
            for start in range(0, batch.num_rows, block):
                part = pa.Table.from_batches([batch.slice(start, block)])
                rows = pa.array(range(first, first + part.num_rows), pa.int64())
                tables.append(part.append_column(ROW_COLUMN, rows))
                first += part.num_rows
        if not tables:
            return ray.data.from_arrow(self.setup.table.schema.empty_table())
        return ray.data.from_arrow(list[pa.Table | bytes](tables))

    def _stream(self, actors: Actors, writer: ResultWriter, workers: int | None) -> Tally:
        """Every result batch, in input order, into the writer, the tally and the bar."""
        import ray

        setup = self.setup
        options, table = setup.options, setup.table
        tally = Tally(
            total=table.num_rows,
            labels=label_rule(options, table.schema.names),
        )
        tally.expected_earlier = actors.remote.counts().get("done", 0)
        progress = make_progress(options)
        progress.start(tally)
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True  # the output is in input order
        stage = solve_stage(
            self._dataset(), self.settings, actors, workers=workers, batch_rows=None, reads=False
        )
        names = table.schema.names
        self.stops.streaming(actors.budget)  # a first signal now stops the cluster
        try:
            for batch in stage.iter_batches(batch_format="pyarrow", batch_size=None):
                self._write(batch, names, writer, tally, progress)
        finally:
            self.stops.ending()
            progress.close(tally)
        self.stops.mark(self.summary)  # after a stop: incomplete, rows pending
        return tally

    def _write(
        self, batch: pa.Table, names: list[str], writer: ResultWriter, tally: Tally, progress: Any
    ) -> None:
        wired = [pickle.loads(b or b"") for b in batch.column(WIRE_COLUMN).to_pylist()]  # noqa: S301
        results: list[RowResult] = [result for result, _ in wired]
        inputs = batch.select(names).combine_chunks()
        first_row = int(batch.column(ROW_COLUMN)[0].as_py()) if batch.num_rows else None
        for record in inputs.to_batches() or [pa.RecordBatch.from_pylist([], inputs.schema)]:
            count = record.num_rows
            writer.write(record, results[:count], first_row=first_row)
            first_row = None if first_row is None else first_row + count
            results = results[count:]
        labels = tally.labels
        label_values = inputs.column(labels.column).to_pylist() if labels else [None] * len(wired)
        rows = batch.column(ROW_COLUMN).to_pylist()
        for (result, earlier), label, row in zip(wired, label_values, rows, strict=True):
            text = label if label is None or isinstance(label, str) else str(label)
            tally.add(result, earlier=earlier, label=text)
            progress.update(tally, result)
            if self.reports is not None:
                self.reports.on_result(int(row or 0), result)

    def _fill(self, tally: Tally, actors: Actors) -> None:
        """The summary from the tally, the budget's figures and the journal."""
        import ray

        figures: dict[str, Any] = ray.get(actors.budget.snapshot.remote())
        counts = dict(figures["counts"])
        cascade = {n.removeprefix(CASCADE): counts.pop(n) for n in list(counts) if CASCADE in n}
        if actors.callbacks is not None:  # the receiver's counts, added to the workers'
            for name, value in ray.get(actors.callbacks[0].stop.remote()).items():
                counts[name] = counts.get(name, 0) + value
        for name, value in counts.items():
            setattr(tally, name, value)
        threshold = self.setup.options.local_first
        if threshold is not None:
            self.summary.cascade = {"threshold": threshold, **cascade}
        money = SpendGuard(
            figures["cap"],
            price=figures["price"],
            spent_before=figures["spent_before"],
            spent=figures["spent"],
            uncertain=figures["uncertain"],
            cap_reached=figures["cap_reached"],
        )
        tally.money = money
        summary = self.summary
        tally.fill(summary)
        summary.possible_double_payments = actors.remote.total_uncertain()
        summary.spend_usd = money.spent
        capped_rows = tally.failed_by_code.get(SPEND_CAP_REACHED, 0)
        summary.spend_cap_reached = money.cap_reached or capped_rows > 0
        summary.price_usd = money.price
        summary.finished_at = engine._now_iso()

    def _balance(self, budget: Any) -> float | None:
        """The account's balance from the driver (None for the local solver, or when the
        provider does not say); a run-fatal answer stops the run here, as in the core.
        The request takes a slot of the cluster's rate like every other."""
        import ray

        setup = self.setup
        if setup.resolved.profile.is_local:
            return None
        remote_now, slots = ray.get(budget.take_slots.remote("driver", 1))
        time.sleep(max(0.0, slots[0] - remote_now))

        async def ask() -> float | None:
            service = engine._make_service(setup.options, setup.resolved)
            try:
                return await service.get_balance()
            except CapbatchError as exc:
                if classify(exc) is Action.FATAL:
                    raise
                return None
            finally:
                await service.aclose()

        return asyncio.run(ask())
