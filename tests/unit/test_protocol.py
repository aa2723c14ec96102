"""Pure tests of ``capbatch._providers.protocol``, ``errors`` and ``text``: the error
table, ``classify``, text cleaning, request bodies and reply parsing. No I/O. The error
matrix (every code, every HTTP status, every kind of body) is tested here only;
test_client.py shows the client takes each path with one reply."""

from __future__ import annotations

import inspect
import json
import math
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from functools import partial

import pytest

from capbatch import _exceptions
from capbatch._exceptions import (
    APIError,
    AuthError,
    BalanceError,
    BannedError,
    CapbatchError,
    ConfigError,
    ConnectFailed,
    ConnectionFailed,
    ConnectionLost,
    ConnectTimeout,
    InputError,
    InUseError,
    InvalidTask,
    JournalDamaged,
    JournalError,
    MalformedReply,
    OutputError,
    ProviderOutage,
    RateLimited,
    ReplyTooLarge,
    RequestTimeout,
    RowInputError,
    RunFailed,
    RunInterrupted,
    ServiceUnavailable,
    TableError,
    TaskExpired,
    TemporarilyBlocked,
    TransportError,
    Unsolvable,
)
from capbatch._providers import errors as _errors
from capbatch._providers import protocol as _protocol
from capbatch._providers import text as _text
from capbatch._providers.errors import (
    ACTIONS,
    ERROR_CODES,
    MAX_DESCRIPTION_CHARS,
    Action,
    action_for_code,
    classify,
    error_from_reply,
)
from capbatch._providers.profiles import (
    ANTICAPTCHA,
    CAPMONSTER,
    CAPSOLVER,
    TWOCAPTCHA,
    ProviderProfile,
)
from capbatch._providers.protocol import (
    MAX_SOLUTION_DEPTH,
    RETRY_AFTER_CAP,
    TaskReply,
    answer_of,
    create_task_body,
    decode_json,
    get_balance_body,
    get_task_result_body,
    parse_balance,
    parse_cost,
    parse_create_task,
    parse_report,
    parse_retry_after,
    parse_task_result,
    report_incorrect_body,
    retry_after_is_long,
)
from capbatch._providers.secrets import Secret
from capbatch._providers.text import clean_text, reply_excerpt, sanitize_text

# What a batch client does with each family of errors (docs/providers.md, "Error codes").
EXPECTED_ACTIONS: dict[type[CapbatchError], Action] = {
    AuthError: Action.FATAL,
    BalanceError: Action.FATAL,
    BannedError: Action.FATAL,
    TemporarilyBlocked: Action.PAUSE,
    RateLimited: Action.SLOW_DOWN,
    ServiceUnavailable: Action.RETRY,
    Unsolvable: Action.RETRY_BOUNDED,
    TaskExpired: Action.RECREATE,
    InvalidTask: Action.RECORD,
    APIError: Action.RECORD,
    TransportError: Action.RETRY,
    ConnectionFailed: Action.RETRY,
    ConnectFailed: Action.RETRY,
    ConnectionLost: Action.RETRY,
    RequestTimeout: Action.RETRY,
    ConnectTimeout: Action.RETRY,
    MalformedReply: Action.RETRY,
    # A createTask whose reply was too large may have been acted on, like any
    # malformed reply: retried within the row's attempts, counted as maybe-sent.
    ReplyTooLarge: Action.RETRY,
    InputError: Action.RECORD,
    TableError: Action.RECORD,
    RowInputError: Action.RECORD,
    # The run's own failures: its journal, its output, the provider gone for good, a
    # stop, an unexpected fault. No row can retry its way out of them.
    JournalError: Action.FATAL,
    JournalDamaged: Action.FATAL,
    InUseError: Action.FATAL,
    OutputError: Action.FATAL,
    ProviderOutage: Action.FATAL,
    RunFailed: Action.FATAL,
    RunInterrupted: Action.FATAL,
    CapbatchError: Action.RECORD,
}

# docs/providers.md, "Error codes", code by code: the codes it names for CapSolver.
CAPSOLVER_CODES: dict[str, Action] = {
    "ERROR_SERVICE_UNAVALIABLE": Action.RETRY,
    "ERROR_RATE_LIMIT": Action.SLOW_DOWN,
    "ERROR_CAPTCHA_UNSOLVABLE": Action.RETRY_BOUNDED,
    "ERROR_TASK_TIMEOUT": Action.RECREATE,
    "ERROR_TASKID_INVALID": Action.RECREATE,
    "ERROR_INVALID_TASK_DATA": Action.RECORD,
    "ERROR_BAD_REQUEST": Action.RECORD,
    "ERROR_INVALID_IMAGE": Action.RECORD,
    "ERROR_PARSE_IMAGE_FAIL": Action.RECORD,
    "ERROR_TASK_NOT_SUPPORTED": Action.RECORD,
    "ERROR_UNKNOWN_QUESTION": Action.RECORD,
    "ERROR_KEY_DENIED_ACCESS": Action.FATAL,
    "ERROR_ZERO_BALANCE": Action.FATAL,
    "ERROR_SETTLEMENT_FAILED": Action.FATAL,
    "ERROR_IP_BANNED": Action.FATAL,
    "ERROR_KEY_TEMP_BLOCKED": Action.PAUSE,
    "ERROR_PROXY_BANNED": Action.RECORD,
}


