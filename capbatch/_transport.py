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
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import httpx


@dataclass(frozen=True, slots=True)
class Reply:
    """A whole reply, for ``ProviderClient`` on its own client (no httpx models)."""

    status_code: int
    headers: Mapping[str, str]  # case-insensitive, as aiohttp parsed them
    content: bytes


class AiohttpTransport(httpx.AsyncBaseTransport):
    """Send httpx requests over a shared ``aiohttp.ClientSession``."""

    def __init__(self, *, max_connections: int = 100, keepalive_expiry: float = 30.0) -> None:
        self._max_connections = max_connections
        self._keepalive_expiry = keepalive_expiry
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
        status, _, headers, content = await self._send(
            request.method, str(request.url), request.content or None, request_headers,
            timeouts, request,
        )  # fmt: skip
        return httpx.Response(
            status_code=status,
            headers=headers,
            content=content,
            request=request,
            extensions={"http_version": b"HTTP/1.1"},
        )

    async def post(
        self, url: str, content: bytes, *, headers: Mapping[str, str], timeout: httpx.Timeout
    ) -> Reply:
        """POST without building httpx models (measured: about a third of the client's
        CPU per request in bench/throughput.py); raises the same httpx exceptions."""
        status, parsed, raw, body = await self._send(
            "POST", url, content, headers, timeout.as_dict(), None
        )
        if parsed.get("Content-Encoding", "identity").lower() != "identity":
            body = httpx.Response(status, headers=raw, content=body).content  # httpx decodes
        return Reply(status, parsed, body)

    async def _send(
        self,
        method: str,
        url: str,
        body: bytes | None,
        request_headers: Any,
        timeouts: Mapping[str, float | None],
        request: httpx.Request | None,
    ) -> tuple[int, Mapping[str, str], Any, bytes]:
        """One request read whole: status, parsed and raw headers, body; aiohttp's errors
        become the httpx exceptions that keep "was it sent?" (see the module docstring)."""
        timeout = aiohttp.ClientTimeout(
            total=None,
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
                content = await response.read()
                status = response.status
                parsed = response.headers
                headers = response.raw_headers
        except aiohttp.ClientConnectorError as exc:
            raise httpx.ConnectError(f"connect failed: {exc.os_error}", request=request) from exc
        except aiohttp.ConnectionTimeoutError as exc:
            raise httpx.ConnectTimeout("connect timed out", request=request) from exc
        except aiohttp.SocketTimeoutError as exc:
            raise httpx.ReadTimeout("no reply within the read timeout", request=request) from exc
        except asyncio.TimeoutError as exc:
            raise httpx.ReadTimeout("request timed out", request=request) from exc
        except aiohttp.ServerDisconnectedError as exc:
            raise httpx.RemoteProtocolError(
                "server closed the connection without a reply", request=request
            ) from exc
        except aiohttp.ClientPayloadError as exc:
            raise httpx.ReadError("reply body was cut short", request=request) from exc
        except aiohttp.ClientResponseError as exc:
            raise httpx.RemoteProtocolError(
                f"invalid HTTP reply: {exc.message}", request=request
            ) from exc
        except aiohttp.ClientError as exc:
            raise httpx.ReadError(f"{type(exc).__name__}", request=request) from exc
        return status, parsed, headers, content

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
