"""A small hostile HTTP server for tests: a provider that lies, leaks and stalls.

``HostileServer`` speaks just enough of the task protocol (``/createTask``,
``/getTaskResult``, ``/getBalance``, ``/feedbackTask``, ...) to drive ``capbatch run``,
and answers each endpoint from a script of ``Reply`` objects, so a test can make the
provider misbehave in one precise way:

- canned JSON or raw bodies, any status and headers (``Retry-After: inf``);
- the request's own ``clientKey`` echoed back in a chosen form (``KEY_FORMS``: lower,
  upper, first 8 characters, JSON ``\\u`` escapes, URL escapes, ...) inside a JSON
  ``errorDescription`` or a non-JSON body;
- huge bodies generated lazily (200 MB never sits in the server's memory);
- slow drips, one byte every few seconds;
- lone surrogates, terminal escapes and NaN or negative costs (write them with
  ``raw_json``: ``json.dumps`` turns a lone surrogate into ``\\ud800`` and a NaN into
  ``NaN``, both of which ``json.loads`` accepts).

It runs aiohttp in a thread of its own on 127.0.0.1 and a free port, so a test can run
the real CLI as a subprocess while it serves; it counts every request per endpoint.
Every loop in it is bounded in count and time.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes import key_forms

#: Longest a drip may last, whatever the script says, in seconds.
MAX_DRIP_SECONDS = 300.0
_CHUNK = 64 * 1024


#: The forms the end-to-end tests make a hostile server echo (``tests.fakes.key_forms``
#: has more; the unit tests of the mask try them all).
KEY_FORMS = (
    "exact", "lower", "upper", "prefix8", "middle8", "json_dash", "json_all",
    "json_literal", "url_dash", "url_all",
)  # fmt: skip


@dataclass
class Reply:
    """One scripted answer. ``body`` is bytes, a JSON-able object, or a function of
    the request's parsed JSON giving either; ``{key:FORM}`` in a str body template
    (see ``echo``) is the request's clientKey in that form."""

    body: Any = None
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    #: Stream this many bytes of filler after ``body`` (chunked, no Content-Length).
    huge: int = 0
    #: Send the status line, then one byte every ``drip`` seconds (at most
    #: ``drip_bytes`` of them, and never longer than ``MAX_DRIP_SECONDS``).
    drip: float = 0.0
    drip_bytes: int = 1000


def raw_json(obj: Any) -> bytes:
    """``obj`` as JSON text, NaN and lone surrogates (as ``\\ud800``) included."""
    return json.dumps(obj).encode()


def echo(template: str, form: str, *, content_type: str = "application/json") -> Reply:
    """A reply whose text is ``template`` with ``{key}`` replaced, inside the raw body
    text, by the request's clientKey in ``form`` (one of ``KEY_FORMS``)."""

    def render(request: Mapping[str, Any]) -> bytes:
        key = str(request.get("clientKey", ""))
        return template.replace("{key}", key_forms(key)[form]).encode()

    return Reply(body=render, headers={"Content-Type": content_type})


def ready(text: str = "ok", **extra: Any) -> Reply:
    return Reply(body={"errorId": 0, "status": "ready", "solution": {"text": text}, **extra})


def error(code: str, description: str = "", *, status: int = 200, **headers: str) -> Reply:
    body = {"errorId": 1, "errorCode": code, "errorDescription": description}
    return Reply(body=body, status=status, headers=headers)


DEFAULTS: dict[str, Reply] = {
    "/createTask": Reply(body=lambda request: {"errorId": 0, "taskId": "task-1"}),
    "/getTaskResult": ready("ok"),
    "/getBalance": Reply(body={"errorId": 0, "balance": 100.0}),
    "/feedbackTask": Reply(body={"errorId": 0, "message": "ok"}),
}


