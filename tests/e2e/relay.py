"""A relay in front of the emulator that can change requests on their way, so that the
emulator itself answers as a provider would after something changed in mid-run (a task
type withdrawn, an account setting): the refusals a test sees are the emulator's own.

It runs aiohttp in a thread of its own on 127.0.0.1 and a free port, so a test can run
the real CLI as a subprocess against it.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import aiohttp
from aiohttp import web

#: ``rewrite(endpoint, body, n)``: the body to send on, ``n`` counting that endpoint's
#: requests from 0.
Rewrite = Callable[[str, dict[str, Any], int], dict[str, Any]]


class Relay:
    def __init__(self, upstream: str, rewrite: Rewrite) -> None:
        self.upstream = upstream.rstrip("/")
        self.rewrite = rewrite
        self.counts: dict[str, int] = {}
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="relay", daemon=True)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        endpoint = request.path.strip("/")
        n = self.counts.get(endpoint, 0)
        self.counts[endpoint] = n + 1
        body = self.rewrite(endpoint, json.loads(await request.read() or b"{}"), n)
        assert self._session is not None
        async with self._session.post(self.upstream + request.path, json=body) as reply:
            content = await reply.read()
            return web.Response(status=reply.status, body=content, content_type="application/json")

    async def _open(self) -> None:
        self._session = aiohttp.ClientSession()
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_route("POST", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        await web.SockSite(self._runner, sock).start()
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"

    async def _close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def _run(self) -> None:
        self._loop.run_until_complete(self._open())
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._loop.run_until_complete(self._close())
            self._loop.close()

    def start(self) -> Relay:
        self._thread.start()
        if not self._ready.wait(timeout=30):
            raise RuntimeError("the relay did not start within 30 s")
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=20)


@contextmanager
def relay(upstream: str, rewrite: Rewrite) -> Iterator[Relay]:
    """A running ``Relay`` to ``upstream`` with ``rewrite``."""
    running = Relay(upstream, rewrite).start()
    try:
        yield running
    finally:
        running.stop()
