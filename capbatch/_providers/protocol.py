r"""Request bodies and reply parsing for the task protocol.

Everything here is pure: bytes and dicts in, values or exceptions out. The async
client (``client.py``) does the I/O. A reply that reports an error becomes an exception
through ``errors.error_from_reply``, the one error table; what the runner does with
it is ``errors.classify``'s answer.

Provider text is untrusted. Every string a reply carries (task ids, status strings,
error codes and descriptions, every string in a solution object, at any depth, keys
included, and excerpts of bodies that are not JSON) passes ``text.clean_text`` once,
here, where it is parsed; ``text.py`` gives the rule (sanitise, mask, then cut).

A task id is never changed, since it is sent back verbatim: one that cleaning would
change (control characters, or the key) is refused as a malformed reply. For ids the
key's pieces count from ``TASK_ID_MIN_FRAGMENT`` characters, not 6: at 6, a random hex
or decimal id matches a piece of a hex key about once in tens of thousands of tasks.

Reported costs are numbers or numeric strings in ``[0, MAX_REPORTED_COST]``; anything
else (NaN, infinities, negatives, absurd amounts) parses as an unknown cost with
``TaskReply.cost_rejected`` set.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Literal

from capbatch._exceptions import ConfigError, MalformedReply, ServiceUnavailable, Unsolvable
from capbatch._providers.answers import readable_answer
from capbatch._providers.errors import HTTP_STATUSES, error_from_reply
from capbatch._providers.profiles import ProviderProfile
from capbatch._providers.text import Mask, clean_text, reply_excerpt, sanitize_text

TaskStatus = Literal["ready", "pending"]

#: Longest status string echoed in a message.
MAX_STATUS_CHARS = 40
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
#: The largest ``softId`` sent: a JSON integer every provider's parser can hold (int64).
MAX_SOFT_ID = 2**63 - 1

# --- the Retry-After header -----------------------------------------------------------


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


# --- requests -------------------------------------------------------------------------


def developer_id(profile: ProviderProfile, app_id: str | int | None) -> dict[str, str | int]:
    """The developer id (``--app-id``) as the profile's createTask field: CapSolver's
    ``appId`` a string, the others' ``softId`` an integer; nothing when none is set or
    the provider takes none. A value a ``softId`` cannot hold is a ``ConfigError``
    naming the flag, raised before anything is sent."""
    field_name = profile.developer_id_field
    if isinstance(app_id, bool):  # True is an int to Python, not an id to anyone
        raise ConfigError("--app-id must be an id, not a true/false value")
    text = str(app_id).strip() if app_id is not None else ""
    if field_name is None or not text:
        return {}
    if field_name == "appId":
        return {"appId": text}
    soft_id = int(text) if text.isascii() and text.isdigit() else -1
    if not 0 <= soft_id <= MAX_SOFT_ID:
        shown = text if len(text) <= 40 else text[:37] + "..."
        raise ConfigError(
            f"--app-id must be a whole number for {profile.name} (it is sent as "
            f"{field_name}, an integer), not {shown!r}"
        )
    return {field_name: soft_id}


def create_task_body(
    profile: ProviderProfile,
    client_key: str,
    task: Mapping[str, Any],
    *,
    app_id: str | int | None = None,
    callback_url: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"clientKey": client_key, "task": dict(task)}
    body.update(developer_id(profile, app_id))
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
    app_id: str | int | None = None,
    message: str | None = None,
) -> dict[str, Any]:
    """Body of the report-a-wrong-answer call in the profile's style (only CapSolver's
    feedback documents a developer id: CS-feedback)."""
    tid = profile.task_id_for_request(task_id)
    if profile.report_style == "feedback":
        result: dict[str, Any] = {"invalid": True}
        if message:
            result["message"] = message
        body: dict[str, Any] = {"clientKey": client_key, "taskId": tid, "result": result}
        body.update(developer_id(profile, app_id))
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


def answer_of(solution: Mapping[str, Any] | None) -> str | None:
    """The answer text of a solution object, by its shape (``answers.readable_answer``)."""
    return readable_answer(solution)


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
    profile: ProviderProfile | None = None,
) -> None:
    error_id = payload.get("errorId", 0)
    if error_id not in (0, "0", None, False) or http_status >= 400:
        raise error_from_reply(
            http_status,
            payload,
            retry_after=retry_after,
            task_id=task_id,
            mask=mask,
            profile=profile,
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
    _raise_for_error(
        http_status, payload, retry_after=retry_after, task_id=None, mask=mask, profile=profile
    )
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
    _raise_for_error(
        http_status, payload, retry_after=retry_after, task_id=task_id, mask=mask, profile=profile
    )
    return _task_reply(profile, payload, task_id, mask)


def parse_balance(
    http_status: int,
    content: bytes,
    *,
    retry_after: float | None = None,
    mask: Mask | None = None,
    profile: ProviderProfile | None = None,
) -> float:
    payload = decode_json(http_status, content, retry_after=retry_after, mask=mask)
    _raise_for_error(
        http_status, payload, retry_after=retry_after, task_id=None, mask=mask, profile=profile
    )
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
    profile: ProviderProfile | None = None,
) -> bool:
    """True when the provider accepted the report of a wrong answer."""
    payload = decode_json(http_status, content, retry_after=retry_after, mask=mask)
    _raise_for_error(
        http_status, payload, retry_after=retry_after, task_id=task_id, mask=mask, profile=profile
    )
    status = payload.get("status")
    return status in (None, "success", "ok", "ready") or bool(payload.get("message") is not None)
