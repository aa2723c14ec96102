"""The request gate: the one way a job's request leaves for the provider.

Every createTask and getTaskResult of a run passes the same checks in the same order:
the run's stop flag, the ``OutageGate``, an in-flight slot, a rate slot, the pause
button, the journal write that must precede the send; then it is sent and counted.
``stop`` closes the gate for every job at once: each job's next request raises
``RunStopped`` instead of leaving.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from capbatch._exceptions import CapbatchError, RunFailed
from capbatch._run.control import RunControl, RunStoppedByUser
from capbatch._run.job import JobState
from capbatch._run.limits import CREATE, Clock, PrioritySemaphore, RateLimiter
from capbatch._run.outage import OutageGate, ProviderOutage, is_outage_error
from capbatch._run.tally import Tally

T = TypeVar("T")


class RunStopped(Exception):
    """Raised inside jobs when the run must stop; carries the run-fatal error."""

    def __init__(self, error: CapbatchError) -> None:
        super().__init__(str(error))
        self.error = error


class RequestGate:
    """Holds every request of a run to the run's limits, pause and stop."""

    def __init__(
        self,
        *,
        max_in_flight: int,
        limiter: RateLimiter,
        clock: Clock,
        tally: Tally,
        outage: OutageGate,
        control: RunControl | None,
    ) -> None:
        self.limiter = limiter
        self.clock = clock
        #: The run's one tally: requests are counted here as they leave.
        self.tally = tally
        self.outage = outage
        self.control = control
        self._in_flight = PrioritySemaphore(max_in_flight)
        #: The run-fatal error once the run must stop; no request leaves after it.
        self.stopped: CapbatchError | None = None
        self._sending = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def share_in_flight(self, semaphore: PrioritySemaphore) -> None:
        """Hold requests to ``semaphore`` instead of this run's own cap: a worker of a
        Ray cluster shares the cluster's (``_ray.leases.LeasedFlights``)."""
        self._in_flight = semaphore

    async def request(
        self,
        state: JobState,
        call: Callable[[], Awaitable[T]],
        before_send: Callable[[], None] | None = None,
        *,
        priority: int = CREATE,
    ) -> T:
        """One request: in-flight slot, then rate slot, then ``before_send`` (the journal
        write that must precede it), then send. Adds the wait to the row's queue time.
        Polls (``POLL``) wait ahead of new tasks at both gates."""
        if self.stopped is not None:
            raise RunStopped(self.stopped)
        started = self.clock.now()
        try:
            probe = await self.outage.admit()
        except ProviderOutage as outage:
            self.stop(outage)
            raise RunStopped(outage) from None
        try:
            return await self._send(state, call, before_send, priority, started, probe)
        except CapbatchError as exc:
            if is_outage_error(exc):
                self.outage.failed(exc, probe)
            else:
                self.outage.succeeded(probe)  # it answered: it is up
            raise
        except BaseException:
            self.outage.abandoned(probe)
            raise

    async def _send(
        self,
        state: JobState,
        call: Callable[[], Awaitable[T]],
        before_send: Callable[[], None] | None,
        priority: int,
        started: float,
        probe: bool,
    ) -> T:
        await self._in_flight.acquire(priority)
        try:
            await self._take_rate_slot(priority)
            state.queue_s += self.clock.now() - started
            if self.stopped is not None:
                raise RunStopped(self.stopped)
            if before_send is not None:
                self._before_send(before_send)
            if state.submitted_at is None:
                state.submitted_at = time.time()  # latency runs from the first send
            self.tally.requests += 1
            self._sending += 1
            self._idle.clear()
            try:
                reply = await call()
                self.outage.succeeded(probe)
                return reply
            finally:
                self._sending -= 1
                if self._sending == 0:
                    self._idle.set()
        finally:
            self._in_flight.release()

    async def _take_rate_slot(self, priority: int) -> None:
        """A rate slot, taken after any pause pressed while the request queued."""
        while True:
            await self.limiter.acquire(priority)
            if self.control is None:
                return
            # Checked after the slot waits, right before sending: a pause pressed
            # while this request queued must still hold it back. A request held by a
            # pause queues for a fresh slot afterwards, or on Resume every held
            # request would leave at once, above the rate.
            held = self.control.paused
            try:
                await self.control.checkpoint()
            except RunStoppedByUser as stop:
                self.stop(stop)
                raise RunStopped(stop) from None
            if not held:
                return

    def _before_send(self, before_send: Callable[[], None]) -> None:
        try:
            before_send()
        except Exception as exc:
            # The journal could not record the step it must record before the
            # send (a full disk, an I/O error): sending now could pay for an
            # answer no later run would find, so the whole run stops here.
            error = exc if isinstance(exc, CapbatchError) else RunFailed.of(exc)
            self.stop(error)
            raise RunStopped(error) from exc

    # --- holding every request back ---------------------------------------------------

    def slow_down(self, exc: CapbatchError, retry_after: float | None) -> None:
        """A rate-limit answer: every request slows down (a Retry-After too long to
        wait out request by request holds them all, as in an outage)."""
        self.tally.rate_limited += 1
        if retry_after is not None and retry_after > OutageGate.LONG_RETRY_AFTER:
            reason = f"{exc.error_code}: Retry-After {retry_after:.0f} s"
            self.outage.long_pause(retry_after, reason)
            retry_after = None
        self.limiter.slow_down(retry_after)

    def pause(self, exc: CapbatchError, retry_after: float | None) -> None:
        """Temporarily blocked: every request waits out the block (five minutes when
        the provider does not say; a long one, as in an outage)."""
        pause = retry_after if retry_after is not None else 300.0
        if pause > OutageGate.LONG_RETRY_AFTER:
            self.outage.long_pause(pause, f"{exc.error_code}: blocked for {pause:.0f} s")
        else:
            self.limiter.pause(pause)

    # --- the run's stop ---------------------------------------------------------------

    @property
    def sending(self) -> int:
        """Requests sent whose reply has not come back yet."""
        return self._sending

    async def wait_idle(self) -> None:
        """Until no request is out (after ``stop``, no new one leaves)."""
        await self._idle.wait()

    def stop(self, error: CapbatchError) -> None:
        """Stop the run with ``error``; the first error to stop it is the one kept."""
        if self.stopped is None:
            self.stopped = error
