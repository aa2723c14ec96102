"""Callbacks (``--callback-url``): the receiver on a real loopback port (token, refusals,
matching, early and late callbacks), and the solver's fallback polling on a fake clock."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import httpx
import pytest

from capbatch._exceptions import ConfigError
from capbatch._providers.client import ProviderClient
from capbatch._providers.profiles import ANTICAPTCHA, CAPSOLVER, TWOCAPTCHA
from capbatch._providers.protocol import TaskReply
from capbatch._providers.secrets import Secret
from capbatch._run.callback_solver import CallbackSolver
from capbatch._run.callbacks import (
    MAX_BODY,
    CallbackBox,
    CallbackReceiver,
    check_callback_flags,
    fallback_delay,
)
from capbatch._run.journal import Journal
from capbatch._run.limits import Clock, Limits, RateLimiter
from capbatch._run.options import RunOptions
from capbatch._run.spend import SpendGuard
from capbatch._run.tally import Tally
from capbatch._run.task import solve_job
from tests.fakes import SteppedClock
from tests.unit.test_scheduler import JOB, KEY, PRICE, FakeProvider, deferred, ok_ready, pending

READY = {"errorId": 0, "status": "ready", "solution": {"text": "ab12"}}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def served() -> AsyncIterator[tuple[CallbackBox, str]]:
    """A box behind a real receiver on 127.0.0.1; yields it and the receiver's root."""
    port = free_port()
    root = f"http://127.0.0.1:{port}"
    box = CallbackBox(f"{root}/cb", CAPSOLVER, tally=Tally(), clock=Clock(), mask=Secret(KEY).mask)
    receiver = CallbackReceiver(box, f"127.0.0.1:{port}")
    await receiver.start()
    try:
        yield box, root
    finally:
        await receiver.stop()


async def post(url: str, body: Any, *, raw: bytes | None = None) -> int:
    async with httpx.AsyncClient(timeout=5.0) as http:
        content = raw if raw is not None else json.dumps(body).encode()
        reply = await http.post(url, content=content)
        return reply.status_code


def slot_for(box: CallbackBox, task_id: str) -> tuple[str, str]:
    """A slot whose createTask named ``task_id``: its callback URL and path."""
    slot, url = box.open()
    box.bind(slot, task_id)
    return url, f"{box.path}/{slot}"


async def test_only_a_live_slot_under_the_run_token_is_taken(
    served: tuple[CallbackBox, str],
) -> None:
    box, root = served
    url, _ = slot_for(box, "t-1")
    slot = url.rsplit("/", 1)[1]
    wrong_token = f"{root}/cb/{'x' * len(box.token)}/{slot}"
    assert await post(f"{root}/cb/{slot}", READY) == 404
    assert await post(box.url, READY) == 404  # the token without a slot
    assert await post(wrong_token, READY) == 404
    assert await post(f"{root}/elsewhere/{box.token}/{slot}", READY) == 404
    assert await post(f"{box.url}/{'y' * len(slot)}", READY) == 404  # no such slot
    assert await post(url, None, raw=b"not json") == 400
    assert await post(url, [1, 2]) == 400
    assert await post(url, {**READY, "taskId": "t-other"}) == 400  # names another task
    assert await post(url, None, raw=b'{"x":"' + b"a" * MAX_BODY + b'"}') == 413
    async with httpx.AsyncClient(timeout=5.0) as http:
        assert (await http.get(url)).status_code == 405
    assert box.tally.callbacks_refused == box.tally.callbacks_received == 10
    assert await box.wait("t-1", 0) is None  # nothing refused reached the task
    assert await post(url, READY) == 200  # no taskId: the slot names the task
    heard = await box.wait("t-1", 0)
    assert isinstance(heard, TaskReply) and heard.ready and heard.answer == "ab12"
    assert box.tally.callbacks_refused == 10 and box.tally.callbacks_received == 11


