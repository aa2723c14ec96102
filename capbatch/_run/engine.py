"""One run from its options to its summary: ``execute`` wires the parts of the data path
(table, workspace, client, limiter, money, solver, batch scheduler, writer), runs them,
and turns whatever stops them into one error that names its cause without the key.

The CLI calls ``execute``; ``capbatch.run``/``arun`` wrap it; the notebook panel calls it
in a worker thread.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from capbatch._exceptions import CapbatchError, RunFailed, RunInterrupted
from capbatch._io.inputs import TableSource
from capbatch._io.keys import KeyScope
from capbatch._io.outputs import MemorySink, ResultWriter, read_results
from capbatch._io.task_fields import FieldPlan
from capbatch._io.task_rows import task_body
from capbatch._providers.client import ProviderClient, TaskService
from capbatch._providers.errors import Action, classify
from capbatch._providers.secrets import redact
from capbatch._run.batches import BatchRunner, ResultSink
from capbatch._run.callback_solver import solver_type, start_callbacks, stop_callbacks
from capbatch._run.cascade import LocalStage, close_stage, local_stage, runner_hooks
from capbatch._run.journal import Journal, note_endpoint
from capbatch._run.limits import Clock, RateLimiter
from capbatch._run.metadata import output_metadata
from capbatch._run.options import (
    ResolvedRun,
    RunOptions,
    default_journal,
    default_output,
    make_progress,
    resolve,
)
from capbatch._run.outage import OutageGate
from capbatch._run.plan import TaskKeys, table_fields
from capbatch._run.progress import Progress
from capbatch._run.remote_files import RemoteFiles, shown_output, stage_remote
from capbatch._run.signals import SignalStops
from capbatch._run.spend import SpendGuard, spent_before
from capbatch._run.spend_watch import SpendWatch
from capbatch._run.summary import RunSummary
from capbatch._run.tally import Tally, label_rule
from capbatch._run.task import TaskSolver
from capbatch._run.unknown_shapes import watch_shapes
from capbatch._run.workspace import Workspace, memory_journal_notice

if TYPE_CHECKING:
    import pandas as pd  # only a results frame asked for by run()/arun() needs pandas

    from capbatch._run.live_reports import LiveReports


@dataclass
class RunOutcome:
    summary: RunSummary
    frame: pd.DataFrame | None = None


@dataclass
class _Setup:
    """What a run is about, settled before anything is opened or sent."""

    options: RunOptions
    resolved: ResolvedRun
    table: TableSource
    output: Path | None
    journal_path: str
    #: Who answers: part of every content key (see ``KeyScope``).
    scope: KeyScope
    #: The provider's URL this run talks to, normalised for comparison.
    endpoint: str
    #: Which column fills which task field; settled before anything is sent.
    fields: FieldPlan
    notices: list[str]
    notice: Callable[[str], None]
    #: Object-store input or output, staged locally (``remote_files``); None if neither.
    remote: RemoteFiles | None = None

    def tell(self, summary: RunSummary, message: str) -> None:
        """A notice for the user (unless quiet) that the summary keeps too."""
        summary.notices.append(message)
        if not self.options.quiet:
            self.notice(message)


async def execute(source: Any, options: RunOptions, *, want_frame: bool = False) -> RunOutcome:
    """One run from start to summary. The CLI calls this; ``arun`` wraps it."""
    setup = _prepare(source, options)
    if options.dry_run:
        return await _dry_run(setup)
    resolved = setup.resolved
    service = _make_service(options, resolved)
    stops = SignalStops(setup.notice, enabled=options.handle_signals)
    try:
        # Paths checked, output and journal locked, stale temporaries gone: before any request.
        workspace = Workspace.open(setup.output, setup.journal_path, source=setup.table.path)
    except BaseException:
        stops.close()
        if options.service is None:
            await service.aclose()
        raise
    run = _Run(setup, service, workspace, stops)
    try:
        return await run.solve(want_frame)
    except BaseException as exc:
        run.abort_output()
        if isinstance(exc, asyncio.CancelledError) and stops.aborted is not None:
            # A second signal: stop at once, the journal as it stands.
            raise stops.aborted from None
        if isinstance(exc, CapbatchError):
            exc.message = redact(exc.message, resolved.key)
            exc.args = (exc.message,)
            raise
        if isinstance(exc, Exception):
            failed = RunFailed.of(exc)
            failed.message = redact(failed.message, resolved.key)
            raise failed from exc
        raise
    finally:
        stops.close()
        workspace.close()  # the journal, then the locks
        if options.service is None:
            await _close_service(service, stops)


def _prepare(source: Any, options: RunOptions) -> _Setup:
    """Options resolved, the table opened, the output and journal named, notices said."""
    resolved = resolve(options)  # before any download: a missing key stops the run first
    source, options, remote = stage_remote(source, options)
    table = TableSource(
        source,
        image_column=options.image_column,
        id_column=options.id_column,
        batch_rows=options.batch_rows,
        origin=remote.input_uri if remote is not None else None,
    )
    fields = table_fields(options.task_type, options.fields, options.task_params, table)
    notice = options.notice or (lambda _message: None)
    notices = list(resolved.notices)
    output = Path(options.output) if options.output is not None else default_output(source)
    journal_path = (
        str(options.journal) if options.journal is not None else default_journal(output, table)
    )
    if options.journal is None and output is None and journal_path != ":memory:":
        notices.append(memory_journal_notice(journal_path))
    if not options.quiet:
        for message in notices:
            notice(message)
    endpoint = (options.base_url or resolved.profile.base_url or "").strip().rstrip("/").lower()
    # Answers from another server (an emulator, a proxy) are not this one's: a different
    # URL is a different cache. The default URL adds nothing, so journals written before
    # this rule keep their keys.
    scope = KeyScope(
        resolved.profile.name, endpoint if endpoint != resolved.profile.base_url else None
    )
    return _Setup(
        options,
        resolved,
        table,
        output,
        journal_path,
        scope,
        endpoint,
        fields,
        notices,
        notice,
        remote,
    )


async def _dry_run(setup: _Setup) -> RunOutcome:
    from capbatch._run.dryrun import dry_run

    # A dry run reads an existing journal (to count cached answers) but creates none.
    path = setup.journal_path
    exists = path != ":memory:" and Path(path).exists()
    journal = Journal(path if exists else ":memory:")
    try:
        summary = await asyncio.to_thread(
            dry_run, setup.table, journal, setup.resolved, setup.options, setup.scope
        )
    finally:
        journal.close()
    return RunOutcome(summary)


def _make_service(options: RunOptions, resolved: ResolvedRun) -> TaskService:
    if options.service is not None:
        return options.service
    if resolved.profile.is_local:
        from capbatch.local import LocalService

        return LocalService()
    assert resolved.key is not None
    return ProviderClient(
        resolved.profile,
        resolved.key,
        base_url=options.base_url,
        http_client=options.http_client,
        app_id=options.app_id,
        max_connections=resolved.limits.max_in_flight,
    )


async def _close_service(service: TaskService, stops: SignalStops) -> None:
    try:
        await service.aclose()
    except asyncio.CancelledError:
        # A second signal landed while the client closed: the stop it asked for
        # (everything is already journaled), not a traceback.
        if stops.aborted is None:
            raise
        raise stops.aborted from None


class _Run:
    """One run's parts, made in the order the data flows, and what it says at the end."""

    def __init__(
        self, setup: _Setup, service: TaskService, workspace: Workspace, stops: SignalStops
    ) -> None:
        self.setup = setup
        self.service = service
        self.journal = workspace.journal
        self.stops = stops
        self.clock = Clock()
        self.limiter = RateLimiter(setup.resolved.limits.rate, clock=self.clock)
        self.writer: ResultWriter | None = None
        self.memory: MemorySink | None = None
        self.summary = RunSummary(
            provider=setup.resolved.profile.name,
            task_type=setup.options.task_type,
            output=shown_output(setup.output, setup.remote),
            journal=setup.journal_path if setup.journal_path != ":memory:" else None,
            notices=list(setup.notices),
            started_at=_now_iso(),
        )

    def abort_output(self) -> None:
        if self.writer is not None:
            self.writer.abort()

    async def balance(self) -> float | None:
        """The balance, or None when unavailable; a run-fatal answer (a bad key, a ban,
        no money) stops the run here. getBalance waits for the run's limiter like every
        other request: the provider counts it against the same rate."""
        try:
            await self.limiter.acquire()
            return await self.service.get_balance()
        except CapbatchError as exc:
            if classify(exc) is Action.FATAL:
                raise
            return None

    async def solve(self, want_frame: bool) -> RunOutcome:
        setup, summary = self.setup, self.summary
        live = await self._live_reports() if setup.options.report_wrong else None
        summary.balance_before = await self.balance()
        sink: ResultSink
        if setup.output is not None:
            sink = self.writer = ResultWriter(setup.output, setup.table.schema)
        else:
            sink = self.memory = MemorySink()
        spend = self._spend_guard()
        labels = label_rule(setup.options, setup.table.schema.names)
        tally = Tally(total=setup.table.num_rows, money=spend, labels=labels)
        solver = self._solver(spend, tally)
        cascade = local_stage(setup.options.local_first, self.journal)
        progress = make_progress(setup.options)
        runner = self._runner(sink, solver, tally, progress, live, cascade)
        self.stops.runner = runner
        progress.start(tally)
        interrupted: RunInterrupted | None = None
        try:
            await start_callbacks(solver)
            await runner.run()
        except RunInterrupted as stop:
            interrupted = stop
        finally:
            progress.close(tally)
            await stop_callbacks(solver)
            await close_stage(cascade)
            self._fill_summary(tally, spend, solver, runner, interrupted)
            summary.cascade = cascade.counts.to_dict() if cascade is not None else None
        summary.balance_after = await self.balance() if summary.balance_before is not None else None
        summary.complete = interrupted is None
        frame = self._finish_output(want_frame and interrupted is None)
        if setup.remote is not None:
            setup.remote.publish()  # an object-store output: uploaded now, whole
        if live is not None:
            tell = functools.partial(setup.tell, summary)
            await live.finish(setup.output, setup.options.drain_timeout, tell)
        if interrupted is not None:
            # The output is written (unfinished rows pending); the caller says how to resume.
            interrupted.summary = summary
            raise interrupted
        return RunOutcome(summary, frame)

    def _spend_guard(self) -> SpendGuard:
        resolved, summary = self.setup.resolved, self.summary
        spend = SpendGuard(
            resolved.limits.max_spend,
            price=resolved.price,
            spent_before=spent_before(self.journal, resolved.price),
            price_confirmed=self.setup.options.price is not None or resolved.profile.is_local,
        )
        summary.spend_before_usd = spend.spent_before
        summary.spend_cap_usd = spend.cap
        name, endpoint = resolved.profile.name, self.setup.endpoint
        here = f"{name} at {endpoint}" if endpoint else name
        if (other := note_endpoint(self.journal, here)) is not None:
            self.setup.tell(summary, other)
        return spend

    def _solver(self, spend: SpendGuard, tally: Tally) -> TaskSolver:
        setup, summary = self.setup, self.summary
        resolved, options = setup.resolved, setup.options

        async def check_balance() -> float | None:
            summary.balance_checks += 1
            return await self.balance()

        watch = SpendWatch(
            spend,
            balance_before=summary.balance_before,
            check_balance=check_balance,
            cost_in_reply=resolved.profile.cost_in_reply,
            clock=self.clock,
            notice=lambda message: setup.tell(summary, message),
        )
        return solver_type(options, resolved.key)(
            self.service,
            resolved.profile,
            self.journal,
            resolved.limits,
            self.limiter,
            spend,
            price=resolved.price,
            clock=self.clock,
            policy=options.retry,
            control=options.control,
            watch=watch,
            outage=OutageGate(self.clock, max_outage=options.outage_timeout),
            tally=tally,
        )

    async def _live_reports(self) -> LiveReports:
        """``--report-wrong``: wrong answers reported as they arrive (``live_reports``)."""
        from capbatch._run.live_reports import live_reports
        from capbatch._run.wrong_answers import WrongAnswers

        profile = self.setup.resolved.profile
        reporter = WrongAnswers(self.service, profile, self.journal, self.limiter)
        return await live_reports(self.setup.options, self.setup.table, reporter)

    def _runner(
        self,
        sink: ResultSink,
        solver: TaskSolver,
        tally: Tally,
        progress: Progress,
        live: LiveReports | None = None,
        cascade: LocalStage | None = None,
    ) -> BatchRunner:
        setup = self.setup
        options, limits = setup.options, setup.resolved.limits
        return BatchRunner(
            setup.table,
            sink,
            solver,
            self.journal,
            setup.resolved.profile,
            keys=TaskKeys(
                options.task_type, setup.fields.params, setup.scope, options.cache, setup.fields
            ),
            progress=progress,
            counters=tally,
            max_pending_jobs=max(4 * limits.max_in_flight, 64),
            max_buffered_rows=max(16 * options.batch_rows, 65_536),
            make_task=functools.partial(task_body, options.task_type, setup.fields.params),
            on_result=watch_shapes(
                live.on_result if live is not None else options.on_result,
                functools.partial(setup.tell, self.summary),
            ),
            drain_timeout=options.drain_timeout,
            retry_failed=options.retry_failed,
            **runner_hooks(cascade, solver),
        )

    def _fill_summary(
        self,
        tally: Tally,
        spend: SpendGuard,
        solver: TaskSolver,
        runner: BatchRunner,
        interrupted: RunInterrupted | None,
    ) -> None:
        summary = self.summary
        tally.fill(summary)
        solver.pacer.fill(summary)  # the first-poll delay used, and the one learned
        # Over every run of this journal: a killed run could not report its own.
        summary.possible_double_payments = self.journal.total_uncertain()
        summary.spend_usd = spend.spent
        summary.spend_cap_reached = spend.cap_reached or runner.spend_capped > 0
        summary.price_usd = spend.price
        summary.retried_failed = runner.retried_failed
        summary.kept_failed = runner.kept_failed
        summary.outages = solver.outage.outages
        summary.bad_costs = solver.bad_costs
        if interrupted is not None:
            summary.stopped_by = interrupted.error_code
        summary.finished_at = _now_iso()

    def _finish_output(self, want_frame: bool) -> pd.DataFrame | None:
        """Publish the output (only if it holds every input row, read back from disk);
        the results as a DataFrame when asked for."""
        setup, summary = self.setup, self.summary
        frame = None
        if self.writer is not None:
            self.writer.finish(
                output_metadata(summary, setup.options, setup.resolved, setup.table),
                expected_rows=setup.table.count_rows(),
            )
            if want_frame and setup.output is not None:
                frame = read_results(setup.output)
        elif self.memory is not None and want_frame:
            frame = self.memory.table(setup.table.schema).to_pandas()
        if frame is not None:
            frame.attrs["capbatch"] = summary.to_dict()
        return frame


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
