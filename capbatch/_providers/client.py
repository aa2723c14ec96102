"""The async provider client: one pooled connection set, one call per protocol method.

``ProviderClient`` sends the protocol's four calls and returns parsed values or raises
the exceptions of ``_exceptions.py``; it never retries by itself (the runner decides,
from ``errors.classify``), except to move to a fallback host when the connection to
the main one cannot even be opened, which is always safe because nothing was sent.

Callers may pass their own ``httpx.AsyncClient`` (tests pass one over
``httpx.MockTransport``); otherwise the client builds one over ``AiohttpTransport``.

Replies are untrusted: every string in a parsed reply or in an error's message has
been sanitised and had the key masked (``text.clean_text`` with ``Secret.mask``)
before it leaves this module; bodies are capped at ``transport.MAX_REPLY_BYTES``; and
every request has an overall deadline besides the per-read timeouts.

Two limits can be set from the environment, read in ``_env_seconds`` and nowhere else
(tests use them to keep hostile-server runs short):

- ``CAPBATCH_REQUEST_DEADLINE``: seconds one request may take in all, reply included
  (default ``DEFAULT_DEADLINE``); past it the request fails as ``REQUEST_TIMEOUT``.
- ``CAPBATCH_RETRY_AFTER_CAP``: the longest ``Retry-After`` honoured, in seconds
  (default ``protocol.RETRY_AFTER_CAP``).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Protocol, TypeVar

import httpx

from capbatch._exceptions import (
    CapbatchError,
    ConfigError,
    ConnectFailed,
    ConnectionLost,
    ConnectTimeout,
    MalformedReply,
    ReplyTooLarge,
    RequestTimeout,
)
from capbatch._providers import protocol
from capbatch._providers.profiles import ProviderProfile
from capbatch._providers.secrets import Secret, as_secret, redact
from capbatch._providers.transport import (
    MAX_REPLY_BYTES,
    AiohttpTransport,
    Reply,
    ReplyTooLargeError,
)

DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
#: Seconds one request may take in all (connect, send, the whole reply): the per-read
#: timeout alone lets a server that drips a byte every few seconds hold it for ever.
DEFAULT_DEADLINE = 60.0
DEADLINE_ENV = "CAPBATCH_REQUEST_DEADLINE"
RETRY_AFTER_CAP_ENV = "CAPBATCH_RETRY_AFTER_CAP"
# Only the encodings the transport inflates with a size bound (no brotli, no zstd).
_HEADERS = {
    "Content-Type": "application/json",
    "User-Agent": "capbatch",
    "Accept-Encoding": "gzip, deflate",
}

T = TypeVar("T")


class TaskService(Protocol):
    """What the runner needs from a provider; ``ProviderClient`` and ``LocalService``."""

    async def create_task(
        self, task: Mapping[str, Any], *, callback_url: str | None = None
    ) -> protocol.TaskReply: ...

    async def get_task_result(self, task_id: str) -> protocol.TaskReply: ...

    async def get_balance(self) -> float | None: ...

    async def report_incorrect(self, task_id: str, *, message: str | None = None) -> bool: ...

    async def aclose(self) -> None: ...


def _env_seconds(name: str, given: float | None, default: float) -> float:
    """``given``, else the environment variable ``name``, else ``default``: a positive,
    finite number of seconds (the one place these variables are read)."""
    if given is None:
        raw = os.environ.get(name, "").strip()
        if not raw:
            return default
        try:
            given = float(raw)
        except ValueError:
            raise ConfigError(f"{name} must be a number of seconds, not {raw[:20]!r}") from None
        where = name
    else:
        where = "the value"
    if not (math.isfinite(given) and given > 0):
        raise ConfigError(f"{where} must be a positive number of seconds")
    return given


def make_http_client(
    *,
    max_connections: int = 100,
    timeout: httpx.Timeout = DEFAULT_TIMEOUT,
    transport: AiohttpTransport | None = None,
) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` over the aiohttp transport (see ``transport.py``)."""
    return httpx.AsyncClient(
        transport=transport or AiohttpTransport(max_connections=max_connections),
        timeout=timeout,
        headers=_HEADERS,
    )


