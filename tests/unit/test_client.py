"""``ProviderClient`` over ``httpx.MockTransport``: request bodies, reply shapes, one reply
per error path (the full error matrix is test_protocol.py's), transport failures, fallback
host and key hygiene. No sockets."""

from __future__ import annotations

import asyncio
import gzip
import json
import re
import traceback
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from capbatch._exceptions import (
    APIError,
    AuthError,
    BalanceError,
    CapbatchError,
    ConfigError,
    ConnectionFailed,
    MalformedReply,
    RateLimited,
    ReplyTooLarge,
    RequestTimeout,
    ServiceUnavailable,
    TaskExpired,
    Unsolvable,
)
from capbatch._providers.client import (
    DEADLINE_ENV,
    DEFAULT_DEADLINE,
    RETRY_AFTER_CAP_ENV,
    ProviderClient,
)
from capbatch._providers.errors import Action, classify
from capbatch._providers.profiles import (
    ANTICAPTCHA,
    CAPMONSTER,
    CAPSOLVER,
    LOCAL,
    TWOCAPTCHA,
    ProviderProfile,
)
from capbatch._providers.protocol import RETRY_AFTER_CAP
from capbatch._providers.secrets import Secret
from capbatch._providers.transport import MAX_REPLY_BYTES
from tests.fakes import key_forms

KEY = "sk-SECRET-123"
BASE = "https://api.test"
UUID = "2376919c-1863-11ec-a012-94e6f7355a0b"
TASK = {"type": "ImageToTextTask", "body": "iVBORw0KGgo="}

Handler = (
    Callable[[httpx.Request], httpx.Response]
    | Callable[[httpx.Request], Coroutine[None, None, httpx.Response]]
)


class Recorder:
    """A MockTransport handler that answers with canned replies and keeps the requests."""

    def __init__(self, *replies: httpx.Response) -> None:
        self.replies = list(replies)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        return reply

    @property
    def body(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.requests[-1].content)
        return data

    @property
    def path(self) -> str:
        return self.requests[-1].url.path


def make(
    handler: Handler,
    profile: ProviderProfile = CAPSOLVER,
    *,
    base_url: str | None = BASE,
    app_id: str | int | None = None,
    key: str | Secret = KEY,
) -> ProviderClient:
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return ProviderClient(profile, key, base_url=base_url, http_client=http, app_id=app_id)


def ok(payload: dict[str, Any], status: int = 200, **headers: str) -> httpx.Response:
    full = {"errorId": 0, "errorCode": "", "errorDescription": "", **payload}
    return httpx.Response(status, json=full, headers=headers)


def error(code: str, status: int = 400, description: str = "d", **headers: str) -> httpx.Response:
    body = {"errorId": 1, "errorCode": code, "errorDescription": description}
    return httpx.Response(status, json=body, headers=headers)


def assert_no_key(exc: BaseException) -> None:
    formatted = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    assert KEY not in str(exc), f"the key leaked into str(exc): {exc}"
    assert KEY not in repr(exc), f"the key leaked into repr(exc): {exc!r}"
    assert KEY not in formatted, "the key leaked into the formatted traceback"


# --- createTask -----------------------------------------------------------------------


async def test_create_task_synchronous_ready() -> None:
    rec = Recorder(ok({"status": "ready", "solution": {"text": "44795sds"}, "taskId": UUID}))
    reply = await make(rec).create_task(TASK)
    assert reply.ready
    assert reply.answer == "44795sds"
    assert reply.task_id == UUID
    assert reply.cost is None
    assert rec.path == "/createTask"
    assert rec.requests[0].method == "POST"
    assert rec.requests[0].headers["content-type"] == "application/json"


async def test_create_task_deferred_without_status() -> None:
    reply = await make(Recorder(ok({"taskId": UUID}))).create_task(TASK)
    assert not reply.ready
    assert reply.status == "pending"
    assert reply.raw_status is None
    assert reply.task_id == UUID
    assert reply.answer is None


async def test_create_task_deferred_with_idle_status() -> None:
    reply = await make(Recorder(ok({"taskId": UUID, "status": "idle"}))).create_task(TASK)
    assert reply.status == "pending"
    assert reply.raw_status == "idle"
    assert reply.task_id == UUID


