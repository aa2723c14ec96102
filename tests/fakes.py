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


def key_forms(key: str) -> dict[str, str]:
    """The forms in which a hostile server may echo an account key back, as raw reply
    text: cases, pieces, JSON, URL and HTML escapes (once or twice), and mixtures."""
    return {
        "exact": key,
        "lower": key.lower(),
        "upper": key.upper(),
        "prefix8": key[:8],
        "middle8": key[len(key) // 2 - 4 : len(key) // 2 + 4],
        "middle7": key[5:12],
        "suffix6": key[-6:],
        # Inside JSON text: decodes to the key itself.
        "json_dash": key.replace("-", "\\u002d"),
        "json_all": "".join(f"\\u{ord(c):04x}" for c in key),
        "json_all_upper_hex": "".join(f"\\u{ord(c):04X}" for c in key),
        # Inside JSON text: decodes to a string that still holds the escapes.
        "json_twice": key.replace("-", "\\\\u002d"),
        "json_literal": "".join(f"\\\\u{ord(c):04x}" for c in key),
        "url_dash": key.replace("-", "%2D"),
        "url_all": "".join(f"%{ord(c):02X}" for c in key),
        "url_all_lower": "".join(f"%{ord(c):02x}" for c in key),
        "url_twice": key.replace("-", "%252D"),
        "html": "".join(f"&#{ord(c)};" for c in key),
        "mixed": key[:4].upper() + "%" + f"{ord(key[4]):02X}" + key[5:].lower(),
    }


#: Modules a fast start must not load: ``import capbatch``, ``capbatch --help``.
HEAVY_MODULES = (
    "pandas",
    "numpy",
    "pyarrow",
    "aiohttp",
    "httpx",
    "matplotlib",
    "rapidfuzz",
    "ddddocr",
    "ipywidgets",
    "PIL",
    "tqdm",
)