class ProviderClient:
    """The protocol's calls against one provider, with one key, over one pool."""

    def __init__(
        self,
        profile: ProviderProfile,
        api_key: str | Secret,
        *,
        base_url: str | None = None,
        http_client: httpx.AsyncClient | None = None,
        app_id: str | int | None = None,
        max_connections: int = 100,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        deadline: float | None = None,
        retry_after_cap: float | None = None,
    ) -> None:
        """``deadline`` (seconds a request may take in all) and ``retry_after_cap``
        default to their environment variables, else ``DEFAULT_DEADLINE`` and
        ``protocol.RETRY_AFTER_CAP`` (see the module docstring). ``app_id`` is the
        developer id, checked here for the profile's field (``protocol.developer_id``)."""
        if profile.is_local:
            raise ConfigError("the local provider has no HTTP client; use LocalService")
        key = as_secret(api_key)
        if not key:
            raise ConfigError(f"no API key for {profile.name}")
        self.profile = profile
        self._key: Secret = key
        self.deadline = _env_seconds(DEADLINE_ENV, deadline, DEFAULT_DEADLINE)
        self.retry_after_cap = _env_seconds(
            RETRY_AFTER_CAP_ENV, retry_after_cap, protocol.RETRY_AFTER_CAP
        )
        protocol.developer_id(profile, app_id)  # a ConfigError now, not on every row
        self.app_id = app_id
        if base_url:
            self._urls: list[str] = [base_url.rstrip("/")]
        else:
            self._urls = [profile.base_url, *profile.fallback_urls]
        self._url_index = 0
        self._owns_http = http_client is None
        self._timeout = timeout
        # With its own client, requests go straight to the aiohttp transport under it
        # (same pool, same errors), skipping httpx's Request/Response models; a caller's
        # client (or a MockTransport in tests) is used through httpx as it is.
        self._fast: AiohttpTransport | None = None
        if http_client is None:
            self._fast = AiohttpTransport(max_connections=max_connections)
            http_client = make_http_client(timeout=timeout, transport=self._fast)
        self._http = http_client

    def __repr__(self) -> str:
        return f"ProviderClient(provider={self.profile.name!r}, base_url={self.base_url!r})"

    @property
    def base_url(self) -> str:
        return self._urls[self._url_index]

    def _mask(self, text: str) -> str:
        return self._key.mask(text)

    def _mask_task_id(self, text: str) -> str:
        return self._key.mask(text, min_fragment=protocol.TASK_ID_MIN_FRAGMENT)

    async def _send(self, url: str, content: bytes) -> Reply:
        """The one send path: the same request (body, headers, deadline, size cap) over
        capbatch's own pool, or over the caller's httpx client when one was given; the
        transport's exceptions are translated by ``_post``."""
        if self._fast is not None:
            # aiohttp's total timeout is the deadline: no extra task or timer.
            return await self._fast.post(
                url, content, headers=_HEADERS, timeout=self._timeout, deadline=self.deadline
            )
        return await asyncio.wait_for(self._post_httpx(url, content), self.deadline)

    async def _post_httpx(self, url: str, content: bytes) -> Reply:
        """POST through the caller's httpx client, reading at most MAX_REPLY_BYTES of
        the decoded body. The headers are the fast path's (the client's own defaults,
        such as a User-Agent the caller set, give way to them)."""
        async with self._http.stream("POST", url, content=content, headers=_HEADERS) as response:
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > MAX_REPLY_BYTES:
                raise ReplyTooLargeError(MAX_REPLY_BYTES)
            chunks: list[bytes] = []
            total = 0
            async for chunk in response.aiter_bytes():
                total += len(chunk)
                if total > MAX_REPLY_BYTES:
                    raise ReplyTooLargeError(MAX_REPLY_BYTES)
                chunks.append(chunk)
            return Reply(response.status_code, response.headers, b"".join(chunks))

    async def _post(self, endpoint: str, body: Mapping[str, Any]) -> Reply:
        content = json.dumps(body, separators=(",", ":")).encode()
        # Try the current host, then each fallback, but only past connect failures:
        # nothing was sent then, so moving on cannot create a task twice. Each call walks
        # the hosts from where it started, so concurrent failures cannot send a call back
        # to the host that just refused it.
        start = self._url_index
        last: Exception | None = None
        for step in range(len(self._urls)):
            index = (start + step) % len(self._urls)
            try:
                response = await self._send(self._urls[index] + endpoint, content)
            except httpx.ConnectError as exc:
                last = exc
                continue
            except ReplyTooLargeError:
                raise ReplyTooLarge(
                    f"{endpoint}: reply larger than {MAX_REPLY_BYTES} bytes, dropped unread"
                ) from None
            except httpx.DecodingError:
                raise MalformedReply(
                    f"{endpoint}: reply body could not be decoded (bad Content-Encoding)"
                ) from None
            except asyncio.TimeoutError:
                raise RequestTimeout(
                    f"{endpoint}: no whole reply within the {self.deadline:g} s deadline"
                ) from None
            except (httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                what = type(exc).__name__
                raise ConnectTimeout(f"{endpoint}: no connection in time ({what})") from None
            except httpx.TimeoutException as exc:
                what = type(exc).__name__
                raise RequestTimeout(f"{endpoint}: no reply in time ({what})") from None
            except httpx.TransportError as exc:
                raise ConnectionLost(
                    f"{endpoint}: connection lost ({type(exc).__name__})"
                ) from None
            # Later calls start from the host that answered.
            self._url_index = index
            return response
        hosts = ", ".join(self._urls)
        raise ConnectFailed(
            f"{endpoint}: cannot connect to {hosts} ({type(last).__name__})"
        ) from None

    def _redacted(self, exc: CapbatchError) -> CapbatchError:
        """``exc`` with the key masked in its text: the provider's own words (an echoed
        description, an HTML page quoting the request) must not carry it out."""
        clean = redact(exc.message, self._key)
        if clean != exc.message:
            exc.message = clean
            exc.args = (clean,)
        return exc

    async def _call(
        self,
        endpoint: str,
        body: Mapping[str, Any],
        parse: Callable[[int, bytes, float | None], T],
    ) -> T:
        """POST ``body`` and parse the reply (``parse`` cleans and masks every string it
        returns); errors leave with the key masked, their text masked once more here."""
        response = await self._post(endpoint, body)
        retry_after = protocol.parse_retry_after(
            response.headers.get("Retry-After"), cap=self.retry_after_cap
        )
        try:
            return parse(response.status_code, response.content, retry_after)
        except CapbatchError as exc:
            raise self._redacted(exc) from None

    async def create_task(
        self, task: Mapping[str, Any], *, callback_url: str | None = None
    ) -> protocol.TaskReply:
        body = protocol.create_task_body(
            self.profile, self._key.reveal(), task, app_id=self.app_id, callback_url=callback_url
        )
        return await self._call(
            "/createTask",
            body,
            lambda status, content, retry_after: protocol.parse_create_task(
                self.profile,
                status,
                content,
                retry_after=retry_after,
                mask=self._mask,
                task_id_mask=self._mask_task_id,
            ),
        )

    async def get_task_result(self, task_id: str) -> protocol.TaskReply:
        body = protocol.get_task_result_body(self.profile, self._key.reveal(), task_id)
        return await self._call(
            "/getTaskResult",
            body,
            lambda status, content, retry_after: protocol.parse_task_result(
                self.profile, status, content, task_id, retry_after=retry_after, mask=self._mask
            ),
        )

    async def get_balance(self) -> float | None:
        if not self.profile.has_balance:
            return None
        return await self._call(
            "/getBalance",
            protocol.get_balance_body(self._key.reveal()),
            lambda status, content, retry_after: protocol.parse_balance(
                status, content, retry_after=retry_after, mask=self._mask, profile=self.profile
            ),
        )

    async def report_incorrect(self, task_id: str, *, message: str | None = None) -> bool:
        """Tell the provider an answer was wrong (refund or quality feedback)."""
        if self.profile.report_endpoint is None:
            return False
        body = protocol.report_incorrect_body(
            self.profile, self._key.reveal(), task_id, app_id=self.app_id, message=message
        )
        return await self._call(
            self.profile.report_endpoint,
            body,
            lambda status, content, retry_after: protocol.parse_report(
                status,
                content,
                task_id,
                retry_after=retry_after,
                mask=self._mask,
                profile=self.profile,
            ),
        )

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> ProviderClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