def _all_exception_classes() -> list[type[CapbatchError]]:
    return [
        obj
        for _, obj in inspect.getmembers(_exceptions, inspect.isclass)
        # Exported classes say they live in ``capbatch`` (see capbatch/__init__.py).
        if issubclass(obj, CapbatchError) and obj.__module__ in {_exceptions.__name__, "capbatch"}
    ]


def _instance(cls: type[CapbatchError]) -> CapbatchError:
    if cls is RowInputError:
        return RowInputError("x", error_code="INPUT_NOT_AN_IMAGE", row=3)
    if cls is RunInterrupted:
        return RunInterrupted("x", signal_number=2)
    if issubclass(cls, JournalError):
        return cls("x", path="j.sqlite")
    return cls("x")


# --- the classification table -------------------------------------------------------


def test_expected_table_names_every_exception_class() -> None:
    # ConfigError is the one class docs/providers.md ("Error codes") says nothing about;
    # see test_config_error_stops_the_run below.
    missing = set(_all_exception_classes()) - set(EXPECTED_ACTIONS) - {ConfigError}
    assert not missing, f"new exception classes need an expected action: {missing}"


@pytest.mark.parametrize("cls", list(EXPECTED_ACTIONS), ids=lambda c: c.__name__)
def test_every_class_maps_to_the_documented_action(cls: type[CapbatchError]) -> None:
    assert classify(_instance(cls)) is EXPECTED_ACTIONS[cls]


def test_config_error_stops_the_run() -> None:
    assert classify(ConfigError("no ddddocr")) is Action.FATAL


def test_subclass_outside_the_table_takes_its_nearest_parent_action() -> None:
    class VeryRateLimited(RateLimited):
        pass

    assert classify(VeryRateLimited("x")) is Action.SLOW_DOWN


def test_actions_table_only_holds_capbatch_classes() -> None:
    assert all(issubclass(cls, CapbatchError) for cls in ACTIONS)
    assert set(ACTIONS.values()) <= set(Action)


@pytest.mark.parametrize("code", sorted(CAPSOLVER_CODES))
def test_documented_capsolver_codes_have_their_action(code: str) -> None:
    assert code in ERROR_CODES, f"{code} from docs/providers.md is missing from ERROR_CODES"
    error = error_from_reply(400, {"errorId": 1, "errorCode": code})
    assert classify(error) is CAPSOLVER_CODES[code]


@pytest.mark.parametrize("code", sorted(ERROR_CODES))
def test_every_error_code_maps_to_its_class(code: str) -> None:
    error = error_from_reply(
        200,
        {"errorId": 1, "errorCode": code, "errorDescription": "provider words"},
        task_id="t-1",
    )
    assert type(error) is ERROR_CODES[code]
    assert error.error_code == code
    assert (error.http_status, error.task_id) == (200, "t-1")
    assert "provider words" in str(error)
    assert classify(error) is EXPECTED_ACTIONS[ERROR_CODES[code]]


@pytest.mark.parametrize(
    ("code", "cls", "action"),
    [
        # createTask without its task property (CM-errors, TC-errors row 22): the request
        # is wrong; recreating the task cannot fix it (it was TaskExpired, gap G1).
        ("ERROR_TASK_ABSENT", InvalidTask, Action.RECORD),
        # The id is gone (AC-errors row 16, CM-errors, TC-errors row 16): a new task.
        ("ERROR_NO_SUCH_CAPCHA_ID", TaskExpired, Action.RECREATE),
        # No free worker or server (AC row 2, CM "NO FREE SERVERS", TC row 2): capacity,
        # the whole run slows down instead of a row failing.
        ("ERROR_NO_SLOT_AVAILABLE", RateLimited, Action.SLOW_DOWN),
    ],
)
@pytest.mark.parametrize("profile", [ANTICAPTCHA, CAPMONSTER, TWOCAPTCHA], ids=lambda p: p.name)
def test_codes_mean_what_each_provider_documents(
    code: str, cls: type[APIError], action: Action, profile: ProviderProfile
) -> None:
    error = error_from_reply(200, {"errorId": 1, "errorCode": code}, profile=profile)
    assert type(error) is cls and classify(error) is action
    assert action_for_code(code, profile) is action


