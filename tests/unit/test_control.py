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


async def test_pause_holds_until_resume_from_another_thread() -> None:
    control = RunControl()
    control.pause()
    waiter = asyncio.create_task(control.checkpoint())
    await asyncio.sleep(0.2)
    assert not waiter.done()
    threading.Timer(0.05, control.resume).start()
    await asyncio.wait_for(waiter, timeout=2)


async def test_stop_wakes_paused_waiters_and_raises() -> None:
    control = RunControl()
    control.pause()
    waiter = asyncio.create_task(control.checkpoint())
    await asyncio.sleep(0.1)
    control.stop()
    with pytest.raises(RunStoppedByUser):
        await asyncio.wait_for(waiter, timeout=2)
    assert control.stopped and not control.paused
