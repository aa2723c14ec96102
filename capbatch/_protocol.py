"""Request bodies and reply parsing for the task protocol, and the one error table.

Everything here is pure: bytes and dicts in, values or exceptions out. The async
client (``_client.py``) does the I/O; the runner asks ``classify()`` what to do with
an error. Provider ``errorCode`` strings and HTTP statuses become exceptions in
exactly one function, ``error_from_reply``.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Literal

from ._exceptions import (
    APIError,
    AuthError,
    BalanceError,
    BannedError,
    CapbatchError,
    ConfigError,
    ConnectionFailed,
    InputError,
    InvalidTask,
    MalformedReply,
    RateLimited,
    RequestTimeout,
    ServiceUnavailable,
    TaskExpired,
    TemporarilyBlocked,
    TransportError,
    Unsolvable,
)
from ._providers import ProviderProfile

TaskStatus = Literal["ready", "pending"]

# --- the error table -------------------------------------------------------------------

#: Provider ``errorCode`` -> exception class. CapSolver's codes come from protocol.md;
#: the others are the compatible providers' documented codes for the same situations.
ERROR_CODES: Mapping[str, type[APIError]] = {
    # bad or missing key
    "ERROR_KEY_DENIED_ACCESS": AuthError,
    "ERROR_KEY_DOES_NOT_EXIST": AuthError,
    "ERROR_WRONG_USER_KEY": AuthError,
    "ERROR_ACCOUNT_SUSPENDED": AuthError,
    "ERROR_IP_NOT_ALLOWED": AuthError,
    "ERROR_ACCESS_DENIED": AuthError,
    # money
    "ERROR_ZERO_BALANCE": BalanceError,
    "ERROR_SETTLEMENT_FAILED": BalanceError,
    "ERROR_INSUFFICIENT_BALANCE": BalanceError,
    # bans and blocks
    "ERROR_IP_BANNED": BannedError,
    "ERROR_IP_BLOCKED": BannedError,
    "IP_BANNED": BannedError,
    "ERROR_KEY_TEMP_BLOCKED": TemporarilyBlocked,
    # load
    "ERROR_RATE_LIMIT": RateLimited,
    "ERROR_TOO_MUCH_REQUESTS": RateLimited,
    "ERROR_SERVICE_UNAVALIABLE": ServiceUnavailable,
    "ERROR_SERVICE_UNAVAILABLE": ServiceUnavailable,
    "ERROR_NO_SLOT_AVAILABLE": ServiceUnavailable,
    "ERROR_INTERNAL_SERVER_ERROR": ServiceUnavailable,
    # the captcha itself
    "ERROR_CAPTCHA_UNSOLVABLE": Unsolvable,
    "ERROR_TASK_FAILED": Unsolvable,
    # task lifetime
    "ERROR_TASKID_INVALID": TaskExpired,
    "ERROR_TASK_TIMEOUT": TaskExpired,
    "ERROR_NO_SUCH_CAPCHA_ID": TaskExpired,
    "ERROR_WRONG_CAPTCHA_ID": TaskExpired,
    "WRONG_CAPTCHA_ID": TaskExpired,
    "ERROR_TASK_ABSENT": TaskExpired,
    "ERROR_MAXIMUM_TIME_EXCEED": TaskExpired,
    # the request or image was refused
    "ERROR_INVALID_TASK_DATA": InvalidTask,
    "ERROR_BAD_REQUEST": InvalidTask,
    "ERROR_INVALID_IMAGE": InvalidTask,
    "ERROR_PARSE_IMAGE_FAIL": InvalidTask,
    "ERROR_TASK_NOT_SUPPORTED": InvalidTask,
    "ERROR_UNKNOWN_QUESTION": InvalidTask,
    "ERROR_PROXY_BANNED": InvalidTask,
    "ERROR_ZERO_CAPTCHA_FILESIZE": InvalidTask,
    "ERROR_TOO_BIG_CAPTCHA_FILESIZE": InvalidTask,
    "ERROR_IMAGE_TYPE_NOT_SUPPORTED": InvalidTask,
    "ERROR_WRONG_FILE_EXTENSION": InvalidTask,
    "ERROR_NO_SUCH_METHOD": InvalidTask,
    "ERROR_DOMAIN_NOT_ALLOWED": InvalidTask,
    "ERROR_BAD_DUPLICATES": InvalidTask,
}

#: HTTP status -> exception class, used only when the reply names no known errorCode.
HTTP_STATUSES: Mapping[int, type[APIError]] = {
    400: InvalidTask,
    401: AuthError,
    402: BalanceError,
    403: AuthError,
    409: InvalidTask,
    429: RateLimited,
}


class Action(enum.Enum):
    """What the runner does with an error. Every retry decision comes from ``classify``."""

    RETRY = "retry"  # same request again after backoff
    SLOW_DOWN = "slow_down"  # retry, and lower the whole run's rate
    RECREATE = "recreate"  # the task is gone: createTask again (bounded)
    RETRY_BOUNDED = "retry_bounded"  # a new task may succeed; a few tries at most
    PAUSE = "pause"  # stop sending for a while, then go on
    RECORD = "record"  # the row fails with this error; no retry
    FATAL = "fatal"  # the whole run stops at once


#: The classification table (most specific class first wins via the MRO walk).
ACTIONS: Mapping[type[CapbatchError], Action] = {
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
    ConnectionFailed: Action.RETRY,
    RequestTimeout: Action.RETRY,
    MalformedReply: Action.RETRY,
    TransportError: Action.RETRY,
    InputError: Action.RECORD,
    # A setup problem (a solver missing, a bad option) would fail every row the same way.
    ConfigError: Action.FATAL,
    CapbatchError: Action.RECORD,
}


def classify(error: CapbatchError) -> Action:
    """The action for ``error``, from ``ACTIONS`` by its nearest class."""
    for cls in type(error).__mro__:
        action = ACTIONS.get(cls)
        if action is not None:
            return action
    return Action.RECORD


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    now = datetime.now(timezone.utc)
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - now).total_seconds())


def error_from_reply(
    http_status: int,
    payload: Mapping[str, Any] | None,
    *,
    retry_after: float | None = None,
    task_id: str | None = None,
) -> APIError:
    """The one place a provider error (``errorCode`` first, HTTP status second) becomes
    an exception. The message holds the code and the provider's description only."""
    code = ""
    description = ""
    if payload is not None:
        code = str(payload.get("errorCode") or "").strip()
        description = str(payload.get("errorDescription") or "").strip()
    cls: type[APIError] | None = ERROR_CODES.get(code)
    if cls is None:
        # No known code: fall back on the HTTP status.
        cls = ServiceUnavailable if http_status >= 500 else HTTP_STATUSES.get(http_status, APIError)
    if not code:
        code = cls.error_code if cls is not APIError else f"HTTP_{http_status}"
    message = f"{code}: {description}" if description else code
    if http_status != 200:
        message += f" (HTTP {http_status})"
    return cls(
        message,
        error_code=code,
        http_status=http_status,
        task_id=task_id,
        retry_after=retry_after,
    )