async def test_a_callback_wakes_the_waiting_task_and_its_text_is_cleaned_and_masked(
    served: tuple[CallbackBox, str],
) -> None:
    box, _ = served
    url, _ = slot_for(box, "t-2")
    waiting = asyncio.ensure_future(box.wait("t-2", 30.0))
    await asyncio.sleep(0.05)
    body = {"errorId": 0, "status": "ready", "taskId": "t-2", "solution": {"text": f"a\x1b{KEY}"}}
    assert await post(url, body) == 200
    heard = await asyncio.wait_for(waiting, 5.0)
    assert isinstance(heard, TaskReply) and heard.answer is not None
    assert KEY not in heard.answer and "\x1b" not in heard.answer


async def test_an_early_callback_is_kept_until_the_create_reply_names_its_task(
    served: tuple[CallbackBox, str],
) -> None:
    box, _ = served
    slot, url = box.open()  # its createTask is out
    assert await post(url, READY) == 202
    assert box.unclaimed() == 1
    box.bind(slot, "t-3")
    heard = await box.wait("t-3", 0)
    assert isinstance(heard, TaskReply) and heard.answer == "ab12"
    assert box.unclaimed() == 0
    # One whose createTask then fails is refused, and its slot closed.
    slot, url = box.open()
    assert await post(url, READY) == 202
    refused = box.tally.callbacks_refused
    box.close(slot)
    assert box.tally.callbacks_refused == refused + 1 and box.unclaimed() == 0
    assert await post(url, READY) == 404  # refused (and counted) by the receiver
    refused += 1
    # An early callback that names another task than the reply's is refused at bind.
    slot, url = box.open()
    assert await post(url, {**READY, "taskId": "t-elsewhere"}) == 202
    box.bind(slot, "t-4")
    assert await box.wait("t-4", 0) is None and box.tally.callbacks_refused == refused + 2


async def test_a_callback_after_the_task_was_answered_is_ignored(
    served: tuple[CallbackBox, str],
) -> None:
    box, _ = served
    url, _ = slot_for(box, "t-4")
    box.finish("t-4")
    assert await post(url, READY) == 200
    assert box.tally.callbacks_ignored == 1 and box.tally.callbacks_refused == 0
    assert await box.wait("t-4", 0) is None


def test_a_callback_is_parsed_like_a_poll_cost_and_errors_included() -> None:
    box = CallbackBox("http://127.0.0.1:9/cb", ANTICAPTCHA, tally=Tally(), clock=Clock())
    _, path = slot_for(box, "5")
    body = {**READY, "cost": "0.000700"}  # Anti-Captcha's callback: no taskId
    assert box.take(path, json.dumps(body).encode()) == (200, "ok")
    heard = box._heard["5"]
    assert isinstance(heard, TaskReply) and heard.cost == pytest.approx(0.0007)
    _, path = slot_for(box, "6")
    unsolvable = {"errorId": 12, "errorCode": "ERROR_CAPTCHA_UNSOLVABLE", "taskId": 6}
    box.take(path, json.dumps(unsolvable).encode())
    assert getattr(box._heard["6"], "error_code", None) == "ERROR_CAPTCHA_UNSOLVABLE"


def test_a_pingback_form_is_read_as_a_reply_and_must_name_the_slots_task() -> None:
    box = CallbackBox("http://127.0.0.1:9/cb", TWOCAPTCHA, tally=Tally(), clock=Clock())
    _, path = slot_for(box, "71234567890")
    assert box.take(path, b"id=71234567890&code=x7kq2") == (200, "ok")
    heard = box._heard["71234567890"]
    assert isinstance(heard, TaskReply) and heard.ready and heard.answer == "x7kq2"
    _, path = slot_for(box, "71234567891")
    assert box.take(path, b"id=71234567891&code=ERROR_CAPTCHA_UNSOLVABLE")[0] == 200
    assert getattr(box._heard["71234567891"], "error_code", None) == "ERROR_CAPTCHA_UNSOLVABLE"
    _, path = slot_for(box, "71234567892")
    assert box.take(path, b"id=99&code=x7kq2")[0] == 400
    assert box.take(path, b"id=71234567892&id=1&code=a")[0] == 400
    assert box.take(path, b"code=a")[0] == 400
    assert "71234567892" not in box._heard


