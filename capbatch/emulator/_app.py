"""The HTTP side of the emulator: CapSolver's endpoints, fault injection and callbacks.

Per-request work is kept small because clients push thousands of requests a second at
it: no logging, stdlib ``json``, one dict lookup per task, and image checks cached by
content hash. Every random decision is drawn from the state's seeded RNG in a fixed
number per request (see ``FaultRolls``/``TaskRolls``), so a sequential client sees the
same run twice with the same seed.

Order of checks for createTask and getTaskResult: rate limit, added latency, injected
faults (5xx, ``ERROR_SERVICE_UNAVALIABLE``, malformed body, dropped connection), then
the request itself. A faulted createTask creates and charges nothing, except a drop
with ``drop_after_create``: the task is made and charged, and only the reply is lost.

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
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any

import aiohttp
from aiohttp import web

from capbatch._exceptions import ConfigError
from capbatch.emulator._config import EmulatorConfig
from capbatch.emulator._replies import (
    OK,
    ImageChecker,
    callback_allowed,
    drop_connection,
    html_5xx_reply,
    json_reply,
    malformed_reply,
    task_reply,
)
from capbatch.emulator._requests import (
    NewTask,
    Refused,
    check_new_task,
    control_options,
    json_object,
)
from capbatch.emulator._solvers import LabelsFileError, Solver, corrupt, make_solver, solver_key
from capbatch.emulator._state import EmulatorState, FaultRolls, Task, TaskRolls, to_usd

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Emulator:
    """One emulator: its state, solver, callback session and the aiohttp handlers."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.state = EmulatorState(config)
        self.solver: Solver = make_solver(config)
        self._solver_key = solver_key(config)
        self._is_image = ImageChecker()
        # Fixed for the server's life (``callback_allow`` cannot be changed at run time).
        self._callback_targets = config.callback_targets()
        self._session: aiohttp.ClientSession | None = None
        # Strong references: the event loop keeps only weak ones to running tasks.
        self._background: set[asyncio.Task[None]] = set()

    # --- plumbing ---------------------------------------------------------------------

    def _error(
        self,
        status: int,
        code: str,
        description: str,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> web.Response:
        self.state.count_error(code)
        payload = {"errorId": 1, "errorCode": code, "errorDescription": description}
        response = json_reply(payload, status)
        if headers:
            response.headers.update(headers)
        return response

    def api(self, handler: Handler) -> Handler:
        """Wrap an API endpoint: request counters, in-flight peak and the rate limit."""
        state = self.state

        async def endpoint(request: web.Request) -> web.StreamResponse:
            state.enter()
            try:
                if not state.arrive(time.monotonic()):
                    return self._error(
                        429,
                        "ERROR_RATE_LIMIT",
                        "Too many requests, slow down",
                        headers={"Retry-After": "1"},
                    )
                return await handler(request)
            finally:
                state.leave()

        return endpoint

    def _key_ok(self, body: Mapping[str, Any]) -> bool:
        return body.get("clientKey") == self.state.config.api_key

    def _denied(self) -> web.Response:
        return self._error(401, "ERROR_KEY_DENIED_ACCESS", "clientKey is missing or wrong")

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
            return self._error(
                400, "ERROR_SERVICE_UNAVALIABLE", "Service is unavailable, try again later"
            )
        if rolls.malformed < cfg.malformed_rate:
            self.state.count_fault("malformed")
            return malformed_reply()
        return None

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # --- tasks ------------------------------------------------------------------------

    def _resolve(self, task: Task, answer: str | None) -> None:
        """Finish ``task``: decide unsolvable/corrupted with the rolls drawn at creation
        against the rates in force now (so ``/_control`` can stop failures), then
        settle the money and send the callback."""
        cfg = self.state.config
        rolls = task.rolls
        assert rolls is not None, "a task resolves once"
        task.rolls = None
        if answer is not None and rolls.unsolvable >= cfg.unsolvable_rate:
            if rolls.error < cfg.error_rate:
                answer = corrupt(answer, rolls.error_position, rolls.error_char)
            task.answer = answer
        task.resolved = True
        self.state.settle(task, solved=task.answer is not None)
        if task.callback_url is not None:
            payload, _ = task_reply(task, 0.0)
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
        delay = task.ready_at - time.monotonic()
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
        body = await json_object(request)
        if body is None:
            return self._error(
                400, "ERROR_INVALID_TASK_DATA", "Request body must be a JSON object"
            ), False
        if not self._key_ok(body):
            return self._denied(), False
        new = check_new_task(body, self._is_image)
        if isinstance(new, Refused):
            return self._error(400, new.code, new.description), False
        reserved = self.state.reserve()
        if reserved is None:
            return self._error(400, "ERROR_ZERO_BALANCE", "Insufficient account balance"), False
        return await self._start(new, reserved)

    async def _start(self, new: NewTask, reserved: int) -> tuple[web.Response, bool]:
        """Make the task of a checked, paid-for createTask: deferred (the reply is its
        id, the answer comes later) or solved before the reply, as its roll says."""
        state = self.state
        callback = new.callback
        if callback and not callback_allowed(callback, self._callback_targets):
            state.counters.callbacks_refused += 1
            callback = None
        now = time.monotonic()
        rolls = state.task_rolls()
        deferred = rolls.deferred < state.config.deferred
        record = state.new_task(
            new.digest,
            now,
            rolls,
            deferred=deferred,
            reserved=reserved,
            callback_url=callback or None,
        )
        if deferred:
            return self._defer(record, new, now, rolls)
        answer = await self._solve(new.image, new.digest)
        if rolls.sync_latency > 0:
            await asyncio.sleep(rolls.sync_latency)
        self._resolve(record, answer)
        payload, status = task_reply(record, now)
        if record.answer is None:
            # An unsolvable synchronous task leaves nothing to query.
            self.state.count_error("ERROR_CAPTCHA_UNSOLVABLE")
            del payload["status"], payload["taskId"]
            return json_reply(payload, status), False
        state.store(record)
        return json_reply(payload, status), True

    def _defer(
        self, record: Task, new: NewTask, now: float, rolls: TaskRolls
    ) -> tuple[web.Response, bool]:
        """Store a deferred task, have it resolve at its ready time, and reply with its
        id (and ``"status":"idle"`` when the configured reply style says so)."""
        self.state.store(record)
        if self.solver.immediate:
            answer = self.solver.answer(new.image, new.digest)
            asyncio.get_running_loop().call_later(
                max(0.0, record.ready_at - now), self._resolve, record, answer
            )
        else:
            self._spawn(self._resolve_later(record, new.image, new.digest))
        mode = self.state.config.deferred_reply_status
        if mode == "idle" or (mode == "mixed" and rolls.reply_status < 0.5):
            return json_reply({**OK, "status": "idle", "taskId": record.task_id}), True
        return json_reply({**OK, "taskId": record.task_id}), True

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
        body = await json_object(request)
        if body is None:
            return self._error(400, "ERROR_BAD_REQUEST", "Request body must be a JSON object")
        if not self._key_ok(body):
            return self._denied()
        task_id = body.get("taskId")
        now = time.monotonic()
        task = state.lookup(task_id, now) if isinstance(task_id, str) else None
        if task is None:
            return self._error(400, "ERROR_TASKID_INVALID", "Task not found or expired")
        task.polls += 1
        state.counters.max_polls_per_task = max(state.counters.max_polls_per_task, task.polls)
        if task.polls > state.config.max_polls:
            state.forget(task)
            return self._error(400, "ERROR_TASKID_INVALID", "Task result queried too often")
        payload, status = task_reply(task, now)
        if status != 200:
            state.count_error(payload["errorCode"])
        return json_reply(payload, status)

    async def get_balance(self, request: web.Request) -> web.StreamResponse:
        state = self.state
        state.counters.balance_calls += 1
        body = await json_object(request)
        if body is None:
            return self._error(400, "ERROR_BAD_REQUEST", "Request body must be a JSON object")
        if not self._key_ok(body):
            return self._denied()
        return json_reply({**OK, "balance": to_usd(state.balance), "packages": []})

    async def feedback_task(self, request: web.Request) -> web.StreamResponse:
        state = self.state
        body = await json_object(request)
        if body is None:
            return self._error(400, "ERROR_BAD_REQUEST", "Request body must be a JSON object")
        if not self._key_ok(body):
            return self._denied()
        task_id = body.get("taskId")
        task = state.lookup(task_id, time.monotonic()) if isinstance(task_id, str) else None
        if task is None:
            return self._error(400, "ERROR_TASKID_INVALID", "Task not found or expired")
        result = body.get("result")
        if not isinstance(result, dict):
            return self._error(400, "ERROR_INVALID_TASK_DATA", "result is missing")
        state.counters.feedbacks += 1
        if result.get("invalid"):
            state.counters.feedbacks_invalid += 1
        return json_reply({**OK, "message": "ok"})

    # --- test controls (not rate limited, not counted) --------------------------------

    async def stats(self, request: web.Request) -> web.StreamResponse:
        return json_reply(self.state.snapshot())

    async def reset_stats(self, request: web.Request) -> web.StreamResponse:
        body = await control_options(request, self.state.config.api_key)
        if isinstance(body, web.Response):
            return body
        if body:
            return json_reply({"error": "/_reset_stats takes no options"}, 400)
        self.state.reset_counters()
        return json_reply(self.state.snapshot())

    async def control(self, request: web.Request) -> web.StreamResponse:
        changes = await control_options(request, self.state.config.api_key)
        if isinstance(changes, web.Response):
            return changes
        try:
            self.reconfigure(changes)
        except LabelsFileError:
            # The same words for a missing, unreadable, special or bad file: the reply
            # must not tell a client which paths exist on this machine.
            return json_reply({"error": LabelsFileError.PUBLIC_MESSAGE}, 400)
        except ConfigError as exc:
            return json_reply({"error": str(exc)}, 400)
        return json_reply(self.public_config())

    def reconfigure(self, changes: Mapping[str, Any]) -> None:
        """Apply option changes at run time, all or nothing: the new config is built
        and validated, and a new solver made (reading any labels file), before anything
        is swapped in; raises ``ConfigError`` with the server unchanged."""
        new = self.state.config.merged(changes)
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
    """The emulator as an ``aiohttp.web.Application`` (the caller runs it)."""
    emulator = Emulator(config or EmulatorConfig())
    # 2 MB: room for any captcha as base64 plus JSON, and a bound on memory per request.
    app = web.Application(client_max_size=2 * 1024 * 1024)
    app[EMULATOR_KEY] = emulator
    app[STATE_KEY] = emulator.state
    app.router.add_post("/createTask", emulator.api(emulator.create_task))
    app.router.add_post("/getTaskResult", emulator.api(emulator.get_task_result))
    app.router.add_post("/getBalance", emulator.api(emulator.get_balance))
    app.router.add_post("/feedbackTask", emulator.api(emulator.feedback_task))
    app.router.add_get("/_stats", emulator.stats)
    app.router.add_post("/_control", emulator.control)
    app.router.add_post("/_reset_stats", emulator.reset_stats)
    app.on_startup.append(emulator.on_startup)
    app.on_cleanup.append(emulator.on_cleanup)
    return app
