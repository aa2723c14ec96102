"""The public run API: ``run``, ``arun`` and the CLI's ``execute``; options resolved once.

``arun`` is the engine. ``run`` wraps it for synchronous callers and also works inside
Jupyter's running event loop, by running a private loop in a worker thread (no global
``nest_asyncio`` patching).
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import json
import math
import os
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pyarrow as pa

from ._client import ProviderClient, TaskService
from ._control import RunControl
from ._exceptions import (
    CapbatchError,
    ConfigError,
    OutputError,
    RunFailed,
    RunInterrupted,
)
from ._inputs import TableSource
from ._journal import Journal
from ._limits import Clock, Limits, RateLimiter
from ._outage import DEFAULT_MAX_OUTAGE, OutageGate
from ._outputs import ResultWriter, RowResult, output_schema, read_results, results_to_arrays
from ._progress import CallbackProgress, Progress, SilentProgress, TqdmProgress
from ._protocol import Action, classify
from ._providers import CAPSOLVER, ProviderProfile, check_base_url, get_profile
from ._runner import BatchRunner, ResultSink
from ._scheduler import RetryPolicy, TaskSolver
from ._secrets import Secret, as_secret, load_key, redact
from ._spend import SpendGuard, check_money
from ._spend_watch import SpendWatch
from ._summary import RunSummary
from ._tally import Tally
from ._version import __version__
from ._workspace import Workspace, memory_journal, memory_journal_notice

ProgressOption = bool | Progress | Callable[[Tally, RowResult | None], None]


@dataclass
class RunOptions:
    """Every option of a run. ``run(source, **options)`` takes these as keywords."""

    output: str | os.PathLike[str] | None = None
    provider: str | None = None
    base_url: str | None = None
    api_key: str | Secret | None = field(default=None, repr=False)
    api_key_file: str | os.PathLike[str] | None = None
    image_column: str | None = None
    id_column: str | None = None
    task_type: str = "ImageToTextTask"
    task_params: Mapping[str, Any] = field(default_factory=dict)
    rate: float | None = None
    max_in_flight: int | None = None
    max_attempts: int = 5
    max_spend: float | None = None
    price: float | None = None
    app_id: str | None = None
    cache: bool = True
    dry_run: bool = False
    quiet: bool = False
    progress: ProgressOption = True
    journal: str | os.PathLike[str] | None = None
    http_client: httpx.AsyncClient | None = field(default=None, repr=False)
    service: TaskService | None = field(default=None, repr=False)
    batch_rows: int = 1024
    retry: RetryPolicy | None = None
    notice: Callable[[str], None] | None = field(default=None, repr=False)
    #: Pause/resume/stop switches (the notebook panel's buttons).
    control: RunControl | None = field(default=None, repr=False)
    #: Called with (0-based input row number, result) as each row becomes final.
    on_result: Callable[[int, RowResult], None] | None = field(default=None, repr=False)
    #: Stop gracefully on SIGINT/SIGTERM (the CLI sets it; only in the main thread).
    handle_signals: bool = False
    #: Seconds a stopped run waits for replies to requests in flight.
    drain_timeout: float = 30.0
    #: Seconds the provider may stay unreachable before the run stops (see ``_outage``).
    outage_timeout: float = DEFAULT_MAX_OUTAGE
    #: Send again rows that failed for good in earlier runs (unsolvable, refused).
    retry_failed: bool = False

    @classmethod
    def from_kwargs(cls, options: Mapping[str, Any]) -> RunOptions:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigError(f"unknown run option(s): {', '.join(unknown)}")
        return cls(**options)


@dataclass
class ResolvedRun:
    profile: ProviderProfile
    key: Secret | None
    limits: Limits
    price: float
    notices: list[str]


def resolve(options: RunOptions) -> ResolvedRun:
    """Provider, key, limits and price from the options, checked before any request."""
    notices: list[str] = []
    explicit_key = as_secret(options.api_key)
    if options.provider is None and options.service is None:
        key = explicit_key or load_key(env_var=CAPSOLVER.key_env_var, key_file=options.api_key_file)
        if key or options.base_url:
            profile = CAPSOLVER
        else:
            profile = get_profile("local")
            notices.append(
                "no provider given and no CAPSOLVER_API_KEY set: "
                "solving locally with ddddocr (free, offline)"
            )
    else:
        profile = get_profile(options.provider or "capsolver")
        key = explicit_key or load_key(env_var=profile.key_env_var, key_file=options.api_key_file)
    if not profile.is_local and options.service is None and not key:
        raise ConfigError(
            f"no API key for {profile.name}: set {profile.key_env_var} or pass --api-key-file"
        )
    limits = Limits(
        rate=options.rate if options.rate is not None else profile.default_rate,
        max_in_flight=options.max_in_flight or default_in_flight(profile),
        max_attempts=options.max_attempts,
        max_spend=options.max_spend,
    )
    try:
        check_money("--max-spend", options.max_spend)
        check_money("--price", options.price)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    price = options.price if options.price is not None else profile.price_for(options.task_type)
    if options.max_spend is not None and price <= 0 and not profile.is_local:
        # A cap counted at a price of 0 never stops anything.
        raise ConfigError(
            f"--max-spend needs the price of one {options.task_type} at {profile.name}, "
            "and capbatch does not know it: pass --price USD (what the provider charges "
            "per task)"
        )
    if options.base_url is not None:
        check_base_url(options.base_url)
    if not options.outage_timeout > 0 or not math.isfinite(options.outage_timeout):
        raise ConfigError(
            f"--outage-timeout must be a number of seconds above 0, not {options.outage_timeout}"
        )
    if options.task_type != "ImageToTextTask" and not options.task_params and profile.is_local:
        raise ConfigError("the local solver only answers ImageToTextTask")
    return ResolvedRun(profile, key, limits, price, notices)


def default_in_flight(profile: ProviderProfile) -> int:
    if profile.is_local:
        return 2 * (os.cpu_count() or 1)
    return profile.default_max_in_flight


def default_output(source: object) -> Path | None:
    """``<input stem>.results.parquet`` beside a file input; None for in-memory input."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        return path.with_name(f"{path.stem}.results.parquet")
    return None


