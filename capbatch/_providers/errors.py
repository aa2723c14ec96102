"""The one error table: which exception a provider error becomes, and what the runner
does with each exception.

Provider ``errorCode`` strings and HTTP statuses become exceptions in exactly one
function, ``error_from_reply``; the runner asks ``classify`` (or ``action_for_code``,
for an error kept only by its code) what to do with an error. Everything here is pure.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

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
from capbatch._providers.text import Mask, clean_text

if TYPE_CHECKING:
    from capbatch._providers.profiles import ProviderProfile

#: Longest provider error description kept (after masking), in characters.
MAX_DESCRIPTION_CHARS = 500
#: Longest error code kept; real codes are under 40 characters.
MAX_CODE_CHARS = 80

#: Provider ``errorCode`` -> exception class. Each code, its source and its status are
#: listed in docs/providers.md, section "Error codes"; HTTP_STATUSES in "HTTP statuses".
#: A code one provider means differently is overridden in that provider's profile
#: (``ProviderProfile.error_classes``), never guessed here.
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
    # No free worker or server (Anti-Captcha, CapMonster, 2Captcha): capacity, so the
    # whole run slows down; the row keeps its attempts.
    "ERROR_NO_SLOT_AVAILABLE": RateLimited,
    "ERROR_SERVICE_UNAVALIABLE": ServiceUnavailable,
    "ERROR_SERVICE_UNAVAILABLE": ServiceUnavailable,
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
    "ERROR_MAXIMUM_TIME_EXCEED": TaskExpired,
    # the request or image was refused
    # createTask without its ``task`` (or invalid JSON): the request is wrong, not the
    # task id; recreating cannot fix it.
    "ERROR_TASK_ABSENT": InvalidTask,
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


def class_for_code(code: str, profile: ProviderProfile | None = None) -> type[APIError] | None:
    """The class of a provider ``errorCode``: the profile's own meaning first, then the
    one table; None for a code neither names."""
    if profile is not None and code in profile.error_classes:
        return profile.error_classes[code]
    return ERROR_CODES.get(code)


def action_for_code(error_code: str, profile: ProviderProfile | None = None) -> Action | None:
    """The action for an error known only by its code, as a row's ``error_code`` in the
    journal or an output keeps it: a provider code (``class_for_code``, with the
    profile's own meanings), ``HTTP_5xx``, or the code of one of capbatch's classes.
    None for a code nothing names."""
    cls: type[CapbatchError] | None = class_for_code(error_code, profile)
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


def error_from_reply(
    http_status: int,
    payload: Mapping[str, Any] | None,
    *,
    retry_after: float | None = None,
    task_id: str | None = None,
    mask: Mask | None = None,
    profile: ProviderProfile | None = None,
) -> APIError:
    """The one place a provider error (``errorCode`` first, HTTP status second) becomes
    an exception. The message holds the code and the provider's description only,
    both cleaned (``clean_text``) with ``mask``. With a ``profile``, its own meanings
    of codes come first, and a code it documents a wait for waits that long when the
    reply gives no ``Retry-After``."""
    code = ""
    description = ""
    if payload is not None:
        code = _text_field(payload, "errorCode", mask, MAX_CODE_CHARS)
        description = _text_field(payload, "errorDescription", mask, MAX_DESCRIPTION_CHARS)
    cls = class_for_code(code, profile)
    if retry_after is None and profile is not None:
        retry_after = profile.error_waits.get(code)
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
