r"""Request bodies and reply parsing for the task protocol, and the one error table.

Everything here is pure: bytes and dicts in, values or exceptions out. The async
client (``_client.py``) does the I/O; the runner asks ``classify()`` what to do with
an error. Provider ``errorCode`` strings and HTTP statuses become exceptions in
exactly one function, ``error_from_reply``.

Provider text is untrusted. Every string a reply carries (task ids, status strings,
error codes and descriptions, every string in a solution object, at any depth, keys
included, and excerpts of bodies that are not JSON) passes ``clean_text`` once, here,
where it is parsed, in this order:

1. ``sanitize_text``: a lone surrogate (valid JSON, but neither UTF-8 nor SQLite can
   store it) becomes U+FFFD; C0 and C1 control characters, DEL, the line and paragraph
   separators and the bidirectional overrides are written as visible escapes
   (``\x1b``, ``\u202e``) so no terminal acts on them and a reader sees what was sent.
   Nothing keeps a tab or newline: answers of image captchas never hold one, and error
   text is one line (tabs and newlines there become spaces). Printable ASCII passes
   through untouched at the cost of one ``isascii() and isprintable()`` check.
2. the caller's mask (``Secret.mask``: the account key in any case, escaped, or a piece
   of it), before anything is cut, so a cut cannot leave a piece of the key behind.
3. a length cap where the text is a message (``MAX_DESCRIPTION_CHARS`` and friends).

A task id is never changed, since it is sent back verbatim: one that cleaning would
change (control characters, or the key) is refused as a malformed reply. For ids the
key's pieces count from ``TASK_ID_MIN_FRAGMENT`` characters, not 6: at 6, a random hex
or decimal id matches a piece of a hex key about once in tens of thousands of tasks.

Reported costs are numbers or numeric strings in ``[0, MAX_REPORTED_COST]``; anything
else (NaN, infinities, negatives, absurd amounts) parses as an unknown cost with
``TaskReply.cost_rejected`` set.
"""

from __future__ import annotations

import enum
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Literal

from capbatch._exceptions import (
    APIError,
    AuthError,
    BalanceError,
    BannedError,
    CapbatchError,
    ConfigError,
    ConnectionFailed,
    InputError,
    InvalidTask,
    JournalError,
    MalformedReply,
    OutputError,
    ProviderOutage,
    RateLimited,
    RequestTimeout,
    RunFailed,
    RunInterrupted,
    ServiceUnavailable,
    TaskExpired,
    TemporarilyBlocked,
    TransportError,
    Unsolvable,
)
from capbatch._providers.profiles import ProviderProfile

TaskStatus = Literal["ready", "pending"]

#: A function masking the account key in provider text (``Secret.mask``).
Mask = Callable[[str], str]

#: Longest provider error description kept (after masking), in characters.
MAX_DESCRIPTION_CHARS = 500
#: Longest error code kept; real codes are under 40 characters.
MAX_CODE_CHARS = 80
#: Longest status string echoed in a message.
MAX_STATUS_CHARS = 40
#: Longest excerpt of a reply that is not JSON, in a message.
MAX_EXCERPT_CHARS = 80
#: Longest task id accepted: ids are UUIDs or integers; a longer one is not an id.
MAX_TASK_ID_CHARS = 128
#: Deepest nesting of a solution object accepted.
MAX_SOLUTION_DEPTH = 32
#: A provider-reported cost above this many USD for one task is nonsense, not a price.
MAX_REPORTED_COST = 10.0
#: Longest wait a ``Retry-After`` header can impose, in seconds. A longer (or infinite)
#: one is cut to this; the runner may read a value at the cap as an outage.
RETRY_AFTER_CAP = 300.0
#: Pieces of the key this long or longer are masked in task ids (see the docstring).
TASK_ID_MIN_FRAGMENT = 12

# --- the error table -------------------------------------------------------------------

#: Provider ``errorCode`` -> exception class. Each code, its source and its status are
#: listed in docs/providers.md, section "Error codes"; HTTP_STATUSES in "HTTP statuses".
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
    # The run's own state failing (its journal, its output), the provider gone for good,
    # a stop asked for, or a fault: nothing a row can retry its way out of.
    JournalError: Action.FATAL,
    OutputError: Action.FATAL,
    ProviderOutage: Action.FATAL,
    RunFailed: Action.FATAL,
    RunInterrupted: Action.FATAL,
    CapbatchError: Action.RECORD,
}