# --- requests -------------------------------------------------------------------------


def create_task_body(
    client_key: str,
    task: Mapping[str, Any],
    *,
    app_id: str | None = None,
    callback_url: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"clientKey": client_key, "task": dict(task)}
    if app_id:
        body["appId"] = app_id
    if callback_url:
        body["callbackUrl"] = callback_url
    return body


def get_task_result_body(profile: ProviderProfile, client_key: str, task_id: str) -> dict[str, Any]:
    return {"clientKey": client_key, "taskId": profile.task_id_for_request(task_id)}


def get_balance_body(client_key: str) -> dict[str, Any]:
    return {"clientKey": client_key}


def report_incorrect_body(
    profile: ProviderProfile,
    client_key: str,
    task_id: str,
    *,
    app_id: str | None = None,
    message: str | None = None,
) -> dict[str, Any]:
    """Body of the report-a-wrong-answer call in the profile's style."""
    tid = profile.task_id_for_request(task_id)
    if profile.report_style == "feedback":
        result: dict[str, Any] = {"invalid": True}
        if message:
            result["message"] = message
        body: dict[str, Any] = {"clientKey": client_key, "taskId": tid, "result": result}
        if app_id:
            body["appId"] = app_id
        return body
    return {"clientKey": client_key, "taskId": tid}


# --- replies --------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskReply:
    """A createTask or getTaskResult reply that was not an error."""

    task_id: str | None
    status: TaskStatus
    #: The status string as sent (``idle``, ``processing``, ``ready`` or None).
    raw_status: str | None
    solution: Mapping[str, Any] | None = None
    #: Provider-reported cost in USD, when the provider reports one.
    cost: float | None = None

    @property
    def ready(self) -> bool:
        return self.status == "ready"

    @property
    def answer(self) -> str | None:
        return answer_of(self.solution)


#: Solution fields that hold "the answer", in order of preference.
_ANSWER_FIELDS = ("text", "gRecaptchaResponse", "token", "answer", "answers", "objects")


def answer_of(solution: Mapping[str, Any] | None) -> str | None:
    """The answer text of a solution object (``text`` for image tasks)."""
    if not solution:
        return None
    for name in _ANSWER_FIELDS:
        value = solution.get(name)
        if value is None:
            continue
        if isinstance(value, str):
            return value
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return None