async def test_create_task_body_without_optional_fields() -> None:
    rec = Recorder(ok({"taskId": UUID}))
    await make(rec).create_task(TASK)
    assert rec.body == {"clientKey": KEY, "task": TASK}


async def test_create_task_body_with_app_id_and_callback() -> None:
    rec = Recorder(ok({"taskId": UUID}))
    await make(rec, app_id="app-42").create_task(TASK, callback_url="https://cb.example/x")
    assert rec.body == {
        "clientKey": KEY,
        "task": TASK,
        "appId": "app-42",
        "callbackUrl": "https://cb.example/x",
    }


@pytest.mark.parametrize("profile", [ANTICAPTCHA, CAPMONSTER, TWOCAPTCHA], ids=lambda p: p.name)
async def test_other_providers_get_the_developer_id_as_an_integer_soft_id(
    profile: ProviderProfile,
) -> None:
    rec = Recorder(ok({"taskId": 7654321}))
    await make(rec, profile, app_id="4580").create_task(TASK)
    assert rec.body == {"clientKey": KEY, "task": TASK, "softId": 4580}
    assert b'"softId":4580' in rec.requests[0].content  # a JSON number, not "4580"


@pytest.mark.parametrize("profile", [ANTICAPTCHA, CAPMONSTER, TWOCAPTCHA], ids=lambda p: p.name)
async def test_a_soft_id_that_is_not_a_number_is_refused_before_any_request(
    profile: ProviderProfile,
) -> None:
    rec = Recorder(ok({"taskId": 1}))
    with pytest.raises(ConfigError, match="--app-id"):
        make(rec, profile, app_id="my-app")
    assert rec.requests == []


async def test_secret_key_is_revealed_only_in_the_body() -> None:
    rec = Recorder(ok({"taskId": UUID}))
    await make(rec, key=Secret(KEY)).create_task(TASK)
    assert rec.body["clientKey"] == KEY
    assert KEY not in str(rec.requests[0].url)
    assert all(KEY not in value for value in rec.requests[0].headers.values())


# --- getTaskResult --------------------------------------------------------------------


@pytest.mark.parametrize("status", ["idle", "processing"])
async def test_get_task_result_pending(status: str) -> None:
    rec = Recorder(ok({"status": status}))
    reply = await make(rec).get_task_result(UUID)
    assert reply.status == "pending"
    assert reply.raw_status == status
    assert reply.task_id == UUID
    assert rec.path == "/getTaskResult"
    assert rec.body == {"clientKey": KEY, "taskId": UUID}


async def test_get_task_result_ready() -> None:
    reply = await make(
        Recorder(ok({"status": "ready", "solution": {"text": "abc"}}))
    ).get_task_result(UUID)
    assert reply.ready
    assert reply.answer == "abc"
    assert reply.task_id == UUID


async def test_get_task_result_failed_is_unsolvable() -> None:
    with pytest.raises(Unsolvable) as info:
        await make(Recorder(ok({"status": "failed"}))).get_task_result(UUID)
    assert info.value.task_id == UUID
    assert classify(info.value) is Action.RETRY_BOUNDED


async def test_get_task_result_unknown_status_is_malformed() -> None:
    with pytest.raises(MalformedReply):
        await make(Recorder(ok({"status": "thinking-hard"}))).get_task_result(UUID)


@pytest.mark.parametrize(
    ("profile", "sent"),
    [(CAPSOLVER, "12345"), (ANTICAPTCHA, 12345), (CAPMONSTER, 12345), (TWOCAPTCHA, 12345)],
    ids=["capsolver", "anticaptcha", "capmonster", "twocaptcha"],
)
async def test_task_id_type_sent_back(profile: ProviderProfile, sent: str | int) -> None:
    rec = Recorder(ok({"status": "processing"}))
    await make(rec, profile).get_task_result("12345")
    assert rec.body["taskId"] == sent
    assert type(rec.body["taskId"]) is type(sent)


async def test_int_task_id_round_trip_from_create_task() -> None:
    rec = Recorder(ok({"taskId": 987654}), ok({"status": "processing"}))
    client = make(rec, ANTICAPTCHA)
    created = await client.create_task(TASK)
    assert created.task_id == "987654"
    assert created.task_id is not None
    await client.get_task_result(created.task_id)
    assert rec.body["taskId"] == 987654


