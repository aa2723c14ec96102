"""Rate limiting: one limiter for every request to a provider, plus an in-flight cap.

``RateLimiter`` hands out send times spaced ``1/rate`` apart (GCRA with a burst of
one), so a run never bursts at start or resume: the first request goes at once, the
next ``1/rate`` later, and so on, whatever the queue. A request that leaves more than
``CATCH_UP`` late (a busy event loop, a garbage collection) pushes every later slot
back by the excess, so a stall never turns into a burst of overdue requests. On
``ERROR_RATE_LIMIT`` the runner calls ``slow_down``: the rate drops multiplicatively
and everyone waits out the ``Retry-After``; after a stretch of clean requests it
climbs back (AIMD, as TCP does).

Requests wait in priority order, for the in-flight cap (``PrioritySemaphore``) and for a
send slot alike: a poll for a task already paid for goes before a new ``createTask``.
First come, first served would put each poll behind every queued ``createTask``: at
10 req/s with 200 rows waiting that is 20 s, so a task ready in half a second showed
20 s of latency, and at a low rate a task needing a few polls could outlive the
provider's five minutes and be paid for twice.

Time comes from a ``Clock`` so tests use a fake one and never sleep for real.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import time
from dataclasses import dataclass

from capbatch._exceptions import ConfigError

#: Aim slightly under the configured rate: sends are scheduled exactly, but the event
#: loop and the network add jitter, and a request that leaves a little late next to one
#: on time would otherwise put ``rate + 1`` requests into some one-second window.
SAFETY_FACTOR = 0.98

#: How late a request may leave and still keep the slots after it where they were
#: (the GCRA burst tolerance, in seconds). Sends spaced ``1/(SAFETY_FACTOR * rate)``
#: with this much catch-up put at most ``rate * (1 + SAFETY_FACTOR) / 2`` requests into
#: any one-second window: half of the margin; the other half is left for jitter between
#: the send and the provider's clock.
CATCH_UP = (1.0 / SAFETY_FACTOR - 1.0) / 2.0


class Clock:
    """Real time. Tests pass a fake with the same two methods."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


@dataclass(frozen=True)
class Limits:
    """The limits of one run, validated once."""

    rate: float
    max_in_flight: int
    max_attempts: int = 5
    max_spend: float | None = None

    def __post_init__(self) -> None:
        if not self.rate > 0:
            raise ConfigError(f"--rate must be above 0 (got {self.rate})")
        if self.max_in_flight < 1:
            raise ConfigError(f"--max-in-flight must be at least 1 (got {self.max_in_flight})")
        if self.max_attempts < 1:
            raise ConfigError(f"--max-attempts must be at least 1 (got {self.max_attempts})")
        if self.max_spend is not None and self.max_spend < 0:
            raise ConfigError(f"--max-spend cannot be negative (got {self.max_spend})")


#: Priorities for ``acquire``: lower goes first.
POLL = 0
CREATE = 1


class PrioritySemaphore:
    """``asyncio.Semaphore`` whose waiters are served lowest ``priority`` first, then in
    arrival order."""

    def __init__(self, value: int) -> None:
        self._free = value
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    async def acquire(self, priority: int = CREATE) -> None:
        if self._free > 0 and self._none_waiting():
            self._free -= 1
            return
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (priority, next(self._order), granted))
        self._waiter_added()
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self.release()  # granted just as it was cancelled: pass it on
            raise

    def _none_waiting(self) -> bool:
        return not self._waiting

    def _waiter_added(self) -> None:
        """A request now waits: a semaphore over slots leased from elsewhere (a Ray
        cluster's budget) asks for more here."""

    def release(self) -> None:
        while self._waiting:
            granted = heapq.heappop(self._waiting)[2]
            if not granted.done():  # skip waiters cancelled meanwhile
                granted.set_result(None)
                return
        self._free += 1


class _SlotWaiter:
    """One request waiting for a send slot."""

    __slots__ = ("arrived", "gone", "sent_at", "wake")

    def __init__(self, arrived: float) -> None:
        self.arrived = arrived
        self.sent_at: float | None = None
        self.gone = False
        self.wake: asyncio.Future[None] | None = None

    def wake_up(self) -> None:
        if self.wake is not None and not self.wake.done():
            self.wake.set_result(None)