def default_journal(output: Path | None, table: TableSource | None = None) -> str:
    """``<output stem>.journal.sqlite`` beside the output; without an output, a journal
    in the user cache folder named by the table's content (``_workspace.memory_journal``)
    so that a crashed ``run(df)`` resumes; ``:memory:`` only when no table is given."""
    if output is None:
        return ":memory:" if table is None else str(memory_journal(table))
    stem = output.name[: -len(output.suffix)] if output.suffix else output.name
    return str(output.with_name(f"{stem}.journal.sqlite"))


def _make_service(options: RunOptions, resolved: ResolvedRun) -> TaskService:
    if options.service is not None:
        return options.service
    if resolved.profile.is_local:
        from .local import LocalService

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


def _make_progress(options: RunOptions) -> Progress:
    choice = options.progress
    if options.quiet or choice is False:
        return SilentProgress()
    if choice is True:
        return TqdmProgress()
    if callable(choice) and not hasattr(choice, "update"):
        return CallbackProgress(choice)
    return choice  # type: ignore[return-value]


class MemorySink:
    """Collects result batches in memory, for in-memory inputs without an output path."""

    def __init__(self) -> None:
        self.batches: list[pa.RecordBatch] = []
        self.rows = 0

    def write(
        self, batch: pa.RecordBatch, results: list[RowResult], first_row: int | None = None
    ) -> None:
        if first_row is not None and first_row != self.rows:  # as ResultWriter.write
            raise OutputError(
                f"the results got a batch starting at row {first_row} after {self.rows} rows"
            )
        self.rows += batch.num_rows
        schema = output_schema(batch.schema)
        arrays = list(batch.columns) + results_to_arrays(results)
        self.batches.append(pa.RecordBatch.from_arrays(arrays, schema=schema))

    def table(self, input_schema: pa.Schema) -> pa.Table:
        return pa.Table.from_batches(self.batches, schema=output_schema(input_schema))


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


async def _balance(service: TaskService, limiter: RateLimiter) -> float | None:
    """The balance, or None when unavailable; a run-fatal answer (a bad key, a ban, no
    money) stops the run here.

    getBalance waits for the run's limiter like every other request: the provider
    counts it against the same rate."""
    try:
        await limiter.acquire()
        return await service.get_balance()
    except CapbatchError as exc:
        if classify(exc) is Action.FATAL:
            raise
        return None


