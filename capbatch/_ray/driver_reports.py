"""``capbatch run --engine ray --label-column L --report-wrong``: the driver reports each
wrong answer as its batch comes back.

The workers answer; the driver sees every row's result in input order (it writes them)
and holds the labels. It runs the core's ``LiveReports`` on an event loop of its own, in
a thread: a wrong answer starts one report at once (Anti-Captcha takes one only within
60 s of the task's completion), through a rate slot of the cluster's budget like every
other request, and the report's outcome goes into the cluster's journal, so a task is
reported at most once whichever engine runs next. When the stream ends, the reports
still out get ``--drain-timeout`` seconds and their outcomes go into the output's
``reported`` column before it is published, as in one process.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from capbatch._io.record import RowResult
from capbatch._ray.leases import LeasedLimiter, PacedService
from capbatch._run import engine
from capbatch._run.journal import Journal
from capbatch._run.live_reports import LiveReports, live_reports
from capbatch._run.wrong_answers import WrongAnswers

T = TypeVar("T")

#: The budget's name for the driver's reports (a worker of its own for the rate).
REPORTER = "driver-reports"


class DriverReports:
    """The driver's ``LiveReports`` on a loop of its own (module docstring)."""

    def __init__(self, setup: Any, budget: Any, journal: Journal) -> None:
        self._drain = float(setup.options.drain_timeout)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="capbatch-reports", daemon=True
        )
        self._thread.start()
        self._service: PacedService | None = None
        self._live: LiveReports | None = None
        try:
            self._live = self._call(self._start(setup, budget, journal))
        except BaseException:
            self.close()
            raise

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    async def _start(self, setup: Any, budget: Any, journal: Journal) -> LiveReports:
        options, resolved = setup.options, setup.resolved
        limiter = LeasedLimiter(budget, REPORTER, resolved.limits.rate)
        self._service = PacedService(engine._make_service(options, resolved), limiter)
        reporter = WrongAnswers(self._service, resolved.profile, journal, limiter)
        return await live_reports(options, setup.table, reporter)

    def on_result(self, row: int, result: RowResult) -> None:
        """One row's result (``row``: its input position): reported if wrong."""
        if self._live is not None:
            self._loop.call_soon_threadsafe(self._live.on_result, row, result)

    def finish(self, output: Path | None, tell: Callable[[str], None]) -> None:
        """Drain the reports, write their outcomes into ``output``, say the counts."""
        try:
            if self._live is not None:
                self._call(self._live.finish(output, self._drain, tell))
        finally:
            self.close()

    def close(self) -> None:
        """Close the client and end the loop's thread (the reports left are cancelled)."""
        if not self._loop.is_running():
            return
        if self._live is not None:
            self._call(self._live.drain(0.0))  # after ``finish``: none left to cancel
        if self._service is not None:
            service, self._service = self._service, None
            self._call(service.aclose())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