class RateLimiter:
    """Spaces requests ``1/rate`` apart across the whole run; adapts to 429s."""

    #: Fraction of the rate kept after a rate-limit error, and the floor.
    DECREASE = 0.7
    MIN_FRACTION = 0.05
    #: Clean requests (in units of the configured rate, i.e. seconds' worth) before
    #: the rate climbs by ``INCREASE`` of the configured rate.
    RECOVER_AFTER = 2.0
    INCREASE = 0.1
    #: Seconds after a cut during which further rate-limit errors do not cut again.
    CUT_EVERY = 1.0
    #: Longest pause one reply can impose on the whole run (seconds).
    MAX_PAUSE = 60.0

    def __init__(self, rate: float, *, clock: Clock | None = None) -> None:
        if not rate > 0:
            raise ConfigError(f"rate must be above 0 (got {rate})")
        self.configured_rate = rate
        self.rate = rate
        self._clock = clock or Clock()
        # Slots are planned on a timeline that ``_shift`` pushes back when a request
        # leaves too late; a slot's real time is ``slot + _shift``.
        self._next_slot: float | None = None
        self._shift = 0.0
        self._clean = 0
        self.slowdowns = 0
        #: When the rate was last cut by ``slow_down``.
        self._cut_at: float | None = None
        # Waiters for a slot, most urgent first; only the first sleeps towards it.
        self._waiting: list[tuple[int, int, _SlotWaiter]] = []
        self._order = itertools.count()

    @property
    def interval(self) -> float:
        return 1.0 / (self.rate * SAFETY_FACTOR)

    async def acquire(self, priority: int = CREATE) -> float:
        """Wait for a send slot, lowest ``priority`` first; returns the seconds waited
        (the row's queue time).

        Slots are granted by ``_grant_due``, called by whoever is awake: the first
        waiter when its slot comes, and each newcomer. It grants every slot already
        due in one go, so a busy event loop never limits the rate to one request per
        loop iteration."""
        started = self._clock.now()
        waiter = _SlotWaiter(started)
        heapq.heappush(self._waiting, (priority, next(self._order), waiter))
        self._grant_due(started)
        try:
            while waiter.sent_at is None:
                if self._head() is waiter:
                    wait = self._slot_from(waiter.arrived) + self._shift - self._clock.now()
                    if wait > 0:
                        await self._clock.sleep(wait)
                    self._grant_due(self._clock.now())
                else:
                    waiter.wake = asyncio.get_running_loop().create_future()
                    await waiter.wake
        except BaseException:
            if waiter.sent_at is None:
                waiter.gone = True  # dropped from the queue lazily, by _head
                self._grant_due(self._clock.now())
            raise
        return waiter.sent_at - started

    def _head(self) -> _SlotWaiter | None:
        while self._waiting and self._waiting[0][2].gone:
            heapq.heappop(self._waiting)
        return self._waiting[0][2] if self._waiting else None

    def _slot_from(self, arrived: float) -> float:
        """The slot on the planned timeline for a request that arrived at ``arrived``: the
        one after the last taken, but never before it arrived (idle time banks no burst)."""
        earliest = arrived - self._shift
        return earliest if self._next_slot is None else max(earliest, self._next_slot)

    def _grant_due(self, now: float) -> None:
        """Hand every slot already due to the waiters in turn; wake the next one up."""
        while (head := self._head()) is not None:
            slot = self._slot_from(head.arrived)
            due = slot + self._shift
            if due > now:
                break
            heapq.heappop(self._waiting)
            self._next_slot = slot + self.interval
            late = now - due
            if late > CATCH_UP:
                self._shift += late - CATCH_UP
            head.sent_at = now
            head.wake_up()
        if head is not None:
            head.wake_up()  # the new first waiter sleeps towards its slot

    def record_success(self) -> None:
        """A request went through without a rate-limit error: maybe speed back up."""
        if self.rate >= self.configured_rate:
            return
        self._clean += 1
        if self._clean >= max(1.0, self.RECOVER_AFTER * self.rate):
            self._clean = 0
            self.rate = min(self.configured_rate, self.rate + self.INCREASE * self.configured_rate)

    def slow_down(self, retry_after: float | None = None) -> None:
        """The provider said we are too fast: lower the rate and hold everyone back.

        The rate is cut once per ``CUT_EVERY`` at most: the 429s of requests that were
        already out when the first one came back say nothing new (TCP halves its window
        once per round trip, not once per lost packet). Every 429 still pauses everyone
        for its ``Retry-After``."""
        self.slowdowns += 1
        self._clean = 0
        now = self._clock.now()
        if self._cut_at is None or now - self._cut_at >= self.CUT_EVERY:
            self._cut_at = now
            self.rate = max(self.configured_rate * self.MIN_FRACTION, self.rate * self.DECREASE)
        self.pause(retry_after if retry_after is not None else self.interval)

    def pause(self, seconds: float) -> None:
        """No request leaves for ``seconds`` from now (temporary blocks, Retry-After),
        at most ``MAX_PAUSE``: a server's ``Retry-After: inf`` must not stop a run for
        good (a long pause is the outage gate's business, see ``outage.py``)."""
        if math.isnan(seconds):
            seconds = 0.0
        seconds = min(max(0.0, seconds), self.MAX_PAUSE)
        until = self._clock.now() + seconds - self._shift
        if self._next_slot is None or self._next_slot < until:
            self._next_slot = until
