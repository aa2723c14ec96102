"""Reply bodies and request checks of the emulator, as plain functions.

Kept apart from the handlers so ``_app.py`` reads as the protocol's control flow. The
JSON encoder is created once with compact separators: encoding is a measurable part of
each request at thousands of requests a second.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from PIL import Image

from capbatch.emulator._config import is_loopback_host, normalize_host
from capbatch.emulator._state import Task

_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode

#: The three fields every CapSolver reply starts with, for a success.
OK: Mapping[str, Any] = {"errorId": 0, "errorCode": "", "errorDescription": ""}

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


def task_reply(task: Task, now: float) -> tuple[dict[str, Any], int]:
    """The getTaskResult reply (and HTTP status) for ``task`` at monotonic time ``now``.

    Pending tasks say ``idle`` for the first fifth of their solve time, then
    ``processing``. An unsolvable task also says ``"status":"failed"``, which SDKs
    (python3-capsolver) need to stop polling."""
    if not task.resolved:
        status = "idle" if now < task.idle_until else "processing"
        return {**OK, "status": status, "taskId": task.task_id}, 200
    if task.answer is None:
        return {
            "errorId": 1,
            "errorCode": "ERROR_CAPTCHA_UNSOLVABLE",
            "errorDescription": "Captcha could not be solved",
            "status": "failed",
            "taskId": task.task_id,
        }, 400
    return {
        **OK,
        "status": "ready",
        "solution": {"text": task.answer},
        "taskId": task.task_id,
    }, 200


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
    """Whether bytes are an image Pillow can read, cached by content hash."""

    def __init__(self) -> None:
        self._known: set[str] = set()

    def __call__(self, data: bytes, digest: str) -> bool:
        if digest in self._known:
            return True
        try:
            # verify() checks the structure (and PNG chunk CRCs, so truncated files
            # fail) without decoding pixels: cheap for captcha-sized images.
            with Image.open(io.BytesIO(data)) as image:
                image.verify()
        except Exception:  # Pillow raises many kinds for bad data
            return False
        if len(self._known) >= _IMAGE_CACHE_SIZE:
            self._known.clear()
        self._known.add(digest)
        return True
