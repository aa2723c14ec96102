"""SIGINT and SIGTERM on the driver of ``capbatch run --engine ray``: the first stops the
cluster gracefully, a second at once, as ``capbatch._run.signals`` does in one process.

The requests leave from the workers, so the first signal goes to the budget actor
(``Budget.stop``), whose answer every worker is waiting for (``Budget.until_stopped``):
each worker interrupts the core ``BatchRunner``s it has going (nothing new is sent;
replies to requests out are awaited, up to ``--drain-timeout``, and journaled) and
answers every later batch with pending rows. The driver reads every batch to the end
and writes the output as ``capbatch run`` does: complete = false, the unfinished rows
pending; then ``RunInterrupted`` (exit 130 or 143, the resume hint).

A terminal's Ctrl-C reaches the whole foreground process group. The local cluster
``ray.init`` starts from the driver has its services (GCS, raylet, agents) in that
group, but each is started with SIGINT blocked (``ray._private.services``'s
``preexec_fn``), and its workers each lead a process group of their own: a Ctrl-C
reaches the driver alone, and the cluster finishes the graceful stop
(``tests/ray/test_ray_stop.py`` sends SIGINT to the whole group).

``ray.init`` puts in a SIGTERM handler of its own (``sys.exit``); the handlers the
caller had before are the ones put back at the end.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from capbatch._exceptions import RunInterrupted
from capbatch._run.summary import RunSummary

SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: Seconds the notice waits for the budget's count of requests out before it is said
#: without it (the budget answers in milliseconds unless the cluster is in trouble).
STOP_CALL_TIMEOUT = 5.0


class StopAtOnce(BaseException):
    """What the second signal's handler raises in the driver's main thread. Like
    ``KeyboardInterrupt`` it passes every ``except Exception`` on its way out (Ray
    Data's iterator shuts its executor down on any exception and raises it again);
    ``DriverStops.aborted`` is the ``RunInterrupted`` the run ends with."""


class DriverStops:
    """The driver's handlers for one run. Before the stream starts a signal stops at
    once (nothing is out yet that a graceful stop would wait for); while it streams
    the first is graceful; once every batch is in, a first signal is let be (the
    output is being written) and a second stops at once."""

    def __init__(
        self, notice: Callable[[str], None], *, enabled: bool, drain_timeout: float
    ) -> None:
        self.interrupted: RunInterrupted | None = None
        self.aborted: RunInterrupted | None = None
        self._notice = notice
        self._drain_timeout = drain_timeout
        main = threading.current_thread() is threading.main_thread()
        self._enabled = enabled and main  # Python handles signals in the main thread only
        # The caller's handlers, read before ``ray.init`` puts its own SIGTERM one in.
        self._previous = {sig: signal.getsignal(sig) for sig in SIGNALS} if self._enabled else {}
        self._installed = False
        self._signals = 0
        self._streaming = self._ending = False
        self._budget: Any = None
        self._wake = threading.Event()
        self._closed = False
        self._stopper: threading.Thread | None = None

    def install(self) -> None:
        """Handle both signals from now on (call it after ``ray.init``)."""
        if not self._enabled:
            return
        for sig in SIGNALS:
            signal.signal(sig, self._on_signal)
        self._installed = True

    def streaming(self, budget: Any) -> None:
        """The stream starts: a first signal now stops the cluster through ``budget``.
        The call to the budget is made from a thread of its own: a signal handler may
        run inside Ray's own code (a ``ray.get`` checks for signals), which must not be
        entered again from there."""
        self._budget = budget
        if self._installed and self._stopper is None:
            self._stopper = threading.Thread(
                target=self._stop_cluster, name="capbatch-ray-stop", daemon=True
            )
            self._stopper.start()
        self._streaming = True

    def ending(self) -> None:
        """Every batch is in: the output is written from here on."""
        self._ending = True

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        sig = signal.Signals(signum)
        self._signals += 1
        if self.aborted is not None:
            return  # already stopping at once
        if self._signals == 1 and self._streaming and not self._ending:
            self.interrupted = RunInterrupted(f"interrupted by {sig.name}", signal_number=sig)
            self._wake.set()
            return
        if self._signals == 1 and self._ending:
            return  # every row is in; the output is being written
        self.aborted = RunInterrupted(f"stopped at once by {sig.name}", signal_number=sig)
        raise StopAtOnce

    def _stop_cluster(self) -> None:
        """Tell the budget (so every worker) to stop, then say so, as the core does."""
        import ray

        self._wake.wait()
        interrupted = self.interrupted
        if self._closed or interrupted is None:
            return
        name = signal.Signals(interrupted.signal_number).name
        in_flight: int | None = None
        try:
            call = self._budget.stop.remote(str(interrupted), interrupted.signal_number)
            in_flight = int(ray.get(call, timeout=STOP_CALL_TIMEOUT))
        except Exception:  # the budget gone or slow: the notice says less
            in_flight = None
        requests = (
            "the requests"
            if in_flight is None
            else f"{in_flight} request{'s' if in_flight != 1 else ''}"
        )
        self._notice(
            f"capbatch: {name}: stopping; waiting up to {self._drain_timeout:.0f} s for "
            f"{requests} in flight to come back (send it again to stop at once)"
        )

    def mark(self, summary: RunSummary) -> None:
        """The summary of a run the first signal stopped: incomplete, and by what."""
        if self.interrupted is not None:
            summary.complete = False
            summary.stopped_by = self.interrupted.error_code

    def raise_if_interrupted(self, summary: object) -> None:
        """After the output is written: the first signal's ``RunInterrupted``, with the
        run's summary (the CLI prints it and says how to resume)."""
        if self.interrupted is not None:
            self.interrupted.summary = summary
            raise self.interrupted

    def close(self) -> None:
        """Put back the caller's handlers (not Ray's SIGTERM one, not the defaults)."""
        self._closed = True
        self._wake.set()
        if self._installed:
            for sig, previous in self._previous.items():
                signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
            self._installed = False
        if self._stopper is not None:
            self._stopper.join(timeout=STOP_CALL_TIMEOUT)