def classify(error: CapbatchError) -> Action:
    """The action for ``error``, from ``ACTIONS`` by its nearest class."""
    for cls in type(error).__mro__:
        action = ACTIONS.get(cls)
        if action is not None:
            return action
    return Action.RECORD


def _classes_by_code() -> dict[str, type[CapbatchError]]:
    """capbatch's own error codes (each class's default ``error_code``) -> class."""
    found: dict[str, type[CapbatchError]] = {}
    pending: list[type[CapbatchError]] = [CapbatchError]
    while pending:
        cls = pending.pop()
        found.setdefault(cls.error_code, cls)
        pending.extend(cls.__subclasses__())
    return found


_CLASSES_BY_CODE = _classes_by_code()


def action_for_code(error_code: str) -> Action | None:
    """The action for an error known only by its code, as a row's ``error_code`` in the
    journal or an output keeps it: a provider code from ``ERROR_CODES``, ``HTTP_5xx``, or
    the code of one of capbatch's classes. None for a code nothing names."""
    cls: type[CapbatchError] | None = ERROR_CODES.get(error_code)
    if cls is None and error_code.startswith("HTTP_5"):
        cls = ServiceUnavailable
    if cls is None:
        cls = _CLASSES_BY_CODE.get(error_code)
    if cls is None:
        return None
    for klass in cls.__mro__:
        action = ACTIONS.get(klass)
        if action is not None:
            return action
    return Action.RECORD


def parse_retry_after(value: str | None, *, cap: float = RETRY_AFTER_CAP) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or HTTP date), in
    ``[0, cap]``: ``inf`` or ``86400`` must not stop a run for good (a value at the cap
    means "a long time": see ``retry_after_is_long``). NaN and garbage give None."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, OverflowError):
            return None
        now = datetime.now(timezone.utc)
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - now).total_seconds()
    if math.isnan(seconds):
        return None
    return min(cap, max(0.0, seconds))


def retry_after_is_long(seconds: float | None, *, cap: float = RETRY_AFTER_CAP) -> bool:
    """Whether a parsed ``Retry-After`` reached the cap: the provider asked for at least
    that long, which a runner may treat as an outage rather than a slow-down."""
    return seconds is not None and seconds >= cap


# --- provider text --------------------------------------------------------------------

# Escapes for the characters no provider string may carry as they are: C0 and C1
# controls and DEL (terminal escape sequences), the line and paragraph separators, and
# the bidirectional overrides and isolates (text that displays other than it reads).
_UNSAFE_CODES = [
    *range(0x00, 0x20),
    *range(0x7F, 0xA0),
    0x2028,
    0x2029,
    *range(0x202A, 0x202F),
    *range(0x2066, 0x206A),
]
_ESCAPES: dict[int, str] = {
    code: (f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}") for code in _UNSAFE_CODES
}
# Lone surrogates (json.loads pairs the valid ones) cannot be encoded or stored.
_ESCAPES.update(dict.fromkeys(range(0xD800, 0xE000), "\ufffd"))
_ONE_LINE = {**_ESCAPES, 0x09: " ", 0x0A: " ", 0x0D: " "}


def sanitize_text(text: str, *, one_line: bool = False) -> str:
    """``text`` safe to store and print: see the module docstring for the rule.
    ``one_line`` turns tabs and line breaks into spaces (for messages) instead of
    escaping them."""
    if text.isascii() and text.isprintable():
        return text  # the common case: one cheap check, no copy
    return text.translate(_ONE_LINE if one_line else _ESCAPES)


def clean_text(
    text: str, mask: Mask | None = None, *, limit: int | None = None, one_line: bool = False
) -> str:
    """Provider text, sanitised, then masked, then cut to ``limit`` characters: the
    order matters (stripping could join the pieces of a key; cutting first could leave
    a piece too short to recognise)."""
    text = sanitize_text(text, one_line=one_line)
    if mask is not None:
        text = mask(text)
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + "…"
    return text


