"""Client CPU per request of the HTTP transports capbatch could use, at 50 in flight.

Contenders, all in one run and against the same server:

  httpx default    httpx.AsyncClient with its own (httpcore) transport
  httpx-aiohttp    httpx.AsyncClient over the ``httpx-aiohttp`` package's transport
  capbatch/httpx   httpx.AsyncClient over capbatch._providers.transport.AiohttpTransport: the path
                   when a caller passes an httpx client built with make_http_client()
  capbatch         what ProviderClient does on its own client: AiohttpTransport.post,
                   the same pool and error mapping without httpx's Request/Response
  raw aiohttp      aiohttp.ClientSession directly: the floor

The server is the capbatch emulator (``python -m capbatch serve --solver constant``)
started as a separate process, so its CPU is not counted. Every request is a realistic
``createTask`` with an ~8 KB base64 image body; every reply is parsed as JSON and checked.

Client CPU is ``time.process_time()`` around the timed section (after a warm-up) divided
by the number of requests. Each contender runs ``--repeats`` times (contenders
interleaved) and the median is printed. A contender whose warm-up shows it would take
more than ``--seconds-per-run`` for ``--requests`` requests runs fewer requests (the
table says how many), so the whole bench stays under a minute.

Goal checked: capbatch's transport costs <= 800 us of client CPU per request.

    python bench/transport.py                  # starts the emulator itself
    python bench/transport.py --requests 5000 --in-flight 50 --repeats 5
    python bench/transport.py --url http://127.0.0.1:8765   # an emulator already running
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import platform
import random
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import aiohttp
import httpx
from _emulator import emulator

API_KEY = "bench-key"
GOAL_US = 800.0
WARMUP = 200

#: One request: send the body, return the parsed JSON reply.
Send = Callable[[], Awaitable[dict[str, Any]]]


# --- the request body -----------------------------------------------------------------


def image_b64(target_chars: int = 8192, seed: int = 7) -> str:
    """Base64 of a PNG of random pixels (incompressible) close to ``target_chars``."""
    from PIL import Image

    rng = random.Random(seed)
    side = 16
    while True:
        image = Image.frombytes("RGB", (side, side), rng.randbytes(side * side * 3))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        encoded = base64.b64encode(buffer.getvalue()).decode()
        if len(encoded) >= target_chars:
            return encoded
        side += 1


def create_task_body() -> bytes:
    body = {
        "clientKey": API_KEY,
        "task": {"type": "ImageToTextTask", "body": image_b64(), "module": "common"},
    }
    return json.dumps(body, separators=(",", ":")).encode()


# --- the emulator process -------------------------------------------------------------


# --- contenders -----------------------------------------------------------------------

HEADERS = {"Content-Type": "application/json"}
TIMEOUT = httpx.Timeout(30.0, connect=10.0)


@dataclass
class Contender:
    name: str
    #: Build a client inside the running loop; return (send, close).
    open: Callable[[str, bytes], tuple[Send, Callable[[], Awaitable[None]]]]
    cpu_us: list[float] = field(default_factory=list)
    rps: list[float] = field(default_factory=list)
    requests: int = 0
    failure: str | None = None


def _httpx_sender(client: httpx.AsyncClient, url: str, body: bytes) -> Send:
    async def send() -> dict[str, Any]:
        response = await client.post(url, content=body, headers=HEADERS)
        data: dict[str, Any] = response.json()
        return data

    return send


def open_httpx_default(url: str, body: bytes) -> tuple[Send, Callable[[], Awaitable[None]]]:
    client = httpx.AsyncClient(
        timeout=TIMEOUT, limits=httpx.Limits(max_connections=100, max_keepalive_connections=100)
    )
    return _httpx_sender(client, url, body), client.aclose


def open_httpx_aiohttp(url: str, body: bytes) -> tuple[Send, Callable[[], Awaitable[None]]]:
    import httpx_aiohttp

    transport = httpx_aiohttp.AiohttpTransport(
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=100)
    )
    client = httpx.AsyncClient(transport=transport, timeout=TIMEOUT)
    return _httpx_sender(client, url, body), client.aclose


def open_capbatch_httpx(url: str, body: bytes) -> tuple[Send, Callable[[], Awaitable[None]]]:
    from capbatch._providers.client import make_http_client

    client = make_http_client(max_connections=100)
    return _httpx_sender(client, url, body), client.aclose


def open_capbatch(url: str, body: bytes) -> tuple[Send, Callable[[], Awaitable[None]]]:
    from capbatch._providers.transport import AiohttpTransport

    transport = AiohttpTransport(max_connections=100)

    async def send() -> dict[str, Any]:
        reply = await transport.post(url, body, headers=HEADERS, timeout=TIMEOUT)
        data: dict[str, Any] = json.loads(reply.content)
        return data

    return send, transport.aclose


def open_raw_aiohttp(url: str, body: bytes) -> tuple[Send, Callable[[], Awaitable[None]]]:
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100))

    async def send() -> dict[str, Any]:
        async with session.post(url, data=body, headers=HEADERS) as response:
            data: dict[str, Any] = json.loads(await response.read())
            return data

    return send, session.close


CONTENDERS = [
    ("httpx default", open_httpx_default),
    ("httpx-aiohttp", open_httpx_aiohttp),
    ("capbatch/httpx", open_capbatch_httpx),
    ("capbatch", open_capbatch),
    ("raw aiohttp", open_raw_aiohttp),
]


# --- the measurement ------------------------------------------------------------------


async def drive(send: Send, total: int, in_flight: int) -> int:
    """``total`` requests with ``in_flight`` workers; the number of bad replies."""
    remaining = total
    bad = 0

    async def worker() -> None:
        nonlocal remaining, bad
        while remaining > 0:
            remaining -= 1
            reply = await send()
            if reply.get("errorId") != 0 or reply.get("status") != "ready":
                bad += 1

    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return bad


async def measure(
    contender: Contender, url: str, body: bytes, requests: int, in_flight: int, budget: float
) -> None:
    send, close = contender.open(url + "/createTask", body)
    try:
        start_cpu = time.process_time()
        bad = await drive(send, WARMUP, in_flight)
        warm_cpu = (time.process_time() - start_cpu) / WARMUP
        # Bound the timed section to about `budget` seconds of client CPU.
        n = requests if warm_cpu * requests <= budget else max(500, int(budget / warm_cpu))
        n = min(n, requests)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        bad += await drive(send, n, in_flight)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    finally:
        await close()
    if bad:
        raise RuntimeError(f"{bad} replies were not a ready answer")
    contender.cpu_us.append(cpu / n * 1e6)
    contender.rps.append(n / wall)
    contender.requests = n


async def bench(url: str, args: argparse.Namespace) -> list[Contender]:
    body = create_task_body()
    contenders = [Contender(name, opener) for name, opener in CONTENDERS]
    for _ in range(args.repeats):
        for contender in contenders:
            if contender.failure:
                continue
            try:
                await measure(
                    contender, url, body, args.requests, args.in_flight, args.seconds_per_run
                )
            except Exception as exc:  # report, do not stop the other contenders
                contender.failure = f"{type(exc).__name__}: {str(exc)[:100]}"
    print(f"request body: createTask, {len(body):,} bytes of JSON")
    return contenders


# --- output ---------------------------------------------------------------------------


def version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


def print_table(contenders: list[Contender], args: argparse.Namespace) -> None:
    base = next((c for c in contenders if c.name == "httpx default" and c.cpu_us), None)
    base_cpu = statistics.median(base.cpu_us) if base else None
    base_rps = statistics.median(base.rps) if base else None
    print()
    print(
        f"{'transport':<15} {'requests':>8} {'CPU us/req':>11} {'req/s':>8} "
        f"{'CPU vs httpx':>13} {'req/s vs httpx':>15}"
    )
    print("-" * 75)
    for c in contenders:
        if c.failure or not c.cpu_us:
            print(f"{c.name:<15} FAILED  {c.failure}")
            continue
        cpu = statistics.median(c.cpu_us)
        rps = statistics.median(c.rps)
        cpu_ratio = f"{cpu / base_cpu:.2f}x" if base_cpu else "-"
        rps_ratio = f"{rps / base_rps:.1f}x" if base_rps else "-"
        print(
            f"{c.name:<15} {c.requests:>8} {cpu:>11.0f} {rps:>8.0f} {cpu_ratio:>13} {rps_ratio:>15}"
        )
    print()
    print(
        f"median of {args.repeats} runs, {args.in_flight} in flight, "
        f"{WARMUP} warm-up requests per run"
    )
    ours = next(c for c in contenders if c.name == "capbatch")
    if ours.cpu_us:
        cpu = statistics.median(ours.cpu_us)
        verdict = "met" if cpu <= GOAL_US else "NOT met"
        print(f"goal: capbatch <= {GOAL_US:.0f} us client CPU/request: {verdict} ({cpu:.0f} us)")
    else:
        print(f"goal: capbatch <= {GOAL_US:.0f} us client CPU/request: NOT measured (failed)")


def print_machine() -> None:
    print(
        f"machine: {os.cpu_count()} cores, {platform.machine()}, {platform.system()} "
        f"{platform.release()}; Python {platform.python_version()} "
        f"({platform.python_implementation()})"
    )
    packages = ("httpx", "httpcore", "aiohttp", "httpx-aiohttp")
    print("packages: " + ", ".join(f"{p} {version(p)}" for p in packages))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=3000, help="timed requests per run")
    parser.add_argument("--in-flight", type=int, default=50, help="requests in flight")
    parser.add_argument("--repeats", type=int, default=3, help="runs per contender (median)")
    parser.add_argument(
        "--seconds-per-run",
        type=float,
        default=4.0,
        help="client CPU budget of one timed run; slower contenders run fewer requests",
    )
    parser.add_argument("--url", help="use an emulator already running at this base URL")
    args = parser.parse_args()

    print_machine()
    started = time.perf_counter()
    if args.url:
        print(f"server: {args.url} (already running)")
        contenders = asyncio.run(bench(args.url.rstrip("/"), args))
    else:
        with emulator([], api_key=API_KEY) as (url, _pid):
            print(f"server: capbatch emulator, solver constant, separate process at {url}")
            contenders = asyncio.run(bench(url, args))
    print_table(contenders, args)
    print(f"bench time: {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