def test_two_captcha_waits_five_seconds_after_no_slot_unless_told_otherwise() -> None:
    body = _json({"errorId": 2, "errorCode": "ERROR_NO_SLOT_AVAILABLE"})
    with pytest.raises(RateLimited) as info:
        parse_create_task(TWOCAPTCHA, 200, body)
    assert info.value.retry_after == 5.0  # TC-limits
    with pytest.raises(RateLimited) as told:
        parse_create_task(TWOCAPTCHA, 200, body, retry_after=12.0)
    assert told.value.retry_after == 12.0  # the reply's own Retry-After wins
    for profile in (ANTICAPTCHA, CAPMONSTER):  # no documented wait: the limiter's own
        with pytest.raises(RateLimited) as other:
            parse_create_task(profile, 200, body)
        assert other.value.retry_after is None


def test_a_profile_overrides_the_meaning_of_a_code_for_its_provider_only() -> None:
    import dataclasses
    from types import MappingProxyType

    odd = dataclasses.replace(
        ANTICAPTCHA, error_classes=MappingProxyType({"ERROR_NO_SUCH_CAPCHA_ID": InvalidTask})
    )
    body = _json({"errorId": 16, "errorCode": "ERROR_NO_SUCH_CAPCHA_ID"})
    with pytest.raises(InvalidTask):
        parse_task_result(odd, 200, body, "1")
    with pytest.raises(TaskExpired):
        parse_task_result(ANTICAPTCHA, 200, body, "1")
    assert action_for_code("ERROR_NO_SUCH_CAPCHA_ID", odd) is Action.RECORD
    assert action_for_code("ERROR_NO_SUCH_CAPCHA_ID") is Action.RECREATE
    assert action_for_code("ERROR_RATE_LIMIT", odd) is Action.SLOW_DOWN  # the rest: the table


def test_no_profile_overrides_a_code_today() -> None:
    # docs/providers.md, "Error codes": every code the four providers document means the
    # same action for each; an override needs a source saying otherwise.
    for profile in (CAPSOLVER, ANTICAPTCHA, CAPMONSTER, TWOCAPTCHA):
        assert dict(profile.error_classes) == {}


STATUSES = [200, 400, 401, 402, 403, 409, 418, 429, 500, 502, 503]


@pytest.mark.parametrize("status", STATUSES)
def test_error_code_wins_over_http_status_and_description(status: int) -> None:
    error = error_from_reply(
        status,
        {
            "errorId": 1,
            "errorCode": "ERROR_CAPTCHA_UNSOLVABLE",
            "errorDescription": "ERROR_ZERO_BALANCE ERROR_KEY_DENIED_ACCESS",
        },
    )
    assert type(error) is Unsolvable
    assert error.http_status == status


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (200, APIError),
        (400, InvalidTask),
        (401, AuthError),
        (402, BalanceError),
        (403, AuthError),
        (409, InvalidTask),
        (418, APIError),
        (429, RateLimited),
        (500, ServiceUnavailable),
        (502, ServiceUnavailable),
        (503, ServiceUnavailable),
    ],
)
def test_unknown_code_falls_back_on_http_status(status: int, cls: type[APIError]) -> None:
    error = error_from_reply(status, {"errorId": 1, "errorCode": "ERROR_FROM_THE_FUTURE"})
    assert type(error) is cls
    assert error.error_code == "ERROR_FROM_THE_FUTURE"
    assert error.http_status == status
    assert classify(error) is EXPECTED_ACTIONS[cls]
    # No code at all: the same fallback.
    nameless = error_from_reply(status, {"errorId": 1, "errorDescription": "nope"})
    assert type(nameless) is cls and nameless.http_status == status


def test_error_context_attributes() -> None:
    error = error_from_reply(
        429,
        {"errorId": 1, "errorCode": "ERROR_RATE_LIMIT", "errorDescription": "slow down"},
        retry_after=3.0,
        task_id="t-1",
    )
    assert (error.http_status, error.task_id, error.retry_after) == (429, "t-1", 3.0)
    assert str(error) == "ERROR_RATE_LIMIT: slow down (HTTP 429)"


def test_no_code_no_payload_names_the_http_status() -> None:
    assert error_from_reply(418, None).error_code == "HTTP_418"
    assert error_from_reply(401, None).error_code == "ERROR_KEY_DENIED_ACCESS"


