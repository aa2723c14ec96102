"""Reading and checking the emulator's requests, as plain functions.

Kept apart from the handlers (``_app.py``) so they read as the protocol's control flow:
a request body as a JSON object, a createTask's ``task`` and ``callbackUrl`` checked in
one order for every dialect (which names each failure with its own code and sets the
image limits), its developer id read, and a test-control request checked before it may
change the server (why these checks: ``_app``'s module docstring).
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

from capbatch.emulator._dialects import DIALECTS, Dialect, Role
from capbatch.emulator._replies import json_reply
from capbatch.emulator._solvers import oracle_key
from capbatch.emulator._task_types import CAPSOLVER_TYPES, check_typed_task

SUPPORTED_TASK_TYPES = frozenset({"ImageToTextTask"})


# Slots: one of these is made per createTask, at thousands a second.
@dataclass(frozen=True, slots=True)
class NewTask:
    """A createTask that passed its checks: the decoded image (a task of several: the
    first), its key in the oracle's labels (``oracle_key``: one image's SHA-256), the
    callback URL as sent (not yet checked against the allowed targets) and the shape of
    its solution (``_task_types``)."""

    image: bytes
    digest: str
    callback: str | None
    shape: str = "text"


@dataclass(frozen=True, slots=True)
class Refused:
    """Why a createTask was refused: the situation (the dialect names its code) and a
    description."""

    role: Role
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
    body: Mapping[str, Any],
    image_size: Callable[[bytes, str], tuple[int, int] | None],
    dialect: Dialect,
) -> NewTask | Refused:
    """The task a createTask body asks for, or the first check it fails (the key is
    checked before, the balance after). ``image_size`` gives an image's pixel size, None
    for bytes that are not an image."""
    task = body.get("task")
    if not isinstance(task, dict):
        return Refused("no_task", "task is missing")
    task_type = task.get("type")
    if not isinstance(task_type, str) or not task_type:
        return Refused("no_type", "task.type is missing")
    # CapSolver's other types, and its ImageToTextTask with ``images`` (number module).
    several = task_type == "ImageToTextTask" and not task.get("body") and "images" in task
    typed = dialect.name == "capsolver" and (task_type in CAPSOLVER_TYPES or several)
    if task_type not in SUPPORTED_TASK_TYPES and not typed:
        return Refused("unsupported", f"Task type {task_type[:64]} is not supported")

    def decode(value: object, where: str) -> bytes | tuple[Role, str]:
        image = _image(value, where, image_size, dialect)
        return (image.role, image.description) if isinstance(image, Refused) else image[0]

    if typed:
        checked = check_typed_task(task_type, task, decode)
        if isinstance(checked, tuple):
            return Refused(*checked)
        image, shape = checked.images[0], checked.shape
        digest = oracle_key(checked.images, checked.question)
    else:
        encoded = task.get("body")
        if not isinstance(encoded, str) or not encoded:
            return Refused("no_body", "task.body is missing")
        one = _image(encoded, "task.body", image_size, dialect)
        if isinstance(one, Refused):
            return one
        (image, digest), shape = one, "text"
    callback = body.get("callbackUrl")  # python3-capsolver sends null
    if callback is not None and not isinstance(callback, str):
        return Refused("bad_field", "callbackUrl must be a string")
    return NewTask(image, digest, callback, shape)


def _image(
    encoded: object,
    where: str,
    image_size: Callable[[bytes, str], tuple[int, int] | None],
    dialect: Dialect,
) -> tuple[bytes, str] | Refused:
    """One base64 image field decoded and checked against the dialect's limits, with
    its SHA-256."""
    if not isinstance(encoded, str) or not encoded:
        return Refused("bad_image", f"{where} is not base64")
    try:
        image = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return Refused("bad_image", f"{where} is not base64")
    refused = _size_refusal(len(image), dialect)
    if refused is not None:
        return refused
    digest = hashlib.sha256(image).hexdigest()
    size = image_size(image, digest)
    if size is None:
        return Refused("bad_image", f"{where} is not an image")
    side = dialect.max_image_side
    if side is not None and max(size) > side:
        return Refused("too_big", f"Image is larger than {side} px on a side")
    return image, digest


def _size_refusal(size: int, dialect: Dialect) -> Refused | None:
    low, high = dialect.min_image_bytes, dialect.max_image_bytes
    if low is not None and size < low:
        return Refused("too_small", f"Image is smaller than {low} bytes")
    if high is not None and size > high:
        return Refused("too_big", f"Image is larger than {high} bytes")
    return None


def developer_id(body: Mapping[str, Any], dialect: Dialect) -> tuple[bool, str | None]:
    """Whether a createTask body carries a developer id, and the dialect's one as text
    (None when it is absent, of the wrong JSON type, or another dialect's field)."""
    others = {d.developer_id for d in DIALECTS.values()} - {dialect.developer_id}
    value = body.get(dialect.developer_id)
    sent = value is not None or any(body.get(name) is not None for name in others)
    kind = dialect.developer_id_type
    if value is None or isinstance(value, bool) or not isinstance(value, kind):
        return sent, None
    return True, str(value)[:64]


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
