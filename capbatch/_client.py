"""The async provider client: one pooled connection set, one call per protocol method.

``ProviderClient`` sends the protocol's four calls and returns parsed values or raises
the exceptions of ``_exceptions.py``; it never retries by itself (the runner decides,
from ``_protocol.classify``), except to move to a fallback host when the connection to
the main one cannot even be opened, which is always safe because nothing was sent.

Callers may pass their own ``httpx.AsyncClient`` (tests pass one over
``httpx.MockTransport``); otherwise the client builds one over ``AiohttpTransport``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Protocol

import httpx

from . import _protocol as protocol
from ._exceptions import ConfigError, ConnectionFailed, RequestTimeout
from ._providers import ProviderProfile
from ._secrets import Secret, as_secret
from ._transport import AiohttpTransport

DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)


class TaskService(Protocol):
    """What the runner needs from a provider; ``ProviderClient`` and ``LocalService``."""

    async def create_task(
        self, task: Mapping[str, Any], *, callback_url: str | None = None
    ) -> protocol.TaskReply: ...

    async def get_task_result(self, task_id: str) -> protocol.TaskReply: ...

    async def get_balance(self) -> float | None: ...

    async def report_incorrect(self, task_id: str, *, message: str | None = None) -> bool: ...

    async def aclose(self) -> None: ...


def make_http_client(
    *, max_connections: int = 100, timeout: httpx.Timeout = DEFAULT_TIMEOUT
) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` over the aiohttp transport (see ``_transport.py``)."""
    return httpx.AsyncClient(
        transport=AiohttpTransport(max_connections=max_connections),
        timeout=timeout,
        headers={"Content-Type": "application/json", "User-Agent": "capbatch"},
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
        app_id: str | None = None,
        max_connections: int = 100,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
    ) -> None:
        if profile.is_local:
            raise ConfigError("the local provider has no HTTP client; use LocalService")
        key = as_secret(api_key)
        if not key:
            raise ConfigError(f"no API key for {profile.name}")
        self.profile = profile
        self._key: Secret = key
        self.app_id = app_id
        if base_url:
            self._urls: list[str] = [base_url.rstrip("/")]
        else:
            self._urls = [profile.base_url, *profile.fallback_urls]
        self._url_index = 0
        self._owns_http = http_client is None
        self._http = http_client or make_http_client(
            max_connections=max_connections, timeout=timeout
        )

    def __repr__(self) -> str:
        return f"ProviderClient(provider={self.profile.name!r}, base_url={self.base_url!r})"

    @property
    def base_url(self) -> str:
        return self._urls[self._url_index]

    async def _post(self, endpoint: str, body: Mapping[str, Any]) -> httpx.Response:
        content = json.dumps(body, separators=(",", ":")).encode()
        # Try the current host, then each fallback, but only past connect failures:
        # nothing was sent then, so moving on cannot create a task twice.
        for _ in range(len(self._urls)):
            try:
                return await self._http.post(
                    self.base_url + endpoint,
                    content=content,
                    headers={"Content-Type": "application/json"},
                )
            except httpx.ConnectError as exc:
                last: Exception = exc
                if len(self._urls) == 1:
                    break
                self._url_index = (self._url_index + 1) % len(self._urls)
            except httpx.TimeoutException as exc:
                sent = not isinstance(exc, (httpx.ConnectTimeout, httpx.PoolTimeout))
                raise RequestTimeout(
                    f"{endpoint}: no reply in time ({type(exc).__name__})",
                    error_code="REQUEST_TIMEOUT" if sent else "CONNECT_TIMEOUT",
                ) from None
            except httpx.TransportError as exc:
                raise ConnectionFailed(
                    f"{endpoint}: connection lost ({type(exc).__name__})",
                    error_code="CONNECTION_LOST",
                ) from None
        raise ConnectionFailed(
            f"{endpoint}: cannot connect to {self.base_url} ({type(last).__name__})",
            error_code="CONNECT_FAILED",
        ) from None

    @staticmethod
    def _retry_after(response: httpx.Response) -> float | None:
        return protocol.parse_retry_after(response.headers.get("Retry-After"))

    async def create_task(
        self, task: Mapping[str, Any], *, callback_url: str | None = None
    ) -> protocol.TaskReply:
        body = protocol.create_task_body(
            self._key.reveal(), task, app_id=self.app_id, callback_url=callback_url
        )
        response = await self._post("/createTask", body)
        return protocol.parse_create_task(
            self.profile,
            response.status_code,
            response.content,
            retry_after=self._retry_after(response),
        )

    async def get_task_result(self, task_id: str) -> protocol.TaskReply:
        body = protocol.get_task_result_body(self.profile, self._key.reveal(), task_id)
        response = await self._post("/getTaskResult", body)
        return protocol.parse_task_result(
            self.profile,
            response.status_code,
            response.content,
            task_id,
            retry_after=self._retry_after(response),
        )

    async def get_balance(self) -> float | None:
        if not self.profile.has_balance:
            return None
        response = await self._post("/getBalance", protocol.get_balance_body(self._key.reveal()))
        return protocol.parse_balance(
            response.status_code, response.content, retry_after=self._retry_after(response)
        )

    async def report_incorrect(self, task_id: str, *, message: str | None = None) -> bool:
        """Tell the provider an answer was wrong (refund or quality feedback)."""
        if self.profile.report_endpoint is None:
            return False
        body = protocol.report_incorrect_body(
            self.profile, self._key.reveal(), task_id, app_id=self.app_id, message=message
        )
        response = await self._post(self.profile.report_endpoint, body)
        return protocol.parse_report(
            response.status_code,
            response.content,
            task_id,
            retry_after=self._retry_after(response),
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