# --- Retry-After --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [("7", 7.0), (" 2.5 ", 2.5), ("0", 0.0), ("-4", 0.0), (None, None), ("", None)],
)
def test_retry_after_seconds(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_retry_after_http_date() -> None:
    when = datetime.now(timezone.utc) + timedelta(seconds=120)
    seconds = parse_retry_after(format_datetime(when, usegmt=True))
    assert seconds is not None
    assert 115 <= seconds <= 121


def test_retry_after_date_in_the_past_is_zero() -> None:
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0


def test_retry_after_garbage_is_none() -> None:
    assert parse_retry_after("soon, please") is None


# --- non-JSON bodies ------------------------------------------------------------------

NON_JSON_BODIES = {
    "html": b"<html><body><h1>502 Bad Gateway</h1></body></html>",
    "empty": b"",
    "truncated": b'{"errorId":0,"status":"rea',
    "list": b'[{"errorId":0}]',
    "binary": b"\xff\xfe\x00garbage",
}


@pytest.mark.parametrize("body", list(NON_JSON_BODIES.values()), ids=list(NON_JSON_BODIES))
@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (200, MalformedReply),
        (400, InvalidTask),
        (401, AuthError),
        (402, BalanceError),
        (403, AuthError),
        (429, RateLimited),
        (500, ServiceUnavailable),
        (502, ServiceUnavailable),
        (503, ServiceUnavailable),
    ],
)
def test_decode_json_non_json(body: bytes, status: int, cls: type[CapbatchError]) -> None:
    with pytest.raises(cls) as info:
        decode_json(status, body)
    assert type(info.value) is cls


def test_decode_json_object() -> None:
    assert decode_json(200, b'{"errorId": 0}') == {"errorId": 0}


def test_malformed_reply_snippet_is_short_and_single_line() -> None:
    with pytest.raises(MalformedReply) as info:
        decode_json(200, b"<html>\n" + b"x" * 500)
    assert "\n" not in str(info.value)
    assert len(str(info.value)) < 200
    assert info.value.http_status == 200


# --- request bodies -------------------------------------------------------------------


def test_create_task_body_minimal_and_full() -> None:
    task = {"type": "ImageToTextTask", "body": "aGk="}
    assert create_task_body(CAPSOLVER, "k", task) == {"clientKey": "k", "task": task}
    full = create_task_body(CAPSOLVER, "k", task, app_id="app", callback_url="https://cb")
    assert full == {"clientKey": "k", "task": task, "appId": "app", "callbackUrl": "https://cb"}


@pytest.mark.parametrize(
    ("profile", "app_id", "field"),
    [
        (CAPSOLVER, "0D9A5E7C-app", {"appId": "0D9A5E7C-app"}),
        (CAPSOLVER, 1234, {"appId": "1234"}),
        (ANTICAPTCHA, "1234", {"softId": 1234}),
        (CAPMONSTER, " 55 ", {"softId": 55}),
        (TWOCAPTCHA, 4580, {"softId": 4580}),
        (TWOCAPTCHA, None, {}),
        (ANTICAPTCHA, "", {}),
    ],
    ids=lambda v: getattr(v, "name", repr(v)),
)
def test_the_developer_id_takes_each_providers_field_and_type(
    profile: ProviderProfile, app_id: str | int | None, field: dict[str, str | int]
) -> None:
    task = {"type": "ImageToTextTask", "body": "aGk="}
    body = create_task_body(profile, "k", task, app_id=app_id)
    assert body == {"clientKey": "k", "task": task, **field}
    # The JSON type is the provider's: a softId is a number, an appId a string.
    assert json.loads(json.dumps(body)) == body
    assert _protocol.developer_id(profile, app_id) == field


@pytest.mark.parametrize("app_id", ["abc", "12a", "-5", "1.5", "٣", str(2**63), True])
@pytest.mark.parametrize("profile", [ANTICAPTCHA, CAPMONSTER, TWOCAPTCHA], ids=lambda p: p.name)
def test_a_soft_id_that_is_not_a_whole_number_is_a_config_error_naming_the_flag(
    profile: ProviderProfile, app_id: str | bool
) -> None:
    with pytest.raises(ConfigError) as info:
        create_task_body(profile, "k", {"type": "ImageToTextTask"}, app_id=app_id)
    assert "--app-id" in str(info.value)


def test_the_local_solver_takes_no_developer_id() -> None:
    from capbatch._providers.profiles import LOCAL

    assert _protocol.developer_id(LOCAL, "anything") == {}


def test_create_task_body_copies_the_task() -> None:
    task = {"type": "ImageToTextTask", "body": "aGk="}
    body = create_task_body(CAPSOLVER, "k", task)
    body["task"]["body"] = "changed"
    assert task["body"] == "aGk="


@pytest.mark.parametrize(
    ("profile", "expected"),
    [(CAPSOLVER, "123"), (ANTICAPTCHA, 123), (CAPMONSTER, 123), (TWOCAPTCHA, 123)],
    ids=lambda v: getattr(v, "name", repr(v)),
)
def test_task_id_type_in_bodies(profile: ProviderProfile, expected: str | int) -> None:
    assert get_task_result_body(profile, "k", "123") == {"clientKey": "k", "taskId": expected}
    assert report_incorrect_body(profile, "k", "123")["taskId"] == expected
    # Only CapSolver's feedback call documents a developer id (CS-feedback).
    report = report_incorrect_body(profile, "k", "123", app_id="77")
    assert ("appId" in report) is (profile is CAPSOLVER) and "softId" not in report