def _clean_solution(value: Any, mask: Mask | None, depth: int = 0) -> Any:
    """Every string in a solution object cleaned, keys included, at any depth."""
    if isinstance(value, str):
        return clean_text(value, mask)
    if isinstance(value, (Mapping, list)):
        if depth >= MAX_SOLUTION_DEPTH:
            raise MalformedReply(f"solution nested deeper than {MAX_SOLUTION_DEPTH} levels")
        if isinstance(value, list):
            return [_clean_solution(item, mask, depth + 1) for item in value]
        return {
            clean_text(str(key), mask): _clean_solution(item, mask, depth + 1)
            for key, item in value.items()
        }
    return value  # numbers, booleans, null


# Our request's key field, should a page quote the request back: blanked whatever its
# value, so an excerpt holds no request text even in a form the mask does not know.
_CLIENT_KEY_FIELD = re.compile(r"""(?i)(client_?key["']?\s*[:=]\s*["']?)[^"'\s&,;}<>]*""")


def reply_excerpt(content: bytes, mask: Mask | None = None) -> str:
    """A short, one-line, masked excerpt of a reply body for an error message. The
    whole body is masked before it is cut (a cut mid-key would hide the key's piece
    from the mask); bodies are at most ``_transport.MAX_REPLY_BYTES`` long."""
    text = clean_text(content.decode("utf-8", "replace"), mask, one_line=True)
    text = _CLIENT_KEY_FIELD.sub(r"\1****", text)
    return clean_text(text, limit=MAX_EXCERPT_CHARS)


def error_from_reply(
    http_status: int,
    payload: Mapping[str, Any] | None,
    *,
    retry_after: float | None = None,
    task_id: str | None = None,
    mask: Mask | None = None,
) -> APIError:
    """The one place a provider error (``errorCode`` first, HTTP status second) becomes
    an exception. The message holds the code and the provider's description only,
    both cleaned (``clean_text``) with ``mask``."""
    code = ""
    description = ""
    if payload is not None:
        code = _text_field(payload, "errorCode", mask, MAX_CODE_CHARS)
        description = _text_field(payload, "errorDescription", mask, MAX_DESCRIPTION_CHARS)
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


def _text_field(payload: Mapping[str, Any], name: str, mask: Mask | None, limit: int) -> str:
    raw = payload.get(name)
    if not raw:
        return ""
    return clean_text(str(raw), mask, limit=limit, one_line=True).strip()


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
    #: Provider-reported cost in USD, when the provider reports a usable one.
    cost: float | None = None
    #: The provider reported a cost that is not a usable amount (NaN, an infinity,
    #: negative, above ``MAX_REPORTED_COST``, not a number): ``cost`` is None then.
    cost_rejected: bool = False

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
    http_status: int,
    content: bytes,
    *,
    retry_after: float | None = None,
    mask: Mask | None = None,
) -> dict[str, Any]:
    """Parse a reply body; non-JSON bodies become the right transport or API error."""
    try:
        payload = json.loads(content)
    except (ValueError, UnicodeDecodeError, RecursionError):
        # RecursionError: ``[[[[...`` nested deeper than the parser's stack.
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
    raise MalformedReply(
        f"reply is not a JSON object (HTTP {http_status}): {reply_excerpt(content, mask)!r}",
        http_status=http_status,
    )


def _raise_for_error(
    http_status: int,
    payload: Mapping[str, Any],
    *,
    retry_after: float | None,
    task_id: str | None,
    mask: Mask | None,
) -> None:
    error_id = payload.get("errorId", 0)
    if error_id not in (0, "0", None, False) or http_status >= 400:
        raise error_from_reply(
            http_status, payload, retry_after=retry_after, task_id=task_id, mask=mask
        )


def parse_cost(raw: Any) -> tuple[float | None, bool]:
    """A reported cost as ``(usd, rejected)``: numbers and numeric strings such as
    ``"0.000700"`` in ``[0, MAX_REPORTED_COST]`` are kept; anything else is unknown
    (None) and flagged as rejected, absence is unknown and not rejected."""
    if raw is None or raw == "":
        return None, False
    if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
        return None, True
    try:
        cost = float(raw.strip() if isinstance(raw, str) else raw)
    except (ValueError, OverflowError):
        return None, True
    if not math.isfinite(cost) or not 0.0 <= cost <= MAX_REPORTED_COST:
        return None, True
    return cost, False


def _status_of(raw_status: Any, mask: Mask | None) -> str | None:
    if raw_status is None:
        return None
    return clean_text(str(raw_status), mask, limit=MAX_STATUS_CHARS, one_line=True)


