"""Test doubles shared by unit tests: a fake clock that never sleeps for real."""

from __future__ import annotations

import asyncio
import heapq
import itertools


class FakeClock:
    """Time that moves only when someone sleeps; records every sleep."""

    def __init__(self, start: float = 1000.0) -> None:
        self.t = start
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += max(0.0, seconds)
        await asyncio.sleep(0)


class SteppedClock:
    """A clock the test moves by hand. ``advance`` wakes every sleeper then due at once,
    in deadline order, as a real event loop does after a stall."""

    def __init__(self) -> None:
        self.t = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._count = itertools.count()

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.t + seconds, next(self._count), future))
        await future

    def advance(self, seconds: float) -> None:
        self.t += seconds
        while self._sleepers and self._sleepers[0][0] <= self.t:
            future = heapq.heappop(self._sleepers)[2]
            if not future.done():  # a cancelled sleeper is gone, as in a real loop
                future.set_result(None)
