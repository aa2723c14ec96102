"""Reading and checking the emulator's requests, as plain functions.

Kept apart from the handlers (``_app.py``) so they read as the protocol's control flow:
a request body as a JSON object, a createTask's ``task`` and ``callbackUrl`` checked in
the order CapSolver checks them, and a test-control request checked before it may change
the server (why these checks: ``_app``'s module docstring).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from capbatch.emulator._replies import json_reply

SUPPORTED_TASK_TYPES = frozenset({"ImageToTextTask"})


# Slots: one of these is made per createTask, at thousands a second.
@dataclass(frozen=True, slots=True)
class NewTask:
    """A createTask that passed its checks: the decoded image, its SHA-256 and the
    callback URL as sent (not yet checked against the allowed targets)."""

    image: bytes
    digest: str
    callback: str | None


@dataclass(frozen=True, slots=True)
class Refused:
    """Why a createTask was refused: the error code and description of a 400 reply."""

    code: str
    description: str


async def json_object(request: web.Request) -> dict[str, Any] | None:
    """The request's JSON object, or None when it is missing, not JSON or not an
    object."""
    raw = await request.read()
    if not raw:
        return None
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    return body if isinstance(body, dict) else None


def check_new_task(
    body: Mapping[str, Any], is_image: Callable[[bytes, str], bool]
) -> NewTask | Refused:
    """The task a createTask body asks for, or the first check it fails (the key is
    checked before, the balance after)."""
    task = body.get("task")
    if not isinstance(task, dict):
        return Refused("ERROR_INVALID_TASK_DATA", "task is missing")
    task_type = task.get("type")
    if not isinstance(task_type, str) or not task_type:
        return Refused("ERROR_INVALID_TASK_DATA", "task.type is missing")
    if task_type not in SUPPORTED_TASK_TYPES:
        return Refused("ERROR_TASK_NOT_SUPPORTED", f"Task type {task_type[:64]} is not supported")
    encoded = task.get("body")
    if not isinstance(encoded, str) or not encoded:
        return Refused("ERROR_INVALID_TASK_DATA", "task.body is missing")
    try:
        image = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return Refused("ERROR_INVALID_IMAGE", "task.body is not base64")
    digest = hashlib.sha256(image).hexdigest()
    if not is_image(image, digest):
        return Refused("ERROR_INVALID_IMAGE", "task.body is not an image")
    callback = body.get("callbackUrl")  # python3-capsolver sends null
    if callback is not None and not isinstance(callback, str):
        return Refused("ERROR_INVALID_TASK_DATA", "callbackUrl must be a string")
    return NewTask(image, digest, callback)


async def control_options(request: web.Request, api_key: str) -> dict[str, Any] | web.Response:
    """The options of a test-control request without its ``clientKey``, or the
    refusal: 403 from a browser, 415 for a body that is not JSON, 400 for one that
    is not a JSON object, 401 without the right key."""
    if "Origin" in request.headers:
        return json_reply({"error": "browser requests are not accepted here"}, 403)
    if request.content_type != "application/json":
        return json_reply({"error": "Content-Type must be application/json"}, 415)
    body = await json_object(request)
    if body is None:
        return json_reply({"error": "body must be a JSON object"}, 400)
    key = body.pop("clientKey", None)
    expected = api_key.encode()
    # Constant time: the key is the only thing between a client and these controls.
    if not isinstance(key, str) or not hmac.compare_digest(key.encode(), expected):
        return json_reply({"error": "clientKey is missing or wrong"}, 401)
    return body