class HostileServer:
    """A scripted provider on loopback; use as a context manager (see ``serve``)."""

    def __init__(self, script: Mapping[str, list[Reply] | Reply] | None = None) -> None:
        self._script: dict[str, list[Reply]] = {}
        for path, replies in {**DEFAULTS, **(script or {})}.items():
            self._script[path] = list(replies) if isinstance(replies, list) else [replies]
        self.counts: Counter[str] = Counter()
        self.keys_seen: set[str] = set()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self.url = ""

    # --- the script ---------------------------------------------------------------------

    def _next(self, path: str) -> Reply:
        with self._lock:
            seen = self.counts[path]
            self.counts[path] += 1
            replies = self._script.get(path)
        if not replies:
            return Reply(body={"errorId": 1, "errorCode": "ERROR_NO_SUCH_METHOD"}, status=404)
        # The last reply of a script repeats for ever.
        return replies[min(seen, len(replies) - 1)]

    def count(self, path: str) -> int:
        with self._lock:
            return self.counts[path]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            parsed = json.loads(raw) if raw else {}
        except ValueError:
            parsed = {}
        if not isinstance(parsed, dict):
            parsed = {}
        if "clientKey" in parsed:
            with self._lock:
                self.keys_seen.add(str(parsed["clientKey"]))
        reply = self._next(request.path)
        body = reply.body(parsed) if callable(reply.body) else reply.body
        if body is None:
            data = b""
        elif isinstance(body, bytes):
            data = body
        else:
            data = raw_json(body)
        headers = {"Content-Type": "application/json", **reply.headers}
        if reply.drip > 0:
            return await self._drip(request, reply, headers)
        if reply.huge > 0:
            return await self._huge(request, reply, headers, data)
        return web.Response(status=reply.status, body=data, headers=headers)

    @staticmethod
    async def _huge(
        request: web.Request, reply: Reply, headers: dict[str, str], prefix: bytes
    ) -> web.StreamResponse:
        response = web.StreamResponse(status=reply.status, headers=headers)
        response.enable_chunked_encoding()
        await response.prepare(request)
        filler = b"A" * _CHUNK
        sent = 0
        try:
            await response.write(prefix)
            while sent < reply.huge:  # bounded by the byte count
                piece = filler[: min(_CHUNK, reply.huge - sent)]
                await response.write(piece)
                sent += len(piece)
            await response.write_eof()
        except (ConnectionError, RuntimeError):
            pass  # the client hung up, as it should once it has seen enough
        return response

    @staticmethod
    async def _drip(
        request: web.Request, reply: Reply, headers: dict[str, str]
    ) -> web.StreamResponse:
        response = web.StreamResponse(status=reply.status, headers=headers)
        response.enable_chunked_encoding()
        await response.prepare(request)
        loop = asyncio.get_running_loop()
        stop_at = loop.time() + MAX_DRIP_SECONDS
        try:
            for _ in range(reply.drip_bytes):  # bounded in count and in time
                if loop.time() >= stop_at:
                    break
                await response.write(b" ")
                await asyncio.sleep(reply.drip)
            await response.write_eof()
        except (ConnectionError, RuntimeError):
            pass
        return response

    # --- the thread ---------------------------------------------------------------------

    def start(self) -> HostileServer:
        self._thread = threading.Thread(target=self._run, name="hostile-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout=30):
            raise RuntimeError("the hostile server did not start within 30 s")
        if self._failure is not None:
            raise RuntimeError("the hostile server failed to start") from self._failure
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._open())
        except BaseException as exc:
            self._failure = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._close())
            loop.close()

    async def _open(self) -> None:
        app = web.Application(client_max_size=50 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0, access_log=None)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))  # loopback only, a free port
        site = web.SockSite(self._runner, sock)
        await site.start()
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"

    async def _close(self) -> None:
        if self._runner is not None:
            await asyncio.wait_for(self._runner.cleanup(), timeout=10)

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=20)


@contextmanager
def serve(script: Mapping[str, list[Reply] | Reply] | None = None) -> Iterator[HostileServer]:
    """A running ``HostileServer`` with ``script`` (endpoint path -> replies)."""
    server = HostileServer(script).start()
    try:
        yield server
    finally:
        server.stop()
