"""A worker's side of the cluster's budget (``budget.Budget``): the core's rate limiter,
in-flight semaphore and spend guard, each drawing on leases from the one budget actor.

They are subclasses of the core's classes, so the core's ``TaskSolver`` and its
``RequestGate`` use them unchanged. Waits are awaited (the event loop keeps serving the
worker's other requests); only a spend reservation, which the core makes synchronously,
waits for the budget's answer, once per ``MONEY_BLOCK`` tasks.
"""

from __future__ import annotations

import asyncio
import contextvars
import heapq
import itertools
from collections import deque
from collections.abc import Mapping
from typing import Any

from capbatch._exceptions import CapbatchError
from capbatch._providers.client import TaskService
from capbatch._providers.protocol import TaskReply
from capbatch._ray.budget import SLOT_TOLERANCE
from capbatch._run.gate import RunStopped
from capbatch._run.limits import CREATE, POLL, Clock, PrioritySemaphore, RateLimiter
from capbatch._run.spend import SpendGuard

#: The end of the send window of the slot this task's request took at the gate.
_SLOT_ENDS: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "capbatch_slot_ends", default=None
)
#: Most rate slots asked for in one call (the budget's horizon bounds it further).
MAX_SLOT_LEASE = 16
#: Most in-flight slots asked for in one call.
MAX_FLIGHT_LEASE = 8
#: Task prices reserved per call when a spend cap is set: large enough that the budget
#: is asked once per several tasks, small enough that little money sits idle in a
#: worker when the cap is near (what a worker holds spare goes back after each batch).
MONEY_BLOCK = 4
#: The slot queue's first place: a request the journal already holds as sent (its
#: slot's window passed during the journal write) goes before any poll or new task.
SENT = POLL - 1


class ClockMatch:
    """This worker's clock against the budget's: the offset from the exchange with the
    fastest round trip seen lately, and its error bound (half that round trip). The
    offset between two monotonic clocks is constant to a few parts per million; a
    sample older than ``FRESH`` seconds is replaced by the next one anyway."""

    FRESH = 30.0

    def __init__(self) -> None:
        self.offset = 0.0
        self.error: float | None = None
        self._at = 0.0

    def observe(self, asked: float, heard: float, remote_now: float) -> None:
        error = (heard - asked) / 2
        if self.error is None or error <= self.error or heard - self._at > self.FRESH:
            self.offset = remote_now - (asked + heard) / 2
            self.error, self._at = error, heard

    def local(self, remote_time: float) -> float:
        return remote_time - self.offset