READY_WITH_COST = {"status": "ready", "solution": {"text": "abc"}, "cost": "0.000700"}


async def test_cost_from_string_for_anticaptcha() -> None:
    reply = await make(Recorder(ok(READY_WITH_COST)), ANTICAPTCHA).get_task_result("1")
    assert reply.cost == pytest.approx(0.0007)
    assert isinstance(reply.cost, float)


async def test_cost_ignored_for_capsolver() -> None:
    reply = await make(Recorder(ok(READY_WITH_COST)), CAPSOLVER).get_task_result(UUID)
    assert reply.cost is None


# --- getBalance and reports -----------------------------------------------------------


async def test_get_balance() -> None:
    rec = Recorder(ok({"balance": 12.5, "packages": []}))
    assert await make(rec).get_balance() == 12.5
    assert rec.path == "/getBalance"
    assert rec.body == {"clientKey": KEY}


async def test_report_incorrect_capsolver_feedback() -> None:
    rec = Recorder(ok({"message": "ok"}))
    assert await make(rec, CAPSOLVER, app_id="app-1").report_incorrect(UUID) is True
    assert rec.path == "/feedbackTask"
    assert rec.body == {
        "clientKey": KEY,
        "appId": "app-1",
        "taskId": UUID,
        "result": {"invalid": True},
    }
    assert rec.body["result"]["invalid"] is True


@pytest.mark.parametrize(
    ("profile", "path"),
    [
        (ANTICAPTCHA, "/reportIncorrectImageCaptcha"),
        (CAPMONSTER, "/reportIncorrectImageCaptcha"),
        (TWOCAPTCHA, "/reportIncorrect"),
    ],
    ids=["anticaptcha", "capmonster", "twocaptcha"],
)
async def test_report_incorrect_image_style(profile: ProviderProfile, path: str) -> None:
    rec = Recorder(ok({"status": "success"}))
    assert await make(rec, profile).report_incorrect("777") is True
    assert rec.path == path
    assert rec.body == {"clientKey": KEY, "taskId": 777}


# --- provider errors ------------------------------------------------------------------


# The code x HTTP status x body matrix is test_protocol.py's (error_from_reply,
# decode_json); here, one reply per path, to show the client takes each path.

REPLY_PATHS: dict[str, tuple[httpx.Response, type[CapbatchError], str]] = {
    "known-code": (error("ERROR_CAPTCHA_UNSOLVABLE", 400), Unsolvable, "ERROR_CAPTCHA_UNSOLVABLE"),
    "unknown-code": (error("ERROR_NEW_IN_2031", 503), ServiceUnavailable, "ERROR_NEW_IN_2031"),
    "no-code": (httpx.Response(402, json={"errorId": 1}), BalanceError, "ERROR_ZERO_BALANCE"),
    "non-json-502": (
        httpx.Response(502, content=b"<html>bad gateway</html>"),
        ServiceUnavailable,
        "HTTP_502",
    ),
    "non-json-200": (
        httpx.Response(200, content=b"<html>captive portal</html>"),
        MalformedReply,
        "MALFORMED_REPLY",
    ),
}


@pytest.mark.parametrize(
    ("reply", "cls", "code"), list(REPLY_PATHS.values()), ids=list(REPLY_PATHS)
)
async def test_each_error_reply_path_reaches_the_caller(
    reply: httpx.Response, cls: type[CapbatchError], code: str
) -> None:
    with pytest.raises(CapbatchError) as info:
        await make(Recorder(reply)).get_task_result(UUID)
    exc = info.value
    assert type(exc) is cls and exc.error_code == code
    assert exc.http_status == reply.status_code
    assert_no_key(exc)


async def test_a_provider_error_carries_the_task_and_the_providers_words() -> None:
    reply = error("ERROR_TASKID_INVALID", 400, "provider words")
    with pytest.raises(TaskExpired) as info:
        await make(Recorder(reply)).get_task_result(UUID)
    assert info.value.task_id == UUID and "provider words" in str(info.value)
    assert classify(info.value) is Action.RECREATE


@pytest.mark.parametrize("call", ["create_task", "get_balance", "report_incorrect"])
async def test_error_codes_on_every_call(call: str) -> None:
    client = make(Recorder(error("ERROR_ZERO_BALANCE", 400)))
    method = getattr(client, call)
    args = {"create_task": (TASK,), "get_balance": (), "report_incorrect": (UUID,)}[call]
    with pytest.raises(BalanceError) as info:
        await method(*args)
    assert classify(info.value) is Action.FATAL


