"""An httpx transport over one aiohttp connection pool.

Why not httpx's default transport: measured in ``bench/transport.py``, it costs several
times more client CPU per request than aiohttp, and at thousands of requests per run
the client, not the provider, would become the bottleneck.

Why not the ``httpx-aiohttp`` package: it streams every body through an adapter and maps
every aiohttp connection error to ``httpx.ConnectTimeout``, which erases the one fact
the runner needs after a failure: whether the request may have reached the provider
(and may have been paid for). This transport reads whole replies (the protocol's are
small JSON documents) and keeps that distinction:

- ``httpx.ConnectError`` / ``httpx.ConnectTimeout``: nothing was sent;
- ``httpx.RemoteProtocolError`` / ``httpx.ReadError`` / ``httpx.ReadTimeout``: the
  request may have been received and acted on.

A hostile or broken server cannot make the client hold more than ``MAX_REPLY_BYTES``
of one reply: a declared ``Content-Length`` over the cap is refused before the body is
read, a body is read in chunks and dropped (with its connection) as soon as it passes
the cap, and on the fast path a compressed body is inflated with the same bound. Such
a reply raises ``ReplyTooLargeError``, an ``httpx.ReadError``: the request was sent.
A ``deadline`` bounds the whole exchange, not just each read, so a server dripping a
byte at a time cannot hold a request open for ever.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import httpx

#: Largest reply body accepted (after decompression), in bytes. The protocol's replies
#: are JSON documents of a few hundred bytes; an answer is short text. 1 MB leaves room
#: for any real reply and keeps a hostile one from taking the client's memory.
MAX_REPLY_BYTES = 1_000_000

_CHUNK = 64 * 1024


class ReplyTooLargeError(httpx.ReadError):
    """The reply body is larger than ``MAX_REPLY_BYTES``. The request was sent."""

    def __init__(self, limit: int, *, request: httpx.Request | None = None) -> None:
        super().__init__(f"reply larger than {limit} bytes", request=request)
        self.limit = limit


async def read_capped(content: aiohttp.StreamReader, declared: int | None, limit: int) -> bytes:
    """A body read whole, but never more than ``limit`` bytes of it."""
    if declared is not None and declared > limit:
        raise ReplyTooLargeError(limit)
    chunks: list[bytes] = []
    total = 0
    async for chunk in content.iter_chunked(_CHUNK):
        total += len(chunk)
        if total > limit:
            raise ReplyTooLargeError(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def inflate_capped(encoding: str, body: bytes, limit: int) -> bytes:
    """``body`` decoded from its ``Content-Encoding`` (gzip or deflate, the ones we
    accept), never to more than ``limit`` bytes: a 1 MB gzip bomb inflates to 1 GB."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding in ("gzip", "x-gzip"):
        wbits = [zlib.MAX_WBITS | 16]
    elif encoding == "deflate":
        wbits = [zlib.MAX_WBITS, -zlib.MAX_WBITS]  # zlib-wrapped, or raw as some send
    else:
        raise httpx.DecodingError(f"unsupported Content-Encoding {encoding[:20]!r}")
    for bits in wbits:
        inflater = zlib.decompressobj(bits)
        try:
            out = inflater.decompress(body, limit + 1)
        except zlib.error:
            continue
        if len(out) > limit or inflater.unconsumed_tail:
            raise ReplyTooLargeError(limit)
        return out
    raise httpx.DecodingError(f"reply body is not valid {encoding}")


