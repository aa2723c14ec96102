"""Provider callbacks (``--callback-url``, ``--callback-listen``): a small receiver for
the answers a provider POSTs to a task's ``callbackUrl``, matched to the run's tasks.

Every createTask of the run carries ``callbackUrl`` = the user's URL + ``/`` + a token
drawn once per run (``secrets.token_urlsafe``), so a callback proves itself by its path:
nothing else about it is trusted. The receiver refuses with a 4xx, and counts, anything
that is not a POST to exactly that path with a JSON object of at most ``MAX_BODY`` bytes
naming a task id this run knows (or may be about to know). An accepted body is parsed by
the very parser of getTaskResult replies (``protocol.parse_task_result``): the same text
cleaning, key masking and cost parsing.

``CallbackBox`` matches callbacks to tasks:

- a callback for a task the run is waiting on wakes that task's wait (``wait``);
- one that comes while a createTask is out, for an id not known yet, is kept (at most
  ``MAX_EARLY``) and used as soon as that createTask's reply names its id (``expect``);
- one for a task already answered (by a poll, or an earlier callback) is ignored and
  counted: an answer is journaled, and paid for, once;
- anything else is an unknown task: refused.

The token lives only here and in the URL sent to the provider: it is never logged,
printed or written to the output or journal (the URL the user gave is, without it).
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from capbatch._exceptions import CapbatchError, ConfigError
from capbatch._providers import protocol
from capbatch._providers.profiles import PollSchedule, ProviderProfile
from capbatch._providers.secrets import Secret
from capbatch._run.limits import Clock
from capbatch._run.tally import Tally

if TYPE_CHECKING:
    from aiohttp import web

    from capbatch._run.options import RunOptions

#: The largest callback body read; a larger one is refused (413) unread.
MAX_BODY = 1 << 20
#: Callbacks kept for task ids not known yet (their createTask reply still out).
MAX_EARLY = 4096
#: Answered task ids remembered, so that a late callback is told from an unknown one.
MAX_DONE = 100_000
#: Polling is the fallback: a task waiting for its callback is first polled after
#: ``FALLBACK_FACTOR`` times the provider's usual first-poll delay, and never sooner than
#: ``FALLBACK_MIN`` seconds (a callback normally comes as soon as the task is ready), nor
#: later than the schedule's ``max_gap`` (so a task that finished at once is still kept
#: by the provider when polled: a quarter of what it keeps). Then the usual interval.
FALLBACK_FACTOR = 3.0
FALLBACK_MIN = 5.0

#: What a callback tells: the task's reply, or the error it stands for.
Heard = protocol.TaskReply | CapbatchError

_LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost"})


def fallback_delay(schedule: PollSchedule) -> float:
    """Seconds from createTask's reply to the first poll of a task waiting for its
    callback (see ``FALLBACK_FACTOR``)."""
    wanted = max(FALLBACK_MIN, FALLBACK_FACTOR * schedule.first_delay)
    return max(schedule.first_delay, min(wanted, schedule.max_gap))


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) as a host and a port, or ConfigError."""
    host, sep, port_text = value.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(f"--callback-listen must be HOST:PORT, not {value[:60]!r}")
    return host, int(port_text)