def test_each_run_has_its_own_unguessable_token_and_the_url_no_key() -> None:
    one = CallbackBox("http://127.0.0.1:9/cb/", CAPSOLVER, tally=Tally(), clock=Clock())
    two = CallbackBox("http://127.0.0.1:9/cb/", CAPSOLVER, tally=Tally(), clock=Clock())
    assert one.token != two.token and len(one.token) >= 40
    assert one.url == f"http://127.0.0.1:9/cb/{one.token}" and one.path == f"/cb/{one.token}"
    slots = {one.open()[0] for _ in range(100)}
    assert len(slots) == 100 and all(len(slot) >= 16 for slot in slots)


@pytest.mark.parametrize(
    ("url", "listen", "public", "message"),
    [
        ("http://127.0.0.1:9/cb", None, False, "together"),
        (None, "127.0.0.1:9", False, "together"),
        (None, None, True, "needs --callback-listen"),
        ("file:///tmp/x", "127.0.0.1:9", False, "http"),
        ("http://h/cb?x=1", "127.0.0.1:9", False, "query"),
        (f"http://h/{KEY}", "127.0.0.1:9", False, "API key"),
        ("http://h/cb", "10.0.0.1:9", False, "loopback"),
        ("http://h/cb", "127.0.0.1:99999", False, "HOST:PORT"),
    ],
)
def test_callback_flags_are_checked_up_front(
    url: str | None, listen: str | None, public: bool, message: str
) -> None:
    options = RunOptions(callback_url=url, callback_listen=listen, callback_listen_public=public)
    with pytest.raises(ConfigError, match=message):
        check_callback_flags(options, Secret(KEY), local=False)


def test_a_public_listen_address_needs_the_opt_in() -> None:
    options = RunOptions(callback_url="http://h/cb", callback_listen="0.0.0.0:9")
    with pytest.raises(ConfigError):
        check_callback_flags(options, Secret(KEY), local=False)
    check_callback_flags(replace(options, callback_listen_public=True), Secret(KEY), local=False)
    check_callback_flags(
        RunOptions(callback_url="https://h/cb", callback_listen="[::1]:9"), None, local=False
    )


# --- the solver: callbacks first, polling as the fallback (fake clock) ----------------


def callback_solver(provider: FakeProvider, clock: SteppedClock) -> tuple[CallbackSolver, Journal]:
    http = httpx.AsyncClient(transport=httpx.MockTransport(provider.handler))
    client = ProviderClient(CAPSOLVER, KEY, base_url="http://127.0.0.1:9", http_client=http)
    journal = Journal(":memory:")
    solver = CallbackSolver(
        client,
        CAPSOLVER,
        journal,
        Limits(rate=100, max_in_flight=4),
        RateLimiter(100, clock=clock),  # type: ignore[arg-type]
        SpendGuard(None),
        price=PRICE,
        clock=clock,
        callback_url="http://127.0.0.1:9/cb",
        listen="127.0.0.1:9",
        key=Secret(KEY),
    )
    return solver, journal


async def settle() -> None:
    for _ in range(50):
        await asyncio.sleep(0)


def path_of(solver: CallbackSolver, task_id: str) -> str:
    """The receiver path of the slot whose createTask named ``task_id``."""
    box = solver.box
    return f"{box.path}/{box._slot_of[task_id]}"


async def test_a_callback_answers_the_task_with_no_poll() -> None:
    provider = FakeProvider(createTask=[deferred("t-7")], getTaskResult=[pending()])
    clock = SteppedClock()
    solver, journal = callback_solver(provider, clock)
    job = asyncio.create_task(solve_job(solver, JOB))
    await settle()
    sent = provider.calls[0][1]["callbackUrl"]
    assert sent.startswith(solver.box.url + "/") and sent.endswith(path_of(solver, "t-7"))
    path = path_of(solver, "t-7")
    clock.advance(1.0)
    await settle()
    body = json.dumps({**READY, "solution": {"text": "cb42"}}).encode()
    assert solver.box.take(path, body) == (200, "ok")
    result = await asyncio.wait_for(job, 1.0)
    assert result.status == "solved" and result.answer == "cb42" and result.task_id == "t-7"
    assert provider.count("getTaskResult") == 0 and result.polls == 0
    assert solver.tally.callbacks_used == 1 and solver.tally.fallback_polls == 0
    entry = journal.get_many([JOB.key]).get(JOB.key)
    assert entry is not None and entry.state == "done" and entry.result.answer == "cb42"
    # The same callback again (a provider's retry): ignored, nothing paid twice.
    assert solver.box.take(path, body) == (200, "already answered")
    assert solver.tally.callbacks_ignored == 1 and solver.spend.spent == pytest.approx(PRICE)