def _task_reply(
    profile: ProviderProfile, payload: Mapping[str, Any], task_id: str | None, mask: Mask | None
) -> TaskReply:
    raw_status = _status_of(payload.get("status"), mask)
    status_text = raw_status.lower() if raw_status is not None else None
    solution = payload.get("solution")
    if status_text == "ready":
        if not isinstance(solution, Mapping):
            raise MalformedReply("status is ready but the reply has no solution object")
        cost, rejected = parse_cost(payload.get("cost")) if profile.cost_in_reply else (None, False)
        return TaskReply(
            task_id=task_id,
            status="ready",
            raw_status=raw_status,
            solution=_clean_solution(solution, mask),
            cost=cost,
            cost_rejected=rejected,
        )
    if status_text == "failed":
        # Seen in SDKs (unconfirmed): a task that ended without an answer.
        raise Unsolvable(
            "task failed without an answer", error_code="ERROR_TASK_FAILED", task_id=task_id
        )
    if status_text is None or status_text in profile.pending_statuses:
        return TaskReply(task_id=task_id, status="pending", raw_status=status_text)
    raise MalformedReply(f"unknown task status {raw_status!r}")


def _task_id_of(raw_id: Any, mask: Mask | None) -> str | None:
    """A createTask reply's task id. It must round-trip verbatim, so one that cleaning
    would change is refused instead of changed."""
    if raw_id is None or raw_id == "":
        return None
    if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)):
        raise MalformedReply(f"createTask reply has a taskId of type {type(raw_id).__name__}")
    text = str(raw_id)
    if len(text) > MAX_TASK_ID_CHARS:
        raise MalformedReply(f"createTask reply has a taskId of {len(text)} characters")
    if sanitize_text(text) != text:
        # Not quoted: the id's text is what is suspect.
        raise MalformedReply("createTask reply has a taskId with unsafe characters")
    if mask is not None and mask(text) != text:
        raise MalformedReply("createTask reply has a taskId that echoes the account key")
    return text


def parse_create_task(
    profile: ProviderProfile,
    http_status: int,
    content: bytes,
    *,
    retry_after: float | None = None,
    mask: Mask | None = None,
    task_id_mask: Mask | None = None,
) -> TaskReply:
    """A createTask reply: synchronous ``ready`` or deferred (with or without status).
    ``mask`` cleans every string; ``task_id_mask`` (default: ``mask``) checks the task
    id, which is refused rather than changed if it holds the key."""
    payload = decode_json(http_status, content, retry_after=retry_after, mask=mask)
    _raise_for_error(http_status, payload, retry_after=retry_after, task_id=None, mask=mask)
    task_id = _task_id_of(payload.get("taskId"), task_id_mask or mask)
    reply = _task_reply(profile, payload, task_id, mask)
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
    mask: Mask | None = None,
) -> TaskReply:
    """A getTaskResult reply: pending (idle/processing), ready, or an error. ``task_id``
    is ours (sent in the request), not the reply's."""
    payload = decode_json(http_status, content, retry_after=retry_after, mask=mask)
    _raise_for_error(http_status, payload, retry_after=retry_after, task_id=task_id, mask=mask)
    return _task_reply(profile, payload, task_id, mask)


def parse_balance(
    http_status: int,
    content: bytes,
    *,
    retry_after: float | None = None,
    mask: Mask | None = None,
) -> float:
    payload = decode_json(http_status, content, retry_after=retry_after, mask=mask)
    _raise_for_error(http_status, payload, retry_after=retry_after, task_id=None, mask=mask)
    raw = payload.get("balance")
    try:
        if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
            raise TypeError
        balance = float(raw)
    except (TypeError, ValueError, OverflowError):
        raise MalformedReply("getBalance reply has no numeric balance") from None
    if not math.isfinite(balance):
        # NaN or an infinity would turn every later spend comparison false.
        raise MalformedReply("getBalance reply has a balance that is not a finite number")
    return balance


def parse_report(
    http_status: int,
    content: bytes,
    task_id: str,
    *,
    retry_after: float | None = None,
    mask: Mask | None = None,
) -> bool:
    """True when the provider accepted the report of a wrong answer."""
    payload = decode_json(http_status, content, retry_after=retry_after, mask=mask)
    _raise_for_error(http_status, payload, retry_after=retry_after, task_id=task_id, mask=mask)
    status = payload.get("status")
    return status in (None, "success", "ok", "ready") or bool(payload.get("message") is not None)