class LeasedLimiter(RateLimiter):
    """``RateLimiter`` whose send slots come from the cluster's budget.

    A slot is a time on the budget's clock; ``ClockMatch`` turns it into this worker's
    to within ``error``. The worker sends inside ``[slot + error, slot + SLOT_TOLERANCE
    - error]``: never before the slot, never more than ``SLOT_TOLERANCE`` after it. A
    slot it cannot use inside that window is dropped (the rate is lost, not exceeded)."""

    def __init__(self, budget: Any, worker: str, rate: float, *, clock: Clock | None = None):
        super().__init__(rate, clock=clock)
        self._budget = budget
        self._worker = worker
        self.match = ClockMatch()
        self._slots: deque[tuple[float, float]] = deque()
        self._queue: list[tuple[int, int, asyncio.Future[float]]] = []
        self._ticket = itertools.count()
        self._pump: asyncio.Task[None] | None = None
        #: The run's stop: no slot is handed out at the gate from then on.
        self.stopped: CapbatchError | None = None
        #: Clean requests since the last heartbeat (the budget's AIMD recovery).
        self.successes = 0
        self.dropped = 0

    async def acquire(self, priority: int = CREATE) -> float:
        """The gate's wait for a send slot (the row's queue time, as in one process).
        The slot's window is remembered for this task: between the gate and the send
        comes the journal write, which here goes to another process, so ``ready``
        checks the window again right before the request leaves."""
        if self.stopped is not None:
            raise RunStopped(self.stopped)
        started = self._clock.now()
        _SLOT_ENDS.set(await self._slot(priority))
        return self._clock.now() - started

    async def ready(self, priority: int = CREATE) -> None:
        """Right before a request leaves: within the slot the gate took, else (the
        journal write was slow, or no slot was taken) wait for a new one."""
        ends = _SLOT_ENDS.get()
        _SLOT_ENDS.set(None)
        if ends is None or self._clock.now() > ends:
            if ends is not None:
                self.dropped += 1
            # Past the gate, the request counts as out (a create's intent is journaled):
            # it goes first, and still goes after a stop, as a request out in one process.
            await self._slot(SENT if ends is not None else priority)

    def stop(self, error: CapbatchError) -> None:
        """The run stops: requests still waiting at the gate for a slot are refused now
        (the gate would refuse them once their slot came, each slot lost to the ones
        already out), so requests out take the next slots and the drain ends sooner."""
        self.stopped = error
        for priority, _, granted in self._queue:
            if priority != SENT and not granted.done():
                granted.set_exception(RunStopped(error))

    async def _slot(self, priority: int) -> float:
        """Wait for a send slot, most urgent first; the end of its window."""
        granted: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._queue, (priority, next(self._ticket), granted))
        if self._pump is None or self._pump.done():
            self._pump = asyncio.get_running_loop().create_task(self._hand_out())
        return await granted  # a slot granted to a waiter cancelled meanwhile is lost

    def _alive(self) -> int:
        while self._queue and self._queue[0][2].done():
            heapq.heappop(self._queue)
        return sum(1 for _, _, f in self._queue if not f.done())

    async def _hand_out(self) -> None:
        """Give slots to waiters, most urgent first, each inside its window."""
        while (waiting := self._alive()) > 0:
            if not self._slots:
                asked = self._clock.now()
                remote_now, slots = await self._budget.take_slots.remote(
                    self._worker, min(waiting, MAX_SLOT_LEASE)
                )
                self.match.observe(asked, self._clock.now(), remote_now)
                error = self.match.error or 0.0
                for slot in slots:
                    at = self.match.local(slot)
                    self._slots.append((at + error, at + SLOT_TOLERANCE - error))
                continue
            earliest, latest = self._slots.popleft()
            wait = earliest - self._clock.now()
            if wait > 0:
                await self._clock.sleep(wait)
            if self._clock.now() > latest or self._alive() == 0:
                self.dropped += 1
                continue
            heapq.heappop(self._queue)[2].set_result(latest)

    def record_success(self) -> None:
        self.successes += 1

    def slow_down(self, retry_after: float | None = None) -> None:
        self.slowdowns += 1
        self._slots.clear()
        self._budget.slow_down.remote(retry_after)

    def pause(self, seconds: float) -> None:
        self._slots.clear()
        self._budget.pause.remote(seconds)


class LeasedFlights(PrioritySemaphore):
    """The gate's in-flight semaphore over slots leased from the cluster's budget: kept
    while this worker has requests waiting, given back when it has none (or holds more
    than its fair share)."""

    def __init__(self, budget: Any, worker: str) -> None:
        super().__init__(0)
        self._budget = budget
        self._worker = worker
        self.held = 0
        self.fair_share = 1
        self._asking: asyncio.Task[None] | None = None

    def _none_waiting(self) -> bool:
        return not self._alive_waiters()

    def _waiter_added(self) -> None:
        if self._asking is None or self._asking.done():
            self._asking = asyncio.get_running_loop().create_task(self._ask())

    def _alive_waiters(self) -> int:
        return sum(1 for _, _, f in self._waiting if not f.done())

    async def _ask(self) -> None:
        while (wanted := self._alive_waiters()) > 0:
            granted, self.fair_share = await self._budget.take_flights.remote(
                self._worker, min(wanted, MAX_FLIGHT_LEASE)
            )
            self.held += granted
            for _ in range(granted):
                PrioritySemaphore.release(self)

    def release(self) -> None:
        if self._alive_waiters() and self.held <= self.fair_share:
            super().release()  # straight to the next request of this worker
            return
        self.held -= 1
        self._budget.give_flights.remote(self._worker, 1)