async def test_without_a_callback_the_task_is_polled_after_the_fallback_delay() -> None:
    provider = FakeProvider(
        createTask=[deferred("t-8")], getTaskResult=[pending(), ok_ready("p1", "t-8")]
    )
    clock = SteppedClock()
    solver, _ = callback_solver(provider, clock)
    delay = fallback_delay(CAPSOLVER.poll)
    assert delay == 5.0  # CapSolver: max(5 s, 3 x its 1 s first delay)
    job = asyncio.create_task(solve_job(solver, JOB))
    await settle()
    path = path_of(solver, "t-8")
    clock.advance(delay - 0.1)
    await settle()
    assert provider.count("getTaskResult") == 0
    clock.advance(0.1)
    await settle()
    assert provider.count("getTaskResult") == 1  # the fallback poll: still pending
    clock.advance(CAPSOLVER.poll.interval)
    await settle()
    result = await asyncio.wait_for(job, 1.0)
    assert result.answer == "p1" and result.polls == 2
    assert solver.tally.fallback_polls == 2 and solver.pacer.first_polls == 0
    # The callback that comes after the poll answered is ignored, never used.
    body = json.dumps({**READY, "taskId": "t-8"}).encode()
    assert solver.box.take(path, body) == (200, "already answered")
    assert solver.tally.callbacks_used == 0 and solver.spend.spent == pytest.approx(PRICE)


async def test_an_early_callback_is_used_once_the_create_reply_comes() -> None:
    provider = FakeProvider(createTask=[deferred("t-9")], getTaskResult=[pending()])
    clock = SteppedClock()
    solver, _ = callback_solver(provider, clock)
    inner = solver.service.inner  # type: ignore[attr-defined]
    real_create = inner.create_task

    async def create_then_hear_early(task: Any, *, callback_url: str | None = None) -> Any:
        # The callback comes while this createTask's reply is still on its way.
        assert callback_url is not None
        path = "/" + callback_url.split("/", 3)[3]
        body = json.dumps({**READY, "solution": {"text": "early"}}).encode()
        assert solver.box.take(path, body)[0] == 202
        return await real_create(task, callback_url=callback_url)

    inner.create_task = create_then_hear_early
    result = await asyncio.wait_for(solve_job(solver, JOB), 1.0)
    assert result.answer == "early" and provider.count("getTaskResult") == 0


async def test_an_unsolvable_callback_is_handled_as_a_polled_one_and_a_new_task_goes() -> None:
    provider = FakeProvider(
        createTask=[deferred("t-10"), deferred("t-11")], getTaskResult=[pending()]
    )
    clock = SteppedClock()
    solver, _ = callback_solver(provider, clock)
    job = asyncio.create_task(solve_job(solver, JOB))
    await settle()
    first = path_of(solver, "t-10")
    unsolvable = {"errorId": 1, "errorCode": "ERROR_CAPTCHA_UNSOLVABLE", "taskId": "t-10"}
    assert solver.box.take(first, json.dumps(unsolvable).encode())[0] == 200
    for _ in range(100):  # bounded: the back-off before the new task, in fake time
        if provider.count("createTask") == 2:
            break
        clock.advance(0.5)
        await settle()
    assert provider.count("createTask") == 2
    body = json.dumps({**READY, "taskId": "t-11", "solution": {"text": "second"}}).encode()
    assert solver.box.take(path_of(solver, "t-11"), body) == (200, "ok")
    result = await asyncio.wait_for(job, 1.0)
    assert result.answer == "second" and result.attempts == 2
    assert provider.count("getTaskResult") == 0 and solver.tally.callbacks_used == 2
    # A callback for a task that meanwhile vanished from the waiting set is ignored.
    assert solver.box.take(first, json.dumps(unsolvable).encode())[1] == ("already answered")
