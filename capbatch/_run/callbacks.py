"""Provider callbacks (``--callback-url``, ``--callback-listen``): a small receiver for
the answers a provider POSTs to a task's ``callbackUrl``, matched to the run's tasks.

Every createTask of the run carries ``callbackUrl`` = the user's URL + ``/`` + a token
drawn once per run + ``/`` + a slot drawn for that createTask (both ``secrets.
token_urlsafe``), so a callback proves itself, and names its task, by its path: nothing
else about it is trusted. The slot is needed because most providers' callbacks are
getTaskResult's reply, which has no ``taskId``. The receiver refuses with a 4xx, and
counts, anything that is not a POST to a live slot under that token with a JSON object
(or 2Captcha's ``id``/``code`` pingback form) of at most ``MAX_BODY`` bytes, and a body
whose ``taskId`` names another task. An accepted body is parsed by the very parser of
getTaskResult replies (``protocol.parse_task_result``): the same text cleaning, key
masking and cost parsing.

``CallbackBox`` matches callbacks to tasks:

- a callback to the slot of a task the run is waiting on wakes that task's wait
  (``wait``);
- one that comes while the slot's createTask is out is kept (at most ``MAX_EARLY``) and
  used as soon as that createTask's reply names its task (``bind``);
- one for a task already answered (by a poll, or an earlier callback) is ignored and
  counted: an answer is journaled, and paid for, once;
- anything else is an unknown slot: refused.

The token lives only here and in the URL sent to the provider: it is never logged,
printed or written to the output or journal (the URL the user gave is, without it).
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

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
#: Callbacks kept for slots whose createTask reply is still out.
MAX_EARLY = 4096
#: Slots of answered tasks remembered, so that a late callback is told from an unknown one.
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


def _read_body(body: bytes) -> dict[str, Any] | None:
    """A callback body as a getTaskResult-shaped object, or None if it is neither JSON
    nor a pingback form.

    JSON objects are taken as they come (the reply shape every provider documents for its
    callbacks). A form ``id=...&code=...`` is 2Captcha's documented pingback shape for
    its older API (unconfirmed for API v2, see docs/providers.md): it becomes a ready
    reply with ``code`` as the text, or the error ``code`` names."""
    try:
        raw = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raw = None
    if isinstance(raw, dict):
        return raw
    if raw is not None:
        return None
    try:
        form = parse_qs(body.decode("ascii"), strict_parsing=True, max_num_fields=8)
    except (ValueError, UnicodeDecodeError):
        return None
    ids, codes = form.get("id"), form.get("code")
    if not ids or not codes or len(ids) != 1 or len(codes) != 1:
        return None
    code = codes[0]
    if code.startswith("ERROR_"):
        return {"taskId": ids[0], "errorId": 1, "errorCode": code}
    return {"taskId": ids[0], "errorId": 0, "status": "ready", "solution": {"text": code}}


class CallbackBox:
    """The run's callbacks: the token, the slots, the tasks waiting, what was heard.

    Each createTask gets its own *slot*, a random path segment after the run's token, so
    its callback names its task by where it is sent: Anti-Captcha, CapMonster Cloud and
    2Captcha send getTaskResult's reply, which has no ``taskId``. A ``taskId`` the body
    does carry must agree with the slot's task."""

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
        #: What every createTask's ``callbackUrl`` starts with (its slot follows).
        self.url = base_url.rstrip("/") + "/" + self.token
        self.profile = profile
        self.tally = tally
        self.clock = clock
        self.mask = mask
        #: Slots in use: the task each names (None while its createTask is out).
        self._slots: dict[str, str | None] = {}
        self._slot_of: dict[str, str] = {}
        #: Callbacks that came while their slot's createTask was out (raw objects).
        self._early: dict[str, dict[str, Any]] = {}
        self._heard: dict[str, Heard] = {}
        self._events: dict[str, asyncio.Event] = {}
        #: Slots of answered tasks, so that a late callback is told from an unknown one.
        self._done: OrderedDict[str, None] = OrderedDict()

    # --- the solver's side ------------------------------------------------------------

    def open(self, slot: str | None = None) -> tuple[str, str]:
        """A new slot for a createTask about to go (``slot``: one a Ray worker made):
        the slot and its ``callbackUrl``."""
        slot = slot or secrets.token_urlsafe(12)
        self._slots[slot] = None
        return slot, f"{self.url}/{slot}"

    def bind(self, slot: str, task_id: str) -> None:
        """``slot``'s createTask reply named ``task_id``: its callback is awaited (or
        came early, and is used now)."""
        if slot not in self._slots:
            return
        self._slots[slot] = task_id
        self._slot_of[task_id] = slot
        early = self._early.pop(slot, None)
        if early is not None:
            if self._accept(task_id, early):
                self._wake(task_id)
            else:
                self.tally.callbacks_refused += 1

    def close(self, slot: str) -> None:
        """``slot``'s createTask named no task (it failed): the slot is dropped, and an
        early callback to it refused."""
        self._slots.pop(slot, None)
        if self._early.pop(slot, None) is not None:
            self.tally.callbacks_refused += 1

    def finish(self, task_id: str) -> None:
        """``task_id`` is answered or given up: a later callback for it is ignored."""
        self._events.pop(task_id, None)
        if self._heard.pop(task_id, None) is not None:
            self.tally.callbacks_ignored += 1
        slot = self._slot_of.pop(task_id, None)
        if slot is not None:
            self._slots.pop(slot, None)
            self._done[slot] = None
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

    def _slot(self, path: str) -> str | None:
        """The slot a request's path names, if it carries the run's token."""
        head, sep, slot = path.rpartition("/")
        if not sep or not secrets.compare_digest(head.encode(), self.path.encode()):
            return None
        return slot

    def take(self, path: str, body: bytes) -> tuple[int, str]:
        """One authenticated-or-not callback: the HTTP status to answer and why."""
        slot = self._slot(path)
        if slot is None:
            return 404, "not found"
        if slot in self._done:
            self.tally.callbacks_ignored += 1
            return 200, "already answered"
        if slot not in self._slots:
            return 404, "unknown task"
        raw = _read_body(body)
        if raw is None:
            return 400, "not a JSON object or pingback form"
        task_id = self._slots[slot]
        if task_id is None:
            if len(self._early) >= MAX_EARLY:
                return 503, "too many early callbacks"
            self._early[slot] = raw
            return 202, "kept until the task is known"
        if not self._accept(task_id, raw):
            return 400, "taskId does not match"
        self._wake(task_id)
        return 200, "ok"

    def _accept(self, task_id: str, raw: dict[str, Any]) -> bool:
        """Keep ``raw`` as what was heard of ``task_id``, unless it names another task."""
        named = raw.get("taskId")
        if named is not None and _task_id_text(named) != task_id:
            return False
        self._heard[task_id] = self._parse(json.dumps(raw).encode(), task_id)
        return True

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
