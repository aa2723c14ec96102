"""The outage gate on a fake clock: when the provider is taken to be down, how it is
probed, how the run goes on, and when it stops."""

from __future__ import annotations

import asyncio

import pytest

from capbatch._exceptions import ConnectionFailed, InvalidTask, ServiceUnavailable
from capbatch._run.outage import OutageGate, ProviderOutage, is_outage_error
from tests.fakes import FakeClock

REFUSED = ConnectionFailed("connect refused", error_code="CONNECT_FAILED")


def test_outage_errors_are_the_network_and_an_unwell_service_not_a_bad_row() -> None:
    assert is_outage_error(REFUSED)
    assert is_outage_error(ServiceUnavailable("HTTP 503", error_code="HTTP_503"))
    assert not is_outage_error(InvalidTask("bad image"))


def test_a_few_failures_or_a_quick_burst_is_not_an_outage() -> None:
    clock = FakeClock()
    gate = OutageGate(clock)
    for _ in range(OutageGate.FAILURES - 1):
        assert not gate.failed(REFUSED, probe=False)
        clock.t += 1
    gate.succeeded(probe=False)  # one answer resets the streak
    for _ in range(OutageGate.FAILURES * 3):
        assert not gate.failed(REFUSED, probe=False)  # all within the same instant


def down_gate(clock: FakeClock, **kw: float) -> OutageGate:
    gate = OutageGate(clock, **kw)
    for _ in range(OutageGate.FAILURES):
        gate.failed(REFUSED, probe=False)
        clock.t += OutageGate.MIN_SECONDS / (OutageGate.FAILURES - 1)
    assert gate.down and gate.outages == 1
    return gate


async def test_while_down_one_request_probes_at_a_time_with_doubling_backoff() -> None:
    clock = FakeClock()
    gate = down_gate(clock)
    waits = []
    for _ in range(4):
        before = clock.now()
        assert await gate.admit() is True
        waits.append(clock.now() - before)
        gate.failed(REFUSED, probe=True)
    # First probe after PROBE_FIRST (counted from going down), then doubling.
    assert waits[1:] == pytest.approx([2.0, 4.0, 8.0])


async def test_others_wait_for_the_probe_and_go_when_the_provider_answers() -> None:
    clock = FakeClock()
    gate = down_gate(clock)
    assert await gate.admit() is True  # the probe
    waiters = [asyncio.create_task(gate.admit()) for _ in range(5)]
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiters)
    gate.succeeded(probe=True)
    assert await asyncio.gather(*waiters) == [False] * 5
    assert not gate.down and gate.seconds_down > 0


async def test_a_failed_probe_hands_the_next_probe_to_a_waiter() -> None:
    clock = FakeClock()
    gate = down_gate(clock)
    assert await gate.admit() is True
    waiter = asyncio.create_task(gate.admit())
    await asyncio.sleep(0)
    gate.failed(REFUSED, probe=True)
    assert await waiter is True  # it probes next, after the back-off


async def test_an_outage_longer_than_the_bound_stops_the_run() -> None:
    clock = FakeClock()
    gate = down_gate(clock, max_outage=10.0)
    with pytest.raises(ProviderOutage, match="has not answered for 10 s"):
        for _ in range(20):  # bounded: the gate must give up well before this
            assert await gate.admit() is True
            gate.failed(REFUSED, probe=True)
    assert clock.now() - 1000.0 <= 10.0 + OutageGate.MIN_SECONDS + 0.01


async def test_a_long_retry_after_is_an_outage_probed_sooner_than_asked() -> None:
    clock = FakeClock()
    gate = OutageGate(clock)
    gate.long_pause(86_400.0, "ERROR_RATE_LIMIT: Retry-After 86400 s")
    assert gate.down
    before = clock.now()
    assert await gate.admit() is True
    assert clock.now() - before == pytest.approx(OutageGate.PROBE_MAX)


async def test_a_cancelled_probe_lets_another_request_probe() -> None:
    clock = FakeClock()
    gate = down_gate(clock)
    assert await gate.admit() is True
    gate.abandoned(probe=True)
    assert await asyncio.wait_for(gate.admit(), timeout=5) is True
