"""Pause, resume and stop switches, as the scheduler sees them."""

from __future__ import annotations

import asyncio
import threading

import pytest

from capbatch._run.control import RunControl, RunStoppedByUser


async def test_running_control_lets_requests_through() -> None:
    control = RunControl()
    await asyncio.wait_for(control.checkpoint(), timeout=1)
    assert not control.paused and not control.stopped


async def spin(rounds: int = 50) -> None:
    """Let the event loop run ``rounds`` times: a paused checkpoint looks at its switch
    on every round when its poll interval is 0 (no real time passes)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


async def test_pause_holds_until_resume_from_another_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(RunControl, "POLL_SECONDS", 0.0)
    control = RunControl()
    control.pause()
    waiter = asyncio.create_task(control.checkpoint())
    await spin()
    assert not waiter.done()
    resumer = threading.Thread(target=control.resume)
    resumer.start()
    resumer.join()
    await asyncio.wait_for(waiter, timeout=2)


async def test_stop_wakes_paused_waiters_and_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(RunControl, "POLL_SECONDS", 0.0)
    control = RunControl()
    control.pause()
    waiter = asyncio.create_task(control.checkpoint())
    await spin()
    assert not waiter.done()
    control.stop()
    with pytest.raises(RunStoppedByUser):
        await asyncio.wait_for(waiter, timeout=2)
    assert control.stopped and not control.paused