def test_balance_body() -> None:
    assert get_balance_body("k") == {"clientKey": "k"}


def test_feedback_body() -> None:
    body = report_incorrect_body(CAPSOLVER, "k", "uuid-1", app_id="app", message="wrong")
    assert body == {
        "clientKey": "k",
        "taskId": "uuid-1",
        "appId": "app",
        "result": {"invalid": True, "message": "wrong"},
    }


# --- replies --------------------------------------------------------------------------


def _json(payload: object) -> bytes:
    return json.dumps(payload).encode()


def test_parse_create_task_sync_ready() -> None:
    reply = parse_create_task(
        CAPSOLVER,
        200,
        _json(
            {
                "errorId": 0,
                "errorCode": "",
                "errorDescription": "",
                "status": "ready",
                "solution": {"text": "44795sds"},
                "taskId": "2376919c-1863-11ec-a012-94e6f7355a0b",
            }
        ),
    )
    assert reply.ready and reply.status == "ready"
    assert reply.answer == "44795sds"
    assert reply.task_id == "2376919c-1863-11ec-a012-94e6f7355a0b"


def test_parse_create_task_int_task_id_becomes_str() -> None:
    reply = parse_create_task(ANTICAPTCHA, 200, _json({"errorId": 0, "taskId": 7654321}))
    assert reply.task_id == "7654321"
    assert not reply.ready


def test_parse_create_task_needs_answer_or_task_id() -> None:
    with pytest.raises(MalformedReply):
        parse_create_task(CAPSOLVER, 200, _json({"errorId": 0}))
    with pytest.raises(MalformedReply):
        parse_create_task(CAPSOLVER, 200, _json({"errorId": 0, "taskId": ""}))


def test_ready_without_solution_is_malformed() -> None:
    with pytest.raises(MalformedReply):
        parse_task_result(CAPSOLVER, 200, _json({"errorId": 0, "status": "ready"}), "t")


def test_status_is_case_insensitive() -> None:
    reply = parse_task_result(
        CAPSOLVER, 200, _json({"errorId": 0, "status": "READY", "solution": {"text": "a"}}), "t"
    )
    assert reply.ready


def test_string_error_id_zero_is_success() -> None:
    reply = parse_task_result(CAPSOLVER, 200, _json({"errorId": "0", "status": "idle"}), "t")
    assert reply.status == "pending"


def test_error_id_zero_with_error_status_is_still_an_error() -> None:
    with pytest.raises(ServiceUnavailable):
        parse_task_result(CAPSOLVER, 503, _json({"errorId": 0, "status": "idle"}), "t")


def test_failed_status_carries_the_task_id() -> None:
    with pytest.raises(Unsolvable) as info:
        parse_task_result(CAPSOLVER, 200, _json({"errorId": 0, "status": "failed"}), "t-9")
    assert info.value.task_id == "t-9"
    assert info.value.error_code == "ERROR_TASK_FAILED"


def test_cost_parsing() -> None:
    payload = _json(
        {"errorId": 0, "status": "ready", "solution": {"text": "a"}, "cost": "0.000700"}
    )
    assert parse_task_result(ANTICAPTCHA, 200, payload, "1").cost == pytest.approx(0.0007)
    assert parse_task_result(TWOCAPTCHA, 200, payload, "1").cost == pytest.approx(0.0007)
    assert parse_task_result(CAPSOLVER, 200, payload, "1").cost is None
    bad = _json({"errorId": 0, "status": "ready", "solution": {"text": "a"}, "cost": "n/a"})
    assert parse_task_result(ANTICAPTCHA, 200, bad, "1").cost is None


def test_parse_balance() -> None:
    assert parse_balance(200, _json({"errorId": 0, "balance": 1.25})) == 1.25
    assert parse_balance(200, _json({"errorId": 0, "balance": "3.5"})) == 3.5
    with pytest.raises(MalformedReply):
        parse_balance(200, _json({"errorId": 0}))


def test_parse_report() -> None:
    assert parse_report(200, _json({"errorId": 0, "status": "success"}), "1") is True
    assert parse_report(200, _json({"errorId": 0, "message": "ok"}), "1") is True
    assert parse_report(200, _json({"errorId": 0, "status": "fail"}), "1") is False
    with pytest.raises(TaskExpired):
        parse_report(200, _json({"errorId": 1, "errorCode": "ERROR_TASKID_INVALID"}), "1")


