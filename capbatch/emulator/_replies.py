"""Reply bodies and request checks of the emulator, as plain functions.

Kept apart from the handlers so ``_app.py`` reads as the protocol's control flow. Each
reply's shape (the fields of a success, an error's ``errorId`` and HTTP status, what a
getTaskResult carries) comes from the ``Dialect``. The JSON encoder is created once with
compact separators: encoding is a measurable part of each request at thousands of
requests a second.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from PIL import Image

from capbatch.emulator._config import is_loopback_host, normalize_host
from capbatch.emulator._dialects import Dialect
from capbatch.emulator._state import Task, to_usd
from capbatch.emulator._task_types import solution_of

_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


_HTML_5XX = (
    "<html><head><title>{status} {reason}</title></head><body><center><h1>{status} "
    "{reason}</h1></center><hr><center>nginx</center></body></html>"
)
_REASONS = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}
# What a reply cut off by a failing proxy looks like: valid JSON up to the cut.
_MALFORMED = b'{"errorId":0,"errorCode":"","errorDescription":"","status":"ready","solu'

#: Image checks already passed, by sha256; clients resend the same images a lot.
_IMAGE_CACHE_SIZE = 10_000


def json_reply(payload: Mapping[str, Any], status: int = 200) -> web.Response:
    return web.Response(
        body=_encode(payload).encode(), status=status, content_type="application/json"
    )


def html_5xx_reply(status: int) -> web.Response:
    """A load balancer's error page, as a client sees it when the service is down."""
    html = _HTML_5XX.format(status=status, reason=_REASONS.get(status, "Server Error"))
    return web.Response(text=html, status=status, content_type="text/html")


def malformed_reply() -> web.Response:
    return web.Response(body=_MALFORMED, status=200, content_type="application/json")


def drop_connection(request: web.Request) -> web.Response:
    """Close the connection without a reply (the client sees the server disconnect);
    the returned response is never written."""
    transport = request.transport
    if transport is not None:
        transport.abort()
    return web.Response(status=499)


def error_payload(
    dialect: Dialect, code: str, description: str, endpoint: str = ""
) -> dict[str, Any]:
    """An error reply's fields as ``dialect`` documents them for ``endpoint``."""
    payload: dict[str, Any] = {"errorId": dialect.error_id(code), "errorCode": code}
    if endpoint not in dialect.bare_error_endpoints:
        payload["errorDescription"] = description
    return {**payload, **dialect.error_extras.get(endpoint, {})}


def task_reply(
    dialect: Dialect, task: Task, now: float, unix_time: Callable[[float], int]
) -> tuple[dict[str, Any], int]:
    """The getTaskResult reply (and HTTP status) for ``task`` at emulator time ``now``.

    Pending tasks say ``processing`` (CapSolver: ``idle`` for the first fifth of their
    solve time first). An unsolvable task is the dialect's error reply; CapSolver's also
    says ``"status":"failed"``, which SDKs (python3-capsolver) need to stop polling. A
    ready one carries the dialect's extra fields (``unix_time`` turns emulator times
    into ``createTime``/``endTime``)."""
    echo = {"taskId": dialect.wire_id(task.task_id)} if dialect.echo_task_id else {}
    if not task.resolved:
        status = "idle" if dialect.idle_status and now < task.idle_until else "processing"
        return {**dialect.ok, **dialect.pending_extra, "status": status, **echo}, 200
    if task.answer is None:
        code = dialect.code("unsolvable")
        payload = error_payload(dialect, code, "Captcha could not be solved")
        if dialect.failed_status is not None:
            payload["status"] = dialect.failed_status
        return {**payload, **echo}, dialect.status(code)
    solution = solution_of(task.shape, task.answer) or {"text": task.answer}
    if dialect.solution_url:
        # Where the provider keeps the image; the emulator keeps none (.invalid: RFC 2606).
        solution["url"] = f"https://images.emulator.invalid/{task.task_id}.png"
    payload = {**dialect.ok, "status": "ready", "solution": solution, **echo}
    if dialect.result_extras:
        payload["cost"] = f"{to_usd(task.charged):.{dialect.cost_decimals}f}"
        payload["ip"] = task.ip or ""
        payload["createTime"] = unix_time(task.created)
        payload["endTime"] = unix_time(task.done_at)
        payload["solveCount"] = "1" if dialect.solve_count_as_text else 1
    return payload, 200


def callback_allowed(url: str, targets: frozenset[tuple[str | None, int]]) -> bool:
    """Only http(s) URLs to a loopback host on a port the operator allowed (``targets``
    from ``EmulatorConfig.callback_targets``; host None = any loopback host): the
    emulator must never be made to send traffic to another machine, nor to a service
    that merely happens to listen on this machine's loopback."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        port = parts.port
    except ValueError:  # a bad port or an unbalanced IPv6 bracket
        return False
    if parts.scheme not in ("http", "https") or host is None or not is_loopback_host(host):
        return False
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    return (None, port) in targets or (normalize_host(host), port) in targets


class ImageChecker:
    """The size in pixels of bytes that are an image Pillow can read (None for any
    other bytes), cached by content hash."""

    def __init__(self) -> None:
        self._known: dict[str, tuple[int, int]] = {}

    def __call__(self, data: bytes, digest: str) -> tuple[int, int] | None:
        size = self._known.get(digest)
        if size is not None:
            return size
        try:
            # verify() checks the structure (and PNG chunk CRCs, so truncated files
            # fail) without decoding pixels: cheap for captcha-sized images.
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                image.verify()
        except Exception:  # Pillow raises many kinds for bad data
            return None
        if len(self._known) >= _IMAGE_CACHE_SIZE:
            self._known.clear()
        size = (int(width), int(height))
        self._known[digest] = size
        return size
