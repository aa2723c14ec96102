"""The cluster's budget and a worker's leases, without a cluster: the ``Budget`` class is
the actor's code, called directly; a fake handle stands in for the actor."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import pytest

from capbatch._exceptions import RunInterrupted
from capbatch._ray import budget as budget_module
from capbatch._ray.budget import HORIZON, RAY_SAFETY, SLOT_TOLERANCE, Budget
from capbatch._ray.leases import ClockMatch, LeasedLimiter, LeasedSpend
from capbatch._run.gate import RunStopped
from capbatch._run.limits import CREATE

pytestmark = pytest.mark.ray

PRICE = 0.001


class _Now:
    """A clock the budget reads (``time.monotonic``), moved by hand."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def now() -> _Now:
    return _Now()


def _max_in_window(times: list[float]) -> int:
    """The most of ``times`` in any half-open one-second window."""
    times, best, start = sorted(times), 0, 0
    for end, t in enumerate(times):
        while times[start] <= t - 1.0:
            start += 1
        best = max(best, end - start + 1)
    return best


@pytest.mark.parametrize("rate", [1, 7, 10, 37, 100, 999])
async def test_slots_sent_late_by_the_tolerance_never_exceed_the_rate(
    now: _Now, rate: float
) -> None:
    """Every slot of 5 seconds, each sent at its worst (as late as a worker may), the
    late ones next to punctual ones: no one-second window holds more than the rate."""
    budget = Budget(rate=rate, max_in_flight=10, cap=None, price=PRICE, clock=now)
    slots: list[float] = []
    end = now.t + 5
    while not slots or slots[-1] < end:
        _, granted = await budget.take_slots("w", 16)
        slots += granted
        assert budget._next_slot is not None
        now.t = max(now.t, budget._next_slot - HORIZON / 2)  # no real sleep in the call
    assert all(
        b - a == pytest.approx(1 / (RAY_SAFETY * rate)) for a, b in itertools.pairwise(slots)
    )
    worst = [s + (SLOT_TOLERANCE if i % 2 else 0.0) for i, s in enumerate(slots)]
    assert _max_in_window(worst) <= rate
    assert (
        _max_in_window([s + SLOT_TOLERANCE * ((i // 3) % 2) for i, s in enumerate(slots)]) <= rate
    )


async def test_slots_are_granted_no_further_ahead_than_the_horizon(now: _Now) -> None:
    budget = Budget(rate=10, max_in_flight=10, cap=None, price=PRICE, clock=now)
    answered, first = await budget.take_slots("a", 16)
    assert answered == now.t and first[0] == now.t
    assert len(first) == int(HORIZON * 10 * RAY_SAFETY) + 1
    assert first[-1] - now.t <= HORIZON
    # The next worker's slots follow on the same timeline.
    now.t += 0.2
    _, second = await asyncio.wait_for(budget.take_slots("b", 1), 5)
    assert second[0] == pytest.approx(first[-1] + 1 / (RAY_SAFETY * 10))


async def test_a_rate_limit_answer_slows_every_worker_and_pauses(now: _Now) -> None:
    budget = Budget(rate=10, max_in_flight=10, cap=None, price=PRICE, clock=now)
    budget.slow_down(2.0)
    assert budget.rate == pytest.approx(7.0)
    now.t += 1.9
    assert budget._next_slot == pytest.approx(now.t + 0.1)


async def test_in_flight_slots_are_shared_and_a_dead_workers_come_back(now: _Now) -> None:
    budget = Budget(rate=10, max_in_flight=4, cap=None, price=PRICE, clock=now)
    budget.heartbeat("a")
    budget.heartbeat("b")
    granted, share = await budget.take_flights("a", 8)
    assert (granted, share) == (2, 2)  # two live workers: half each
    granted, _ = await budget.take_flights("b", 8)
    assert granted == 2
    waiting = asyncio.ensure_future(budget.take_flights("b", 1))
    await asyncio.sleep(0)
    assert not waiting.done()  # the cap is held
    now.t += budget_module.SILENT_AFTER + 1  # "a" stops answering (killed)
    budget.heartbeat("b")
    granted, _ = await asyncio.wait_for(waiting, 5)
    assert granted == 1 and budget.reclaimed == 1


def test_money_is_leased_up_to_the_cap_and_a_dead_worker_s_sends_stay_counted(
    now: _Now,
) -> None:
    budget = Budget(rate=10, max_in_flight=4, cap=5 * PRICE, price=PRICE, clock=now)
    assert budget.lease_money("a", 4) == (4, PRICE)
    assert budget.lease_money("b", 4) == (1, PRICE)  # the cap: one task's price left
    assert budget.money.cap_reached
    budget.settle("a", [("charge", PRICE, PRICE), ("release", PRICE, 0.0)])
    budget.settle("b", [("uncertain", PRICE, PRICE)])
    assert budget.money.spent == pytest.approx(PRICE)
    assert budget.money.uncertain == pytest.approx(PRICE)
    budget.heartbeat("a", spare=PRICE)  # "a" holds one spare, one behind a send
    now.t += budget_module.SILENT_AFTER + 1
    budget.heartbeat("b")
    assert budget.money.uncertain == pytest.approx(2 * PRICE)  # the send may be charged
    assert budget.money.reserved == pytest.approx(0.0)
    assert budget.money.committed() == pytest.approx(3 * PRICE)


class _Handle:
    """A stand-in actor handle: ``handle.method.remote(...)`` calls ``Budget`` at once."""

    def __init__(self, target: Budget) -> None:
        self._target = target

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._target, name)

        class _Remote:
            @staticmethod
            def remote(*args: Any, **kwargs: Any) -> Any:
                return method(*args, **kwargs)

        return _Remote()


def test_a_worker_s_spend_moves_give_the_budget_the_run_s_figures(
    now: _Now, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ray

    monkeypatch.setattr(ray, "get", lambda value: value)
    budget = Budget(
        rate=10, max_in_flight=4, cap=3 * PRICE, price=PRICE, spent_before=PRICE, clock=now
    )
    spend = LeasedSpend(_Handle(budget), "w", cap=3 * PRICE, price=PRICE)
    first, second = spend.reserve(), spend.reserve()
    assert first == second == PRICE
    assert spend.reserve() is None and spend.cap_reached  # 1 earlier + 2 = the cap
    spend.charge(first, PRICE)
    spend.mark_uncertain(second)
    spend.give_back()
    assert budget.money.spent == pytest.approx(PRICE)
    assert budget.money.uncertain == pytest.approx(PRICE)
    assert budget.money.reserved == pytest.approx(0.0)
    assert budget.money.committed() == pytest.approx(3 * PRICE)


def test_uncapped_spend_asks_nothing_and_still_reports_charges(now: _Now) -> None:
    budget = Budget(rate=10, max_in_flight=4, cap=None, price=PRICE, clock=now)
    spend = LeasedSpend(_Handle(budget), "w", cap=None, price=PRICE)
    reserved = spend.reserve()
    assert reserved == PRICE and budget.calls == 0
    spend.charge(reserved, 2 * PRICE)
    spend.adopt_lost()
    spend.flush()
    assert budget.money.spent == pytest.approx(2 * PRICE)
    assert budget.money.uncertain == pytest.approx(PRICE)


def test_the_clock_match_keeps_the_fastest_exchange() -> None:
    match = ClockMatch()
    match.observe(asked=10.0, heard=10.2, remote_now=110.15)  # 0.2 s round trip
    match.observe(asked=11.0, heard=11.002, remote_now=111.0)  # 2 ms: better
    match.observe(asked=12.0, heard=12.5, remote_now=112.4)  # slow: ignored
    assert match.error == pytest.approx(0.001)
    assert match.local(120.0) == pytest.approx(20.001)


async def test_a_stop_reaches_every_waiting_worker_and_each_heartbeat(now: _Now) -> None:
    """The driver's first signal (``Budget.stop``): the workers' waiting
    ``until_stopped`` calls are answered at once, later ones too, and each heartbeat's
    answer carries it; the workers' next heartbeats give the count of requests out the
    stop answers with. The first stop is the one kept."""
    budget = Budget(rate=10, max_in_flight=4, cap=None, price=PRICE, clock=now)
    assert budget.heartbeat("a", sending=1) == (4, None)
    waiting = [asyncio.ensure_future(budget.until_stopped()) for _ in range(2)]
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiting)  # no stop yet: the calls wait
    stopping = asyncio.ensure_future(budget.stop("interrupted by SIGINT", 2))
    answers = await asyncio.wait_for(asyncio.gather(*waiting), 5)
    assert answers == [("interrupted by SIGINT", 2)] * 2
    assert not stopping.done()  # waiting for the worker's word
    assert budget.heartbeat("a", sending=2) == (4, ("interrupted by SIGINT", 2))
    assert await asyncio.wait_for(stopping, 5) == 2
    assert await asyncio.wait_for(budget.stop("interrupted by SIGTERM", 15), 5) == 2
    assert await asyncio.wait_for(budget.until_stopped(), 5) == ("interrupted by SIGINT", 2)


async def test_a_stop_counts_the_requests_out_of_live_workers_only(now: _Now) -> None:
    """A dead worker's requests are not waited for; a live worker that does not answer
    the stop is waited for a bounded time, its last word counted."""
    budget = Budget(rate=10, max_in_flight=8, cap=None, price=PRICE, clock=now)
    budget.heartbeat("dead", sending=5)
    now.t += budget_module.SILENT_AFTER + 1  # "dead" stops answering (killed)
    budget.heartbeat("a", sending=3)
    budget.heartbeat("b", sending=1)
    stopping = asyncio.ensure_future(budget.stop("interrupted by SIGINT", 2))
    await asyncio.sleep(0)
    budget.heartbeat("a", sending=2)  # "a" answers the stop; "b" never does
    started = time.monotonic()
    assert await asyncio.wait_for(stopping, 5) == 3
    assert time.monotonic() - started < budget_module.STOP_ANSWERS + 0.5


async def test_a_stop_refuses_requests_at_the_gate_and_lets_those_out_go_first() -> None:
    """A request whose slot window passed during its journal write (so journaled as
    sent) takes the next slot before any request still at the gate; the run's stop
    refuses those at the gate at once, and the one out still leaves."""
    budget = Budget(rate=5, max_in_flight=4, cap=None, price=PRICE)  # the real clock
    limiter = LeasedLimiter(_Handle(budget), "w", 5)

    async def out_late() -> None:
        await limiter.acquire(CREATE)
        await asyncio.sleep(0.1)  # the journal write: the slot's window passes
        await limiter.ready(CREATE)

    late = asyncio.ensure_future(out_late())
    await asyncio.sleep(0.01)
    at_gate = [asyncio.ensure_future(limiter.acquire(CREATE)) for _ in range(4)]
    await asyncio.wait_for(late, 5)  # the next slot (1/5 s on) is the late one's
    assert not any(w.done() for w in at_gate) and limiter.dropped == 1
    stop = RunInterrupted("interrupted by SIGINT", signal_number=2)
    limiter.stop(stop)
    refused = await asyncio.wait_for(asyncio.gather(*at_gate, return_exceptions=True), 1)
    assert all(isinstance(r, RunStopped) and r.error is stop for r in refused)
    with pytest.raises(RunStopped):
        await limiter.acquire(CREATE)