class LeasedSpend(SpendGuard):
    """``SpendGuard`` over money leased from the cluster's budget.

    With a cap, task prices are reserved at the budget ``MONEY_BLOCK`` at a time and
    spent here; without one, nothing needs asking. Either way every change is reported
    (``flush``, at each heartbeat and batch end) as the moves ``Budget.settle`` applies,
    so the budget's figures are the run's."""

    def __init__(self, budget: Any, worker: str, *, cap: float | None, price: float) -> None:
        super().__init__(cap, price=price, price_confirmed=False)
        self._budget = budget
        self._worker = worker
        self._spare: list[float] = []
        self._moves: list[tuple[str, float, float]] = []

    @property
    def _leased(self) -> bool:
        return self.cap is not None

    def spare(self) -> float:
        return sum(self._spare)

    def reserve(self) -> float | None:
        if not self._leased:
            self.reserved += self.price
            return self.price
        if not self._spare:
            import ray

            self.flush()
            granted, price = ray.get(self._budget.lease_money.remote(self._worker, MONEY_BLOCK))
            self._spare.extend([price] * granted)
        if not self._spare:
            self.cap_reached = True
            return None
        amount = self._spare.pop()
        self.reserved += amount
        return amount

    def _settled(self, kind: str, reserved: float, amount: float = 0.0) -> None:
        self.reserved = max(0.0, self.reserved - reserved)
        self._moves.append((kind, reserved if self._leased else 0.0, amount))

    def release(self, amount: float) -> None:
        if amount <= 0:
            return
        if self._leased and len(self._spare) < MONEY_BLOCK:
            self.reserved = max(0.0, self.reserved - amount)
            self._spare.append(amount)  # still reserved at the budget: the next task's
            return
        self._settled("release", amount)

    def charge(self, reserved: float, actual: float) -> None:
        self.spent += actual
        self._settled("charge", reserved, actual)

    def mark_uncertain(self, reserved: float) -> None:
        self.uncertain += reserved
        self._settled("uncertain", reserved, reserved)

    def adopt(self) -> float:
        self.reserved += self.price
        self._moves.append(("adopt" if self._leased else "adopt_free", 0.0, 0.0))
        return self.price

    def adopt_lost(self) -> None:
        self.uncertain += self.price
        self._moves.append(("adopt_lost", 0.0, 0.0))

    def reprice(self, price: float) -> bool:
        changed = super().reprice(price)
        if changed:
            self._moves.append(("reprice", 0.0, price))
        return changed

    def give_back(self) -> None:
        """Hand every spare reservation back (a batch is done: another worker may need
        the money more), and report what happened."""
        for amount in self._spare:
            self._moves.append(("release", amount, 0.0))
        self._spare.clear()
        self.flush()

    def flush(self) -> None:
        if self._moves:
            moves, self._moves = self._moves, []
            self._budget.settle.remote(self._worker, moves)


class PacedService:
    """The provider client, each request of which leaves inside a cluster rate slot
    (``LeasedLimiter.ready``): polls before new tasks, as the core's gate orders them."""

    def __init__(self, inner: TaskService, limiter: LeasedLimiter) -> None:
        self.inner = inner
        self.limiter = limiter

    async def create_task(
        self, task: Mapping[str, Any], *, callback_url: str | None = None
    ) -> TaskReply:
        await self.limiter.ready(CREATE)
        return await self.inner.create_task(task, callback_url=callback_url)

    async def get_task_result(self, task_id: str) -> TaskReply:
        await self.limiter.ready(POLL)
        return await self.inner.get_task_result(task_id)

    async def get_balance(self) -> float | None:
        await self.limiter.ready(CREATE)
        return await self.inner.get_balance()

    async def report_incorrect(self, task_id: str, *, message: str | None = None) -> bool:
        await self.limiter.ready(CREATE)
        return await self.inner.report_incorrect(task_id, message=message)

    async def aclose(self) -> None:
        await self.inner.aclose()