async def test_http_200_json_list_is_malformed_and_retried() -> None:
    reply = httpx.Response(200, content=b'[{"errorId": 0, "balance": 1}]')
    with pytest.raises(MalformedReply) as info:
        await make(Recorder(reply)).get_balance()
    assert info.value.http_status == 200
    assert classify(info.value) is Action.RETRY


# --- Retry-After ----------------------------------------------------------------------


async def test_retry_after_seconds() -> None:
    with pytest.raises(RateLimited) as info:
        await make(Recorder(error("ERROR_RATE_LIMIT", 429, **{"Retry-After": "7"}))).create_task(
            TASK
        )
    assert info.value.retry_after == 7.0


async def test_retry_after_http_date() -> None:
    when = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=90), usegmt=True)
    with pytest.raises(RateLimited) as info:
        await make(Recorder(error("ERROR_RATE_LIMIT", 429, **{"Retry-After": when}))).get_balance()
    assert info.value.retry_after is not None
    assert 85 <= info.value.retry_after <= 91


async def test_retry_after_on_unknown_code_429() -> None:
    reply = error("SLOW_DOWN_PLEASE", 429, **{"Retry-After": "3"})
    with pytest.raises(RateLimited) as info:
        await make(Recorder(reply)).get_task_result(UUID)
    assert info.value.retry_after == 3.0


@pytest.mark.parametrize(
    ("status", "cls"), [(429, RateLimited), (503, ServiceUnavailable)], ids=["429", "503"]
)
async def test_retry_after_with_a_non_json_body(status: int, cls: type[APIError]) -> None:
    # A load balancer's HTML "503 Service Unavailable" / "429 Too Many Requests" page with
    # Retry-After is the most common way a Retry-After header arrives at all.
    reply = httpx.Response(status, content=b"<html>try later</html>", headers={"Retry-After": "30"})
    with pytest.raises(cls) as info:
        await make(Recorder(reply)).create_task(TASK)
    assert info.value.retry_after == 30.0, (
        "BUG (_protocol.decode_json): Retry-After is dropped when the error body is not "
        "JSON; decode_json needs the retry_after value (see the report's patch)"
    )


# --- the key never leaks --------------------------------------------------------------

LEAK_SCENARIOS: dict[str, httpx.Response] = {
    "auth-401": error("ERROR_KEY_DENIED_ACCESS", 401),
    "balance-402": error("ERROR_ZERO_BALANCE", 402),
    "rate-429": error("ERROR_RATE_LIMIT", 429, **{"Retry-After": "1"}),
    "html-502": httpx.Response(502, content=b"<html>bad gateway</html>"),
    "html-200": httpx.Response(200, content=b"<html>captive portal</html>"),
    "unknown-status": httpx.Response(200, json={"errorId": 0, "status": "odd"}),
    "failed": httpx.Response(200, json={"errorId": 0, "status": "failed"}),
    "no-code-418": httpx.Response(418, json={"errorId": 1}),
}


@pytest.mark.parametrize("reply", list(LEAK_SCENARIOS.values()), ids=list(LEAK_SCENARIOS))
async def test_key_absent_from_provider_errors(reply: httpx.Response) -> None:
    client = make(Recorder(reply))
    for call in (client.create_task(TASK), client.get_task_result(UUID), client.get_balance()):
        with pytest.raises(CapbatchError) as info:
            await call
        assert_no_key(info.value)


@pytest.mark.parametrize(
    "raised",
    [httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("rst")],
    ids=["connect", "read-timeout", "protocol"],
)
async def test_key_absent_from_transport_errors(raised: Exception) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise raised

    with pytest.raises(CapbatchError) as info:
        await make(handler).create_task(TASK)
    assert_no_key(info.value)


async def test_key_absent_when_the_provider_echoes_it_in_the_description() -> None:
    reply = error("ERROR_KEY_DENIED_ACCESS", 401, description=f"key {KEY} does not exist")
    with pytest.raises(AuthError) as info:
        await make(Recorder(reply)).get_balance()
    exc = info.value
    assert KEY not in str(exc) and KEY not in repr(exc), (
        "BUG (_client.py): an errorDescription that echoes the key reaches the exception "
        "text; ProviderClient should pass messages through _secrets.redact (see the patch)"
    )
    assert_no_key(exc)