@pytest.mark.parametrize(
    ("solution", "answer"),
    [
        (None, None),
        ({}, None),
        ({"text": "abc"}, "abc"),
        ({"gRecaptchaResponse": "tok"}, "tok"),
        ({"answers": ["1", "2"]}, '["1","2"]'),
        ({"text": "abc", "answers": [1]}, "abc"),
        ({"confidence": 0.9}, None),
    ],
)
def test_answer_of(solution: dict[str, object] | None, answer: str | None) -> None:
    assert answer_of(solution) == answer


def test_task_reply_properties() -> None:
    reply = TaskReply(task_id="t", status="pending", raw_status="idle")
    assert not reply.ready
    assert reply.answer is None
    assert _protocol.TaskReply is TaskReply


# --- hostile replies: text ------------------------------------------------------------

KEY = "sk-e2e-SECRET-7f3a9c"
MASK = Secret(KEY).mask
ESCAPES = "ERR_\x1b]0;PWNED\x07\x9b2J\u202e\u2028"
READY = {"errorId": 0, "status": "ready"}


def _safe(text: str) -> bool:
    """Encodable, and free of anything a terminal or a bidi renderer acts on."""
    text.encode("utf-8")
    return not any(
        ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 or ch in "\u2028\u2029\u202e" for ch in text
    )


def test_sanitize_text_rule() -> None:
    plain = "44795sds"
    assert sanitize_text(plain) is plain  # the hot path: no copy
    assert sanitize_text("ab\ud800cd") == "ab\ufffdcd"
    assert sanitize_text("a\x1b]0;X\x07b") == "a\\x1b]0;X\\x07b"
    assert sanitize_text("\x9b\x7f\u202e\u2066") == "\\x9b\\x7f\\u202e\\u2066"
    assert sanitize_text("a\tb\nc\r") == "a\\x09b\\x0ac\\x0d"
    assert sanitize_text("a\tb\nc\r", one_line=True) == "a b c "
    assert sanitize_text("Größe 日本 😀 ok") == "Größe 日本 😀 ok"  # printable text stays


def test_clean_text_masks_before_it_cuts() -> None:
    # Cut first, then masked, this would keep "sk-" (too short for the mask to see).
    text = "x" * 497 + KEY
    cleaned = clean_text(text, MASK, limit=MAX_DESCRIPTION_CHARS)
    assert len(cleaned) == MAX_DESCRIPTION_CHARS
    assert "sk" not in cleaned and "SECRET" not in cleaned


def test_clean_text_sanitises_before_it_masks() -> None:
    # A control character inside the key must not hide it from the mask once removed:
    # escaped, it leaves only pieces shorter than the fragment length.
    cleaned = clean_text(f"bad key {KEY[:9]}\x1b{KEY[9:]}", MASK)
    assert KEY[:6] not in cleaned and KEY[9:15] not in cleaned
    assert "\x1b" not in cleaned


@pytest.mark.parametrize("where", ["text", "nested", "key"])
def test_lone_surrogates_and_escapes_in_solutions_are_made_safe(where: str) -> None:
    value = "ab\ud800cd" + ESCAPES
    solution: dict[str, object] = {
        "text": {"text": value},
        "nested": {"text": "ok", "objects": [{"label": [value, 1, None, True]}]},
        "key": {"text": "ok", value: value},
    }[where]
    reply = parse_task_result(CAPSOLVER, 200, _json({**READY, "solution": solution}), "t")
    dumped = json.dumps(reply.solution, ensure_ascii=False)
    assert _safe(dumped)
    assert "ab\ufffdcd" in dumped
    assert reply.answer is not None and _safe(reply.answer)
    if where == "text":
        assert reply.answer == "ab\ufffdcdERR_\\x1b]0;PWNED\\x07\\x9b2J\\u202e\\u2028"
    assert "\x1b" not in repr(reply)


def test_solution_nested_too_deep_is_malformed() -> None:
    deep: object = "x"
    for _ in range(MAX_SOLUTION_DEPTH + 1):
        deep = [deep]
    with pytest.raises(MalformedReply, match="deeper"):
        parse_task_result(CAPSOLVER, 200, _json({**READY, "solution": {"text": deep}}), "t")


def test_json_nested_past_the_parser_stack_is_malformed_not_a_crash() -> None:
    with pytest.raises(MalformedReply):
        decode_json(200, b"[" * 200_000)


def test_solution_strings_echoing_the_key_are_masked() -> None:
    payload = {**READY, "solution": {"text": f"your key {KEY.lower()}", "extra": [KEY[:8]]}}
    reply = parse_task_result(CAPSOLVER, 200, _json(payload), "t", mask=MASK)
    assert reply.solution == {"text": "your key ****", "extra": ["****"]}