@dataclass
class RunOutcome:
    summary: RunSummary
    frame: pd.DataFrame | None = None


async def execute(source: Any, options: RunOptions, *, want_frame: bool = False) -> RunOutcome:
    """One run from start to summary. The CLI calls this; ``arun`` wraps it."""
    resolved = resolve(options)
    table = TableSource(
        source,
        image_column=options.image_column,
        id_column=options.id_column,
        batch_rows=options.batch_rows,
    )
    notice = options.notice or (lambda _message: None)
    for message in resolved.notices:
        if not options.quiet:
            notice(message)
    output = Path(options.output) if options.output is not None else default_output(source)
    journal_path = (
        str(options.journal) if options.journal is not None else default_journal(output, table)
    )
    if options.journal is None and output is None and journal_path != ":memory:":
        resolved.notices.append(memory_journal_notice(journal_path))
        if not options.quiet:
            notice(resolved.notices[-1])
    task_params = dict(options.task_params)
    cache_params = {**task_params, "_provider": resolved.profile.name}
    endpoint = _endpoint(options, resolved.profile)
    if endpoint != resolved.profile.base_url:
        # Answers from another server (an emulator, a proxy) are not this one's: a
        # different URL is a different cache. The default URL adds nothing, so journals
        # written before this rule keep their keys.
        cache_params["_base_url"] = endpoint

    if options.dry_run:
        from ._dryrun import dry_run

        # A dry run reads an existing journal (to count cached answers) but creates none.
        exists = journal_path != ":memory:" and Path(journal_path).exists()
        journal = Journal(journal_path if exists else ":memory:")
        try:
            summary = await asyncio.to_thread(
                dry_run, table, journal, resolved, options, cache_params
            )
        finally:
            journal.close()
        return RunOutcome(summary)

    summary = RunSummary(
        provider=resolved.profile.name,
        task_type=options.task_type,
        output=str(output) if output else None,
        journal=journal_path if journal_path != ":memory:" else None,
        notices=list(resolved.notices),
        started_at=_now_iso(),
    )
    service = _make_service(options, resolved)
    stops = _SignalStops(notice, enabled=options.handle_signals)
    interrupted: RunInterrupted | None = None
    try:
        # Paths checked, output and journal locked, stale temporaries gone: before any request.
        workspace = Workspace.open(output, journal_path)
    except BaseException:
        stops.close()
        if options.service is None:
            await service.aclose()
        raise
    journal = workspace.journal
    writer: ResultWriter | None = None
    memory: MemorySink | None = None
    clock = Clock()
    limiter = RateLimiter(resolved.limits.rate, clock=clock)
    try:
        summary.balance_before = await _balance(service, limiter)
        sink: ResultSink
        if output is not None:
            sink = writer = ResultWriter(output, table.schema)
        else:
            sink = memory = MemorySink()
        tally = Tally(total=table.num_rows)
        progress = _make_progress(options)
        spend = SpendGuard(
            resolved.limits.max_spend,
            price=resolved.price,
            spent_before=_spent_before(journal, resolved.price),
            price_confirmed=options.price is not None or resolved.profile.is_local,
        )
        summary.spend_before_usd = spend.spent_before
        here = f"{resolved.profile.name} at {endpoint}" if endpoint else resolved.profile.name
        if (other := _note_endpoint(journal, here)) is not None:
            _tell(summary, notice, other, quiet=options.quiet)
        summary.spend_cap_usd = spend.cap

        async def check_balance() -> float | None:
            summary.balance_checks += 1
            return await _balance(service, limiter)

        watch = SpendWatch(
            spend,
            balance_before=summary.balance_before,
            check_balance=check_balance,
            cost_in_reply=resolved.profile.cost_in_reply,
            clock=clock,
            notice=lambda message: _tell(summary, notice, message, quiet=options.quiet),
        )
        solver = TaskSolver(
            service,
            resolved.profile,
            journal,
            resolved.limits,
            limiter,
            spend,
            price=resolved.price,
            clock=clock,
            policy=options.retry,
            control=options.control,
            watch=watch,
            outage=OutageGate(clock, max_outage=options.outage_timeout),
            tally=tally,
        )
        task_type = options.task_type

        def make_task(image: bytes) -> dict[str, Any]:
            task: dict[str, Any] = {"type": task_type, **task_params}
            task["body"] = base64.b64encode(image).decode("ascii")
            return task

        runner = BatchRunner(
            table,
            sink,
            solver,
            journal,
            resolved.profile,
            task_type=task_type,
            task_params=cache_params,
            cache=options.cache,
            progress=progress,
            counters=tally,
            max_pending_jobs=max(4 * resolved.limits.max_in_flight, 64),
            max_buffered_rows=max(16 * options.batch_rows, 65_536),
            make_task=make_task,
            on_result=options.on_result,
            drain_timeout=options.drain_timeout,
            retry_failed=options.retry_failed,
        )
        stops.runner = runner
        progress.start(tally)
        try:
            await runner.run()
        except RunInterrupted as stop:
            interrupted = stop
        finally:
            progress.close(tally)
            tally.fill(summary)
            if solver.pacer.first_polls:
                summary.first_poll_s = round(solver.pacer.first_delay, 3)
            # Over every run of this journal: a killed run could not report its own.
            summary.possible_double_payments = journal.total_uncertain()
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
        summary.balance_after = (
            await _balance(service, limiter) if summary.balance_before is not None else None
        )
        summary.complete = interrupted is None
        frame = None
        if writer is not None:
            # Published only if it holds every input row, read back from disk.
            writer.finish(
                _metadata(summary, options, resolved, table), expected_rows=table.count_rows()
            )
            if want_frame and output is not None and interrupted is None:
                frame = read_results(output)
        elif memory is not None and want_frame:
            frame = memory.table(table.schema).to_pandas()
        if frame is not None:
            frame.attrs["capbatch"] = summary.to_dict()
        if interrupted is not None:
            # The output is written (unfinished rows pending); the caller says how to resume.
            interrupted.summary = summary
            raise interrupted
        return RunOutcome(summary, frame)
    except BaseException as exc:
        if writer is not None:
            writer.abort()
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
            try:
                await service.aclose()
            except asyncio.CancelledError:
                # A second signal landed while the client closed: the stop it asked for
                # (everything is already journaled), not a traceback.
                if stops.aborted is None:
                    raise
                raise stops.aborted from None