async def test_key_absent_when_an_html_page_echoes_the_request() -> None:
    page = f'<html>blocked request: {{"clientKey":"{KEY}"}}</html>'.encode()
    with pytest.raises(MalformedReply) as info:
        await make(Recorder(httpx.Response(200, content=page))).get_balance()
    assert KEY not in str(info.value), (
        "BUG (_client.py): the MalformedReply body snippet can carry the key back; "
        "ProviderClient should redact exception text (see the patch)"
    )


# --- transport failures ---------------------------------------------------------------


def raising(exc: Exception, hosts: list[str] | None = None) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        if hosts is not None:
            hosts.append(request.url.host)
        raise exc

    return handler


async def test_connect_error_with_one_host() -> None:
    hosts: list[str] = []
    with pytest.raises(ConnectionFailed) as info:
        await make(raising(httpx.ConnectError("refused"), hosts)).create_task(TASK)
    assert info.value.error_code == "CONNECT_FAILED"
    assert classify(info.value) is Action.RETRY
    assert hosts == ["api.test"]


async def test_connect_error_moves_to_the_fallback_host() -> None:
    hosts: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        hosts.append(request.url.host)
        if request.url.host == "api.capsolver.com":
            raise httpx.ConnectError("refused")
        return ok({"balance": 3.0})

    client = make(handler, CAPSOLVER, base_url=None)
    assert client.base_url == "https://api.capsolver.com"
    assert await client.get_balance() == 3.0
    assert hosts == ["api.capsolver.com", "api-stable.capsolver.com"]
    # The client stays on the host that answered.
    assert client.base_url == "https://api-stable.capsolver.com"
    assert await client.get_balance() == 3.0
    assert hosts[-1] == "api-stable.capsolver.com"


async def test_connect_error_on_every_host() -> None:
    hosts: list[str] = []
    client = make(raising(httpx.ConnectError("refused"), hosts), CAPSOLVER, base_url=None)
    with pytest.raises(ConnectionFailed) as info:
        await client.get_balance()
    assert info.value.error_code == "CONNECT_FAILED"
    assert hosts == ["api.capsolver.com", "api-stable.capsolver.com"]


async def test_concurrent_connect_failures_still_try_the_fallback() -> None:
    # Two requests in flight when the main host goes down: both fail to connect, and
    # each must go on to the fallback host (which is up).
    hosts: list[str] = []
    both_arrived = asyncio.Event()
    arrivals = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal arrivals
        hosts.append(request.url.host)
        if request.url.host == "api.capsolver.com":
            arrivals += 1
            if arrivals >= 2:
                both_arrived.set()
            await asyncio.wait_for(both_arrived.wait(), timeout=5)
            raise httpx.ConnectError("refused")
        return ok({"balance": 1.0})

    client = make(handler, CAPSOLVER, base_url=None)
    results = await asyncio.gather(
        client.get_balance(), client.get_balance(), return_exceptions=True
    )
    assert list(results) == [1.0, 1.0], (
        "BUG (_client.ProviderClient._post): concurrent connect failures flip the shared "
        "_url_index back to the failed host, so a request gives up with CONNECT_FAILED "
        f"without trying the fallback; hosts tried: {hosts}; results: {results}"
    )


async def test_explicit_base_url_has_no_fallback() -> None:
    hosts: list[str] = []
    client = make(
        raising(httpx.ConnectError("refused"), hosts), CAPSOLVER, base_url="http://127.0.0.1:9/"
    )
    assert client.base_url == "http://127.0.0.1:9"
    with pytest.raises(ConnectionFailed):
        await client.get_balance()
    assert hosts == ["127.0.0.1"]


async def test_read_timeout() -> None:
    with pytest.raises(RequestTimeout) as info:
        await make(raising(httpx.ReadTimeout("slow"))).create_task(TASK)
    assert info.value.error_code == "REQUEST_TIMEOUT"
    assert classify(info.value) is Action.RETRY