def _httpx_error(
    exc: aiohttp.ClientError | asyncio.TimeoutError, request: httpx.Request | None
) -> httpx.TransportError:
    """The httpx exception for an aiohttp failure, chosen to keep "was it sent?": a
    connect error or connect timeout means nothing was; anything later, that the request
    may have been received. The order matters: aiohttp's connect and read timeouts are
    ``asyncio.TimeoutError`` too, and the deadline is only that."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError(f"connect failed: {exc.os_error}", request=request)
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout("connect timed out", request=request)
    if isinstance(exc, aiohttp.SocketTimeoutError):
        return httpx.ReadTimeout("no reply within the read timeout", request=request)
    if isinstance(exc, asyncio.TimeoutError):
        # The deadline (aiohttp's total timeout) passed, most likely mid-reply.
        return httpx.ReadTimeout("no whole reply within the deadline", request=request)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return httpx.RemoteProtocolError(
            "server closed the connection without a reply", request=request
        )
    if isinstance(exc, aiohttp.ClientPayloadError):
        return httpx.ReadError("reply body was cut short", request=request)
    if isinstance(exc, aiohttp.ClientResponseError):
        return httpx.RemoteProtocolError(f"invalid HTTP reply: {exc.message}", request=request)
    return httpx.ReadError(f"{type(exc).__name__}", request=request)


@dataclass(frozen=True, slots=True)
class Reply:
    """A whole reply, for ``ProviderClient`` on its own client (no httpx models)."""

    status_code: int
    headers: Mapping[str, str]  # case-insensitive, as aiohttp parsed them
    content: bytes


class AiohttpTransport(httpx.AsyncBaseTransport):
    """Send httpx requests over a shared ``aiohttp.ClientSession``."""

    def __init__(
        self,
        *,
        max_connections: int = 100,
        keepalive_expiry: float = 30.0,
        max_reply_bytes: int = MAX_REPLY_BYTES,
    ) -> None:
        self._max_connections = max_connections
        self._keepalive_expiry = keepalive_expiry
        self._max_reply_bytes = max_reply_bytes
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections,
                keepalive_timeout=self._keepalive_expiry,
                # The protocol talks to one or two hosts: cache their DNS for the run.
                ttl_dns_cache=300,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                # httpx decodes Content-Encoding itself when it builds the Response.
                auto_decompress=False,
                # httpx already set the headers it wants; do not add aiohttp's defaults.
                skip_auto_headers=("User-Agent",),
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts: dict[str, Any] = request.extensions.get("timeout", {})
        # aiohttp wants str header names; keep httpx's raw casing and order.
        request_headers = [
            (name.decode("latin-1"), value.decode("latin-1")) for name, value in request.headers.raw
        ]
        # httpx callers get the raw (possibly compressed) body, capped at the limit;
        # httpx decodes it, and ProviderClient caps the decoded stream again.
        status, _, headers, content = await self._send(
            request.method, str(request.url), request.content or None, request_headers,
            timeouts, None, request,
        )  # fmt: skip
        return httpx.Response(
            status_code=status,
            headers=headers,
            content=content,
            request=request,
            extensions={"http_version": b"HTTP/1.1"},
        )

    async def post(
        self,
        url: str,
        content: bytes,
        *,
        headers: Mapping[str, str],
        timeout: httpx.Timeout,
        deadline: float | None = None,
    ) -> Reply:
        """POST without building httpx models (measured: about a third of the client's
        CPU per request in bench/throughput.py); raises the same httpx exceptions.
        ``deadline`` bounds the whole request, reply body included, in seconds."""
        status, parsed, _, body = await self._send(
            "POST", url, content, headers, timeout.as_dict(), deadline, None
        )
        encoding = parsed.get("Content-Encoding")
        if encoding is not None:
            body = inflate_capped(encoding, body, self._max_reply_bytes)
        return Reply(status, parsed, body)

    async def _send(
        self,
        method: str,
        url: str,
        body: bytes | None,
        request_headers: Any,
        timeouts: Mapping[str, float | None],
        deadline: float | None,
        request: httpx.Request | None,
    ) -> tuple[int, Mapping[str, str], Any, bytes]:
        """One request read whole: status, parsed and raw headers, body; aiohttp's errors
        become the httpx exceptions that keep "was it sent?" (see the module docstring)."""
        timeout = aiohttp.ClientTimeout(
            total=deadline,
            connect=timeouts.get("pool"),
            sock_connect=timeouts.get("connect"),
            sock_read=timeouts.get("read"),
        )
        session = self._get_session()
        try:
            async with session.request(
                method,
                url,
                data=body,
                headers=request_headers,
                allow_redirects=False,
                timeout=timeout,
            ) as response:
                try:
                    content = await read_capped(
                        response.content, response.content_length, self._max_reply_bytes
                    )
                except ReplyTooLargeError as exc:
                    # Drop the connection rather than drain the rest of the body.
                    response.close()
                    raise ReplyTooLargeError(exc.limit, request=request) from None
                status = response.status
                parsed = response.headers
                headers = response.raw_headers
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise _httpx_error(exc, request) from exc
        return status, parsed, headers, content

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