def is_loopback(host: str) -> bool:
    import ipaddress

    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_callback_flags(options: RunOptions, key: Secret | None, *, local: bool) -> None:
    """The callback flags, checked before any request: ``--callback-url`` needs
    ``--callback-listen`` (and the other way round), an http(s) URL without the key, and
    a loopback listen address unless ``--callback-listen-public`` says otherwise."""
    url, listen = options.callback_url, options.callback_listen
    if url is None and listen is None:
        if options.callback_listen_public:
            raise ConfigError("--callback-listen-public needs --callback-listen")
        return
    if url is None or listen is None:
        raise ConfigError("--callback-url and --callback-listen go together")
    if local:
        raise ConfigError("--callback-url: the local solver answers at once, with no callbacks")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ConfigError("--callback-url is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError("--callback-url must be an http:// or https:// URL with a host")
    if parts.query or parts.fragment:
        raise ConfigError("--callback-url must not have a query or fragment")
    if key and key.mask(url) != url:
        raise ConfigError("--callback-url must not contain the API key")
    host, _ = parse_listen(listen)
    if not options.callback_listen_public and not is_loopback(host):
        raise ConfigError(
            f"--callback-listen {host} is not a loopback address: pass "
            "--callback-listen-public to listen where other machines can reach"
        )


def _task_id_text(raw: object) -> str | None:
    """A callback's ``taskId`` as the run keeps task ids (text), or None if unusable."""
    if isinstance(raw, bool) or not isinstance(raw, (str, int)):
        return None
    text = str(raw)
    if not text or len(text) > protocol.MAX_TASK_ID_CHARS or not text.isprintable():
        return None
    return text


class CallbackBox:
    """The run's callbacks: the token, the tasks waiting, what was heard, the counts."""

    def __init__(
        self,
        base_url: str,
        profile: ProviderProfile,
        *,
        tally: Tally,
        clock: Clock,
        mask: Callable[[str], str] | None = None,
    ) -> None:
        self.token = secrets.token_urlsafe(32)
        self.path = urlsplit(base_url).path.rstrip("/") + "/" + self.token
        #: What createTask carries as ``callbackUrl``.
        self.url = base_url.rstrip("/") + "/" + self.token
        self.profile = profile
        self.tally = tally
        self.clock = clock
        self.mask = mask
        #: createTask requests out now: an unknown id may be one of theirs.
        self.creating = 0
        self._known: set[str] = set()
        self._early: set[str] = set()
        self._heard: dict[str, Heard] = {}
        self._events: dict[str, asyncio.Event] = {}
        self._done: OrderedDict[str, None] = OrderedDict()

    # --- the solver's side ------------------------------------------------------------

    def expect(self, task_id: str) -> None:
        """A createTask reply named ``task_id``: its callback is awaited (or was early)."""
        self._known.add(task_id)
        if task_id in self._early:
            self._early.discard(task_id)
            self._wake(task_id)

    def finish(self, task_id: str) -> None:
        """``task_id`` is answered or given up: a later callback for it is ignored."""
        self._known.discard(task_id)
        self._events.pop(task_id, None)
        if self._heard.pop(task_id, None) is not None:
            self.tally.callbacks_ignored += 1
        self._done[task_id] = None
        if len(self._done) > MAX_DONE:
            self._done.popitem(last=False)

    async def wait(self, task_id: str, seconds: float) -> Heard | None:
        """What a callback told about ``task_id`` within ``seconds`` (None: nothing)."""
        heard = self._heard.pop(task_id, None)
        if heard is not None or seconds <= 0:
            return heard
        event = self._events.setdefault(task_id, asyncio.Event())
        sleeper = asyncio.ensure_future(self.clock.sleep(seconds))
        waiter = asyncio.ensure_future(event.wait())
        try:
            await asyncio.wait({sleeper, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            waiter.cancel()
        event.clear()
        return self._heard.pop(task_id, None)

    def unclaimed(self) -> int:
        """Early callbacks no createTask reply ever claimed (counted refused at the end)."""
        return len(self._early)

    # --- the receiver's side ----------------------------------------------------------

    def _wake(self, task_id: str) -> None:
        event = self._events.get(task_id)
        if event is not None:
            event.set()

    def take(self, path: str, body: bytes) -> tuple[int, str]:
        """One authenticated-or-not callback: the HTTP status to answer and why."""
        if not secrets.compare_digest(path.encode(), self.path.encode()):
            return 404, "not found"
        try:
            raw = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raw = None
        if not isinstance(raw, dict):
            return 400, "not a JSON object"
        task_id = _task_id_text(raw.get("taskId"))
        if task_id is None:
            return 400, "no usable taskId"
        if task_id in self._done:
            self.tally.callbacks_ignored += 1
            return 200, "already answered"
        known = task_id in self._known
        if not known and (self.creating <= 0 or len(self._early) >= MAX_EARLY):
            return 404, "unknown task"
        self._heard[task_id] = self._parse(body, task_id)
        if known:
            self._wake(task_id)
            return 200, "ok"
        self._early.add(task_id)
        return 202, "kept until the task is known"

    def _parse(self, body: bytes, task_id: str) -> Heard:
        """The callback's body read as a getTaskResult reply for ``task_id``."""
        try:
            return protocol.parse_task_result(self.profile, 200, body, task_id, mask=self.mask)
        except CapbatchError as exc:
            return exc


class CallbackReceiver:
    """The aiohttp server of one run, feeding a ``CallbackBox``."""

    def __init__(self, box: CallbackBox, listen: str) -> None:
        self.box = box
        self.host, self.port = parse_listen(listen)
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        from aiohttp import web

        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None)  # no log line holds the token
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise ConfigError(
                f"--callback-listen: cannot listen on {self.host}:{self.port} "
                f"({exc.strerror or type(exc).__name__})"
            ) from None
        self._runner = runner

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        from aiohttp import web

        box = self.box
        box.tally.callbacks_received += 1
        status, why = 405, "POST only"
        if request.method == "POST":
            if (request.content_length or 0) > MAX_BODY:
                status, why = 413, "body too large"
            else:
                try:
                    body = await request.read()
                except web.HTTPRequestEntityTooLarge:
                    status, why = 413, "body too large"
                else:
                    status, why = box.take(request.path, body)
        if status >= 400:
            box.tally.callbacks_refused += 1
        return web.Response(status=status, text=why)