async def test_connect_timeout_does_not_count_as_sent() -> None:
    with pytest.raises(RequestTimeout) as info:
        await make(raising(httpx.ConnectTimeout("slow"))).create_task(TASK)
    assert info.value.error_code == "CONNECT_TIMEOUT"


@pytest.mark.parametrize(
    "raised",
    [httpx.RemoteProtocolError("closed"), httpx.ReadError("reset")],
    ids=["remote-protocol", "read-error"],
)
async def test_connection_lost(raised: Exception) -> None:
    hosts: list[str] = []
    with pytest.raises(ConnectionFailed) as info:
        await make(raising(raised, hosts), CAPSOLVER, base_url=None).create_task(TASK)
    assert info.value.error_code == "CONNECTION_LOST"
    assert classify(info.value) is Action.RETRY
    # The request may have been received: never resent to the fallback host.
    assert hosts == ["api.capsolver.com"]


async def test_transport_errors_do_not_chain_the_httpx_exception() -> None:
    with pytest.raises(ConnectionFailed) as info:
        await make(raising(httpx.RemoteProtocolError("closed"))).create_task(TASK)
    assert info.value.__suppress_context__ or info.value.__context__ is None


# --- construction and repr -----------------------------------------------------------


def test_repr_has_no_key() -> None:
    client = make(Recorder(ok({})))
    assert KEY not in repr(client)
    assert KEY not in str(client)
    assert "capsolver" in repr(client)
    assert KEY not in repr(vars(client))


@pytest.mark.parametrize("key", ["", Secret("")])
def test_empty_key_is_a_config_error(key: str | Secret) -> None:
    with pytest.raises(ConfigError):
        make(Recorder(ok({})), key=key)


def test_local_profile_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        make(Recorder(ok({})), LOCAL)


async def test_caller_owned_http_client_is_not_closed() -> None:
    http = httpx.AsyncClient(transport=httpx.MockTransport(Recorder(ok({"balance": 1}))))
    async with ProviderClient(CAPSOLVER, KEY, base_url=BASE, http_client=http) as client:
        await client.get_balance()
    assert not http.is_closed
    await http.aclose()


async def test_own_http_client_is_closed() -> None:
    client = ProviderClient(CAPSOLVER, KEY)
    inner = client._http
    await client.aclose()
    assert inner.is_closed


# --- hostile replies ------------------------------------------------------------------


