"""The rate limiter and limits, on a fake clock (no real sleeps)."""

from __future__ import annotations

import asyncio
import itertools
import math

import pytest

from capbatch._exceptions import ConfigError
from capbatch._run.limits import (
    CATCH_UP,
    CREATE,
    POLL,
    SAFETY_FACTOR,
    Limits,
    PrioritySemaphore,
    RateLimiter,
)
from tests.fakes import FakeClock, SteppedClock


async def send_times(limiter: RateLimiter, clock: FakeClock, n: int) -> list[float]:
    """Times at which ``acquire`` lets n callers queued together through, in order.

    A ``FakeClock`` moves on as soon as the first waiter sleeps, so a caller's send time
    is when it arrived plus the wait ``acquire`` reports, not the clock when it resumes."""

    async def caller() -> float:
        arrived = clock.now()
        return arrived + await limiter.acquire()

    return sorted(await asyncio.gather(*(caller() for _ in range(n))))


def max_in_any_window(times: list[float], window: float = 1.0) -> int:
    times = sorted(times)
    best = 0
    j = 0
    for i, t in enumerate(times):
        while times[j] <= t - window:
            j += 1
        best = max(best, i - j + 1)
    return best


@pytest.mark.parametrize("rate", [1, 7.5, 50, 200, 1000])
async def test_no_burst_and_never_above_rate_in_any_window(rate: float) -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate, clock=clock)
    start = clock.now()
    times = await send_times(limiter, clock, int(rate * 5) + 3)
    assert times[0] == start  # the first request goes at once
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) == pytest.approx(1 / (rate * SAFETY_FACTOR))
    # Counts are whole: evenly spaced sends at 7.5/s put 8 into some one-second window.
    assert max_in_any_window(times) <= math.ceil(rate)


async def test_acquire_sleeps_for_its_slot_and_reports_queue_time() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10, clock=clock)
    waits = [await limiter.acquire() for _ in range(4)]
    assert waits[0] == 0
    for w in waits[1:]:
        assert w == pytest.approx(1 / (10 * SAFETY_FACTOR))
    assert clock.sleeps == pytest.approx(waits[1:])


