"""SIGINT and SIGTERM during a run (the CLI's): the first stops gracefully, a second at
once."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from typing import Any

from capbatch._exceptions import RunInterrupted
from capbatch._run.batches import BatchRunner


class SignalStops:
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
        self.aborted = RunInterrupted(f"stopped at once by {sig.name}", signal_number=int(sig))
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