def _endpoint(options: RunOptions, profile: ProviderProfile) -> str:
    """The provider's URL this run talks to, normalised for comparison."""
    return (options.base_url or profile.base_url or "").strip().rstrip("/").lower()


#: Journal meta key: every provider and URL that wrote answers into the journal.
_ENDPOINTS = "endpoints"


def _note_endpoint(journal: Journal, here: str) -> str | None:
    """Record ``here`` in the journal; a notice when other endpoints wrote to it before."""
    try:
        seen = [str(e) for e in json.loads(journal.get_meta(_ENDPOINTS) or "[]")]
    except ValueError:
        seen = []
    if here not in seen:
        journal.set_meta(_ENDPOINTS, json.dumps([*seen, here]))
    others = [e for e in seen if e != here]
    if not others:
        return None
    return (
        f"the journal also holds answers from {', '.join(others)}; they are not reused "
        f"for {here}"
    )


def _spent_before(journal: Journal, price: float) -> float:
    """What earlier runs of this journal spent: charged tasks, plus, at today's price,
    sends whose outcome is unknown and tasks a stopped run left unfinished (each may
    have been charged; a job that picks one up moves its price out of here)."""
    states = journal.counts()
    unfinished = states.get("intent", 0) + states.get("created", 0)
    return journal.total_spent() + (journal.total_uncertain() + unfinished) * price


def _tell(summary: RunSummary, notice: Callable[[str], None], message: str, *, quiet: bool) -> None:
    summary.notices.append(message)
    if not quiet:
        notice(message)