PARSERS = {
    "createTask": lambda status, body: parse_create_task(CAPSOLVER, status, body, mask=MASK),
    "getTaskResult": lambda status, body: parse_task_result(
        CAPSOLVER, status, body, "t", mask=MASK
    ),
    "getBalance": lambda status, body: parse_balance(status, body, mask=MASK),
    "report": lambda status, body: parse_report(status, body, "t", mask=MASK),
}


@pytest.mark.parametrize("parser", list(PARSERS.values()), ids=list(PARSERS))
@pytest.mark.parametrize("status", [200, 401, 500])
def test_error_code_and_description_are_cleaned_for_every_reply_kind(
    parser: object, status: int
) -> None:
    body = {
        "errorId": 1,
        "errorCode": ESCAPES + "\ud800" + KEY.upper(),
        "errorDescription": f"d\ud800 {ESCAPES}\n{KEY.lower()} " + "y" * 2000,
    }
    with pytest.raises(APIError) as info:
        parser(status, _json(body))  # type: ignore[operator]
    exc = info.value
    for text in (str(exc), exc.error_code):
        assert _safe(text), text
        assert KEY.lower() not in text.lower() and KEY[:6].lower() not in text.lower()
    assert "ERR_\\x1b]0;PWNED\\x07" in exc.error_code
    assert len(exc.error_code) <= _errors.MAX_CODE_CHARS
    assert len(str(exc)) < _errors.MAX_CODE_CHARS + MAX_DESCRIPTION_CHARS + 20


@pytest.mark.parametrize("parser", list(PARSERS.values()), ids=list(PARSERS))
def test_non_json_excerpts_are_cleaned_for_every_reply_kind(parser: object) -> None:
    # The mid-key cut: the 80-character excerpt ends inside the echoed key.
    body = ("<html>\x1b]0;PWNED\x07" + "x" * 60 + KEY.lower() + "</html>").encode()
    with pytest.raises(MalformedReply) as info:
        parser(200, body)  # type: ignore[operator]
    message = str(info.value)
    assert _safe(message)
    assert "sk-e2" not in message and "secret" not in message.lower()


def test_excerpt_never_holds_the_request_body() -> None:
    page = b'<pre>{"clientKey":"another-key-9f8e7d6c","task":{"body":"iVBOR"}}</pre>'
    excerpt = reply_excerpt(page, MASK)
    assert "another-key" not in excerpt and "9f8e7d6c" not in excerpt
    assert len(excerpt) <= _text.MAX_EXCERPT_CHARS


def test_unknown_status_is_cleaned_in_the_message() -> None:
    with pytest.raises(MalformedReply) as info:
        parse_task_result(CAPSOLVER, 200, _json({"errorId": 0, "status": ESCAPES * 20}), "t")
    assert _safe(str(info.value))
    assert len(str(info.value)) < 100


def test_pending_status_string_is_cleaned() -> None:
    reply = parse_task_result(CAPSOLVER, 200, _json({"errorId": 0, "status": "IDLE"}), "t")
    assert reply.status == "pending" and reply.raw_status == "idle"


@pytest.mark.parametrize(
    ("task_id", "words"),
    [
        ("t-\x1b]0;x\x07", "unsafe"),
        ("t-\ud800", "unsafe"),
        (f"id-{KEY}", "echoes the account key"),
        ("x" * 500, "500 characters"),
        ({"id": 1}, "type dict"),
        (1.5, "type float"),
        (True, "type bool"),
    ],
)
def test_bad_task_ids_are_refused_not_changed(task_id: object, words: str) -> None:
    with pytest.raises(MalformedReply, match=words) as info:
        parse_create_task(CAPSOLVER, 200, _json({"errorId": 0, "taskId": task_id}), mask=MASK)
    assert _safe(str(info.value)) and KEY not in str(info.value)
    assert info.value.error_code == "MALFORMED_REPLY"  # may have been created: maybe-sent


def test_task_ids_keep_short_chance_matches_of_the_key() -> None:
    # "7f3a9c" is a piece of KEY; a hex task id can hold it by chance and must round-trip.
    chance = "2376919c-1863-11ec-a012-947f3a9c0b00"
    task_mask = partial(Secret(KEY).mask, min_fragment=_protocol.TASK_ID_MIN_FRAGMENT)
    reply = parse_create_task(
        CAPSOLVER, 200, _json({"errorId": 0, "taskId": chance}), mask=MASK, task_id_mask=task_mask
    )
    assert reply.task_id == chance
    numeric = parse_create_task(ANTICAPTCHA, 200, _json({"errorId": 0, "taskId": 7654321}))
    assert numeric.task_id == "7654321"