def leaked(text: str) -> list[str]:
    """Pieces of KEY (6+ characters, any case) in ``text`` or in its unescaped forms."""
    unescaped = re.sub(r"\\+u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), text)
    unescaped = re.sub(r"%([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), unescaped)
    folded = KEY.lower()
    pieces = {folded[i : i + 6] for i in range(len(folded) - 5)}
    return [p for p in pieces for t in (text, unescaped) if p in t.lower()]


CALLS: dict[str, Callable[[ProviderClient], Coroutine[None, None, Any]]] = {
    "createTask": lambda client: client.create_task(TASK),
    "getTaskResult": lambda client: client.get_task_result(UUID),
    "getBalance": lambda client: client.get_balance(),
    "report": lambda client: client.report_incorrect(UUID),
}


@pytest.mark.parametrize("call", list(CALLS.values()), ids=list(CALLS))
@pytest.mark.parametrize("form", list(key_forms(KEY)))
async def test_echoed_key_in_any_form_is_masked_in_errors(
    call: Callable[[ProviderClient], Coroutine[None, None, Any]], form: str
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        echoed = key_forms(json.loads(request.content)["clientKey"])[form]
        body = (
            '{"errorId":1,"errorCode":"ERROR_KEY_DENIED_ACCESS",'
            f'"errorDescription":"key {echoed} denied"}}'
        )
        return httpx.Response(401, content=body.encode())

    with pytest.raises(AuthError) as info:
        await call(make(handler))
    assert "denied" in str(info.value)
    assert not leaked(str(info.value)), str(info.value)
    assert_no_key(info.value)


@pytest.mark.parametrize("call", list(CALLS.values()), ids=list(CALLS))
@pytest.mark.parametrize("form", list(key_forms(KEY)))
async def test_echoed_key_in_a_non_json_page_is_masked_even_when_cut(
    call: Callable[[ProviderClient], Coroutine[None, None, Any]], form: str
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        echoed = key_forms(json.loads(request.content)["clientKey"])[form]
        # The excerpt is 80 characters: this page's key starts 4 characters before.
        return httpx.Response(200, content=("<p>" + "x" * 73 + echoed + "</p>").encode())

    with pytest.raises(MalformedReply) as info:
        await call(make(handler))
    text = str(info.value)
    assert not leaked(text), text
    assert "sk-" not in text.lower() and "%73%6b" not in text.lower()


async def test_echoed_key_in_an_answer_is_masked() -> None:
    solution = {"text": f"key={KEY.upper()}", "extra": {"k": [KEY[:8]]}}
    rec = Recorder(ok({"status": "ready", "solution": solution, "taskId": UUID}))
    reply = await make(rec).create_task(TASK)
    assert reply.answer == "key=****"
    assert reply.solution == {"text": "key=****", "extra": {"k": ["****"]}}
    assert reply.task_id == UUID


async def test_task_id_echoing_the_key_is_refused() -> None:
    with pytest.raises(MalformedReply, match="echoes the account key") as info:
        await make(Recorder(ok({"taskId": f"{KEY}-1"}))).create_task(TASK)
    assert_no_key(info.value)
    assert info.value.error_code == "MALFORMED_REPLY"


async def test_lone_surrogate_and_terminal_escapes_are_made_safe() -> None:
    body = (
        b'{"errorId":0,"status":"ready","taskId":"t-1",'
        b'"solution":{"text":"ab\\ud800cd\\u001b]0;PWNED\\u0007"}}'
    )
    reply = await make(Recorder(httpx.Response(200, content=body))).create_task(TASK)
    assert reply.answer == "ab\ufffdcd\\x1b]0;PWNED\\x07"
    assert reply.answer.encode("utf-8")


async def test_error_code_with_terminal_escapes_is_made_safe() -> None:
    body = b'{"errorId":1,"errorCode":"ERR_\\u001b]0;PWNED\\u0007","errorDescription":"\\ud800"}'
    with pytest.raises(APIError) as info:
        await make(Recorder(httpx.Response(200, content=body))).get_task_result(UUID)
    assert info.value.error_code == "ERR_\\x1b]0;PWNED\\x07"
    assert "\x1b" not in str(info.value) and "\x07" not in str(info.value)
    str(info.value).encode("utf-8")


@pytest.mark.parametrize("cost", ["NaN", "Infinity", "-0.5", "99", '"abc"'])
async def test_bad_reported_cost_is_unknown_and_flagged(cost: str) -> None:
    body = '{"errorId":0,"status":"ready","solution":{"text":"a"},"cost":' + cost + "}"
    reply = await make(
        Recorder(httpx.Response(200, content=body.encode())), ANTICAPTCHA
    ).get_task_result("7")
    assert reply.cost is None
    assert reply.cost_rejected


# --- reply size -------------------------------------------------------------------------


async def test_reply_over_the_cap_is_too_large() -> None:
    big = httpx.Response(200, content=b" " * (MAX_REPLY_BYTES + 1))
    with pytest.raises(ReplyTooLarge) as info:
        await make(Recorder(big)).create_task(TASK)
    assert info.value.error_code == "REPLY_TOO_LARGE"
    assert isinstance(info.value, MalformedReply)
    assert classify(info.value) is Action.RETRY


async def test_reply_at_the_cap_is_read() -> None:
    body = b'{"errorId":0,"balance":2.5}'
    padded = body + b" " * (MAX_REPLY_BYTES - len(body))
    assert await make(Recorder(httpx.Response(200, content=padded))).get_balance() == 2.5


class Endless(httpx.AsyncByteStream):
    """A body without Content-Length that never ends; counts what was read of it."""

    def __init__(self) -> None:
        self.chunks = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while self.chunks < 100_000:  # bounded: 6.4 GB, far past any cap
            self.chunks += 1
            yield b"A" * 65536


async def test_endless_reply_is_cut_at_the_cap() -> None:
    stream = Endless()
    with pytest.raises(ReplyTooLarge):
        await make(lambda request: httpx.Response(200, stream=stream)).get_task_result(UUID)
    assert stream.chunks <= MAX_REPLY_BYTES // 65536 + 2


async def test_declared_length_over_the_cap_is_refused_unread() -> None:
    stream = Endless()
    headers = {"Content-Length": str(200_000_000)}
    with pytest.raises(ReplyTooLarge):
        await make(
            lambda request: httpx.Response(200, stream=stream, headers=headers)
        ).get_task_result(UUID)
    assert stream.chunks == 0


async def test_gzip_bomb_through_an_httpx_client_is_cut() -> None:
    bomb = gzip.compress(b"0" * (20 * MAX_REPLY_BYTES))
    # A stream, so httpx inflates it as the client reads it.
    reply = httpx.Response(200, stream=httpx.ByteStream(bomb), headers={"Content-Encoding": "gzip"})
    with pytest.raises(ReplyTooLarge):
        await make(Recorder(reply)).get_balance()


async def test_undecodable_body_is_malformed() -> None:
    reply = httpx.Response(
        200, stream=httpx.ByteStream(b"not gzip"), headers={"Content-Encoding": "gzip"}
    )
    with pytest.raises(MalformedReply):
        await make(Recorder(reply)).get_balance()


# --- deadline and Retry-After caps ----------------------------------------------------


async def test_deadline_bounds_the_whole_request() -> None:
    never = asyncio.Event()

    async def stalls(request: httpx.Request) -> httpx.Response:
        await asyncio.wait_for(never.wait(), timeout=10)
        return ok({})

    http = httpx.AsyncClient(transport=httpx.MockTransport(stalls))
    client = ProviderClient(CAPSOLVER, KEY, base_url=BASE, http_client=http, deadline=0.05)
    started = asyncio.get_running_loop().time()
    with pytest.raises(RequestTimeout) as info:
        await client.create_task(TASK)
    assert asyncio.get_running_loop().time() - started < 2
    assert info.value.error_code == "REQUEST_TIMEOUT"  # maybe sent
    assert "deadline" in str(info.value)


def test_deadline_and_retry_after_cap_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(DEADLINE_ENV, raising=False)
    monkeypatch.delenv(RETRY_AFTER_CAP_ENV, raising=False)
    client = make(Recorder(ok({})))
    assert client.deadline == DEFAULT_DEADLINE
    assert client.retry_after_cap == RETRY_AFTER_CAP
    monkeypatch.setenv(DEADLINE_ENV, "2.5")
    monkeypatch.setenv(RETRY_AFTER_CAP_ENV, "7")
    client = make(Recorder(ok({})))
    assert (client.deadline, client.retry_after_cap) == (2.5, 7.0)
    # An explicit value wins over the environment.
    http = httpx.AsyncClient(transport=httpx.MockTransport(Recorder(ok({}))))
    explicit = ProviderClient(CAPSOLVER, KEY, base_url=BASE, http_client=http, deadline=9)
    assert explicit.deadline == 9


@pytest.mark.parametrize("value", ["soon", "0", "-1", "nan", "inf"])
def test_bad_deadline_in_the_environment_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv(DEADLINE_ENV, value)
    with pytest.raises(ConfigError, match=DEADLINE_ENV):
        make(Recorder(ok({})))


@pytest.mark.parametrize("value", ["inf", "86400", "1e308"])
async def test_long_retry_after_is_capped(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.delenv(RETRY_AFTER_CAP_ENV, raising=False)
    reply = error("ERROR_RATE_LIMIT", 429, **{"Retry-After": value})
    with pytest.raises(RateLimited) as info:
        await make(Recorder(reply)).create_task(TASK)
    assert info.value.retry_after == RETRY_AFTER_CAP
    monkeypatch.setenv(RETRY_AFTER_CAP_ENV, "2")
    with pytest.raises(RateLimited) as info:
        await make(Recorder(reply)).create_task(TASK)
    assert info.value.retry_after == 2.0


async def test_nan_retry_after_is_ignored() -> None:
    reply = error("ERROR_RATE_LIMIT", 429, **{"Retry-After": "nan"})
    with pytest.raises(RateLimited) as info:
        await make(Recorder(reply)).create_task(TASK)
    assert info.value.retry_after is None


async def test_a_callers_httpx_client_sends_the_same_headers_as_the_own_pool() -> None:
    from capbatch._providers.client import _HEADERS

    recorder = Recorder(ok({"balance": 1}))
    client = make(recorder)
    await client.get_balance()
    sent = recorder.requests[-1].headers
    for name, value in _HEADERS.items():
        assert sent[name] == value, name