class _SignalStops:
    """SIGINT and SIGTERM during a run (the CLI's): the first stops the run gracefully
    (no new sends; replies to requests in flight are awaited and journaled; the output
    is written with the unfinished rows pending), a second aborts at once."""

    def __init__(self, notice: Callable[[str], None], *, enabled: bool) -> None:
        self.runner: BatchRunner | None = None
        self.aborted: RunInterrupted | None = None
        self._notice = notice
        self._signals: list[int] = []
        self._task = asyncio.current_task()
        self._loop = asyncio.get_running_loop()
        self._installed: list[tuple[signal.Signals, Any]] = []
        if not enabled:
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous = signal.getsignal(sig)
            try:
                self._loop.add_signal_handler(sig, self._on_signal, sig)
            except (NotImplementedError, RuntimeError, ValueError):
                continue  # not the main thread, or a platform without it
            self._installed.append((sig, previous))

    def _on_signal(self, sig: signal.Signals) -> None:
        self._signals.append(int(sig))
        runner = self.runner
        first = len(self._signals) == 1
        if first and runner is not None and runner.failure is None:
            in_flight = runner.solver.sending
            self._notice(
                f"capbatch: {sig.name}: stopping; waiting up to {runner.drain_timeout:.0f} s "
                f"for {in_flight} request{'s' if in_flight != 1 else ''} in flight to come "
                "back (send it again to stop at once)"
            )
            runner.interrupt(RunInterrupted(f"interrupted by {sig.name}", signal_number=sig))
            return
        if first and runner is not None:
            return  # the run is already ending: let it write its output
        self.aborted = RunInterrupted(
            f"stopped at once by {sig.name}", signal_number=int(sig)
        )
        if self._task is not None:
            self._task.cancel()

    def close(self) -> None:
        # Put back the caller's handlers, not the defaults asyncio restores: a signal in
        # the last moments of a run (closing the journal, the CLI's last lines) must
        # still end in the caller's clean exit, not kill the process outright.
        for sig, previous in self._installed:
            self._loop.remove_signal_handler(sig)
            if previous is not None:
                signal.signal(sig, previous)
        self._installed.clear()


def _metadata(
    summary: RunSummary, options: RunOptions, resolved: ResolvedRun, table: TableSource
) -> dict[str, str]:
    settings = {
        "provider": resolved.profile.name,
        "base_url": options.base_url or resolved.profile.base_url or None,
        "task_type": options.task_type,
        "task_params": dict(options.task_params),
        "rate": resolved.limits.rate,
        "max_in_flight": resolved.limits.max_in_flight,
        "max_attempts": resolved.limits.max_attempts,
        "max_spend": resolved.limits.max_spend,
        "price": resolved.price,
        "cache": options.cache,
        "app_id": options.app_id,
    }
    return {
        "capbatch.version": __version__,
        "capbatch.provider": resolved.profile.name,
        "capbatch.task_type": options.task_type,
        "capbatch.started_at": summary.started_at,
        "capbatch.finished_at": summary.finished_at,
        "capbatch.spend_usd": f"{summary.spend_usd:.6f}",
        "capbatch.balance_before": ""
        if summary.balance_before is None
        else str(summary.balance_before),
        "capbatch.balance_after": ""
        if summary.balance_after is None
        else str(summary.balance_after),
        "capbatch.settings": json.dumps(settings, sort_keys=True, default=str),
        "capbatch.run": summary.to_json(),
        # "false": an interrupted run; rows with status "pending" are not finished yet.
        "capbatch.complete": "true" if summary.complete else "false",
        # Where relative image paths point: the report's gallery finds images with it.
        "capbatch.input": "" if table.path is None else str(Path(table.path).resolve()),
    }


async def arun(source: Any, **options: Any) -> pd.DataFrame:
    """Run ``source`` (path, DataFrame or pyarrow Table) and return the results table.

    The run's summary is in ``frame.attrs["capbatch"]``. See ``RunOptions`` for options.
    """
    outcome = await execute(source, RunOptions.from_kwargs(options), want_frame=True)
    if outcome.frame is None:  # a dry run
        empty: pd.DataFrame = pd.DataFrame({})
        empty.attrs["capbatch"] = outcome.summary.to_dict()
        return empty
    return outcome.frame


def run(source: Any, **options: Any) -> pd.DataFrame:
    """``arun`` for synchronous callers; also works inside a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(arun(source, **options))
    # Inside Jupyter (or any running loop): run a private loop in a worker thread.
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="capbatch-run") as pool:
        return pool.submit(asyncio.run, arun(source, **options)).result()