async def test_a_stall_does_not_release_the_overdue_requests_at_once() -> None:
    rate = 100
    clock = SteppedClock()
    limiter = RateLimiter(rate, clock=clock)
    sent: list[float] = []

    async def caller() -> None:
        await limiter.acquire()
        sent.append(clock.now())

    callers = [asyncio.create_task(caller()) for _ in range(2 * rate)]
    step = 0.0005
    for _ in range(3):
        await asyncio.sleep(0)
    while len(sent) < len(callers):
        # A 0.3 s stall half a second in: some 30 slots pass while nobody can run.
        clock.advance(0.3 if len(sent) == rate // 2 else step)
        for _ in range(3):
            await asyncio.sleep(0)
    await asyncio.gather(*callers)
    interval = 1 / (rate * SAFETY_FACTOR)
    assert max_in_any_window(sent) <= rate
    # At most CATCH_UP's worth of overdue requests catch up at once; the rest keep
    # their spacing after the stall instead of going out together.
    burst = sent.count(sent[rate // 2])
    assert 1 < burst <= 1 + CATCH_UP / interval
    after = sent[rate // 2 + burst - 1 :]
    gaps = [b - a for a, b in itertools.pairwise(after)]
    assert min(gaps) >= interval - step


async def test_idle_time_does_not_bank_a_burst() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10, clock=clock)
    await limiter.acquire()
    clock.t += 60  # a long quiet spell (e.g. a resume)
    start = clock.now()
    times = await send_times(limiter, clock, 5)
    assert times[0] == start  # the quiet spell is not waited for again ...
    gaps = [b - a for a, b in itertools.pairwise(times)]  # ... nor spent as a burst
    assert all(g == pytest.approx(1 / (10 * SAFETY_FACTOR)) for g in gaps)


async def test_slow_down_lowers_rate_and_honours_retry_after() -> None:
    clock = FakeClock()
    limiter = RateLimiter(100, clock=clock)
    await limiter.acquire()
    limiter.slow_down(retry_after=2.0)
    assert limiter.rate == pytest.approx(70)
    assert await limiter.acquire() == pytest.approx(2.0)
    assert clock.sleeps == pytest.approx([2.0])
    assert limiter.slowdowns == 1


def test_rate_floor_after_many_slowdowns() -> None:
    clock = FakeClock()
    limiter = RateLimiter(100, clock=clock)
    for _ in range(50):
        limiter.slow_down(0)
        clock.t += RateLimiter.CUT_EVERY
    assert limiter.rate == pytest.approx(100 * RateLimiter.MIN_FRACTION)


def test_a_burst_of_rate_limit_errors_cuts_the_rate_once() -> None:
    # Requests in flight together meet a full window: their 429s come back together and
    # say one thing, "too fast", so the rate drops once (to 70), not six times (to 12).
    clock = FakeClock()
    limiter = RateLimiter(100, clock=clock)
    for _ in range(6):
        limiter.slow_down(1.0)
        clock.t += 0.01
    assert limiter.rate == pytest.approx(70)
    assert limiter.slowdowns == 6
    clock.t += RateLimiter.CUT_EVERY
    limiter.slow_down(1.0)
    assert limiter.rate == pytest.approx(49)


def test_rate_recovers_after_clean_requests_but_not_above_configured() -> None:
    limiter = RateLimiter(10, clock=FakeClock())
    limiter.slow_down(0)
    slowed = limiter.rate
    for _ in range(1000):
        limiter.record_success()
    assert limiter.rate == pytest.approx(10)
    assert slowed < 10


async def test_pause_holds_everyone() -> None:
    clock = FakeClock()
    limiter = RateLimiter(1000, clock=clock)
    limiter.pause(30)
    start = clock.now()
    times = await send_times(limiter, clock, 3)
    assert times[0] - start == pytest.approx(30)
    assert times[2] - times[0] == pytest.approx(2 / (1000 * SAFETY_FACTOR))


@pytest.mark.parametrize(
    ("kwargs", "flag"),
    [
        ({"rate": 0, "max_in_flight": 1}, "--rate"),
        ({"rate": -1, "max_in_flight": 1}, "--rate"),
        ({"rate": 1, "max_in_flight": 0}, "--max-in-flight"),
        ({"rate": 1, "max_in_flight": 1, "max_attempts": 0}, "--max-attempts"),
        ({"rate": 1, "max_in_flight": 1, "max_spend": -1.0}, "--max-spend"),
    ],
)
def test_limits_reject_bad_values(kwargs: dict[str, float], flag: str) -> None:
    with pytest.raises(ConfigError, match=flag):
        Limits(**kwargs)  # type: ignore[arg-type]


# --- priority: polls for paid tasks before new tasks -----------------------------------


async def test_a_poll_takes_the_next_slot_ahead_of_queued_creates() -> None:
    clock = SteppedClock()
    limiter = RateLimiter(10, clock=clock)
    order: list[str] = []

    async def caller(name: str, priority: int) -> None:
        await limiter.acquire(priority)
        order.append(name)

    tasks = [asyncio.create_task(caller(f"create{i}", CREATE)) for i in range(5)]
    for _ in range(3):
        await asyncio.sleep(0)
    tasks.append(asyncio.create_task(caller("poll", POLL)))
    interval = 1 / (10 * SAFETY_FACTOR)
    for _ in range(40):
        clock.advance(interval / 4)
        for _ in range(5):
            await asyncio.sleep(0)
    await asyncio.wait_for(asyncio.gather(*tasks), 1)
    # create0 went at once; the poll, queued last, takes the very next slot.
    assert order == ["create0", "poll", "create1", "create2", "create3", "create4"]


async def test_a_cancelled_waiter_does_not_hold_up_the_queue() -> None:
    clock = SteppedClock()
    limiter = RateLimiter(10, clock=clock)
    sent: list[str] = []

    async def caller(name: str) -> None:
        await limiter.acquire()
        sent.append(name)

    tasks = {n: asyncio.create_task(caller(n)) for n in ("a", "b", "c", "d")}
    for _ in range(3):
        await asyncio.sleep(0)
    tasks["b"].cancel()  # sleeping towards its slot (the head)
    tasks["c"].cancel()  # waiting its turn
    for _ in range(40):
        clock.advance(0.05)
        for _ in range(5):
            await asyncio.sleep(0)
    await asyncio.wait_for(asyncio.gather(*tasks.values(), return_exceptions=True), 1)
    assert sent == ["a", "d"]


async def test_priority_semaphore_serves_polls_first_and_survives_cancellation() -> None:
    gate = PrioritySemaphore(1)
    await gate.acquire()
    order: list[str] = []

    async def holder(name: str, priority: int) -> None:
        await gate.acquire(priority)
        order.append(name)
        gate.release()

    waiting = [asyncio.create_task(holder(f"create{i}", CREATE)) for i in range(3)]
    cancelled = asyncio.create_task(holder("cancelled poll", POLL))
    waiting.append(asyncio.create_task(holder("poll", POLL)))
    await asyncio.sleep(0)
    cancelled.cancel()
    await asyncio.sleep(0)
    gate.release()
    await asyncio.wait_for(asyncio.gather(*waiting), 1)
    assert order == ["poll", "create0", "create1", "create2"]
    # Every unit came back: two more can be taken at once with a fresh holder.
    await asyncio.wait_for(gate.acquire(), 0.1)
