"""The spend cap's money and its watch on the provider's real charge (fake clock, no
network): values refused, earlier runs counted, the probe, re-pricing from a reported
cost or from the balance."""

from __future__ import annotations

import asyncio
import math

import pytest

from capbatch._run.spend import SpendGuard, check_money
from capbatch._run.spend_watch import SpendWatch
from tests.fakes import FakeClock


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, -0.01, "1", True])
def test_money_that_is_not_a_finite_amount_is_refused(value: object) -> None:
    with pytest.raises(ValueError, match="--max-spend"):
        check_money("--max-spend", value)  # type: ignore[arg-type]


def test_earlier_runs_count_against_the_cap() -> None:
    guard = SpendGuard(cap=1.0, price=0.3, spent_before=0.5)
    assert guard.reserve() == 0.3
    assert guard.reserve() is None and guard.cap_reached
    guard.adopt_lost()  # an earlier run's lost send moves from "before" to "uncertain"
    assert guard.committed() == pytest.approx(0.5 + 0.3)


class Account:
    """A balance the test charges by hand."""

    def __init__(self, balance: float = 10.0) -> None:
        self.balance = balance
        self.calls = 0

    async def read(self) -> float | None:
        self.calls += 1
        return self.balance


def watch_for(guard: SpendGuard, account: Account, *, cost_in_reply: bool = False) -> SpendWatch:
    notes: list[str] = []
    watch = SpendWatch(
        guard,
        balance_before=account.balance,
        check_balance=account.read,
        cost_in_reply=cost_in_reply,
        clock=FakeClock(),
        notice=notes.append,
    )
    watch.notes = notes  # type: ignore[attr-defined]
    return watch


async def test_until_the_price_is_confirmed_one_task_at_a_time() -> None:
    guard = SpendGuard(cap=1.0, price=0.0004)
    account = Account()
    watch = watch_for(guard, account)
    assert await watch.gate() is True  # the probe
    second = asyncio.create_task(watch.gate())
    await asyncio.sleep(0)
    assert not second.done()
    # The probe was charged 25 times the assumed price.
    account.balance -= 0.01
    await watch.probe_charged()
    watch.release_probe()
    assert await second is False  # confirmed: no more probing
    assert guard.price == pytest.approx(0.01) and guard.price_confirmed
    assert "charges $0.010000 a task" in watch.notes[0]  # type: ignore[attr-defined]


async def test_a_reported_cost_confirms_the_price_without_a_balance_call() -> None:
    guard = SpendGuard(cap=1.0, price=0.0007)
    account = Account()
    watch = watch_for(guard, account, cost_in_reply=True)
    assert await watch.gate() is True
    await watch.probe_charged(0.002)
    assert guard.price == pytest.approx(0.002) and account.calls == 0


@pytest.mark.parametrize("bad", [math.nan, -1.0, 1e9])
async def test_a_nonsense_reported_cost_is_never_a_price(bad: float) -> None:
    guard = SpendGuard(cap=1.0, price=0.0007)
    account = Account()
    watch = watch_for(guard, account, cost_in_reply=True)
    await watch.gate()
    await watch.probe_charged(bad)  # falls back on the balance
    assert guard.price == pytest.approx(0.0007) and account.calls == 1


async def test_later_the_balance_is_checked_now_and_then_and_the_price_raised() -> None:
    guard = SpendGuard(cap=100.0, price=0.001, price_confirmed=True)
    account = Account()
    watch = watch_for(guard, account)
    clock = watch._clock  # type: ignore[attr-defined]
    for _ in range(SpendWatch.CHECK_EVERY_TASKS):
        amount = guard.reserve()
        assert amount is not None
        guard.charge(amount, 0.001)
        account.balance -= 0.002  # the provider charges twice the price
        await watch.charged()
    assert account.calls == 0  # too soon after the start
    clock.t += SpendWatch.CHECK_MIN_SECONDS
    guard.charge(guard.reserve() or 0.0, 0.001)
    account.balance -= 0.002
    await watch.charged()
    assert account.calls == 1
    assert guard.price == pytest.approx(0.002)
    assert guard.spent == pytest.approx(0.002 * (SpendWatch.CHECK_EVERY_TASKS + 1))


def test_without_cost_or_balance_the_cap_says_it_counts_the_assumed_price() -> None:
    notes: list[str] = []
    SpendWatch(
        SpendGuard(cap=1.0, price=0.001),
        balance_before=None,
        check_balance=None,
        cost_in_reply=False,
        clock=FakeClock(),
        notice=notes.append,
    )
    assert "assumed price" in notes[0]