def decode_json(
    http_status: int, content: bytes, *, retry_after: float | None = None
) -> dict[str, Any]:
    """Parse a reply body; non-JSON bodies become the right transport or API error."""
    try:
        payload = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        payload = None
    if isinstance(payload, dict):
        return payload
    if http_status >= 500:
        raise ServiceUnavailable(
            f"HTTP {http_status} with a body that is not JSON",
            error_code=f"HTTP_{http_status}",
            http_status=http_status,
            retry_after=retry_after,
        )
    if http_status in HTTP_STATUSES:
        raise error_from_reply(http_status, None, retry_after=retry_after)
    snippet = content[:80].decode("utf-8", "replace").replace("\n", " ")
    raise MalformedReply(
        f"reply is not a JSON object (HTTP {http_status}): {snippet!r}",
        http_status=http_status,
    )


def _raise_for_error(
    http_status: int,
    payload: Mapping[str, Any],
    *,
    retry_after: float | None,
    task_id: str | None,
) -> None:
    error_id = payload.get("errorId", 0)
    if error_id not in (0, "0", None, False) or (http_status >= 400 and payload.get("errorCode")):
        raise error_from_reply(http_status, payload, retry_after=retry_after, task_id=task_id)
    if http_status >= 400:
        raise error_from_reply(http_status, payload, retry_after=retry_after, task_id=task_id)


def _parse_cost(profile: ProviderProfile, payload: Mapping[str, Any]) -> float | None:
    if not profile.cost_in_reply:
        return None
    raw = payload.get("cost")
    if raw is None or raw == "":
        return None
    try:
        return float(raw)
    except (TypeError, ValueError):
        return None


def _task_reply(
    profile: ProviderProfile, payload: Mapping[str, Any], task_id: str | None
) -> TaskReply:
    raw_status = payload.get("status")
    status_text = str(raw_status).lower() if raw_status is not None else None
    solution = payload.get("solution")
    if status_text == "ready":
        if not isinstance(solution, Mapping):
            raise MalformedReply("status is ready but the reply has no solution object")
        return TaskReply(
            task_id=task_id,
            status="ready",
            raw_status=str(raw_status),
            solution=dict(solution),
            cost=_parse_cost(profile, payload),
        )
    if status_text == "failed":
        # Seen in SDKs (unconfirmed): a task that ended without an answer.
        raise Unsolvable(
            "task failed without an answer", error_code="ERROR_TASK_FAILED", task_id=task_id
        )
    if status_text is None or status_text in profile.pending_statuses:
        return TaskReply(task_id=task_id, status="pending", raw_status=status_text)
    raise MalformedReply(f"unknown task status {str(raw_status)[:40]!r}")


def parse_create_task(
    profile: ProviderProfile,
    http_status: int,
    content: bytes,
    *,
    retry_after: float | None = None,
) -> TaskReply:
    """A createTask reply: synchronous ``ready`` or deferred (with or without status)."""
    payload = decode_json(http_status, content, retry_after=retry_after)
    _raise_for_error(http_status, payload, retry_after=retry_after, task_id=None)
    raw_id = payload.get("taskId")
    task_id = None if raw_id in (None, "") else str(raw_id)
    reply = _task_reply(profile, payload, task_id)
    if not reply.ready and task_id is None:
        raise MalformedReply("createTask reply has neither an answer nor a taskId")
    return reply


def parse_task_result(
    profile: ProviderProfile,
    http_status: int,
    content: bytes,
    task_id: str,
    *,
    retry_after: float | None = None,
) -> TaskReply:
    """A getTaskResult reply: pending (idle/processing), ready, or an error."""
    payload = decode_json(http_status, content, retry_after=retry_after)
    _raise_for_error(http_status, payload, retry_after=retry_after, task_id=task_id)
    return _task_reply(profile, payload, task_id)


def parse_balance(http_status: int, content: bytes, *, retry_after: float | None = None) -> float:
    payload = decode_json(http_status, content, retry_after=retry_after)
    _raise_for_error(http_status, payload, retry_after=retry_after, task_id=None)
    try:
        return float(payload["balance"])
    except (KeyError, TypeError, ValueError):
        raise MalformedReply("getBalance reply has no numeric balance") from None


def parse_report(
    http_status: int, content: bytes, task_id: str, *, retry_after: float | None = None
) -> bool:
    """True when the provider accepted the report of a wrong answer."""
    payload = decode_json(http_status, content, retry_after=retry_after)
    _raise_for_error(http_status, payload, retry_after=retry_after, task_id=task_id)
    status = payload.get("status")
    return status in (None, "success", "ok", "ready") or bool(payload.get("message") is not None)