# --- hostile replies: costs, balances, Retry-After ------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, (None, False)),
        ("", (None, False)),
        ("0.000700", (0.0007, False)),
        (" 0.002 ", (0.002, False)),
        (0, (0.0, False)),
        (0.0012, (0.0012, False)),
        (10, (10.0, False)),
        (math.nan, (None, True)),
        (math.inf, (None, True)),
        (-math.inf, (None, True)),
        ("NaN", (None, True)),
        ("inf", (None, True)),
        (-0.0007, (None, True)),
        ("-1", (None, True)),
        (10.01, (None, True)),
        (1e300, (None, True)),
        (10**400, (None, True)),
        ("n/a", (None, True)),
        (True, (None, True)),
        ([0.1], (None, True)),
        ({"usd": 0.1}, (None, True)),
    ],
)
def test_parse_cost(raw: object, expected: tuple[float | None, bool]) -> None:
    cost, rejected = parse_cost(raw)
    assert rejected is expected[1]
    if expected[0] is None:
        assert cost is None
    else:
        assert cost == pytest.approx(expected[0])


@pytest.mark.parametrize("raw", [b"NaN", b"-Infinity", b"-0.5", b"99999", b'"abc"'])
def test_bad_reported_costs_are_unknown_and_flagged(raw: bytes) -> None:
    body = b'{"errorId":0,"status":"ready","solution":{"text":"a"},"cost":' + raw + b"}"
    for profile in (ANTICAPTCHA, TWOCAPTCHA):
        reply = parse_task_result(profile, 200, body, "1")
        assert reply.cost is None and reply.cost_rejected
        created = parse_create_task(profile, 200, body)
        assert created.cost is None and created.cost_rejected
    # A provider that reports no costs: the field is ignored, not rejected.
    reply = parse_task_result(CAPSOLVER, 200, body, "1")
    assert reply.cost is None and not reply.cost_rejected


def test_good_reported_cost_is_not_flagged() -> None:
    body = _json({**READY, "solution": {"text": "a"}, "cost": "0.000700"})
    reply = parse_task_result(ANTICAPTCHA, 200, body, "1")
    assert reply.cost == pytest.approx(0.0007) and not reply.cost_rejected


@pytest.mark.parametrize("raw", [b"NaN", b"Infinity", b"1e999", b"true", b"[1]", b"1" * 5000])
def test_balance_that_is_not_a_finite_number_is_malformed(raw: bytes) -> None:
    with pytest.raises(MalformedReply):
        parse_balance(200, b'{"errorId":0,"balance":' + raw + b"}")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("inf", RETRY_AFTER_CAP),
        ("Infinity", RETRY_AFTER_CAP),
        ("86400", RETRY_AFTER_CAP),
        ("1e308", RETRY_AFTER_CAP),
        ("300", RETRY_AFTER_CAP),
        ("299.5", 299.5),
        ("-inf", 0.0),
        ("-5", 0.0),
        ("nan", None),
        ("NaN", None),
    ],
)
def test_retry_after_is_capped(value: str, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_retry_after_cap_and_long_waits() -> None:
    assert parse_retry_after("86400", cap=2.0) == 2.0
    far = format_datetime(datetime.now(timezone.utc) + timedelta(days=3), usegmt=True)
    assert parse_retry_after(far) == RETRY_AFTER_CAP
    assert parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT") == RETRY_AFTER_CAP
    assert retry_after_is_long(parse_retry_after("inf"))
    assert retry_after_is_long(parse_retry_after("86400"))
    assert not retry_after_is_long(parse_retry_after("30"))
    assert not retry_after_is_long(None)
    assert retry_after_is_long(parse_retry_after("9", cap=5.0), cap=5.0)


# --- what a stored code and a transport error say ------------------------------------


@pytest.mark.parametrize(
    ("cls", "sent"),
    [
        (ConnectFailed, False),
        (ConnectTimeout, False),
        (ConnectionLost, True),
        (RequestTimeout, True),
        (MalformedReply, True),
        (ReplyTooLarge, True),
    ],
)
def test_whether_a_request_may_have_reached_the_provider_is_the_class(
    cls: type[TransportError], sent: bool
) -> None:
    assert cls("x").maybe_sent is sent


@pytest.mark.parametrize(
    ("code", "action"),
    [
        ("ERROR_CAPTCHA_UNSOLVABLE", Action.RETRY_BOUNDED),
        ("ERROR_INVALID_TASK_DATA", Action.RECORD),
        ("HTTP_503", Action.RETRY),
        ("CONNECT_FAILED", Action.RETRY),
        ("REPLY_TOO_LARGE", Action.RETRY),
        ("INPUT_TABLE_ERROR", Action.RECORD),
        ("PROVIDER_OUTAGE", Action.FATAL),
        ("SOMETHING_NEW", None),
    ],
)
def test_a_stored_code_is_classified_through_its_class(code: str, action: Action | None) -> None:
    assert action_for_code(code) is action
