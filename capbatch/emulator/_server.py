"""Running the emulator: ``serve`` (blocking, for the CLI) and ``running_emulator``
(a background thread with its own event loop, for tests and notebooks).

The socket is bound by us rather than by aiohttp so the chosen port of ``port=0`` is
known without reaching into aiohttp's private attributes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import gc
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from aiohttp import web

from capbatch._exceptions import ConfigError
from capbatch.emulator._app import EMULATOR_KEY, Emulator, build_app
from capbatch.emulator._config import EmulatorConfig, is_loopback_host

T = TypeVar("T")

#: Pending connections the kernel queues; clients open many at once under load.
_BACKLOG = 1024


def _bind(host: str, port: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        if sys.platform != "win32":  # on Windows this would allow port stealing
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


async def start(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, str]:
    """Serve ``app`` on ``host:port`` (0 = a free port); the runner and the base URL."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        sock = _bind(host, port)
        site = web.SockSite(runner, sock, backlog=_BACKLOG)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner, _url(sock)


def serve(config: EmulatorConfig | None = None) -> None:
    """Run the emulator until SIGINT or SIGTERM. The first line printed (and flushed)
    is ``capbatch emulator listening on http://HOST:PORT``, for a parent process to
    read; the api key is never printed."""
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(config or EmulatorConfig()))


async def _serve(config: EmulatorConfig) -> None:
    app = build_app(config)
    runner, url = await start(app, config.host, config.port)
    print(f"capbatch emulator listening on {url}", flush=True)
    # This process only serves from now on: take the start-up objects out of the
    # collector's full passes. Each pass otherwise walked them all (66 ms measured), and
    # requests queued meanwhile were then handled, and counted in
    # max_requests_per_second, as a burst the client never sent.
    gc.collect()
    gc.freeze()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        # Not available on Windows: there Ctrl+C arrives as KeyboardInterrupt instead.
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


class EmulatorHandle:
    """A running emulator in a background thread: its ``url``, and thread-safe access
    to its counters and options (each call runs on the emulator's own loop)."""

    def __init__(self, url: str, loop: asyncio.AbstractEventLoop, emulator: Emulator) -> None:
        self.url = url
        self._loop = loop
        self._emulator = emulator
        self._thread_id = threading.get_ident()

    def __repr__(self) -> str:
        return f"<EmulatorHandle {self.url}>"

    def _call(self, fn: Callable[[], T]) -> T:
        if threading.get_ident() == self._thread_id:
            return fn()  # already on the emulator's loop: waiting would deadlock
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)

        self._loop.call_soon_threadsafe(run)
        return future.result(timeout=30)

    def stats(self) -> dict[str, Any]:
        """The ``/_stats`` counters, read directly from the state."""
        return self._call(self._emulator.state.snapshot)

    def control(self, **changes: Any) -> dict[str, Any]:
        """Change options at run time (as ``POST /_control``); the new options, without
        the api key. Raises ``ConfigError`` for a bad value."""

        def apply() -> dict[str, Any]:
            self._emulator.reconfigure(changes)
            return self._emulator.public_config()

        return self._call(apply)

    def config(self) -> dict[str, Any]:
        """The options in force, without the api key (``balance`` is the live one)."""
        return self._call(self._emulator.public_config)

    def reset_stats(self) -> None:
        self._call(self._emulator.state.reset_counters)


class _ServerThread(threading.Thread):
    def __init__(self, config: EmulatorConfig) -> None:
        super().__init__(name="capbatch-emulator", daemon=True)
        self.config = config
        self.started = threading.Event()
        self.error: BaseException | None = None
        self.handle: EmulatorHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None

    def run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._main())
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            self.started.set()  # never leave the starter waiting

    async def _main(self) -> None:
        try:
            app = build_app(self.config)
            runner, url = await start(app, self.config.host, self.config.port)
        except BaseException as exc:
            self.error = exc
            return
        self._stop_event = asyncio.Event()
        self.handle = EmulatorHandle(url, asyncio.get_running_loop(), app[EMULATOR_KEY])
        self.started.set()
        try:
            await self._stop_event.wait()
        finally:
            await runner.cleanup()

    def stop(self) -> None:
        if self._loop is not None and self._stop_event is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # loop closed in between
                self._loop.call_soon_threadsafe(self._stop_event.set)
        self.join(timeout=30)


@contextlib.contextmanager
def running_emulator(
    config: EmulatorConfig | None = None, **overrides: Any
) -> Iterator[EmulatorHandle]:
    """Run an emulator on a loopback address in a background thread::

        with running_emulator(EmulatorConfig(deferred=0.5), seed=3) as emu:
            httpx.post(f"{emu.url}/createTask", json=...)
            emu.stats()["create_calls"]

    ``overrides`` replace options of ``config``. The server stops on exit."""
    config = config or EmulatorConfig()
    if overrides:
        config = dataclasses.replace(config, **overrides)
    if not is_loopback_host(config.host):
        raise ConfigError(f"running_emulator serves on loopback only, not {config.host!r}")
    thread = _ServerThread(config)
    thread.start()
    thread.started.wait(timeout=60)
    if thread.error is not None:
        thread.join(timeout=30)
        raise thread.error
    if thread.handle is None:
        thread.stop()
        raise RuntimeError("the emulator did not start within 60 s")
    try:
        yield thread.handle
    finally:
        thread.stop()
