"""The cluster's one budget: rate, in-flight cap and spend cap, leased to workers.

A Ray actor (``ray.remote(Budget)``, async: its waits never block other callers) holds
what ``RateLimiter``, the gate's in-flight semaphore and ``SpendGuard`` hold in one
process, and hands it out in small leases so that it is asked once per several
requests, not once per request (``bench/ray_scale.py`` measures its ceiling):

* **Rate.** Send slots on one timeline spaced ``1/(RAY_SAFETY * rate)`` apart (GCRA
  with a burst of one, as ``RateLimiter``), granted at most ``HORIZON`` ahead, as times
  on the budget's clock. A worker matches its clock to the budget's (to within half the
  fastest round trip it saw, ``leases.ClockMatch``) and sends only inside
  ``[slot, slot + SLOT_TOLERANCE]``, so no one-second window anywhere gets more than the
  rate, whatever the clocks of the nodes say; a slot it cannot use in time is dropped
  (rate lost, never exceeded). Rate-limit answers cut the rate for everyone (AIMD, as
  ``RateLimiter``), pauses hold everyone.
* **In flight.** Slots of the cap, held by workers while they have requests to send and
  given back when they have none; a worker silent for ``SILENT_AFTER`` seconds (killed)
  loses the slots it held.
* **Money.** The run's ``SpendGuard``: workers reserve task prices in blocks, report
  charges, releases and lost sends; a dead worker's reservations stay counted (its
  sends may have been charged), so the cap is never exceeded by a death.
* **The stop.** The driver's first SIGINT or SIGTERM (``_ray/stops.py``) calls ``stop``;
  every worker is waiting on ``until_stopped`` (and hears it in each heartbeat's answer
  too), so it stops sending within one actor call of the signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from capbatch._run.limits import RateLimiter
from capbatch._run.spend import SpendGuard

#: How far ahead of now the budget grants a rate slot: a worker never holds more than
#: this much of the timeline, so another worker asking next waits no longer for it.
HORIZON = 0.25
#: Slots are spaced ``1/(RAY_SAFETY * rate)``, a little wider than in one process
#: (``limits.SAFETY_FACTOR``): a request may leave up to ``SLOT_TOLERANCE`` after its
#: slot (a worker's event loop also waits on the journal actor), and with
#: ``(1 + SLOT_TOLERANCE) * RAY_SAFETY < 1`` no one-second window holds more than the
#: rate, with about 10 ms left for the network's jitter.
RAY_SAFETY = 0.95
SLOT_TOLERANCE = 0.04
#: Seconds without a heartbeat after which a worker counts as dead.
SILENT_AFTER = 5.0
#: Seconds ``Budget.stop`` waits for the live workers' count of requests out, in so
#: many looks (real time: the workers answer within one actor call, milliseconds).
STOP_ANSWERS = 0.5
STOP_ANSWER_LOOKS = 25


@dataclass
class _Worker:
    seen: float
    flights: int = 0
    #: Money reserved through this worker and not yet charged or given back.
    money: float = 0.0
    #: Of ``money``, the part the worker holds spare (no send behind it): its last word.
    spare: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)
    #: Requests out when the worker last said (its gate's ``sending``).
    sending: int = 0


#: What a worker is told when the run stops: the message and the signal's number.
Stop = tuple[str, int]


class Budget:
    """Rate slots, in-flight slots and money for every worker of one run."""

    #: AIMD: the one process's ``RateLimiter`` figures, so both engines adapt alike.
    DECREASE = RateLimiter.DECREASE
    MIN_FRACTION = RateLimiter.MIN_FRACTION
    RECOVER_AFTER = RateLimiter.RECOVER_AFTER
    INCREASE = RateLimiter.INCREASE
    CUT_EVERY = RateLimiter.CUT_EVERY
    MAX_PAUSE = RateLimiter.MAX_PAUSE

    def __init__(
        self,
        *,
        rate: float,
        max_in_flight: int,
        cap: float | None,
        price: float,
        spent_before: float = 0.0,
        price_confirmed: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._now = clock
        self.configured_rate = self.rate = rate
        self.max_in_flight = max_in_flight
        self.money = SpendGuard(
            cap, price=price, spent_before=spent_before, price_confirmed=price_confirmed
        )
        self._next_slot: float | None = None
        self._free = max_in_flight
        self._flight_waiters: deque[asyncio.Future[None]] = deque()
        self._workers: dict[str, _Worker] = {}
        self._clean = 0
        self._cut_at: float | None = None
        #: What a benchmark or a test reads: calls answered, slots and flights granted.
        self.calls = 0
        self.slots_granted = 0
        self.reclaimed = 0
        #: Set once by the driver's first signal; never cleared (a run stops once).
        self.stopped: Stop | None = None
        self._stop_waiters: list[asyncio.Future[Stop]] = []
        self._heard: set[str] = set()

    # --- workers ----------------------------------------------------------------------

    def _worker(self, worker: str) -> _Worker:
        now = self._now()
        self.calls += 1
        found = self._workers.get(worker)
        if found is None:
            found = self._workers[worker] = _Worker(seen=now)
        found.seen = now
        return found

    def heartbeat(
        self,
        worker: str,
        spare: float = 0.0,
        successes: int = 0,
        counts: dict[str, int] | None = None,
        sending: int = 0,
    ) -> tuple[int, Stop | None]:
        """A worker is alive; its spare money, clean requests, request counts and
        requests out. Its fair share of in-flight slots comes back, and the run's stop
        once there is one (in case the worker's ``until_stopped`` call was lost)."""
        state = self._worker(worker)
        state.spare = spare
        state.sending = sending
        if self.stopped is not None:
            self._heard.add(worker)  # its word on requests out since the stop
        if counts is not None:
            state.counts = dict(counts)
        self._record_success(successes)
        self._reclaim_silent()
        return self._fair_share(), self.stopped

    def _fair_share(self) -> int:
        live = sum(1 for w in self._workers.values() if w.seen > self._now() - SILENT_AFTER)
        return max(1, math.ceil(self.max_in_flight / max(1, live)))

    def _reclaim_silent(self) -> None:
        """Take back what dead workers held: their in-flight slots, their spare money.
        The money behind their sends stays counted: those sends may have been charged."""
        cutoff = self._now() - SILENT_AFTER
        for state in self._workers.values():
            if state.seen >= cutoff or (state.flights == 0 and state.money == 0):
                continue
            self.reclaimed += 1
            self._give_flights(state, state.flights)
            spare = min(state.spare, state.money)
            self.money.release(spare)
            self.money.mark_uncertain(state.money - spare)
            state.money = state.spare = 0.0

    # --- rate ---------------------------------------------------------------------------

    @property
    def interval(self) -> float:
        return 1.0 / (self.rate * RAY_SAFETY)

    async def take_slots(self, worker: str, wanted: int) -> tuple[float, list[float]]:
        """Up to ``wanted`` send slots (at least one, no more than ``HORIZON`` ahead: the
        call waits for that), as times on this actor's clock, with its clock's reading
        as it answers (the worker's clock is matched to it: ``leases.ClockMatch``)."""
        self._worker(worker)
        while True:
            now = self._now()
            start = now if self._next_slot is None else max(now, self._next_slot)
            if start - now <= HORIZON:
                break
            await asyncio.sleep(start - now - HORIZON)
        slots: list[float] = []
        slot = start
        while len(slots) < max(1, wanted) and slot - now <= HORIZON:
            slots.append(slot)
            slot += self.interval
        self._next_slot = slot
        self.slots_granted += len(slots)
        return self._now(), slots

    def slow_down(self, retry_after: float | None = None) -> None:
        """The provider said too fast: every worker slows down (``RateLimiter``)."""
        self._clean = 0
        now = self._now()
        if self._cut_at is None or now - self._cut_at >= self.CUT_EVERY:
            self._cut_at = now
            self.rate = max(self.configured_rate * self.MIN_FRACTION, self.rate * self.DECREASE)
        self.pause(retry_after if retry_after is not None else self.interval)

    def pause(self, seconds: float) -> None:
        """No slot starts for ``seconds`` (at most ``MAX_PAUSE``)."""
        seconds = 0.0 if math.isnan(seconds) else min(max(0.0, seconds), self.MAX_PAUSE)
        until = self._now() + seconds
        if self._next_slot is None or self._next_slot < until:
            self._next_slot = until

    def _record_success(self, successes: int) -> None:
        if self.rate >= self.configured_rate or successes <= 0:
            return
        self._clean += successes
        if self._clean >= max(1.0, self.RECOVER_AFTER * self.rate):
            self._clean = 0
            self.rate = min(self.configured_rate, self.rate + self.INCREASE * self.configured_rate)

    # --- in flight --------------------------------------------------------------------

    async def take_flights(self, worker: str, wanted: int) -> tuple[int, int]:
        """Up to ``wanted`` in-flight slots (at least one: waits for it), and the fair
        share a worker should keep at most while others may wait."""
        state = self._worker(worker)
        while self._free == 0:
            self._reclaim_silent()
            if self._free:
                break
            waiter = asyncio.get_running_loop().create_future()
            self._flight_waiters.append(waiter)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(waiter, 1.0)  # then look for dead workers again
            self._worker(worker)
        granted = min(max(1, wanted), self._free, self._fair_share())
        self._free -= granted
        state.flights += granted
        return granted, self._fair_share()

    def give_flights(self, worker: str, count: int) -> None:
        self._give_flights(self._worker(worker), count)

    def _give_flights(self, state: _Worker, count: int) -> None:
        count = min(count, state.flights)
        state.flights -= count
        self._free += count
        while self._flight_waiters and count > 0:
            waiter = self._flight_waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                count -= 1

    # --- money ------------------------------------------------------------------------

    def lease_money(self, worker: str, wanted: int) -> tuple[int, float]:
        """Reserve up to ``wanted`` task prices for ``worker``; how many, and the price."""
        state = self._worker(worker)
        granted = 0
        while granted < wanted and self.money.reserve() is not None:
            granted += 1
        state.money += granted * self.money.price
        return granted, self.money.price

    def settle(self, worker: str, moves: list[tuple[str, float, float]]) -> None:
        """What a worker's reservations became, in the order they happened (see
        ``leases.LeasedSpend``): ``(kind, reserved here, amount)``."""
        state = self._worker(worker)
        money = self.money
        for kind, reserved, amount in moves:
            if kind in ("charge", "release", "uncertain"):
                money.release(reserved)
                state.money = max(0.0, state.money - reserved)
                if kind == "charge":
                    money.spent += amount
                elif kind == "uncertain":
                    money.uncertain += amount
            elif kind == "adopt":
                state.money += money.adopt()
            elif kind == "adopt_free":
                money.spent_before = max(0.0, money.spent_before - money.price)
            elif kind == "adopt_lost":
                money.adopt_lost()
            elif kind == "reprice":
                money.reprice(amount)

    def set_spent_before(self, amount: float) -> None:
        """What earlier runs of the journal spent (the driver reads it there)."""
        self.money.spent_before = amount

    # --- the run's stop (the driver's first signal) -------------------------------------

    async def stop(self, message: str, signal_number: int) -> int:
        """Stop the run: every worker waiting in ``until_stopped`` hears it now, and
        answers with a heartbeat saying how many requests it has out. Their sum comes
        back (the driver's notice) once every live worker answered, or after
        ``STOP_ANSWERS`` seconds with the last word of those that did not."""
        if self.stopped is None:
            self.stopped = (message, signal_number)
            self._heard = set()
            for waiter in self._stop_waiters:
                if not waiter.done():
                    waiter.set_result(self.stopped)
            self._stop_waiters.clear()
        cutoff = self._now() - SILENT_AFTER
        live = {name for name, w in self._workers.items() if w.seen >= cutoff}
        for _ in range(STOP_ANSWER_LOOKS):
            if live <= self._heard:
                break
            await asyncio.sleep(STOP_ANSWERS / STOP_ANSWER_LOOKS)
        return sum(self._workers[name].sending for name in live)

    async def until_stopped(self) -> Stop:
        """Answered when the run stops (at once if it has): each worker keeps one such
        call waiting, so a stop reaches it in one reply, not at its next heartbeat."""
        if self.stopped is not None:
            return self.stopped
        waiter: asyncio.Future[Stop] = asyncio.get_running_loop().create_future()
        self._stop_waiters.append(waiter)
        return await waiter

    # --- what the driver reads at the end -----------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The money, the request counts summed over workers, and the actor's own load."""
        money = self.money
        counts: dict[str, int] = {}
        for state in self._workers.values():
            for name, value in state.counts.items():
                counts[name] = counts.get(name, 0) + value
        return {
            "cap": money.cap,
            "price": money.price,
            "spent": money.spent,
            "spent_before": money.spent_before,
            "reserved": money.reserved,
            "uncertain": money.uncertain,
            "cap_reached": money.cap_reached,
            "price_confirmed": money.price_confirmed,
            "counts": counts,
            "calls": self.calls,
            "slots_granted": self.slots_granted,
            "reclaimed": self.reclaimed,
            "rate": self.rate,
            "free_flights": self._free,
        }
