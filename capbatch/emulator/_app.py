"""The HTTP side of the emulator: one provider's endpoints, fault injection, callbacks.

The provider is the config's ``dialect`` (``_dialects.py``): its endpoints, ids, reply
fields, codes, limits, retention, reports and bans are read from that one description,
so the handlers here are the same for all four. Reports are handled in ``_feedback.py``.

Per-request work is kept small because clients push thousands of requests a second at
it: no logging, stdlib ``json``, one dict lookup per task, and image checks cached by
content hash. Every random decision is drawn from the state's seeded RNG in a fixed
number per request (see ``FaultRolls``/``TaskRolls``), so a sequential client sees the
same run twice with the same seed.

Order of checks for createTask and getTaskResult: rate limit, a ban in force, added
latency, injected faults (5xx, the dialect's "unavailable" code, malformed body, dropped
connection), then the request itself. A faulted createTask creates and charges nothing,
except a drop with ``drop_after_create``: the task is made and charged, and only the
reply is lost.

The test controls ``POST /_control`` and ``POST /_reset_stats`` change the server, so
they take the api key as ``clientKey`` in a JSON body, like the API endpoints, and
refuse any other ``Content-Type`` (415) and any request carrying an ``Origin`` header
(403). A web page the user visits can only send a cross-origin POST without a
preflight as ``text/plain`` or a form, and browsers add ``Origin`` to every POST, even
a same-origin one after DNS rebinding; non-browser clients never send it. There is
always a key (``EmulatorConfig`` refuses an empty one), but the default ``test-key`` is
public, so these two checks are what keeps a web page out. ``GET /_stats`` stays open:
it changes nothing and holds only counters, the balance and hashes of images sent,
never the key, images, answers or file paths, and a page cannot read a cross-origin
reply (no CORS headers are sent).
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from functools import partial
from typing import Any

import aiohttp
from aiohttp import web

from capbatch._exceptions import ConfigError
from capbatch.emulator._config import EmulatorConfig
from capbatch.emulator._controls import add_controls
from capbatch.emulator._dialects import Role
from capbatch.emulator._feedback import handle_report
from capbatch.emulator._replies import (
    ImageChecker,
    callback_allowed,
    drop_connection,
    error_payload,
    html_5xx_reply,
    json_reply,
    malformed_reply,
    task_reply,
)
from capbatch.emulator._requests import (
    NewTask,
    Refused,
    check_new_task,
    developer_id,
    json_object,
)
from capbatch.emulator._solvers import Solver, make_solver, solver_key
from capbatch.emulator._state import EmulatorState, FaultRolls, Task, TaskRolls, to_usd
from capbatch.emulator._task_types import corrupt_label, solution_of

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


#: The endpoint the current request asked for: error replies take its documented shape.
_ENDPOINT: contextvars.ContextVar[str] = contextvars.ContextVar("endpoint", default="")


class Emulator:
    """One emulator: its state, dialect, solver, callback session and the handlers."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.state = EmulatorState(config)
        self.dialect = self.state.dialect
        self.solver: Solver = make_solver(config)
        self._solver_key = solver_key(config)
        self._image_size = ImageChecker()
        # Fixed for the server's life (``callback_allow`` cannot be changed at run time).
        self._callback_targets = config.callback_targets()
        self._session: aiohttp.ClientSession | None = None
        # Strong references: the event loop keeps only weak ones to running tasks.
        self._background: set[asyncio.Task[None]] = set()

    # --- plumbing ---------------------------------------------------------------------

    def error(
        self, role: Role, description: str, *, headers: Mapping[str, str] | None = None
    ) -> web.Response:
        """The dialect's error reply for ``role``: its code, errorId and HTTP status, in
        the shape the dialect documents for the endpoint being answered."""
        code = self.dialect.code(role)
        self.state.count_error(code)
        payload = error_payload(self.dialect, code, description, _ENDPOINT.get())
        response = json_reply(payload, self.dialect.status(code))
        if headers:
            response.headers.update(headers)
        return response

    def api(self, handler: Handler) -> Handler:
        """Wrap an API endpoint: request counters, in-flight peak, the rate limit and
        a ban in force."""
        state = self.state

        async def endpoint(request: web.Request) -> web.StreamResponse:
            _ENDPOINT.set(request.path)
            state.enter()
            try:
                if not state.arrive(time.monotonic()):
                    return self.error(
                        "rate_limit", "Too many requests, slow down", headers={"Retry-After": "1"}
                    )
                banned = state.bans.active(state.now())
                if banned is not None:
                    role: Role = "banned_key" if banned == "KeyDoesntExist" else "banned"
                    return self.error(role, f"Blocked for repeated bad requests ({banned})")
                return await handler(request)
            finally:
                state.leave()

        return endpoint

    async def authorised(
        self, request: web.Request, bad_body: Role
    ) -> dict[str, Any] | web.Response:
        """The request's JSON object if it carries the api key; the error reply if not
        (a wrong key is an offence where the dialect bans for it)."""
        body = await json_object(request)
        if body is None:
            return self.error(bad_body, "Request body must be a JSON object")
        if body.get("clientKey") != self.state.config.api_key:
            return self._denied()
        return body

    def _denied(self) -> web.Response:
        self.state.bans.offend("KeyDoesntExist", self.state.now())
        return self.error("bad_key", "clientKey is missing or wrong")

    async def _faults(self, rolls: FaultRolls) -> web.Response | None:
        """Apply latency, then the first fault whose roll fires (drop is left to the
        caller, because createTask may drop after creating)."""
        if rolls.latency > 0:
            await asyncio.sleep(rolls.latency)
        cfg = self.state.config
        if rolls.http_5xx < cfg.http_5xx_rate:
            # rolls.http_5xx / rate is itself uniform in [0, 1): reuse it for the status.
            status = (500, 502, 503)[min(2, int(rolls.http_5xx / cfg.http_5xx_rate * 3))]
            self.state.count_fault(f"http_{status}")
            return html_5xx_reply(status)
        if rolls.unavailable < cfg.unavailable_rate:
            self.state.count_fault("unavailable")
            return self.error("unavailable", "Service is unavailable, try again later")
        if rolls.malformed < cfg.malformed_rate:
            self.state.count_fault("malformed")
            return malformed_reply()
        return None

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def reply_of(self, task: Task) -> tuple[dict[str, Any], int]:
        """``task``'s getTaskResult reply now, in the dialect's shape."""
        state = self.state
        return task_reply(self.dialect, task, state.now(), state.unix_time)

    # --- tasks ------------------------------------------------------------------------

    def _resolve(self, task: Task, answer: str | None) -> None:
        """Finish ``task``: decide unsolvable/corrupted with the rolls drawn at creation
        against the rates in force now (so ``/_control`` can stop failures), then
        settle the money and send the callback."""
        cfg = self.state.config
        rolls = task.rolls
        assert rolls is not None, "a task resolves once"
        task.rolls = None
        if answer is not None and solution_of(task.shape, answer) is None:
            answer = None  # a label that is not this task's shape: nothing to answer
        if answer is not None and rolls.unsolvable >= cfg.unsolvable_rate:
            if rolls.error < cfg.error_rate:
                answer = corrupt_label(task.shape, answer, rolls.error_position, rolls.error_char)
                task.corrupted = True
            task.answer = answer
        task.resolved = True
        task.done_at = self.state.now()
        self.state.settle(task, solved=task.answer is not None)
        if task.callback_url is not None:
            payload, _ = self.reply_of(task)
            self._spawn(self._callback(task.callback_url, payload))

    async def _solve(self, image: bytes, digest: str) -> str | None:
        if self.solver.immediate:
            return self.solver.answer(image, digest)
        return await self.solver.solve(image, digest)

    async def _resolve_later(self, task: Task, image: bytes, digest: str) -> None:
        try:
            answer = await self._solve(image, digest)
        except Exception:
            # Whatever broke, the task must still resolve, or its reserved price
            # would be held for ever; the client sees it as unsolvable.
            answer = None
        delay = task.ready_at - self.state.now()
        if delay > 0:
            await asyncio.sleep(delay)
        self._resolve(task, answer)

    async def _callback(self, url: str, payload: Mapping[str, Any]) -> None:
        session = self._session
        if session is None:  # pragma: no cover - only between shutdown and exit
            return
        try:
            # No redirects: a loopback server must not bounce the emulator elsewhere.
            async with session.post(url, json=payload, allow_redirects=False) as reply:
                await reply.read()
            self.state.counters.callbacks_sent += 1
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError):
            self.state.counters.callbacks_failed += 1

    # --- endpoints --------------------------------------------------------------------

    async def create_task(self, request: web.Request) -> web.StreamResponse:
        state = self.state
        state.counters.create_calls += 1
        rolls = state.fault_rolls()
        fault = await self._faults(rolls)
        if fault is not None:
            return fault
        cfg = state.config
        if rolls.drop < cfg.drop_rate:
            state.count_fault("drop")
            if not cfg.drop_after_create:
                return drop_connection(request)
            _, created = await self._create(request)
            if created:
                state.counters.dropped_after_create += 1
            return drop_connection(request)
        reply, _ = await self._create(request)
        return reply

    async def _create(self, request: web.Request) -> tuple[web.Response, bool]:
        """Validate and run one createTask; the reply and whether a task was made."""
        body = await self.authorised(request, "bad_json")
        if isinstance(body, web.Response):
            return body, False
        new = check_new_task(body, self._image_size, self.dialect)
        if isinstance(new, Refused):
            return self.error(new.role, new.description), False
        reserved = self.state.reserve()
        if reserved is None:
            self.state.bans.offend("ZeroBalance", self.state.now())
            return self.error("zero_balance", "Insufficient account balance"), False
        sent, dev_id = developer_id(body, self.dialect)
        if sent:
            self.state.record_developer_id(dev_id)
        return await self._start(new, reserved, request.remote)

    async def _start(
        self, new: NewTask, reserved: int, ip: str | None
    ) -> tuple[web.Response, bool]:
        """Make the task of a checked, paid-for createTask: deferred (the reply is its
        id, the answer comes later) or solved before the reply, as the dialect and the
        task's roll say."""
        state = self.state
        callback = new.callback
        if callback and not callback_allowed(callback, self._callback_targets):
            state.counters.callbacks_refused += 1
            callback = None
        now = state.now()
        rolls = state.task_rolls()
        deferred = rolls.deferred < state.config.deferred or not self.dialect.answers_in_create
        record = state.new_task(
            new.digest,
            now,
            rolls,
            deferred=deferred,
            reserved=reserved,
            callback_url=callback or None,
        )
        record.ip, record.shape = ip, new.shape
        if deferred:
            return self._defer(record, new, now, rolls)
        answer = await self._solve(new.image, new.digest)
        if rolls.sync_latency > 0:
            await asyncio.sleep(rolls.sync_latency)
        self._resolve(record, answer)
        payload, status = self.reply_of(record)
        if record.answer is None:
            # An unsolvable synchronous task leaves nothing to query.
            self.state.count_error(payload["errorCode"])
            payload.pop("status", None)
            payload.pop("taskId", None)
            return json_reply(payload, status), False
        state.store(record)
        return json_reply(payload, status), True

    def _defer(
        self, record: Task, new: NewTask, now: float, rolls: TaskRolls
    ) -> tuple[web.Response, bool]:
        """Store a deferred task, have it resolve at its ready time, and reply with its
        id (CapSolver: and ``"status":"idle"`` when the configured reply style says so)."""
        self.state.store(record)
        if self.solver.immediate:
            answer = self.solver.answer(new.image, new.digest)
            asyncio.get_running_loop().call_later(
                max(0.0, record.ready_at - now), self._resolve, record, answer
            )
        else:
            self._spawn(self._resolve_later(record, new.image, new.digest))
        dialect = self.dialect
        reply = {**dialect.ok, "taskId": dialect.wire_id(record.task_id)}
        mode = self.state.config.deferred_reply_status
        if dialect.idle_status and (
            mode == "idle" or (mode == "mixed" and rolls.reply_status < 0.5)
        ):
            reply = {**dialect.ok, "status": "idle", "taskId": reply["taskId"]}
        return json_reply(reply), True

    async def get_task_result(self, request: web.Request) -> web.StreamResponse:
        state = self.state
        state.counters.polls += 1
        rolls = state.fault_rolls()
        fault = await self._faults(rolls)
        if fault is not None:
            return fault
        if rolls.drop < state.config.drop_rate:
            state.count_fault("drop")
            return drop_connection(request)
        body = await self.authorised(request, "bad_request")
        if isinstance(body, web.Response):
            return body
        now = state.now()
        task = state.lookup(self.dialect.read_id(body.get("taskId")), now)
        if task is None:
            state.bans.offend("WrongTaskId", now)
            return self.error("unknown_task", "Task not found or expired")
        return self._poll(task, now)

    def _poll(self, task: Task, now: float) -> web.Response:
        """One getTaskResult of a live task: the per-task poll limit and interval where
        the dialect has them, then the task's reply."""
        state, dialect = self.state, self.dialect
        task.polls += 1
        state.counters.max_polls_per_task = max(state.counters.max_polls_per_task, task.polls)
        if dialect.poll_limit and task.polls > state.config.max_polls:
            state.forget(task)
            state.bans.offend("WrongTaskId", now)
            return self.error("task_gone", "Task result queried too often")
        gap = dialect.min_poll_interval
        if gap is not None and task.last_poll is not None and now - task.last_poll < gap:
            return self.error("poll_too_soon", f"Ask for a task at most once every {gap:g} s")
        task.last_poll = now
        payload, status = self.reply_of(task)
        if payload.get("errorId"):
            state.count_error(payload["errorCode"])
        return json_reply(payload, status)

    async def get_balance(self, request: web.Request) -> web.StreamResponse:
        state = self.state
        state.counters.balance_calls += 1
        body = await self.authorised(request, "bad_request")
        if isinstance(body, web.Response):
            return body
        dialect = self.dialect
        return json_reply({**dialect.ok, "balance": to_usd(state.balance), **dialect.balance_extra})

    # --- test controls (their HTTP side is in ``_controls.py``) -----------------------

    def reconfigure(self, changes: Mapping[str, Any]) -> None:
        """Apply option changes at run time, all or nothing: the new config is built
        and validated, and a new solver made (reading any labels file), before anything
        is swapped in; raises ``ConfigError`` with the server unchanged."""
        new = self.state.config.merged(changes)
        if new.clock_offset < self.state.config.clock_offset:
            raise ConfigError("clock_offset can only move forward")
        key = solver_key(new)
        solver = make_solver(new) if key != self._solver_key else None
        self.state.apply(new, set(changes))
        if solver is not None:
            self.solver.close()
            self.solver, self._solver_key = solver, key

    def public_config(self) -> dict[str, Any]:
        out = self.state.config.public_dict()
        out["balance"] = to_usd(self.state.balance)  # the live balance, not the initial one
        return out

    # --- lifecycle --------------------------------------------------------------------

    async def on_startup(self, app: web.Application) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=10),
            # Never route callbacks through a proxy from the environment.
            trust_env=False,
        )

    async def on_cleanup(self, app: web.Application) -> None:
        for task in list(self._background):
            task.cancel()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None
        self.solver.close()


EMULATOR_KEY: web.AppKey[Emulator] = web.AppKey("capbatch_emulator", Emulator)
STATE_KEY: web.AppKey[EmulatorState] = web.AppKey("capbatch_emulator_state", EmulatorState)


def build_app(config: EmulatorConfig | None = None) -> web.Application:
    """The emulator as an ``aiohttp.web.Application`` (the caller runs it), with the
    endpoints of the config's dialect."""
    emulator = Emulator(config or EmulatorConfig())
    # 2 MB: room for any captcha as base64 plus JSON, and a bound on memory per request.
    app = web.Application(client_max_size=2 * 1024 * 1024)
    app[EMULATOR_KEY] = emulator
    app[STATE_KEY] = emulator.state
    app.router.add_post("/createTask", emulator.api(emulator.create_task))
    app.router.add_post("/getTaskResult", emulator.api(emulator.get_task_result))
    app.router.add_post("/getBalance", emulator.api(emulator.get_balance))
    for path, kind in emulator.dialect.reports.items():
        app.router.add_post(path, emulator.api(partial(handle_report, emulator, kind=kind)))
    add_controls(app, emulator)
    app.on_startup.append(emulator.on_startup)
    app.on_cleanup.append(emulator.on_cleanup)
    return app
